"""``hearth bundle build``: collect what the inventory's hosts need into a signed directory.

The build is incremental. Every file is an :class:`Artifact` (bundle path, kind, source, version,
and the sha256 it must have when one is known before fetching: a .deb's from the archive's index,
a model file's from its declaration, a wheel's from PyPI). A record of each file written — its
size, mtime, inode and sha256, with the source and version it was made from — is kept outside
the bundle (``$HEARTH_CACHE/bundle/state/``). A file whose record still matches (same source and
version, same pinned sha256, same size/mtime/inode on disk) is neither fetched nor hashed again;
one that is present without a matching record is hashed once and kept when its sha256 is the
pinned one. Files no longer wanted are removed, so the directory always equals the manifest.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hearth import paths
from hearth.bundle.manifest import (
    MANIFEST_NAME,
    RESERVED,
    SIGNATURE_NAME,
    Entry,
    Manifest,
    hash_file,
    walk,
)
from hearth.errors import HearthError, InvalidInputError

__all__ = ["Artifact", "BuildStats", "Fetched", "Record", "materialize", "state_file"]

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class Fetched:
    """What a fetch learned: the sha256 when it hashed while streaming, else ``None``."""

    sha256: str | None


@dataclass(frozen=True)
class Artifact:
    path: str
    kind: str
    source: str
    version: str
    sha256: str | None  # pinned before fetching, when known
    size: int | None
    fetch: Callable[[Path], Fetched] | None = None
    content: bytes | None = None  # generated files (repository index, Release)

    @classmethod
    def generated(cls, path: str, kind: str, content: bytes, source: str) -> Artifact:
        digest = hashlib.sha256(content).hexdigest()
        return cls(path, kind, source, digest[:16], digest, len(content), None, content)


@dataclass
class Record:
    size: int
    mtime_ns: int
    ino: int
    sha256: str
    source: str
    version: str


@dataclass
class BuildStats:
    fetched: list[str] = field(default_factory=list)
    hashed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)  # generated files (re)written
    removed: list[str] = field(default_factory=list)
    fetched_bytes: int = 0

    def summary(self) -> str:
        return (
            f"{len(self.fetched)} fetched ({self.fetched_bytes / 1e6:.1f} MB), "
            f"{len(self.reused)} reused unchanged, {len(self.hashed)} hashed, "
            f"{len(self.written)} index file(s) written, {len(self.removed)} removed"
        )


def state_file(out: Path) -> Path:
    key = hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:16]
    return paths.cache_dir() / "bundle" / "state" / f"{key}.json"


def load_state(out: Path) -> dict[str, Record]:
    path = state_file(out)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if raw.get("bundle") != str(out.resolve()):
        return {}
    records: dict[str, Record] = {}
    for name, item in (raw.get("files") or {}).items():
        with contextlib.suppress(TypeError):
            records[name] = Record(**item)
    return records


def save_state(out: Path, records: dict[str, Record]) -> None:
    path = state_file(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"bundle": str(out.resolve()), "files": {k: asdict(v) for k, v in records.items()}}
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(data, sort_keys=True))
    partial.replace(path)


def _record(dest: Path, artifact: Artifact, sha256: str) -> Record:
    info = dest.lstat()
    return Record(info.st_size, info.st_mtime_ns, info.st_ino, sha256, artifact.source,
                  artifact.version)  # fmt: skip


def _unchanged(dest: Path, artifact: Artifact, record: Record | None) -> bool:
    if record is None or (record.source, record.version) != (artifact.source, artifact.version):
        return False
    if artifact.sha256 is not None and record.sha256 != artifact.sha256:
        return False
    try:
        info = dest.lstat()
    except FileNotFoundError:
        return False
    return stat.S_ISREG(info.st_mode) and (info.st_size, info.st_mtime_ns, info.st_ino) == (
        record.size,
        record.mtime_ns,
        record.ino,
    )


def materialize(
    out: Path,
    artifacts: Sequence[Artifact],
    *,
    hasher: Callable[[Path], str] = hash_file,
    workers: int = 4,
    say: Say = _quiet,
) -> tuple[list[Entry], BuildStats]:
    """Make ``out`` hold exactly ``artifacts``; returns their manifest entries and what it did."""
    records = load_state(out)
    stats = BuildStats()
    lock = threading.Lock()
    entries: dict[str, Entry] = {}
    new_records: dict[str, Record] = {}
    pending: list[Artifact] = []
    seen: set[str] = set()

    def keep(artifact: Artifact, dest: Path, sha256: str, record: Record | None = None) -> None:
        rec = record or _record(dest, artifact, sha256)
        with lock:
            new_records[artifact.path] = rec
            entries[artifact.path] = Entry(
                artifact.path, rec.size, sha256, artifact.kind, artifact.source, artifact.version
            )

    def hashed(dest: Path, name: str) -> str:
        digest = hasher(dest)
        with lock:
            stats.hashed.append(name)
        return digest

    for artifact in artifacts:
        if artifact.path in seen:
            continue
        seen.add(artifact.path)
        dest = out / artifact.path
        record = records.get(artifact.path)
        if _unchanged(dest, artifact, record):
            assert record is not None
            stats.reused.append(artifact.path)
            keep(artifact, dest, record.sha256, record)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        if artifact.content is not None:
            assert artifact.sha256 is not None
            partial = dest.with_name(f".{dest.name}.partial")
            partial.write_bytes(artifact.content)
            partial.replace(dest)
            stats.written.append(artifact.path)
            keep(artifact, dest, artifact.sha256)
            continue
        present = dest.is_file() and not dest.is_symlink()
        if present and artifact.sha256 is not None:
            size_ok = artifact.size is None or dest.stat().st_size == artifact.size
            if size_ok and hashed(dest, artifact.path) == artifact.sha256:
                keep(artifact, dest, artifact.sha256)
                continue
        pending.append(artifact)

    def fetch(artifact: Artifact) -> None:
        assert artifact.fetch is not None
        dest = out / artifact.path
        partial = dest.with_name(f".{dest.name}.partial")
        partial.unlink(missing_ok=True)
        try:
            fetched = artifact.fetch(partial)
            digest = fetched.sha256 or hashed(partial, artifact.path)
            if artifact.sha256 is not None and digest != artifact.sha256:
                raise HearthError(
                    f"{artifact.path} from {artifact.source}: sha256 {digest}, expected the "
                    f"pinned {artifact.sha256} — not added to the bundle"
                )
            partial.replace(dest)
        finally:
            partial.unlink(missing_ok=True)
        with lock:
            stats.fetched.append(artifact.path)
            stats.fetched_bytes += dest.stat().st_size
        keep(artifact, dest, digest)

    if pending:
        say(f"fetching {len(pending)} file(s)")
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for future in [pool.submit(fetch, a) for a in pending]:
                future.result()
    for name, _info in list(walk(out)):
        if name in RESERVED or name in entries:
            continue
        (out / name).unlink()
        stats.removed.append(name)
    _prune_empty_dirs(out)
    save_state(out, new_records)
    return [entries[p] for p in sorted(entries)], stats


def _prune_empty_dirs(root: Path) -> None:
    for current, dirs, files in os.walk(root, topdown=False):
        if current != str(root) and not dirs and not files:
            with contextlib.suppress(OSError):
                Path(current).rmdir()


def prepare_out_dir(out: Path, key: Path) -> None:
    """Refuse an output directory that holds something other than a Hearth bundle, and a signing
    key inside it."""
    resolved = out.resolve()
    if resolved == key.resolve().parent or resolved in key.resolve().parents:
        raise InvalidInputError(
            f"the signing key {key} is inside the bundle directory {out}: the private key must "
            "never travel with the bundle; keep it elsewhere"
        )
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"{out} exists and is not a directory")
    ours = (out / MANIFEST_NAME).is_file() or state_file(out).is_file()
    if out.is_dir() and any(out.iterdir()) and not ours:
        raise InvalidInputError(
            f"{out} is not empty and is not a Hearth bundle: choose a new or empty directory "
            "(a build removes every file its manifest does not list)"
        )
    out.mkdir(parents=True, exist_ok=True)


def write_manifest(out: Path, entries: Iterable[Entry], meta: dict[str, Any], key: Path) -> Path:
    from hearth.bundle.sign import sign

    manifest = Manifest(meta=meta)
    for entry in entries:
        manifest.add(entry)
    target = out / MANIFEST_NAME
    partial = out / f".{MANIFEST_NAME}.partial"
    partial.write_bytes(manifest.to_bytes())
    partial.replace(target)
    (out / SIGNATURE_NAME).unlink(missing_ok=True)
    return sign(target, key)


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def monotonic() -> float:
    return time.monotonic()
