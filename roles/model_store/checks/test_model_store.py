"""testinfra checks of the `model_store` role, run by `hearth audit` on every host that has it.

``hearth_vars`` is the host's declared state (inventory over role defaults). For every declared
model: ``current`` points at the declared version, every file's sha256 on the host is the declared
one, the changelog's last record for the model is this version with these fingerprints, and no
more versions are kept than declared.
"""

from __future__ import annotations

import json
from typing import Any

from hearth.checklib import models_or_skip


def test_current_points_at_declared_version(host: Any, hearth_vars: dict[str, Any]) -> None:
    """Each model's current link points at the declared version's directory."""
    store = hearth_vars["model_store_dir"]
    wrong = {}
    for model in models_or_skip(hearth_vars):
        link = host.file(f"{store}/{model.name}/current")
        found = link.linked_to if link.is_symlink else ("a directory" if link.exists else "nothing")
        expected = f"{store}/{model.name}/{model.version}"
        if found != expected:
            wrong[model.name] = f"expected current -> {model.version}, found {found}"
    assert not wrong, f"current pointers: {wrong}"


def test_files_match_their_sha256(host: Any, hearth_vars: dict[str, Any]) -> None:
    """Every file of each declared model version has the declared sha256, read on the host now."""
    store = hearth_vars["model_store_dir"]
    bad = []
    for model in models_or_skip(hearth_vars):
        for item in model.files:
            path = f"{store}/{model.name}/{model.version}/{item.path}"
            file = host.file(path)
            if not file.is_file:
                bad.append(f"{path}: expected a file with sha256 {item.sha256}, found nothing")
                continue
            found = file.sha256sum
            if found != item.sha256:
                bad.append(f"{path}: expected sha256 {item.sha256}, found {found}")
    assert not bad, "; ".join(bad)


def test_files_are_not_world_readable(host: Any, hearth_vars: dict[str, Any]) -> None:
    """No model file can be read by users outside the store's group."""
    store = hearth_vars["model_store_dir"]
    owner, group = hearth_vars["model_store_owner"], hearth_vars["model_store_group"]
    bad = []
    for model in models_or_skip(hearth_vars):
        for item in model.files:
            file = host.file(f"{store}/{model.name}/{model.version}/{item.path}")
            found = (file.user, file.group, file.mode & 0o007)
            if found != (owner, group, 0):
                bad.append(f"{file.path}: expected {owner}:{group} and no access for others, "
                           f"found {file.user}:{file.group} mode {oct(file.mode)}")  # fmt: skip
    assert not bad, "; ".join(bad)


def test_changelog_records_the_current_version(host: Any, hearth_vars: dict[str, Any]) -> None:
    """The model changelog's last record for each model names the declared version and describes
    the declared weights, engine arguments and chat template."""
    from hearth.models import fingerprints, last_record

    changelog = host.file(hearth_vars["model_store_changelog"])
    assert changelog.is_file, f"{changelog.path}: expected the changelog, found nothing"
    lines = changelog.content_string.splitlines()
    for line in lines:
        json.loads(line)  # every line is one JSON record
    for model in models_or_skip(hearth_vars):
        record = last_record(lines, model.name)
        assert record is not None, (
            f"{changelog.path}: expected a record for {model.name}, found none"
        )
        assert record["to_version"] == model.version, (
            f"{changelog.path}: last record of {model.name}: expected to_version {model.version}, "
            f"found {record['to_version']}"
        )
        assert record["fingerprints"] == fingerprints(model), (
            f"{changelog.path}: last record of {model.name} does not describe the declared "
            f"weights/engine arguments/chat template: found {record['fingerprints']}"
        )
        for key in ("time", "operator", "from_version", "changes"):
            assert key in record, f"{changelog.path}: record of {model.name} lacks {key}"


def test_versions_kept(host: Any, hearth_vars: dict[str, Any]) -> None:
    """Each model keeps the declared version and at most model_store_keep_versions older ones on
    disk."""
    store = hearth_vars["model_store_dir"]
    keep = int(hearth_vars["model_store_keep_versions"])
    for model in models_or_skip(hearth_vars):
        listing = host.check_output(
            "find %s -mindepth 1 -maxdepth 1 -type d", f"{store}/{model.name}"
        )
        versions = sorted(p.rsplit("/", 1)[-1] for p in listing.splitlines() if p)
        assert model.version in versions, (
            f"{model.name}: expected version {model.version}, found {versions}"
        )
        assert len(versions) <= keep + 1, (
            f"{model.name}: expected at most {keep + 1} versions (current + {keep}), "
            f"found {versions}"
        )
