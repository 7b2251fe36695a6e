"""pytest plugin loaded by ``hearth audit`` (``-p hearth.audit_plugin``).

- keeps only the checks of the roles each host is meant to have (others are deselected);
- gives checks the host's declared state as the ``hearth_vars`` fixture;
- records every outcome with host and role, and writes them as JSON for the reports.

Runs in the pytest controller and in each xdist worker; only the controller writes results.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

_RESULTS: list[dict[str, Any]] = []


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
    return str(host.backend.get_pytest_id()).removeprefix("ssh://").split("?")[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    audit = _audit_vars()
    keep, drop = [], []
    for item in items:
        host, role = _host_of(item), _role_of(Path(str(item.path)))
        if host in audit and role in audit[host]["roles"]:
            item.user_properties += [("hearth_host", host), ("hearth_role", role)]
            keep.append(item)
        else:
            drop.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture
def hearth_vars(host: Any) -> dict[str, Any]:
    """The host's declared state: inventory variables over the role defaults, resolved."""
    name = host.backend.get_pytest_id().removeprefix("ssh://").split("?")[0]
    data: dict[str, Any] = _audit_vars()[name]["vars"]
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
            }
        )


def pytest_sessionfinish(session: pytest.Session) -> None:
    if hasattr(session.config, "workerinput"):  # an xdist worker: the controller reports
        return
    target = os.environ.get("HEARTH_AUDIT_RESULTS")
    if target:
        Path(target).write_text(json.dumps(_RESULTS, indent=1))
