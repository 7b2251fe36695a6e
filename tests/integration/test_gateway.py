"""The front door as a gateway, for real on lab1: SmolLM2 on llama.cpp behind the front door,
keys added and rotated with `hearth keys` in a whole-file ansible-vault, requests sent with
OpenAI's own Python client as a user would.

One scenario, in order (each test builds on the ones before):

1. `hearth keys add` writes two keys with policies into the vault file (each printed once) and a
   cold `hearth up` deploys: the alias `chat` is listed and answers;
2. the key limited to `chat` gets 403 for `smollm2` (naming what it may use), and after 3
   requests in a minute (`rpm: 3`) a 429 with `Retry-After`; the expired key gets 401 "expired";
3. `hearth keys usage` counts exactly the requests and tokens sent per key and model;
4. `hearth keys rotate --overlap 24h` + `hearth up --tags front_door`: old and new key both work;
   a rotation with no overlap: the old key is refused;
5. `hearth audit`'s front door checks pass (policies in keys.json, a rotated key's two hashes);
6. `hearth logs verify` passes, then names the line edited on the host.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from ansible.parsing.vault import VaultLib, VaultSecret
from labkit import container_exec, hearth, write_inventory
from test_inference import smollm2

from hearth import images
from hearth import lab as lab_mod

pytestmark = pytest.mark.lab

HOST = "lab1"
STORE = "/var/lib/hearth/models"
STATE = "/var/lib/hearth/frontdoor"
PORT = 8090
ADMIN_KEY = "hearth-gateway-admin-" + hashlib.sha256(b"hearth-gateway").hexdigest()[:40]
PASSWORD = "gateway lab vault password"


@dataclass
class Gateway:
    state: lab_mod.LabState
    directory: Path
    vault_password: Path
    address: str
    keys: dict[str, str] = field(default_factory=dict)
    sent: dict[tuple[str, str], list[int]] = field(default_factory=dict)

    @property
    def inventory(self) -> Path:
        return self.directory / "hosts.yml"

    @property
    def vault_file(self) -> Path:
        return self.directory / "group_vars" / "frontdoor" / "vault.yml"

    def hearth(self, *args: str) -> subprocess.CompletedProcess[str]:
        return hearth(*args, "--vault-password-file", str(self.vault_password))

    def up(self, *extra: str) -> None:
        done = self.hearth("up", "-i", str(self.inventory), "--limit", HOST, *extra)
        assert done.returncode == 0, f"hearth up:\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}"

    def keys_cli(self, *args: str) -> str:
        done = self.hearth("keys", *args, "-f", str(self.vault_file))
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def new_key(self, *args: str) -> str:
        out = self.keys_cli(*args)
        found = re.findall(r"^([0-9a-f]{64})$", out, re.MULTILINE)
        assert len(found) == 1, out
        return found[0]

    def client(self, key: str) -> Any:
        return openai.OpenAI(
            base_url=f"http://{self.address}:{PORT}/v1", api_key=key, max_retries=0, timeout=120
        )

    def chat(self, name: str, model: str) -> Any:
        answer = self.client(self.keys[name]).chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=16,
            temperature=0,
        )
        row = self.sent.setdefault((name, "smollm2"), [0, 0, 0])  # the alias's model
        row[0] += 1
        row[1] += answer.usage.prompt_tokens
        row[2] += answer.usage.completion_tokens
        return answer

    def refused(self, name: str, model: str) -> None:
        self.sent.setdefault((name, model), [0, 0, 0])[0] += 1

    def sh(self, command: str) -> str:
        return container_exec(self.state, HOST, "sh", "-c", command).stdout.strip()


@pytest.fixture(scope="module")
def gateway(lab: lab_mod.LabState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    for recipe in ("llamacpp", "frontdoor"):
        images.ensure_image(recipe)
    directory = tmp_path_factory.mktemp("gateway")
    write_inventory(
        lab,
        directory,
        group_vars={
            "container_runtime_toolkit_source": "distribution",
            "hearth_operator": "lab-test",
            "front_door_port": PORT,
            "hearth_model_aliases": {"chat": "smollm2"},
        },
        groups={"inference": [HOST], "frontdoor": [HOST]},
    )
    password = directory / "vault-password"
    password.write_text(PASSWORD + "\n")
    password.chmod(0o600)
    vault_file = directory / "group_vars" / "frontdoor" / "vault.yml"
    vault_file.parent.mkdir(parents=True)
    text = yaml.safe_dump({"front_door_api_keys": [{"name": "admin", "key": ADMIN_KEY}]})
    secret = VaultSecret(PASSWORD.encode())
    vault_file.write_bytes(VaultLib([("default", secret)]).encrypt(text.encode(), secret))
    models = directory / "group_vars" / "inference" / "models.yml"
    models.parent.mkdir(parents=True)
    models.write_text(yaml.safe_dump({"hearth_models": [smollm2("v1")]}, sort_keys=False))
    address = next(h.address for h in lab.hosts if h.name == HOST)
    site = Gateway(lab, directory, password, address, keys={"admin": ADMIN_KEY})
    site.sh(
        "docker rm -f $(docker ps -aq --filter label=io.hearth.managed-by) 2>/dev/null; "
        f"rm -rf {STORE}/smollm2 /etc/hearth/live /etc/hearth/frontdoor {STATE}; true"
    )
    yield site
    site.sh("docker rm -f $(docker ps -aq --filter label=io.hearth.managed-by) 2>/dev/null; true")


def test_keys_added_with_hearth_keys_and_an_alias_answer(gateway: Gateway) -> None:
    gateway.keys["ward7"] = gateway.new_key("add", "ward7", "--models", "chat", "--rpm", "3")
    gateway.keys["gone"] = gateway.new_key("add", "gone", "--expires", "2020-01-01")
    assert gateway.vault_file.read_bytes().startswith(b"$ANSIBLE_VAULT;1.1;AES256")
    assert not any(k.encode() in gateway.vault_file.read_bytes() for k in gateway.keys.values())
    gateway.up()
    listed = {m.id for m in gateway.client(ADMIN_KEY).models.list()}
    assert listed == {"smollm2", "chat"}
    assert gateway.client(ADMIN_KEY).models.retrieve("chat").id == "chat"
    answer = gateway.chat("admin", "chat")
    assert answer.model == "smollm2" and (answer.choices[0].message.content or "").strip()
    gateway.chat("admin", "smollm2")
    on_host = gateway.sh("cat /etc/hearth/frontdoor/keys.json")
    assert all(k not in on_host for k in gateway.keys.values())
    assert json.loads(on_host)["keys"][1] == {
        "name": "ward7", "sha256": hashlib.sha256(gateway.keys["ward7"].encode()).hexdigest(),
        "models": ["chat"], "rpm": 3,
    }  # fmt: skip


def test_policies_refuse_with_the_clients_own_errors(gateway: Gateway) -> None:
    ward = gateway.client(gateway.keys["ward7"])
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.PermissionDeniedError) as forbidden:
        ward.chat.completions.create(model="smollm2", messages=messages, max_tokens=4)
    assert "allowed: chat" in str(forbidden.value)
    gateway.refused("ward7", "smollm2")
    for _ in range(3):  # rpm 3 (the 403 above reached no engine and is not counted)
        gateway.chat("ward7", "chat")
    with pytest.raises(openai.RateLimitError) as limited:
        ward.chat.completions.create(model="chat", messages=messages, max_tokens=4)
    gateway.refused("ward7", "smollm2")
    retry = int(limited.value.response.headers["retry-after"])
    assert 1 <= retry <= 60, retry
    with pytest.raises(openai.AuthenticationError) as expired:
        gateway.client(gateway.keys["gone"]).models.list()
    assert expired.value.code == "expired"


def test_usage_report_matches_the_requests_sent(gateway: Gateway) -> None:
    done = gateway.hearth(
        "keys", "usage", "-i", str(gateway.inventory), "--since", "1h", "--format", "json"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {(r["key"], r["model"]): r for r in json.loads(done.stdout)["usage"]}
    expected = {
        (key, model): [n, prompt, completion]
        for (key, model), (n, prompt, completion) in gateway.sent.items()
    }
    found = {  # requests for a model (the model lists, the role's own checks among them, aside)
        k: [r["requests"], r["prompt_tokens"], r["completion_tokens"]]
        for k, r in rows.items()
        if k[0] in ("admin", "ward7") and k[1]
    }
    assert found == expected
    assert rows[("ward7", "smollm2")]["refused"] == 2


def test_rotation_overlap_then_the_old_key_is_refused(gateway: Gateway) -> None:
    old = gateway.keys["admin"]
    new = gateway.new_key("rotate", "admin", "--overlap", "24h")
    gateway.up("--tags", "front_door")
    assert {m.id for m in gateway.client(new).models.list()} == {"smollm2", "chat"}
    assert {m.id for m in gateway.client(old).models.list()} == {"smollm2", "chat"}
    gateway.keys["admin"] = new
    ward_old = gateway.keys["ward7"]
    gateway.keys["ward7"] = gateway.new_key("rotate", "ward7", "--overlap", "0s")
    gateway.up("--tags", "front_door")
    with pytest.raises(openai.AuthenticationError):
        gateway.client(ward_old).models.list()
    assert gateway.client(gateway.keys["ward7"]).models.retrieve("chat").id == "chat"


def test_audit_passes_with_policies_and_a_rotated_keys_two_hashes(
    gateway: Gateway, tmp_path: Path
) -> None:
    keys = json.loads(gateway.sh("cat /etc/hearth/frontdoor/keys.json"))["keys"]
    assert [k["name"] for k in keys] == ["admin", "admin", "ward7", "gone"]
    assert "not_after" in keys[1] and "not_after" not in keys[0]
    report = tmp_path / "audit.json"
    done = gateway.hearth(
        "audit", "-i", str(gateway.inventory), "--limit", HOST, "--check", "front_door",
        "--format", "json", "-o", str(report),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr
    outcomes = {
        c["check"]: c["outcome"]
        for h in json.loads(report.read_text())["hosts"].values()
        for c in h["checks"]
        if c["role"] == "front_door"
    }
    assert outcomes == {
        "test_front_door_container_runs_confined": "passed",
        "test_front_door_healthy_and_refuses_requests_without_a_key": "passed",
        "test_front_door_metrics_are_up": "passed",
        "test_keys_file_holds_exactly_the_declared_keys": "passed",
    }
    said = done.stdout + done.stderr + report.read_text()
    assert not any(key in said for key in gateway.keys.values())


def test_logs_verify_names_the_edited_line(gateway: Gateway) -> None:
    done = gateway.hearth("logs", "verify", "-i", str(gateway.inventory))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{HOST}: " in done.stdout and "hold" in done.stdout
    log = gateway.sh(f"ls {STATE}/requests-*.jsonl | tail -1")
    assert gateway.sh(f"grep -c '\"status\":200' {log}") != "0"
    line = int(gateway.sh(f"grep -n '\"status\":200' {log} | head -1 | cut -d: -f1"))
    gateway.sh(f'sed -i \'{line}s/"status":200/"status":500/\' {log}')
    time.sleep(0.1)
    done = gateway.hearth("logs", "verify", "-i", str(gateway.inventory))
    assert done.returncode == 5, done.stdout + done.stderr
    name = log.rsplit("/", 1)[1]
    assert f"{HOST}: {name}:{line}: edited" in done.stdout, done.stdout
    for key in gateway.keys.values():
        assert key not in gateway.sh(f"cat {STATE}/requests-*.jsonl")
