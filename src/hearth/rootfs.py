"""A root filesystem from Debian's archive with debootstrap: the one way the lab's host image and
the engine images start (hearth.lab, hearth.images).

debootstrap fetches a few hundred files from the mirror and stops at the first one that fails;
one lost name lookup used to fail a whole CI run. A failed attempt is thrown away and tried again
into an empty folder, after a pause, a few times, and each retry is said.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from hearth.errors import EnvironmentProblem, HearthError

__all__ = ["RETRY_WAITS", "debootstrap"]

Say = Callable[[str], None]

#: Pauses before the second and third attempts.
RETRY_WAITS: tuple[float, ...] = (15.0, 45.0)


def _quiet(_: str) -> None:
    return None


def debootstrap(
    *,
    suite: str,
    rootfs: Path,
    mirror: str,
    include: Sequence[str],
    variant: str = "minbase",
    components: Sequence[str] = ("main",),
    say: Say = _quiet,
    waits: Sequence[float] = RETRY_WAITS,
    sleep: Callable[[float], None] = time.sleep,
    command: str = "debootstrap",
) -> None:
    """Build ``rootfs`` (which must not exist yet) from ``mirror``'s ``suite``."""
    argv = [
        command,
        f"--variant={variant}",
        f"--components={','.join(components)}",
        f"--include={','.join(include)}",
        suite,
        str(rootfs),
        mirror,
    ]
    pauses = list(waits)
    attempt = 0
    while True:
        attempt += 1
        try:
            subprocess.run(argv, check=True, text=True, capture_output=True)
            return
        except FileNotFoundError as exc:
            raise EnvironmentProblem(
                f"{command} is not installed: apt-get install debootstrap"
            ) from exc
        except subprocess.CalledProcessError as exc:
            tail = " | ".join((exc.stderr or exc.stdout or "").strip().splitlines()[-6:])
            if not pauses:
                raise HearthError(
                    f"debootstrap {suite} from {mirror} failed (rc={exc.returncode}, "
                    f"{attempt} attempt{'s' if attempt > 1 else ''}): {tail}"
                ) from exc
            wait = pauses.pop(0)
            say(
                f"debootstrap {suite} failed (rc={exc.returncode}: {tail}); "
                f"trying again in {wait:.0f} s"
            )
            shutil.rmtree(rootfs, ignore_errors=True)
            sleep(wait)
