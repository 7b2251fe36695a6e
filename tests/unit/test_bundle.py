"""Offline bundles without hosts or network: the manifest and its verification (missing, altered,
extra files, a tampered manifest, a wrong key — each named, exit 2), the incremental build
(nothing fetched or hashed twice), the per-role declarations evaluated from an inventory, the
repository index files, the coverage check of `up --bundle`, and that a bad bundle stops
`hearth up` before any host is contacted."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from hearth import bundle, paths
from hearth.bundle import build, declare, manifest, offline, sign, sources
from hearth.bundle.build import Artifact, Fetched
from hearth.bundle.declare import PackageNeed
from hearth.cli import cli
from hearth.errors import EXIT_INVALID, HearthError, InvalidInputError
from hearth.inventory import load_inventory

needs_ssh_keygen = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="no ssh-keygen")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEARTH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HEARTH_HOME", str(tmp_path / "home"))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------- the incremental build
class Source:
    """A fake upstream: counts every fetch, serves fixed bytes per name."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = dict(files)
        self.fetches: list[str] = []

    def artifact(self, name: str, pinned: bool = True, version: str = "1") -> Artifact:
        data = self.files[name]

        def fetch(dest: Path) -> Fetched:
            self.fetches.append(name)
            dest.write_bytes(self.files[name])
            return Fetched(None)

        return Artifact(f"debs/{name}", "deb", f"https://example.invalid/{name}", version,
                        _sha(data) if pinned else None, len(data), fetch)  # fmt: skip


class CountingHasher:
    def __init__(self) -> None:
        self.calls: list[Path] = []

    def __call__(self, path: Path) -> str:
        self.calls.append(path)
        return manifest.hash_file(path)


def _build(out: Path, artifacts: list[Artifact]) -> tuple[list[manifest.Entry], build.BuildStats,
                                                          CountingHasher]:  # fmt: skip
    hasher = CountingHasher()
    entries, stats = build.materialize(out, artifacts, hasher=hasher)
    return entries, stats, hasher


def test_second_build_fetches_nothing_and_hashes_nothing(tmp_path: Path) -> None:
    src = Source({f"p{i}.deb": os.urandom(3000 + i) for i in range(5)} | {"u.whl": b"wheel"})
    index = Artifact.generated("debs/Packages", "repo-index", b"Package: p0\n", "hearth")
    wanted = [src.artifact(n) for n in sorted(src.files) if n != "u.whl"]
    wanted += [src.artifact("u.whl", pinned=False), index]
    out = tmp_path / "bundle"
    entries, stats, hasher = _build(out, wanted)
    assert sorted(src.fetches) == sorted(src.files)
    assert stats.written == ["debs/Packages"]
    # pinned files are hashed while checked after the fetch only when the fetch did not hash:
    assert len(hasher.calls) == len(src.files)
    assert {e.path: e.sha256 for e in entries}["debs/u.whl"] == _sha(b"wheel")

    src.fetches.clear()
    entries2, stats2, hasher2 = _build(out, wanted)
    assert src.fetches == [], "an unchanged artifact was fetched again"
    assert hasher2.calls == [], "an unchanged artifact was hashed again"
    assert stats2.fetched == [] and stats2.hashed == [] and stats2.written == []
    assert len(stats2.reused) == len(wanted)
    assert entries2 == entries


def test_only_what_changed_is_fetched(tmp_path: Path) -> None:
    src = Source({"a.deb": b"a" * 100, "b.deb": b"b" * 100, "c.deb": b"c" * 100})
    out = tmp_path / "bundle"
    _build(out, [src.artifact(n) for n in ("a.deb", "b.deb", "c.deb")])
    src.fetches.clear()
    src.files["b.deb"] = b"B" * 120  # a new version upstream
    wanted = [src.artifact("a.deb"), src.artifact("b.deb", version="2")]  # c.deb no longer needed
    entries, stats, hasher = _build(out, wanted)
    assert src.fetches == ["b.deb"]
    assert stats.removed == ["debs/c.deb"] and not (out / "debs/c.deb").exists()
    assert [p.name for p in hasher.calls] == [".b.deb.partial"]
    assert {e.path for e in entries} == {"debs/a.deb", "debs/b.deb"}


