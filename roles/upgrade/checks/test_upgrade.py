"""testinfra checks of the `upgrade` role: no maintenance window left halfway. A host whose
state file (/var/lib/hearth/upgrade.json) names a step other than ``done`` was left drained,
perhaps silenced, by a `hearth upgrade` that stopped; `hearth upgrade` again resumes it."""

from __future__ import annotations

import json
from typing import Any

import pytest


def test_no_upgrade_left_halfway(host: Any, hearth_vars: dict[str, Any]) -> None:
    """No `hearth upgrade` window was left unfinished on this host (its state file says done, or
    there is none): a host left halfway may still be drained at the front door, silenced in
    Alertmanager, or without its engines."""
    path = hearth_vars.get("upgrade_state_file") or "/var/lib/hearth/upgrade.json"
    state_file = host.file(path)
    if not state_file.exists:
        pytest.skip(f"{path}: no upgrade has run on this host")
    state = json.loads(state_file.content_string)
    assert state.get("step") == "done", (
        f"{path}: expected step 'done', found {state.get('step')!r} since {state.get('started')} "
        f"({state.get('message') or 'no message'}): the host was left drained; run "
        "`hearth upgrade` again to resume it"
    )
