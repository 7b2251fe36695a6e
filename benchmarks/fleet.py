"""Fleet benchmark: `hearth exec` against `ansible -m command`, collect, backup and restore.

On a running lab (``hearth lab up``; HEARTH_LAB_ID picks it) or any inventory:

1. The same command (``uname -r``) on every host through `hearth exec` (fabric, parallel) and
   through ``ansible all -m command`` (Hearth's own ssh settings: ControlPersist, pipelining,
   forks 25), each --repeat times; best of the runs, and the ratio. Both as an operator runs
   them: a CLI process per run (inventory loading included).
2. `hearth collect` over every host: time and archive size.
3. `hearth backup` then `hearth restore` of that archive, then the same restore again (the hosts
   hold everything: nothing is put back): times and archive size (what a backup holds depends on
   what the hosts run: a converged monitoring host brings a TSDB snapshot).

    HEARTH_LAB_ID=7 python benchmarks/fleet.py [--inventory INV --vault-password-file F]
        [--repeat 3] [--skip-backup]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hearth import lab, runner


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    return time.perf_counter() - start, done.returncode, done.stdout + done.stderr


def best(runs: int, cmd: list[str], env: dict[str, str] | None = None) -> float:
    times = []
    for _ in range(runs):
        seconds, rc, out = timed(cmd, env)
        if rc != 0:
            raise SystemExit(f"{' '.join(cmd[:4])} … failed (rc={rc}):\n{out[-2000:]}")
        times.append(seconds)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inventory", type=Path, help="inventory [the running lab's]")
    parser.add_argument("--vault-password-file", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-backup", action="store_true")
    args = parser.parse_args()

    inventory = args.inventory or Path(lab.status().inventory)
    vault = args.vault_password_file or lab.vault_password_file()
    hearth = [sys.executable, "-m", "hearth"]
    common = ["-i", str(inventory), "--vault-password-file", str(vault)]
    env = dict(os.environ, **runner.ansible_env(inventory=inventory))
    env["ANSIBLE_VAULT_PASSWORD_FILE"] = str(vault)
    ansible = str(Path(sys.executable).parent / "ansible")

    exec_s = best(args.repeat, [*hearth, "exec", *common, "--", "uname", "-r"])
    ansible_s = best(
        args.repeat, [ansible, "all", "-i", str(inventory), "-m", "command", "-a", "uname -r"], env
    )
    print(f"exec 'uname -r' on every host: hearth exec {exec_s:.2f} s, ansible -m command "
          f"{ansible_s:.2f} s (best of {args.repeat}); ratio ansible/hearth "
          f"{ansible_s / exec_s:.2f}x")  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="hearth-bench-fleet-") as work:
        bundle = Path(work) / "support.tar.zst"
        seconds, rc, out = timed([*hearth, "collect", *common, "-o", str(bundle)])
        size = bundle.stat().st_size if bundle.exists() else 0
        print(f"collect: {seconds:.1f} s (exit {rc}), archive {size / 1e3:.0f} kB")
        if args.skip_backup:
            return
        out_dir = Path(work) / "backups"
        seconds, rc, out = timed([*hearth, "backup", *common, "-o", str(out_dir)])
        archives = sorted(out_dir.glob("*.tar.zst"))
        if rc != 0 or not archives:
            raise SystemExit(f"backup failed (rc={rc}):\n{out[-3000:]}")
        print(f"backup: {seconds:.1f} s, archive {archives[-1].stat().st_size / 1e6:.2f} MB")
        seconds, rc, out = timed([*hearth, "restore", *common, "--from", str(archives[-1])])
        if rc != 0:
            raise SystemExit(f"restore failed (rc={rc}):\n{out[-3000:]}")
        print(f"restore: {seconds:.1f} s")
        # the hosts hold everything already: a second restore puts nothing back
        again, rc, out = timed([*hearth, "restore", *common, "--from", str(archives[-1])])
        if rc != 0:
            raise SystemExit(f"second restore failed (rc={rc}):\n{out[-3000:]}")
        print(f"restore again (nothing to put back): {again:.1f} s, "
              f"{again / seconds:.2f} of the first")  # fmt: skip


if __name__ == "__main__":
    main()
