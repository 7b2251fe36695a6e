"""The hash-chained request log: written across a daily rotation and a restart, and the pure
verifier naming the first edited, removed or reordered line."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from hearth.frontdoor import reqlog


def write(directory: Path, count: int, start: dt.datetime, step_hours: float = 1) -> None:
    moment = [start.timestamp()]
    log = reqlog.RequestLog(directory, clock=lambda: moment[0])
    for i in range(count):
        log.write({"key": "lab", "model": "smollm2", "status": 200, "n": i})
        moment[0] += step_hours * 3600
    log.close()


def contents(directory: Path) -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in reqlog.log_files(directory)]


@pytest.fixture
def logged(tmp_path: Path) -> Path:
    # 30 lines, one an hour from 2026-11-27 20:00: two rotations, then a restart that goes on
    write(tmp_path, 20, dt.datetime(2026, 11, 27, 20, tzinfo=dt.UTC))
    write(tmp_path, 10, dt.datetime(2026, 11, 28, 16, tzinfo=dt.UTC))
    return tmp_path


def test_the_chain_runs_across_rotations_and_restarts(logged: Path) -> None:
    names = [p.name for p in reqlog.log_files(logged)]
    assert names == ["requests-2026-11-27.jsonl", "requests-2026-11-28.jsonl",
                     "requests-2026-11-29.jsonl"]  # fmt: skip
    assert reqlog.verify_chain(contents(logged)) == (30, None)
    second = (logged / names[1]).read_bytes().splitlines()
    first = (logged / names[0]).read_bytes().splitlines()
    assert json.loads(second[0])["prev"] == reqlog.line_hash(first[-1])
    assert json.loads(second[0])["seq"] == 5
    assert json.loads(first[0])["prev"] == reqlog.GENESIS


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_an_edited_line_is_named(logged: Path) -> None:
    target = logged / "requests-2026-11-28.jsonl"
    lines = _lines(target)
    lines[6] = lines[6].replace(b'"status":200', b'"status":500')
    target.write_bytes(b"".join(lines))
    checked, found = reqlog.verify_chain(contents(logged))
    assert found is not None and (found.file, found.line) == (target.name, 7)
    assert found.problem.startswith("edited")
    assert checked == 4 + 7


def test_a_removed_line_is_named(logged: Path) -> None:
    target = logged / "requests-2026-11-28.jsonl"
    lines = _lines(target)
    del lines[3]
    target.write_bytes(b"".join(lines))
    _, found = reqlog.verify_chain(contents(logged))
    assert found is not None and (found.file, found.line) == (target.name, 4)
    assert "removed" in found.problem and "seq 9, expected 8" in found.problem


def test_reordered_lines_are_named(logged: Path) -> None:
    target = logged / "requests-2026-11-28.jsonl"
    lines = _lines(target)
    lines[2], lines[3] = lines[3], lines[2]
    target.write_bytes(b"".join(lines))
    _, found = reqlog.verify_chain(contents(logged))
    assert found is not None and (found.file, found.line) == (target.name, 3)
    assert "removed" in found.problem  # seq 8 where 7 was due: the first out of place


def test_a_whole_days_file_removed_is_found(logged: Path) -> None:
    (logged / "requests-2026-11-28.jsonl").unlink()
    _, found = reqlog.verify_chain(contents(logged))
    assert found is not None and (found.file, found.line) == ("requests-2026-11-29.jsonl", 1)


def test_a_line_that_is_not_json_is_named(logged: Path) -> None:
    target = logged / "requests-2026-11-27.jsonl"
    target.write_bytes(target.read_bytes() + b"nonsense\n")
    _, found = reqlog.verify_chain(contents(logged))
    assert found is not None and (found.file, found.line) == (target.name, 5)


def test_the_oldest_remaining_line_may_start_anywhere(logged: Path) -> None:
    (logged / "requests-2026-11-27.jsonl").unlink()  # retention removed the oldest day
    assert reqlog.verify_chain(contents(logged)) == (26, None)
