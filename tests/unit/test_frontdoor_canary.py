"""A canary through the real front door: a share of a model's requests goes to the new
version's engines, the rest to the old one's, each counted under its version; the share is
changed, ended or promoted by reloading the routing in place (what `hearth models promote|abort`
do), never by a restart. The front door runs in a real uvicorn on a loopback port, and so does
each engine (a small Starlette app that answers as llama.cpp does and says which version it is):
every request crosses real sockets through httpx."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from hearth import engines
from hearth.errors import InvalidInputError
from hearth.frontdoor import config as fd_config
from hearth.frontdoor.app import create_app

KEY = "hearth-test-key-0123456789abcdef"


@contextlib.contextmanager
def _uvicorn(app: Any) -> Iterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _engine(version: str, seen: list[str]) -> Starlette:
    """An engine that answers every chat completion with its own version (and usage)."""

    async def chat(request: Request) -> Response:
        body = await request.json()
        seen.append(version)
        if body.get("stream"):

            async def chunks() -> Any:
                delta = {"choices": [{"index": 0, "delta": {"content": version}}]}
                yield f"data: {json.dumps(delta)}\n\n".encode()
                await asyncio.sleep(0)
                usage = {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1}}
                yield f"data: {json.dumps(usage)}\n\n".encode()
                yield b"data: [DONE]\n\n"

            return StreamingResponse(chunks(), media_type="text/event-stream")
        return JSONResponse(
            {
                "choices": [{"index": 0, "message": {"role": "assistant", "content": version}}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
            }
        )

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


class Site:
    """Two real engines (v1, v2) and the front door before them, with its files on disk."""

    def __init__(self, directory: Path, old: int, new: int, door: int) -> None:
        self.directory = directory
        self.old, self.new = f"http://127.0.0.1:{old}", f"http://127.0.0.1:{new}"
        self.url = f"http://127.0.0.1:{door}"
        self.door: Any = None

    def route(self, routing: object) -> None:
        """Write routing.json and reload the front door in place (what SIGHUP calls)."""
        (self.directory / "routing.json").write_text(json.dumps(routing))
        self.door.reload_from(lambda: fd_config.load_all(self.directory / "config.json"))

    def ask(self, count: int) -> list[str]:
        """``count`` chat completions (every other one streamed): the version that answered."""
        answers = []
        headers = {"Authorization": f"Bearer {KEY}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=10) as client:
            for i in range(count):
                body = {"model": "smollm2", "messages": [{"role": "user", "content": "hi"}]}
                if i % 2:
                    answer = client.post("/v1/chat/completions", json={**body, "stream": True})
                    assert answer.status_code == 200, answer.text
                    assert answer.text.endswith("data: [DONE]\n\n"), answer.text
                    first = json.loads(answer.text.split("\n\n")[0][len("data: ") :])
                    answers.append(first["choices"][0]["delta"]["content"])
                else:
                    answer = client.post("/v1/chat/completions", json=body)
                    assert answer.status_code == 200, answer.text
                    answers.append(answer.json()["choices"][0]["message"]["content"])
        return answers

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    seen: list[str] = []
    with _uvicorn(_engine("v1", seen)) as old, _uvicorn(_engine("v2", seen)) as new:
        keys = tmp_path / "keys.json"
        keys.write_text(json.dumps({"keys": [{"name": "lab", "sha256": fd_config.hash_key(KEY)}]}))
        route = {"engine": "llamacpp", "version": "v2", "api": "openai",
                 "backends": [f"http://127.0.0.1:{old}"]}  # fmt: skip
        (tmp_path / "config.json").write_text(
            json.dumps({"keys_file": str(keys), "models": {"smollm2": route}})
        )
        loaded = fd_config.load_all(tmp_path / "config.json")
        app = create_app(loaded.config, loaded.keys, log=lambda _line: None)
        with _uvicorn(app) as door:
            result = Site(tmp_path, old, new, door)
            result.door = app.state.front_door
            yield result


def _canary(site: Site, share: int, backends: list[str] | None = None) -> dict[str, Any]:
    pool = backends if backends is not None else [site.new]
    return {
        "models": {
            "smollm2": {
                "backends": [site.old], "version": "v1", "reason": "canary",
                "canary": {"backends": pool, "share": share, "version": "v2"},
            }
        }
    }  # fmt: skip


def test_a_canary_share_splits_the_requests_and_counts_each_version(site: Site) -> None:
    site.route(_canary(site, 50))
    answers = site.ask(20)
    assert answers.count("v2") == 10 and answers.count("v1") == 10, answers
    total = "hearth_frontdoor_requests_total"
    assert site.metric(total, model="smollm2", status="200", version="v2") == 10
    assert site.metric(total, model="smollm2", status="200", version="v1") == 10
    assert site.metric("hearth_frontdoor_tokens_total", kind="completion", version="v2") == 10
    count = "hearth_frontdoor_request_duration_seconds_count"
    assert site.metric(count, model="smollm2", version="v1") == 10
    assert site.metric(count, model="smollm2", version="v2") == 10
    share = "hearth_frontdoor_canary_share"
    assert site.metric(share, model="smollm2", version="v2", stable_version="v1") == 50


def test_every_replica_of_both_pools_takes_its_turn_during_a_canary(site: Site) -> None:
    """Two replicas serve the old version and two the canary, at 50%: each of the four answers
    a quarter. (Both pools' turns once moved on with every request, so at 50% they stayed in
    step: one replica of each pool answered everything and the other two stood idle; the lab's
    canary test found it once its load loop paced its requests.)"""
    seen: list[str] = []
    with contextlib.ExitStack() as stack:
        ports = {name: stack.enter_context(_uvicorn(_engine(name, seen)))
                 for name in ("old-a", "old-b", "new-a", "new-b")}  # fmt: skip
        url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        site.route({"models": {"smollm2": {
            "backends": [url["old-a"], url["old-b"]], "version": "v1",
            "canary": {"backends": [url["new-a"], url["new-b"]], "share": 50, "version": "v2"},
        }}})  # fmt: skip
        answers = site.ask(40)
    assert {name: answers.count(name) for name in ports} == dict.fromkeys(ports, 10), answers


def test_a_small_share_is_that_share_exactly(site: Site) -> None:
    site.route(_canary(site, 10))
    answers = site.ask(40)
    assert answers.count("v2") == 4, answers
    assert answers.index("v2") == 0 and answers[10] == "v2", "spread evenly, not in a burst"


def test_a_canary_engine_that_refuses_connections_hands_its_share_to_the_old_one(
    site: Site,
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        gone = f"http://127.0.0.1:{closed.getsockname()[1]}"  # bound, not listening
        site.route(_canary(site, 50, [gone]))
        answers = site.ask(10)
    assert answers == ["v1"] * 10
    assert site.metric("hearth_frontdoor_backend_errors_total", backend=gone) == 5


def test_abort_and_promote_are_reloads_in_place(site: Site) -> None:
    site.route(_canary(site, 50))
    assert set(site.ask(4)) == {"v1", "v2"}
    # abort: the canary's share back to the old engine (the routing an abort leaves while the
    # inventory still declares v2)
    site.route({"models": {"smollm2": {"backends": [site.old], "version": "v1", "reason": "x"}}})
    assert site.ask(6) == ["v1"] * 6
    assert site.metric("hearth_frontdoor_canary_share") == 0
    promoted = {"backends": [site.new], "reason": "promoted", "versions": {site.new: "v2"}}
    site.route({"models": {"smollm2": {**promoted, "version": "v1"}}})
    assert site.ask(6) == ["v2"] * 6
    assert site.metric("hearth_frontdoor_requests_total", status="200", version="v2") == 8
    assert site.metric("hearth_frontdoor_reloads_total", result="ok") == 3


@pytest.mark.parametrize(
    ("canary", "message"),
    [
        ({"backends": ["http://127.0.0.1:1"], "share": 150, "version": "v2"}, "canary.share"),
        ({"backends": "http://127.0.0.1:1", "share": 10}, "canary: expected"),
    ],
)
def test_a_bad_canary_in_routing_is_refused_naming_the_file(
    tmp_path: Path, canary: object, message: str
) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"keys": []}))
    route = {"engine": "llamacpp", "version": "v1", "api": "openai", "backends": ["http://a:1"]}
    (tmp_path / "config.json").write_text(
        json.dumps({"keys_file": str(keys), "models": {"smollm2": route}})
    )
    routing = {"models": {"smollm2": {"backends": ["http://a:1"], "canary": canary}}}
    (tmp_path / "routing.json").write_text(json.dumps(routing))
    with pytest.raises(fd_config.ConfigError) as caught:
        fd_config.load_all(tmp_path / "config.json")
    assert str(tmp_path / "routing.json") in str(caught.value) and message in str(caught.value)


# ------------------------------------------------------------- routing.json as a rollout writes it
ROUTES = {
    "smollm2": {
        "engine": "llamacpp", "version": "v2", "api": "openai", "hosts": ["lab1", "lab2"],
        "backends": ["http://10.0.0.11:8080", "http://10.0.0.12:8080"],
    }
}  # fmt: skip
L1, L2 = "http://10.0.0.11:8080", "http://10.0.0.12:8080"
C1, C2 = "http://10.0.0.11:8085", "http://10.0.0.12:8085"


def _start(routing: dict[str, Any], host: str) -> dict[str, Any]:
    out = engines.canary_backend(
        routing, ROUTES, "smollm2", host, 8080, 8085, share=50, version="v2",
        stable_version="v1", soak_end="2026-11-28T13:00:00Z", reason="canary",
    )  # fmt: skip
    return dict(out["routing"])


def test_a_canary_host_by_host_then_promoted_leaves_no_override() -> None:
    routing = _start(_start({"models": {}}, "lab1"), "lab2")
    entry = routing["models"]["smollm2"]
    assert entry["backends"] == [L1, L2] and entry["version"] == "v1"
    assert entry["versions"] == {L1: "v1", L2: "v1"}, "each host's live engine, its version"
    assert entry["canary"]["backends"] == [C1, C2] and entry["canary"]["share"] == 50
    # promotion, host by host: to the candidate slot, then back to the live slot (rollout.yml)
    for host in ("lab1", "lab2"):
        for a, b in ((8080, 8085), (8085, 8080)):
            routing = engines.swap_backend(routing, ROUTES, "smollm2", host, a, b, "promote")[
                "routing"
            ]
            if host == "lab1" and (a, b) == (8080, 8085):
                middle = routing["models"]["smollm2"]
                assert middle["backends"] == [C1, L2] and middle["canary"]["backends"] == [C2]
                assert middle["versions"] == {C1: "v2", L2: "v1"}, "lab1 serves v2 from now on"
    assert routing == {"models": {}}


def test_an_aborted_canary_goes_back_to_the_old_version_everywhere() -> None:
    routing = _start(_start({"models": {}}, "lab1"), "lab2")
    out = engines.end_canary(routing, ROUTES, "smollm2", "lab1", 8080, 8085, "abort")
    assert (out["from"], out["to"]) == (C1, L1)
    assert out["routing"]["models"]["smollm2"]["canary"]["backends"] == [C2]
    out = engines.end_canary(out["routing"], ROUTES, "smollm2", "lab2", 8080, 8085, "abort")
    entry = out["routing"]["models"]["smollm2"]
    assert "canary" not in entry and entry["backends"] == [L1, L2] and entry["version"] == "v1"
    # with the old version as the declared one (the abort runs with it), nothing is left
    back = {"smollm2": {**ROUTES["smollm2"], "version": "v1"}}
    out = engines.end_canary(routing, back, "smollm2", "lab1", 8080, 8085)
    out = engines.end_canary(out["routing"], back, "smollm2", "lab2", 8080, 8085)
    assert out["routing"] == {"models": {}}


def test_a_drain_during_a_canary_keeps_it() -> None:
    routing = _start({"models": {}}, "lab1")
    drained = engines.drain_host(routing, ROUTES, "lab2", True, "maintenance")["routing"]
    entry = drained["models"]["smollm2"]
    assert entry["backends"] == [L1] and entry["canary"]["backends"] == [C1]
    back = engines.drain_host(drained, ROUTES, "lab2", False)["routing"]
    assert back["models"]["smollm2"]["canary"]["backends"] == [C1]


@pytest.mark.parametrize("share", [0, 100, True, "10"])
def test_a_share_outside_1_to_99_is_refused(share: Any) -> None:
    with pytest.raises(InvalidInputError, match="canary_share"):
        engines.canary_backend(
            {}, ROUTES, "smollm2", "lab1", 8080, 8085, share=share, version="v2",
            stable_version="v1",
        )  # fmt: skip
