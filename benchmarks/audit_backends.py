"""Audit backends: Hearth's SSH pool against testinfra's ``ansible://`` backend, same checks.

Runs ``hearth.audit.run_audit`` on one converged inventory with each way testinfra can reach the
hosts, all in one process, one after the other, on the same hosts and the same checks:

- ``ssh``: Hearth's pool — one ssh_config written from each host's connection variables
  (:func:`hearth.audit.connection_for`), connections reused through ControlMaster;
- ``ansible``: testinfra's ansible backend — testinfra reads the inventory with
  ``ansible-inventory`` in every worker and runs ssh with the host's arguments;
- ``ansible-force`` (``--force-ansible``): every command through Ansible's ``command`` module
  (what honours every Ansible setting by construction). Slow: opt in with ``--with-force``.

Prints seconds per run (best of ``--repeat``), checks run, and the ratio to ``ssh``. The SSH
masters of the pool are closed before each ``ssh`` run, so it pays for its connections too.

    HEARTH_LAB_ID=2 python benchmarks/audit_backends.py -i INVENTORY [--repeat 3] [--with-force]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from hearth import audit, paths
from hearth.inventory import load_inventory


def close_masters() -> None:
    """Drop the pool's ControlMaster sockets (the masters exit when their socket goes)."""
    control = Path(tempfile.gettempdir()) / "hearth-audit-cp"
    shutil.rmtree(control, ignore_errors=True)


def one_run(inventory: Path, backend: str) -> tuple[float, int, int]:
    inv = load_inventory(inventory)
    if backend == "ssh":
        close_masters()
    start = time.perf_counter()
    result = audit.run_audit(inv, backend=backend)
    seconds = time.perf_counter() - start
    return seconds, len(result.results), result.count("passed")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-i", "--inventory", type=Path, required=True, help="converged inventory")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--with-force", action="store_true", help="also time --force-ansible")
    args = parser.parse_args()
    # testinfra's ansible backend reads ansible.cfg (ANSIBLE_CONFIG) for ssh_args, as Ansible does
    os.environ.setdefault("ANSIBLE_CONFIG", str(paths.content_root() / "ansible.cfg"))

    backends = ["ssh", "ansible"] + (["ansible-force"] if args.with_force else [])
    figures: dict[str, tuple[float, int, int]] = {}
    for backend in backends:
        runs = [one_run(args.inventory, backend) for _ in range(args.repeat)]
        figures[backend] = min(runs)
        for seconds, checks, passed in runs:
            print(f"  {backend:<14} {seconds:6.2f} s  {checks} checks, {passed} passed")
    base = figures["ssh"][0]
    print(f"\naudit of {args.inventory} (best of {args.repeat}):")
    print(f"{'backend':<14} {'seconds':>8} {'checks':>7} {'passed':>7} {'× ssh':>7}")
    for backend, (seconds, checks, passed) in figures.items():
        print(f"{backend:<14} {seconds:8.2f} {checks:7d} {passed:7d} {seconds / base:7.2f}")


if __name__ == "__main__":
    main()
