"""Converge benchmark: a first converge of fresh lab hosts and a run that changes nothing, per
setting, side by side in one run, with where the time goes.

For each setting it starts fresh lab hosts (`hearth lab up`'s inventory: the lab's vault-encrypted
front door key, opened with the lab's vault password file, as `hearth up` is given it), runs
playbooks/site.yml twice and times both runs, in one process. The settings:

- ``main``: the content (playbooks, roles, plugins) of a git ref (default: where this branch left
  ``main``; it must be an ancestor, as its roles run with this checkout's Python), exported to a
  temporary folder, with today's tuning (:class:`hearth.runner.Tuning`) and Ansible's own
  ``linear`` strategy, every task through a worker: the baseline;
- ``main-mitogen``: the same content with ``--strategy mitogen`` (the baseline of a change that
  keeps Mitogen, the default);
- ``branch``: this checkout's content (copied when the benchmark starts), the same;
- ``mitogen``: this checkout's content with ``--strategy mitogen``, Hearth's default where Mitogen
  can run (skipped, with the reason, where it is not installed or does not support this
  ansible-core);
- ``mitogen-workers``: the same, with every task sent to a worker as Ansible does (no work done by
  the strategy itself: plugins/plugin_utils/hearth_strategy.py), not run unless asked for;
- ``defaults``: this checkout's content with Ansible's own defaults (5 forks, no pipelining, no
  fact cache), not run unless asked for.

Prints a table, one line per setting of the form ``no-op/first: 0.NN``, and the tasks that took
longest on the no-op run (each task's duration on its slowest host, from the runner's job events,
summed over the plays that run it). Each run is timed as `hearth up` does its work: the
inventory's preflight on the control node, then the playbook. The no-op run must report
changed=0. Needs Docker (root). Figures only, nothing is asserted beyond changed=0; the machine
is shared, so compare ratios within one run.

    HEARTH_LAB_ID=24 python benchmarks/converge.py [--settings main,branch,mitogen] [--top 15]
        [--repeat 2] [--noop-runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

os.environ.setdefault("HEARTH_LAB_ID", "5")

from hearth import lab, paths, preflight, runner

# The benchmark's hosts carry this owner: a lab with anyone else's hosts is refused, never removed.
OWNER = "hearth-benchmarks"
REPO = Path(__file__).resolve().parent.parent
# The content and what its symlinks point into (roles' files/ link to modules under src/).
EXPORTED = (*paths.CONTENT_DIRS, "src")
RESULT_EVENTS = ("runner_on_ok", "runner_on_failed", "runner_on_skipped", "runner_on_unreachable")


@dataclass
class Setting:
    name: str
    tuning: runner.Tuning
    content: Path | None = None  # HEARTH_CONTENT_ROOT for this setting; None: this checkout
    # What `hearth up` did at that content: this checkout's tells the playbooks that their
    # preflight passed on the control node (hearth_preflight_done) and runs with facts only
    # under ansible_facts; a ref before 2026-11-29 did neither.
    ref_cli: bool = False


@dataclass
class Run:
    seconds: float
    changed: int
    artifacts: Path
    tasks: dict[str, float] = field(default_factory=dict)  # "role : task" → seconds
    busiest: tuple[str, float, int] = ("", 0.0, 0)  # host, task seconds, task results


def fresh_lab(hosts: int, inventory_dir: Path) -> Path:
    lab.claim(OWNER)  # refuses (exit 2) a lab this benchmark did not create, before removing it
    lab.down()
    state = lab.up(hosts, inventory_dir=inventory_dir, owner=OWNER)
    return Path(state.inventory)


def export_content(ref: str, into: Path) -> Path:
    """The playbooks, roles and plugins of ``ref`` (``git archive``), as a content root."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", ref, *EXPORTED],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def snapshot(into: Path) -> Path:
    """This checkout's content as it is now (edits made while the benchmark runs do not leak
    into a later setting's runs)."""
    if not into.exists():
        for name in EXPORTED:
            shutil.copytree(
                REPO / name,
                into / name,
                symlinks=True,
                ignore=shutil.ignore_patterns("__pycache__"),
            )
    return into


