"""`hearth models rollout/rollback`: which version, with which files, refused how (no host)."""

from __future__ import annotations

from typing import Any

import pytest

from hearth.commands.models import HostModel, overrides_for, target_version
from hearth.errors import InvalidInputError

FILES = {
    "v1": [{"path": "m.gguf", "sha256": "1" * 64}],
    "v2": [{"path": "m.gguf", "sha256": "2" * 64}],
}


def host(
    name: str, live: str, kept: list[str], events: list[dict[str, Any]] | None = None
) -> HostModel:
    versions = {v: {"files": FILES.get(v, [])} for v in [*kept, live]}
    return HostModel(
        host=name,
        declared={"name": "smollm2", "version": live},
        versions=versions,
        containers=[
            {"name": "hearth-engine-smollm2", "state": "running", "version": live, "slot": ""}
        ],
        events=events or [],
    )


def test_rollback_goes_to_the_version_each_host_served_before() -> None:
    events = [{"event": "promoted", "from_version": "v1", "to_version": "v2"}]
    states = [host("lab1", "v2", ["v1", "v0"], events), host("lab2", "v2", ["v1"], events)]
    assert target_version(states, "smollm2", None) == "v1"
    assert target_version(states, "smollm2", "v1") == "v1"


def test_rollback_without_a_kept_version_names_the_hosts() -> None:
    states = [host("lab1", "v2", []), host("lab2", "v2", ["v1"])]
    with pytest.raises(
        InvalidInputError, match=r"no kept version to roll back to on lab1 \(kept: none\)"
    ):
        target_version(states, "smollm2", None)


def test_a_pruned_version_is_refused_naming_the_host() -> None:
    states = [host("lab1", "v2", ["v1"]), host("lab2", "v2", [])]
    with pytest.raises(InvalidInputError, match=r"version 'v1' is not kept on lab2 \(kept: none\)"):
        target_version(states, "smollm2", "v1")


def test_an_unreadable_host_is_named_and_nothing_changes() -> None:
    broken = host("lab2", "v2", ["v1"])
    broken.error = "connection refused"
    with pytest.raises(InvalidInputError, match="lab2: connection refused; nothing was changed"):
        target_version([host("lab1", "v2", ["v1"]), broken], "smollm2", "v1")


def test_overrides_take_the_kept_versions_files() -> None:
    states = [host("lab1", "v2", ["v1"]), host("lab2", "v2", ["v1"])]
    assert overrides_for(states, "smollm2", "v1") == {
        "smollm2": {"version": "v1", "files": FILES["v1"], "chat_template": None}
    }
    other = host("lab2", "v2", ["v1"])
    other.versions["v1"] = {"files": [{"path": "m.gguf", "sha256": "9" * 64}]}
    with pytest.raises(InvalidInputError, match="keep different files"):
        overrides_for([states[0], other], "smollm2", "v1")


@pytest.mark.parametrize("value", ["0", "150%", "0%", "x", "-1"])
def test_bad_batches_are_refused(value: str) -> None:
    from hearth.cli import _batch

    with pytest.raises(InvalidInputError, match="--batch"):
        _batch(value)


def test_good_batches() -> None:
    from hearth.cli import _batch

    assert (_batch(None), _batch("2"), _batch("50%")) == (1, 2, "50%")
