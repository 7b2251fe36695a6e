"""``hearth bundle verify`` and what ``hearth up --bundle`` needs before any host is touched: the
signature, every file, and that the bundle carries what this inventory's hosts need."""

from __future__ import annotations

import fnmatch
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hearth import paths
from hearth.bundle.declare import Plan
from hearth.bundle.manifest import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    BundleInvalid,
    Finding,
    Manifest,
    compare,
    counts,
    describe,
)
from hearth.bundle.sign import verify_signature

__all__ = ["VerifyResult", "check_coverage", "extravars", "verify_bundle"]


@dataclass
class VerifyResult:
    bundle: Path
    principal: str = ""
    manifest: Manifest | None = None
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.manifest is not None and not self.findings

    @property
    def bytes_checked(self) -> int:
        return self.manifest.total_size if self.manifest is not None else 0

    def raise_for_findings(self) -> None:
        if not self.findings:
            return
        tally = counts(self.findings)
        summary = ", ".join(f"{n} {k}" for k, n in tally.items() if n)
        raise BundleInvalid(
            f"bundle {self.bundle} does not match its signed manifest ({summary}):\n"
            f"{describe(self.findings)}\nNothing was changed on any host."
        )


def verify_bundle(
    bundle: Path, allowed_signers: Path, *, workers: int | None = None
) -> VerifyResult:
    """Check the manifest's signature, then every file against the manifest.

    A bad signature raises :class:`BundleInvalid` at once (nothing in an unsigned manifest can be
    trusted); file findings are all collected in the result (``raise_for_findings``).
    """
    started = time.monotonic()
    if not bundle.is_dir():
        raise BundleInvalid(f"{bundle}: no such bundle directory")
    document = bundle / MANIFEST_NAME
    if not document.is_file():
        raise BundleInvalid(f"{document}: missing — {bundle} is not a Hearth bundle")
    principal = verify_signature(document, bundle / SIGNATURE_NAME, allowed_signers)
    manifest = Manifest.read(bundle)
    findings = compare(bundle, manifest, workers=workers)
    return VerifyResult(bundle, principal, manifest, findings, time.monotonic() - started)


def check_coverage(manifest: Manifest, plan: Plan) -> list[str]:
    """What this inventory's hosts need that the bundle does not carry (each in words)."""
    problems: list[str] = []
    targets: dict[str, Any] = manifest.meta.get("targets") or {}
    images = manifest.meta.get("images") or []
    known_images = {i.get("ref") for i in images} | {i.get("tag") for i in images}
    from hearth.bundle.sources import model_path

    for name, host in sorted(plan.hosts.items()):
        target = targets.get(host.target.name)
        wanted = [p for p in host.packages if not p.optional]
        if wanted and target is None:
            problems.append(f"{name}: the bundle has no repository for {host.target.name}")
            continue
        if target is not None:
            versions = {**(target.get("preinstalled") or {}), **(target.get("packages") or {})}
            chosen = target.get("chosen") or {}
            for need in wanted:
                version = versions.get(need.name)
                glob = need.version_glob
                if version is None and need.spec not in chosen:
                    problems.append(f"{name}: package {need.spec} (role {need.role}) is missing")
                elif version is not None and glob and not fnmatch.fnmatchcase(version, glob):
                    problems.append(
                        f"{name}: package {need.name} {version} in the bundle does not match "
                        f"{glob} (role {need.role})"
                    )
        for image in host.images:
            if not image.optional and image.ref not in known_images:
                problems.append(f"{name}: image {image.ref} (role {image.role}) is missing")
        for model in host.models:
            if model.source.type in ("url", "huggingface"):
                problems.append(
                    f"{name}: model {model.name} {model.version} is fetched from "
                    f"{model.source.type} — without a route out, declare it as source: "
                    f"{{type: bundle, path: models/{model.name}/{model.version}}}"
                )
                continue
            if model.source.type != "bundle":
                continue
            for file in model.files:
                entry = manifest.entries.get(model_path(model, file))
                if entry is None or entry.sha256 != file.sha256:
                    problems.append(
                        f"{name}: model {model.name} {model.version}: {file.path} "
                        f"(sha256 {file.sha256}) is not in the bundle"
                    )
    return problems


def repo_archive(bundle: Path, manifest: Manifest, target: str) -> Path:
    """One tar of a target's repository (its verified files under a folder named after the
    Release file's sha256), so the hosts get it in one transfer. Kept in the cache: the name
    pins the content (Release pins the index, the index pins every package)."""
    info = manifest.meta["targets"][target]
    version = str(info["release_sha256"])[:16]
    dest = paths.cache_dir() / "bundle" / "transfer" / f"{target}-{version}.tar"
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    prefix = f"{info['repo']}/"
    partial = dest.with_suffix(".partial")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as archive:
        folder = tarfile.TarInfo(version)
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        archive.addfile(folder)
        for path in sorted(p for p in manifest.entries if p.startswith(prefix)):
            member = archive.gettarinfo(str(bundle / path), f"{version}/{path[len(prefix) :]}")
            member.uid = member.gid = 0
            member.uname = member.gname = "root"
            member.mode = 0o644
            with (bundle / path).open("rb") as stream:
                archive.addfile(member, stream)
    partial.replace(dest)
    for older in dest.parent.glob(f"{target}-*.tar"):  # one archive per target is kept
        if older != dest:
            older.unlink(missing_ok=True)
    return dest


def extravars(bundle: Path, manifest: Manifest, plan: Plan) -> dict[str, Any]:
    """The variables the offline_repo role (and model_store) read during ``up --bundle``."""
    root = str(bundle.resolve())
    targets = manifest.meta.get("targets") or {}
    images = {i["ref"]: i for i in manifest.meta.get("images") or []}
    by_tag = {i["tag"]: i for i in images.values()}
    host_images: dict[str, list[dict[str, Any]]] = {}
    role_vars: dict[str, tuple[str, Any]] = {}  # variable → (image, value)
    for name, host in plan.hosts.items():
        chosen = []
        for need in host.images:
            info = images.get(need.ref) or by_tag.get(need.ref)
            if info is None:
                continue
            if need.archive_var is None:
                if info not in chosen:
                    chosen.append(info)
                continue
            values = {need.archive_var: str(bundle.resolve() / info["file"])}
            if need.sha256_var:
                values[need.sha256_var] = manifest.entries[info["file"]].sha256
            for var, value in values.items():
                earlier = role_vars.setdefault(var, (need.ref, value))
                if earlier[1] != value:
                    raise BundleInvalid(
                        f"{var}: hosts declare different images ({earlier[0]}, {need.ref}); "
                        "`up --bundle` sets it once for every host — give them one image"
                    )
        host_images[name] = [
            {"tag": i["tag"], "id": i["id"], "file": i["file"],
             "sha256": manifest.entries[i["file"]].sha256}
            for i in chosen
        ]  # fmt: skip
    return {
        "hearth_bundle_dir": root,
        "hearth_bundle": {
            "targets": {
                t: {
                    "repo": v["repo"],
                    "release_sha256": v["release_sha256"],
                    "pkg_mgr": v.get("pkg_mgr", "apt"),
                    "archive": str(repo_archive(bundle, manifest, t)),
                }
                for t, v in targets.items()
            },
        },
        "hearth_bundle_host_images": host_images,
        "model_store_bundle_dir": root,
        **{var: value for var, (_, value) in role_vars.items()},
    }
