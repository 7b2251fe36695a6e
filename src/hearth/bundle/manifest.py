"""The bundle's manifest: every file with its size, sha256, source and version, and the check of a
bundle directory against it.

The manifest is one JSON document (``manifest.json`` at the bundle's root) written canonically
(sorted keys, fixed separators) so that its bytes — what the signature covers — depend only on
its content. It never lists itself or its signature. :func:`compare` is the verification:
it walks the directory without following symbolic links and names every missing, altered and
extra file; hashing runs on a small thread pool (hashlib releases the GIL on large buffers).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from hearth.errors import InvalidInputError

__all__ = [
    "FORMAT",
    "MANIFEST_NAME",
    "SIGNATURE_NAME",
    "BundleInvalid",
    "Entry",
    "Finding",
    "Manifest",
    "compare",
    "hash_file",
    "safe_relpath",
]

FORMAT = "hearth-bundle/1"
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.json.sig"
RESERVED = frozenset({MANIFEST_NAME, SIGNATURE_NAME})
KINDS = ("deb", "repo-index", "rpm", "image", "model", "wheel", "collections", "file")
_BLOCK = 1 << 20


class BundleInvalid(InvalidInputError):
    """The bundle does not match its manifest or signature; nothing was changed on any host."""


def hash_file(path: Path) -> str:
    """sha256 of ``path`` read in 1 MiB blocks into one reused buffer."""
    digest = hashlib.sha256()
    buffer = bytearray(_BLOCK)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as stream:
        while True:
            count = stream.readinto(buffer)
            if not count:
                break
            digest.update(view[:count])
    return digest.hexdigest()


def safe_relpath(raw: str) -> str:
    """``raw`` as a bundle-relative POSIX path, refusing absolute paths, ``..`` and the reserved
    names (the manifest never lists itself)."""
    path = PurePosixPath(raw)
    if not raw or path.is_absolute() or any(p in ("..", ".", "") for p in raw.split("/")):
        raise InvalidInputError(f"bundle path {raw!r}: expected a relative path without '..'")
    if raw in RESERVED:
        raise InvalidInputError(f"bundle path {raw!r} is reserved for the manifest")
    return str(path)


@dataclass(frozen=True)
class Entry:
    """One file of the bundle."""

    path: str
    size: int
    sha256: str
    kind: str
    source: str
    version: str

    def __post_init__(self) -> None:
        safe_relpath(self.path)
        if self.kind not in KINDS:
            raise InvalidInputError(f"{self.path}: unknown kind {self.kind!r}")
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise InvalidInputError(f"{self.path}: sha256 {self.sha256!r} is not 64 hex digits")


@dataclass
class Manifest:
    """Every file of a bundle, and what the bundle was built for.

    ``meta`` holds the rest of the document: the targets' repositories (with each package's
    version), the images (tag and image id), the models, the request each part was resolved for.
    """

    entries: dict[str, Entry] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def add(self, entry: Entry) -> None:
        if entry.path in self.entries and self.entries[entry.path] != entry:
            raise InvalidInputError(f"{entry.path} is in the bundle twice, with different content")
        self.entries[entry.path] = entry

    @property
    def total_size(self) -> int:
        return sum(e.size for e in self.entries.values())

    def to_bytes(self) -> bytes:
        document = {
            **self.meta,
            "format": FORMAT,
            "files": [asdict(self.entries[p]) for p in sorted(self.entries)],
        }
        text = json.dumps(document, sort_keys=True, indent=1, ensure_ascii=True)
        return (text + "\n").encode("ascii")

    @classmethod
    def from_bytes(cls, data: bytes, where: str = MANIFEST_NAME) -> Manifest:
        try:
            document = json.loads(data)
        except ValueError as e:
            raise BundleInvalid(f"{where}: not valid JSON ({e})") from e
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            found = document.get("format") if isinstance(document, dict) else type(document)
            raise BundleInvalid(f"{where}: expected format {FORMAT}, found {found!r}")
        files = document.pop("files", None)
        if not isinstance(files, list):
            raise BundleInvalid(f"{where}: 'files' must be a list")
        manifest = cls(meta={k: v for k, v in document.items() if k != "format"})
        for index, raw in enumerate(files):
            try:
                manifest.add(Entry(**raw))
            except (TypeError, InvalidInputError) as e:
                raise BundleInvalid(f"{where}: files[{index}]: {e}") from e
        return manifest

    @classmethod
    def read(cls, bundle: Path) -> Manifest:
        path = bundle / MANIFEST_NAME
        if not path.is_file():
            raise BundleInvalid(f"{path}: no manifest (is {bundle} a Hearth bundle?)")
        return cls.from_bytes(path.read_bytes(), str(path))


@dataclass(frozen=True)
class Finding:
    """One way the directory differs from the manifest."""

    kind: str  # missing | altered | extra
    path: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind}: {self.path}" + (f" ({self.detail})" if self.detail else "")


def walk(root: Path) -> Iterable[tuple[str, os.stat_result]]:
    """Every non-directory entry under ``root`` as (relative POSIX path, lstat), symlinks
    included as themselves (never followed)."""
    stack = [root]
    while stack:
        current = stack.pop()
        with os.scandir(current) as it:
            for entry in it:
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(info.st_mode):
                    stack.append(Path(entry.path))
                else:
                    yield Path(entry.path).relative_to(root).as_posix(), info


Hasher = Callable[[Path], str]


def compare(
    bundle: Path, manifest: Manifest, *, hasher: Hasher = hash_file, workers: int | None = None
) -> list[Finding]:
    """Every missing, altered and extra file of ``bundle`` against ``manifest``, sorted by path.

    A file whose size differs is altered without being hashed; symbolic links and special files
    are never accepted in place of a listed file.
    """
    found: dict[str, os.stat_result] = dict(walk(bundle))
    findings: list[Finding] = []
    to_hash: list[Entry] = []
    for path, entry in manifest.entries.items():
        info = found.get(path)
        if info is None:
            findings.append(Finding("missing", path, f"expected {entry.size} bytes"))
        elif not stat.S_ISREG(info.st_mode):
            what = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a regular file"
            findings.append(Finding("altered", path, f"{what}, expected a regular file"))
        elif info.st_size != entry.size:
            findings.append(Finding("altered", path, f"size {info.st_size}, expected {entry.size}"))
        else:
            to_hash.append(entry)
    for path in found:
        if path not in manifest.entries and path not in RESERVED:
            findings.append(Finding("extra", path, "not in the manifest"))
    # Largest first so the pool stays busy to the end.
    to_hash.sort(key=lambda e: e.size, reverse=True)
    count = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=max(1, count)) as pool:
        digests = list(pool.map(lambda e: hasher(bundle / e.path), to_hash))
    for entry, digest in zip(to_hash, digests, strict=True):
        if digest != entry.sha256:
            findings.append(
                Finding("altered", entry.path, f"sha256 {digest}, expected {entry.sha256}")
            )
    return sorted(findings, key=lambda f: (f.path, f.kind))


def describe(findings: Iterable[Finding], limit: int = 50) -> str:
    items = list(findings)
    lines = [f"  {f}" for f in items[:limit]]
    if len(items) > limit:
        lines.append(f"  … and {len(items) - limit} more")
    return "\n".join(lines)


def counts(findings: Iterable[Finding]) -> Mapping[str, int]:
    result = {"missing": 0, "altered": 0, "extra": 0}
    for finding in findings:
        result[finding.kind] += 1
    return result