def test_a_file_touched_on_disk_is_hashed_once_and_kept(tmp_path: Path) -> None:
    src = Source({"a.deb": b"a" * 100})
    out = tmp_path / "bundle"
    _build(out, [src.artifact("a.deb")])
    os.utime(out / "debs/a.deb", ns=(1, 1))  # same content, new mtime: the record no longer fits
    src.fetches.clear()
    _, stats, hasher = _build(out, [src.artifact("a.deb")])
    assert src.fetches == [] and len(hasher.calls) == 1 and stats.hashed == ["debs/a.deb"]
    (out / "debs/a.deb").write_bytes(b"x" * 100)  # altered in place: fetched again
    _, stats, _ = _build(out, [src.artifact("a.deb")])
    assert src.fetches == ["a.deb"] and (out / "debs/a.deb").read_bytes() == b"a" * 100


def test_a_fetch_with_the_wrong_sha256_is_refused(tmp_path: Path) -> None:
    src = Source({"a.deb": b"good"})
    artifact = src.artifact("a.deb")
    src.files["a.deb"] = b"evil"  # upstream serves something else than the index pinned
    with pytest.raises(HearthError, match=r"debs/a.deb .*sha256 .* expected the pinned"):
        build.materialize(tmp_path / "bundle", [artifact])
    assert not any((tmp_path / "bundle").rglob("*.deb*")), "the bad download was left behind"


def test_out_dir_must_be_a_bundle_and_never_hold_the_key(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.tex").write_text("precious")
    key = tmp_path / "keys" / "k"
    with pytest.raises(InvalidInputError, match="not empty and is not a Hearth bundle"):
        build.prepare_out_dir(tmp_path / "docs", key)
    with pytest.raises(InvalidInputError, match="never travel with the bundle"):
        build.prepare_out_dir(tmp_path / "keys", key)


# ----------------------------------------------------------------------- manifest and signature
@pytest.fixture
def keys(tmp_path: Path) -> sign.KeyPair:
    if shutil.which("ssh-keygen") is None:
        pytest.skip("no ssh-keygen")
    return sign.keygen(tmp_path / "keys")


def _make_bundle(root: Path, key: Path) -> Path:
    files = {"repo/debian-12/a.deb": os.urandom(5000), "models/m/1/w.gguf": os.urandom(70000),
             "wheels/x.whl": b"wheel"}  # fmt: skip
    entries = []
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
        entries.append(manifest.Entry(path, len(data), _sha(data), "file", "test", "1"))
    build.write_manifest(root, entries, {"created": "now"}, key)
    return root


class _Exit:
    def __init__(self, code: int, output: str) -> None:
        self.exit_code, self.output = code, output


def _verify_cli(bundle_dir: Path, signers: Path) -> _Exit:
    """The real entry point (exit codes come from its one error handler)."""
    import contextlib
    import io

    from hearth.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(["bundle", "verify", str(bundle_dir), "--signers", str(signers)])
        except SystemExit as done:
            return _Exit(int(done.code or 0), out.getvalue() + err.getvalue())
    return _Exit(0, out.getvalue() + err.getvalue())


@needs_ssh_keygen
def test_verify_passes_and_names_the_signer(tmp_path: Path, keys: sign.KeyPair) -> None:
    root = _make_bundle(tmp_path / "b", keys.private)
    result = bundle.verify_bundle(root, keys.allowed_signers)
    assert result.ok and result.principal == "hearth-bundle" and result.findings == []
    cli_result = _verify_cli(root, keys.allowed_signers)
    assert cli_result.exit_code == 0, cli_result.output
    assert "signed by hearth-bundle; 3 files" in " ".join(cli_result.output.split())
    assert not list(root.rglob("*bundle_signing_key*")), "the private key is in the bundle"


@needs_ssh_keygen
@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("tamper", "altered: models/m/1/w.gguf (sha256 "),
        ("truncate", "altered: models/m/1/w.gguf (size 69999, expected 70000)"),
        ("delete", "missing: wheels/x.whl (expected 5 bytes)"),
        ("extra", "extra: repo/debian-12/evil.deb (not in the manifest)"),
        ("symlink", "altered: wheels/x.whl (a symbolic link, expected a regular file)"),
    ],
)
def test_verify_names_each_bad_file(
    tmp_path: Path, keys: sign.KeyPair, damage: str, expected: str
) -> None:
    root = _make_bundle(tmp_path / "b", keys.private)
    weights = root / "models/m/1/w.gguf"
    if damage == "tamper":
        data = bytearray(weights.read_bytes())
        data[1234] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:-1])
    elif damage == "delete":
        (root / "wheels/x.whl").unlink()
    elif damage == "extra":
        (root / "repo/debian-12/evil.deb").write_bytes(b"backdoor")
    elif damage == "symlink":
        (root / "wheels/x.whl").unlink()
        (root / "wheels/x.whl").symlink_to("/etc/passwd")
    result = bundle.verify_bundle(root, keys.allowed_signers)
    assert len(result.findings) == 1 and str(result.findings[0]).startswith(expected), (
        result.findings
    )
    cli_result = _verify_cli(root, keys.allowed_signers)
    assert cli_result.exit_code == EXIT_INVALID
    assert expected in " ".join(cli_result.output.split()), cli_result.output
    with pytest.raises(bundle.BundleInvalid) as caught:
        result.raise_for_findings()
    assert caught.value.exit_code == EXIT_INVALID and expected in caught.value.message
    assert "Nothing was changed on any host" in caught.value.message


