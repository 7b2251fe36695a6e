"""The site's controls: ``audit_controls.yml`` in the inventory maps each control of the site's
own catalogue (ISO 27001 A.8.9, an internal id) to the Hearth checks that evidence it, and the
report is grouped by them too.

.. code-block:: yaml

    controls:
      A.8.9:
        title: Configuration management
        checks: [common/test_sysctl, nvidia_driver/test_driver_held, prometheus]

A check is ``role/test_name``, or a role alone for all its checks. A name that is no check of
Hearth's is refused (exit 2) naming the file, the control and the name, before any host is
contacted (``hearth check``, ``up`` and ``audit``). ``inventories/sample/audit_controls.yml`` is
an example over generic controls.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hearth.errors import InvalidInputError

__all__ = ["FILE_NAME", "Control", "Controls", "find", "load"]

FILE_NAME = "audit_controls.yml"
_UNCHANGED = "fix the mapping; nothing was changed on any host"


@dataclass(frozen=True)
class Control:
    id: str
    title: str
    checks: tuple[str, ...]  # "role" or "role/test_name"

    def covers(self, role: str, check: str) -> bool:
        return role in self.checks or f"{role}/{check}" in self.checks


@dataclass(frozen=True)
class Controls:
    path: Path
    controls: tuple[Control, ...]

    def group(self, report: dict[str, Any]) -> list[dict[str, Any]]:
        """Per control: its checks' results over every host (failures named by host)."""
        out = []
        for control in self.controls:
            entry: dict[str, Any] = {"id": control.id, "title": control.title,
                                     "checks": list(control.checks), "passed": 0, "failed": 0,
                                     "skipped": 0, "failing": []}  # fmt: skip
            for host, data in report["hosts"].items():
                for c in data["checks"]:
                    if not control.covers(c["role"], c["check"]):
                        continue
                    if c["outcome"] in ("failed", "error"):
                        entry["failed"] += 1
                        entry["failing"].append(f"{host}: {c['role']}/{c['check']}")
                    elif c["outcome"] == "passed":
                        entry["passed"] += 1
                    else:
                        entry["skipped"] += 1
            out.append(entry)
        return out


def find(inventory: Path | str) -> Path | None:
    """``audit_controls.yml`` beside the inventory's hosts file (or in its directory)."""
    base = Path(inventory)
    directory = base if base.is_dir() else base.parent
    found = directory / FILE_NAME
    return found if found.is_file() else None


def load(inventory: Path | str) -> Controls | None:
    """The inventory's controls, validated against Hearth's checks; None when it has none."""
    from hearth.audit import known_checks

    path = find(inventory)
    if path is None:
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"{path}: not valid YAML ({exc})") from exc
    controls = data.get("controls") if isinstance(data, dict) else None
    if not isinstance(controls, dict) or not controls:
        raise InvalidInputError(
            f"{path}: expected a mapping `controls:` of control id → {{title, checks}}"
        )
    known = known_checks()
    parsed = []
    for ident, spec in controls.items():
        where = f"{path}: controls.{ident}"
        if isinstance(spec, list):
            spec = {"checks": spec}
        if not isinstance(spec, dict) or not isinstance(spec.get("checks"), list):
            raise InvalidInputError(f"{where}: expected `checks:` as a list of role/check names")
        for name in spec["checks"]:
            role, _, check = str(name).partition("/")
            if role not in known:
                raise InvalidInputError(
                    f"{where}: {name!r} is not a Hearth check: no role {role!r} has checks "
                    f"(roles with checks: {', '.join(sorted(known))}); {_UNCHANGED}"
                )
            if check and check not in known[role]:
                raise InvalidInputError(
                    f"{where}: {name!r} is not a Hearth check: role {role} has no check "
                    f"{check!r} (it has {', '.join(sorted(known[role]))}); {_UNCHANGED}"
                )
        parsed.append(
            Control(str(ident), str(spec.get("title") or ""), tuple(map(str, spec["checks"])))
        )
    return Controls(path, tuple(parsed))
