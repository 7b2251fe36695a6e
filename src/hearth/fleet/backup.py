"""``hearth backup`` and ``hearth restore``: what a host keeps that the inventory and the bundle
cannot re-derive, in a dated, checksummed archive on the control node.

The hosts' side is Ansible (``playbooks/backup.yml`` / ``restore.yml``, role ``backup``) through
:mod:`hearth.runner`; this module builds and checks the archive:

- ``hearth-backup-<site>-<id>-<UTC time>.tar.zst`` holds ``manifest.json`` (format, time, the
  inventory's identity, the hosts, every file with its size and sha256, the model files
  referenced by sha256) and ``hosts/<host>/…``; beside it ``<archive>.sha256`` (``sha256sum``
  format) checksums the whole archive.
- A restore refuses (exit 2, naming the culprit, before any host is contacted) an archive whose
  checksum file is missing or does not match, a file missing, added or altered against the
  manifest, an archive of another inventory, a ``--limit`` that selects no host of the archive.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from hearth import runner
from hearth.errors import EnvironmentProblem, InvalidInputError
from hearth.fleet.connect import select_hosts

FORMAT = 1
MANIFEST = "manifest.json"
MODEL_MANIFEST = "hearth-model.json"
_NAME = re.compile(r"^hearth-backup-(?P<slug>[\w.-]+)-(?P<stamp>\d{8}T\d{6}Z)\.tar\.zst$")


class BackupInvalid(InvalidInputError):
    """An archive that cannot be restored here; nothing was changed on any host."""


@dataclass(frozen=True)
class Identity:
    """Which inventory an archive belongs to: its ``hearth_site`` where set (stable when the
    inventory moves to another control node), else its real path."""

    id: str
    site: str | None
    path: str

    @property
    def slug(self) -> str:
        name = re.sub(r"[^\w.-]", "_", self.site or Path(self.path).parent.name or "inventory")
        return f"{name}-{self.id[:8]}"

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "site": self.site, "path": self.path}


def identity(inventory: Any) -> Identity:
    sites = {str(inventory.hostvars(h).get("hearth_site") or "") for h in inventory.hosts} - {""}
    path = str(Path(inventory.path).resolve())
    site = sorted(sites)[0] if len(sites) == 1 else None
    basis = f"hearth_site={site}" if site else f"path={path}"
    return Identity(hashlib.sha256(basis.encode()).hexdigest(), site, path)


@dataclass
class BackupResult:
    archive: Path
    hosts: list[str]
    files: int
    size: int
    seconds: float
    removed: list[Path] = field(default_factory=list)
    run: runner.RunResult | None = None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _zstd() -> str:
    found = shutil.which("zstd")
    if found is None:
        raise EnvironmentProblem("zstd is not installed on the control node (apt install zstd)")
    return found


def _model_references(host_dir: Path) -> list[dict[str, Any]]:
    refs: list[dict[str, Any]] = []
    for manifest in sorted((host_dir / "models").rglob(MODEL_MANIFEST)):
        try:
            data = json.loads(manifest.read_text())
        except ValueError:
            continue
        for entry in data.get("files") or []:
            refs.append(
                {"model": data.get("name"), "version": data.get("version"),
                 "path": entry.get("path"), "sha256": entry.get("sha256"),
                 "size": entry.get("size")}
            )  # fmt: skip
    return refs


def _unpack_host(tarball: Path, into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball, "r:gz") as tar:
        tar.extractall(into, filter="data")


def build_archive(
    staging: Path, output_dir: Path, ident: Identity, hosts: list[str], with_weights: bool
) -> tuple[Path, int]:
    """The archive from the fetched ``<host>.tar.gz`` files under ``staging``; returns its path
    and how many files it holds."""
    tree = staging / "tree"
    for host in hosts:
        tarball = staging / f"{host}.tar.gz"
        if tarball.is_file():
            _unpack_host(tarball, tree / "hosts" / host)
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in tree.rglob("*") if p.is_file() or p.is_symlink()):
        if path.is_symlink():
            path.unlink()  # the hosts' pointers are recorded in pointers.json
            continue
        rel = path.relative_to(tree).as_posix()
        files[rel] = {"sha256": _sha256(path), "size": path.stat().st_size}
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    manifest = {
        "format": FORMAT,
        "created": stamp,
        "inventory": ident.as_dict(),
        "hosts": {h: {"models": _model_references(tree / "hosts" / h)} for h in hosts},
        "with_weights": with_weights,
        "files": files,
    }
    (tree / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    output_dir.mkdir(parents=True, exist_ok=True)
    archive = output_dir / f"hearth-backup-{ident.slug}-{stamp}.tar.zst"
    partial = archive.with_name(archive.name + ".partial")
    names = [MANIFEST, *files]
    with (
        partial.open("wb") as out,
        subprocess.Popen([_zstd(), "-q", "-T0", "-c"], stdin=subprocess.PIPE, stdout=out) as zstd,
    ):
        assert zstd.stdin is not None
        with tarfile.open(fileobj=zstd.stdin, mode="w|") as tar:
            for name in names:
                tar.add(tree / name, arcname=name, recursive=False)
        zstd.stdin.close()
    if zstd.returncode != 0:
        raise EnvironmentProblem(f"zstd failed writing {archive}")
    partial.chmod(0o600)
    partial.replace(archive)
    digest = _sha256(archive)
    checksum = archive.with_name(archive.name + ".sha256")
    checksum.write_text(f"{digest}  {archive.name}\n")
    checksum.chmod(0o600)
    return archive, len(files)


def archives(output_dir: Path, ident: Identity) -> list[Path]:
    """This inventory's archives in ``output_dir``, oldest first."""
    found = [
        p for p in output_dir.glob(f"hearth-backup-{ident.slug}-*.tar.zst")
        if _NAME.match(p.name)
    ]  # fmt: skip
    return sorted(found, key=lambda p: p.name)


