"""The air-gapped rebuild on real hosts with no route out (own lab, ``hearth lab up --airgapped``).

One bundle is built (on this machine, which is online) for the lab's inventory of two air-gapped
hosts — lab1 a GPU node serving SmolLM2 with llama.cpp behind the front door, lab2 the monitoring
host — with every layer the playbooks have; the model is declared with a ``bundle`` source, so it
can only come from the bundle. Then:

- an altered file in the bundle is refused by ``hearth up --bundle`` before any host changes;
- ``hearth up --bundle`` converges both hosts from the bundle alone (their package sources are the
  bundle's repository only), loads the engine and front door images by id, places the model, and
  the front door answers a chat completion; a second run changes nothing;
- the audit of the air-gapped hosts equals the audit of the same inventory converged online;
- an offline control node can install Hearth and the collections from the bundle (pip
  ``--no-index``, ``hearth collections install --wheel``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from labkit import TEST_OWNER, container_exec, hearth, owned_lab

from hearth import bundle, images, lab, paths, runner, vendor

pytestmark = pytest.mark.lab
HOSTS = ("lab1", "lab2")


@dataclass
class Airgap:
    state: lab.LabState
    inventory: Path
    out: Path
    keys: bundle.KeyPair
    vault: Path
    work: Path
    audit: dict[str, Any] | None = None


@pytest.fixture(scope="module")
def airgap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Airgap]:
    # this module's own lab (labkit.EXTRA_LABS["airgap"]); HEARTH_LAB_ID is restored afterwards
    with owned_lab("airgap"):
        work = tmp_path_factory.mktemp("airgap")
        state = lab.up(2, airgapped=True, inventory_dir=work / "inventory", owner=TEST_OWNER)
        inventory = Path(state.inventory)
        models = inventory.parent / "group_vars" / "inference" / "models.yml"
        declared = yaml.safe_load(models.read_text())
        for model in declared["hearth_models"]:  # only the bundle can provide it
            model["source"] = {
                "type": "bundle",
                "path": f"models/{model['name']}/{model['version']}",
            }
        models.write_text(yaml.safe_dump(declared, sort_keys=False))
        keys = bundle.keygen(work / "keys")
        yield Airgap(state, inventory, work / "bundle", keys, lab.vault_password_file(), work)


def _snapshot(ctx: Airgap, host: str) -> dict[str, str]:
    """What a provisioning run changes first, read through Docker (not SSH)."""

    def run(*cmd: str) -> str:
        done = container_exec(ctx.state, host, *cmd)
        return f"rc={done.returncode} {done.stdout}"

    return {
        "sources": run(
            "sh", "-c", "ls -la /etc/apt/sources.list.d; md5sum /etc/apt/sources.list.d/*"
        ),
        "packages": run("dpkg-query", "-W", "-f=${Package}=${Version}\\n"),
        "bundle_dir": run("ls", "/srv/hearth-bundle"),
        "users": run("getent", "passwd", "hearth"),
    }


def _no_route_out(ctx: Airgap, host: str) -> bool:
    connect = "import socket; socket.create_connection(('deb.debian.org', 80), 5)"
    probe = container_exec(ctx.state, host, "python3", "-c", connect)
    return probe.returncode != 0


def test_build_collects_every_layer(airgap: Airgap) -> None:
    assert all(_no_route_out(airgap, h) for h in HOSTS), "a lab host reaches the internet"
    done = hearth(
        "bundle", "build", "-i", str(airgap.inventory), "-o", str(airgap.out),
        "--key", str(airgap.keys.private), "--vault-password-file", str(airgap.vault),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    manifest = bundle.Manifest.read(airgap.out)
    target = manifest.meta["targets"]["debian-12"]
    versions = target["packages"]
    for package in ("curl", "chrony", "docker.io", "prometheus", "prometheus-node-exporter",
                    "prometheus-alertmanager", "libcudart11.0", "python3-docker"):  # fmt: skip
        assert package in versions, f"{package} is not in the bundle's repository"
    assert versions["docker.io"].startswith("20.10.24")
    kinds = {e.kind for e in manifest.entries.values()}
    assert {"deb", "repo-index", "image", "wheel", "collections"} <= kinds
    recipes = {i["recipe"]: i for i in manifest.meta["images"]}
    assert set(recipes) == {"llamacpp", "frontdoor"}
    for recipe, info in recipes.items():
        assert info["id"] == images.ensure_image(recipe).image_id
    [model] = manifest.meta["models"]
    assert (
        model["name"] == "smollm2"
        and manifest.entries[model["files"][0]["path"]].sha256 == (model["files"][0]["sha256"])
    )
    wheels = {e.path.split("/")[-1].split("-")[0] for e in manifest.entries.values()
              if e.kind == "wheel"}  # fmt: skip
    assert {"hearth", "ansible_core", "ansible_runner", "click"} <= wheels
    assert not list(airgap.out.rglob("*signing_key*")), "the private key is in the bundle"

    # Incremental: nothing fetched or hashed again (Hearth's own wheel is rebuilt only when its
    # source tree changed, which other work in this checkout may do meanwhile).
    again = bundle.build_bundle(airgap.inventory, airgap.out, key=airgap.keys.private,
                                vault_password_file=airgap.vault)  # fmt: skip
    own = {p for p in again.manifest.entries if p.startswith("wheels/hearth-")}
    assert set(again.stats.fetched) <= own and set(again.stats.hashed) <= own, again.stats
    assert len(again.stats.reused) >= len(again.manifest.entries) - len(own)
    verify = hearth("bundle", "verify", str(airgap.out), "--signers",
                    str(airgap.keys.allowed_signers))  # fmt: skip
    assert verify.returncode == 0, verify.stderr


def test_altered_file_is_refused_before_any_host_changes(airgap: Airgap) -> None:
    before = {h: _snapshot(airgap, h) for h in HOSTS}
    assert "hearth-bundle" not in before["lab1"]["sources"], "hosts were provisioned already"
    victim = next(p for p in sorted(airgap.out.glob("repo/debian-12/chrony_*.deb")))
    original = victim.read_bytes()
    altered = bytearray(original)
    altered[len(altered) // 2] ^= 0x01
    victim.write_bytes(bytes(altered))
    runs_before = set(paths.runs_dir().glob("*")) if paths.runs_dir().is_dir() else set()
    try:
        done = hearth("up", "-i", str(airgap.inventory), "--bundle", str(airgap.out),
                      "--bundle-signers", str(airgap.keys.allowed_signers),
                      "--vault-password-file", str(airgap.vault))  # fmt: skip
    finally:
        victim.write_bytes(original)
    assert done.returncode == 2, done.stdout + done.stderr
    message = " ".join(done.stderr.split())
    assert f"altered: repo/debian-12/{victim.name} (sha256 " in message, message
    assert "Nothing was changed on any host" in message
    assert {h: _snapshot(airgap, h) for h in HOSTS} == before, "a host changed"
    runs_after = set(paths.runs_dir().glob("*")) if paths.runs_dir().is_dir() else set()
    assert runs_after == runs_before, "a playbook run was started for a refused bundle"


def _chat(ctx: Airgap) -> tuple[int, Any]:
    address = next(h.address for h in ctx.state.hosts if h.name == "lab1")
    question = [{"role": "user", "content": "What is the capital of France?"}]
    body = {"model": "smollm2", "max_tokens": 24, "temperature": 0, "messages": question}
    key = lab.api_key_file().read_text().strip()
    request = urllib.request.Request(
        f"http://{address}:{lab.LAB_FRONT_DOOR_PORT}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    with urllib.request.urlopen(request, timeout=120) as answer:
        return answer.status, json.loads(answer.read())


def test_up_from_the_bundle_converges_every_layer(airgap: Airgap) -> None:
    done = hearth("up", "-i", str(airgap.inventory), "--bundle", str(airgap.out),
                  "--bundle-signers", str(airgap.keys.allowed_signers),
                  "--vault-password-file", str(airgap.vault))  # fmt: skip
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    for host in HOSTS:
        assert _no_route_out(airgap, host)
        sources = container_exec(airgap.state, host, "ls", "/etc/apt/sources.list.d").stdout
        assert sources.split() == ["hearth-bundle.sources"], sources
        backup = container_exec(airgap.state, host, "ls", "/etc/apt/hearth-sources-backup")
        assert "debian.sources" in backup.stdout, "the original sources were not kept"
        uris = container_exec(airgap.state, host, "apt-get", "indextargets", "--format", "$(URI)")
        assert uris.stdout.split() and all(
            u.startswith("file:/srv/hearth-bundle/repo/") for u in uris.stdout.split()
        ), uris.stdout
        for service in ("chrony", "prometheus-node-exporter"):
            active = container_exec(airgap.state, host, "systemctl", "is-active", service)
            assert active.stdout.strip() == "active", f"{host}: {service} {active.stdout}"
    for service in ("prometheus", "prometheus-alertmanager"):
        active = container_exec(airgap.state, "lab2", "systemctl", "is-active", service)
        assert active.stdout.strip() == "active", f"lab2: {service} {active.stdout}"
    manifest = bundle.Manifest.read(airgap.out)
    for info in manifest.meta["images"]:
        loaded = container_exec(airgap.state, "lab1", "docker", "image", "inspect", "--format",
                                "{{.Id}}", info["tag"])  # fmt: skip
        assert loaded.stdout.strip() == info["id"], loaded.stdout + loaded.stderr
    [model] = manifest.meta["models"]
    weights = model["files"][0]["path"].rsplit("/", 1)[-1]
    placed = container_exec(
        airgap.state, "lab1", "sha256sum", f"/var/lib/hearth/models/smollm2/current/{weights}"
    )
    assert placed.stdout.split()[:1] == [model["files"][0]["sha256"]], placed.stdout + placed.stderr
    status, answer = _chat(airgap)
    assert status == 200 and answer["choices"][0]["message"]["content"].strip(), answer
    report = airgap.work / "audit-airgapped.json"
    audit = hearth("audit", "-i", str(airgap.inventory), "--format", "json", "-o", str(report),
                   "--vault-password-file", str(airgap.vault))  # fmt: skip
    assert audit.returncode == 0, audit.stdout[-3000:] + audit.stderr[-3000:]
    airgap.audit = json.loads(report.read_text())


def test_second_run_from_the_bundle_changes_nothing(airgap: Airgap) -> None:
    from hearth.inventory import check_inventory

    verified = bundle.verify_bundle(airgap.out, airgap.keys.allowed_signers)
    assert verified.ok and verified.manifest is not None
    inventory = check_inventory(airgap.inventory, vault_password_file=airgap.vault)
    extra = bundle.extravars(airgap.out, verified.manifest, bundle.plan_for_inventory(inventory))
    result = runner.run_playbook("bundle.yml", airgap.inventory, extravars=extra,
                                 vault_password_file=airgap.vault,
                                 label="test-airgap-idempotence")  # fmt: skip
    assert result.status == "successful", result.failures
    assert result.changed == 0, {h: r.changed for h, r in result.hosts.items()}
    assert all(result.hosts[h].ok > 20 for h in HOSTS)


def test_offline_control_node_installs_from_the_bundle(airgap: Airgap, tmp_path: Path) -> None:
    wheel = next(airgap.out.glob("collections/ansible-*.whl"))
    installed = vendor.install(wheel=wheel, target=tmp_path / "collections")
    assert installed == vendor.pins()["collections"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env |= {"PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1"}
    resolved = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-index",
         "--find-links", str(airgap.out / "wheels"), "hearth"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert resolved.returncode == 0, resolved.stdout[-2000:] + resolved.stderr[-2000:]
    assert "Would install" in resolved.stdout and "hearth-" in resolved.stdout


def test_same_audit_as_online(airgap: Airgap) -> None:
    assert airgap.audit is not None, "the air-gapped audit did not run"
    lab.down()
    online = lab.up(2, airgapped=False, inventory_dir=airgap.work / "online", owner=TEST_OWNER)
    inventory = Path(online.inventory)
    done = hearth("up", "-i", str(inventory), "--vault-password-file", str(airgap.vault))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    report = airgap.work / "audit-online.json"
    audit = hearth("audit", "-i", str(inventory), "--format", "json", "-o", str(report),
                   "--vault-password-file", str(airgap.vault))  # fmt: skip
    assert audit.returncode == 0, audit.stdout[-3000:] + audit.stderr[-3000:]

    def outcomes(data: dict[str, Any]) -> dict[tuple[str, str, str], str]:
        return {(host, c["role"], c["check"]): c["outcome"]
                for host, found in data["hosts"].items() for c in found["checks"]}  # fmt: skip

    offline, online_result = outcomes(airgap.audit), outcomes(json.loads(report.read_text()))
    assert offline == online_result, {
        k: (offline.get(k), online_result.get(k))
        for k in set(offline) | set(online_result)
        if offline.get(k) != online_result.get(k)
    }
    assert airgap.audit["summary"]["failed"] == 0 and airgap.audit["summary"]["passed"] >= 40