@needs_ssh_keygen
def test_every_finding_is_reported_at_once(tmp_path: Path, keys: sign.KeyPair) -> None:
    root = _make_bundle(tmp_path / "b", keys.private)
    (root / "wheels/x.whl").unlink()
    (root / "stray.txt").write_text("?")
    (root / "repo/debian-12/a.deb").write_bytes(b"short")
    kinds = [f.kind for f in bundle.verify_bundle(root, keys.allowed_signers).findings]
    assert sorted(kinds) == ["altered", "extra", "missing"]


@needs_ssh_keygen
def test_a_tampered_manifest_is_refused(tmp_path: Path, keys: sign.KeyPair) -> None:
    root = _make_bundle(tmp_path / "b", keys.private)
    # the attacker swaps a file and rewrites its sha256 in the manifest: the signature breaks
    (root / "wheels/x.whl").write_bytes(b"WHEEL")
    doc = json.loads((root / "manifest.json").read_text())
    for item in doc["files"]:
        if item["path"] == "wheels/x.whl":
            item["sha256"] = _sha(b"WHEEL")
    (root / "manifest.json").write_text(json.dumps(doc, sort_keys=True, indent=1) + "\n")
    with pytest.raises(bundle.BundleInvalid, match="manifest was altered after it was signed"):
        bundle.verify_bundle(root, keys.allowed_signers)
    assert _verify_cli(root, keys.allowed_signers).exit_code == EXIT_INVALID


@needs_ssh_keygen
def test_a_bundle_signed_by_another_key_is_refused(tmp_path: Path, keys: sign.KeyPair) -> None:
    other = sign.keygen(tmp_path / "other", principal="mallory")
    root = _make_bundle(tmp_path / "b", other.private)
    with pytest.raises(bundle.BundleInvalid, match="signed by a key that is not in"):
        bundle.verify_bundle(root, keys.allowed_signers)
    (root / "manifest.json.sig").unlink()
    with pytest.raises(bundle.BundleInvalid, match=r"manifest\.json\.sig: missing"):
        bundle.verify_bundle(root, keys.allowed_signers)
    result = _verify_cli(root, keys.allowed_signers)
    assert result.exit_code == EXIT_INVALID


@needs_ssh_keygen
def test_keygen_never_overwrites_a_key(keys: sign.KeyPair) -> None:
    assert keys.private.stat().st_mode & 0o077 == 0
    expected = f'hearth-bundle namespaces="{sign.NAMESPACE},{sign.AUDIT_NAMESPACE}" ssh-ed25519 '
    assert keys.allowed_signers.read_text().startswith(expected)
    with pytest.raises(InvalidInputError, match="exists"):
        sign.keygen(keys.private.parent)


