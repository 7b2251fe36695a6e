"""testinfra checks of the `container_runtime` role, run by `hearth audit` on every GPU node.

Docker runs, pinned and held, with Hearth's daemon.json keys merged in and the cgroup driver in
effect; containers get the CUDA environment. Where the NVIDIA container toolkit is installed the
nvidia runtime must be registered; where a device exists a container must see the GPU (skipped,
with the reason, on hosts without one).
"""

from __future__ import annotations

import fnmatch
import json
from typing import Any

import pytest

from hearth.checklib import nvidia_device, observe

PROBE_IMAGE = "hearth/gpu-probe:1"


def _toolkit(host: Any, hearth_vars: dict[str, Any]) -> bool:
    """Whether the toolkit is installed; a GPU host without it fails, others skip."""
    name = hearth_vars["container_runtime_toolkit_packages"][0]
    if host.package(name).is_installed:
        return True
    device = nvidia_device(host)
    assert device is None, (
        f"{name}: expected installed on a host with an NVIDIA GPU ({device}), found absent; "
        "containers cannot use the GPU"
    )
    pytest.skip(
        f"{name} is not installed: it is not available from the configured sources "
        f"(container_runtime_toolkit_source: {hearth_vars['container_runtime_toolkit_source']}) "
        "and this host has no NVIDIA device"
    )


def _probe(hearth_vars: dict[str, Any]) -> str:
    return str(hearth_vars.get("container_runtime_probe_image") or PROBE_IMAGE)


def _daemon_json(host: Any) -> dict[str, Any]:
    conf = host.file("/etc/docker/daemon.json")
    assert conf.is_file, "/etc/docker/daemon.json: expected a file, found none"
    data: dict[str, Any] = json.loads(conf.content_string)
    return data


def test_docker_running_pinned_and_held(host: Any, hearth_vars: dict[str, Any]) -> None:
    """Docker runs, starts at boot, and its packages are installed at the declared version and
    held."""
    docker = host.service("docker")
    assert docker.is_running, "docker: expected running, found stopped"
    assert docker.is_enabled, "docker: expected enabled at boot, found disabled"
    pattern = hearth_vars["container_runtime_docker_version"]
    for name in hearth_vars["container_runtime_docker_packages"]:
        package = host.package(name)
        observe(f"{name} version", package.version if package.is_installed else "absent", pattern)
        assert package.is_installed, f"{name}: expected installed, found absent"
        assert fnmatch.fnmatch(package.version, pattern), (
            f"{name}: expected version {pattern}, found {package.version}"
        )
        if hearth_vars["container_runtime_hold"] and host.exists("dpkg-query"):
            want = host.check_output("dpkg-query -W -f '${db:Status-Want}' %s", name)
            observe(f"{name} selection", want, "hold")
            assert want == "hold", f"{name}: expected held, found {want}"


def test_daemon_json_keys(host: Any, hearth_vars: dict[str, Any]) -> None:
    """/etc/docker/daemon.json sets the declared cgroup driver and Hearth's settings."""
    data = _daemon_json(host)
    driver = f"native.cgroupdriver={hearth_vars['container_runtime_cgroup_driver']}"
    assert driver in data.get("exec-opts", []), (
        f"daemon.json exec-opts: expected {driver}, found {data.get('exec-opts')}"
    )
    assert data.get("live-restore") is True, (
        f"daemon.json live-restore: expected true, found {data.get('live-restore')}"
    )
    for key, value in hearth_vars["container_runtime_daemon_options"].items():
        assert data.get(key) == value, f"daemon.json {key}: expected {value}, found {data.get(key)}"


def test_cgroup_driver_in_effect(host: Any, hearth_vars: dict[str, Any]) -> None:
    """The cgroup driver Docker reports in use is the declared one."""
    found = host.check_output("docker info --format %s", "{{.CgroupDriver}}")
    expected = hearth_vars["container_runtime_cgroup_driver"]
    observe("cgroup driver in use", found, expected)
    assert found == expected, f"docker cgroup driver: expected {expected}, found {found}"


def test_container_gets_cuda_environment(host: Any, hearth_vars: dict[str, Any]) -> None:
    """A container started with Hearth's CUDA environment file sees the CUDA paths."""
    env_file = hearth_vars.get("cuda_container_env_file")
    if not env_file:
        pytest.skip("the cuda role is not applied to this host")
    found = host.run(
        "docker run --rm --env-file %s %s printenv CUDA_HOME", env_file, _probe(hearth_vars)
    )
    assert found.rc == 0 and found.stdout.strip() == hearth_vars["cuda_home"], (
        f"container with --env-file {env_file}: expected CUDA_HOME={hearth_vars['cuda_home']}, "
        f"found rc={found.rc} '{(found.stdout + found.stderr).strip()[:200]}'"
    )


def test_nvidia_runtime_registered(host: Any, hearth_vars: dict[str, Any]) -> None:
    """The NVIDIA container runtime is registered in daemon.json and known to the running Docker."""
    _toolkit(host, hearth_vars)
    runtime = _daemon_json(host).get("runtimes", {}).get("nvidia", {})
    assert runtime.get("path") == "nvidia-container-runtime", (
        f"daemon.json runtimes.nvidia: expected path nvidia-container-runtime, found {runtime}"
    )
    runtimes = host.check_output("docker info --format %s", "{{json .Runtimes}}")
    assert '"nvidia"' in runtimes, f"docker runtimes: expected nvidia, found {runtimes}"


def test_toolkit_pinned_and_held(host: Any, hearth_vars: dict[str, Any]) -> None:
    """The NVIDIA container toolkit is installed at the declared version and held."""
    _toolkit(host, hearth_vars)
    version = hearth_vars["container_runtime_toolkit_version"]
    for name in hearth_vars["container_runtime_toolkit_packages"]:
        package = host.package(name)
        assert package.is_installed and package.version.startswith(version), (
            f"{name}: expected {version}, found "
            f"{package.version if package.is_installed else 'absent'}"
        )


def test_container_sees_gpu(host: Any, hearth_vars: dict[str, Any]) -> None:
    """A container run with the NVIDIA runtime sees the host's GPU."""
    device = nvidia_device(host)
    if device is None:
        pytest.skip("no NVIDIA device on this host: no container can be shown a GPU here")
    _toolkit(host, hearth_vars)
    result = host.run(
        "docker run --rm --runtime=nvidia -e NVIDIA_VISIBLE_DEVICES=all "
        "-e NVIDIA_DRIVER_CAPABILITIES=utility %s nvidia-smi -L",
        _probe(hearth_vars),
    )
    assert result.rc == 0 and "GPU " in result.stdout, (
        f"container on {device}: expected to list the GPUs, found rc={result.rc} "
        f"'{(result.stdout + result.stderr).strip()[:300]}'"
    )
    if hearth_vars["container_runtime_cdi"]:
        assert host.file("/etc/cdi/nvidia.yaml").contains("nvidia.com/gpu"), (
            "/etc/cdi/nvidia.yaml: expected the CDI specification of the GPUs, not found"
        )
    if hearth_vars["container_runtime_dev_char_symlinks"]:
        assert host.file("/etc/udev/rules.d/71-nvidia-dev-char.rules").exists, (
            "/etc/udev/rules.d/71-nvidia-dev-char.rules: expected (containers keep their GPUs "
            "across systemctl daemon-reload), not found"
        )