def task_times(artifacts: Path) -> tuple[dict[str, float], tuple[str, float, int]]:
    """Per task (``role : name``), its duration on the slowest host, summed over the plays and
    batches that run it; and the host with the most task time (host, seconds, results)."""
    slowest: dict[tuple[str, str], float] = {}  # (task uuid, label) → max seconds over hosts
    per_host: dict[str, float] = defaultdict(float)
    results: dict[str, int] = defaultdict(int)
    for path in artifacts.rglob("job_events/*.json"):
        event = json.loads(path.read_text())
        data = event.get("event_data") or {}
        host = str(data.get("host") or "")
        if event.get("event") not in RESULT_EVENTS or not host or not data.get("start"):
            continue
        start = datetime.fromisoformat(str(data["start"])).timestamp()
        end = datetime.fromisoformat(str(data.get("end") or event.get("created"))).timestamp()
        seconds = max(end - start, 0.0)
        role = str(data.get("role") or "")
        label = f"{role} : {data.get('task', '')}" if role else str(data.get("task", ""))
        key = (str(data.get("task_uuid") or label), label)
        slowest[key] = max(slowest.get(key, 0.0), seconds)
        per_host[host] += seconds
        results[host] += 1
    tasks: dict[str, float] = defaultdict(float)
    for (_, label), seconds in slowest.items():
        tasks[label] += seconds
    host = max(per_host, key=lambda h: per_host[h], default="")
    return dict(tasks), (host, per_host.get(host, 0.0), results.get(host, 0))


def timed_run(inventory: Path, setting: Setting, label: str, playbook: str, vault: Path) -> Run:
    saved = os.environ.get("HEARTH_CONTENT_ROOT")
    if setting.content is not None:
        os.environ["HEARTH_CONTENT_ROOT"] = str(setting.content)
    try:
        start = time.perf_counter()
        # as `hearth up`: the inventory's preflight on the control node, then the playbook
        preflight.preflight(inventory, vault)
        result = runner.run_playbook(
            playbook,
            inventory,
            tuning=setting.tuning,
            label=label,
            vault_password_file=vault,
            extravars=None if setting.ref_cli else {"hearth_preflight_done": True},
            extra_env={"ANSIBLE_INJECT_FACT_VARS": "True"} if setting.ref_cli else None,
        )
        elapsed = time.perf_counter() - start
    finally:
        if saved is None:
            os.environ.pop("HEARTH_CONTENT_ROOT", None)
        else:
            os.environ["HEARTH_CONTENT_ROOT"] = saved
    result.raise_for_status()
    tasks, busiest = task_times(result.artifacts)
    return Run(elapsed, result.changed, result.artifacts, tasks, busiest)