def test_manifest_is_canonical_and_refuses_unsafe_paths() -> None:
    one = manifest.Manifest(meta={"b": 1, "a": [2]})
    one.add(manifest.Entry("z/b", 1, "0" * 64, "deb", "s", "v"))
    one.add(manifest.Entry("a/c", 2, "1" * 64, "model", "s", "v"))
    again = manifest.Manifest.from_bytes(one.to_bytes())
    assert again.to_bytes() == one.to_bytes() and list(again.entries) == ["a/c", "z/b"]
    for bad in ("../etc/passwd", "/etc/passwd", "a/../../b", "manifest.json", "a//b"):
        with pytest.raises(InvalidInputError):
            manifest.Entry(bad, 1, "0" * 64, "deb", "s", "v")
    with pytest.raises(manifest.BundleInvalid, match="expected format"):
        manifest.Manifest.from_bytes(b'{"format": "other"}')


# ----------------------------------------------------------------------------- the declarations
def _inventory(tmp_path: Path, group_vars: dict[str, Any]) -> Path:
    inv = tmp_path / "inv"
    (inv / "group_vars" / "all").mkdir(parents=True)
    hosts = {"all": {"children": {
        "lab": {"hosts": {"h1": {"ansible_host": "10.0.0.1"}, "h2": {"ansible_host": "10.0.0.2"}}},
        "gpu_nodes": {"hosts": {"h1": {}}},
    }}}  # fmt: skip
    (inv / "hosts.yml").write_text(yaml.safe_dump(hosts))
    (inv / "group_vars" / "all" / "site.yml").write_text(yaml.safe_dump(group_vars))
    return inv / "hosts.yml"


def _specs(plan: declare.Plan, host: str) -> set[str]:
    return {p.spec for p in plan.hosts[host].packages}


def test_packages_come_from_the_roles_each_host_gets(tmp_path: Path) -> None:
    inventory = load_inventory(_inventory(tmp_path, {
        "common_extra_packages": ["tree"], "offline_repo_extra_packages": ["htop"],
        "container_runtime_toolkit_source": "distribution",
    }))  # fmt: skip
    plan = declare.plan_for_inventory(inventory)
    base = {"curl", "jq", "rsync", "lsof", "gnupg", "pciutils", "acl", "tree", "htop",
            "ca-certificates", "python3-apt", "chrony"}  # fmt: skip
    assert base <= _specs(plan, "h2")
    assert "docker.io=20.10.24*" not in _specs(plan, "h2")
    assert base | {"docker.io=20.10.24*"} <= _specs(plan, "h1")
    toolkit = [p for p in plan.hosts["h1"].packages if p.name == "nvidia-container-toolkit"]
    assert toolkit and all(p.optional for p in toolkit)
    assert plan.hosts["h1"].target.name == "debian-12"
    roles = {p.role for p in plan.hosts["h1"].packages}
    assert {"common", "container_runtime", "offline_repo"} <= roles


def test_extra_images_bring_what_loading_them_needs(tmp_path: Path) -> None:
    inventory = load_inventory(_inventory(tmp_path, {"offline_repo_extra_images": ["site/x:1"]}))
    plan = declare.plan_for_inventory(inventory)
    assert [(i.ref, i.role) for i in plan.hosts["h2"].images] == [("site/x:1", "offline_repo")]
    assert "python3-requests" in _specs(plan, "h2")


def test_declarations_follow_the_variables(tmp_path: Path) -> None:
    inventory = load_inventory(_inventory(tmp_path, {"common_time_sync_enabled": False}))
    plan = declare.plan_for_inventory(inventory)
    assert "chrony" not in _specs(plan, "h2")


