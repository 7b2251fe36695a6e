"""testinfra checks of the `canary` role, run by `hearth audit` on the monitoring hosts.

The program on the host must be the one this Hearth ships; its configuration must be valid and
private (it holds the front door's API key, which nothing here reads or prints).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from hearth import canary
from hearth.checklib import observe

PROGRAM = "/usr/local/lib/hearth/hearth_canary.py"
CONFIG = "/etc/hearth/canary.json"
SHIPPED = Path(canary.__file__)


def test_program_is_the_shipped_one(host: Any) -> None:
    """The canary program on the host is byte for byte the one Hearth ships (sha256)."""
    program = host.file(PROGRAM)
    assert program.exists, f"{PROGRAM}: expected the canary program, found nothing"
    want = hashlib.sha256(SHIPPED.read_bytes()).hexdigest()
    observe(f"{PROGRAM} sha256", program.sha256sum, want)
    assert program.sha256sum == want, (
        f"{PROGRAM}: expected Hearth's canary (sha256 {want[:12]}…), found another file"
    )


def test_config_valid_and_private(host: Any, hearth_vars: dict[str, Any]) -> None:
    """The canary accepts its configuration, and the file (it holds the API key) is root:canary
    group, mode 0640."""
    check = host.run("python3 %s --check-config --config %s", PROGRAM, CONFIG)
    assert check.rc == 0, (
        f"{CONFIG}: expected a valid canary configuration, found: {check.stderr.strip()[-300:]}"
    )
    config = host.file(CONFIG)
    group = hearth_vars["canary_group"]
    found = (config.user, config.group, oct(config.mode))
    observe(CONFIG, f"{found[0]}:{found[1]} {found[2]}", f"root:{group} 0o640")
    assert found == ("root", group, "0o640"), (
        f"{CONFIG} holds the API key: expected root:{group} mode 0640, "
        f"found {found[0]}:{found[1]} mode {found[2]}"
    )


def test_timer_scheduled(host: Any, hearth_vars: dict[str, Any]) -> None:
    """The canary's systemd timer is enabled, waiting, and has a calendar (where the canary is
    enabled)."""
    if not hearth_vars["canary_enabled"]:
        pytest.skip("canary_enabled is false")
    timer = host.service("hearth-canary.timer")
    assert timer.is_enabled, "hearth-canary.timer: expected enabled, found disabled"
    assert timer.is_running, "hearth-canary.timer: expected active (waiting), found inactive"
    calendar = host.check_output("systemctl show -p TimersCalendar --value hearth-canary.timer")
    assert "OnCalendar=" in calendar, (
        f"hearth-canary.timer: expected a calendar, found '{calendar}'"
    )


def test_results_recorded(host: Any, hearth_vars: dict[str, Any]) -> None:
    """The canary's results file has the expected columns and its success metric is exported to
    node_exporter's textfile directory (skipped until it first runs)."""
    results = host.file(f"{hearth_vars['canary_data_dir']}/results.csv")
    if not results.exists:
        pytest.skip("the canary has not run yet (its timer fires at the next scheduled time)")
    header = results.content_string.splitlines()[0]
    assert header == ",".join(canary.CSV_FIELDS), (
        f"{results.path}: expected the header {canary.CSV_FIELDS}, found '{header}'"
    )
    textfile = host.file(f"{hearth_vars['canary_textfile_dir']}/hearth_canary.prom")
    assert textfile.exists and textfile.contains("^hearth_canary_success"), (
        f"{textfile.path}: expected the canary's metrics for node_exporter, found none"
    )
