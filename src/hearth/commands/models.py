"""``hearth models status | log | rollout | rollback``: a model's versions across the hosts that
serve it (docs/models.md).

The hosts are read over the fleet's SSH connections (one small read-only Python program per host:
the live engine, the kept ones, the versions in the model store with their manifests, the model's
changelog). A rollout or rollback then runs the inference layer with the chosen version as an
override (``hearth_model_overrides``): the same gated procedure as a version change in the
inventory (beside, gates, switch, keep), with the version's files taken from the host's own
store: no download, no rebuild. Everything the inventory and the hosts' state can refuse is
refused before anything changes (exit 2, naming the model, version and host).
"""

from __future__ import annotations

import datetime
import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hearth.errors import InvalidInputError

__all__ = [
    "HostModel",
    "canary_of",
    "canary_plan",
    "downtime_problems",
    "overrides_for",
    "read_hosts",
    "rollout_hows",
    "serving_hosts",
    "target_version",
]

STORE = "/var/lib/hearth/models"
MANIFEST = "hearth-model.json"

# Runs on each host (python3, standard library only): what it keeps of one model, as JSON.
_PROBE = r"""
import json, os, subprocess, sys
name, store = sys.argv[1], sys.argv[2]
home = os.path.join(store, name)
out = {"versions": {}, "current": "", "containers": [], "events": []}
try:
    out["current"] = os.path.basename(os.readlink(os.path.join(home, "current")))
except OSError:
    pass
for entry in sorted(os.listdir(home)) if os.path.isdir(home) else []:
    path = os.path.join(home, entry, "hearth-model.json")
    if entry.startswith(".") or entry == "current" or not os.path.isfile(path):
        continue
    try:
        with open(path) as f:
            out["versions"][entry] = json.load(f)
    except (OSError, ValueError):
        out["versions"][entry] = None
fmt = "{{.Names}}\t{{.State}}\t{{.Label \"io.hearth.version\"}}\t{{.Label \"io.hearth.slot\"}}"
ps = subprocess.run(["docker", "ps", "-a", "--filter", "label=io.hearth.model=" + name,
                     "--format", fmt], capture_output=True, text=True)
for line in ps.stdout.splitlines():
    parts = (line.split("\t") + ["", "", "", ""])[:4]
    out["containers"].append(dict(zip(["name", "state", "version", "slot"], parts)))
try:
    with open(os.path.join(store, "changelog.jsonl")) as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("model") == name:
                out["events"].append(record)
except OSError:
    pass
print(json.dumps(out))
"""


