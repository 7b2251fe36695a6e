"""The front door as a gateway: per-key policies (models, rpm, tpm, concurrency, daily quota,
expiry, a rotated key's overlap), aliases, the OpenAI gaps (GET /v1/models/{id}, a body without
``model``, embeddings only from models that serve them), per-key usage metrics and the
hash-chained request log, against engines replaced by httpx's MockTransport."""

from __future__ import annotations

import datetime as dt
import json
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from hearth.frontdoor import config as fd_config
from hearth.frontdoor import policy, reqlog
from hearth.frontdoor.app import create_app

KEY = "hearth-test-key-0123456789abcdef"
WARD = "hearth-ward7-key-0123456789abcdef"
SLOW = "hearth-slow-key-0123456789abcdef"
OLD = "hearth-old-key-0123456789abcdef00"

CONFIG: dict[str, Any] = {
    "listen": {"host": "127.0.0.1", "port": 8090},
    "keys_file": "/nonexistent/keys.json",
    "aliases": {"chat": "smollm2"},
    "models": {
        "smollm2": {
            "engine": "llamacpp", "version": "v1", "api": "openai",
            "backends": ["http://engine:8080"],
        },
        "embedder": {
            "engine": "llamacpp", "version": "v2", "api": "openai",
            "backends": ["http://engine:8081"], "embeddings": True,
        },
    },
}  # fmt: skip


def engine(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content) if request.content else {}
    if request.url.path == "/v1/embeddings":
        return httpx.Response(
            200,
            json={
                "object": "list",
                "model": body["model"],
                "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
                "usage": {"prompt_tokens": 3, "total_tokens": 3},
            },
        )
    return httpx.Response(
        200,
        json={
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Paris"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10},
        },
    )


def keys_entries(**extra: Any) -> list[dict[str, Any]]:
    return [
        {"name": "lab", "sha256": fd_config.hash_key(KEY)},
        {"name": "ward7", "sha256": fd_config.hash_key(WARD), "models": ["chat"], **extra},
    ]


def make(tmp_path: Path, entries: list[dict[str, Any]], **config: Any) -> TestClient:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    raw = {**CONFIG, "state_dir": str(state), **config}
    keys = fd_config.parse_keys({"keys": entries})
    return TestClient(create_app(fd_config.parse_config(raw), keys, httpx.MockTransport(engine)))


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with make(tmp_path, keys_entries()) as test_client:
        yield test_client


def auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def chat(model: str = "smollm2") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "capital of France?"}]}


