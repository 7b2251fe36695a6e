"""The header of an audit report: Hearth (version, commit, a digest of the checks), the inventory
(path, a digest of the declared state the hosts were compared with), who ran it, from which
control node, when, and each host's identity (machine-id, SSH host key fingerprint)."""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import json
import secrets
import socket
import subprocess
from pathlib import Path
from typing import Any

from hearth import __version__, paths

__all__ = ["checks_digest", "declared_digest", "header", "hearth_commit"]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def declared_digest(declared: dict[str, Any]) -> str:
    """sha256 of the declared state (host → roles and variables, as given to the checks), as
    canonical JSON: the same inventory gives the same digest, whatever its formatting."""
    return hashlib.sha256(json.dumps(declared, sort_keys=True).encode()).hexdigest()


def checks_digest() -> str:
    """sha256 over the code that reaches the verdicts: every role's checks, the shared helpers
    (:mod:`hearth.checklib`) and the audit's pytest plugin."""
    root = paths.roles_dir()
    here = Path(__file__).resolve().parent.parent
    files = [(f"roles/{p.relative_to(root)}", p) for p in sorted(root.glob("*/checks/*.py"))]
    files += [(f"hearth/{n}", here / n) for n in ("checklib.py", "audit_plugin.py")]
    digest = hashlib.sha256()
    for name, path in files:
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def hearth_commit() -> str:
    """The git commit of Hearth's content (``+dirty`` when files differ from it); "" when Hearth
    runs from an installed package (the checks' digest then identifies its content)."""
    root = paths.content_root()
    if not (root / ".git").exists():
        return ""
    try:
        git = ["git", "-C", str(root)]
        head = subprocess.run(
            [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=False, timeout=10
        )
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=False, timeout=20,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return ""
    if head.returncode != 0:
        return ""
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def header(
    inventory: Any,
    declared: dict[str, Any],
    identities: dict[str, dict[str, str]],
    started: str | None = None,
) -> dict[str, Any]:
    """The report's header. ``declared``: host → {roles, vars} as given to the checks;
    ``identities``: host → {machine_id, ssh_host_key} as the audit's probe read them."""
    path = Path(str(getattr(inventory, "path", ""))).resolve()
    started = started or _now()
    compact = started.replace("-", "").replace(":", "").replace("+0000", "Z")
    return {
        "id": f"{compact}-{secrets.token_hex(3)}",
        "hearth": {
            "version": __version__,
            "commit": hearth_commit(),
            "checks_sha256": checks_digest(),
        },
        "inventory": {"path": str(path), "declared_sha256": declared_digest(declared)},
        "operator": getpass.getuser(),
        "control_node": socket.getfqdn(),
        "started": started,
        "finished": started,
        "hosts": {h: identities[h] for h in sorted(identities)},
    }