def apply_retention(output_dir: Path, ident: Identity, keep: int) -> list[Path]:
    """Delete this inventory's oldest archives beyond the ``keep`` newest (others' stay)."""
    found = archives(output_dir, ident)
    doomed = found[:-keep] if keep > 0 else []
    for path in doomed:
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".sha256").unlink(missing_ok=True)
    return doomed


def backup(
    inventory: Any,
    output_dir: Path,
    *,
    limit: str | None = None,
    with_weights: bool = False,
    keep: int | None = None,
    vault_password_file: Path | None = None,
    on_event: runner.EventSink | None = None,
) -> BackupResult:
    """Back up the selected hosts of ``inventory`` (loaded and validated) into ``output_dir``."""
    if keep is not None and keep < 1:
        raise InvalidInputError(f"--keep {keep}: keep at least one archive")
    began = time.monotonic()
    hosts = select_hosts(inventory, limit)
    ident = identity(inventory)
    with tempfile.TemporaryDirectory(prefix="hearth-backup-") as private:
        staging = Path(private)
        run = runner.run_playbook(
            "backup.yml",
            Path(inventory.path),
            limit=",".join(hosts),
            extravars={
                "backup_fetch_dir": str(staging),
                "backup_with_weights": with_weights,
            },
            vault_password_file=vault_password_file,
            on_event=on_event,
            label="backup",
        )
        run.raise_for_status()  # no archive from a partial run
        archive, count = build_archive(staging, output_dir, ident, hosts, with_weights)
    removed = apply_retention(output_dir, ident, keep) if keep else []
    return BackupResult(
        archive, hosts, count, archive.stat().st_size, time.monotonic() - began, removed, run
    )


# ------------------------------------------------------------------------------------ restore
@dataclass
class Verified:
    archive: Path
    manifest: dict[str, Any]
    tree: Path  # where the verified files were unpacked (a private temporary directory)

    @property
    def hosts(self) -> list[str]:
        return sorted(self.manifest.get("hosts", {}))


