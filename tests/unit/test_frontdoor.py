"""The front door without a network: its configuration, API keys and routing, against engines
replaced by httpx's MockTransport (answers shaped like llama.cpp's and Triton's real ones)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

with warnings.catch_warnings():  # Starlette 1.x suggests httpx2 for its test client; httpx works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from hearth.frontdoor import config as fd_config
from hearth.frontdoor.__main__ import run
from hearth.frontdoor.app import create_app

KEY = "hearth-test-key-0123456789abcdef"
OTHER = "hearth-other-key-fedcba9876543210"

CONFIG = {
    "listen": {"host": "127.0.0.1", "port": 8090},
    "keys_file": "/nonexistent/keys.json",
    "timeouts": {"connect": 1, "read": 5},
    "max_body_bytes": 4096,
    "models": {
        "smollm2": {
            "engine": "llamacpp",
            "version": "v1",
            "api": "openai",
            "backends": ["http://down:8080", "http://engine:8080"],
        },
        "upper": {
            "engine": "triton",
            "version": "1",
            "api": "kserve",
            "backends": ["http://triton:8000"],
            "text": {"input": "TEXT", "output": "UPPER"},
        },
    },
}


class Engines:
    """Fake engines: ``down`` refuses connections; ``engine`` is llama.cpp; ``triton`` Triton."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        self.seen.append((request.url.host, request.url.path, body))
        if request.url.host == "down":
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path == "/v1/chat/completions" and body.get("stream"):
            chunks = [
                {"choices": [{"index": 0, "delta": {"content": word}}]} for word in ("Pa", "ris")
            ]
            chunks.append({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2}})
            text = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
            return httpx.Response(
                200, content=text.encode(), headers={"content-type": "text/event-stream"}
            )
        if request.url.path == "/v1/chat/completions":
            return httpx.Response(
                200,
                json={
                    "model": body["model"],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris"}}],
                    "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10},
                },
            )
        if request.url.path == "/v2/models/upper/infer":
            data = body["inputs"][0]["data"]
            return httpx.Response(
                200,
                json={
                    "model_name": "upper",
                    "outputs": [
                        {
                            "name": "UPPER",
                            "datatype": "BYTES",
                            "shape": [len(data)],
                            "data": [d.upper() for d in data],
                        }
                    ],
                },
            )
        if request.url.path == "/v2/models/upper/ready":
            return httpx.Response(200)
        return httpx.Response(404, json={"error": "not found"})


@pytest.fixture
def engines() -> Engines:
    return Engines()


@pytest.fixture
def logged() -> list[str]:
    return []


@pytest.fixture
def client(engines: Engines, logged: list[str]) -> Iterator[TestClient]:
    keys = [
        fd_config.ApiKey("lab", fd_config.hash_key(KEY)),
        fd_config.ApiKey("ops", fd_config.hash_key(OTHER)),
    ]
    app = create_app(
        fd_config.parse_config(CONFIG), keys, httpx.MockTransport(engines), logged.append
    )
    with TestClient(app) as test_client:
        yield test_client


def auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def chat(model: str = "smollm2", **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "capital of France?"}],
        **extra,
    }


def metric(client: TestClient, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    total = 0.0
    for line in client.get("/metrics").text.splitlines():
        sample = line.startswith((name + "{", name + " "))
        if sample and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


# ------------------------------------------------------------------------------- keys, config
def test_keys_are_compared_as_hashes_in_constant_time() -> None:
    keys = [fd_config.ApiKey("a", fd_config.hash_key("k1")), fd_config.ApiKey("b", "0" * 64)]
    found = fd_config.verify_key("k1", keys)
    assert found is not None and found.name == "a"
    assert fd_config.verify_key("k2", keys) is None
    assert fd_config.verify_key("", keys) is None and fd_config.verify_key(None, keys) is None
    # the hash Ansible's hash('sha256') filter writes
    assert fd_config.hash_key("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"listen": {"port": 0}}, "listen.port: expected 1-65535"),
        ({"models": {"x": {"api": "grpc", "backends": ["http://a:1"]}}}, "api: expected one of"),
        ({"models": {"x": {"api": "openai", "backends": ["a:1"]}}}, "backends: expected a list"),
        ({"models": {"X!": {"api": "openai", "backends": ["http://a:1"]}}}, "not a model name"),
        ({"timeouts": {"read": -1}}, "timeouts: read: expected a positive number"),
    ],
)
def test_bad_configuration_is_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(fd_config.ConfigError, match=message):
        fd_config.parse_config({**CONFIG, **change})


