"""Install the Ansible collections Hearth needs without Galaxy.

The pinned collections (``data/collections.yml``) are extracted from the ``ansible`` wheel on PyPI
(fetched with pip, or given as a file: the air-gap bundle carries it) after checking its sha256,
into Hearth's own collections path. Nothing else from the 50 MB wheel is installed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import yaml

from hearth import paths
from hearth.errors import EnvironmentProblem, HearthError


def pins() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((paths.data_dir() / "collections.yml").read_text())
    return data


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_wheel(dest: Path) -> Path:
    """Download the pinned ``ansible`` wheel with pip into ``dest`` (skipped when present)."""
    source = pins()["source"]
    wheel: Path = dest / str(source["filename"])
    if wheel.is_file() and sha256_file(wheel) == source["sha256"]:
        return wheel
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
        "-d", str(dest), f"{source['package']}=={source['version']}",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not wheel.is_file():
        raise EnvironmentProblem(
            f"could not download {source['package']}=={source['version']} from PyPI: "
            f"{result.stderr.strip()[-300:]} — on an offline control node pass --wheel with the "
            "file from the bundle"
        )
    return wheel


def installed_versions(target: Path | None = None) -> dict[str, str]:
    root = (target or paths.collections_dir()) / "ansible_collections"
    found: dict[str, str] = {}
    for manifest in sorted(root.glob("*/*/MANIFEST.json")):
        info = json.loads(manifest.read_text())["collection_info"]
        found[f"{info['namespace']}.{info['name']}"] = info["version"]
    return found


def missing(target: Path | None = None) -> list[str]:
    """Pinned collections that are absent or at another version."""
    have = installed_versions(target)
    return [f"{n}=={v}" for n, v in pins()["collections"].items() if have.get(n) != v]


def install(wheel: Path | None = None, target: Path | None = None) -> dict[str, str]:
    """Extract the pinned collections into ``target``; returns name → version installed."""
    target = target or paths.collections_dir()
    source = pins()["source"]
    wheel = wheel or fetch_wheel(paths.cache_dir() / "wheels")
    actual = sha256_file(wheel)
    if actual != source["sha256"]:
        raise HearthError(
            f"{wheel}: sha256 {actual} does not match the pinned {source['sha256']} for "
            f"{source['package']}=={source['version']}: the file is not the one Hearth expects"
        )
    wanted = pins()["collections"]
    with (
        tempfile.TemporaryDirectory(prefix="hearth-collections-") as tmp,
        zipfile.ZipFile(wheel) as archive,
    ):
        prefixes = {f"ansible_collections/{name.replace('.', '/')}/": name for name in wanted}
        for member in archive.namelist():
            if any(member.startswith(p) for p in prefixes) and not member.endswith("/"):
                archive.extract(member, tmp)
        staged = Path(tmp)
        versions = installed_versions(staged)
        for name, version in wanted.items():
            if versions.get(name) != version:
                raise HearthError(
                    f"{wheel.name} carries {name} {versions.get(name, '(absent)')}, "
                    f"pinned {version}: update src/hearth/data/collections.yml"
                )
        for name in wanted:
            namespace, coll = name.split(".")
            dest = target / "ansible_collections" / namespace / coll
            if dest.exists():
                shutil.rmtree(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(staged / "ansible_collections" / namespace / coll, dest)
    return installed_versions(target)
