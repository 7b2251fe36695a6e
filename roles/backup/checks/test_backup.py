"""testinfra checks of the `backup` role: a backup leaves nothing behind on the host (its staging
directory and archive hold copies of the host's histories and are removed at the end of a run;
leftovers mean a backup stopped halfway)."""

from __future__ import annotations

from typing import Any


def test_no_backup_left_on_the_host(host: Any, hearth_vars: dict[str, Any]) -> None:
    """No backup staging directory or archive is left on the host after a backup."""
    stage = hearth_vars.get("backup_stage_dir") or "/var/tmp/hearth-backup"
    archive = f"/var/tmp/hearth-backup-{hearth_vars['inventory_hostname']}.tar.gz"
    left = [p for p in (stage, archive) if host.file(p).exists]
    assert not left, f"backup: expected no staging files, found {left} (a backup stopped halfway)"
