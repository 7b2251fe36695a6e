"""Helpers for the lab integration tests: the real CLI, commands inside hosts, inventories."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from hearth import lab as lab_mod

HEARTH = [sys.executable, "-m", "hearth"]


def hearth(
    *args: str, check: bool = False, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real ``hearth`` CLI in a subprocess (COLUMNS wide enough for whole lines)."""
    full_env = dict(os.environ, COLUMNS="200", NO_COLOR="1", **(env or {}))
    return subprocess.run(
        [*HEARTH, *args], capture_output=True, text=True, check=check, env=full_env
    )


def container_exec(
    state: lab_mod.LabState, host: str, *cmd: str
) -> subprocess.CompletedProcess[str]:
    """Run a command inside a lab host through Docker (the tests' view of the truth, not SSH)."""
    container = next(h.container for h in state.hosts if h.name == host)
    return subprocess.run(
        ["docker", "exec", container, *cmd], capture_output=True, text=True, check=False
    )


def write_inventory(
    state: lab_mod.LabState,
    directory: Path,
    group_vars: dict[str, Any] | None = None,
    groups: dict[str, list[str]] | None = None,
) -> Path:
    """An inventory over the lab's hosts: its connection settings plus the given vars/groups."""
    directory.mkdir(parents=True, exist_ok=True)
    lab_inv = Path(state.inventory).parent
    gv = directory / "group_vars" / "all"
    gv.mkdir(parents=True, exist_ok=True)
    shutil.copy(lab_inv / "group_vars" / "all" / "lab.yml", gv / "lab.yml")
    if group_vars:
        (gv / "site.yml").write_text(yaml.safe_dump(group_vars, sort_keys=False))
    children: dict[str, Any] = {
        "lab": {"hosts": {h.name: {"ansible_host": h.address} for h in state.hosts}}
    }
    for group, members in (groups or {}).items():
        children[group] = {"hosts": {m: {} for m in members}}
    (directory / "hosts.yml").write_text(
        yaml.safe_dump({"all": {"children": children}}, sort_keys=False)
    )
    return directory / "hosts.yml"
