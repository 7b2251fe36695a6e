"""Model upgrades in the model store (``roles/model_store``) on lab2 of the session lab.

The role alone (tests/integration/playbooks/model_store.yml: the base layer, then the store, on
the `inference` group), with the lab's real model (SmolLM2), in order:

1. deploy SmolLM2 v1 from a control-node path: current → v1, one changelog record;
2. the same again: changed=0 (idempotent); the role's testinfra checks pass (the audit);
3. v2 (same weights, new engine_args and chat template): current → v2, the record says what
   changed, v1 is kept;
4. v3 declared with a wrong sha256: refused naming the model, the file, the expected and the found
   sha256; current still → v2, nothing of v3 left;
5. check mode on a new version changes nothing; v4 and v5 with keep 1 prune the oldest.

The host's files are read through ``docker exec``, not through the code under test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from labkit import container_exec, write_inventory
from test_inference import smollm2

from hearth import audit, images, inventory, layers, runner
from hearth import lab as lab_mod

pytestmark = pytest.mark.lab

HOST = "lab2"  # lab1 is the inference layer's (test_inference.py); lab2 serves nothing else
BOOK = Path(__file__).resolve().parent / "playbooks" / "model_store.yml"
STORE = "/var/lib/hearth/models"
CLEAN = f"rm -rf {STORE}/smollm2 {STORE}/changelog.jsonl"


class Unsafe(str):
    """A value Ansible must not template (a chat template is Jinja itself): ``!unsafe``."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(Unsafe, lambda d, v: d.represent_scalar("!unsafe", str(v), style="'"))


class Store:
    def __init__(self, lab: lab_mod.LabState, directory: Path) -> None:
        self.lab = lab
        self.directory = directory
        self.baseline_done = False

    def sh(self, command: str) -> str:
        return container_exec(self.lab, HOST, "sh", "-c", command).stdout.strip()

    def converge(
        self, models: list[dict[str, Any]], check: bool = False, **extra: Any
    ) -> runner.RunResult:
        variables = {"hearth_models": models, **extra}
        target = self.directory / "group_vars" / "inference" / "models.yml"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.dump(variables, Dumper=_Dumper, sort_keys=False))
        # the baseline once: the first run converges it, the others run the store alone
        skip = "baseline" if self.baseline_done else None
        done = runner.run_playbook(
            BOOK, self.directory / "hosts.yml", check=check, skip_tags=skip, label="model-store-lab"
        )
        self.baseline_done = self.baseline_done or (done.rc == 0 and not check)
        return done

    def changelog(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.sh(f"cat {STORE}/changelog.jsonl").splitlines()]


@pytest.fixture(scope="module")
def model_file() -> images.FetchedModel:
    return next(images.fetch_lab_models("smollm2-135m-instruct-q4_1"))


@pytest.fixture(scope="module")
def store(lab: lab_mod.LabState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    directory = tmp_path_factory.mktemp("model-store")
    write_inventory(
        lab, directory, group_vars={"hearth_operator": "lab-test"}, groups={"inference": [HOST]}
    )
    result = Store(lab, directory)
    result.sh(CLEAN)
    yield result
    result.sh(CLEAN)  # leave lab2 as the other tests on the session lab expect it


def test_model_store_lifecycle(
    store: Store, model_file: images.FetchedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = model_file.path.name
    first = store.converge([smollm2("v1")])
    first.raise_for_status()
    assert store.sh(f"readlink {STORE}/smollm2/current") == "v1"
    assert store.sh(f"sha256sum {STORE}/smollm2/current/{name}").split()[0] == model_file.sha256
    (record,) = store.changelog()
    assert (record["model"], record["from_version"], record["to_version"]) == (
        "smollm2",
        None,
        "v1",
    )
    assert record["changes"] == ["weights", "engine_args"] and record["operator"] == "lab-test"
    assert record["host"] == HOST

    again = store.converge([smollm2("v1")])
    again.raise_for_status()
    assert again.changed == 0, f"second run changed {again.changed} task(s): {again.artifacts}"
    assert len(store.changelog()) == 1

    inv = inventory.check_inventory(store.directory / "hosts.yml")
    monkeypatch.setattr(layers, "roles_for_hosts", lambda i, p=None: {HOST: ["model_store"]})
    result = audit.run_audit(inv)
    outcomes = {(r.check, r.outcome) for r in result.results}
    assert outcomes == {
        ("test_current_points_at_declared_version", "passed"),
        ("test_files_match_their_sha256", "passed"),
        ("test_files_are_not_world_readable", "passed"),
        ("test_changelog_records_the_current_version", "passed"),
        ("test_versions_kept", "passed"),
    }, result.results

    v2 = smollm2("v2", engine_args={"threads": 1}, chat_template=Unsafe("{{ messages }}"))
    store.converge([v2]).raise_for_status()
    assert store.sh(f"readlink {STORE}/smollm2/current") == "v2"
    assert store.sh(f"cat {STORE}/smollm2/v2/chat_template.jinja") == "{{ messages }}"
    last = store.changelog()[-1]
    assert (last["from_version"], last["to_version"], last["changes"]) == (
        "v1",
        "v2",
        ["engine_args", "chat_template"],
    )
    assert store.sh(f"ls {STORE}/smollm2").split() == ["current", "v1", "v2"]

    bad = smollm2("v3")
    bad["files"][0]["sha256"] = "0" * 64
    refused = store.converge([bad])
    assert refused.failed_hosts == [HOST]
    message = " ".join(m for _, _, m in refused.failures)
    assert (
        f"model smollm2 v3: file {name}: expected sha256 {'0' * 64}, found {model_file.sha256}"
        in message
    ), message
    assert "current still points at v2" in message
    assert store.sh(f"readlink {STORE}/smollm2/current") == "v2"
    assert store.sh(f"ls -a {STORE}/smollm2").split() == [".", "..", "current", "v1", "v2"]
    assert len(store.changelog()) == 2

    dry = store.converge([smollm2("v4")], check=True)
    dry.raise_for_status()
    assert store.sh(f"readlink {STORE}/smollm2/current") == "v2"
    assert "v4" not in store.sh(f"ls {STORE}/smollm2").split()

    store.converge([smollm2("v4")], model_store_keep_versions=1).raise_for_status()
    store.converge([smollm2("v5")], model_store_keep_versions=1).raise_for_status()
    assert store.sh(f"ls {STORE}/smollm2").split() == ["current", "v4", "v5"]
    assert store.sh(f"readlink {STORE}/smollm2/current") == "v5"
    assert [r["changes"] for r in store.changelog()[-2:]] == [
        ["engine_args", "chat_template"],
        ["version"],
    ]
    assert store.sh(f"stat -c '%U:%G %a' {STORE}/smollm2/v5/{name}") == "hearth:hearth 640"
