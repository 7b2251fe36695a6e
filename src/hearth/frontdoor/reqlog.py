"""The front door's request log: one JSON line per request, hash-chained, rotated daily.

Each line is a JSON object with, beside the request's facts (time, key name, model and version,
endpoint, status, tokens, seconds, client address; never the key, never the prompt: see below),
``seq`` (its number, counting on across files) and ``prev``: the sha256 of the previous line's
bytes (without the newline). The first line ever has ``prev`` = 64 zeros. The file is
``requests-YYYY-MM-DD.jsonl`` (UTC day) in the state directory; the first line of a day carries
the hash of the last line of the day before, so the chain runs across rotations.

An edited line no longer hashes to the ``prev`` of the next one; a removed line leaves a gap in
``seq`` and a ``prev`` that does not match; lines put in another order break both.
:func:`verify_chain` names the first such line. The newest line is covered once a line follows it
(or by comparing it with the ``head`` the front door reports at ``/health``: ``seq`` and hash of
the last line it wrote).

At start the writer reads the last line of the newest file and continues its chain (a last line
that does not parse is a break the verifier will report; the writer starts over from it).

Prompts and answers (only when a site opts in, ``front_door_log_prompts``) go to a file of their
own, ``prompts-YYYY-MM-DD.jsonl`` (mode 0600, same UTC day as the request line): one record per
request, ``{"seq", "time", "key", "model", "endpoint", "request", "answer"}``, where ``seq`` is
the number of the request line it belongs to. The chained request line carries only
``prompt_sha256``, the sha256 of that record's bytes. So deleting prompt files after their
retention (:meth:`RequestLog.prune_prompts`) leaves every chained line as it was, and each kept
record is still bound to the chain: an edited record no longer hashes to what its request line
says, and :func:`verify_prompts` names it.
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
    "digest_lines",
    "iter_records",
    "line_hash",
    "log_files",
    "prompt_files",
    "verify_chain",
    "verify_prompts",
]

GENESIS = "0" * 64
_FILE = re.compile(r"^requests-(\d{4}-\d{2}-\d{2})\.jsonl$")
_PROMPTS = re.compile(r"^prompts-(\d{4}-\d{2}-\d{2})\.jsonl$")


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def log_files(directory: Path) -> list[Path]:
    """The request log's files in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _FILE.match(p.name))


def prompt_files(directory: Path) -> list[Path]:
    """The prompt files in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _PROMPTS.match(p.name))


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
    """Appends chained lines to the day's file in ``directory`` (and, for a request whose prompt
    is logged, its record to the day's prompt file)."""

    def __init__(self, directory: Path, clock: Any = None) -> None:
        import time

        self.directory = directory
        self._clock = clock or time.time
        self._fd: int | None = None
        self._day = ""
        self._prompt_fd: int | None = None
        self._prompt_day = ""
        self.pruned_on = ""
        """The UTC day of the last :meth:`prune_prompts` (one run per day is enough)."""
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

    def _open_prompts(self, day: str) -> int:
        if self._prompt_fd is not None and day == self._prompt_day:
            return self._prompt_fd
        self._close_prompts()
        path = self.directory / f"prompts-{day}.jsonl"
        self._prompt_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._prompt_day = day
        return self._prompt_fd

    def write(self, record: Mapping[str, Any], prompt: Mapping[str, Any] | None = None) -> str:
        """Append ``record`` (with ``seq`` and ``prev`` added); the line written. With
        ``prompt`` (the request's body and its answer), its record goes to the day's prompt
        file first and the line carries the record's sha256 (``prompt_sha256``)."""
        now = float(self._clock())
        moment = dt.datetime.fromtimestamp(now, dt.UTC)
        day = moment.date().isoformat()
        when = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        line = {"time": when, **record, "seq": self.seq + 1, "prev": self.head}
        if prompt is not None:
            kept = {"time": when, **prompt, "seq": self.seq + 1}
            content = json.dumps(kept, sort_keys=True, separators=(",", ":")).encode("utf-8")
            try:
                os.write(self._open_prompts(day), content + b"\n")
                line["prompt_sha256"] = line_hash(content)
            except OSError as e:  # the request line is still written, saying so
                line["prompt_error"] = e.strerror or type(e).__name__
        data = json.dumps(line, sort_keys=True, separators=(",", ":")).encode("utf-8")
        os.write(self._open(day), data + b"\n")
        self.seq += 1
        self.head = line_hash(data)
        return data.decode("utf-8")

    def prune_prompts(self, retention_days: int, now: float | None = None) -> list[str]:
        """Delete the prompt files of UTC days more than ``retention_days`` before today (a
        record is kept at least that many whole days, and gone within a day after); the names
        deleted. The request files are never touched: their lines hold only the hashes."""
        moment = dt.datetime.fromtimestamp(float(self._clock()) if now is None else now, dt.UTC)
        today = moment.date()
        oldest = (today - dt.timedelta(days=retention_days)).isoformat()
        removed: list[str] = []
        for path in prompt_files(self.directory):
            match = _PROMPTS.match(path.name)
            if match is None or match.group(1) >= oldest:
                continue
            if path.name == f"prompts-{self._prompt_day}.jsonl":
                self._close_prompts()
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            removed.append(path.name)
        self.pruned_on = today.isoformat()
        return removed

    def _close_prompts(self) -> None:
        if self._prompt_fd is not None:
            os.close(self._prompt_fd)
            self._prompt_fd = None
            self._prompt_day = ""

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._close_prompts()


