"""Build a bundle for an inventory: plan → artifacts → materialize → manifest → signature."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hearth import __version__
from hearth.bundle import sources
from hearth.bundle.build import (
    Artifact,
    BuildStats,
    materialize,
    monotonic,
    now_iso,
    prepare_out_dir,
    write_manifest,
)
from hearth.bundle.declare import Plan, plan_for_inventory
from hearth.bundle.manifest import Manifest
from hearth.errors import InvalidInputError

__all__ = ["BuildResult", "build_bundle"]

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@dataclass
class BuildResult:
    out: Path
    manifest: Manifest
    stats: BuildStats
    seconds: float
    plan: Plan
    notes: list[str] = field(default_factory=list)


def _unique_models(plan: Plan) -> list[Any]:
    found: dict[tuple[str, str], Any] = {}
    for host in plan.hosts.values():
        for model in host.models:
            key = (model.name, model.version)
            previous = found.get(key)
            if previous is not None and previous.files != model.files:
                raise InvalidInputError(
                    f"model {model.name} {model.version} is declared with different files on "
                    f"different hosts: give one of them another version"
                )
            found[key] = model
    return [found[k] for k in sorted(found)]


def build_bundle(
    inventory: Path,
    out: Path,
    *,
    key: Path,
    vault_password_file: Path | None = None,
    base_image: str | None = None,
    models_from: Sequence[Path] = (),
    python: bool = True,
    say: Say = _quiet,
) -> BuildResult:
    """Collect everything the inventory's hosts need into ``out`` and sign its manifest."""
    from hearth.inventory import check_inventory

    started = monotonic()
    prepare_out_dir(out, key)
    if not key.is_file():
        raise InvalidInputError(
            f"signing key {key} not found: create one with `hearth bundle keygen` or pass --key"
        )
    inv = check_inventory(inventory, vault_password_file=vault_password_file)
    plan = plan_for_inventory(inv)
    notes: list[str] = []
    for role in plan.undeclared_roles():
        notes.append(f"role {role} declares nothing it installs (no meta/bundle.yml)")
    artifacts: list[Artifact] = []
    targets: dict[str, Any] = {}
    for target in plan.targets:
        sets = [(needs, hosts) for needs, hosts in plan.package_sets(target)]
        resolution = sources.resolve_apt(target, sets, base_image=base_image, say=say)
        repo = sources.repo_dir(target)
        release = out / repo / "Release"
        artifacts += sources.apt_artifacts(
            resolution, release.read_bytes() if release.is_file() else None
        )
        for spec, why in sorted(resolution.unavailable.items()):
            notes.append(f"{target.name}: optional {spec} is not in the bundle ({why})")
        targets[target.name] = {
            "repo": repo,
            "pkg_mgr": target.pkg_mgr,
            "base_image": resolution.base_image,
            "packages": {d.name: d.version for d in resolution.debs.values()},
            "preinstalled": resolution.preinstalled,
            "chosen": resolution.chosen,
            "unavailable": resolution.unavailable,
            "release_sha256": next(a.sha256 for a in artifacts if a.path == f"{repo}/Release"),
        }
    image_needs = [i for h in plan.hosts.values() for i in h.images]
    image_artifacts, image_infos, skipped = sources.image_artifacts(image_needs, say)
    artifacts += image_artifacts
    notes += [f"optional image {ref} is not in the control node's Docker" for ref in skipped]
    models = _unique_models(plan)
    artifacts += sources.model_artifacts(models, models_from)
    artifacts += sources.file_artifacts(f for h in plan.hosts.values() for f in h.files)
    if python:
        artifacts.append(sources.hearth_wheel_artifact(say))
        artifacts += sources.wheel_artifacts(say=say)
        artifacts.append(sources.collections_artifact(say))
    entries, stats = materialize(out, artifacts, say=say)
    meta: dict[str, Any] = {
        "created": now_iso(),
        "hearth_version": __version__,
        "inventory": str(inventory),
        "targets": targets,
        "images": [
            {"ref": i.ref, "tag": i.tag, "id": i.image_id, "file": i.file, "recipe": i.recipe}
            for i in image_infos
        ],
        "models": [
            {
                "name": m.name,
                "version": m.version,
                "files": [{"path": sources.model_path(m, f), "sha256": f.sha256} for f in m.files],
            }
            for m in models
        ],
        "hosts": {
            name: {
                "target": h.target.name,
                "roles": h.roles,
                "images": sorted({i.ref for i in h.images}),
                "models": [f"{m.name} {m.version}" for m in h.models],
            }
            for name, h in sorted(plan.hosts.items())
        },
    }
    write_manifest(out, entries, meta, key)
    manifest = Manifest.read(out)
    return BuildResult(out, manifest, stats, monotonic() - started, plan, notes)