def metric(client: TestClient, name: str, **labels: str) -> float:
    total = 0.0
    for line in client.get("/metrics").text.splitlines():
        if line.startswith((name + "{", name + " ")) and all(
            f'{k}="{v}"' in line for k, v in labels.items()
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


# ------------------------------------------------------------------------------ models, aliases


def test_models_lists_aliases_and_retrieve_answers_one_or_a_json_404(client: TestClient) -> None:
    listed = {m["id"]: m["hearth"] for m in client.get("/v1/models", headers=auth()).json()["data"]}
    assert listed == {
        "smollm2": {"engine": "llamacpp", "version": "v1", "embeddings": False},
        "embedder": {"engine": "llamacpp", "version": "v2", "embeddings": True},
        "chat": {"engine": "llamacpp", "version": "v1", "embeddings": False, "alias_of": "smollm2"},
    }
    one = client.get("/v1/models/chat", headers=auth())
    assert (one.status_code, one.json()["id"], one.json()["object"]) == (200, "chat", "model")
    missing = client.get("/v1/models/gpt-4", headers=auth())
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"
    assert "smollm2" in missing.json()["error"]["message"]
    assert client.get("/v1/models/chat").status_code == 401


def test_an_alias_reaches_its_model_under_the_models_own_name(client: TestClient) -> None:
    answer = client.post("/v1/chat/completions", headers=auth(), json=chat("chat"))
    assert answer.status_code == 200
    assert answer.json()["model"] == "smollm2"  # the engine saw the model's own name


def test_a_body_without_a_model_is_a_400(client: TestClient) -> None:
    answer = client.post(
        "/v1/chat/completions", headers=auth(), json={"messages": [{"role": "user"}]}
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "model_required"


def test_embeddings_only_from_a_model_declared_to_serve_them(client: TestClient) -> None:
    refused = client.post("/v1/embeddings", headers=auth(), json={"model": "smollm2", "input": "x"})
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "embeddings_not_served" and "embedder" in error["message"]
    served = client.post("/v1/embeddings", headers=auth(), json={"model": "embedder", "input": "x"})
    assert served.status_code == 200 and served.json()["data"][0]["embedding"] == [0.1, 0.2]


def test_aliases_that_shadow_a_model_or_point_nowhere_are_refused() -> None:
    with pytest.raises(fd_config.ConfigError, match=r"aliases\.smollm2"):
        fd_config.parse_config({**CONFIG, "aliases": {"smollm2": "embedder"}})
    with pytest.raises(fd_config.ConfigError, match=r"aliases\.chat: 'gone'"):
        fd_config.parse_config({**CONFIG, "aliases": {"chat": "gone"}})


# ------------------------------------------------------------------------------------- policies


def test_a_key_limited_to_models_gets_403_naming_the_allowed_ones(client: TestClient) -> None:
    assert client.post("/v1/chat/completions", headers=auth(WARD), json=chat("chat")).is_success
    refused = client.post("/v1/chat/completions", headers=auth(WARD), json=chat("embedder"))
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "model_not_allowed"
    assert "allowed: chat" in refused.json()["error"]["message"]
    assert metric(client, "hearth_frontdoor_key_refusals_total", key_name="ward7") == 1


def test_rpm_refuses_with_retry_after_then_admits_after_the_window() -> None:
    now = [1_000_000.0]
    limiter = policy.Limiter(clock=lambda: now[0])
    rules = {"rpm": 2}
    assert limiter.admit("k", rules) is None
    limiter.finish("k", rules, 0)
    now[0] += 10
    assert limiter.admit("k", rules) is None
    limiter.finish("k", rules, 0)
    refusal = limiter.admit("k", rules)
    assert refusal is not None and (refusal.status, refusal.retry_after) == (429, 50)
    now[0] += 50
    assert limiter.admit("k", rules) is None


def test_rpm_over_http_is_429_with_retry_after(tmp_path: Path) -> None:
    with make(tmp_path, keys_entries(rpm=2)) as client:
        codes = [
            client.post("/v1/chat/completions", headers=auth(WARD), json=chat("chat"))
            for _ in range(3)
        ]
        assert [c.status_code for c in codes] == [200, 200, 429]
        assert 1 <= int(codes[2].headers["retry-after"]) <= 60
        assert codes[2].json()["error"]["code"] == "rate_limit_exceeded"
        # another key is not limited by ward7's window
        assert client.post("/v1/chat/completions", headers=auth(), json=chat()).is_success


def test_tpm_counts_the_tokens_answered() -> None:
    now = [1_000_000.0]
    limiter = policy.Limiter(clock=lambda: now[0])
    rules = {"tpm": 15}
    assert limiter.admit("k", rules) is None
    limiter.finish("k", rules, 10)
    now[0] += 30
    assert limiter.admit("k", rules) is None
    limiter.finish("k", rules, 10)
    refusal = limiter.admit("k", rules)
    assert refusal is not None and refusal.code == "token_rate_exceeded"
    assert refusal.retry_after == 30  # the first 10 leave the window 60 s after they came
    now[0] += 30
    assert limiter.admit("k", rules) is None


def test_max_concurrent_counts_requests_until_they_finish() -> None:
    limiter = policy.Limiter()
    rules = {"max_concurrent": 1}
    assert limiter.admit("k", rules) is None
    refusal = limiter.admit("k", rules)
    assert refusal is not None and (refusal.code, refusal.retry_after) == (
        "concurrency_exceeded",
        1,
    )
    limiter.finish("k", rules, 0)
    assert limiter.admit("k", rules) is None


def test_the_daily_quota_persists_across_a_restart_and_resets_at_midnight(tmp_path: Path) -> None:
    state = tmp_path / "quota.json"
    now = [dt.datetime(2026, 11, 28, 23, 0, tzinfo=dt.UTC).timestamp()]
    rules = {"tokens_per_day": 20}
    first = policy.Limiter(state, clock=lambda: now[0])
    assert first.admit("k", rules) is None
    first.finish("k", rules, 25)
    assert json.loads(state.read_text()) == {"day": "2026-11-28", "tokens": {"k": 25}}
    restarted = policy.Limiter(state, clock=lambda: now[0])  # the front door restarted
    refusal = restarted.admit("k", rules)
    assert refusal is not None and refusal.code == "daily_quota_exceeded"
    assert refusal.retry_after == 3600
    now[0] += 3600
    assert restarted.admit("k", rules) is None


def test_an_expired_key_is_401_expired_and_its_expiry_is_exported(tmp_path: Path) -> None:
    entries = [
        {"name": "lab", "sha256": fd_config.hash_key(KEY), "expires": "2099-01-01"},
        {"name": "gone", "sha256": fd_config.hash_key(WARD), "expires": "2020-01-01"},
    ]
    with make(tmp_path, entries) as client:
        refused = client.get("/v1/models", headers=auth(WARD))
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "expired"
        assert "2020-01-01T00:00:00Z" in refused.json()["error"]["message"]
        assert client.get("/v1/models", headers=auth()).status_code == 200
        gauge = "hearth_frontdoor_key_expiry_timestamp_seconds"
        assert metric(client, gauge, key_name="lab") == policy.parse_expiry("2099-01-01")
        assert metric(client, gauge, key_name="gone") == policy.parse_expiry("2020-01-01")


def test_a_rotated_keys_old_value_works_during_the_overlap_only(tmp_path: Path) -> None:
    later = dt.datetime.fromtimestamp(time.time() + 3600, dt.UTC).isoformat()
    entries = [
        {"name": "lab", "sha256": fd_config.hash_key(KEY)},
        {"name": "lab", "sha256": fd_config.hash_key(OLD), "not_after": later},
        {"name": "lab", "sha256": fd_config.hash_key(SLOW), "not_after": "2020-01-01T00:00:00Z"},
    ]
    with make(tmp_path, entries) as client:
        assert client.get("/v1/models", headers=auth()).status_code == 200
        assert client.get("/v1/models", headers=auth(OLD)).status_code == 200
        ended = client.get("/v1/models", headers=auth(SLOW))
        assert ended.status_code == 401 and ended.json()["error"]["code"] == "key_rotated"


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("rpm", 0, "rpm: expected a positive integer"),
        ("tpm", -5, "tpm: expected a positive integer"),
        ("max_input_bytes", 0, "max_input_bytes: expected a positive integer"),
        ("expires", "next tuesday", "expires: expected a date"),
        ("models", "chat", "models: expected a list"),
    ],
)
def test_a_keys_file_with_a_bad_policy_is_refused_naming_the_key(
    field: str, value: object, words: str
) -> None:
    with pytest.raises(fd_config.ConfigError, match=rf"keys\[1\] \(ward7\): {words}"):
        fd_config.parse_keys({"keys": keys_entries(**{field: value})})


