"""hearth.rules: every inventory-only rule has a bad inventory in the corpus that `hearth up`
refuses before any host; warnings are printed; a role's preflight runs the very same function
(the hearth_preflight action plugin) and says the same words."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hearth import cli, layers, paths, rules, runner

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
COLLECTIONS = paths.collections_dir()  # the real one, before HEARTH_HOME moves to tmp below


def _with_collections() -> None:
    """The temporary HEARTH_HOME sees the installed collections (the syntax check needs them)."""
    paths.hearth_home().mkdir(parents=True, exist_ok=True)
    paths.collections_dir().symlink_to(COLLECTIONS, target_is_directory=True)


# Each rule -> a corpus case that only it refuses, run through `hearth up` by test_corpus.py.
RULE_CASES = {
    "ports_in_range": "port-exporter-out-of-range",
    "ports_unique": "port-two-engines-default-ports",
    "front_door_keys": "frontdoor-short-key",
    "front_door_settings": "frontdoor-bind-not-an-address",
    "front_door_tls": "frontdoor-tls-key-mismatch",
    "monitoring_tls": "monitoring-tls-key-mismatch",
    "front_door_routes": "frontdoor-nothing-to-route",
    "front_door_key_models": "frontdoor-key-unknown-model",
    "front_door_key_limits": "frontdoor-key-rpm-zero",
    "front_door_key_expiry": "frontdoor-key-expires-not-a-date",
    "model_aliases": "frontdoor-alias-shadows-a-model",
    "engine_settings": "engine-health-timeout-zero",
    "engine_images": "engine-vllm-image-tag-only",
    "grafana_settings": "grafana-image-not-pinned",
    "dcgm_exporter_image": "dcgm-image-not-pinned",
    "alertmanager_receivers": "alert-email-without-smtp",
    "canary_settings": "canary-timeout-zero",
    "canary_questions": "canary-golden-question-without-check",
    "common_limits": "common-memlock-not-a-number",
    "container_runtime_settings": "container-runtime-mirror-without-url",
    "cuda_pins": "cuda-version-not-a-release",
    "driver_pins": "driver-version-not-of-branch",
    "gpu_compat": "cuda-too-new-for-driver",
    "model_store_settings": "model-store-negative-keep",
    "canary_rollout": "canary-share-with-drain-first",
    "prometheus_settings": "prometheus-admin-api-on-network",
}
# The inventory's own shape and files (hearth.inventory), refused the same way.
SHAPE_CASES = [
    "shape-empty-inventory",
    "shape-misspelled-inference-group",
    "shape-same-ipv6-host-twice",
    "vault-file-other-password",
    "vault-inline-other-password",
]


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HEARTH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "400")
    return tmp_path / "home"


def test_every_rule_has_a_case_that_hearth_up_refuses() -> None:
    assert {r.name for r in rules.RULES} == set(RULE_CASES)
    for case in [*RULE_CASES.values(), *SHAPE_CASES]:
        expect = yaml.safe_load((CORPUS / case / "expect.yml").read_text())
        assert expect["exit"] == 2 and expect["up"] is True, case


def test_every_rule_says_what_it_checks() -> None:
    for r in rules.RULES:
        assert r.doc, f"rule {r.name} has no docstring"


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        cli.main(args)
    out = capsys.readouterr()
    return int(done.value.code or 0), out.out + out.err


def _unknown_gpu_inventory(root: Path, refuse: bool) -> Path:
    shutil.copytree(CORPUS / "cuda-too-new-for-driver", root)
    (root / "expect.yml").unlink()
    site = root / "group_vars" / "all" / "site.yml"
    text = site.read_text().replace('cuda_version: "12.8"\n', "")
    site.write_text(text + "nvidia_driver_gpu_models: [NVIDIA Quantum Tensor 9000]\n")
    if refuse:  # a model that cannot fit: refused after the warning was shown
        models = root / "group_vars" / "inference" / "models.yml"
        models.write_text(
            models.read_text().replace("gpu_memory_share: 0.5", "gpu_memory_share: 0.05")
        )
    return root / "hosts.yml"


def test_an_unknown_gpu_model_is_a_warning_that_check_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _with_collections()
    code, output = _run(
        ["check", "-i", str(_unknown_gpu_inventory(tmp_path / "inv", False))], capsys
    )
    assert code == 0, output
    assert "WARNING host gpu01:" in output and "NVIDIA Quantum Tensor 9000" in output
    assert "inventory valid" in output


def test_hearth_up_prints_the_warning_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = _run(["up", "-i", str(_unknown_gpu_inventory(tmp_path / "inv", True))], capsys)
    assert code == 2, output
    assert "WARNING host gpu01:" in output and "NVIDIA Quantum Tensor 9000" in output
    assert "does not fit" in output
    assert not paths.runs_dir().exists()


def test_roles_of_a_host_from_its_groups_match_the_inventory_resolution() -> None:
    from hearth.inventory import load_inventory

    inventory = load_inventory(CORPUS / "port-two-engines-default-ports" / "hosts.yml")
    resolved = layers.roles_for_hosts(inventory)
    for host in inventory.hosts:
        found = inventory.ansible_inventory().get_host(host)
        groups = [g.name for g in found.get_groups()]
        assert layers.roles_for_group_names(host, groups) == resolved[host], host


def test_a_roles_preflight_runs_the_same_rule(tmp_path: Path) -> None:
    """The front door role's preflight, run by ansible-playbook on a local host, refuses the
    short key with the words `hearth check` uses: one function, two callers."""
    inventory = tmp_path / "inv"
    shutil.copytree(CORPUS / "frontdoor-short-key", inventory)
    hosts = inventory / "hosts.yml"
    hosts.write_text(
        "all:\n  children:\n    frontdoor:\n      hosts:\n        gpu01:\n"
        "          ansible_connection: local\n"
        f"          ansible_python_interpreter: {sys.executable}\n"
        "    inference:\n      hosts:\n        gpu01:\n"
    )
    playbook = tmp_path / "frontdoor-preflight.yml"
    playbook.write_text(
        "- hosts: frontdoor\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.import_role:\n        name: front_door\n"
        "        tasks_from: preflight.yml\n"
    )
    _with_collections()
    env = dict(os.environ, **runner.ansible_env(), ANSIBLE_NOCOLOR="1")
    done = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(hosts), str(playbook)],
        capture_output=True, text=True, env=env, check=False, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout[-3000:]
    assert "front_door_api_keys: key 'team-a': shorter than 32 characters" in done.stdout
    assert "hearth_preflight" not in done.stderr
    # Under `hearth up` (which has run every rule on the control node, and refuses this
    # inventory there with exit 2) the role's preflight is skipped: its condition says why.
    flagged = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(hosts), str(playbook),
         "-e", '{"hearth_preflight_done": true}'],
        capture_output=True, text=True, env=env, check=False, timeout=300,
    )  # fmt: skip
    assert flagged.returncode == 0, flagged.stdout[-3000:]
    assert "shorter than 32 characters" not in flagged.stdout
    assert "skipped=1" in flagged.stdout, flagged.stdout[-3000:]
