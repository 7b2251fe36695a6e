"""Where a bundle's files come from: the target distribution's archive (resolved inside a clean
container of the target OS), the control node's Docker, model sources, PyPI, the pinned ansible
wheel, declared files.

Every function here returns :class:`~hearth.bundle.build.Artifact` objects: what the file is
(bundle path, kind, source, version, the sha256 it must have where one is known in advance) and
how to fetch it. :mod:`hearth.bundle.build` decides what actually needs fetching.
"""

from __future__ import annotations

import email.utils
import fnmatch
import hashlib
import http.client
import importlib.metadata
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hearth import paths
from hearth.bundle.build import Artifact, Fetched
from hearth.bundle.declare import FileNeed, ImageNeed, PackageNeed, Target
from hearth.errors import EnvironmentProblem, HearthError, InvalidInputError

__all__ = [
    "AptResolution",
    "Deb",
    "apt_artifacts",
    "collections_artifact",
    "file_artifacts",
    "hearth_wheel_artifact",
    "image_artifacts",
    "model_artifacts",
    "resolve_apt",
    "wheel_artifacts",
]

Say = Callable[[str], None]
BUNDLE_NETWORK = "hearth-bundle"
# Acquire::Retries: apt tries a failed index or package fetch again (with its own backoff).
APT_OPTS = ("-o", "Acquire::Languages=none", "-o", "Dpkg::Use-Pty=0", "-o", "Acquire::Retries=3")


def _quiet(_: str) -> None:
    return None


# ------------------------------------------------------------------------------------- fetch


#: Waits between attempts at one download. A name-resolution hiccup, a reset connection, a
#: timeout or a 5xx/429 answer is tried again after each; anything else (404, a bad URL, a size
#: mismatch) fails at once. About 45 s in all before the build gives up on a file.
RETRY_WAITS: tuple[float, ...] = (3.0, 6.0, 12.0, 24.0)


_NETWORK_ERRORS = (ConnectionError, TimeoutError, socket.timeout, socket.gaierror)


def _transient(exc: Exception) -> bool:
    """Is this download failure worth another attempt? A lost lookup, a reset or refused
    connection, a timeout, a connection cut mid-file, a 5xx/408/429 answer: yes. A 404, a file
    URL that names no file, a full disk: no."""
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500 or exc.code in (408, 429)
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        return isinstance(reason, _NETWORK_ERRORS) or "timed out" in str(reason)
    return isinstance(exc, (*_NETWORK_ERRORS, http.client.HTTPException))


