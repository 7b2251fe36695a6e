"""The GPU layer (nvidia_driver, cuda, container_runtime) for real, on a fresh lab GPU node.

The lab has no NVIDIA device: every path but loading the module and nvidia-smi runs for real
(Debian's NVIDIA packages, pins and holds, the nouveau blacklist and initramfs, the CUDA
environment in every context, Docker inside the host with daemon.json merged); the rest must be
reported as skipped with its reason. Proves idempotence (second run changed=0), check mode (a
changed variable reports changes and the host stays as it was), the compatibility refusal, and
the audit. Uses its own lab (labkit.EXTRA_LABS["gpu-layer"]) and tears it down at the end.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from labkit import TEST_OWNER, owned_lab

from hearth import lab, runner
from hearth.audit import run_audit
from hearth.inventory import check_inventory

pytestmark = pytest.mark.lab

GPU_ROLES = ("nvidia_driver", "cuda", "container_runtime")
WATCHED = (
    "/etc/default/hearth-cuda",
    "/etc/default/hearth-cuda.container",
    "/etc/profile.d/hearth-cuda.sh",
    "/etc/docker/daemon.json",
    "/etc/modprobe.d/hearth-blacklist-nouveau.conf",
    "/etc/apt/preferences.d/hearth-nvidia-driver",
)
# A daemon.json an operator already had: Hearth must keep its keys and fix only the cgroup driver.
SEEDED_DAEMON_JSON = {
    "log-opts": {"max-size": "10m"},
    "exec-opts": ["native.cgroupdriver=systemd"],
    "runtimes": {"site-runc": {"path": "/usr/bin/runc"}},
}


class Lab:
    def __init__(self, inventory: Path, host: str, container: str, vault: Path) -> None:
        self.inventory = inventory
        self.vault = vault  # this lab's vault password (the front door's keys are vaulted)
        self.host = host
        self.container = container
        self.timings: dict[str, float] = {}

    def sh(self, script: str) -> str:
        done = subprocess.run(
            ["docker", "exec", self.container, "sh", "-c", script],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout

    def digest(self) -> dict[str, str]:
        out = {}
        for path in WATCHED:
            data = subprocess.run(
                ["docker", "exec", self.container, "cat", path], capture_output=True, check=False
            ).stdout
            out[path] = hashlib.sha256(data).hexdigest()
        out["holds"] = hashlib.sha256(self.sh("apt-mark showhold").encode()).hexdigest()
        out["cgroup"] = self.sh("docker info --format '{{.CgroupDriver}}'").strip()
        return out

    def run(self, label: str, **kwargs: Any) -> runner.RunResult:
        start = time.monotonic()
        result = runner.run_playbook(
            "gpu.yml", self.inventory, limit=self.host, label=f"gpu-{label}", **kwargs
        )
        self.timings[label] = round(time.monotonic() - start, 1)
        return result


def messages(result: runner.RunResult) -> list[str]:
    """The ``msg`` of every task result of the run (debug reports, assert failures)."""
    found = []
    for path in sorted(result.artifacts.glob("artifacts/*/job_events/*.json")):
        event = json.loads(path.read_text())
        res = (event.get("event_data") or {}).get("res") or {}
        msg = res.get("msg")
        if isinstance(msg, str):
            found.append(msg)
        elif isinstance(msg, list):
            found += [str(m) for m in msg]
    return found


@pytest.fixture(scope="module")
def gpu_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if shutil.which("docker") is None:
        pytest.skip("Docker is not installed: the lab needs it")
    try:
        lab.docker_client()
    except Exception as exc:  # the engine is not running here
        pytest.skip(f"the Docker engine is not reachable: {exc}")
    # Its own lab, so the cold-host start never touches the session lab that the other layers'
    # tests share; cold: the tests' own hosts left from an earlier run are removed first.
    with owned_lab("gpu-layer", cold=True):
        state = lab.up(2, inventory_dir=tmp_path_factory.mktemp("gpu-lab"), owner=TEST_OWNER)
        inventory = Path(state.inventory).parent
        gpu_host = state.hosts[0]
        yield Lab(inventory, gpu_host.name, gpu_host.container, lab.vault_password_file())


@pytest.fixture(scope="module")
def first_run(gpu_lab: Lab) -> runner.RunResult:
    gpu_lab.sh(
        "mkdir -p /etc/docker && printf '%s' "
        + shlex.quote(json.dumps(SEEDED_DAEMON_JSON))
        + " > /etc/docker/daemon.json"
    )
    result = gpu_lab.run("first")
    print(f"\nGPU layer, cold host: first run {gpu_lab.timings['first']} s")
    return result


def test_first_run_converges_and_reports_what_it_skipped(
    gpu_lab: Lab, first_run: runner.RunResult
) -> None:
    first_run.raise_for_status()
    assert first_run.hosts[gpu_lab.host].changed > 0
    said = "\n".join(messages(first_run))
    for expected in (
        f"SKIPPED on {gpu_lab.host}: no NVIDIA device",
        "loading the module, nvidia-smi, the persistence daemon's start and any reboot are skipped",
        "the NVIDIA container toolkit (nvidia-container-toolkit 1.17.8) is not available from the "
        "configured sources",
        "a container cannot be shown a GPU here",
        "cuda_packages (libcudart11.0, libnvrtc11.2) is a runtime-only set",
    ):
        assert expected in said, f"not reported: {expected!r}"


def test_real_packages_pinned_and_held(gpu_lab: Lab, first_run: runner.RunResult) -> None:
    versions = gpu_lab.sh(
        "dpkg-query -W -f '${Package} ${Version}\\n' nvidia-smi libcuda1 docker.io"
    )
    assert "nvidia-smi 535.309.01-" in versions and "libcuda1 535.309.01-" in versions
    holds = set(gpu_lab.sh("apt-mark showhold").split())
    assert {"nvidia-smi", "libcuda1", "nvidia-kernel-dkms", "libcudart11.0", "docker.io"} <= holds


def test_daemon_json_merged_not_overwritten(gpu_lab: Lab, first_run: runner.RunResult) -> None:
    merged = json.loads(gpu_lab.sh("cat /etc/docker/daemon.json"))
    assert merged["log-opts"] == {"max-size": "10m"}
    assert merged["runtimes"] == {"site-runc": {"path": "/usr/bin/runc"}}
    assert merged["exec-opts"] == ["native.cgroupdriver=cgroupfs"]
    assert merged["live-restore"] is True
    assert gpu_lab.sh("docker info --format '{{.CgroupDriver}}'").strip() == "cgroupfs"


def test_second_run_changes_nothing(gpu_lab: Lab, first_run: runner.RunResult) -> None:
    second = gpu_lab.run("second")
    print(f"\nGPU layer: second run {gpu_lab.timings['second']} s")
    second.raise_for_status()
    assert second.hosts[gpu_lab.host].changed == 0, "the GPU layer is not idempotent"


def test_check_mode_reports_a_change_and_leaves_the_host_alone(
    gpu_lab: Lab, first_run: runner.RunResult
) -> None:
    before = gpu_lab.digest()
    result = gpu_lab.run(
        "check",
        check=True,
        diff=True,
        extravars={
            "cuda_extra_environment": {"HEARTH_CHECK_PROBE": "1"},
            "container_runtime_cgroup_driver": "systemd",
            "nvidia_driver_blacklist_nouveau": False,
        },
    )
    result.raise_for_status()
    assert result.hosts[gpu_lab.host].changed >= 4
    assert gpu_lab.digest() == before, "check mode changed the host"


def test_impossible_combination_refused_before_any_change(
    gpu_lab: Lab, first_run: runner.RunResult
) -> None:
    before = gpu_lab.digest()
    result = gpu_lab.run("refused", extravars={"cuda_version": "12.4"})
    assert result.failed_hosts == [gpu_lab.host]
    assert result.hosts[gpu_lab.host].changed == 0
    said = "\n".join(messages(result))
    assert "CUDA 12.4 needs NVIDIA driver >= 550.54.14" in said
    assert "pin cuda_version to 12.2 or older" in said
    assert gpu_lab.digest() == before


def test_audit_passes_and_says_why_it_skipped(gpu_lab: Lab, first_run: runner.RunResult) -> None:
    result = run_audit(
        check_inventory(gpu_lab.inventory, vault_password_file=gpu_lab.vault), limit=gpu_lab.host
    )
    gpu = [r for r in result.results if r.role in GPU_ROLES]
    assert {r.role for r in gpu} == set(GPU_ROLES)
    bad = [f"{r.role}/{r.check}: {r.message}" for r in gpu if r.outcome in ("failed", "error")]
    assert not bad, bad
    skipped = {r.check: r.message for r in gpu if r.outcome == "skipped"}
    assert "no NVIDIA device on this host" in skipped["test_nvidia_smi_healthy"]
    assert "no NVIDIA device on this host" in skipped["test_container_sees_gpu"]
    assert "not available from the configured sources" in skipped["test_nvidia_runtime_registered"]
    passed = {r.check for r in gpu if r.outcome == "passed"}
    assert {
        "test_driver_installed_at_the_pin",
        "test_driver_held",
        "test_nouveau_blacklisted",
        "test_login_shell_environment",
        "test_non_login_shell_environment",
        "test_systemd_service_environment",
        "test_container_gets_cuda_environment",
        "test_daemon_json_keys",
    } <= passed
