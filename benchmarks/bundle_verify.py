"""Bundle benchmark: verify throughput against sha256sum, incremental rebuild against a cold build.

1. Cold build: a bundle for an inventory (default: the lab's, two hosts — a GPU node serving
   SmolLM2 behind the front door and a monitoring host, every layer; no host is contacted) into an
   empty directory
   with an empty cache (a temporary HEARTH_CACHE: the package index, debs, wheels and the pinned
   ansible wheel all come from the network).
2. Incremental rebuild of the same bundle right after (nothing changed upstream).
3. Verify: `hearth bundle verify` (signature + every file) against `sha256sum -c` on the same
   files (one process, as an operator would run it) and `xargs -P<cores> sha256sum`, each run
   --repeat times on a warm page cache; best of the runs.

Prints the figures and the ratios. Needs Docker and network (run as root).

    HEARTH_LAB_ID=4 python benchmarks/bundle_verify.py [--inventory INV --vault-password-file F]
        [--workdir DIR] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from hearth import bundle, lab


def write_inventory(directory: Path) -> tuple[Path, Path]:
    """The lab's inventory for two hosts (every layer: a GPU node serving SmolLM2 behind the front
    door, a monitoring host), at addresses nothing answers: the build contacts no host."""
    state = lab.LabState(
        hosts=[lab.LabHost("lab1", "c1", "192.0.2.11"), lab.LabHost("lab2", "c2", "192.0.2.12")],
        private_key="/nonexistent/id_ed25519",
        known_hosts="/nonexistent/known_hosts",
    )
    return lab.write_inventory(state, directory), lab.vault_password_file()


def best(runs: int, func: object) -> float:
    assert callable(func)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inventory", type=Path, help="inventory to bundle [a lab-like one]")
    parser.add_argument("--workdir", type=Path, help="where the bundle goes [a temp dir]")
    parser.add_argument("--vault-password-file", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="hearth-bench-bundle-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["HEARTH_CACHE"] = str(work / "cache")  # cold: nothing cached
    shutil.rmtree(work / "cache", ignore_errors=True)
    shutil.rmtree(work / "bundle", ignore_errors=True)
    shutil.rmtree(work / "keys", ignore_errors=True)
    keys = bundle.keygen(work / "keys")
    vault: Path | None = args.vault_password_file
    inventory = args.inventory
    if inventory is None:
        inventory, vault = write_inventory(work / "inventory")
    out = work / "bundle"

    cold = bundle.build_bundle(inventory, out, key=keys.private, vault_password_file=vault)
    warm = bundle.build_bundle(inventory, out, key=keys.private, vault_password_file=vault)
    size_mb = warm.manifest.total_size / 1e6
    files = len(warm.manifest.entries)

    verify_s = best(args.repeat, lambda: bundle.verify_bundle(out, keys.allowed_signers)
                    .raise_for_findings())  # fmt: skip
    sums = work / "SHA256SUMS"
    sums.write_text("".join(f"{e.sha256}  {e.path}\n" for e in warm.manifest.entries.values()))
    sha_s = best(
        args.repeat,
        lambda: subprocess.run(
            ["sha256sum", "--quiet", "-c", str(sums)], cwd=out, check=True, capture_output=True
        ),
    )
    cores = str(os.cpu_count() or 1)
    listing = "\0".join(warm.manifest.entries).encode()
    par_s = best(args.repeat, lambda: subprocess.run(
        ["xargs", "-0", "-P", cores, "-n", "16", "sha256sum"], input=listing, cwd=out,
        check=True, capture_output=True))  # fmt: skip

    print(f"bundle: {files} files, {size_mb:.1f} MB ({out})")
    print(f"cold build:        {cold.seconds:7.1f} s   {cold.stats.summary()}")
    print(f"incremental build: {warm.seconds:7.1f} s   {warm.stats.summary()}")
    print(f"  cold / incremental: {cold.seconds / warm.seconds:.1f}x")
    print(f"hearth bundle verify:        {verify_s:6.2f} s  {size_mb / verify_s:7.0f} MB/s "
          "(signature + sizes + sha256, thread pool)")  # fmt: skip
    print(f"sha256sum -c (1 process):    {sha_s:6.2f} s  {size_mb / sha_s:7.0f} MB/s")
    print(f"xargs -P{cores} sha256sum:         {par_s:6.2f} s  {size_mb / par_s:7.0f} MB/s")
    print(
        f"  verify / sha256sum -c: {sha_s / verify_s:.2f}x faster; "
        f"verify / xargs -P{cores}: {par_s / verify_s:.2f}x"
    )


if __name__ == "__main__":
    main()
