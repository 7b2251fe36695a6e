"""The front door relays each local engine's metrics to a scraper holding the scrape token:
engines listen on loopback only, Prometheus reaches their metrics through the front door
(``GET /engine-metrics/<model>``), never through the engine's port. The engines are httpx's
MockTransport answering like llama.cpp's /metrics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from hearth.frontdoor import config as fd_config
from hearth.frontdoor.app import create_app

TOKEN = "scrape-token-0123456789abcdef0123456789"
LLAMACPP_METRICS = "# TYPE llamacpp:n_tokens_max counter\nllamacpp:n_tokens_max 42\n"
CONFIG: dict[str, Any] = {
    "listen": {"host": "127.0.0.1", "port": 8090},
    "keys_file": "/nonexistent/keys.json",
    "timeouts": {"connect": 1, "read": 5},
    "models": {
        "smollm2": {"engine": "llamacpp", "version": "v1", "api": "openai",
                    "backends": ["http://127.0.0.1:8080"]},
        "gone": {"engine": "llamacpp", "version": "v1", "api": "openai",
                 "backends": ["http://127.0.0.1:8090"]},
    },
    "engine_metrics": {
        "token_sha256": fd_config.hash_key(TOKEN),
        "targets": {"smollm2": "http://127.0.0.1:8080/metrics",
                    "gone": "http://127.0.0.1:8090/metrics"},
    },
}  # fmt: skip


def engine(request: httpx.Request) -> httpx.Response:
    if request.url.port == 8090:
        raise httpx.ConnectError("connection refused", request=request)
    assert "authorization" not in request.headers, "the token must not reach the engine"
    if request.url.path == "/metrics":
        return httpx.Response(200, text=LLAMACPP_METRICS, headers={"content-type": "text/plain"})
    return httpx.Response(404)


def _client(config: dict[str, Any]) -> Iterator[TestClient]:
    app = create_app(fd_config.parse_config(config), [], httpx.MockTransport(engine), print)
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def client() -> Iterator[TestClient]:
    yield from _client(CONFIG)


def test_the_engine_metrics_need_the_scrape_token(client: TestClient) -> None:
    assert client.get("/engine-metrics/smollm2").status_code == 401
    wrong = client.get("/engine-metrics/smollm2", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "llamacpp" not in wrong.text
    good = client.get("/engine-metrics/smollm2", headers={"Authorization": f"Bearer {TOKEN}"})
    assert good.status_code == 200 and good.text == LLAMACPP_METRICS


def test_an_engine_down_is_503_and_an_unknown_model_404(client: TestClient) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/engine-metrics/gone", headers=headers).status_code == 503
    assert client.get("/engine-metrics/nosuch", headers=headers).status_code == 404


def test_without_a_token_configured_nothing_is_relayed() -> None:
    config = dict(CONFIG, engine_metrics={"targets": CONFIG["engine_metrics"]["targets"]})
    for client in _client(config):
        answer = client.get("/engine-metrics/smollm2", headers={"Authorization": "Bearer "})
        assert answer.status_code == 404


@pytest.mark.parametrize(
    "relay",
    [{"token_sha256": "short", "targets": {}}, {"targets": {"m": "ftp://x/metrics"}},
     {"targets": ["http://x"]}],
)  # fmt: skip
def test_a_bad_relay_section_is_refused(relay: object) -> None:
    with pytest.raises(fd_config.ConfigError, match="engine_metrics"):
        fd_config.parse_config(dict(CONFIG, engine_metrics=relay))