def test_entry_point_refuses_bad_files_and_no_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, keys = tmp_path / "config.json", tmp_path / "keys.json"
    config.write_text(json.dumps({**CONFIG, "keys_file": str(keys)}))
    assert run(["--config", str(config), "--check"]) == 2
    assert f"{keys}: cannot read the keys file" in capsys.readouterr().err
    keys.write_text(json.dumps({"keys": []}))
    assert run(["--config", str(config), "--check"]) == 2
    assert "no API key, refusing to serve" in capsys.readouterr().err
    keys.write_text(json.dumps({"keys": [{"name": "lab", "sha256": fd_config.hash_key(KEY)}]}))
    assert run(["--config", str(config), "--check"]) == 0
    assert "2 model(s), 1 key(s): ok" in capsys.readouterr().out
    keys.write_text(json.dumps({"keys": [{"name": "lab", "sha256": "nothex"}]}))
    assert run(["--config", str(config), "--check"]) == 2
    assert "keys[0]: sha256: expected 64 hex digits" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ the API
def test_no_key_or_a_bad_key_is_401(client: TestClient, engines: Engines) -> None:
    missing = client.post("/v1/chat/completions", json=chat())
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error"]["code"] == "missing_api_key"
    bad = client.post("/v1/chat/completions", json=chat(), headers=auth("nope"))
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"
    assert "nope" not in bad.text
    assert client.get("/v1/models").status_code == 401
    assert client.get("/v2/models/upper/ready").status_code == 401
    assert engines.seen == [], "nothing reaches an engine without a valid key"
    assert metric(client, "hearth_frontdoor_auth_failures_total", reason="missing") == 3
    assert metric(client, "hearth_frontdoor_auth_failures_total", reason="invalid") == 1


def test_chat_is_routed_by_model_with_failover(
    client: TestClient, engines: Engines, logged: list[str]
) -> None:
    answer = client.post("/v1/chat/completions", json=chat(), headers=auth())
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == "Paris"
    hosts = [host for host, _, _ in engines.seen]
    assert hosts in (["engine"], ["down", "engine"])
    second = client.post("/v1/chat/completions", json=chat(), headers=auth(OTHER))
    assert second.status_code == 200
    assert [h for h, _, _ in engines.seen].count("down") == 1, "round robin tried each once"
    assert metric(client, "hearth_frontdoor_requests_total", model="smollm2", status="200") == 2
    assert metric(client, "hearth_frontdoor_requests_total", key="ops") == 1
    assert metric(client, "hearth_frontdoor_tokens_total", model="smollm2", kind="completion") == 2
    assert metric(client, "hearth_frontdoor_backend_errors_total", backend="http://down:8080") == 1
    assert metric(client, "hearth_frontdoor_request_duration_seconds_count", model="smollm2") == 2
    lines = [json.loads(line) for line in logged]
    assert {line["status"] for line in lines} == {200}
    assert all(KEY not in line and OTHER not in line for line in logged)
    assert all("capital" not in line for line in logged), "prompts are never logged"


def test_streaming_passes_events_through_and_counts_tokens(client: TestClient) -> None:
    with client.stream(
        "POST", "/v1/chat/completions", json=chat(stream=True), headers=auth()
    ) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        text = "".join(answer.iter_text())
    assert text.count("data: ") == 4 and text.endswith("data: [DONE]\n\n")
    assert metric(client, "hearth_frontdoor_tokens_total", model="smollm2", kind="prompt") == 9
    assert metric(client, "hearth_frontdoor_tokens_total", model="smollm2", kind="completion") == 2
    assert metric(client, "hearth_frontdoor_time_to_first_byte_seconds_count", model="smollm2") == 1
    assert metric(client, "hearth_frontdoor_requests_in_flight", model="smollm2") == 0