def test_usage_is_counted_per_key_model_and_kind(client: TestClient) -> None:
    for _ in range(2):
        client.post("/v1/chat/completions", headers=auth(WARD), json=chat("chat"))
    name = "hearth_frontdoor_key_tokens_total"
    assert metric(client, name, key_name="ward7", model="smollm2", kind="prompt") == 18
    assert metric(client, name, key_name="ward7", model="smollm2", kind="completion") == 2
    assert metric(client, name, key_name="lab") == 0


# ---------------------------------------------------------------------------------- request log


def test_every_request_is_one_chained_line_without_the_key(
    client: TestClient, tmp_path: Path
) -> None:
    client.post("/v1/chat/completions", headers=auth(WARD), json=chat("chat"))
    client.post("/v1/chat/completions", headers=auth(WARD), json=chat("embedder"))
    client.get("/v1/models", headers=auth("wrong-key-0123456789abcdef012345"))
    files = reqlog.log_files(tmp_path / "state")
    assert len(files) == 1
    text = files[0].read_text()
    assert WARD not in text and fd_config.hash_key(WARD) not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert [(r["key"], r["model"], r["status"], r["seq"]) for r in lines] == [
        ("ward7", "smollm2", 200, 1),
        ("ward7", "embedder", 403, 2),
        ("", "", 401, 3),
    ]
    assert lines[0]["alias"] == "chat" and lines[0]["version"] == "v1"
    assert lines[0]["prompt_tokens"] == 9 and lines[0]["client"] == "testclient"
    assert lines[0]["prev"] == reqlog.GENESIS
    assert lines[1]["prev"] == reqlog.line_hash(text.splitlines()[0].encode())
    health = client.get("/health").json()
    assert health["request_log"]["seq"] == 3
    assert health["request_log"]["head"] == reqlog.line_hash(text.splitlines()[2].encode())


