"""The front door relays each local engine's metrics to a scraper holding the scrape token:
engines listen on loopback only, Prometheus reaches their metrics through the front door
(``GET /engine-metrics/<model>``), never through the engine's port. The engines are httpx's
MockTransport answering like llama.cpp's /metrics."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
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


CONFIG_MODEL = {"name": "smollm2", "version": "v1", "engine": "llamacpp"}


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


def test_the_relay_targets_come_from_the_engine_ports() -> None:
    """hearth.engines decides the ports, as for every other reader: llama.cpp's metrics on its
    port, Triton's on port + 2; on loopback unless the engines are bound elsewhere."""
    from hearth.engines import local_metrics_targets
    from hearth.models import parse_models

    files = [{"path": "m.gguf", "sha256": "a" * 64, "size": 1}]
    common = {"version": "v1", "source": {"type": "path", "path": "/m"}, "files": files,
              "max_model_len": 2048, "max_num_seqs": 2, "gpus": []}  # fmt: skip
    models = parse_models([
        dict(common, name="smollm2", engine="llamacpp", format="gguf"),
        dict(common, name="upper", engine="triton", format="python"),
    ])  # fmt: skip
    assert local_metrics_targets(models, {"upper": 8100}) == {
        "smollm2": "http://127.0.0.1:8080/metrics",
        "upper": "http://127.0.0.1:8102/metrics",
    }
    assert local_metrics_targets(models[:1], bind_address="0.0.0.0") == {
        "smollm2": "http://127.0.0.1:8080/metrics"
    }
    assert local_metrics_targets(models[:1], bind_address="fd00::2") == {
        "smollm2": "http://[fd00::2]:8080/metrics"
    }


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="no prometheus binary here")
@pytest.mark.parametrize("door_tls", [False, True], ids=["http", "https"])
def test_a_real_prometheus_scrapes_the_relay_with_the_token_file(
    tmp_path: Path, door_tls: bool
) -> None:
    """Real processes on loopback: an engine's /metrics (llama.cpp's, recorded), the front door
    relaying it, and Debian's Prometheus with the scrape config Hearth writes (the token in a
    credentials_file). With the token the target is up and the engine's series arrive; without
    it the front door answers 401; with the engine stopped the relay answers 503 (EngineDown).

    With the front door on HTTPS (front_door_tls, the certificate `hearth tls init` issues): the
    front door's /metrics and the relay are scraped over HTTPS, checked against the site's CA
    (tls_config.ca_file), and are up; the same job without the CA fails verification."""
    import subprocess
    import sys
    import time
    import urllib.request

    from hearth.monitoring import scrape

    engine_port, door_port, prom_port = _free_port(), _free_port(), _free_port()
    (tmp_path / "engine").mkdir()
    fixture = Path(__file__).resolve().parent.parent / "fixtures" / "engines"
    recorded = (fixture / "llama-server-0.7.0-metrics.txt").read_text()
    (tmp_path / "engine" / "metrics").write_text(recorded)
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    key = "e2e-api-key-0123456789abcdef"
    (tmp_path / "keys.json").write_text(
        json.dumps({"keys": [{"name": "e2e", "sha256": fd_config.hash_key(key)}]})
    )
    ca_file = ""
    door: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": door_port},
        "keys_file": str(tmp_path / "keys.json"),
        "models": {"smollm2": {"engine": "llamacpp", "version": "v1", "api": "openai",
                               "backends": [f"http://127.0.0.1:{engine_port}"]}},
        "engine_metrics": {"token_sha256": fd_config.hash_key(TOKEN),
                           "targets": {"smollm2": f"http://127.0.0.1:{engine_port}/metrics"}},
    }  # fmt: skip
    if door_tls:
        from hearth import tls

        (issued,) = tls.init_site(tmp_path / "site", "t", {"lab1": ["127.0.0.1"]})
        door["tls"] = {"cert": str(issued.cert), "key": str(issued.key)}
        ca_file = str(tmp_path / "site" / "ca.crt")
    (tmp_path / "door.json").write_text(json.dumps(door))
    host = scrape.InventoryHost(
        "lab1", "127.0.0.1", ("inference", "frontdoor"), (CONFIG_MODEL,), frontdoor_port=door_port,
        frontdoor_tls=door_tls,
    )  # fmt: skip
    jobs = [
        c for c in scrape.scrape_configs(
            [host], scrape_token_file=str(token), frontdoor_port=door_port,
            frontdoor_ca_file=ca_file, web_tls=False,
        )
        if c["job_name"].startswith("engine-") or c["job_name"] == "frontdoor"
    ]  # fmt: skip
    scheme = "https" if door_tls else "http"
    by_name = {c["job_name"]: c for c in jobs}
    assert by_name["engine-llamacpp"]["static_configs"][0]["labels"]["__scheme__"] == scheme
    if door_tls:  # the rendered config: HTTPS, checked against the site's CA
        for name in ("frontdoor", "engine-llamacpp"):
            assert by_name[name]["tls_config"] == {"ca_file": ca_file}, by_name[name]
        assert by_name["frontdoor"]["static_configs"][0]["labels"]["__scheme__"] == "https"
    else:
        assert not any("tls_config" in c for c in jobs), jobs
    plain = json.loads(json.dumps(by_name["engine-llamacpp"]))
    plain.pop("authorization")
    plain["job_name"] = "without-token"
    controls = [plain]
    if door_tls:
        untrusted = json.loads(json.dumps(by_name["engine-llamacpp"]))
        untrusted.pop("tls_config")
        untrusted["job_name"] = "without-ca"
        controls.append(untrusted)
    config = {"global": {"scrape_interval": "1s"}, "scrape_configs": [*jobs, *controls]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    started = [
        subprocess.Popen([sys.executable, "-m", "http.server", str(engine_port), "--bind",
                          "127.0.0.1"], cwd=tmp_path / "engine", stderr=subprocess.DEVNULL),
        subprocess.Popen([sys.executable, "-m", "hearth.frontdoor", "--config",
                          str(tmp_path / "door.json")], stderr=subprocess.DEVNULL),
        subprocess.Popen(["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                          f"--storage.tsdb.path={tmp_path / 'data'}",
                          f"--web.listen-address=127.0.0.1:{prom_port}"],
                         stderr=subprocess.DEVNULL),
    ]  # fmt: skip

    def targets() -> dict[str, tuple[str, str, str]]:
        url = f"http://127.0.0.1:{prom_port}/api/v1/targets"
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                data = json.load(answer)["data"]["activeTargets"]
        except OSError:
            return {}
        return {t["labels"]["job"]: (t["health"], t["lastError"], t["scrapeUrl"]) for t in data}

    def wait(wanted: dict[str, str]) -> dict[str, tuple[str, str, str]]:
        found: dict[str, tuple[str, str, str]] = {}
        for _ in range(120):
            found = targets()
            if all(found.get(job, ("", "", ""))[0] == health for job, health in wanted.items()):
                break
            time.sleep(0.5)
        return found

    try:
        wanted = {"engine-llamacpp": "up", "frontdoor": "up", "without-token": "down"}
        if door_tls:
            wanted["without-ca"] = "down"
        found = wait(wanted)
        assert found["engine-llamacpp"][0] == "up", found
        assert found["frontdoor"][0] == "up", found
        assert all(found[j][2].startswith(f"{scheme}://") for j in ("frontdoor", "engine-llamacpp"))
        assert "401" in found["without-token"][1], found
        if door_tls:
            assert "certificate" in found["without-ca"][1], found  # signed by unknown authority
        started[0].terminate()  # the engine stops: the relay answers 503, the target goes down
        found = wait({"engine-llamacpp": "down"})
        assert "503" in found["engine-llamacpp"][1], found
    finally:
        for process in started:
            process.terminate()
            process.wait(timeout=30)