def _iter_members(archive: Path) -> Any:
    with subprocess.Popen(
        [_zstd(), "-q", "-dc", str(archive)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    ) as unz:
        assert unz.stdout is not None
        try:
            with tarfile.open(fileobj=unz.stdout, mode="r|") as tar:
                for member in tar:
                    data = tar.extractfile(member) if member.isfile() else None
                    yield member, (data.read() if data is not None else None)
        except tarfile.TarError as e:
            raise BackupInvalid(f"{archive}: not a readable backup archive ({e})") from e
        finally:
            unz.stdout.close()


def verify_archive(archive: Path, into: Path) -> Verified:
    """Check ``archive`` against its checksum file and its manifest, unpacking it into ``into``.
    Raises :class:`BackupInvalid` naming every culprit."""
    if not archive.is_file():
        raise BackupInvalid(f"--from {archive}: no such archive")
    checksum = archive.with_name(archive.name + ".sha256")
    if not checksum.is_file():
        raise BackupInvalid(
            f"{archive}: its checksum file {checksum.name} is missing; refusing an archive that "
            "cannot be checked (nothing was changed)"
        )
    expected = checksum.read_text().split()[0] if checksum.read_text().split() else ""
    found = _sha256(archive)
    if found != expected:
        raise BackupInvalid(
            f"{archive}: checksum does not match {checksum.name} (expected {expected}, found "
            f"{found}): the archive was altered or truncated; nothing was changed"
        )
    manifest: dict[str, Any] | None = None
    seen: dict[str, str] = {}
    problems: list[str] = []
    for member, data in _iter_members(archive):
        member_path = PurePosixPath(member.name)
        if member_path.is_absolute() or ".." in member_path.parts:
            problems.append(f"{member.name}: a path outside the archive")
            continue
        if data is None:
            if not member.isdir():
                problems.append(f"{member.name}: not a regular file")
            continue
        if member.name == MANIFEST:
            try:
                manifest = json.loads(data)
            except ValueError:
                problems.append(f"{MANIFEST}: not JSON")
            continue
        seen[member.name] = hashlib.sha256(data).hexdigest()
        target = into / member.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    if manifest is None:
        raise BackupInvalid(f"{archive}: no readable {MANIFEST}; " + "; ".join(problems))
    listed: dict[str, Any] = manifest.get("files") or {}
    for name, entry in sorted(listed.items()):
        if name not in seen:
            problems.append(f"{name}: listed in the manifest, missing from the archive")
        elif seen[name] != entry.get("sha256"):
            problems.append(
                f"{name}: sha256 {seen[name]} does not match the manifest's {entry.get('sha256')}"
            )
    problems += [
        f"{n}: in the archive, not in the manifest" for n in sorted(set(seen) - set(listed))
    ]
    if problems:
        raise BackupInvalid(
            f"{archive} does not match its manifest:\n  "
            + "\n  ".join(problems)
            + "\nNothing was changed on any host."
        )
    return Verified(archive, manifest, into)


def check_identity(verified: Verified, ident: Identity) -> None:
    theirs = verified.manifest.get("inventory") or {}
    if theirs.get("id") != ident.id:
        raise BackupInvalid(
            f"{verified.archive} belongs to another inventory (site {theirs.get('site')!r}, "
            f"{theirs.get('path')}), not to {ident.path} (site {ident.site!r}); refusing to "
            "restore it here (nothing was changed)"
        )


def restore(
    inventory: Any,
    archive: Path,
    *,
    limit: str | None = None,
    check: bool = False,
    vault_password_file: Path | None = None,
    on_event: runner.EventSink | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> tuple[list[str], runner.RunResult, float]:
    """Verify ``archive`` and put it back on the selected hosts (``check``: report what would
    change, change nothing); every refusal comes before any host is contacted."""
    began = time.monotonic()
    chosen = select_hosts(inventory, limit)
    ident = identity(inventory)
    with tempfile.TemporaryDirectory(prefix="hearth-restore-") as private:
        tree = Path(private)
        tree.chmod(0o700)
        verified = verify_archive(archive, tree)
        check_identity(verified, ident)
        hosts = [h for h in chosen if h in verified.hosts]
        if not hosts:
            selector = f"--limit {limit!r}" if limit else "the inventory"
            raise BackupInvalid(
                f"{archive} holds no host that {selector}"
                f" selects (it holds {', '.join(verified.hosts) or 'none'}); nothing was changed"
            )
        say(f"{archive.name} verified: {len(verified.manifest['files'])} files, hosts "
            f"{', '.join(verified.hosts)}")  # fmt: skip
        run = runner.run_playbook(
            "restore.yml",
            Path(inventory.path),
            limit=",".join(hosts),
            check=check,
            extravars={"backup_restore_dir": str(tree / "hosts") + "/{{ inventory_hostname }}"},
            vault_password_file=vault_password_file,
            on_event=on_event,
            label="restore",
        )
    run.raise_for_status()
    return hosts, run, time.monotonic() - began


def tsdb_block_ids(storage: Path) -> list[str]:
    """Every block a Prometheus data directory holds, by ULID: each block's own and the blocks it
    was compacted from (``meta.json``'s ``compaction.sources``). A restored block that
    Prometheus has since merged into a bigger one is still known by its ULID there."""
    known: set[str] = set()
    for meta in sorted(storage.glob("*/meta.json")):
        try:
            data = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue  # a block being written or deleted: Prometheus' own business
        known.add(str(data.get("ulid") or meta.parent.name))
        known.update(str(s) for s in (data.get("compaction") or {}).get("sources") or [])
    return sorted(known)


def missing_blocks(backup_storage: Path, known: list[str] | set[str]) -> list[str]:
    """The blocks of a backed-up Prometheus directory that a host's Prometheus lacks: a block is
    there when its ULID, or every block it was compacted from, is ``known`` on the host
    (:func:`tsdb_block_ids` of the host's directory). What a restore copies, so that a second
    restore of the same archive copies nothing and does not stop Prometheus."""
    have = set(known)
    missing = []
    for meta in sorted(backup_storage.glob("*/meta.json")):
        data = json.loads(meta.read_text())
        sources = set((data.get("compaction") or {}).get("sources") or []) or {data["ulid"]}
        if data["ulid"] not in have and not sources <= have:
            missing.append(meta.parent.name)
    return missing


def read_manifest(archive: Path) -> dict[str, Any]:
    """The manifest of an archive (not verified: for listing)."""
    for member, data in _iter_members(archive):
        if member.name == MANIFEST and data is not None:
            return dict(json.loads(data))
    raise BackupInvalid(f"{archive}: no {MANIFEST}")


__all__ = [
    "BackupInvalid",
    "Identity",
    "apply_retention",
    "archives",
    "backup",
    "build_archive",
    "check_identity",
    "identity",
    "missing_blocks",
    "read_manifest",
    "restore",
    "tsdb_block_ids",
    "verify_archive",
]
