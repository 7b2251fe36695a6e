"""Converge benchmark: first vs second run on fresh lab hosts, Ansible defaults vs Hearth tuning.

For each setting (Ansible's defaults: 5 forks, no pipelining, ControlPersist 60s, no fact cache;
Hearth's: pipelining, ControlPersist 15m, forks 25, jsonfile fact cache with smart gathering) it
starts N fresh lab hosts, runs playbooks/site.yml twice and times both runs, all in one process.
Prints a table and the ratios. Needs Docker (run as root). Uses its own lab (HEARTH_LAB_ID=5).

    python benchmarks/converge.py [--hosts 3] [--repeat 1] [--playbook site.yml|base.yml]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from pathlib import Path

os.environ.setdefault("HEARTH_LAB_ID", "5")

from hearth import lab, paths, runner

# The benchmark's hosts carry this owner: a lab with anyone else's hosts is refused, never removed.
OWNER = "hearth-benchmarks"


def fresh_lab(hosts: int, inventory_dir: Path) -> Path:
    lab.claim(OWNER)  # refuses (exit 2) a lab this benchmark did not create, before removing it
    lab.down()
    state = lab.up(hosts, inventory_dir=inventory_dir, owner=OWNER)
    return Path(state.inventory)


def timed_run(
    inventory: Path, tuning: runner.Tuning, label: str, playbook: str
) -> tuple[float, int]:
    start = time.perf_counter()
    result = runner.run_playbook(playbook, inventory, tuning=tuning, label=label)
    elapsed = time.perf_counter() - start
    result.raise_for_status()
    return elapsed, result.changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=1, help="fresh-lab rounds per setting")
    parser.add_argument(
        "--playbook", default="site.yml", help="playbook under playbooks/ (base.yml: base layer)"
    )
    args = parser.parse_args()

    settings = {
        "ansible defaults": runner.Tuning.ansible_defaults(),
        "hearth tuned": runner.Tuning(),
    }
    inventory_dir = Path("/tmp") / f"hearth-bench-{lab.lab_id()}"
    figures: dict[str, dict[str, list[float]]] = {}
    lab.claim(OWNER)
    try:
        for name, tuning in settings.items():
            runs = figures.setdefault(name, {"first": [], "second": []})
            for _ in range(args.repeat):
                inventory = fresh_lab(args.hosts, inventory_dir)
                shutil.rmtree(paths.hearth_home() / "facts", ignore_errors=True)
                first, changed1 = timed_run(inventory, tuning, "bench-first", args.playbook)
                second, changed2 = timed_run(inventory, tuning, "bench-second", args.playbook)
                if changed2 != 0:
                    raise SystemExit(f"{name}: the second run changed {changed2} things")
                runs["first"].append(first)
                runs["second"].append(second)
                print(
                    f"  {name}: first {first:6.1f} s ({changed1} changed), second {second:6.1f} s"
                )
    finally:
        lab.down()

    med = {n: {k: statistics.median(v) for k, v in r.items()} for n, r in figures.items()}
    print(
        f"\nconverge of playbooks/{args.playbook} on {args.hosts} fresh lab hosts "
        f"(median of {args.repeat})"
    )
    print(f"{'setting':<18} {'first run s':>12} {'second run s':>13} {'second/first':>13}")
    for name, m in med.items():
        print(
            f"{name:<18} {m['first']:>12.1f} {m['second']:>13.1f} {m['second'] / m['first']:>13.2f}"
        )
    base, tuned = med["ansible defaults"], med["hearth tuned"]
    print(
        f"\ntuned/default wall time: first run {tuned['first'] / base['first']:.2f}, "
        f"second run {tuned['second'] / base['second']:.2f}"
    )


if __name__ == "__main__":
    main()