def test_unknown_model_is_404_and_no_client_text_becomes_a_label(client: TestClient) -> None:
    answer = client.post("/v1/chat/completions", json=chat("gpt-4"), headers=auth())
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "model_not_found"
    assert "served: smollm2, upper" in answer.json()["error"]["message"]
    assert 'model="gpt-4"' not in client.get("/metrics").text
    assert metric(client, "hearth_frontdoor_requests_total", model="_unknown", status="404") == 1
    bad = client.post(
        "/v1/chat/completions", content=b"not json", headers={**auth(), "content-type": "x"}
    )
    assert bad.status_code == 400
    big = client.post("/v1/chat/completions", content=b"x" * 5000, headers=auth())
    assert big.status_code == 413


def test_models_are_listed(client: TestClient) -> None:
    answer = client.get("/v1/models", headers=auth())
    assert answer.status_code == 200
    assert [m["id"] for m in answer.json()["data"]] == ["smollm2", "upper"]
    assert answer.json()["data"][1]["hearth"] == {"engine": "triton", "version": "1"}
    assert client.get("/health").json() == {"status": "ok", "models": 2}
    assert metric(client, "hearth_frontdoor_model_info", model="upper", engine="triton") == 1


def test_triton_models_through_kserve_and_as_text_chat(
    client: TestClient, engines: Engines
) -> None:
    ready = client.get("/v2/models/upper/ready", headers=auth())
    assert ready.status_code == 200
    body = {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": ["hi"]}]}
    infer = client.post("/v2/models/upper/infer", json=body, headers=auth())
    assert infer.json()["outputs"][0]["data"] == ["HI"]
    as_chat = client.post("/v1/chat/completions", json=chat("upper"), headers=auth())
    assert as_chat.status_code == 200
    assert as_chat.json()["choices"][0]["message"]["content"] == "CAPITAL OF FRANCE?"
    assert as_chat.json()["model"] == "upper"
    assert client.get("/v2/models/smollm2/ready", headers=auth()).status_code == 404
    assert client.get("/v2/models/upper/config", headers=auth()).status_code == 404
    embeddings = client.post(
        "/v1/embeddings", json={"model": "upper", "input": "x"}, headers=auth()
    )
    assert embeddings.status_code == 400 and "/v2/models/upper/infer" in embeddings.text


def test_no_engine_answering_is_503() -> None:
    route = {"engine": "llamacpp", "version": "v1", "api": "openai", "backends": ["http://down:1"]}
    config = fd_config.parse_config({**CONFIG, "models": {"smollm2": route}})

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    keys = [fd_config.ApiKey("lab", fd_config.hash_key(KEY))]
    with TestClient(create_app(config, keys, httpx.MockTransport(refuse), lambda _: None)) as c:
        answer = c.post("/v1/chat/completions", json=chat(), headers=auth())
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "engine_unavailable"


def test_a_connection_the_engine_closed_is_retried_once() -> None:
    calls: list[str] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.host)
        if len(calls) == 1:
            raise httpx.RemoteProtocolError("Server disconnected", request=request)
        return httpx.Response(200, json={"choices": [], "usage": {"completion_tokens": 1}})

    route = {"engine": "llamacpp", "version": "v1", "api": "openai", "backends": ["http://e:1"]}
    config = fd_config.parse_config({**CONFIG, "models": {"smollm2": route}})
    keys = [fd_config.ApiKey("lab", fd_config.hash_key(KEY))]
    with TestClient(create_app(config, keys, httpx.MockTransport(flaky), lambda _: None)) as c:
        answer = c.post("/v1/chat/completions", json=chat(), headers=auth())
    assert answer.status_code == 200 and calls == ["e", "e"]
