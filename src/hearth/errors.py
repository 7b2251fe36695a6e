"""One exception hierarchy for Hearth; every failure carries the exit code the CLI returns.

Exit codes (documented in README.md):

====  ==============================================================
0     success
1     unexpected internal error (a bug: run again with --debug)
2     invalid input: inventory, schema, CLI usage, playbook syntax
3     a run failed: at least one task failed on a reachable host
4     at least one host was unreachable (the others were converged)
5     audit found at least one failed check
6     the environment is missing something (Docker, debootstrap, …)
7     the audit itself crashed (a check module failed to import, pytest error): no verdict
====  ==============================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_INVALID = 2
EXIT_RUN_FAILED = 3
EXIT_UNREACHABLE = 4
EXIT_AUDIT_FAILED = 5
EXIT_ENVIRONMENT = 6
EXIT_AUDIT_CRASHED = 7


class HearthError(Exception):
    """Base error: a message in the operator's terms and the exit code to leave with."""

    exit_code: int = EXIT_INTERNAL

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class InvalidInputError(HearthError):
    """Bad inventory, bad arguments, bad playbook syntax: nothing was changed."""

    exit_code = EXIT_INVALID


class RunFailedError(HearthError):
    exit_code = EXIT_RUN_FAILED


class UnreachableError(HearthError):
    exit_code = EXIT_UNREACHABLE


class AuditFailedError(HearthError):
    exit_code = EXIT_AUDIT_FAILED


class EnvironmentProblem(HearthError):
    """Something the control node lacks (Docker, debootstrap, collections)."""

    exit_code = EXIT_ENVIRONMENT


class AuditCrashedError(HearthError):
    """The audit could not run its checks at all (not a failed check: no verdict was reached)."""

    exit_code = EXIT_AUDIT_CRASHED
