"""testinfra checks of the `offline_repo` role, on hosts provisioned with `hearth up --bundle`.

The bundle's repository must be the host's only package source, its Release file in place, and the
original sources kept for restoring.
"""

from __future__ import annotations

from typing import Any


def _apt(host: Any) -> bool:
    return bool(host.system_info.distribution in ("debian", "ubuntu"))


def test_only_the_bundle_is_a_package_source(host: Any, hearth_vars: dict[str, Any]) -> None:
    """The package manager's only sources are the bundle's local repository."""
    if not _apt(host):
        listing = host.check_output("dnf repolist --enabled -q")
        others = [line for line in listing.splitlines()[1:] if not line.startswith("hearth-bundle")]
        assert not others, f"dnf repositories: expected only hearth-bundle, found {others}"
        return
    uris = host.check_output("apt-get indextargets --format '$(URI)'").split()
    remote = sorted({u for u in uris if not u.startswith("file:")})
    assert uris, "apt indexes: expected the bundle's index, found none (apt-get update never ran)"
    assert not remote, f"apt indexes: expected only file: URIs of the bundle, found {remote}"
    root = hearth_vars["offline_repo_dir"]
    assert all(u.startswith(f"file:{root}/repo/") for u in uris), (
        f"apt indexes: expected them under {root}/repo, found {sorted(set(uris))}"
    )


def test_repository_and_backup_in_place(host: Any, hearth_vars: dict[str, Any]) -> None:
    """The bundle's repository is in place and the original package sources are kept aside."""
    root = hearth_vars["offline_repo_dir"]
    releases = host.check_output("find %s/repo -mindepth 2 -maxdepth 2 -name Release", root)
    assert len(releases.split()) == 1, (
        f"{root}/repo: expected exactly one bundle repository, found {releases.split()}"
    )
    backup = "/etc/apt/hearth-sources-backup" if _apt(host) else "/etc/yum.repos.d.hearth-backup"
    assert host.file(backup).is_directory, f"{backup}: expected the original sources, found none"