@dataclass(frozen=True)
class Break:
    """The first place the chain does not hold: ``file`` and 1-based ``line``, and why."""

    file: str
    line: int
    problem: str

    def text(self) -> str:
        if not self.line:  # the file as a whole
            return f"{self.file}: {self.problem}"
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


def digest_lines(content: bytes) -> list[tuple[int, int | None, str]]:
    """Each line of a prompt file as (1-based line number, its ``seq`` or ``None`` when the line
    does not parse, sha256 of its bytes): what ``hearth logs verify`` needs of a prompt file,
    computed on the host so that no prompt leaves it (``hearth.commands.logs`` runs the same
    steps there)."""
    lines = content.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    found: list[tuple[int, int | None, str]] = []
    for number, raw in enumerate(lines, start=1):
        try:
            seq: int | None = int(json.loads(raw)["seq"])
        except (ValueError, KeyError, TypeError):
            seq = None
        found.append((number, seq, line_hash(raw)))
    return found


def verify_prompts(
    files: Sequence[tuple[str, bytes]],
    prompts: Sequence[tuple[str, Sequence[tuple[int, int | None, str]]]],
) -> list[Break]:
    """Check kept prompt records against the request lines that hold their hashes: ``files``
    are the request files (name, content), ``prompts`` each prompt file's name and
    :func:`digest_lines`. Every record must hash to the ``prompt_sha256`` of the request line
    with its ``seq``; every request line of a day whose prompt file is kept must find its record
    there. A day's prompt file deleted whole (retention) is not a problem. The problems, in
    file order (empty: every kept record holds)."""
    recorded: dict[int, tuple[str, int, str]] = {}  # seq -> request file, line, prompt_sha256
    by_day: dict[str, list[int]] = {}
    for name, content in files:
        match = _FILE.match(name)
        for number, raw in enumerate(content.splitlines(), start=1):
            try:
                record = json.loads(raw)
                digest, seq = record["prompt_sha256"], int(record["seq"])
            except (ValueError, KeyError, TypeError):
                continue
            if not isinstance(digest, str):
                continue
            recorded[seq] = (name, number, digest)
            if match is not None:
                by_day.setdefault(match.group(1), []).append(seq)
    problems: list[Break] = []
    for name, digests in prompts:
        seen: set[int] = set()
        for number, found, digest in digests:
            if found is None:
                problems.append(Break(name, number, "not a prompt record (edited)"))
                continue
            seq = found
            seen.add(seq)
            where = recorded.get(seq)
            if where is None:
                problems.append(Break(
                    name, number,
                    f"no request line records a prompt of seq {seq} (added, or its line's "
                    "prompt_sha256 removed)",
                ))  # fmt: skip
            elif where[2] != digest:
                problems.append(Break(
                    name, number,
                    f"edited: its hash is not the one request line seq {seq} ({where[0]}:"
                    f"{where[1]}) records",
                ))  # fmt: skip
        match = _PROMPTS.match(name)
        for seq in by_day.get(match.group(1) if match else "", []):
            if seq not in seen:
                file, line, _ = recorded[seq]
                problems.append(Break(
                    name, 0,
                    f"the prompt record of seq {seq} ({file}:{line}) was removed from it",
                ))  # fmt: skip
    return problems


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
