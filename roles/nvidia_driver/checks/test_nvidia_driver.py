"""testinfra checks of the `nvidia_driver` role, run by `hearth audit` on every GPU node.

``hearth_vars`` is the host's declared state (inventory over role defaults). Checks that need an
NVIDIA device (nvidia-smi, persistence mode, the loaded module) are skipped, with the reason, on
hosts that have none; everything else (pin, hold, nouveau blacklist, persistence daemon enabled)
is checked on every GPU node.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from hearth.checklib import gpu_problems, nvidia_device, observe, observe_gpus, present_gpus

# Packages versioned on their own, not with the driver (Debian and NVIDIA's repositories).
_OWN_VERSION = re.compile(
    r"^(nvidia-persistenced|nvidia-modprobe|nvidia-settings|nvidia-xconfig|nvidia-support|"
    r"nvidia-installer-cleanup|nvidia-cuda-.*|nvidia-container-.*|libnvidia-container.*)$"
)
_DRIVER_LIKE = re.compile(r"^\d{3}\.\d{2,3}(\.\d{2})?([-~+].*)?$")


def _need_device(host: Any) -> str:
    device = nvidia_device(host)
    if device is None:
        pytest.skip(
            "no NVIDIA device on this host (no NVIDIA PCI display device, no /proc/driver/nvidia): "
            "nvidia-smi, persistence mode and the loaded module are checked only where a GPU exists"
        )
    return device


def _packages(host: Any) -> dict[str, tuple[str, str]]:
    """name -> (version, selection) of installed NVIDIA driver packages."""
    if host.exists("dpkg-query"):
        out = host.run(
            "dpkg-query -W -f '${db:Status-Abbrev}|${Package}|${Version}|${db:Status-Want}\\n' "
            "'*nvidia*' 'libcuda1' 'libnvcuvid1' 2>/dev/null"
        ).stdout
        found = {}
        for line in out.splitlines():
            status, name, version, want = ([*line.split("|"), "", "", "", ""])[:4]
            if status.startswith("i") or status.startswith("h"):
                found[name] = (version, want)
        return found
    out = host.run(
        "rpm -qa --qf '%{NAME}|%{VERSION}-%{RELEASE}\\n' 'nvidia-*' 'kmod-nvidia*'"
    ).stdout
    locked = host.run("dnf versionlock list 2>/dev/null").stdout
    return {
        name: (version, "hold" if name in locked else "install")
        for name, version in (line.split("|", 1) for line in out.splitlines() if "|" in line)
    }


def _driver_packages(host: Any) -> dict[str, tuple[str, str]]:
    return {
        name: info
        for name, info in _packages(host).items()
        if not _OWN_VERSION.match(name) and _DRIVER_LIKE.match(info[0])
    }


def test_driver_installed_at_the_pin(host: Any, hearth_vars: dict[str, Any]) -> None:
    """Every installed NVIDIA driver package (driver and its libraries together) is at the
    declared version (nvidia_driver_version)."""
    pin = hearth_vars["nvidia_driver_version"]
    driver = _driver_packages(host)
    observe("driver packages", {n: v for n, (v, _) in sorted(driver.items())}, pin)
    assert driver, f"NVIDIA driver {pin}: expected installed, found no driver package"
    other = {n: v for n, (v, _) in driver.items() if not re.match(re.escape(pin) + r"([-~+]|$)", v)}
    assert not other, (
        f"driver packages: expected all at {pin} (driver and libraries together), found "
        f"{other} — a split driver/library makes nvidia-smi fail with 'Driver/library version "
        "mismatch'"
    )


def test_driver_held(host: Any, hearth_vars: dict[str, Any]) -> None:
    """The driver packages are held (apt-mark hold / dnf versionlock) and apt pins them to the
    declared version, so no unattended upgrade moves them away from the kernel module."""
    if not hearth_vars["nvidia_driver_hold"]:
        pytest.skip("nvidia_driver_hold is false: the driver is not held on purpose")
    selections = {n: want for n, (_, want) in sorted(_driver_packages(host).items())}
    observe("driver package selections", selections, "hold")
    loose = sorted(n for n, want in selections.items() if want != "hold")
    assert not loose, (
        "driver packages: expected held (apt-mark hold / dnf versionlock), found not held "
        f"{loose}; an unattended upgrade could move them away from the kernel module"
    )
    if host.exists("dpkg-query"):
        pin_file = host.file("/etc/apt/preferences.d/hearth-nvidia-driver")
        expected = f"Pin: version {hearth_vars['nvidia_driver_version']}-*"
        assert pin_file.contains(f"^{re.escape(expected)}$"), (
            f"{pin_file.path}: expected '{expected}', found "
            f"{'no file' if not pin_file.exists else 'another pin'}"
        )


# What unattended-upgrades must never move, one example of each family; matched as it matches
# (each Package-Blacklist entry a regular expression, re.match'ed against the package name).
_KEEP_AWAY = ("nvidia-kernel-dkms", "libnvidia-ml1", "cuda-toolkit-12-4")


def test_unattended_upgrades_keep_away(host: Any, hearth_vars: dict[str, Any]) -> None:
    """unattended-upgrades will not move the driver, its libraries or CUDA: the package blacklist
    apt has in force covers nvidia-*, libnvidia-* and cuda-* (a library upgraded under a loaded
    kernel module is the "Driver/library version mismatch" outage)."""
    if not hearth_vars["nvidia_driver_hold"]:
        pytest.skip("nvidia_driver_hold is false: the driver is not kept from upgrades on purpose")
    if not host.exists("apt-config"):
        pytest.skip(
            "not an apt host: dnf hosts keep the driver with versionlock (test_driver_held)"
        )
    dump = host.run("apt-config dump Unattended-Upgrade::Package-Blacklist").stdout
    patterns = re.findall(r'^Unattended-Upgrade::Package-Blacklist:: "(.*)";$', dump, re.M)
    loose = [name for name in _KEEP_AWAY if not any(re.match(p, name) for p in patterns)]
    assert not loose, (
        "unattended-upgrades: expected Unattended-Upgrade::Package-Blacklist to cover "
        f"nvidia-*, libnvidia-*, cuda-*; it would upgrade {loose} (blacklist in force: "
        f"{patterns or 'none'})"
    )


def test_nouveau_blacklisted(host: Any, hearth_vars: dict[str, Any]) -> None:
    """The nouveau driver is blacklisted with modeset=0, so it cannot hold the GPU."""
    if not hearth_vars["nvidia_driver_blacklist_nouveau"]:
        pytest.skip("nvidia_driver_blacklist_nouveau is false")
    conf = host.file("/etc/modprobe.d/hearth-blacklist-nouveau.conf")
    assert conf.contains("^blacklist nouveau$"), (
        f"{conf.path}: expected 'blacklist nouveau', not found"
    )
    assert conf.contains("^options nouveau modeset=0$"), (
        f"{conf.path}: expected 'options nouveau modeset=0', not found"
    )


def test_persistence_daemon_enabled(host: Any, hearth_vars: dict[str, Any]) -> None:
    """nvidia-persistenced starts at boot (where nvidia_driver_persistence is declared)."""
    if not hearth_vars["nvidia_driver_persistence"]:
        pytest.skip("nvidia_driver_persistence is false")
    service = host.service("nvidia-persistenced")
    observe("nvidia-persistenced enabled", service.is_enabled, True)
    assert service.is_enabled, "nvidia-persistenced: expected enabled at boot, found disabled"


def test_nvidia_smi_healthy(host: Any, hearth_vars: dict[str, Any]) -> None:
    """nvidia-smi lists the host's GPUs (the driver and the device talk to each other)."""
    device = _need_device(host)
    result = host.run("nvidia-smi -L")
    observe("nvidia-smi -L", (result.stdout + result.stderr).strip()[:500])
    assert result.rc == 0 and "GPU " in result.stdout, (
        f"nvidia-smi ({device}): expected a list of GPUs, found rc={result.rc}: "
        f"{(result.stdout + result.stderr).strip()[:300]}"
    )