def test_keys_file_entries_carry_policies_and_drop_a_rotated_value_after_its_overlap() -> None:
    now = policy.parse_expiry("2026-11-28T12:00:00Z")
    declared = [
        {
            "name": "ward7",
            "key": WARD,
            "models": ["chat"],
            "rpm": 60,
            "expires": dt.date(2027, 1, 1),
            "previous": [
                {"key": OLD, "until": "2026-11-29T00:00:00Z"},
                {"key": SLOW, "until": "2026-11-28T00:00:00Z"},
            ],
        }
    ]
    entries = policy.keys_file_entries(declared, now)
    assert entries == [
        {
            "name": "ward7", "sha256": fd_config.hash_key(WARD), "models": ["chat"], "rpm": 60,
            "expires": "2027-01-01",
        },
        {
            "name": "ward7", "sha256": fd_config.hash_key(OLD), "models": ["chat"], "rpm": 60,
            "expires": "2027-01-01", "not_after": "2026-11-29T00:00:00Z",
        },
    ]  # fmt: skip
    assert WARD not in json.dumps(entries) and OLD not in json.dumps(entries)
    assert [k.name for k in fd_config.parse_keys({"keys": entries})] == ["ward7", "ward7"]


def test_the_daily_counts_are_written_at_most_once_a_second_and_at_a_stop(tmp_path: Path) -> None:
    state = tmp_path / "quota.json"
    now = [dt.datetime(2026, 11, 28, 12, tzinfo=dt.UTC).timestamp()]
    rules = {"tokens_per_day": 1000}
    limiter = policy.Limiter(state, clock=lambda: now[0])
    for tokens in (10, 20):
        assert limiter.admit("k", rules) is None
        limiter.finish("k", rules, tokens)
    assert json.loads(state.read_text())["tokens"] == {"k": 10}  # the second within the second
    limiter.save()  # what the front door's shutdown does
    assert json.loads(state.read_text())["tokens"] == {"k": 30}


def test_tls_needs_both_a_certificate_and_a_key() -> None:
    with pytest.raises(fd_config.ConfigError, match="tls: expected"):
        fd_config.parse_config({**CONFIG, "tls": {"cert": "/etc/hearth/frontdoor/tls.crt"}})
    both = fd_config.parse_config({**CONFIG, "tls": {"cert": "/c.pem", "key": "/k.pem"}})
    assert (both.tls_cert, both.tls_key) == (Path("/c.pem"), Path("/k.pem"))
