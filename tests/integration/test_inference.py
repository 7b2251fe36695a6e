"""The inference layer for real on a lab host: `hearth up` deploys SmolLM2 on llama.cpp and a Triton
Python model, each in its container inside the host (Docker in Docker), behind the front door.

One scenario on lab1 of the session lab, in order (each test builds on the ones before):

1. a cold `hearth up` (base layer, Docker, model store, engines, front door): a real chat
   completion through the front door with the API key; 401 without it or with a wrong one; 404
   for an unknown model; streaming;
2. Triton: ready on 8000, an inference (directly and through the front door), `nv_inference_*` on
   8002;
3. the front door's own metrics count the requests by model and status, and the tokens;
4. a second run changes nothing and restarts no container;
5. `hearth audit` passes, the engine and front door checks included;
6. check mode on a new version changes nothing on the host;
7. a new version whose sha256 does not match is refused naming the model, the file, the expected
   and the found sha256; `current` stays on v1 and v1 keeps answering through the front door;
8. the API key, planted in ansible-vault from the start, is in no output, run artifact, fact
   cache, temporary file or report, and on the host only as a sha256.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from labkit import Converged, container_exec, files_holding, hearth, write_inventory

from hearth import images, paths, runner
from hearth import lab as lab_mod

pytestmark = pytest.mark.lab
SHARES = "inference"  # the converged site, with test_bench.py (conftest.Converged)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "engines"
HOST = "lab1"
STORE = "/var/lib/hearth/models"
FRONT_DOOR_PORT = 8090
# The planted secret: the front door's API key, vault-encrypted in the inventory.
API_KEY = "hearth-planted-APIKEY-" + hashlib.sha256(b"hearth-lab-key").hexdigest()[:40]
# The token a scraper presents to the front door for the engines' metrics (also vaulted).
SCRAPE_TOKEN = "hearth-planted-SCRAPE-" + hashlib.sha256(b"hearth-lab-scrape").hexdigest()[:40]
# A GET made on a lab host with its own Python: prints the status (0: refused, no answer), then
# the body. Engines listen on loopback only: the control node cannot reach them.
PROBE = (
    "import sys, urllib.request, urllib.error\n"
    "headers = {'Authorization': 'Bearer ' + sys.argv[2]} if len(sys.argv) > 2 else {}\n"
    "data = sys.argv[3].encode() if len(sys.argv) > 3 else None\n"
    "if data: headers['Content-Type'] = 'application/json'\n"
    "try:\n"
    "    r = urllib.request.urlopen(urllib.request.Request(sys.argv[1], data=data,"
    " headers=headers), timeout=10)\n"
    "    print(r.status); sys.stdout.write(r.read().decode())\n"
    "except urllib.error.HTTPError as e:\n"
    "    print(e.code)\n"
    "except OSError as e:\n"
    "    print(0); print(type(e).__name__, e)\n"
)


@dataclass
class Site:
    state: lab_mod.LabState
    directory: Path
    vault_password: Path
    address: str
    started: float
    outputs: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def inventory(self) -> Path:
        return self.directory / "hosts.yml"

    @property
    def front_door(self) -> str:
        return f"http://{self.address}:{FRONT_DOOR_PORT}"

    def up(self, label: str, *extra: str) -> subprocess.CompletedProcess[str]:
        began = time.monotonic()
        done = hearth(
            "up", "-i", str(self.inventory), "--limit", HOST,
            "--vault-password-file", str(self.vault_password), *extra,
        )  # fmt: skip
        self.timings[label] = round(time.monotonic() - began, 1)
        self.outputs.append(done.stdout + done.stderr)
        return done

    def sh(self, command: str) -> str:
        return container_exec(self.state, HOST, "sh", "-c", command).stdout.strip()

    def get(
        self, url: str, on: str = HOST, token: str = "", body: dict[str, Any] | None = None
    ) -> tuple[int, str]:
        """(status, body) of a request made on the lab host ``on``; status 0: nothing answered."""
        argv = ["python3", "-c", PROBE, url] + ([token] if token or body else [])
        argv += [json.dumps(body)] if body is not None else []
        out = container_exec(self.state, on, *argv).stdout
        status, _, text = out.partition("\n")
        return int(status or 0), text

    def declare(self, smollm2: dict[str, Any]) -> None:
        models = [smollm2, triton_model()]
        target = self.directory / "group_vars" / "inference" / "models.yml"
        target.write_text(yaml.safe_dump({"hearth_models": models}, sort_keys=False))


def smollm2(version: str = "v1", **over: Any) -> dict[str, Any]:
    model = next(images.fetch_lab_models("smollm2-135m-instruct-q4_1"))
    declaration: dict[str, Any] = {
        "name": "smollm2",
        "version": version,
        "engine": "llamacpp",
        "format": "gguf",
        "catalog": "smollm2-135m-instruct",
        "quantization": "Q4_1",
        "source": {"type": "path", "path": str(model.path.parent)},
        "files": [{"path": model.path.name, "sha256": model.sha256, "size": model.size}],
        "max_model_len": 2048,
        "max_num_seqs": 2,
        "gpus": [],
        "engine_args": {"threads": 2},
    }
    declaration.update(over)
    return declaration


def triton_model() -> dict[str, Any]:
    source = FIXTURES / "triton-upper" / "model.py"
    return {
        "name": "upper",
        "version": "1.0.0",
        "engine": "triton",
        "format": "python",
        "source": {"type": "path", "path": str(source.parent)},
        "files": [{"path": "model.py", "sha256": hashlib.sha256(source.read_bytes()).hexdigest()}],
        "gpus": [],
        "triton_config": {
            "max_batch_size": 0,
            "input": [{"name": "TEXT", "data_type": "TYPE_STRING", "dims": [-1]}],
            "output": [{"name": "UPPER", "data_type": "TYPE_STRING", "dims": [-1]}],
        },
    }


def request(
    url: str, body: dict[str, Any] | None = None, key: str | None = API_KEY, timeout: float = 120
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, data=data, headers=headers), timeout=timeout
        ) as answer:
            raw = answer.read()
            status = answer.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def chat(site: Site, model: str = "smollm2", key: str | None = API_KEY) -> tuple[int, Any]:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 32,
        "temperature": 0,
    }
    return request(f"{site.front_door}/v1/chat/completions", body, key)


def container_ids(site: Site) -> dict[str, str]:
    out = site.sh("docker ps --format '{{.Names}} {{.ID}}'")
    return dict(line.split() for line in out.splitlines() if line.startswith("hearth-"))


@pytest.fixture(scope="module")
def site(
    lab_configuration: Converged,
    lab: lab_mod.LabState,
    engine_images: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Site:
    """lab1 converged with SmolLM2 (llama.cpp) and the Triton model behind the front door, once
    for this module and test_bench.py (``SHARES``)."""
    return lab_configuration.get("inference", lambda: _converge_site(lab, tmp_path_factory))


@contextmanager
def _converge_site(
    lab: lab_mod.LabState, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    directory = tmp_path_factory.mktemp("inference")
    write_inventory(
        lab,
        directory,
        group_vars={
            # no NVIDIA source is reachable: Docker comes from Debian, the toolkit is skipped
            "container_runtime_toolkit_source": "distribution",
            "hearth_operator": "lab-test",
            "front_door_port": FRONT_DOOR_PORT,
        },
        groups={"inference": [HOST], "frontdoor": [HOST]},
    )
    vault_password = directory / "vault-password"
    vault_password.write_text("inference lab vault password\n")
    vault_password.chmod(0o600)
    front = directory / "group_vars" / "frontdoor"
    front.mkdir(parents=True)
    encrypted = lab_mod.vault_encrypt(API_KEY, vault_password)
    token = lab_mod.vault_encrypt(SCRAPE_TOKEN, vault_password)
    (front / "vault.yml").write_text(
        "front_door_api_keys:\n  - name: lab-test\n    key: "
        + encrypted.replace("\n", "\n    ")
        + "\nhearth_scrape_token: "
        + token.replace("\n", "\n  ")
        + "\n"
    )
    (directory / "group_vars" / "inference").mkdir(parents=True)
    address = next(h.address for h in lab.hosts if h.name == HOST)
    result = Site(lab, directory, vault_password, address, time.time())
    result.sh(
        "docker rm -f $(docker ps -aq --filter label=io.hearth.managed-by) 2>/dev/null; "
        f"rm -rf {STORE}/smollm2 {STORE}/upper /etc/hearth/live /etc/hearth/frontdoor; true"
    )
    result.declare(smollm2("v1"))
    done = result.up("first")
    assert done.returncode == 0, f"hearth up:\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    yield result
    print(f"\ninference layer: {', '.join(f'{k} {v} s' for k, v in result.timings.items())}")
    # free lab1's ports (8000-8002, 8080, 8090) for the tests that follow on the session lab
    result.sh("docker rm -f $(docker ps -aq --filter label=io.hearth.managed-by) 2>/dev/null; true")


def test_chat_completion_through_the_front_door(site: Site) -> None:
    status, reply = chat(site)
    assert status == 200, reply
    content = reply["choices"][0]["message"]["content"]
    assert isinstance(content, str) and content.strip(), f"empty answer: {reply}"
    assert reply["model"] == "smollm2" and reply["usage"]["completion_tokens"] > 0

    status, refused = chat(site, key=None)
    assert status == 401 and refused["error"]["code"] == "missing_api_key"
    status, refused = chat(site, key="not-the-key-" + "0" * 40)
    assert status == 401 and refused["error"]["code"] == "invalid_api_key"
    status, unknown = chat(site, model="gpt-4")
    assert status == 404 and "served: smollm2, upper" in unknown["error"]["message"]
    status, listed = request(f"{site.front_door}/v1/models")
    assert status == 200 and [m["id"] for m in listed["data"]] == ["smollm2", "upper"]

    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 8,
        "stream": True,
    }
    req = urllib.request.Request(
        f"{site.front_door}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as answer:
        assert answer.headers["Content-Type"].startswith("text/event-stream")
        events = [line for line in answer.read().decode().splitlines() if line.startswith("data:")]
    assert len(events) >= 2 and events[-1] == "data: [DONE]"

    live = json.loads(site.sh("cat /etc/hearth/live/smollm2.json"))
    assert (live["version"], live["engine"], live["port"]) == ("v1", "llamacpp", 8080)
    assert live["warmup_seconds"] is not None
    print(
        f"\nfirst deploy {site.timings['first']} s; smollm2 healthy after "
        f"{live['healthy_seconds']} s, warm-up {live['warmup_seconds']} s: {content.strip()[:60]!r}"
    )


def test_triton_serves_the_generated_repository_with_metrics(site: Site) -> None:
    base = "http://127.0.0.1:8000"  # on lab1 itself: the engine listens on loopback only
    status, _ = site.get(f"{base}/v2/health/ready")
    assert status == 200
    body = {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]}]}
    status, text = site.get(f"{base}/v2/models/upper/infer", body=body)
    direct = json.loads(text)
    assert status == 200 and direct["outputs"][0]["data"] == ["A", "B"]
    status, through = request(f"{site.front_door}/v2/models/upper/infer", body)
    assert status == 200 and through["outputs"][0]["data"] == ["A", "B"]
    status, _ = request(f"{site.front_door}/v2/models/upper/infer", body, key=None)
    assert status == 401
    status, as_chat = chat(site, model="upper")
    assert status == 200
    assert as_chat["choices"][0]["message"]["content"] == "WHAT IS THE CAPITAL OF FRANCE?"
    config = site.sh("cat /var/lib/hearth/triton/upper/config.pbtxt")
    assert 'name: "upper"' in config and 'backend: "python"' in config

    deadline, success = time.monotonic() + 15, 0.0
    while time.monotonic() < deadline:
        _, metrics = site.get("http://127.0.0.1:8002/metrics")
        lines = [
            line for line in str(metrics).splitlines()
            if line.startswith('nv_inference_request_success{model="upper"')
        ]  # fmt: skip
        success = float(lines[0].split()[-1]) if lines else 0.0
        if success >= 3:  # warm-up, direct, through the front door (+ the chat)
            break
        time.sleep(0.5)
    assert success >= 3, metrics


def test_engines_are_closed_to_other_hosts_while_the_front_door_answers(site: Site) -> None:
    """The engines bind to loopback (inference_engine_bind_address's default): from lab2, a
    request straight to lab1's engine ports is refused, while on lab1 itself they answer; the
    front door answers lab2 (401 without a key), and relays the engines' metrics only to a
    scraper with the scrape token."""
    for port, path in ((8080, "/health"), (8000, "/v2/health/ready"), (8002, "/metrics")):
        status, said = site.get(f"http://{site.address}:{port}{path}", on="lab2")
        assert status == 0 and "refused" in said.lower(), f"lab1:{port} from lab2: {status} {said}"
        status, _ = site.get(f"http://127.0.0.1:{port}{path}")
        assert status == 200, f"lab1:{port} on lab1 itself: {status} (the engine is down?)"
    status, _ = site.get(f"{site.front_door}/health", on="lab2")
    assert status == 200
    status, _ = site.get(f"{site.front_door}/v1/models", on="lab2")
    assert status == 401
    relay = f"{site.front_door}/engine-metrics/smollm2"
    assert site.get(relay, on="lab2")[0] == 401
    assert site.get(relay, on="lab2", token=API_KEY)[0] == 401  # an API key is not the token
    status, metrics = site.get(relay, on="lab2", token=SCRAPE_TOKEN)
    assert status == 200 and "llamacpp:" in metrics, metrics[:300]
    status, metrics = site.get(f"{site.front_door}/engine-metrics/upper", on="lab2",
                               token=SCRAPE_TOKEN)  # fmt: skip
    assert status == 200 and "nv_inference_request_success" in metrics, metrics[:300]


def test_front_door_metrics_count_requests_and_tokens(site: Site) -> None:
    status, text = request(f"{site.front_door}/metrics", key=None)
    assert status == 200

    def value(name: str, *labels: str) -> float:
        found = [
            float(line.rsplit(" ", 1)[1])
            for line in str(text).splitlines()
            if line.startswith(name + "{") and all(label in line for label in labels)
        ]
        return sum(found)

    total = "hearth_frontdoor_requests_total"
    assert value(total, 'model="smollm2"', 'status="200"', 'key="lab-test"') >= 2
    assert value(total, 'status="401"') >= 3
    assert value(total, 'model="_unknown"', 'status="404"') >= 1
    assert value("hearth_frontdoor_tokens_total", 'model="smollm2"', 'kind="completion"') > 0
    assert value("hearth_frontdoor_auth_failures_total", 'reason="invalid"') >= 1
    assert value("hearth_frontdoor_time_to_first_byte_seconds_count", 'model="smollm2"') >= 1
    assert 'model="gpt-4"' not in str(text)


def test_second_run_changes_nothing(site: Site) -> None:
    before = container_ids(site)
    began = time.monotonic()
    result = runner.run_playbook(
        "inference.yml", site.inventory, limit=HOST, vault_password_file=site.vault_password,
        label="inference-second",
    )  # fmt: skip
    site.timings["second"] = round(time.monotonic() - began, 1)
    result.raise_for_status()
    assert result.hosts[HOST].changed == 0, f"not idempotent: see {result.artifacts}"
    assert container_ids(site) == before, "a second run restarted a container"
    assert set(before) == {"hearth-engine-smollm2", "hearth-engine-upper", "hearth-frontdoor"}


def test_audit_passes_with_the_engine_and_front_door_checks(site: Site, tmp_path: Path) -> None:
    report = tmp_path / "audit.json"
    done = hearth(
        "audit", "-i", str(site.inventory), "--limit", HOST, "--format", "json",
        "-o", str(report), "--vault-password-file", str(site.vault_password),
    )  # fmt: skip
    site.outputs.append(done.stdout + done.stderr + report.read_text())
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr
    checks = {
        (c["role"], c["check"]): c["outcome"]
        for h in json.loads(report.read_text())["hosts"].values()
        for c in h["checks"]
        if c["role"] in ("inference_engine", "front_door", "model_store")
    }
    assert checks == {
        ("front_door", "test_front_door_container_runs_confined"): "passed",
        ("front_door", "test_front_door_healthy_and_refuses_requests_without_a_key"): "passed",
        ("front_door", "test_front_door_metrics_are_up"): "passed",
        ("front_door", "test_front_door_serves_the_deployed_certificate"): "skipped",  # HTTP lab
        ("front_door", "test_keys_file_holds_exactly_the_declared_keys"): "passed",
        ("front_door", "test_prompt_files_are_private_and_within_their_retention"): "passed",
        ("inference_engine", "test_engine_containers_run_the_declared_version"): "passed",
        ("inference_engine", "test_engine_metrics_are_up"): "passed",
        ("inference_engine", "test_engines_answer_their_health_check"): "passed",
        ("inference_engine", "test_engines_run_as_non_root"): "passed",
        ("inference_engine", "test_model_directory_mounted_read_only"): "passed",
        ("inference_engine", "test_models_are_recorded_live"): "passed",
        ("inference_engine", "test_engines_serve_the_verified_files"): "passed",
        ("model_store", "test_changelog_records_the_current_version"): "passed",
        ("model_store", "test_current_points_at_declared_version"): "passed",
        ("model_store", "test_files_are_not_world_readable"): "passed",
        ("model_store", "test_files_match_their_sha256"): "passed",
        ("model_store", "test_versions_kept"): "passed",
    }


def test_check_mode_changes_nothing(site: Site) -> None:
    before = (container_ids(site), site.sh(f"readlink {STORE}/smollm2/current"))
    site.declare(smollm2("v2", engine_args={"threads": 1}))
    try:
        done = site.up(
            "check", "--playbook", "inference.yml", "--skip-tags", "container_runtime", "--check"
        )
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr
        assert "Point current at smollm2 v2" in done.stdout.replace("\n", " ")
        assert (container_ids(site), site.sh(f"readlink {STORE}/smollm2/current")) == before
        assert "v2" not in site.sh(f"ls {STORE}/smollm2").split()
    finally:
        site.declare(smollm2("v1"))


def test_checksum_mismatch_is_refused_and_v1_keeps_serving(site: Site) -> None:
    before = container_ids(site)
    model = next(images.fetch_lab_models("smollm2-135m-instruct-q4_1"))
    bad = smollm2("v2")
    bad["files"] = [dict(bad["files"][0], sha256="0" * 64)]
    site.declare(bad)
    try:
        done = site.up(
            "mismatch", "--playbook", "inference.yml", "--skip-tags", "container_runtime"
        )
    finally:
        site.declare(smollm2("v1"))
    assert done.returncode == 3, done.stdout[-3000:] + done.stderr
    said = " ".join((done.stdout + done.stderr).split())
    assert (
        f"model smollm2 v2: file {model.path.name}: expected sha256 {'0' * 64}, found "
        f"{model.sha256}" in said
    ), said[-3000:]
    assert "current still points at v1" in said
    assert site.sh(f"readlink {STORE}/smollm2/current") == "v1"
    assert "v2" not in site.sh(f"ls -a {STORE}/smollm2").split()
    assert container_ids(site) == before, "the engine was touched"
    label = site.sh(
        "docker inspect --format '{{index .Config.Labels \"io.hearth.version\"}}' "
        "hearth-engine-smollm2"
    )
    assert label == "v1"
    status, reply = chat(site)
    assert status == 200 and reply["choices"][0]["message"]["content"].strip()


def test_planted_api_key_never_leaks(site: Site) -> None:
    leaks = [f"output of run {i}" for i, text in enumerate(site.outputs)
             for secret in (API_KEY, SCRAPE_TOKEN) if secret in text]  # fmt: skip
    roots = (paths.runs_dir(), paths.hearth_home() / "facts", Path(tempfile.gettempdir()))
    leaks += files_holding(
        roots, [API_KEY, SCRAPE_TOKEN], site.started - 1,
        skip=lambda path: path.is_relative_to(site.directory),
    )  # fmt: skip
    assert not leaks, f"the planted API key or scrape token leaked into: {leaks}"
    on_host = site.sh(
        f"grep -rl -e {API_KEY} -e {SCRAPE_TOKEN} /etc /var/lib/hearth /var/log /root "
        "2>/dev/null; docker logs hearth-frontdoor 2>&1 | grep -c Bearer; true"
    )
    assert on_host.splitlines() == ["0"], f"the key on the host: {on_host}"
    keys = json.loads(site.sh("cat /etc/hearth/frontdoor/keys.json"))
    assert keys == {
        "keys": [{"name": "lab-test", "sha256": hashlib.sha256(API_KEY.encode()).hexdigest()}]
    }
    assert site.sh("stat -c '%a %u' /etc/hearth/frontdoor/keys.json") == "600 10003"
