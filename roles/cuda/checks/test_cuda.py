"""testinfra checks of the `cuda` role, run by `hearth audit` on every GPU node.

The toolkit is pinned and held, and CUDA_HOME, PATH and LD_LIBRARY_PATH reach every context:
login shells, non-login shells (an ssh command, an interactive bash), systemd services (the
EnvironmentFile) and the linker path. Containers are checked with the container_runtime role.
"""

from __future__ import annotations

import fnmatch
from typing import Any

import pytest

from hearth.checklib import observe

_PROBE = 'printf "%s|%s|%s" "$CUDA_HOME" "$PATH" "$LD_LIBRARY_PATH"'


def _expect(found: str, hearth_vars: dict[str, Any], context: str) -> None:
    home = hearth_vars["cuda_home"]
    cuda_home, path, ld_path = ([*found.split("|"), "", "", ""])[:3]
    assert cuda_home == home, f"{context}: expected CUDA_HOME={home}, found '{cuda_home}'"
    assert f"{home}/bin" in path.split(":"), f"{context}: expected {home}/bin on PATH, found {path}"
    assert f"{home}/lib64" in ld_path.split(":"), (
        f"{context}: expected {home}/lib64 on LD_LIBRARY_PATH, found '{ld_path}'"
    )


def test_toolkit_pinned_and_held(host: Any, hearth_vars: dict[str, Any]) -> None:
    """Every CUDA package is installed at the declared version and held."""
    pattern = hearth_vars["cuda_package_version"]
    problems = []
    for name in hearth_vars["cuda_packages"]:
        if host.exists("dpkg-query"):
            out = host.run("dpkg-query -W -f '${Version}|${db:Status-Want}' %s", name)
            version, want = ([*out.stdout.split("|"), ""])[:2] if out.rc == 0 else ("", "")
        else:
            out = host.run("rpm -q --qf '%%{VERSION}-%%{RELEASE}' %s", name)
            version = out.stdout if out.rc == 0 else ""
            want = "hold" if name in host.run("dnf versionlock list").stdout else "install"
        held = " (hold)" if hearth_vars["cuda_hold"] else ""
        observe(name, f"{version or 'not installed'} ({want or '-'})", f"{pattern}{held}")
        if not version:
            problems.append(f"{name} not installed")
        elif not fnmatch.fnmatch(version, pattern):
            problems.append(f"{name} {version} is not {pattern}")
        elif hearth_vars["cuda_hold"] and want != "hold":
            problems.append(f"{name} not held")
    assert not problems, (
        f"CUDA {hearth_vars['cuda_version']} packages: expected installed at {pattern} and held, "
        f"found {problems}"
    )


def test_login_shell_environment(host: Any, hearth_vars: dict[str, Any]) -> None:
    """A login shell gets CUDA_HOME, the CUDA bin directory on PATH and its lib64 on
    LD_LIBRARY_PATH."""
    found = host.check_output("env -i HOME=/root bash -lc %s", _PROBE)
    _expect(found, hearth_vars, "login shell")


def test_non_login_shell_environment(host: Any, hearth_vars: dict[str, Any]) -> None:
    """An interactive non-login shell gets the same CUDA environment."""
    _expect(host.check_output(_PROBE), hearth_vars, "non-login shell (ssh command)")
    found = host.check_output("env -i HOME=/root TERM=dumb bash -ic %s 2>/dev/null", _PROBE)
    _expect(found, hearth_vars, "interactive non-login bash")


def test_systemd_service_environment(host: Any, hearth_vars: dict[str, Any]) -> None:
    """systemd services get the CUDA environment from Hearth's environment file."""
    env_file = hearth_vars["cuda_env_file"]
    assert host.file(env_file).is_file, (
        f"{env_file}: expected the services' environment file, found none"
    )
    found = host.check_output(
        "systemd-run --wait --pipe --quiet -p EnvironmentFile=%s sh -c %s", env_file, _PROBE
    )
    _expect(found, hearth_vars, f"systemd service with EnvironmentFile={env_file}")


def test_container_environment_file(host: Any, hearth_vars: dict[str, Any]) -> None:
    """The environment file for containers carries the CUDA paths."""
    env_file = host.file(hearth_vars["cuda_container_env_file"])
    assert env_file.contains(f"^CUDA_HOME={hearth_vars['cuda_home']}$"), (
        f"{env_file.path}: expected CUDA_HOME={hearth_vars['cuda_home']}, not found"
    )
    assert not env_file.contains("^PATH="), (
        f"{env_file.path}: expected no PATH (it would hide the image's binaries), found one"
    )


def test_linker_path(host: Any, hearth_vars: dict[str, Any]) -> None:
    """The dynamic linker finds the CUDA libraries (ld.so.conf.d entry, ldconfig cache)."""
    conf = host.file("/etc/ld.so.conf.d/hearth-cuda.conf")
    lib64 = f"{hearth_vars['cuda_home']}/lib64"
    assert conf.contains(f"^{lib64}$"), f"{conf.path}: expected {lib64}, not found"
    cache = host.check_output("ldconfig -p")
    assert "libcudart.so" in cache, "linker cache: expected libcudart, not found"


def test_nvcc_is_the_pinned_release(host: Any, hearth_vars: dict[str, Any]) -> None:
    """nvcc reports the declared CUDA release."""
    nvcc = f"{hearth_vars['cuda_home']}/bin/nvcc"
    if not host.file(nvcc).exists:
        pytest.skip(
            f"{nvcc} is not installed: cuda_packages "
            f"({', '.join(hearth_vars['cuda_packages'])}) is a runtime-only set, so there is no "
            "compiler to check"
        )
    out = host.check_output("%s --version", nvcc)
    assert f"release {hearth_vars['cuda_version']}," in out, (
        f"{nvcc}: expected CUDA {hearth_vars['cuda_version']}, found {out.splitlines()[-1]}"
    )
