"""The front door's routing overrides (routing.json) and its reload in place (SIGHUP): what a
rollout or a drain relies on to switch engines without dropping a request."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from hearth.frontdoor import config as fd_config
from hearth.frontdoor.app import create_app

KEY = "hearth-test-key-0123456789abcdef"
OLD = "http://10.0.0.11:8080"
NEW = "http://10.0.0.11:8085"


def write_site(directory: Path, routing: object | None = None) -> Path:
    keys = directory / "keys.json"
    keys.write_text(json.dumps({"keys": [{"name": "lab", "sha256": fd_config.hash_key(KEY)}]}))
    config = directory / "config.json"
    config.write_text(
        json.dumps(
            {
                "listen": {"host": "127.0.0.1", "port": 8090},
                "keys_file": str(keys),
                "models": {
                    "smollm2": {
                        "engine": "llamacpp",
                        "version": "v1",
                        "api": "openai",
                        "backends": [OLD],
                    }
                },
            }
        )
    )
    if routing is not None:
        (directory / "routing.json").write_text(json.dumps(routing))
    return config


def test_without_a_routing_file_the_configured_backends_serve(tmp_path: Path) -> None:
    loaded = fd_config.load_all(write_site(tmp_path))
    assert loaded.config.models["smollm2"].backends == (OLD,)
    assert loaded.digests["routing"] == hashlib.sha256(b"").hexdigest()
    config_bytes = (tmp_path / "config.json").read_bytes()
    assert loaded.digests["config"] == hashlib.sha256(config_bytes).hexdigest()


def test_the_routing_file_replaces_a_models_backends(tmp_path: Path) -> None:
    routing = {"models": {"smollm2": {"backends": [NEW], "reason": "rollout v2"}}}
    loaded = fd_config.load_all(write_site(tmp_path, routing))
    assert loaded.config.models["smollm2"].backends == (NEW,)
    routing_bytes = (tmp_path / "routing.json").read_bytes()
    assert loaded.digests["routing"] == hashlib.sha256(routing_bytes).hexdigest()


@pytest.mark.parametrize(
    ("routing", "message"),
    [
        ({"models": {"llama": {"backends": [NEW]}}}, "serves no model 'llama'"),
        ({"models": {"smollm2": {"backends": ["10.0.0.1:8080"]}}}, "expected a list of base URLs"),
        ({"smollm2": [NEW]}, "expected {models:"),
    ],
)
def test_a_bad_routing_file_is_refused_naming_it(
    tmp_path: Path, routing: object, message: str
) -> None:
    with pytest.raises(fd_config.ConfigError) as caught:
        fd_config.load_all(write_site(tmp_path, routing))
    assert str(tmp_path / "routing.json") in str(caught.value)
    assert message in str(caught.value)


class SlowEngine:
    """Two engines behind one host: the old one streams slowly (until ``release``), the new one
    answers at once. Records which backend saw each request."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.seen: list[str] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        base = f"http://{request.url.host}:{request.url.port}"
        self.seen.append(base)
        body = json.loads(request.content)
        if body.get("stream"):
            release = self.release

            async def chunks() -> Any:
                yield b'data: {"choices": [{"index": 0, "delta": {"content": "Pa"}}]}\n\n'
                await release.wait()
                yield b'data: {"choices": [{"index": 0, "delta": {"content": "ris"}}]}\n\n'
                yield b"data: [DONE]\n\n"

            return httpx.Response(
                200, content=chunks(), headers={"content-type": "text/event-stream"}
            )
        return httpx.Response(200, json={"choices": [{"message": {"content": base}}]})


def test_a_reload_switches_new_requests_and_lets_a_stream_in_flight_finish(
    tmp_path: Path,
) -> None:
    config_path = write_site(tmp_path)
    loaded = fd_config.load_all(config_path)
    engine = SlowEngine()
    app = create_app(
        loaded.config,
        loaded.keys,
        httpx.MockTransport(engine),
        log=lambda _line: None,
        load=lambda: fd_config.load_all(config_path),
        digests=loaded.digests,
    )
    door = app.state.front_door
    headers = {"Authorization": f"Bearer {KEY}"}
    chat = {"model": "smollm2", "messages": [{"role": "user", "content": "capital of France?"}]}

    def busy(backend: str) -> float:
        return door.metrics.backend_in_flight.labels("smollm2", backend)._value.get()  # type: ignore[no-any-return]

    async def scenario() -> tuple[str, str, str, dict[str, Any]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://door") as client:
            stream = asyncio.create_task(
                client.post("/v1/chat/completions", json={**chat, "stream": True}, headers=headers)
            )
            for _ in range(100):
                if busy(OLD) == 1:
                    break
                await asyncio.sleep(0.01)
            assert busy(OLD) == 1, "the stream never reached the old engine"
            routing = {"models": {"smollm2": {"backends": [NEW]}}}
            (tmp_path / "routing.json").write_text(json.dumps(routing))
            door.reload_from(lambda: fd_config.load_all(config_path))
            after = await client.post("/v1/chat/completions", json=chat, headers=headers)
            engine.release.set()
            streamed = await stream
            health = (await client.get("/health")).json()
        return after.json()["choices"][0]["message"]["content"], streamed.text, OLD, health

    answered_by, streamed, _old, health = asyncio.run(scenario())
    assert answered_by == NEW
    assert "Pa" in streamed and "ris" in streamed and "[DONE]" in streamed
    assert engine.seen == [OLD, NEW]
    assert busy(OLD) == 0 and busy(NEW) == 0
    routing_bytes = (tmp_path / "routing.json").read_bytes()
    assert health["loaded"]["routing"] == hashlib.sha256(routing_bytes).hexdigest()


def test_a_refused_reload_keeps_the_routing_in_force(tmp_path: Path) -> None:
    config_path = write_site(tmp_path)
    loaded = fd_config.load_all(config_path)
    app = create_app(loaded.config, loaded.keys, log=lambda _line: None, digests=loaded.digests)
    door = app.state.front_door
    (tmp_path / "routing.json").write_text('{"models": {"nope": {"backends": []}}}')
    door.reload_from(lambda: fd_config.load_all(config_path))
    assert door.config.models["smollm2"].backends == (OLD,)
    assert door.digests == loaded.digests
    assert door.metrics.reloads.labels("refused")._value.get() == 1


def test_a_model_drained_everywhere_answers_503(tmp_path: Path) -> None:
    config_path = write_site(tmp_path, {"models": {"smollm2": {"backends": []}}})
    loaded = fd_config.load_all(config_path)
    app = create_app(loaded.config, loaded.keys, log=lambda _line: None)

    async def ask() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://door") as client:
            return await client.post(
                "/v1/chat/completions",
                json={"model": "smollm2", "messages": []},
                headers={"Authorization": f"Bearer {KEY}"},
            )

    answer = asyncio.run(ask())
    assert answer.status_code == 503
    assert "smollm2" in answer.json()["error"]["message"]
