"""The audit's comparisons that decide a failure: GPUs (against recorded real nvidia-smi output),
the front door's keys, the Prometheus rule file's content; and the inputs the audit derives for
the checks (no key and no key hash among them).

The GPU checks run here on a stand-in host whose ``nvidia-smi`` prints the recorded outputs of
tests/fixtures/nvidia-smi: the lab has no GPU, these are the real thing as it was printed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from conftest import load_source

from hearth import checklib, monitoring, paths
from hearth.frontdoor.config import hash_key

SMI = Path(__file__).resolve().parent.parent / "fixtures" / "nvidia-smi"
T4 = "tesla-t4_driver-515.105.01_q-x.xml"
P100X2 = "2x-tesla-p100-pcie-12gb_driver-375.66_q-x_schema-v8.xml"
T4_UUID = "GPU-d37e67a5-91dd-3774-a5cb-99096249601a"
P100_UUIDS = (
    "GPU-28604e81-21ec-cc48-6759-bf2648b22e16",
    "GPU-46915a82-3fd2-8e11-ae26-a80b607c04f3",
)


@dataclass
class Done:
    rc: int
    stdout: str = ""
    stderr: str = ""


class RecordedHost:
    """A host whose nvidia-smi prints a recorded output (None: not installed) and whose PCI bus
    holds ``pci`` NVIDIA devices."""

    def __init__(self, recording: str | None, pci: int = 0) -> None:
        self.recording, self.pci = recording, pci

    def run(self, command: str, *args: str) -> Done:
        if command.startswith("command -v nvidia-smi"):
            return Done(0, "/usr/bin/nvidia-smi\n") if self.recording else Done(1)
        if command.startswith("nvidia-smi -q -x"):
            assert self.recording is not None
            text = (SMI / self.recording).read_text()
            return Done(0, text) if "<nvidia_smi_log" in text else Done(9, text)
        if "/sys/bus/pci/devices" in command:
            return Done(0, "".join(f"0000:{i:02x}:00.0\n" for i in range(self.pci)))
        raise AssertionError(f"unexpected command {command}")


def _check(role: str) -> ModuleType:
    return load_source(
        paths.roles_dir() / role / "checks" / f"test_{role}.py", f"hearth_check_{role}"
    )


def _declared(n: int) -> list[dict[str, Any]]:
    return [{"index": i, "name": "NVIDIA L40S", "memory_mib": 46068} for i in range(n)]


def _gpu_check(host: RecordedHost, **hearth_vars: Any) -> None:
    _check("nvidia_driver").test_gpus_present_as_declared(host, hearth_vars)


# ---------------------------------------------------------------------------------- GPUs
def test_present_gpus_reads_nvidia_smi_through_the_gpu_facts_parser() -> None:
    report = checklib.present_gpus(RecordedHost(P100X2, pci=2))
    assert [g["uuid"] for g in report.gpus] == list(P100_UUIDS)
    assert report.problem is None and report.pci_devices == 2


def test_fewer_gpus_than_declared_fails_naming_count_and_uuids() -> None:
    with pytest.raises(AssertionError) as failed:
        _gpu_check(RecordedHost(T4, pci=1), hearth_declared_gpus=_declared(2))
    assert str(failed.value) == (
        f"GPUs: expected 2 as declared (hearth_declared_gpus), found 1 ({T4_UUID})"
    )


def test_as_many_gpus_as_declared_passes() -> None:
    _gpu_check(RecordedHost(P100X2, pci=2), hearth_declared_gpus=_declared(2))


def test_a_recorded_gpu_that_is_gone_fails_naming_its_uuid() -> None:
    recorded = [{"index": i, "uuid": u, "name": "Tesla P100"} for i, u in enumerate(P100_UUIDS)]
    # the host had both P100s at the last hearth up; now nvidia-smi lists one GPU (the T4 record)
    with pytest.raises(AssertionError) as failed:
        _gpu_check(RecordedHost(T4, pci=1), hearth_recorded_gpus=recorded)
    said = str(failed.value)
    assert "expected 2 as recorded in the facts of the last hearth up, found 1" in said
    assert f"missing GPU 0 ({P100_UUIDS[0]}), GPU 1 ({P100_UUIDS[1]})" in said


def test_same_count_but_another_uuid_fails() -> None:
    recorded = [{"index": 0, "uuid": P100_UUIDS[0]}]
    with pytest.raises(AssertionError) as failed:
        _gpu_check(RecordedHost(T4, pci=1), hearth_recorded_gpus=recorded)
    assert f"but gone: GPU 0 ({P100_UUIDS[0]}); found 1 ({T4_UUID})" in str(failed.value)


def test_a_gpu_a_model_names_that_is_gone_fails() -> None:
    model = {
        "name": "llama", "version": "v1", "engine": "vllm", "format": "safetensors",
        "catalog": "llama-3.1-8b-instruct", "source": {"type": "path", "path": "/srv/m"},
        "files": [{"path": "model.safetensors", "sha256": "a" * 64}],
        "max_model_len": 4096, "max_num_seqs": 4, "gpus": [1, P100_UUIDS[1]],
    }  # fmt: skip
    with pytest.raises(AssertionError) as failed:
        _gpu_check(RecordedHost(T4, pci=1), hearth_models=[model])
    assert str(failed.value) == (
        f"model llama: names GPU 1, {P100_UUIDS[1]}, not on the host (found 1 ({T4_UUID}))"
    )
    _gpu_check(RecordedHost(P100X2, pci=2), hearth_models=[model])


def test_a_declared_gpu_on_a_host_without_one_fails_and_nothing_declared_skips() -> None:
    with pytest.raises(AssertionError) as failed:
        _gpu_check(RecordedHost(None), hearth_declared_gpus=_declared(1))
    assert str(failed.value) == "GPUs: expected 1 as declared (hearth_declared_gpus), found 0"
    with pytest.raises(pytest.skip.Exception) as skipped:
        _gpu_check(RecordedHost(None))
    assert "nothing to compare" in str(skipped.value)


def test_a_failing_nvidia_smi_is_named() -> None:
    host = RecordedHost("error_no-driver_couldnt-communicate.txt", pci=1)
    with pytest.raises(AssertionError) as failed:
        _gpu_check(host, hearth_declared_gpus=_declared(1))
    said = str(failed.value)
    assert said.startswith("GPUs: expected 1 as declared (hearth_declared_gpus), found 0")
    assert "nvidia-smi failed (no_driver)" in said


# ------------------------------------------------------------------------ front door keys
def _declared_keys(*keys: tuple[str, str]) -> list[dict[str, str]]:
    return [{"name": n, "fingerprint": checklib.key_fingerprint(hash_key(k))} for n, k in keys]


def test_keys_file_with_exactly_the_declared_keys_passes() -> None:
    keys = (("ops", "k" * 40), ("ci", "c" * 40))
    entries = [{"name": n, "sha256": hash_key(k)} for n, k in keys]
    assert checklib.keys_drift(_declared_keys(*keys), entries) == ""


def test_a_key_hash_appended_by_hand_is_named_by_position_never_by_hash() -> None:
    declared = _declared_keys(("ops", "k" * 40))
    rogue = hash_key("rogue-key-" + "r" * 30)
    entries = [{"name": "ops", "sha256": hash_key("k" * 40)}, {"name": "ops", "sha256": rogue}]
    said = checklib.keys_drift(declared, entries)
    assert said == (
        "expected exactly the 1 declared key(s), found 2 entries; not declared: entry 2 "
        "(name 'ops')"
    )
    assert rogue not in said and hash_key("k" * 40) not in said


def test_a_missing_or_replaced_key_is_named() -> None:
    declared = _declared_keys(("ops", "k" * 40), ("ci", "c" * 40))
    entries = [{"name": "ops", "sha256": hash_key("k" * 40)}, {"name": "ci", "sha256": "0" * 64}]
    said = checklib.keys_drift(declared, entries)
    assert "not declared: entry 2 (name 'ci')" in said
    assert "missing or with another hash: key 'ci'" in said


# ---------------------------------------------------------------------------- rule file
def test_a_threshold_edited_by_hand_changes_the_digest_and_is_named() -> None:
    wanted = monitoring.alert_rules({}, ["/var/lib/hearth/models"], ["lab1"])
    on_host = yaml.safe_load(yaml.safe_dump(wanted, width=1000))
    assert checklib.rules_digest(on_host) == checklib.rules_digest(wanted)
    assert checklib.rules_drift(wanted, on_host) == []
    rule = next(
        r for g in on_host["groups"] for r in g["rules"] if "> 85" in str(r.get("expr", ""))
    )
    rule["expr"] = str(rule["expr"]).replace("> 85", "> 95")
    assert checklib.rules_digest(on_host) != checklib.rules_digest(wanted)
    assert checklib.rules_drift(wanted, on_host) == [f"{rule['alert']}: expr changed"]


# ---------------------------------------------------------------------- derived inputs
def test_audit_inputs_hold_fingerprints_and_recorded_gpus_never_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hearth.audit import declared_state
    from hearth.inventory import load_inventory

    monkeypatch.setenv("HEARTH_HOME", str(tmp_path / "home"))
    key = "planted-" + "x" * 40
    inv = tmp_path / "inv"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "hosts.yml").write_text(
        yaml.safe_dump({"all": {"children": {
            "frontdoor": {"hosts": {"gpu1": {"ansible_host": "192.0.2.10"}}},
            "monitoring": {"hosts": {"mon1": {"ansible_host": "192.0.2.11"}}},
        }}})
    )  # fmt: skip
    (inv / "group_vars" / "all" / "keys.yml").write_text(
        yaml.safe_dump({"front_door_api_keys": [{"name": "ops", "key": key}]})
    )
    facts = paths.facts_dir(inv / "hosts.yml")
    facts.mkdir(parents=True)
    (facts / "gpu1").write_text(
        json.dumps({"hearth_gpus": [{"index": 0, "uuid": T4_UUID, "name": "Tesla T4", "x": 1}]})
    )
    loaded = load_inventory(inv / "hosts.yml")
    state = declared_state(loaded, "gpu1", ["front_door"])
    assert state["hearth_recorded_gpus"] == [{"index": 0, "uuid": T4_UUID, "name": "Tesla T4"}]
    assert state["front_door_key_fingerprints"] == _declared_keys(("ops", key))
    text = json.dumps(state)
    assert key not in text and hash_key(key) not in text
    assert declared_state(loaded, "mon1", ["prometheus"])["hearth_model_hosts"] == []
