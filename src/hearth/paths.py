"""Where Hearth's content (playbooks, roles, plugins, templates) and its state live.

A checkout uses the top-level folders next to ``src/``; an installed wheel carries the same folders
as package data under ``hearth/_content``.  State (runs, lab, caches, collections) goes under
``$HEARTH_HOME`` (default ``~/.local/share/hearth``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

_PKG_DIR = Path(__file__).resolve().parent
CONTENT_DIRS = ("playbooks", "roles", "plugins", "templates", "inventories")


def content_root() -> Path:
    """The folder holding playbooks/, roles/, plugins/ and templates/."""
    override = os.environ.get("HEARTH_CONTENT_ROOT")
    if override:
        return Path(override).resolve()
    checkout = _PKG_DIR.parent.parent
    if (checkout / "playbooks" / "site.yml").is_file() and (checkout / "roles").is_dir():
        return checkout
    return _PKG_DIR / "_content"


def playbooks_dir() -> Path:
    return content_root() / "playbooks"


def roles_dir() -> Path:
    return content_root() / "roles"


def plugins_dir() -> Path:
    return content_root() / "plugins"


def templates_dir() -> Path:
    return content_root() / "templates"


def data_dir() -> Path:
    """Python-side data files shipped inside the package (schemas, pins)."""
    return _PKG_DIR / "data"


def hearth_home() -> Path:
    home = os.environ.get("HEARTH_HOME")
    path = Path(home) if home else Path.home() / ".local" / "share" / "hearth"
    return path.resolve()


def cache_dir() -> Path:
    cache = os.environ.get("HEARTH_CACHE")
    path = Path(cache) if cache else Path.home() / ".cache" / "hearth"
    return path.resolve()


def collections_dir() -> Path:
    """Collections path that Hearth controls (filled by ``hearth collections install``)."""
    return hearth_home() / "collections"


def facts_dir(inventory: Path | str | None = None) -> Path:
    """Ansible's fact cache for one inventory. Keyed by the inventory's real path: two inventories
    with a host of the same name (a site's staging and production ``gpu01``, two labs' ``lab1``)
    must never share cached facts."""
    import hashlib

    base = hearth_home() / "facts"
    if inventory is None:
        return base
    key = hashlib.sha256(str(Path(inventory).resolve()).encode()).hexdigest()[:16]
    return base / key


def runs_dir() -> Path:
    return hearth_home() / "runs"


@contextlib.contextmanager
def cache_lock(name: str) -> Iterator[None]:
    """Hold an exclusive lock named ``name`` in the cache directory for the block: two Hearth
    processes that would build the same image (two `hearth lab up`, two test workers) build it
    once; the second waits, then finds it."""
    import fcntl

    directory = cache_dir() / "locks"
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / f"{name.replace('/', '_').replace(':', '-')}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
