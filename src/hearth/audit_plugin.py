"""pytest plugin loaded by ``hearth audit`` (``-p hearth.audit_plugin``).

- keeps only the checks of the roles each host is meant to have (others are deselected);
- gives checks the host's declared state as the ``hearth_vars`` fixture;
- records every outcome with host and role, the check's description (its docstring) and what it
  observed (:func:`hearth.checklib.observe`, collected per check, passed or not), and writes them
  as JSON for the reports;
- becomes with sudo and a password where the inventory gives one (``ansible_become_password``):
  the password comes in the environment of these processes only, is dropped from it as soon as
  the workers have started, and reaches sudo on its standard input, never a command line or file.

Runs in the pytest controller and in each xdist worker; only the controller writes results.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any

import pytest

_RESULTS: list[dict[str, Any]] = []
BECOME_ENV = "HEARTH_AUDIT_BECOME"  # hearth.audit.BECOME_ENV (not imported: keep this light)
_PASSWORDS: dict[str, str] = json.loads(os.environ.get(BECOME_ENV) or "{}")
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.pop(BECOME_ENV, None)  # a worker: in memory only from here on


@pytest.hookimpl(hookwrapper=True)
def pytest_sessionstart(session: pytest.Session) -> Any:
    yield  # the controller: xdist has started the workers, which inherited the environment
    os.environ.pop(BECOME_ENV, None)


def _install_sudo_password() -> None:
    """Teach testinfra's ssh backend ``sudo -S`` with the host's password on standard input."""
    import subprocess

    from testinfra.backend import base
    from testinfra.backend.ssh import SshBackend

    def get_sudo_command(self: Any, command: str, sudo_user: str | None) -> str:
        if self.host.name not in _PASSWORDS:
            return str(base.BaseBackend.get_sudo_command(self, command, sudo_user))
        # -k: ignore cached credentials, so sudo always reads (and consumes) the password line
        if sudo_user is None:
            return str(self.quote("sudo -k -S -p '' /bin/sh -c %s", command))
        return str(self.quote("sudo -k -S -p '' -u %s /bin/sh -c %s", sudo_user, command))

    def run_local(self: Any, command: str, *args: str) -> base.CommandResult:
        password = _PASSWORDS.get(self.host.name)
        if password is None or not self.sudo:
            return base.BaseBackend.run_local(self, command, *args)
        cmd = self.encode(self.quote(command, *args))
        # as testinfra's own run_local: its ssh command line is one shell string, quoted by it
        proc = subprocess.Popen(  # noqa: S602
            cmd, shell=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        stdout, stderr = proc.communicate(input=(password + "\n").encode())
        return self.result(proc.returncode, cmd, stdout, stderr)

    SshBackend.get_sudo_command = get_sudo_command  # type: ignore[method-assign,unused-ignore]
    SshBackend.run_local = run_local  # type: ignore[method-assign,unused-ignore]


if _PASSWORDS:
    _install_sudo_password()


def _record_file_digests() -> None:
    """Every sha256 a check reads on a host (testinfra's ``host.file(p).sha256sum``) is recorded
    as an observation ``<path> sha256``: the digest of a model file, a program, a rule file as
    the host holds it, whichever check reads it (a check's own ``observe`` of the same name,
    with the declared value, replaces it)."""
    from testinfra.modules import file as testinfra_file

    def wrap(prop: property) -> property:
        def sha256sum(self: Any) -> Any:
            value = prop.fget(self) if prop.fget is not None else None
            from hearth.checklib import observe

            observe(f"{self.path} sha256", value)
            return value

        return property(sha256sum)

    todo: list[type] = [testinfra_file.File]
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        found = cls.__dict__.get("sha256sum")
        if isinstance(found, property):
            setattr(cls, "sha256sum", wrap(found))  # noqa: B010


_record_file_digests()


def _audit_vars() -> dict[str, Any]:
    path = os.environ.get("HEARTH_AUDIT_VARS")
    if not path:
        return {}
    data: dict[str, Any] = json.loads(Path(path).read_text())
    return data


def _role_of(path: Path) -> str:
    # roles/<role>/checks/test_x.py
    return path.parent.parent.name if path.parent.name == "checks" else path.parent.name


def _host_of(item: pytest.Item) -> str:
    """The inventory name of the host a testinfra item runs on ("" if none)."""
    callspec = getattr(item, "callspec", None)
    host: Any = callspec.params.get("_testinfra_host") if callspec is not None else None
    if host is None:
        return ""
    return _name(host)


def _name(host: Any) -> str:
    """The inventory name behind a testinfra host id (``ssh://lab1``, ``ansible://lab1``)."""
    return str(host.backend.get_pytest_id()).partition("://")[2].split("?")[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    audit = _audit_vars()
    keep, drop = [], []
    for item in items:
        host, role = _host_of(item), _role_of(Path(str(item.path)))
        if host in audit and role in audit[host]["roles"]:
            item.user_properties += [("hearth_host", host), ("hearth_role", role),
                                     ("hearth_description", describe(item))]  # fmt: skip
            keep.append(item)
        else:
            drop.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def describe(item: pytest.Item) -> str:
    """What a check proves, in words: its docstring; a check without one is described by its
    name made into a sentence (``test_time_sync`` → "Time sync"), never shown as a function."""
    function = getattr(item, "function", None)
    doc = inspect.getdoc(function) if function is not None else None
    if doc:
        return " ".join(doc.split())
    name = item.name.split("[")[0].removeprefix("test_").replace("_", " ").strip()
    return name[:1].upper() + name[1:] + "."


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """Collect what the check observed, whether it passes, fails or skips."""
    from hearth.checklib import observed

    observed()  # nothing from an earlier check
    yield
    item.user_properties.append(("hearth_observed", json.dumps(observed())))


@pytest.fixture
def hearth_vars(host: Any) -> dict[str, Any]:
    """The host's declared state: inventory variables over the role defaults, resolved."""
    data: dict[str, Any] = _audit_vars()[_name(host)]["vars"]
    return data


def _message(report: pytest.TestReport) -> str:
    if report.passed:
        return ""
    longrepr = report.longrepr
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None:
        text = str(crash.message)
    elif isinstance(longrepr, tuple):  # skipped: (file, line, reason)
        text = str(longrepr[2])
    else:
        text = str(longrepr)
    text = text.removeprefix("AssertionError: ").removeprefix("Skipped: ")
    return text.split("\nassert ")[0].strip()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    props = dict(report.user_properties)
    if "hearth_host" not in props:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        outcome: str = report.outcome
        if report.when == "setup" and report.failed:
            outcome = "error"
        name = report.nodeid.split("::")[-1].split("[")[0]
        _RESULTS.append(
            {
                "host": props["hearth_host"],
                "role": props["hearth_role"],
                "check": name,
                "outcome": outcome,
                "message": _message(report),
                "duration": round(report.duration, 3),
                "description": str(props.get("hearth_description") or ""),
                "observed": json.loads(str(props.get("hearth_observed") or "[]")),
            }
        )


def pytest_collectreport(report: pytest.CollectReport) -> None:
    """A check module that cannot be collected (an import error, a syntax error) is a crash of
    the audit, whatever pytest's exit status says: recorded so that hearth exits 7, not 0 or 5."""
    if report.failed:
        _RESULTS.append(
            {"host": "", "role": "", "check": report.nodeid, "outcome": "crash",
             "message": str(report.longrepr)[-1500:], "duration": 0.0}
        )  # fmt: skip


def pytest_sessionfinish(session: pytest.Session) -> None:
    if hasattr(session.config, "workerinput"):  # an xdist worker: the controller reports
        return
    target = os.environ.get("HEARTH_AUDIT_RESULTS")
    if target:
        Path(target).write_text(json.dumps(_RESULTS, indent=1))