def test_a_role_declaration_wins_and_is_checked(tmp_path: Path) -> None:
    roles = tmp_path / "roles"
    shutil.copytree(paths.roles_dir() / "common", roles / "common")
    shutil.copytree(paths.roles_dir() / "offline_repo", roles / "offline_repo")
    (roles / "common" / "meta" / "bundle.yml").write_text(
        "packages:\n  - names: \"{{ ['only-this'] }}\"\nimages:\n  - ref: site/tool:1\n"
        "    optional: true\n"
    )
    playbook = tmp_path / "site.yml"
    playbook.write_text("- hosts: all\n  roles: [common]\n")
    inventory = load_inventory(_inventory(tmp_path, {}), roles_dir=roles)
    plan = declare.plan_for_inventory(inventory, playbook)
    assert {p.spec for p in plan.hosts["h1"].packages if p.role == "common"} == {"only-this"}
    assert [i.ref for i in plan.hosts["h1"].images] == ["site/tool:1"]
    # offline_repo adds what loading images needs
    assert "python3-requests" in _specs(plan, "h1")
    (roles / "common" / "meta" / "bundle.yml").write_text("pakages: []\n")
    with pytest.raises(InvalidInputError, match="unknown keys \\['pakages'\\]"):
        declare.plan_for_inventory(inventory, playbook)


def test_shipped_declarations_are_valid_templates() -> None:
    shipped = Path(declare.__file__).parent / "declarations"
    for file in sorted(shipped.glob("*.yml")):
        data = yaml.safe_load(file.read_text())
        assert set(data) <= {"packages", "images", "models", "files"}, file
        assert (paths.roles_dir() / file.stem).is_dir(), f"{file.name}: no role {file.stem}"


# ----------------------------------------------------------------------- repository and coverage
def test_package_choice_pins_globs_and_skips_optional() -> None:
    needs = [PackageNeed("docker.io=20.10.24*", "cr"), PackageNeed("curl", "common"),
             PackageNeed("nvidia-container-toolkit=1.17.8-*", "cr", optional=True),
             PackageNeed("libcuda1=535.309.01-*", "drv")]  # fmt: skip
    offered = {"docker.io": ["20.10.24+dfsg1-1+deb12u1+b6", "20.10.5+dfsg1-1"],
               "curl": ["7.88.1-10"], "nvidia-container-toolkit": [],
               "libcuda1": ["535.261.03-1"]}  # fmt: skip
    chosen, unavailable, errors = sources._choose(needs, offered, ["lab1"])
    assert chosen == {"docker.io=20.10.24*": "docker.io=20.10.24+dfsg1-1+deb12u1+b6",
                      "curl": "curl"}  # fmt: skip
    assert list(unavailable) == ["nvidia-container-toolkit=1.17.8-*"]
    assert errors == ["libcuda1=535.309.01-* (role drv, hosts lab1): no version matches "
                      "535.309.01-*; the target's sources offer 535.261.03-1"]  # fmt: skip


def test_index_records_point_into_the_flat_repository() -> None:
    shown = ("Package: jq\nVersion: 1.6-2.1\nDescription-en: JSON processor\n jq is like sed\n"
             "Filename: pool/main/j/jq/jq_1.6-2.1_amd64.deb\nSize: 64432\nSHA256: AB\n\n"
             "Package: libjq1\nVersion: 1.6-2.1\nFilename: pool/main/j/jq/libjq1_1.6-2.1_amd64.deb"
             "\nSize: 10\nSHA256: cd\n")  # fmt: skip
    records = list(sources._stanzas(shown))
    assert [r["Package"] for r in records] == ["jq", "libjq1"]
    text = sources._stanza_text(records[0], "jq_1.6-2.1_amd64.deb")
    assert "Filename: ./jq_1.6-2.1_amd64.deb\n" in text
    assert "Description: JSON processor\n jq is like sed\n" in text


def test_release_lists_the_index_hashes_and_stays_put_when_unchanged() -> None:
    target = declare.TARGETS["debian-12"]
    index = b"Package: jq\n"
    release = sources.release_file(target, index, None)
    assert f" {_sha(index)} {len(index)} Packages".encode() in release
    assert b"Codename: bookworm" in release
    assert sources.release_file(target, index, release) == release
    assert sources.release_file(target, index + b"\n", release) != release


def _manifest_for(packages: dict[str, str], models: list[dict[str, Any]] | None = None
                  ) -> manifest.Manifest:  # fmt: skip
    return manifest.Manifest(meta={
        "targets": {"debian-12": {"repo": "repo/debian-12", "release_sha256": "0" * 64,
                                  "packages": packages, "preinstalled": {"python3-apt": "2.6"},
                                  "chosen": {}}},
        "images": [], "models": models or [],
    })  # fmt: skip


