"""``hearth canary run``: run the canary service on every monitoring host now, through
``playbooks/canary.yml``, and read back the reports it fetched."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hearth import runner

__all__ = ["CanaryRun", "run_canaries"]


@dataclass
class CanaryRun:
    """What ``hearth canary run`` brought back: each monitoring host's last-run report."""

    reports: dict[str, dict[str, Any]]
    artifacts: str = ""

    @property
    def models(self) -> list[tuple[str, dict[str, Any]]]:
        return [(host, m) for host, r in sorted(self.reports.items()) for m in r.get("models", [])]

    @property
    def ok(self) -> bool:
        return bool(self.models) and all(m.get("success") for _, m in self.models)

    def failures(self) -> list[str]:
        found = []
        for host, model in self.models:
            for r in model.get("results", []):
                if not r.get("passed"):
                    failed = [c[0] for c in r.get("checks", []) if not c[1]]
                    why = r.get("error") or ", ".join(failed)
                    found.append(
                        f"{host}: {model['model']} {model['version']}: {r['question']}: {why}"
                    )
        return found


def run_canaries(
    inventory: Any,
    *,
    limit: str | None = None,
    vault_password_file: Any = None,
    on_event: Any = None,
) -> CanaryRun:
    """Run ``playbooks/canary.yml`` (the canary service on every monitoring host, now) and read
    the reports it fetched."""
    with tempfile.TemporaryDirectory(prefix="hearth-canary-") as fetched:
        result = runner.run_playbook(
            "canary.yml",
            inventory,
            limit=limit,
            vault_password_file=vault_password_file,
            extravars={"hearth_canary_fetch_dir": fetched},
            on_event=on_event,
            label="canary",
        )
        result.raise_for_status()
        reports = {
            path.stem: json.loads(path.read_text()) for path in sorted(Path(fetched).glob("*.json"))
        }
    return CanaryRun(reports=reports, artifacts=str(result.artifacts))
