"""Prompts and answers in the request log, only when a site opts in, with a retention: the real
front door in a real uvicorn (a fake engine behind it), OpenAI's client and plain httpx in front,
and ``hearth logs verify``'s own fetch script run here on the state directory, as it runs on a
host (bash, base64, python3)."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from test_frontdoor_openai import CONFIG, KEY, WARD, serve

from hearth.commands import logs
from hearth.frontdoor import config as fd_config
from hearth.frontdoor import reqlog

KEYS = fd_config.parse_keys(
    {
        "keys": [
            {"name": "lab", "sha256": fd_config.hash_key(KEY)},
            {"name": "ward7", "sha256": fd_config.hash_key(WARD), "models": ["chat"]},
        ]
    }
)
QUESTION = "capital of France?"


def front_door(state: Path, **prompts: Any) -> Any:
    raw = {**CONFIG, "state_dir": str(state)}
    if prompts:
        raw["prompts"] = prompts
    return serve(fd_config.parse_config(raw), KEYS)


def traffic(port: int) -> None:
    """A chat (through the alias), a raw completion, a streamed chat, and one refused (403)."""
    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0, timeout=10
    )
    messages: Any = [{"role": "user", "content": QUESTION}]
    client.chat.completions.create(model="chat", messages=messages)
    client.completions.create(model="smollm2", prompt="The capital of France is")
    stream = client.chat.completions.create(model="smollm2", messages=messages, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Paris"
    refused = httpx.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        headers={"Authorization": f"Bearer {WARD}"},
        json={"model": "smollm2", "messages": messages},
    )
    assert refused.status_code == 403


def request_lines(state: Path) -> list[dict[str, Any]]:
    files = reqlog.log_files(state)
    return [json.loads(line) for path in files for line in path.read_text().splitlines()]


def fetch(state: Path, port: int = 1) -> logs.HostLog:
    """What ``hearth logs verify`` reads of a host, by its own script (run here, not over SSH)."""
    script = logs.fetch_script(str(state), port)
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    return logs.parse_fetch("door01", done.stdout)


@pytest.fixture
def logged(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    state = tmp_path / "state"
    state.mkdir()
    with front_door(state, log=True, retention_days=7) as port:
        traffic(port)
        yield state, port


def test_without_the_opt_in_no_prompt_is_written_anywhere(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    with front_door(state) as port:
        traffic(port)
    assert reqlog.prompt_files(state) == []
    lines = request_lines(state)
    assert len(lines) == 4 and not any("prompt_sha256" in line for line in lines)
    everything = b"".join(p.read_bytes() for p in state.iterdir() if p.is_file())
    assert QUESTION.encode() not in everything and b"Paris" not in everything


def test_with_the_opt_in_each_prompt_and_answer_is_bound_to_its_request_line(
    logged: tuple[Path, int],
) -> None:
    state, _ = logged
    (prompts,) = reqlog.prompt_files(state)
    assert stat.S_IMODE(prompts.stat().st_mode) == 0o600
    assert prompts.stat().st_uid == os.getuid()
    raw = prompts.read_bytes().splitlines()
    records = [json.loads(line) for line in raw]
    by_seq = {line["seq"]: line for line in request_lines(state)}
    assert [(r["endpoint"], r["model"], r["answer"]) for r in records] == [
        ("/v1/chat/completions", "smollm2", "Paris"),
        ("/v1/completions", "smollm2", " Paris"),
        ("/v1/chat/completions", "smollm2", "Paris"),  # streamed: the copy kept while relayed
        ("/v1/chat/completions", "smollm2", None),  # refused (403): asked, never answered
    ]
    assert records[0]["request"]["model"] == "chat"  # as the client sent it (the alias)
    assert records[0]["request"]["messages"] == [{"role": "user", "content": QUESTION}]
    assert records[1]["request"]["prompt"] == "The capital of France is"
    assert records[2]["request"]["stream"] is True
    for line, record in zip(raw, records, strict=True):
        request = by_seq[record["seq"]]
        assert request["prompt_sha256"] == reqlog.line_hash(line)
        assert request["time"] == record["time"] and request["key"] == record["key"]
        assert "request" not in request and "answer" not in request
    assert [by_seq[r["seq"]]["status"] for r in records] == [200, 200, 200, 403]
    everything = b"".join(p.read_bytes() for p in state.iterdir() if p.is_file())
    assert KEY.encode() not in everything and WARD.encode() not in everything
    assert fd_config.hash_key(KEY).encode() not in everything


def test_verify_checks_the_kept_records_with_the_hosts_own_digests(
    logged: tuple[Path, int],
) -> None:
    state, port = logged
    fetched = fetch(state, port)
    assert fetched.head is not None and fetched.head["seq"] == 4
    ((name, digests),) = fetched.prompts
    assert name.startswith("prompts-") and len(digests) == 4
    assert digests == reqlog.digest_lines(reqlog.prompt_files(state)[0].read_bytes())
    assert logs.verify_host(fetched) == (4, None)


def test_verify_names_an_edited_prompt_record(logged: tuple[Path, int]) -> None:
    state, port = logged
    (prompts,) = reqlog.prompt_files(state)
    lines = prompts.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b'" Paris"', b'" Lyon"')
    prompts.write_bytes(b"".join(lines))
    checked, problem = logs.verify_host(fetch(state, port))
    assert checked == 4  # the chain itself holds
    assert problem is not None and problem.startswith(f"{prompts.name}:2: edited")
    assert "seq 2" in problem and "requests-" in problem


def test_verify_names_a_removed_or_garbled_prompt_record(logged: tuple[Path, int]) -> None:
    state, port = logged
    (prompts,) = reqlog.prompt_files(state)
    lines = prompts.read_bytes().splitlines(keepends=True)
    prompts.write_bytes(b"".join([lines[0], b"nonsense\n", *lines[3:]]))
    _, problem = logs.verify_host(fetch(state, port))
    assert problem is not None and problem.startswith(f"{prompts.name}:2: not a prompt record")
    problems = reqlog.verify_prompts(
        [(p.name, p.read_bytes()) for p in reqlog.log_files(state)],
        [(prompts.name, reqlog.digest_lines(prompts.read_bytes()))],
    )
    assert [b.text() for b in problems[1:]] == [
        f"{prompts.name}: the prompt record of seq {seq} "
        f"({reqlog.log_files(state)[0].name}:{seq}) was removed from it"
        for seq in (2, 3)
    ]


def test_the_chain_holds_after_the_prompt_files_are_deleted(logged: tuple[Path, int]) -> None:
    state, port = logged
    before = [p.read_bytes() for p in reqlog.log_files(state)]
    for path in reqlog.prompt_files(state):
        path.unlink()
    fetched = fetch(state, port)
    assert fetched.prompts == []
    assert logs.verify_host(fetched) == (4, None)
    assert [p.read_bytes() for p in reqlog.log_files(state)] == before


def test_the_front_door_deletes_prompt_files_past_the_retention(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    today = dt.datetime.now(dt.UTC).date()

    def day_file(days_ago: int) -> Path:
        path = state / f"prompts-{(today - dt.timedelta(days=days_ago)).isoformat()}.jsonl"
        path.write_text("{}\n")
        return path

    old, kept = day_file(3), day_file(2)  # with a retention of 2 days
    with front_door(state, log=True, retention_days=2) as port:
        assert not old.exists() and kept.exists()  # at start
        door = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            headers={"Authorization": f"Bearer {KEY}"},
            json={"model": "smollm2", "messages": [{"role": "user", "content": QUESTION}]},
        )
        assert door.status_code == 200
        assert len(reqlog.prompt_files(state)) == 2  # today's came, the kept one stays
        assert all(path.name.startswith("requests-") for path in reqlog.log_files(state))


def test_pruning_runs_again_on_the_first_request_of_a_new_day(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    config = fd_config.parse_config({**CONFIG, "state_dir": str(state),
                                     "prompts": {"log": False, "retention_days": 1}})  # fmt: skip
    from hearth.frontdoor.app import FrontDoor

    door = FrontDoor(config, KEYS, log=lambda _line: None)
    old = state / "prompts-2020-01-01.jsonl"
    old.write_text("{}\n")  # left from when the site logged prompts
    door._record(None, "/v1/models", 200, KEYS[0], 0.0)
    assert old.exists()  # the same day: not looked at again
    door._prune_day -= 1  # as if the last pruning was yesterday
    door._record(None, "/v1/models", 200, KEYS[0], 0.0)
    assert not old.exists()  # retention applies even with the logging now off
    assert reqlog.prompt_files(state) == []


def test_retention_keeps_whole_days() -> None:
    now = dt.datetime(2026, 11, 28, 0, 30, tzinfo=dt.UTC).timestamp()
    names = [f"prompts-2026-11-{d:02d}.jsonl" for d in range(24, 29)]
    kept = {days: sorted(set(names) - set(_pruned(names, days, now))) for days in (1, 3)}
    assert kept[1] == names[-2:]  # yesterday's (begun 24.5 h ago) and today's
    assert kept[3] == names[-4:]


def _pruned(names: list[str], days: int, now: float) -> list[str]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            (Path(tmp) / name).write_text("")
        (Path(tmp) / "requests-2026-11-20.jsonl").write_text("")
        removed = reqlog.RequestLog(Path(tmp)).prune_prompts(days, now)
        assert (Path(tmp) / "requests-2026-11-20.jsonl").exists()
        return removed


@pytest.mark.parametrize(
    ("prompts", "message"),
    [
        ({"log": "yes"}, "prompts: expected {log: true|false"),
        ({"log": True, "retention_days": 0}, "prompts.retention_days: expected a positive"),
        ({"retention_days": True}, "prompts.retention_days"),
    ],
)
def test_bad_prompt_settings_are_refused(prompts: dict[str, Any], message: str) -> None:
    with pytest.raises(fd_config.ConfigError, match=message.replace("|", r"\|")):
        fd_config.parse_config({**CONFIG, "state_dir": "/tmp/state", "prompts": prompts})
    with pytest.raises(fd_config.ConfigError, match="needs a state_dir"):
        fd_config.parse_config({**CONFIG, "prompts": {"log": True}})


def test_a_prompt_that_cannot_be_written_still_leaves_its_request_line(tmp_path: Path) -> None:
    moment = dt.datetime(2026, 11, 28, 9, tzinfo=dt.UTC).timestamp()
    (tmp_path / "prompts-2026-11-28.jsonl").mkdir()  # unwritable as a file
    log = reqlog.RequestLog(tmp_path, clock=lambda: moment)
    log.write({"key": "lab", "status": 200}, {"request": {"prompt": QUESTION}, "answer": "x"})
    log.close()
    (line,) = request_lines(tmp_path)
    assert line["prompt_error"] and "prompt_sha256" not in line
    assert (
        reqlog.verify_chain([(p.name, p.read_bytes()) for p in reqlog.log_files(tmp_path)])[1]
        is None
    )
