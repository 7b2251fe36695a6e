"""Rollout benchmark: how long a gated model rollout takes per host, how many requests fail
during a rollout and a rollback (must be 0), and how soon a rollback has the old version answering.

On the lab: it takes the lab's hosts 1 and 2 as two replicas of SmolLM2 behind the front door on
host 1 (a fresh inventory of its own, as tests/integration/test_rollout.py builds), converges
v1, then measures while a load loop (2 clients, half of the requests streamed) runs through the
front door:

1. v1 → v2 through `hearth up --playbook inference.yml`: wall time, and per host the time from
   the candidate's start to the promotion (the runner's task events);
2. `hearth models rollback --to v1 --no-backup`, the fast path (the automatic backup before it
   is not the rollback's own time): wall time, the time from the command's start until each
   host's share of the model at the front door goes to a v1 engine that answers (the routing in
   force, /health's digest of routing.json, and that engine's version and health check), and
   until each host's live engine is v1 and answers its health check (polled every 0.25 s), the files
   the run hashed (model_verify's `hashed`: 0, the kept files are checked by their record);
   then, with the inventory set to v1, what an inference run changes (0 on each host);
3. v1 → v2 again, then `hearth models rollback --to v1 --full --no-backup`, the full gated path,
   measured the same way; the ratio full / fast;
4. failed requests and broken streams in each window.

    HEARTH_LAB_ID=12 python benchmarks/rollout.py      # a lab it may reset (not your lab 0)

Figures only; nothing is asserted. Why the fast rollback does not grow with the model's size:
nothing is downloaded, copied, hashed or loaded into Docker (the count of hashed files says
so); what is left is the kept engine's start (llama.cpp maps weights the host served minutes
before) and a health check and warm-up. The lab has one model size (SmolLM2-135M, 98 MB).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent.parent / "tests" / "integration"
sys.path.insert(0, str(TESTS))

ROLLOUT_TASKS = ("Remove a candidate an interrupted rollout left behind", "Record the promotion")


def _per_host_rollout(artifacts: Path) -> dict[str, float]:
    """Seconds from the first rollout task to the promotion record, per host (job events)."""
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    from datetime import datetime

    for path in sorted(artifacts.rglob("job_events/*.json")):
        event = json.loads(path.read_text())
        data = event.get("event_data") or {}
        task, host = str(data.get("task", "")), str(data.get("host", ""))
        if event.get("event") != "runner_on_ok" or not host:
            continue
        when = datetime.fromisoformat(str(data.get("end") or event.get("created"))).timestamp()
        if task.startswith(ROLLOUT_TASKS[0]):
            starts.setdefault(host, datetime.fromisoformat(str(data["start"])).timestamp())
        if task.startswith(ROLLOUT_TASKS[1]):
            ends[host] = when
    return {h: round(ends[h] - starts[h], 1) for h in starts if h in ends}


def main() -> None:
    os.environ.setdefault("HEARTH_LAB_ID", "12")
    from test_inference import API_KEY
    from test_rollout import DOOR, GOLDEN_ONLY, HOSTS, PORT, Fleet, Load, _clean

    from hearth import images, runner
    from hearth import lab as lab_mod

    lab_id = int(os.environ["HEARTH_LAB_ID"])
    if lab_id == 0:
        raise SystemExit("refusing lab 0 (the operator's own lab): set HEARTH_LAB_ID")
    for recipe in images.RECIPES:
        images.ensure_image(recipe)
    state = lab_mod.up(3, inventory_dir=Path(tempfile.mkdtemp()) / "lab-inv")
    from labkit import vault_front_door_key, write_inventory

    directory = Path(tempfile.mkdtemp(prefix="hearth-bench-rollout-")) / "inventory"
    write_inventory(
        state,
        directory,
        group_vars={
            "container_runtime_toolkit_source": "distribution",
            "hearth_operator": "bench-rollout",
            "front_door_port": PORT,
            "canary_questions": "{{ 'lab' | hearth_question_set }}",
            "canary_question_sets": {"smollm2": GOLDEN_ONLY},  # as test_rollout: no probes
            # the front door on lab1 routes to lab2's engine too: engines bind to loopback by
            # default, and `hearth check` refuses one that a front door elsewhere must reach
            "inference_engine_bind_address": "0.0.0.0",  # noqa: S104 (the lab network only)
        },
        groups={"inference": list(HOSTS), "frontdoor": [DOOR]},
    )
    vault = vault_front_door_key(directory, API_KEY, name="bench")
    (directory / "group_vars" / "inference").mkdir(parents=True)
    address = next(h.address for h in state.hosts if h.name == DOOR)
    fleet = Fleet(state, directory, vault, f"http://{address}:{PORT}")
    _clean(fleet)
    fleet.declare("v1")
    began = time.monotonic()
    done = fleet.hearth("first", "up", "--limit", ",".join(HOSTS))
    if done.returncode != 0:
        raise SystemExit(f"first converge failed:\n{done.stdout[-4000:]}{done.stderr[-2000:]}")
    print(f"first converge of 2 hosts (all layers): {time.monotonic() - began:.0f} s")

    fleet.declare("v2")
    with Load(fleet.door) as load:
        time.sleep(2)
        began = time.monotonic()
        result = runner.run_playbook(
            "inference.yml", fleet.inventory, vault_password_file=vault, label="bench-rollout"
        )
        rollout_s = time.monotonic() - began
    result.raise_for_status()
    per_host = _per_host_rollout(Path(result.artifacts))
    rollout_failed = len(load.failures)
    rollout_sent = load.sent

    fast = _rollback(fleet, state, ())
    # as the command says, the inventory set to v1: a run then changes nothing
    fleet.declare("v1")
    kept = runner.run_playbook(
        "inference.yml", fleet.inventory, vault_password_file=vault, label="bench-kept"
    )
    kept.raise_for_status()
    after = {h: kept.hosts[h].changed for h in HOSTS}
    # back to v2, then the same rollback the full gated way
    fleet.declare("v2")
    forward = runner.run_playbook(
        "inference.yml", fleet.inventory, vault_password_file=vault, label="bench-forward"
    )
    forward.raise_for_status()
    full = _rollback(fleet, state, ("--full",))

    print(f"\nrollout v1 → v2, 2 hosts one at a time: {rollout_s:.1f} s in all")
    for host, seconds in sorted(per_host.items()):
        print(f"  {host}: candidate start → promoted: {seconds:.1f} s")
    print(f"  requests during the rollout: {rollout_sent}, failed: {rollout_failed}")
    for name, found in (("fast path", fast), ("full gated path (--full)", full)):
        print(f"rollback → v1, {name}: {found['command']:.1f} s for the command")
        for host, seconds in sorted(found["through_door"].items()):
            print(f"  {host}: v1 answers through the front door {seconds:.1f} s after the command")
        for host, seconds in sorted(found["answering"].items()):
            print(f"  {host}: v1 in the live slot and answering {seconds:.1f} s after the command")
        print(f"  requests during the rollback: {found['sent']}, failed: {len(found['failures'])}")
        for line in found["failures"][:5]:
            print(f"    {line}")
    if fast["hashed"] is not None:
        print(f"  files hashed by the fast rollback: {fast['hashed']}")
    if fast["results"]:
        print(f"  task results of the fast rollback, per host: {fast['results']}")
    print(f"  then `hearth up` (inference) with the inventory at v1: changed {after}")
    first = [min(f["answering"].values(), default=0.0) for f in (fast, full)]
    last = [max(f["answering"].values(), default=0.0) for f in (fast, full)]
    if first[0] and last[0]:
        print(
            f"full / fast: command {full['command'] / fast['command']:.1f}x, first host answering "
            f"{first[1] / first[0]:.1f}x, last host answering {last[1] / last[0]:.1f}x"
        )
    _clean(fleet)


def _rollback(fleet: Any, state: Any, extra: tuple[str, ...]) -> dict[str, Any]:
    """`hearth models rollback --to v1` under the load loop: the command's time, each host's
    time until its live engine is v1 and healthy, the load's failures, files hashed."""
    from labkit import container_exec, hearth
    from test_rollout import DOOR, ENGINE, HOSTS, PORT, Load

    from hearth import paths

    answering: dict[str, float] = {}
    through_door: dict[str, float] = {}
    stop = threading.Event()
    addresses = {h.name: h.address for h in state.hosts}

    def door_serves_v1(host: str) -> bool:
        """The front door's routing in force sends ``host``'s share of smollm2 to an engine of
        v1 that answers its health check (the candidate slot or the live slot)."""
        shown = container_exec(
            state, DOOR, "sh", "-c",
            "sha256sum /etc/hearth/frontdoor/routing.json | cut -c1-64; cat "
            f"/etc/hearth/frontdoor/routing.json; echo; curl -fsS http://127.0.0.1:{PORT}/health",
        ).stdout.strip().split("\n")  # fmt: skip
        try:
            digest, routing = shown[0], json.loads("\n".join(shown[1:-1]) or "{}")
            loaded = json.loads(shown[-1]).get("loaded", {}).get("routing")
        except (ValueError, IndexError, AttributeError):
            return False
        if loaded != digest:
            return False  # written, not yet in force
        backends = ((routing.get("models") or {}).get("smollm2") or {}).get("backends")
        prefix = f"http://{addresses[host]}:"
        ports = [b[len(prefix) :].split("/")[0] for b in backends or [] if b.startswith(prefix)]
        port = ports[0] if ports else "8080"  # no override: the inventory's route, the live slot
        fmt = '{{index .Config.Labels "io.hearth.version"}}'
        answer = container_exec(
            state, host, "sh", "-c",
            f"docker inspect --format '{fmt}' $(docker ps -q --filter publish={port}) && "
            f"curl -fsS -o /dev/null http://127.0.0.1:{port}/health && echo healthy",
        ).stdout.split()  # fmt: skip
        return answer[:1] == ["v1"] and answer[-1:] == ["healthy"]

    def watch(started: float) -> None:
        while not stop.is_set() and min(len(answering), len(through_door)) < len(HOSTS):
            for host in HOSTS:
                if host not in through_door and door_serves_v1(host):
                    through_door[host] = time.monotonic() - started
                if host in answering:
                    continue
                fmt = '{{index .Config.Labels "io.hearth.version"}}'
                version = container_exec(
                    state, host, "docker", "inspect", "--format", fmt, ENGINE
                ).stdout.strip()
                health = container_exec(
                    state, host, "curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8080/health"
                ).returncode
                if version == "v1" and health == 0:
                    answering[host] = time.monotonic() - started
            time.sleep(0.25)

    with Load(fleet.door) as load:
        time.sleep(2)
        began, wall = time.monotonic(), time.time()
        watcher = threading.Thread(target=watch, args=(began,), daemon=True)
        watcher.start()
        done = hearth(
            "models", "rollback", "smollm2", "--to", "v1", "-i", str(fleet.inventory),
            "--vault-password-file", str(fleet.vault), "--no-backup", *extra,
        )  # fmt: skip
        command = time.monotonic() - began
        watcher.join(timeout=30)
        stop.set()
    if done.returncode != 0:
        raise SystemExit(f"rollback {' '.join(extra)} failed:\n{done.stdout[-4000:]}")
    runs = [
        d
        for d in sorted(paths.runs_dir().glob("*-models-rollback-fast"))
        if d.stat().st_mtime >= wall
    ]
    return {
        "command": command,
        "answering": answering,
        "through_door": through_door,
        "sent": load.sent,
        "failures": list(load.failures),
        "hashed": _hashed(runs[-1]) if runs else None,
        "results": _results_per_host(runs[-1]) if runs else {},
    }


def _results_per_host(run: Path) -> dict[str, int]:
    """Task results (ok, changed, skipped, failed) per host of a run's job events."""
    counts: dict[str, int] = {}
    for path in run.rglob("job_events/*.json"):
        event = json.loads(path.read_text())
        host = str((event.get("event_data") or {}).get("host") or "")
        kind = str(event.get("event", ""))
        if host and kind in ("runner_on_ok", "runner_on_skipped", "runner_on_failed"):
            counts[host] = counts.get(host, 0) + 1
    return dict(sorted(counts.items()))


def _hashed(run: Path) -> int:
    """Files model_verify hashed in a run (its job events' `hashed`)."""
    count = 0
    for path in run.rglob("job_events/*.json"):
        data = json.loads(path.read_text()).get("event_data") or {}
        if data.get("task_action", "").endswith("model_verify"):
            count += len((data.get("res") or {}).get("hashed") or [])
    return count


if __name__ == "__main__":
    main()
