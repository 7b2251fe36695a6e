"""Canary shares from the inventory and the hosts' state: `canary_share` / `canary_soak` checked
where every model declaration is (exit 2 naming the model and key), and what `hearth models
promote|abort` read before changing anything (no canary, differing canaries, a soak not over)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from hearth import models, rules
from hearth.commands.models import HostModel, canary_of, canary_plan
from hearth.errors import InvalidInputError


def _declared(**extra: Any) -> dict[str, Any]:
    return {
        "name": "smollm2", "version": "v2", "engine": "llamacpp", "format": "gguf",
        "source": {"type": "url", "url": "https://models.example/smollm2"},
        "files": [{"path": "m.gguf", "sha256": "2" * 64, "size": 100_000_000}],
        "architecture": {"params_b": 0.135, "num_layers": 30, "num_attention_heads": 9,
                         "num_kv_heads": 3, "head_dim": 64, "context_length": 8192},
        "max_model_len": 2048, "max_num_seqs": 2, "gpus": [],
        **extra,
    }  # fmt: skip


def test_a_share_and_a_soak_are_read() -> None:
    (spec,) = models.parse_models([_declared(canary_share=10, canary_soak="30m")])
    assert (spec.canary_share, spec.canary_soak) == (10, "30m")
    assert models.soak_seconds(spec.canary_soak) == 1800
    (plain,) = models.parse_models([_declared()])
    assert (plain.canary_share, plain.canary_soak) == (None, "1h")


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"canary_share": 0}, "canary_share: expected an integer percentage from 1 to 99"),
        ({"canary_share": 100}, "got 100"),
        ({"canary_share": "10"}, "got '10'"),
        ({"canary_share": True}, "got True"),
        ({"canary_share": 12.5}, "got 12.5"),
        ({"canary_share": 10, "canary_soak": "an hour"}, "canary_soak: expected a duration"),
        ({"canary_share": 10, "canary_soak": "0m"}, "canary_soak"),
        ({"canary_soak": "30m"}, "canary_soak: set, but no canary_share"),
    ],
)
def test_a_bad_share_or_soak_names_the_model_and_key(extra: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        models.parse_models([_declared(**extra)])
    assert "model 'smollm2' (hearth_models[0])" in str(caught.value)
    assert words in str(caught.value)


def _view(strategy: str, **extra: Any) -> rules.HostView:
    variables = {
        "hearth_models": [_declared(**extra)],
        "inference_engine_rollout_strategy": strategy,
    }
    return rules.HostView("lab1", variables, frozenset({"inference_engine"}))


def test_the_rule_refuses_a_share_that_would_roll_out_drain_first() -> None:
    (found,) = list(rules.canary_rollout(_view("drain", canary_share=10)))
    assert found.key == "hearth_models[0].canary_share" and found.value == 10
    assert "drain-first (inference_engine_rollout_strategy is drain)" in found.expected
    assert list(rules.canary_rollout(_view("auto", canary_share=10))) == []  # on the CPU: beside
    assert list(rules.canary_rollout(_view("drain"))) == []  # no share: drain-first is fine


def test_the_rule_asks_the_planner_when_the_strategy_is_auto() -> None:
    """Two copies of a model that takes most of the declared GPU do not fit: drain-first."""
    arch = {**_declared()["architecture"], "params_b": 8.0, "num_layers": 32,
            "num_attention_heads": 32, "num_kv_heads": 8, "head_dim": 128}  # fmt: skip
    big = {"gpus": [0], "gpu_memory_share": 0.9, "max_model_len": 8192, "max_num_seqs": 8,
           "architecture": arch}  # fmt: skip
    variables = {
        "hearth_models": [_declared(canary_share=10, **big)],
        "hearth_declared_gpus": [{"index": 0, "name": "NVIDIA L4", "memory_mib": 23034}],
        "inference_engine_rollout_strategy": "auto",
    }
    view = rules.HostView("gpu01", variables, frozenset({"inference_engine"}))
    (found,) = list(rules.canary_rollout(view))
    assert "drain-first" in found.expected and "does not fit beside" in found.expected


# -------------------------------------------------------------------- the hosts' state
def _host(name: str, events: list[dict[str, Any]], candidate: str | None = "v2") -> HostModel:
    containers = [{"name": "hearth-engine-smollm2", "state": "running", "version": "v1"}]
    if candidate:
        containers.append(
            {"name": "hearth-engine-smollm2--next", "state": "running", "version": candidate}
        )
    return HostModel(
        host=name, declared={"name": "smollm2", "version": "v2"}, containers=containers,
        events=events, versions={"v1": {"files": []}, "v2": {"files": []}},
    )  # fmt: skip


CANARY = {"event": "canary", "from_version": "v1", "to_version": "v2", "share": 50,
          "soak_end": "2026-11-28T13:00:00Z"}  # fmt: skip
BEFORE = datetime.datetime(2026, 11, 28, 12, 30, tzinfo=datetime.UTC)
AFTER = datetime.datetime(2026, 11, 28, 13, 1, tzinfo=datetime.UTC)


def test_a_canary_runs_until_an_event_ends_it_and_only_while_its_engine_runs() -> None:
    assert canary_of(_host("lab1", [CANARY])) == CANARY
    assert canary_of(_host("lab1", [CANARY, {"event": "aborted"}])) is None
    assert canary_of(_host("lab1", [CANARY], candidate=None)) is None
    assert canary_of(_host("lab1", [CANARY], candidate="v3")) is None
    assert canary_of(_host("lab1", [{"event": "promoted"}])) is None


def test_a_share_changed_by_the_inventory_mid_canary_is_the_share_in_force() -> None:
    """`hearth up` with a new canary_share for the same version records `canary share` (the
    role's canary_share.yml): status, promote and abort read the new share from it."""
    reshared = {"event": "canary share", "from_version": "v1", "to_version": "v2",
                "from_share": 50, "share": 20, "soak_end": CANARY["soak_end"]}  # fmt: skip
    assert canary_of(_host("lab1", [CANARY, reshared])) == {**CANARY, "share": 20}
    again = {**reshared, "from_share": 20, "share": 30}
    assert canary_of(_host("lab1", [CANARY, reshared, again]))["share"] == 30  # type: ignore[index]
    plan = canary_plan([_host("lab1", [CANARY, reshared])], "smollm2", "abort", at=BEFORE)
    assert plan["share"] == 20
    # a share change of an earlier canary does not carry over to the next one
    older = [CANARY, reshared, {"event": "aborted"}, CANARY]
    assert canary_of(_host("lab1", older)) == CANARY


def test_promote_waits_for_the_soak_unless_now() -> None:
    states = [_host("lab1", [CANARY]), _host("lab2", [CANARY])]
    with pytest.raises(InvalidInputError) as caught:
        canary_plan(states, "smollm2", "promote", at=BEFORE)
    assert "soaks until 2026-11-28T13:00:00Z (about 31 min from now)" in str(caught.value)
    assert "--now" in str(caught.value) and "Nothing was changed" in str(caught.value)
    plan = canary_plan(states, "smollm2", "promote", now=True, at=BEFORE)
    assert plan == {"version": "v2", "from_versions": ["v1"], "share": 50,
                    "soak_end": "2026-11-28T13:00:00Z", "hosts": ["lab1", "lab2"]}  # fmt: skip
    assert canary_plan(states, "smollm2", "promote", at=AFTER)["version"] == "v2"
    assert canary_plan(states, "smollm2", "abort", at=BEFORE)["from_versions"] == ["v1"]
    # hosts that served different versions before their canary each go back to their own
    mixed = [_host("lab1", [CANARY]), _host("lab2", [{**CANARY, "from_version": "v0"}])]
    assert canary_plan(mixed, "smollm2", "abort")["from_versions"] == ["v0", "v1"]


def test_no_canary_or_differing_canaries_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="no canary of model 'smollm2' runs on lab1"):
        canary_plan([_host("lab1", [])], "smollm2", "abort")
    other = {**CANARY, "to_version": "v3"}
    states = [_host("lab1", [CANARY]), _host("lab2", [other], candidate="v3")]
    with pytest.raises(InvalidInputError, match=r"differ .*lab2: v1 → v3.*--limit"):
        canary_plan(states, "smollm2", "abort")
    broken = _host("lab1", [CANARY])
    broken.error = "unreachable"
    with pytest.raises(InvalidInputError, match="cannot read the state of lab1: unreachable"):
        canary_plan([broken], "smollm2", "abort")
