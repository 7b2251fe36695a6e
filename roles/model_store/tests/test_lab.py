"""The model_store role on a lab host (Docker; ``HEARTH_LAB_ID`` selects the lab).

Run explicitly: ``HEARTH_LAB_ID=2 pytest -m lab roles/model_store/tests/test_lab.py`` after
``hearth lab up --hosts 1`` and ``hearth models fetch-lab``. One scenario, in order:

1. deploy SmolLM2 v1 from a control-node path: current → v1, one changelog record;
2. the same again: changed=0 (idempotent); the role's testinfra checks pass (``hearth audit``);
3. v2 (same weights, new engine_args and chat template): current → v2, the record says what
   changed, v1 is kept;
4. v3 declared with a wrong sha256: refused naming the model, the file, the expected and the found
   sha256; current still → v2, nothing of v3 left;
5. check mode on a new version changes nothing; v4 and v5 with keep 1 prune the oldest;
6. a model on a GPU the host does not have is refused by the preflight, before any change.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from hearth import audit, images, inventory, lab, layers, runner

pytestmark = pytest.mark.lab

LAB_MODEL = "smollm2-135m-instruct-q4_1"
BOOK = Path(__file__).resolve().parent / "lab.yml"
STORE = "/var/lib/hearth/models"


def _lab_inventory() -> Path:
    path = Path.cwd() / "inventories" / f"lab{'' if lab.lab_id() == 0 else f'-{lab.lab_id()}'}"
    if not (path / "hosts.yml").is_file():
        pytest.skip(f"no lab inventory at {path}: run `hearth lab up --hosts 1` first")
    return path


@pytest.fixture(scope="module")
def model_file() -> images.FetchedModel:
    return next(images.fetch_lab_models(LAB_MODEL))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An inventory: the lab's hosts and connection variables, plus this test's models file."""
    root = tmp_path_factory.mktemp("inventory")
    source = _lab_inventory()
    shutil.copy(source / "hosts.yml", root / "hosts.yml")
    shutil.copytree(source / "group_vars" / "all", root / "group_vars" / "all")
    return root


def declaration(model: images.FetchedModel, version: str, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
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
    base.update(over)
    return base


class Unsafe(str):
    """A value Ansible must not template (a chat template is Jinja itself): ``!unsafe``."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(Unsafe, lambda d, v: d.represent_scalar("!unsafe", str(v), style="'"))


def converge(
    site: Path, models: list[dict[str, Any]], check: bool = False, **extra: Any
) -> runner.RunResult:
    variables = {"hearth_models": models, "hearth_operator": "lab-test", **extra}
    target = site / "group_vars" / "all" / "models.yml"
    target.write_text(yaml.dump(variables, Dumper=_Dumper, sort_keys=False))
    return runner.run_playbook(BOOK, site / "hosts.yml", check=check, label="model-store-lab")


def on_host(command: str) -> str:
    container = lab.container_name(1)
    done = subprocess.run(
        ["docker", "exec", container, "sh", "-c", command],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip()


def changelog() -> list[dict[str, Any]]:
    return [json.loads(line) for line in on_host(f"cat {STORE}/changelog.jsonl").splitlines()]


def test_model_store_lifecycle(
    site: Path, model_file: images.FetchedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_host(f"rm -rf {STORE}/smollm2 {STORE}/changelog.jsonl")

    first = converge(site, [declaration(model_file, "v1")])
    first.raise_for_status()
    assert on_host(f"readlink {STORE}/smollm2/current") == "v1"
    assert (
        on_host(f"sha256sum {STORE}/smollm2/current/{model_file.path.name}").split()[0]
        == model_file.sha256
    )
    (record,) = changelog()
    assert (record["model"], record["from_version"], record["to_version"]) == (
        "smollm2",
        None,
        "v1",
    )
    assert record["changes"] == ["weights", "engine_args"] and record["operator"] == "lab-test"

    again = converge(site, [declaration(model_file, "v1")])
    again.raise_for_status()
    assert again.changed == 0, f"second run changed {again.changed} task(s): {again.artifacts}"
    assert len(changelog()) == 1

    inv = inventory.check_inventory(site / "hosts.yml")
    monkeypatch.setattr(
        layers, "roles_for_hosts", lambda i, p=None: {h: ["model_store"] for h in i.hosts}
    )
    result = audit.run_audit(inv)
    outcomes = {(r.check, r.outcome) for r in result.results}
    assert outcomes == {
        ("test_current_points_at_declared_version", "passed"),
        ("test_files_match_their_sha256", "passed"),
        ("test_files_are_not_world_readable", "passed"),
        ("test_changelog_records_the_current_version", "passed"),
        ("test_versions_kept", "passed"),
    }, result.results

    v2 = declaration(
        model_file, "v2", engine_args={"threads": 1}, chat_template=Unsafe("{{ messages }}")
    )
    converge(site, [v2]).raise_for_status()
    assert on_host(f"readlink {STORE}/smollm2/current") == "v2"
    assert on_host(f"cat {STORE}/smollm2/v2/chat_template.jinja") == "{{ messages }}"
    last = changelog()[-1]
    assert (last["from_version"], last["to_version"], last["changes"]) == (
        "v1",
        "v2",
        ["engine_args", "chat_template"],
    )
    assert on_host(f"ls {STORE}/smollm2").split() == ["current", "v1", "v2"]

    bad = declaration(model_file, "v3")
    bad["files"][0]["sha256"] = "0" * 64
    refused = converge(site, [bad])
    assert refused.failed_hosts == ["lab1"]
    message = " ".join(m for _, _, m in refused.failures)
    assert (
        f"model smollm2 v3: file {model_file.path.name}: expected sha256 {'0' * 64}, found "
        f"{model_file.sha256}" in message
    ), message
    assert "current still points at v2" in message
    assert on_host(f"readlink {STORE}/smollm2/current") == "v2"
    assert on_host(f"ls -a {STORE}/smollm2").split() == [".", "..", "current", "v1", "v2"]
    assert len(changelog()) == 2

    dry = converge(site, [declaration(model_file, "v4")], check=True)
    dry.raise_for_status()
    assert on_host(f"readlink {STORE}/smollm2/current") == "v2"
    assert "v4" not in on_host(f"ls {STORE}/smollm2").split()

    converge(site, [declaration(model_file, "v4")], model_store_keep_versions=1).raise_for_status()
    converge(site, [declaration(model_file, "v5")], model_store_keep_versions=1).raise_for_status()
    assert on_host(f"ls {STORE}/smollm2").split() == ["current", "v4", "v5"]
    assert on_host(f"readlink {STORE}/smollm2/current") == "v5"
    assert [r["changes"] for r in changelog()[-2:]] == [
        ["engine_args", "chat_template"],
        ["version"],
    ]
    assert (
        on_host(f"stat -c '%U:%G %a' {STORE}/smollm2/v5/{model_file.path.name}")
        == "hearth:hearth 640"
    )