@dataclass
class HostModel:
    """One host's state for one model."""

    host: str
    declared: Mapping[str, Any]
    current: str = ""
    versions: dict[str, Any] = field(default_factory=dict)
    containers: list[dict[str, str]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""

    @property
    def live(self) -> dict[str, str] | None:
        want = f"hearth-engine-{self.declared.get('name')}"
        return next((c for c in self.containers if c["name"] == want), None)

    @property
    def kept(self) -> list[str]:
        """Versions this host can go back to: in the store with a manifest, not the live one."""
        live = (self.live or {}).get("version", "")
        return [v for v, m in self.versions.items() if m and v != live]


def serving_hosts(
    inventory: Any, model: str, limit: str | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """(host, declaration) of every inference host that declares ``model``; exit 2 naming the
    declared models when none does."""
    chosen = set(inventory.match(limit)) if limit else None
    found: list[tuple[str, dict[str, Any]]] = []
    known: set[str] = set()
    for host in inventory.match("inference"):
        declared = inventory.hostvars(host).get("hearth_models") or []
        for entry in declared:
            if isinstance(entry, Mapping):
                known.add(str(entry.get("name")))
                if entry.get("name") == model and (chosen is None or host in chosen):
                    found.append((host, dict(entry)))
    if not found:
        raise InvalidInputError(
            f"model {model!r}: no inference host of {inventory.path} declares it"
            + (f" within --limit {limit}" if limit else "")
            + f" (declared: {', '.join(sorted(known)) or 'none'}); nothing was changed"
        )
    return found


def rollout_hows(inventory: Any, model: str, hosts: Sequence[str]) -> dict[str, Any]:
    """{host: :class:`hearth.plan.RolloutHow`}: how ``model`` rolls out on each host, beside the
    live engine or drain-first, decided from the inventory (the declared GPUs, the GPU facts of
    the last run, ``inference_engine_rollout_strategy``) by the function the role uses."""
    from hearth import paths, plan

    found: dict[str, Any] = {}
    for host in hosts:
        variables = inventory.resolved_vars(host, ["model_store", "inference_engine"])
        facts = plan.cached_facts(host, paths.facts_dir(inventory.path))
        strategy = str(variables.get("inference_engine_rollout_strategy") or "auto")
        found[host] = plan.rollout_how_from_vars(host, variables, facts, model, strategy)
    return found


def downtime_problems(inventory: Any, model: str, limit: str | None, batch: int | str) -> list[str]:
    """The batches of a rollout of ``model`` that would drain every host serving it (hosts that
    roll out drain-first, :func:`rollout_hows`), in words: each needs ``--allow-downtime``.
    Hosts outside ``--limit`` keep serving, so they count as replicas."""
    from hearth.commands.upgrade import batches

    every = [host for host, _ in serving_hosts(inventory, model)]
    chosen = set(inventory.match(limit)) if limit else None
    play = [h for h in inventory.match("inference") if chosen is None or h in chosen]
    hows = rollout_hows(inventory, model, [h for h in every if h in play])
    problems = []
    for group in batches(play, batch):
        drained = [h for h in group if h in hows and hows[h].how == "drain"]
        if drained and set(every) <= set(drained):
            why = "; ".join(f"{h}: {hows[h].why}" for h in drained)
            problems.append(
                f"model {model}: its rollout drains {', '.join(drained)} (batch "
                f"{', '.join(group)}) and leaves it with no serving replica ({why})"
            )
    return problems


def read_hosts(
    inventory: Any, model: str, serving: Sequence[tuple[str, dict[str, Any]]]
) -> list[HostModel]:
    """Each serving host's state for ``model`` (read-only)."""
    from hearth.fleet import connect, execute

    declared = dict(serving)
    conns = [
        connect.host_connection(h, inventory.resolved_vars(h, []), become=True) for h in declared
    ]
    command = f"python3 -c {shlex.quote(_PROBE)} {shlex.quote(model)} {STORE}"
    result = execute.run_command(conns, command, become=True)
    states: list[HostModel] = []
    for output in result.outputs:
        state = HostModel(output.host, declared[output.host])
        if output.status != "ok":
            state.error = output.reason or output.stderr.strip()[-300:] or output.status
        else:
            try:
                raw = json.loads(output.stdout.strip().splitlines()[-1])
            except (ValueError, IndexError):
                state.error = f"unreadable answer: {output.stdout[-200:]!r}"
            else:
                state.current = str(raw.get("current") or "")
                state.versions = dict(raw.get("versions") or {})
                state.containers = list(raw.get("containers") or [])
                state.events = list(raw.get("events") or [])
        states.append(state)
    return states


def target_version(states: Sequence[HostModel], model: str, to: str | None) -> str:
    """The version a rollback goes to: ``to``, else the newest version every host keeps. Exit 2
    naming the host where it is not kept (pruned, or never there)."""
    broken = [s for s in states if s.error]
    if broken:
        raise InvalidInputError(
            "cannot read the state of "
            + "; ".join(f"{s.host}: {s.error}" for s in broken)
            + "; nothing was changed"
        )
    if to is None:
        candidates: list[str] | None = None
        for state in states:
            mine = [_previous(state)] if _previous(state) else []
            candidates = mine if candidates is None else [c for c in candidates if c in mine]
        if not candidates:
            raise InvalidInputError(
                f"model {model!r}: no kept version to roll back to on "
                + ", ".join(f"{s.host} (kept: {', '.join(s.kept) or 'none'})" for s in states)
                + "; nothing was changed"
            )
        return candidates[0]
    missing = [s for s in states if not s.versions.get(to)]
    if missing:
        raise InvalidInputError(
            f"model {model!r} version {to!r} is not kept on "
            + ", ".join(f"{s.host} (kept: {', '.join(s.kept) or 'none'})" for s in missing)
            + " (pruned, or never deployed there); nothing was changed"
        )
    return to


def _previous(state: HostModel) -> str:
    """The version this host served before its live one (its last promotion's from_version, else
    its newest kept version)."""
    live = (state.live or {}).get("version", "")
    for event in reversed(state.events):
        if event.get("event") in ("promoted", "rolled back") and event.get("to_version") == live:
            previous = str(event.get("from_version") or "")
            if previous in state.kept:
                return previous
    return state.kept[-1] if state.kept else ""


def overrides_for(states: Sequence[HostModel], model: str, version: str) -> dict[str, Any]:
    """``hearth_model_overrides`` for running the inference layer with ``version`` of ``model``:
    its files as the host's manifest lists them (the same on every host, else exit 2)."""
    manifests = {s.host: s.versions.get(version) for s in states}
    files = {json.dumps((m or {}).get("files"), sort_keys=True) for m in manifests.values()}
    if len(files) != 1:
        raise InvalidInputError(
            f"model {model!r} version {version!r}: the hosts keep different files under that "
            f"version ({', '.join(manifests)}); roll back host by host with --limit"
        )
    manifest = next(iter(manifests.values())) or {}
    declared = states[0].declared
    override: dict[str, Any] = {"version": version, "files": manifest.get("files") or []}
    if version != declared.get("version"):
        override["chat_template"] = None  # the kept version's own; the declaration's is newer
    return {model: override}


def inventory_hint(inventory: Any, model: str, version: str) -> str:
    """Which inventory line keeps the change (the next `hearth up` converges to the inventory)."""
    for path in sorted(Path(inventory.basedir).rglob("*.yml")):
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            continue
        if f"name: {model}" in text and "hearth_models" in text:
            return f"{path}: set version: {version} (and its files) for {model}"
    return f"hearth_models: set version: {version} (and its files) for {model}"


# ------------------------------------------------------------------------- canary shares
_CANARY_ENDS = ("promoted", "aborted", "refused", "rolled back")


def canary_of(state: HostModel) -> dict[str, Any] | None:
    """The canary share in progress on this host (its ``canary`` event: version, from_version,
    share, soak_end), or ``None``: the last canary event with no end after it, whose engine (the
    candidate slot) still runs that version."""
    name = f"hearth-engine-{state.declared.get('name')}--next"
    engine = next((c for c in state.containers if c["name"] == name), None)
    for event in reversed(state.events):
        if event.get("event") in _CANARY_ENDS:
            return None
        if event.get("event") == "canary":
            if engine is None or engine.get("state") != "running":
                return None
            return dict(event) if engine.get("version") == event.get("to_version") else None
    return None


def _utc(text: str) -> datetime.datetime | None:
    try:
        return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return None


def canary_plan(
    states: Sequence[HostModel],
    model: str,
    action: str,
    now: bool = False,
    at: datetime.datetime | None = None,
) -> dict[str, Any]:
    """What `hearth models promote|abort` does, from the hosts' state, or exit 2 before any
    change: ``{version, from_versions, share, soak_end, hosts}`` (each host goes back to the
    version it served before its canary on an abort). Refused: a host that cannot be
    read, no canary of ``model`` on any host, hosts whose canaries differ, and (``promote``)
    a soak that has not ended, unless ``now``."""
    broken = [s for s in states if s.error]
    if broken:
        raise InvalidInputError(
            "cannot read the state of "
            + "; ".join(f"{s.host}: {s.error}" for s in broken)
            + "; nothing was changed"
        )
    found = {s.host: canary_of(s) for s in states}
    running = {h: c for h, c in found.items() if c is not None}
    if not running:
        raise InvalidInputError(
            f"hearth models {action}: no canary of model {model!r} runs on "
            f"{', '.join(found)} (a canary starts when a version with canary_share rolls out); "
            "nothing was changed"
        )
    versions = {str(c.get("to_version")) for c in running.values()}
    if len(versions) != 1:
        each = "; ".join(
            f"{h}: {c.get('from_version')} → {c.get('to_version')}" for h, c in running.items()
        )
        raise InvalidInputError(
            f"hearth models {action}: the canaries of model {model!r} differ ({each}); "
            f"{action} them host by host with --limit. Nothing was changed"
        )
    ends = sorted(str(c.get("soak_end") or "") for c in running.values())
    version = next(iter(versions))
    plan = {
        "version": version,
        "from_versions": sorted({str(c.get("from_version")) for c in running.values()}),
        "share": next(iter(running.values())).get("share"),
        "soak_end": ends[-1],
        "hosts": sorted(running),
    }
    moment = at or datetime.datetime.now(datetime.UTC)
    end = _utc(ends[-1])
    if action == "promote" and not now and end is not None and end > moment:
        left = int((end - moment).total_seconds() // 60) + 1
        raise InvalidInputError(
            f"hearth models promote: the canary of {model} {version} ({plan['share']}% of its "
            f"requests) soaks until {plan['soak_end']} (about {left} min from now); promote it "
            "then, or now with --now. Nothing was changed"
        )
    return plan