def settings_for(names: list[str], ref: str, scratch: Path) -> list[Setting]:
    chosen: list[Setting] = []
    for name in names:
        if name == "main":
            content = export_content(ref, scratch / "content")
            # a ref's content has no strategy of Hearth's (before 2026-11-29: none at all)
            linear = runner.Tuning(strategy="linear", work_on_controller=False)
            chosen.append(Setting(f"{ref}, linear", linear, content, ref_cli=True))
        elif name == "main-mitogen":
            problem = runner.mitogen_problem()
            if problem:
                print(f"  skipping the main-mitogen setting: {problem}")
                continue
            content = export_content(ref, scratch / "content")
            mitogen = runner.Tuning(strategy="mitogen", work_on_controller=False)
            chosen.append(Setting(f"{ref}, mitogen", mitogen, content, ref_cli=True))
        elif name == "branch":
            linear = runner.Tuning(strategy="linear")
            chosen.append(Setting("this branch, linear", linear, snapshot(scratch / "branch")))
        elif name in ("mitogen", "mitogen-workers"):  # -workers: every task sent to a worker
            problem = runner.mitogen_problem()
            if problem:
                print(f"  skipping the {name} setting: {problem}")
                continue
            workers = name == "mitogen-workers"
            tuning = runner.Tuning(strategy="mitogen", work_on_controller=not workers)
            label = "this branch, mitogen" + (", every task to a worker" if workers else "")
            chosen.append(Setting(label, tuning, snapshot(scratch / "branch")))
        elif name == "defaults":
            tuning = runner.Tuning.ansible_defaults()
            chosen.append(Setting("ansible defaults", tuning, snapshot(scratch / "branch")))
        else:
            known = "main, main-mitogen, branch, mitogen, mitogen-workers, defaults"
            raise SystemExit(f"--settings: unknown setting {name!r} ({known})")
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument(
        "--repeat", type=int, default=1, help="fresh-lab rounds per setting (interleaved)"
    )
    parser.add_argument(
        "--playbook", default="site.yml", help="playbook under playbooks/ (base.yml: base layer)"
    )
    parser.add_argument("--settings", default="main,branch,mitogen", help="comma-separated")
    parser.add_argument(
        "--ref",
        help="git ref of the `main` setting's content [default: where this branch left main]. "
        "Its roles run with this checkout's Python (hearth.rules, filters), so the ref must be "
        "an ancestor of this checkout, not a newer main",
    )
    parser.add_argument(
        "--noop-runs",
        type=int,
        default=1,
        help="no-op runs after each first converge; their median is the round's no-op figure "
        "(the machine's noise is about ±2 s on a 30 s run: 3 or 5 to compare small changes)",
    )
    parser.add_argument("--top", type=int, default=15, help="tasks listed per no-op run")
    args = parser.parse_args()

    if args.ref is None:
        merge_base = ["git", "-C", str(REPO), "merge-base", "HEAD", "main"]
        args.ref = subprocess.run(merge_base, check=True, capture_output=True, text=True).stdout[:8]
    scratch = Path(tempfile.mkdtemp(prefix="hearth-bench-converge-"))
    settings = settings_for([s.strip() for s in args.settings.split(",") if s.strip()], args.ref,
                            scratch)  # fmt: skip
    inventory_dir = Path("/tmp") / f"hearth-bench-{lab.lab_id()}"
    vault = lab.vault_password_file()
    runs: dict[str, dict[str, list[Run]]] = {}
    lab.claim(OWNER)
    try:
        # Rounds interleave the settings (A B A B, not A A B B), so a change of the shared
        # machine's load falls on every setting alike.
        for _ in range(args.repeat):
            for setting in settings:
                per = runs.setdefault(setting.name, {"first": [], "noop": []})
                inventory = fresh_lab(args.hosts, inventory_dir)
                # this inventory's fact cache only (other labs on this machine keep theirs)
                shutil.rmtree(paths.facts_dir(inventory), ignore_errors=True)
                first = timed_run(inventory, setting, "bench-first", args.playbook, vault)
                noops = []
                for _ in range(max(args.noop_runs, 1)):
                    noop = timed_run(inventory, setting, "bench-noop", args.playbook, vault)
                    if noop.changed != 0:
                        raise SystemExit(
                            f"{setting.name}: the no-op run changed {noop.changed} things "
                            f"(artifacts: {noop.artifacts})"
                        )
                    noops.append(noop)
                # the round's no-op figure: the run with the median time (its tasks are listed)
                noop = sorted(noops, key=lambda r: r.seconds)[len(noops) // 2]
                spread = ""
                if len(noops) > 1:
                    spread = f" (runs: {', '.join(f'{r.seconds:.1f}' for r in noops)})"
                per["first"].append(first)
                per["noop"].append(noop)
                print(
                    f"  {setting.name}: first {first.seconds:6.1f} s ({first.changed} changed), "
                    f"no-op {noop.seconds:6.1f} s{spread} ({noop.busiest[2]} results on "
                    f"{noop.busiest[0]})",
                    flush=True,
                )
    finally:
        lab.down()
        shutil.rmtree(scratch, ignore_errors=True)

    print(
        f"\nconverge of playbooks/{args.playbook} on {args.hosts} fresh lab hosts "
        f"(median of {args.repeat} round(s), {args.noop_runs} no-op run(s) each; busiest "
        "host: its task seconds / task results, no-op run)"
    )
    print(f"{'setting':<20} {'first s':>8} {'no-op s':>8} {'no-op/first':>12}  busiest host")
    medians: dict[str, tuple[float, float]] = {}
    for name, per in runs.items():
        first_s = statistics.median(r.seconds for r in per["first"])
        noop_s = statistics.median(r.seconds for r in per["noop"])
        medians[name] = (first_s, noop_s)
        host, busy, count = per["noop"][-1].busiest
        print(
            f"{name:<20} {first_s:>8.1f} {noop_s:>8.1f} {noop_s / first_s:>12.2f}  "
            f"{host} {busy:.1f} s / {count}"
        )
    print()
    for name, (first_s, noop_s) in medians.items():
        print(f"{name}: no-op/first: {noop_s / first_s:.2f}")
    names = list(medians)
    if len(names) > 1:
        base = medians[names[0]]
        for name in names[1:]:
            m = medians[name]
            print(
                f"{name} vs {names[0]}: first run {m[0] / base[0]:.2f}, "
                f"no-op run {m[1] / base[1]:.2f}"
            )
    for name, per in runs.items():
        tasks = per["noop"][-1].tasks
        total = sum(tasks.values())
        print(f"\nwhere the no-op time goes, {name} (top {args.top} of {len(tasks)} tasks, "
              f"slowest host per task; all tasks {total:.1f} s):")  # fmt: skip
        for label, seconds in sorted(tasks.items(), key=lambda kv: -kv[1])[: args.top]:
            print(f"  {seconds:6.2f} s  {label}")


if __name__ == "__main__":
    main()