def test_coverage_names_what_the_inventory_needs_and_the_bundle_lacks(tmp_path: Path) -> None:
    inventory = load_inventory(_inventory(tmp_path, {
        "container_runtime_toolkit_source": "distribution",
    }))  # fmt: skip
    plan = declare.plan_for_inventory(inventory)
    full = {p.name: (p.version_glob or "1").replace("*", "0")
            for h in plan.hosts.values() for p in h.packages}  # fmt: skip
    assert offline.check_coverage(_manifest_for(full), plan) == []
    lacking = dict(full)
    del lacking["jq"]
    lacking["docker.io"] = "24.0.5"
    lacking["nvidia-container-toolkit"] = "0.1"  # optional: never a problem
    problems = offline.check_coverage(_manifest_for(lacking), plan)
    assert sorted(problems) == [
        "h1: package docker.io 24.0.5 in the bundle does not match 20.10.24* "
        "(role container_runtime)",
        "h1: package jq (role common) is missing",
        "h2: package jq (role common) is missing",
    ]


def test_coverage_refuses_models_fetched_from_outside() -> None:
    from hearth.models import parse_models

    declared = [{"name": "m", "version": "1", "engine": "llamacpp", "format": "gguf",
                 "source": {"type": "url", "url": "https://example.invalid/m"},
                 "files": [{"path": "m.gguf", "sha256": "a" * 64}],
                 "max_model_len": 512, "max_num_seqs": 1},
                {"name": "n", "version": "2", "engine": "llamacpp", "format": "gguf",
                 "source": {"type": "bundle", "path": "models/n/2"},
                 "files": [{"path": "n.gguf", "sha256": "b" * 64}],
                 "max_model_len": 512, "max_num_seqs": 1}]  # fmt: skip
    host = declare.HostNeeds("h1", declare.TARGETS["debian-12"], ["model_store"],
                             models=parse_models(declared))  # fmt: skip
    problems = offline.check_coverage(_manifest_for({}), declare.Plan(hosts={"h1": host}))
    assert problems == [
        "h1: model m 1 is fetched from url — without a route out, declare it as source: "
        "{type: bundle, path: models/m/1}",
        f"h1: model n 2: n.gguf (sha256 {'b' * 64}) is not in the bundle",
    ]
    doc = _manifest_for({})
    doc.add(manifest.Entry("models/n/2/n.gguf", 5, "b" * 64, "model", "lab", "2"))
    assert len(offline.check_coverage(doc, declare.Plan(hosts={"h1": host}))) == 1


def test_extravars_hand_roles_the_bundle_paths(tmp_path: Path) -> None:
    doc = _manifest_for({})
    doc.meta["images"] = [
        {
            "ref": "grafana/grafana:11",
            "tag": "grafana/grafana:11",
            "id": "sha256:" + "e" * 64,
            "file": "images/g.tar",
            "recipe": None,
        }
    ]
    doc.add(manifest.Entry("images/g.tar", 10, "f" * 64, "image", "docker", "x"))
    doc.add(manifest.Entry("repo/debian-12/Release", 3, "0" * 64, "repo-index", "h", "x"))
    (tmp_path / "b" / "repo" / "debian-12").mkdir(parents=True)
    (tmp_path / "b" / "repo" / "debian-12" / "Release").write_text("abc")
    need = declare.ImageNeed("grafana/grafana:11", "grafana", None, False,
                             "grafana_image_archive", "grafana_image_archive_sha256")  # fmt: skip
    host = declare.HostNeeds("h1", declare.TARGETS["debian-12"], ["grafana"], images=[need])
    plan = declare.Plan(hosts={"h1": host})
    found = offline.extravars(tmp_path / "b", doc, plan)
    assert found["grafana_image_archive"] == str((tmp_path / "b/images/g.tar").resolve())
    assert found["grafana_image_archive_sha256"] == "f" * 64
    assert found["hearth_bundle_host_images"] == {"h1": []}
    archive = Path(found["hearth_bundle"]["targets"]["debian-12"]["archive"])
    import tarfile

    with tarfile.open(archive) as tar:
        assert tar.getnames() == ["0000000000000000", "0000000000000000/Release"]