def test_running_driver_matches_pin(host: Any, hearth_vars: dict[str, Any]) -> None:
    """The loaded kernel module and nvidia-smi both report the declared driver version."""
    _need_device(host)
    pin = hearth_vars["nvidia_driver_version"]
    loaded = host.file("/sys/module/nvidia/version")
    found = loaded.content_string.strip() if loaded.exists else "no nvidia module loaded"
    observe("loaded nvidia module", found, pin)
    assert found == pin, f"loaded nvidia module: expected {pin}, found {found} (a reboot loads it)"
    reported = set(
        host.check_output("nvidia-smi --query-gpu=driver_version --format=csv,noheader").split()
    )
    assert reported == {pin}, f"nvidia-smi driver: expected {pin}, found {sorted(reported)}"


def test_persistence_mode_on(host: Any, hearth_vars: dict[str, Any]) -> None:
    """Persistence mode is on for every GPU (no re-initialisation delay on each request)."""
    _need_device(host)
    if not hearth_vars["nvidia_driver_persistence"]:
        pytest.skip("nvidia_driver_persistence is false")
    assert host.service("nvidia-persistenced").is_running, (
        "nvidia-persistenced: expected running, found stopped"
    )
    modes = host.check_output(
        "nvidia-smi --query-gpu=index,persistence_mode --format=csv,noheader"
    ).splitlines()
    observe("persistence mode", [m.strip() for m in modes], "Enabled")
    off = [m for m in modes if not m.strip().endswith("Enabled")]
    assert not off, f"persistence mode: expected Enabled on every GPU, found {off}"


def test_nouveau_not_loaded(host: Any, hearth_vars: dict[str, Any]) -> None:
    """The nouveau module is not loaded on a host with an NVIDIA device."""
    _need_device(host)
    assert not host.file("/sys/module/nouveau").exists, (
        "nouveau: expected not loaded, found loaded (it holds the GPU; reboot after the blacklist)"
    )


def test_gpus_present_as_declared(host: Any, hearth_vars: dict[str, Any]) -> None:
    """Fewer GPUs than declared (``hearth_declared_gpus``) or than the facts recorded at the last
    ``hearth up``, or a GPU a model names (index or UUID) that is gone, fails: a GPU fell off the
    bus, or the inventory promises hardware the host does not have."""
    from hearth.models import parse_models

    declared = list(hearth_vars.get("hearth_declared_gpus") or [])
    recorded = list(hearth_vars.get("hearth_recorded_gpus") or [])
    models = [m for m in parse_models(hearth_vars.get("hearth_models") or []) if m.gpus]
    report = present_gpus(host)
    observe_gpus(report, declared or recorded)
    if not (declared or recorded or models or report.gpus or report.pci_devices):
        pytest.skip(
            "no GPU declared (hearth_declared_gpus), none recorded in the facts, none named by a "
            "model and none on the host (nvidia-smi absent, no NVIDIA PCI device): nothing to "
            "compare"
        )
    problems = gpu_problems(declared, recorded, report.gpus, models)
    if report.problem:
        problems.append(report.problem)
    assert not problems, "; ".join(problems)
