"""Reports kept over time: ``hearth audit --save`` writes each report (JSON, its signature when
signed, its HTML page) under ``$HEARTH_HOME/audits/``; reports older than the retention are
removed at each save."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path
from typing import Any

from hearth import paths
from hearth.errors import InvalidInputError
from hearth.evidence import REPORT_FORMAT

__all__ = [
    "DEFAULT_RETENTION_DAYS",
    "audits_dir",
    "load",
    "parse_age",
    "prune",
    "retention_days",
    "saved",
]

DEFAULT_RETENTION_DAYS = 400
"""Kept a little over a year by default: an annual audit can compare with last year's report."""
RETENTION_ENV = "HEARTH_AUDIT_RETENTION_DAYS"
_AGE = re.compile(r"^(\d+)([hdw])$")


def audits_dir() -> Path:
    return paths.hearth_home() / "audits"


def retention_days(given: int | None = None) -> int:
    """``--retention-days``, else ``$HEARTH_AUDIT_RETENTION_DAYS``, else 400."""
    if given is not None:
        return given
    raw = os.environ.get(RETENTION_ENV, "")
    if not raw:
        return DEFAULT_RETENTION_DAYS
    if not raw.isdigit() or int(raw) < 1:
        raise InvalidInputError(f"${RETENTION_ENV}={raw!r}: expected a number of days (>= 1)")
    return int(raw)


def parse_age(text: str) -> dt.timedelta:
    """``30d``, ``12h``, ``2w`` → a timedelta; anything else is refused (exit 2)."""
    found = _AGE.match(text.strip())
    if not found:
        raise InvalidInputError(f"--since {text!r}: expected a number and h, d or w (30d, 12h, 2w)")
    n, unit = int(found.group(1)), found.group(2)
    return {"h": dt.timedelta(hours=n), "d": dt.timedelta(days=n), "w": dt.timedelta(weeks=n)}[unit]


def load(path: Path) -> dict[str, Any]:
    """A report written by Hearth; anything else is refused (exit 2) naming the file and why."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise InvalidInputError(f"{path}: no such file") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{path}: not a Hearth audit report (not JSON: {exc})") from exc
    if not isinstance(data, dict) or data.get("format") != REPORT_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise InvalidInputError(
            f"{path}: not a Hearth audit report (expected format {REPORT_FORMAT!r}, found "
            f"{found!r}); write one with `hearth audit --format json` or `--save`"
        )
    for key in ("header", "hosts", "summary"):
        if not isinstance(data.get(key), dict):
            raise InvalidInputError(f"{path}: not a Hearth audit report (no {key!r} section)")
    return data


def started(data: dict[str, Any]) -> dt.datetime:
    raw = str(data["header"].get("started") or data.get("generated") or "")
    try:
        return dt.datetime.fromisoformat(raw)
    except ValueError:
        return dt.datetime.min.replace(tzinfo=dt.UTC)


def saved(directory: Path | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """The saved reports, oldest first (files that are not reports are left out)."""
    found = []
    for path in sorted((directory or audits_dir()).glob("*.json")):
        try:
            found.append((path, load(path)))
        except InvalidInputError:
            continue
    return sorted(found, key=lambda pd: started(pd[1]))


def report_files(path: Path) -> list[Path]:
    """A saved report's files: the JSON, its signature and its HTML page."""
    return [path, path.with_name(path.name + ".sig"), path.with_suffix(".html")]


def prune(days: int, directory: Path | None = None, now: dt.datetime | None = None) -> list[Path]:
    """Remove the saved reports that started more than ``days`` ago; the removed JSON files."""
    limit = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=days)
    gone = []
    for path, data in saved(directory):
        if started(data) < limit:
            for f in report_files(path):
                f.unlink(missing_ok=True)
            gone.append(path)
    return gone


def save_path(data: dict[str, Any], directory: Path | None = None) -> Path:
    """Where ``--save`` writes the report: ``$HEARTH_HOME/audits/<report id>.json``."""
    ident = str(data["header"].get("id") or "")
    if not re.match(r"^[0-9A-Za-z-]+$", ident):
        raise InvalidInputError(f"report id {ident!r}: cannot name a file")
    target = directory or audits_dir()
    target.mkdir(parents=True, exist_ok=True)
    return target / f"{ident}.json"
