"""``hearth exec``: one shell command on many hosts in parallel, over fabric.

Each host's result is one of ``ok`` (exit 0), ``failed`` (another exit status) or
``unreachable`` (no SSH session: refused, timed out, authentication failed). The run's exit code
follows ``hearth up``: 3 when a host failed, else 4 when a host was unreachable, else 0.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from hearth.errors import InvalidInputError, RunFailedError, UnreachableError
from hearth.fleet.connect import HostConnection

DEFAULT_FORKS = 25


@dataclass(frozen=True)
class HostOutput:
    host: str
    status: str  # ok | failed | unreachable
    rc: int | None = None
    stdout: str = ""
    stderr: str = ""
    reason: str = ""  # why a host was unreachable
    seconds: float = 0.0


@dataclass
class ExecResult:
    command: str
    outputs: list[HostOutput] = field(default_factory=list)
    seconds: float = 0.0

    def hosts(self, status: str) -> list[str]:
        return [o.host for o in self.outputs if o.status == status]

    def summary(self) -> str:
        ok, failed, dark = self.hosts("ok"), self.hosts("failed"), self.hosts("unreachable")
        text = (
            f"{len(self.outputs)} host(s) in {self.seconds:.1f} s: {len(ok)} ok, "
            f"{len(failed)} failed, {len(dark)} unreachable"
        )
        if failed:
            text += " · failed: " + ", ".join(
                f"{o.host} (exit {o.rc})" for o in self.outputs if o.status == "failed"
            )
        if dark:
            text += " · unreachable: " + ", ".join(
                f"{o.host} ({o.reason})" for o in self.outputs if o.status == "unreachable"
            )
        return text

    def raise_for_status(self) -> None:
        failed, dark = self.hosts("failed"), self.hosts("unreachable")
        if failed:
            raise RunFailedError(f"the command failed on {', '.join(failed)}: {self.summary()}")
        if dark:
            raise UnreachableError(f"unreachable: {', '.join(dark)}: {self.summary()}")


def command_text(argv: Sequence[str]) -> str:
    """The command as ssh joins it (words separated by spaces, for the remote shell); exit 2
    when it is empty."""
    text = " ".join(argv).strip()
    if not text:
        raise InvalidInputError(
            "hearth exec: no command given (write it after --, e.g. `hearth exec -i INV -- "
            "uptime`); nothing was run"
        )
    return text


def unreachable_reason(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text}"[:200]


def run_on(
    settings: HostConnection, command: str, *, become: bool = False, timeout: float | None = None
) -> HostOutput:
    """Run ``command`` on one host; never raises for a host's own trouble."""
    began = time.monotonic()
    conn = settings.connection()
    try:
        try:
            conn.open()
        except Exception as e:  # socket errors, auth, host key, timeouts: all unreachable
            return HostOutput(
                settings.name,
                "unreachable",
                reason=unreachable_reason(e),
                seconds=time.monotonic() - began,
            )
        options = {"hide": True, "warn": True, "in_stream": False, "timeout": timeout}
        try:
            if become:  # as Ansible does: sudo -u USER /bin/sh -c 'COMMAND'
                wrapped = f"/bin/sh -c {shlex.quote(command)}"
                result = conn.sudo(wrapped, user=settings.become_user, **options)
            else:
                result = conn.run(command, **options)
        except Exception as e:  # the session broke, or the command ran past --timeout
            from invoke.exceptions import CommandTimedOut

            if isinstance(e, CommandTimedOut):
                return HostOutput(
                    settings.name, "failed", rc=None, stderr=f"timed out after {timeout} s",
                    seconds=time.monotonic() - began,
                )  # fmt: skip
            return HostOutput(
                settings.name, "unreachable", reason=unreachable_reason(e),
                seconds=time.monotonic() - began,
            )  # fmt: skip
        return HostOutput(
            settings.name,
            "ok" if result.exited == 0 else "failed",
            rc=int(result.exited),
            stdout=result.stdout,
            stderr=result.stderr,
            seconds=time.monotonic() - began,
        )
    finally:
        conn.close()


def run_command(
    hosts: Sequence[HostConnection],
    command: str,
    *,
    become: bool = False,
    forks: int = DEFAULT_FORKS,
    timeout: float | None = None,
) -> ExecResult:
    """``command`` on every host, ``forks`` at a time; outputs in the inventory's host order."""
    began = time.monotonic()
    result = ExecResult(command)
    if not hosts:
        return result
    with ThreadPoolExecutor(max_workers=max(1, min(forks, len(hosts)))) as pool:
        result.outputs = list(
            pool.map(lambda h: run_on(h, command, become=become, timeout=timeout), hosts)
        )
    result.seconds = time.monotonic() - began
    return result