def download(
    url: str,
    size: int | None = None,
    timeout: float = 120,
    waits: Sequence[float] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Callable[[Path], Fetched]:
    """A fetcher that streams ``url`` (http(s) or file) into the given path, hashing as it goes.

    A transient failure (see :func:`_transient`) is tried again after each of ``waits``
    (default :data:`RETRY_WAITS`); the file is written from its start on every attempt.
    """

    def attempt(dest: Path) -> Fetched:
        digest = hashlib.sha256()
        written = 0
        request = urllib.request.Request(url, headers={"User-Agent": "hearth-bundle"})  # noqa: S310
        with (
            urllib.request.urlopen(request, timeout=timeout) as response,  # noqa: S310
            dest.open("wb") as out,
        ):
            while block := response.read(1 << 20):
                digest.update(block)
                out.write(block)
                written += len(block)
            announced = response.headers.get("Content-Length") if response.headers else None
        if announced and announced.isdigit() and written < int(announced):
            # http.client ends a read loop quietly when the connection closes early
            raise ConnectionAbortedError(
                f"the connection closed after {written} of {announced} bytes"
            )
        if size is not None and written != size:
            raise HearthError(f"{url}: got {written} bytes, the index says {size}")
        return Fetched(digest.hexdigest())

    def fetch(dest: Path) -> Fetched:
        # http(s) and file URLs only: from the archive's index, pip's report, the inventory.
        if not url.startswith(("http://", "https://", "file:/")):
            raise InvalidInputError(f"{url}: only http(s) and file URLs are fetched")
        pauses = list(RETRY_WAITS if waits is None else waits)
        tries = 0
        while True:
            tries += 1
            try:
                return attempt(dest)
            except (OSError, http.client.HTTPException) as e:
                if not pauses or not _transient(e) or url.startswith("file:"):
                    after = f" (after {tries} attempts)" if tries > 1 else ""
                    raise HearthError(f"could not download {url}{after}: {e}") from e
                sleep(pauses.pop(0))

    return fetch


def copy_from(source: Path) -> Callable[[Path], Fetched]:
    def fetch(dest: Path) -> Fetched:
        if not source.is_file():
            raise InvalidInputError(f"{source}: not found on the control node")
        shutil.copyfile(source, dest)
        return Fetched(None)

    return fetch


def _run(cmd: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(list(cmd), check=True, text=True, capture_output=True, **kwargs)
    except FileNotFoundError as exc:
        raise EnvironmentProblem(f"{cmd[0]} is not installed on the control node") from exc
    except subprocess.CalledProcessError as exc:
        tail = (exc.stderr or exc.stdout or "").strip().splitlines()[-8:]
        raise HearthError(
            f"{' '.join(cmd[:5])} … failed (rc={exc.returncode}): {' | '.join(tail)}"
        ) from exc


# --------------------------------------------------------------------------------------- apt


@dataclass(frozen=True)
class Deb:
    name: str
    version: str
    architecture: str
    filename: str  # the pool file's name, which is also its name in the bundle's repository
    url: str
    size: int
    sha256: str
    stanza: str  # the archive's own index record (Filename rewritten for the flat repository)


@dataclass
class AptResolution:
    target: Target
    debs: dict[str, Deb] = field(default_factory=dict)  # filename → deb
    chosen: dict[str, str] = field(default_factory=dict)  # requested spec → name=version
    unavailable: dict[str, str] = field(default_factory=dict)  # optional spec → why
    base_image: str = ""
    preinstalled: dict[str, str] = field(default_factory=dict)  # in the base image: name → ver

    @property
    def versions(self) -> dict[str, str]:
        """Every package the hosts can install from the bundle: the repository's and the base
        image's (already on a host built like it)."""
        found = dict(self.preinstalled)
        found.update({d.name: d.version for d in self.debs.values()})
        return found


class _Builder:
    """A throw-away container of the target OS with a cached apt index."""

    def __init__(self, image: str, lists: Path, say: Say) -> None:
        self.image = image
        self.lists = lists
        self.say = say
        self.name = f"hearth-bundle-resolve-{os.getpid()}-{int(time.time() * 1000) % 100000}"

    def __enter__(self) -> _Builder:
        self.lists.mkdir(parents=True, exist_ok=True)
        _ensure_network()
        _run(
            ["docker", "run", "-d", "--rm", "--name", self.name, "--network", BUNDLE_NETWORK,
             "--label", "io.hearth.bundle=resolve",
             "-v", f"{self.lists}:/var/lib/apt/lists", "--entrypoint", "sleep", self.image,
             "infinity"]
        )  # fmt: skip
        return self

    def __exit__(self, *_: object) -> None:
        subprocess.run(["docker", "rm", "-f", self.name], capture_output=True, check=False)

    def exec(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        full = ["docker", "exec", "-e", "DEBIAN_FRONTEND=noninteractive", self.name, *cmd]
        if check:
            return _run(full)
        return subprocess.run(full, capture_output=True, text=True, check=False)


def _ensure_network() -> None:
    probe = subprocess.run(
        ["docker", "network", "inspect", BUNDLE_NETWORK], capture_output=True, check=False
    )
    if probe.returncode != 0:
        subprocess.run(
            ["docker", "network", "create", "--label", "io.hearth.bundle=1", BUNDLE_NETWORK],
            capture_output=True,
            check=False,
        )


def _madison(builder: _Builder, names: Iterable[str]) -> dict[str, list[str]]:
    wanted = sorted(set(names))
    offered: dict[str, list[str]] = {n: [] for n in wanted}
    if not wanted:
        return offered
    done = builder.exec("apt-cache", "madison", *wanted, check=False)
    for line in done.stdout.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) >= 2 and parts[0] in offered and parts[1] not in offered[parts[0]]:
            offered[parts[0]].append(parts[1])
    return offered


def _choose(
    needs: Sequence[PackageNeed], offered: Mapping[str, list[str]], hosts: Sequence[str]
) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """(spec → apt argument, optional spec → why unavailable, errors)."""
    chosen: dict[str, str] = {}
    unavailable: dict[str, str] = {}
    errors: list[str] = []
    for need in needs:
        versions = offered.get(need.name, [])
        glob = need.version_glob
        if glob is None:
            if versions or not need.optional:  # a virtual package has no versions of its own
                chosen[need.spec] = need.name
            else:
                unavailable[need.spec] = "no configured source offers it"
            continue
        matching = [v for v in versions if fnmatch.fnmatchcase(v, glob)]
        if matching:  # madison lists the newest first
            chosen[need.spec] = f"{need.name}={matching[0]}"
        elif need.optional:
            unavailable[need.spec] = f"offered: {', '.join(versions) or 'none'}"
        else:
            errors.append(
                f"{need.spec} (role {need.role}, hosts {', '.join(hosts)}): no version matches "
                f"{glob}; the target's sources offer {', '.join(versions) or 'none'}"
            )
    return chosen, unavailable, errors


_URI_LINE = re.compile(r"^'(?P<url>[^']+)' (?P<file>\S+) (?P<size>\d+)")


def _print_uris(builder: _Builder, args: Sequence[str], hosts: Sequence[str]) -> list[str]:
    done = builder.exec(
        "apt-get", *APT_OPTS, "install", "-y", "-qq", "--print-uris", "--allow-downgrades",
        "--allow-change-held-packages", "-o", "APT::Install-Recommends=true", *args,
        check=False,
    )  # fmt: skip
    if done.returncode != 0:
        problem = " | ".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        raise InvalidInputError(
            f"apt cannot install the packages of {', '.join(hosts)} on a fresh host: {problem}"
        )
    return [m.group("url") for m in map(_URI_LINE.match, done.stdout.splitlines()) if m]


def _stanzas(text: str) -> Iterable[dict[str, str]]:
    for block in re.split(r"\n\s*\n", text.strip()):
        record: dict[str, str] = {}
        key = ""
        for line in block.splitlines():
            if line.startswith((" ", "\t")) and key:
                record[key] += "\n" + line
            elif ":" in line:
                key, _, value = line.partition(":")
                record[key] = value.strip()
        if record.get("Package"):
            yield record


def _stanza_text(record: Mapping[str, str], filename: str) -> str:
    lines = []
    for key, value in record.items():
        if key == "Filename":
            value = f"./{filename}"
        elif key == "Description-en":
            key = "Description"
        lines.append(f"{key}: {value}" if value else f"{key}:")
    return "\n".join(lines) + "\n"


def resolve_apt(
    target: Target,
    package_sets: Sequence[tuple[Sequence[PackageNeed], Sequence[str]]],
    *,
    base_image: str | None = None,
    say: Say = _quiet,
) -> AptResolution:
    """Resolve every host's package set, with its dependencies and recommendations, inside a
    clean container of ``target`` (the lab's Debian 12 image unless ``base_image``), so the
    closure is what a fresh host built like that image would install."""
    if not target.buildable or target.pkg_mgr != "apt":
        raise InvalidInputError(
            f"bundle target {target.name}: building its repository is not supported yet (only "
            f"debian-12; dnf targets are described in docs/airgap.md)"
        )
    if shutil.which("docker") is None:
        raise EnvironmentProblem("docker is not installed: the bundle resolves packages in it")
    if base_image is None:
        from hearth import lab

        base_image = lab.ensure_image(lab.docker_client(), say)
    result = AptResolution(target=target, base_image=base_image)
    lists = paths.cache_dir() / "bundle" / "apt-lists" / target.name
    with _Builder(base_image, lists, say) as builder:
        say(f"{target.name}: refreshing the package index in a clean {base_image} container")
        builder.exec("apt-get", *APT_OPTS, "update", "-qq")
        listing = builder.exec("dpkg-query", "-W", "-f=${Package} ${Version} ${Status}\\n")
        for line in listing.stdout.splitlines():
            parts = line.split(" ", 2)
            if len(parts) == 3 and parts[2].endswith(" installed"):
                result.preinstalled[parts[0]] = parts[1]
        all_needs = [n for needs, _ in package_sets for n in needs]
        offered = _madison(builder, (n.name for n in all_needs))
        errors: list[str] = []
        urls: dict[str, str] = {}
        for needs, hosts in package_sets:
            chosen, unavailable, problems = _choose(needs, offered, hosts)
            errors += problems
            result.chosen.update(chosen)
            result.unavailable.update(unavailable)
            if problems or not chosen:
                continue
            say(f"{target.name}: resolving {len(chosen)} package(s) for {', '.join(hosts)}")
            for url in _print_uris(builder, sorted(set(chosen.values())), hosts):
                name = urllib.parse.unquote(url.rsplit("/", 1)[-1])
                urls[name] = url
        if errors:
            raise InvalidInputError(
                "the bundle cannot carry every declared package:\n  " + "\n  ".join(errors)
            )
        if urls:
            names = sorted({f.split("_", 1)[0] for f in urls})
            shown = builder.exec("apt-cache", "show", *names)
            for record in _stanzas(shown.stdout):
                filename = record.get("Filename", "").rsplit("/", 1)[-1]
                if filename in urls and filename not in result.debs:
                    result.debs[filename] = Deb(
                        name=record["Package"],
                        version=record["Version"],
                        architecture=record.get("Architecture", ""),
                        filename=filename,
                        url=urls[filename],
                        size=int(record["Size"]),
                        sha256=record["SHA256"].lower(),
                        stanza=_stanza_text(record, filename),
                    )
        lost = sorted(set(urls) - set(result.debs))
        if lost:
            raise HearthError(f"{target.name}: no index record for {', '.join(lost)}")
    return result


def packages_index(resolution: AptResolution) -> bytes:
    debs = sorted(resolution.debs.values(), key=lambda d: (d.name, d.version, d.architecture))
    return "\n".join(d.stanza for d in debs).encode()


def release_file(target: Target, packages: bytes, previous: bytes | None) -> bytes:
    """The flat repository's Release: the index's hashes (apt checks the index against them, and
    each .deb against the index). Kept byte for byte when the index did not change."""
    sha = hashlib.sha256(packages).hexdigest()
    if previous is not None and f" {sha} {len(packages)} Packages" in previous.decode(
        errors="replace"
    ):
        return previous
    md5 = hashlib.md5(packages, usedforsecurity=False).hexdigest()
    date = email.utils.formatdate(usegmt=True).replace("GMT", "UTC")
    lines = [
        "Origin: Hearth",
        "Label: Hearth offline bundle",
        f"Suite: hearth-{target.name}",
        f"Codename: {target.release}",
        f"Date: {date}",
        "Architectures: amd64 all",
        "Description: packages for hosts without a route out (hearth bundle build)",
        "MD5Sum:",
        f" {md5} {len(packages)} Packages",
        "SHA256:",
        f" {sha} {len(packages)} Packages",
    ]
    return ("\n".join(lines) + "\n").encode()


def repo_dir(target: Target) -> str:
    return f"repo/{target.name}"


def apt_artifacts(resolution: AptResolution, previous_release: bytes | None) -> list[Artifact]:
    base = repo_dir(resolution.target)
    artifacts = [
        Artifact(
            path=f"{base}/{deb.filename}",
            kind="deb",
            source=deb.url,
            version=f"{deb.name}={deb.version}",
            sha256=deb.sha256,
            size=deb.size,
            fetch=download(deb.url, deb.size),
        )
        for deb in resolution.debs.values()
    ]
    index = packages_index(resolution)
    release = release_file(resolution.target, index, previous_release)
    artifacts += [
        Artifact.generated(f"{base}/Packages", "repo-index", index, "hearth bundle build"),
        Artifact.generated(f"{base}/Release", "repo-index", release, "hearth bundle build"),
    ]
    return artifacts


# ------------------------------------------------------------------------------------ images


@dataclass(frozen=True)
class ImageInfo:
    ref: str
    tag: str
    image_id: str
    file: str
    recipe: str | None = None


def _image_file(tag: str, image_id: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", tag).strip("-") or "image"
    return f"images/{stem}-{image_id.removeprefix('sha256:')[:12]}.tar"


def image_artifacts(
    needs: Iterable[ImageNeed], say: Say = _quiet
) -> tuple[list[Artifact], list[ImageInfo], list[str]]:
    """``docker save`` of each image (keyed by its image id: the digest of its content); engine
    recipes are built or loaded from Hearth's cache first. Returns (artifacts, images, skipped
    optional refs)."""
    artifacts: list[Artifact] = []
    infos: dict[str, ImageInfo] = {}
    skipped: list[str] = []
    for need in sorted(set(needs), key=lambda n: n.ref):
        if need.ref in infos:
            continue
        if need.recipe is not None:
            from hearth import images

            images.ensure_image(need.recipe, say=say)
        probe = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{.Id}} {{json .RepoTags}}", need.ref],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode != 0:
            if need.optional:
                skipped.append(need.ref)
                continue
            raise InvalidInputError(
                f"image {need.ref} (role {need.role}) is not in the control node's Docker: "
                "build or load it first (hearth images build, docker load)"
            )
        image_id, tags_json = probe.stdout.strip().split(" ", 1)
        tags = json.loads(tags_json) or []
        tag = need.ref if need.ref in tags or not tags else tags[0]
        info = ImageInfo(need.ref, tag, image_id, _image_file(tag, image_id), need.recipe)
        infos[need.ref] = info

        def save(dest: Path, ref: str = tag) -> Fetched:
            _run(["docker", "save", "-o", str(dest), ref])
            return Fetched(None)

        artifacts.append(
            Artifact(info.file, "image", f"docker-image:{tag}", image_id, None, None, save)
        )
    return artifacts, list(infos.values()), skipped


# ------------------------------------------------------------------------------------ models


def model_path(model: Any, file: Any) -> str:
    """Where a model file sits in the bundle: under a ``bundle`` source's declared path (the
    model_store role copies from there), else under models/<name>/<version>/."""
    if model.source.type == "bundle" and model.source.path:
        return f"{model.source.path.strip('/')}/{file.path}"
    return f"models/{model.name}/{model.version}/{file.path}"


def _lab_model_by_sha(sha256: str) -> Callable[[Path], Fetched] | None:
    from hearth.models import lab_models

    for key, entry in lab_models().items():
        if str(entry.get("sha256")) == sha256:

            def fetch(dest: Path, key: str = key) -> Fetched:
                from hearth import images

                fetched = next(images.fetch_lab_models(key))
                shutil.copyfile(fetched.path, dest)
                return Fetched(None)

            return fetch
    return None


def model_artifacts(models: Iterable[Any], search: Sequence[Path] = ()) -> list[Artifact]:
    """Every declared model file, to be checked against its declared sha256: downloaded from its
    url / Hugging Face revision, copied from a control-node path, or — for ``bundle`` sources —
    found in ``search`` directories or among the lab's pinned models."""
    artifacts: dict[str, Artifact] = {}
    for model in models:
        for file in model.files:
            path = model_path(model, file)
            if path in artifacts:
                continue
            source_desc = model.source.type
            fetch: Callable[[Path], Fetched] | None = None
            url = model.source.file_url(file)
            if url is not None:
                fetch, source_desc = download(url, file.size, timeout=600), url
            elif model.source.type == "path" and model.source.path:
                local = Path(model.source.path) / file.path
                fetch, source_desc = copy_from(local), str(local)
            else:
                candidates = [
                    d / sub
                    for d in search
                    for sub in (
                        Path(model.source.path or "") / file.path,
                        Path(file.path),
                        Path(file.path).name,
                    )
                ]
                found = next((c for c in candidates if c.is_file()), None)
                if found is not None:
                    fetch, source_desc = copy_from(found), str(found)
                else:
                    fetch = _lab_model_by_sha(file.sha256)
                    source_desc = "hearth lab model catalog"
                if fetch is None:
                    where = ", ".join(str(d) for d in search) or "no --models-from directory"
                    raise InvalidInputError(
                        f"model {model.name} {model.version}: {file.path} (sha256 "
                        f"{file.sha256}) is not in {where}; pass --models-from DIR"
                    )
            artifacts[path] = Artifact(
                path, "model", source_desc, model.version, file.sha256, file.size, fetch
            )
    return list(artifacts.values())


# ------------------------------------------------------------------------------------ wheels


def _hearth_requirements() -> list[str]:
    try:
        requires = importlib.metadata.requires("hearth") or []
    except importlib.metadata.PackageNotFoundError as e:
        raise EnvironmentProblem("hearth is not installed as a package (pip install -e .)") from e
    return [r for r in requires if "extra ==" not in r]


def wheel_artifacts(requirements: Sequence[str] | None = None, say: Say = _quiet) -> list[Artifact]:
    """Hearth's dependencies as wheels for this control node's Python and platform, resolved by
    pip (``--dry-run --report``: pins and sha256 from the index, nothing downloaded yet)."""
    reqs = list(requirements) if requirements is not None else _hearth_requirements()
    say(f"resolving {len(reqs)} Python requirement(s) with pip")
    with tempfile.TemporaryDirectory(prefix="hearth-pip-") as tmp:
        report = Path(tmp) / "report.json"
        _run(
            [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
             "--only-binary=:all:", "--disable-pip-version-check", "-q", "--report",
             str(report), *reqs]
        )  # fmt: skip
        data = json.loads(report.read_text())
    artifacts = []
    for item in data.get("install", []):
        info = item.get("download_info") or {}
        url = str(info.get("url", ""))
        filename = urllib.parse.unquote(url.rsplit("/", 1)[-1])
        if not filename.endswith(".whl"):
            raise HearthError(f"pip resolved {url}, not a wheel")
        hashes = (info.get("archive_info") or {}).get("hashes") or {}
        meta = item.get("metadata") or {}
        artifacts.append(
            Artifact(
                path=f"wheels/{filename}",
                kind="wheel",
                source=url,
                version=f"{meta.get('name')}=={meta.get('version')}",
                sha256=hashes.get("sha256"),
                size=None,
                fetch=download(url),
            )
        )
    return artifacts


def _tree_fingerprint(root: Path) -> str:
    """A fingerprint of Hearth's source tree from names, sizes and mtimes (nothing is read)."""
    digest = hashlib.sha256()
    for folder in ("src", "roles", "playbooks", "plugins", "templates", "inventories/sample"):
        base = root / folder
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*")):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            info = path.stat()
            digest.update(
                f"{path.relative_to(root)}\0{info.st_size}\0{info.st_mtime_ns}\n".encode()
            )
    for name in ("pyproject.toml", "README.md"):
        if (root / name).is_file():
            info = (root / name).stat()
            digest.update(f"{name}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def hearth_wheel_artifact(say: Say = _quiet) -> Artifact:
    """Hearth itself as a wheel (``pip wheel`` of this checkout; it carries the playbooks,
    roles, plugins and templates as package data)."""
    from hearth import __version__

    root = paths.content_root()
    if not (root / "pyproject.toml").is_file():
        raise EnvironmentProblem(
            f"{root} is not a Hearth checkout (no pyproject.toml): build the bundle from one"
        )
    version = f"{__version__}+tree.{_tree_fingerprint(root)}"

    def build(dest: Path) -> Fetched:
        say("building Hearth's wheel")
        with tempfile.TemporaryDirectory(prefix="hearth-wheel-") as tmp:
            _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                  "--disable-pip-version-check", "-w", tmp, str(root)])  # fmt: skip
            built = sorted(Path(tmp).glob("hearth-*.whl"))
            if not built:
                raise HearthError("pip wheel built no hearth wheel")
            shutil.copyfile(built[0], dest)
        return Fetched(None)

    name = f"wheels/hearth-{__version__}-py3-none-any.whl"
    return Artifact(name, "wheel", str(root), version, None, None, build)


def collections_artifact(say: Say = _quiet) -> Artifact:
    """The pinned ``ansible`` wheel that ``hearth collections install --wheel`` takes."""
    from hearth import vendor

    source = vendor.pins()["source"]

    def fetch(dest: Path) -> Fetched:
        say(f"fetching {source['filename']} (pinned collections)")
        wheel = vendor.fetch_wheel(paths.cache_dir() / "wheels")
        shutil.copyfile(wheel, dest)
        return Fetched(None)

    return Artifact(
        path=f"collections/{source['filename']}",
        kind="collections",
        source=f"pypi:{source['package']}",
        version=str(source["version"]),
        sha256=str(source["sha256"]),
        size=None,
        fetch=fetch,
    )


def file_artifacts(needs: Iterable[FileNeed]) -> list[Artifact]:
    artifacts: dict[str, Artifact] = {}
    for need in needs:
        path = f"files/{need.dest.strip('/')}"
        if need.url:
            if need.sha256 is None:
                raise InvalidInputError(
                    f"role {need.role}: file {need.url} declares no sha256 (pin every download)"
                )
            artifacts[path] = Artifact(path, "file", need.url, need.sha256, need.sha256, None,
                                       download(need.url))  # fmt: skip
        elif need.src is not None:
            if not need.src.is_file():
                raise InvalidInputError(f"role {need.role}: file {need.src} not found")
            info = need.src.stat()
            version = f"size={info.st_size},mtime_ns={info.st_mtime_ns}"
            artifacts[path] = Artifact(path, "file", str(need.src), version, need.sha256,
                                       None, copy_from(need.src))  # fmt: skip
        else:
            raise InvalidInputError(f"role {need.role}: file {need.dest!r} has no url or src")
    return list(artifacts.values())
