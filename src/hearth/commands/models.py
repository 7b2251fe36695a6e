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
    "RollbackPath",
    "canary_of",
    "canary_plan",
    "downtime_problems",
    "overrides_for",
    "read_hosts",
    "rollback_path",
    "rollout_hows",
    "serving_hosts",
    "target_version",
]

STORE = "/var/lib/hearth/models"
MANIFEST = "hearth-model.json"
VERIFIED = "/var/lib/hearth/verified"  # model_store_verified_dir: model_verify's records

# Runs on each host (python3, standard library only): what it keeps of one model, as JSON.
_PROBE = r"""
import json, os, subprocess, sys
name, store, verified = sys.argv[1], sys.argv[2], sys.argv[3]
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
fmt = ("{{.Names}}\t{{.State}}\t{{.Label \"io.hearth.version\"}}\t{{.Label \"io.hearth.slot\"}}"
       "\t{{.Image}}")
ps = subprocess.run(["docker", "ps", "-a", "--filter", "label=io.hearth.model=" + name,
                     "--format", fmt], capture_output=True, text=True)
for line in ps.stdout.splitlines():
    parts = (line.split("\t") + ["", "", "", "", ""])[:5]
    out["containers"].append(dict(zip(["name", "state", "version", "slot", "image"], parts)))
# Each kept version's files against the model store's record of them (model_verify's): "" when
# every file is the one last verified (same sha256, not written since: device, inode, size,
# mtime, ctime), else why not. Nothing is hashed.
out["verified"] = {}
for version, manifest in out["versions"].items():
    root = os.path.join(home, version)
    try:
        with open(os.path.join(verified, name, version + ".json")) as f:
            record = json.load(f)
    except (OSError, ValueError):
        out["verified"][version] = "no record of its verified files"
        continue
    why = ""
    if record.get("root") != os.path.realpath(root):
        why = "the record is of another directory"
    for entry in (manifest or {}).get("files") or []:
        known = (record.get("files") or {}).get(entry.get("path")) or {}
        try:
            st = os.stat(os.path.join(root, entry.get("path", "")))
        except OSError:
            why = why or entry.get("path", "?") + " is missing"
            continue
        if known.get("sha256") != entry.get("sha256"):
            why = why or entry.get("path", "?") + " was not verified with its sha256"
        elif known.get("stat") != [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
                                   st.st_ctime_ns]:
            why = why or entry.get("path", "?") + " was written since it was verified"
    out["verified"][version] = why
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
    verified: dict[str, str] = field(default_factory=dict)
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
    command = f"python3 -c {shlex.quote(_PROBE)} {shlex.quote(model)} {STORE} {VERIFIED}"
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
                state.verified = {str(k): str(v) for k, v in (raw.get("verified") or {}).items()}
        states.append(state)
    return states


def refuse_unread(states: Sequence[HostModel]) -> None:
    """Exit 2 naming every host whose model state could not be read (nothing is changed)."""
    broken = [s for s in states if s.error]
    if broken:
        raise InvalidInputError(
            "cannot read the state of "
            + "; ".join(f"{s.host}: {s.error}" for s in broken)
            + "; nothing was changed"
        )


def target_version(states: Sequence[HostModel], model: str, to: str | None) -> str:
    """The version a rollback goes to: ``to``, else the newest version every host keeps. Exit 2
    naming the host where it is not kept (pruned, or never there)."""
    refuse_unread(states)
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
        # the kept version's own chat template, as its manifest records it (the model store
        # writes it there); the declaration's belongs to the declared version. A manifest from
        # before it recorded one has none (the fingerprints then differ: the full path).
        override["chat_template"] = manifest.get("chat_template")
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


# ------------------------------------------------------------------------------------ rollback
# The outcomes in the changelog that prove a version served on a host: promoted or rolled back
# to it (it passed its gates there), or replaced by a rollout (it was the live engine).
_SERVED_TO = ("promoted", "rolled back")
_SERVED_FROM = ("promoted", "rolled back", "refused")
# What must be as it was when the version served: the weights and everything that shapes the
# engine's command (hearth.models.fingerprints).
_SAME = ("weights", "engine_args", "chat_template")


@dataclass(frozen=True)
class RollbackPath:
    """How a rollback runs: ``fast`` (playbooks/rollback.yml: the kept engine back in the live
    slot, health and warm-up, the front door switched; nothing fetched, hashed, copied or
    rebuilt, no golden questions unless ``--gate``), else the full gated path of a rollout, with
    ``why`` it is not fast: one line per host and reason."""

    fast: bool
    why: list[str] = field(default_factory=list)


def served(state: HostModel, version: str) -> bool:
    """Whether the host's changelog shows ``version`` serving there: promoted or rolled back to
    (its gates passed on this host), or replaced by a later rollout (it was the live engine)."""
    for event in state.events:
        kind = event.get("event")
        if kind in _SERVED_TO and event.get("to_version") == version:
            return True
        if kind in _SERVED_FROM and event.get("from_version") == version:
            return True
    return False


def fast_rollback_problems(
    state: HostModel, version: str, deployed: Mapping[str, Any]
) -> list[str]:
    """Why this host cannot roll back to ``version`` the fast way (empty: it can). ``deployed``
    is the model as the rollback would run it (the declaration with the version's override)."""
    from hearth.engines import kept_container_name

    model = str(state.declared.get("name"))
    problems: list[str] = []
    live = state.live
    if live is None or live.get("state") != "running":
        problems.append("no running live engine to switch from")
    kept_name = kept_container_name(model, version)
    kept = next((c for c in state.containers if c.get("name") == kept_name), None)
    if kept is None:
        problems.append(f"no kept container of {version} ({kept_name} was removed or pruned)")
    elif live is not None and kept.get("image") != live.get("image"):
        problems.append(
            f"the kept container of {version} has the image {kept.get('image')!r}, the live "
            f"engine {live.get('image')!r} (a different engine image)"
        )
    manifest = state.versions.get(version)
    if not manifest:
        problems.append(f"{version} is not in the model store")
    else:
        why = state.verified.get(version, "no record of its verified files")
        if why:
            problems.append(f"the files of {version} are not the verified ones: {why}")
        then = dict(manifest.get("fingerprints") or {})
        now = _fingerprints(deployed)
        differ = [k for k in _SAME if then.get(k) != now.get(k)]
        if not then:
            problems.append(f"the manifest of {version} records no fingerprints")
        elif not now:
            problems.append(f"the declaration of {version} does not parse")
        elif differ:
            problems.append(
                f"{version} served with other {' and '.join(d.replace('_', ' ') for d in differ)}"
                " than the inventory would run it with now"
            )
    if not served(state, version):
        problems.append(
            f"{version} never served here (the changelog has no promotion or rollback to it and "
            "no rollout that replaced it)"
        )
    return problems


def rollback_path(
    states: Sequence[HostModel], version: str, deployed: Mapping[str, Any], full: bool = False
) -> RollbackPath:
    """The fast path when every host can take it (:func:`fast_rollback_problems`), else the full
    gated path with the reasons, host by host; ``full`` (``--full``) asks for the full path."""
    if full:
        return RollbackPath(False, ["--full asks for the full gated path"])
    why = [f"{s.host}: {p}" for s in states for p in fast_rollback_problems(s, version, deployed)]
    return RollbackPath(not why, why)


def deployed_model(states: Sequence[HostModel], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The model as a rollout or rollback runs it: the declaration with its override."""
    declared = dict(states[0].declared)
    return {**declared, **dict(overrides.get(str(declared.get("name"))) or {})}


def _fingerprints(model: Mapping[str, Any]) -> dict[str, Any]:
    from hearth import models

    try:
        spec = models.parse_models([dict(model)])[0]
    except (ValueError, IndexError, InvalidInputError):
        return {}
    return dict(models.fingerprints(spec))


# ------------------------------------------------------------------------- canary shares
_CANARY_ENDS = ("promoted", "aborted", "refused", "rolled back")


def canary_of(state: HostModel) -> dict[str, Any] | None:
    """The canary share in progress on this host (its ``canary`` event: version, from_version,
    share, soak_end; the share of a later ``canary share`` event, when the inventory changed
    it), or ``None``: the last canary event with no end after it, whose engine (the candidate
    slot) still runs that version."""
    name = f"hearth-engine-{state.declared.get('name')}--next"
    engine = next((c for c in state.containers if c["name"] == name), None)
    share: Any = None  # the last `canary share` after it: the inventory changed the share since
    for event in reversed(state.events):
        if event.get("event") in _CANARY_ENDS:
            return None
        if event.get("event") == "canary share" and share is None:
            share = event.get("share")
        if event.get("event") == "canary":
            if engine is None or engine.get("state") != "running":
                return None
            if engine.get("version") != event.get("to_version"):
                return None
            return {**event, "share": share} if share is not None else dict(event)
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
    refuse_unread(states)
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