# ------------------------------------------------------------------------------------ hearth up
@needs_ssh_keygen
def test_up_with_a_tampered_bundle_stops_before_any_host(
    tmp_path: Path, keys: sign.KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hearth import runner

    def never(*_: Any, **__: Any) -> None:
        raise AssertionError("a playbook ran although the bundle was refused")

    monkeypatch.setattr(runner, "run_playbook", never)
    root = _make_bundle(tmp_path / "b", keys.private)
    (root / "wheels/x.whl").write_bytes(b"WHEEL")
    inventory = _inventory(tmp_path, {})
    result = CliRunner().invoke(cli, ["up", "-i", str(inventory), "--bundle", str(root),
                                      "--bundle-signers", str(keys.allowed_signers)])  # fmt: skip
    assert isinstance(result.exception, bundle.BundleInvalid), result.output
    assert "altered: wheels/x.whl (size 5" not in result.exception.message
    assert "altered: wheels/x.whl (sha256 " in result.exception.message
    assert not (paths.hearth_home() / "runs").exists(), "a run was started"


def test_hearth_package_declares_no_network_tool_for_verify() -> None:
    # verify needs nothing but Python and ssh-keygen: no gpg, no network client
    text = Path(manifest.__file__).read_text() + Path(offline.__file__).read_text()
    assert "urllib" not in text and "gpg" not in text


def test_cli_lists_bundle_commands() -> None:
    result = CliRunner().invoke(cli, ["bundle", "--help"])
    for command in ("build", "verify", "keygen"):
        assert f"  {command}" in result.output


# ---------------------------------------------------------------------------- models and files
def _model(source: dict[str, Any], data: bytes, name: str = "m") -> Any:
    from hearth.models import parse_models

    return parse_models([{
        "name": name, "version": "1", "engine": "llamacpp", "format": "gguf", "source": source,
        "files": [{"path": "w.gguf", "sha256": _sha(data), "size": len(data)}],
        "max_model_len": 512, "max_num_seqs": 1,
    }])[0]  # fmt: skip


def test_model_files_are_placed_where_the_store_reads_them(tmp_path: Path) -> None:
    data = os.urandom(4096)
    local = tmp_path / "weights"
    local.mkdir()
    (local / "w.gguf").write_bytes(data)
    from_path = _model({"type": "path", "path": str(local)}, data, "p")
    from_bundle = _model({"type": "bundle", "path": "models/b/1"}, data, "b")
    artifacts = sources.model_artifacts([from_path, from_bundle], search=[local])
    entries, _ = build.materialize(tmp_path / "bundle", artifacts)
    assert [(e.path, e.kind, e.sha256) for e in entries] == [
        ("models/b/1/w.gguf", "model", _sha(data)),
        ("models/p/1/w.gguf", "model", _sha(data)),
    ]
    (local / "w.gguf").write_bytes(b"not the declared weights")
    with pytest.raises(HearthError, match="expected the pinned"):
        build.materialize(tmp_path / "other", sources.model_artifacts([from_path]))
    lost = _model({"type": "bundle", "path": "models/x/1"}, b"nowhere", "x")
    with pytest.raises(InvalidInputError, match=r"model x 1: w\.gguf .* pass --models-from"):
        sources.model_artifacts([lost], search=[tmp_path / "empty"])


def test_declared_files_are_pinned(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="declares no sha256"):
        sources.file_artifacts([declare.FileNeed("d/x.json", "grafana", url="https://e.invalid/x")])
    src = tmp_path / "dash.json"
    src.write_text("{}")
    [artifact] = sources.file_artifacts([declare.FileNeed("dashboards/d.json", "grafana", src=src)])
    assert artifact.path == "files/dashboards/d.json" and "mtime_ns=" in artifact.version


def test_a_dnf_target_takes_the_roles_redhat_vars_and_is_not_built_yet(tmp_path: Path) -> None:
    inventory = load_inventory(_inventory(tmp_path, {"offline_repo_target": "rocky-9"}))
    plan = declare.plan_for_inventory(inventory)
    assert plan.hosts["h2"].target.pkg_mgr == "dnf"
    assert "python3-dnf" in _specs(plan, "h2") and "python3-apt" not in _specs(plan, "h2")
    with pytest.raises(
        InvalidInputError, match="rocky-9: building its repository is not supported"
    ):
        sources.resolve_apt(plan.hosts["h2"].target, [])


class _Flaky:
    """A real local HTTP server that answers 503 for the first ``fail`` requests, then 200."""

    def __init__(self, body: bytes, fail: int, status: int = 503, cut: bool = False) -> None:
        import http.server
        import threading

        outer = self
        self.body, self.fail, self.status, self.seen = body, fail, status, 0
        self.cut = cut  # a failing answer is a 200 cut off mid-file instead of an error status

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.seen += 1
                if outer.seen <= outer.fail and outer.cut:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(outer.body)))
                    self.end_headers()
                    self.wfile.write(outer.body[: len(outer.body) // 2])
                    self.close_connection = True
                    return
                if outer.seen <= outer.fail:
                    self.send_error(outer.status)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/pool/x.deb"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_transient_download_failure_is_tried_again(tmp_path: Path) -> None:
    """CI lost name resolution for one .deb once and the whole bundle build failed: a 5xx, a
    reset or a lookup failure is tried again after a pause; the file is written from its start."""
    body = b"deb contents" * 1000
    server = _Flaky(body, fail=2)
    pauses: list[float] = []
    try:
        dest = tmp_path / "x.deb"
        dest.write_bytes(b"left over from an earlier attempt" * 10000)
        got = sources.download(server.url, len(body), waits=[0.5, 1.0, 2.0], sleep=pauses.append)(
            dest
        )
    finally:
        server.close()
    assert server.seen == 3
    assert pauses == [0.5, 1.0]
    assert dest.read_bytes() == body
    assert got.sha256 == hashlib.sha256(body).hexdigest()


def test_a_download_that_keeps_failing_names_the_url_and_the_attempts(tmp_path: Path) -> None:
    server = _Flaky(b"x", fail=10)
    pauses: list[float] = []
    try:
        with pytest.raises(HearthError, match=r"could not download .*x\.deb \(after 3 attempts\)"):
            sources.download(server.url, waits=[0.1, 0.2], sleep=pauses.append)(tmp_path / "x")
    finally:
        server.close()
    assert server.seen == 3 and pauses == [0.1, 0.2]


def test_a_missing_file_is_not_tried_again(tmp_path: Path) -> None:
    server = _Flaky(b"x", fail=10, status=404)
    pauses: list[float] = []
    try:
        with pytest.raises(HearthError, match=r"could not download .*: HTTP Error 404"):
            sources.download(server.url, waits=[0.1, 0.2], sleep=pauses.append)(tmp_path / "x")
    finally:
        server.close()
    assert server.seen == 1 and pauses == []


def test_a_name_that_does_not_resolve_is_tried_again(tmp_path: Path) -> None:
    pauses: list[float] = []
    with pytest.raises(HearthError, match=r"\(after 2 attempts\)"):
        sources.download("http://deb.hearth.invalid/x.deb", waits=[0.1], sleep=pauses.append)(
            tmp_path / "x"
        )
    assert pauses == [0.1]


def test_a_file_url_that_names_no_file_is_not_tried_again(tmp_path: Path) -> None:
    pauses: list[float] = []
    with pytest.raises(HearthError, match=r"could not download file:.*nothing\.deb: "):
        sources.download(f"file://{tmp_path}/nothing.deb", waits=[0.1], sleep=pauses.append)(
            tmp_path / "x"
        )
    assert pauses == []


def test_a_connection_cut_mid_file_is_tried_again(tmp_path: Path) -> None:
    body = b"half of it" * 5000
    server = _Flaky(body, fail=1, cut=True)
    pauses: list[float] = []
    try:
        got = sources.download(server.url, len(body), waits=[0.2], sleep=pauses.append)(
            tmp_path / "x.deb"
        )
    finally:
        server.close()
    assert server.seen == 2 and pauses == [0.2]
    assert (tmp_path / "x.deb").read_bytes() == body
    assert got.sha256 == hashlib.sha256(body).hexdigest()
