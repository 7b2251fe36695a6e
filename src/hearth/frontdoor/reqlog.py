"""The front door's request log: one JSON line per request, hash-chained, rotated daily.

Each line is a JSON object with, beside the request's facts (time, key name, model and version,
endpoint, status, tokens, seconds, client address; never the key, never the prompt), ``seq`` (its
number, counting on across files) and ``prev``: the sha256 of the previous line's bytes (without
the newline). The first line ever has ``prev`` = 64 zeros. The file is
``requests-YYYY-MM-DD.jsonl`` (UTC day) in the state directory; the first line of a day carries
the hash of the last line of the day before, so the chain runs across rotations.

An edited line no longer hashes to the ``prev`` of the next one; a removed line leaves a gap in
``seq`` and a ``prev`` that does not match; lines put in another order break both.
:func:`verify_chain` names the first such line. The newest line is covered once a line follows it
(or by comparing it with the ``head`` the front door reports at ``/health``: ``seq`` and hash of
the last line it wrote).

At start the writer reads the last line of the newest file and continues its chain (a last line
that does not parse is a break the verifier will report; the writer starts over from it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "GENESIS",
    "Break",
    "RequestLog",
    "iter_records",
    "line_hash",
    "log_files",
    "verify_chain",
]

GENESIS = "0" * 64
_FILE = re.compile(r"^requests-(\d{4}-\d{2}-\d{2})\.jsonl$")


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def log_files(directory: Path) -> list[Path]:
    """The request log's files in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _FILE.match(p.name))


def _last_line(path: Path) -> bytes | None:
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        size = min(end, 65536)
        f.seek(end - size)
        tail = f.read().rstrip(b"\n")
    if not tail:
        return None
    return tail.rsplit(b"\n", 1)[-1]


class RequestLog:
    """Appends chained lines to the day's file in ``directory``."""

    def __init__(self, directory: Path, clock: Any = None) -> None:
        import time

        self.directory = directory
        self._clock = clock or time.time
        self._fd: int | None = None
        self._day = ""
        self.seq = 0
        self.head = GENESIS
        for path in reversed(log_files(directory)):
            last = _last_line(path)
            if last is None:
                continue
            self.head = line_hash(last)
            try:
                self.seq = int(json.loads(last)["seq"])
            except (ValueError, KeyError, TypeError):
                self.seq = 0
            break

    def _open(self, day: str) -> int:
        if self._fd is not None and day == self._day:
            return self._fd
        self.close()
        path = self.directory / f"requests-{day}.jsonl"
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._day = day
        return self._fd

    def write(self, record: Mapping[str, Any]) -> str:
        """Append ``record`` (with ``seq`` and ``prev`` added); the line written."""
        now = float(self._clock())
        moment = dt.datetime.fromtimestamp(now, dt.UTC)
        line = {
            "time": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            **record,
            "seq": self.seq + 1,
            "prev": self.head,
        }
        data = json.dumps(line, sort_keys=True, separators=(",", ":")).encode("utf-8")
        os.write(self._open(moment.date().isoformat()), data + b"\n")
        self.seq += 1
        self.head = line_hash(data)
        return data.decode("utf-8")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass(frozen=True)
class Break:
    """The first place the chain does not hold: ``file`` and 1-based ``line``, and why."""

    file: str
    line: int
    problem: str

    def text(self) -> str:
        return f"{self.file}:{self.line}: {self.problem}"


def verify_chain(files: Sequence[tuple[str, bytes]]) -> tuple[int, Break | None]:
    """Check the chain over ``files`` (name, content), oldest first: the number of lines that
    hold, and the first :class:`Break` (``None`` when the whole chain holds).

    The first line checked may start from any ``prev`` (older files may have been removed by
    retention); from then on every line must follow the one before it."""
    previous: bytes | None = None
    expected_seq: int | None = None
    where = ("", 0)
    checked = 0
    for name, content in files:
        lines = content.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        for number, raw in enumerate(lines, start=1):
            try:
                record = json.loads(raw)
                seq, prev = int(record["seq"]), str(record["prev"])
            except (ValueError, KeyError, TypeError):
                return checked, Break(name, number, "not a request-log line (edited)")
            if expected_seq is not None and previous is not None:
                if seq > expected_seq:
                    gap = seq - expected_seq
                    return checked, Break(
                        name, number,
                        f"line(s) removed before it: seq {seq}, expected {expected_seq} "
                        f"({gap} missing after {where[0]}:{where[1]})",
                    )  # fmt: skip
                if seq < expected_seq:
                    return checked, Break(
                        name, number,
                        f"out of order: seq {seq} after seq {expected_seq - 1} (reordered or "
                        "copied)",
                    )  # fmt: skip
                if prev != line_hash(previous):
                    return checked, Break(
                        where[0], where[1],
                        f"edited: its hash is not the one line {number} of {name} records",
                    )  # fmt: skip
            previous, expected_seq, where = raw, seq + 1, (name, number)
            checked += 1
    return checked, None


def iter_records(contents: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """The records of request-log contents (lines that do not parse are skipped)."""
    for content in contents:
        for raw in content.splitlines():
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record
