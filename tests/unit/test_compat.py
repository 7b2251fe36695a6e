"""hearth.compat (driver / CUDA / GPU / kernel) and the GPU layer's filters, without hosts."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import plugin_module

from hearth import compat
from hearth.errors import InvalidInputError
from hearth.inventory import load_inventory


def codes(findings: list[compat.Finding], level: str = "error") -> set[str]:
    return {f.code for f in findings if f.level == level}


def _filters() -> ModuleType:
    return plugin_module("filter", "hearth_gpu_layer")


FILTERS = _filters()


# ------------------------------------------------------------------------------------- the table
def test_table_minimum_drivers_rise_with_cuda() -> None:
    rows = compat._cuda_rows()
    drivers = [compat.parse_version(row["min_driver"]) for _, row in rows]
    assert drivers == sorted(drivers)
    for release, row in rows:
        assert compat.parse_version(row["min_capability"]) <= compat.parse_version(
            row["max_capability"]
        ), release
        floor = compat.table()["minor_version_compat"][release.split(".")[0]]
        if release != "11.0":  # 11.0 shipped before the 450.80.02 compatibility floor existed
            assert compat.parse_version(floor) <= compat.parse_version(row["min_driver"]), release


def test_every_capability_has_one_architecture() -> None:
    seen: dict[str, str] = {}
    for arch, row in compat.table()["architectures"].items():
        for cap in row["capabilities"]:
            assert cap not in seen, f"{cap} in {seen.get(cap)} and {arch}"
            seen[cap] = arch


@pytest.mark.parametrize(
    ("text", "expected"),
    [("535.104.05", (535, 104, 5)), ("535.309.01-0+deb12u1", (535, 309, 1)),
     ("3:550.54.14-1.el9", (550, 54, 14)), ("12.4", (12, 4))],
)  # fmt: skip
def test_parse_version(text: str, expected: tuple[int, ...]) -> None:
    assert compat.parse_version(text) == expected


def test_parse_version_rejects_words() -> None:
    with pytest.raises(ValueError, match="not a version"):
        compat.parse_version("latest")


@pytest.mark.parametrize(
    ("spec", "capability", "arch"),
    [("H100", "9.0", "hopper"), ("NVIDIA H100 80GB HBM3", "9.0", "hopper"), ("L40S", "8.9", "ada"),
     ("sm_90", "9.0", "hopper"), ("8.6", "8.6", "ampere"), ("ampere", "8.0", "ampere"),
     ("Tesla P100-PCIE-16GB", "6.0", "pascal"), ("sm_120", "12.0", "blackwell"),
     ("Mystery 9000", None, None)],
)  # fmt: skip
def test_resolve_gpu(spec: str, capability: str | None, arch: str | None) -> None:
    gpu = compat.resolve_gpu(spec)
    assert (gpu.capability, gpu.architecture) == (capability, arch)


def test_max_cuda_and_min_driver() -> None:
    assert compat.max_cuda_for_driver("535.309.01") == "12.2"
    assert compat.max_cuda_for_driver("535.309.01", minor_version_compat=True) == "12.9"
    assert compat.max_cuda_for_driver("440.33") is None
    assert compat.min_driver_for_cuda("12.4.1") == "550.54.14"
    assert compat.min_driver_for_cuda("12.4", minor_version_compat=True) == "525.60.13"


# ------------------------------------------------------------------------------------- check()
def test_the_lab_combination_fits() -> None:
    assert compat.check(driver_version="535.309.01", cuda_version="11.8", kernel="6.18.44") == []


def test_cuda_newer_than_the_driver_is_refused_with_what_works() -> None:
    findings = compat.check(driver_version="535.309.01", cuda_version="12.4")
    assert codes(findings) == {"cuda_needs_newer_driver"}
    message = findings[0].message
    assert "550.54.14" in message and "12.2 or older" in message
    assert "cuda_allow_minor_version_compat" in message


def test_minor_version_compatibility_is_a_warning_when_allowed() -> None:
    findings = compat.check(
        driver_version="535.309.01", cuda_version="12.4", allow_minor_version_compat=True
    )
    assert codes(findings) == set()
    assert codes(findings, "warning") == {"cuda_minor_version_compat"}


def test_below_the_compat_floor_stays_an_error() -> None:
    findings = compat.check(
        driver_version="520.61.05", cuda_version="12.0", allow_minor_version_compat=True
    )
    assert codes(findings) == {"cuda_needs_newer_driver"}
    assert "cuda_allow_minor_version_compat" not in findings[0].message


def test_unknown_cuda_release() -> None:
    assert codes(compat.check(driver_version="580.65.06", cuda_version="12.7")) == {"cuda_unknown"}


@pytest.mark.parametrize(
    ("driver", "gpu", "flavor", "cuda", "code"),
    [
        ("535.309.01", "H200", "proprietary", None, "gpu_needs_newer_driver"),
        ("550.54.14", "B200", "open", None, "gpu_needs_newer_driver"),
        ("590.44.01", "Tesla P100", "proprietary", None, "gpu_dropped_by_driver"),
        ("535.309.01", "Tesla P100", "open", None, "open_modules_unsupported"),
        ("570.133.20", "RTX PRO 6000 Blackwell", "proprietary", None,
         "proprietary_modules_unsupported"),
        ("580.65.06", "V100", "proprietary", "13.0", "gpu_dropped_by_cuda"),
        ("525.60.13", "3.7", "proprietary", "12.0", "gpu_dropped_by_cuda"),
        ("450.80.02", "A10", "proprietary", None, "gpu_needs_newer_driver"),
        ("510.47.03", "Tesla P100", "open", None, "open_modules_too_old"),
    ],
)  # fmt: skip
def test_impossible_gpu_combinations(
    driver: str, gpu: str, flavor: str, cuda: str | None, code: str
) -> None:
    findings = compat.check(
        driver_version=driver, gpus=[gpu], kernel_flavor=flavor, cuda_version=cuda
    )
    assert code in codes(findings), findings


def test_gpu_newer_than_the_toolkit_is_a_warning() -> None:
    findings = compat.check(driver_version="535.309.01", cuda_version="11.7", gpus=["L40S"])
    assert codes(findings) == set()
    assert codes(findings, "warning") == {"gpu_newer_than_cuda"}
    assert "11.8 or newer" in findings[0].message


def test_unknown_gpu_is_a_warning() -> None:
    findings = compat.check(driver_version="535.309.01", gpus=["Mystery 9000"])
    assert codes(findings, "warning") == {"gpu_unknown"}


def test_kernel_too_old_for_the_branch() -> None:
    assert codes(compat.check(driver_version="560.35.03", kernel="4.4.0-210-generic")) == {
        "kernel_too_old"
    }
    assert compat.check(driver_version="535.309.01", kernel="4.4.0-210-generic") == []


def test_bad_driver_version() -> None:
    assert codes(compat.check(driver_version="535")) == set()
    assert codes(compat.check(driver_version="r535")) == {"driver_version"}


# -------------------------------------------------------------------- hearth check (inventory)
def _inventory(tmp_path: Path, gpu_vars: str) -> Path:
    root = tmp_path / "site"
    (root / "group_vars" / "gpu_nodes").mkdir(parents=True)
    (root / "hosts.yml").write_text(
        "all:\n  children:\n    gpu_nodes:\n      hosts:\n"
        "        gpu01: {ansible_host: 10.0.0.11}\n"
        "    other:\n      hosts:\n        cpu01: {ansible_host: 10.0.0.12}\n"
    )
    (root / "group_vars" / "gpu_nodes" / "gpu.yml").write_text(gpu_vars)
    return root / "hosts.yml"


def test_check_inventory_refuses_what_the_roles_refuse(tmp_path: Path) -> None:
    inv = load_inventory(
        _inventory(tmp_path, 'cuda_version: "12.4"\nnvidia_driver_gpu_models: [H200]\n')
    )
    problems = compat.check_inventory(inv)
    assert len(problems) == 2 and all(p.startswith("gpu01: ") for p in problems)
    with pytest.raises(InvalidInputError, match="Nothing was changed"):
        compat.raise_for_inventory(inv)


def test_check_inventory_accepts_the_defaults(tmp_path: Path) -> None:
    inv = load_inventory(_inventory(tmp_path, "nvidia_driver_gpu_models: [L40S, T4]\n"))
    assert compat.check_inventory(inv) == []


def test_filter_gives_the_same_findings() -> None:
    found = FILTERS.gpu_compat("535.309.01", cuda_version="12.4", gpus=["H200"], kernel="6.1.0")
    expected = compat.check(driver_version="535.309.01", cuda_version="12.4", gpus=["H200"])
    assert found == [f.as_dict() for f in expected]


# ------------------------------------------------------------------------------ daemon.json merge
def test_daemon_json_keeps_unknown_keys_and_other_runtimes() -> None:
    existing: dict[str, Any] = {
        "log-driver": "journald",
        "registry-mirrors": ["https://mirror.example"],
        "runtimes": {"kata": {"path": "/usr/bin/kata-runtime"}},
        "exec-opts": ["native.cgroupdriver=systemd", "native.umask=normal"],
        "live-restore": False,
    }
    wanted = {
        "live-restore": True,
        "runtimes": {"nvidia": {"path": "nvidia-container-runtime", "args": []}},
    }
    merged = FILTERS.docker_daemon_config(
        existing, wanted, exec_opts=["native.cgroupdriver=cgroupfs"]
    )
    assert merged["log-driver"] == "journald"
    assert merged["registry-mirrors"] == ["https://mirror.example"]
    assert set(merged["runtimes"]) == {"kata", "nvidia"}
    assert merged["exec-opts"] == ["native.umask=normal", "native.cgroupdriver=cgroupfs"]
    assert merged["live-restore"] is True
    assert existing["runtimes"] == {"kata": {"path": "/usr/bin/kata-runtime"}}  # not mutated


def test_daemon_json_merge_is_stable() -> None:
    once = FILTERS.docker_daemon_config(
        {}, {"live-restore": True}, exec_opts=["native.cgroupdriver=cgroupfs"]
    )
    twice = FILTERS.docker_daemon_config(
        once, {"live-restore": True}, exec_opts=["native.cgroupdriver=cgroupfs"]
    )
    assert once == twice == {"live-restore": True, "exec-opts": ["native.cgroupdriver=cgroupfs"]}


def test_daemon_json_must_be_an_object() -> None:
    from ansible.errors import AnsibleFilterError

    with pytest.raises(AnsibleFilterError, match="JSON object"):
        FILTERS.docker_daemon_config(["not", "an", "object"], {})


# ----------------------------------------------------------------------------- reboot decision
def decide(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "device_present": True, "loaded_version": "535.261.03", "installed_version": "535.309.01",
    }  # fmt: skip
    args.update(overrides)
    result: dict[str, Any] = FILTERS.reboot_decision(**args)
    return result


def test_reboot_when_the_loaded_module_differs() -> None:
    result = decide()
    assert result["action"] == "reboot" and "535.261.03" in result["message"]


def test_no_reboot_without_a_device_or_a_difference() -> None:
    assert decide(device_present=False)["action"] == "none"
    assert decide(loaded_version="535.309.01")["action"] == "none"


def test_module_not_loaded_or_nouveau_needs_a_reboot() -> None:
    assert decide(loaded_version="")["needed"]
    assert decide(loaded_version="535.309.01", nouveau_loaded=True)["needed"]


@pytest.mark.parametrize(
    ("overrides", "blocker"),
    [
        ({"connection": "local"}, "connection is local"),
        ({"is_control_node": True}, "control node"),
        ({"engines_running": ["vllm-1"]}, "vllm-1"),
        ({"reboot_enabled": False}, "nvidia_driver_reboot is false"),
    ],
)
def test_reboot_is_reported_not_done_when_blocked(overrides: dict[str, Any], blocker: str) -> None:
    result = decide(**overrides)
    assert result["action"] == "report"
    assert "REBOOT NEEDED" in result["message"] and blocker in result["message"]


def test_disruption_allowed_reboots_with_engines_running() -> None:
    assert decide(engines_running=["vllm-1"], allow_disruption=True)["action"] == "reboot"
