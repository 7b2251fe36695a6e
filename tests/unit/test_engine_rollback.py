"""The fast rollback's host module (plugins/modules/hearth_engine_rollback.py): the candidate it
copies from the kept engine, its refusals before any change, its gates polled against a real
HTTP server on loopback, the kept engines it prunes, and its files written once."""

from __future__ import annotations

import http.server
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from conftest import plugin_module

from hearth import engines


def _load() -> Any:
    return plugin_module("modules", "hearth_engine_rollback")


mod = _load()
LIVE = "hearth-engine-smollm2"


def _inspected(name: str, version: str, image: str = "sha256:aaa") -> dict[str, Any]:
    """The parts of a `docker inspect` object the module reads, as Docker prints them."""
    return {
        "Name": f"/{name}",
        "Image": image,
        "Config": {
            "Hostname": "0123456789ab",
            "Image": "hearth-llamacpp:b1",
            "Cmd": ["llama-server", "--port", "8080"],
            "Env": ["PATH=/usr/bin"],
            "ExposedPorts": {"8080/tcp": {}},
            "Labels": {"io.hearth.model": "smollm2", "io.hearth.version": version},
        },
        "HostConfig": {
            "PortBindings": {"8080/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]},
            "RestartPolicy": {"Name": "unless-stopped", "MaximumRetryCount": 0},
            "Mounts": [{"Type": "bind", "Source": "/var/lib/hearth/models/smollm2/v1",
                        "Target": "/models/smollm2", "ReadOnly": True}],
        },
    }  # fmt: skip


@pytest.mark.parametrize("version", ["v1", "2024-07-23", "v1+build/2", "a b"])
def test_kept_names_follow_the_engines_rule(version: str) -> None:
    assert mod.kept_name(LIVE, version) == engines.kept_container_name("smollm2", version)


def test_the_fast_path_is_refused_without_the_kept_engine_or_with_another_image() -> None:
    kept = mod.kept_name(LIVE, "v1")
    live = _inspected(LIVE, "v2")
    assert mod.fast_problem({LIVE: live}, kept, LIVE) == "no kept engine of v1"
    assert mod.fast_problem({kept: _inspected(kept, "v1")}, kept, LIVE) == "no live engine"
    other = _inspected(kept, "v1", image="sha256:bbb")
    assert mod.fast_problem({kept: other, LIVE: live}, kept, LIVE) == (
        "the kept engine of v1 has another image than the live one"
    )
    assert mod.fast_problem({kept: _inspected(kept, "v1"), LIVE: live}, kept, LIVE) is None


def test_the_candidate_is_the_kept_engine_on_the_candidate_port() -> None:
    kept = _inspected(mod.kept_name(LIVE, "v1"), "v1")
    body = mod.candidate_body(kept, engines.CANDIDATE_OFFSET)
    assert body["HostConfig"]["PortBindings"] == {
        "8080/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(engines.candidate_port(8080))}]
    }
    assert body["Labels"] == {
        "io.hearth.model": "smollm2", "io.hearth.version": "v1", "io.hearth.slot": "candidate"
    }  # fmt: skip
    assert "Hostname" not in body  # its own, not the kept engine's
    assert body["HostConfig"]["RestartPolicy"]["Name"] == "no"
    for same in ("Cmd", "Env", "Image", "ExposedPorts"):
        assert body[same] == kept["Config"][same]
    assert body["HostConfig"]["Mounts"] == kept["HostConfig"]["Mounts"]
    # the kept engine's own inspect object is left as it was
    assert kept["HostConfig"]["PortBindings"]["8080/tcp"][0]["HostPort"] == "8080"
    assert "io.hearth.slot" not in kept["Config"]["Labels"]


def test_only_kept_engines_of_versions_the_store_dropped_are_pruned() -> None:
    names = [LIVE, f"{LIVE}--v1", f"{LIVE}--v2", f"{LIVE}--v0", f"{LIVE}--next", "other--v0"]
    assert mod.kept_to_prune(names, LIVE, f"{LIVE}--next", ["v1", "v2"]) == [f"{LIVE}--v0"]
    assert mod.kept_to_prune(names, LIVE, f"{LIVE}--next", ["v0", "v1", "v2"]) == []


def test_the_changelog_line_and_the_record_are_written_once(tmp_path: Path) -> None:
    log = tmp_path / "changelog.jsonl"
    line = json.dumps({"event": "rolled back", "to_version": "v1"}, sort_keys=True)
    assert mod.append_line(str(log), line) is True
    assert mod.append_line(str(log), line) is False
    assert log.read_text().splitlines() == [line]
    assert oct(log.stat().st_mode & 0o777) == "0o640"
    record = tmp_path / "smollm2.json"
    assert mod.write_file(str(record), "{}\n") is True
    assert mod.write_file(str(record), "{}\n") is False
    assert oct(record.stat().st_mode & 0o777) == "0o644"


class _Engine(http.server.BaseHTTPRequestHandler):
    """An engine on loopback: /health answers 503 for its first ``loading`` checks, then 200;
    POST /v1/chat/completions answers ``warmup_status``."""

    loading = 2
    warmup_status = 200
    seen: ClassVar[list[tuple[str, str, Any]]] = []

    def _answer(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def do_GET(self) -> None:
        type(self).seen.append(("GET", self.path, None))
        if type(self).loading > 0:
            type(self).loading -= 1
            self._answer(503)
        else:
            self._answer(200)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append(("POST", self.path, body))
        self._answer(type(self).warmup_status)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def engine() -> Iterator[str]:
    _Engine.loading, _Engine.warmup_status, _Engine.seen = 2, 200, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Engine)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _Host(mod.Host):  # type: ignore[misc,name-defined]
    """The module's host with Docker's side recorded (HTTP goes to the real server)."""

    def __init__(self, inspected: dict[str, Any], alive: bool = True) -> None:
        self.inspected, self.alive = inspected, alive
        self.calls: list[tuple[str, ...]] = []
        self.created: dict[str, Any] = {}

    def docker(self, *args: str, **kw: Any) -> tuple[int, str]:
        self.calls.append(args)
        return 0, ""

    def inspect(self, *names: str) -> dict[str, Any]:
        return {n: self.inspected[n] for n in names if n in self.inspected}

    def create(self, name: str, body: dict[str, Any]) -> str:
        self.created[name] = body
        return "id"

    def running(self, name: str) -> bool:
        return self.alive


def _params(url: str, **over: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "model": "smollm2", "live": LIVE, "kept": mod.kept_name(LIVE, "v1"),
        "candidate": f"{LIVE}--next", "port_offset": 5, "health_url": f"{url}/health",
        "health_timeout": 10, "poll": 0.01, "warmup_timeout": 5, "golden": None,
        "warmup": {"url": f"{url}/v1/chat/completions", "method": "POST",
                   "body": {"max_tokens": 1}},
    }  # fmt: skip
    params.update(over)
    return params


def _fleet() -> dict[str, Any]:
    kept = mod.kept_name(LIVE, "v1")
    return {LIVE: _inspected(LIVE, "v2"), kept: _inspected(kept, "v1")}


def test_start_copies_the_kept_engine_and_gates_it(engine: str) -> None:
    host = _Host(_fleet())
    result = mod.start(host, _params(engine), False)
    assert "failed" not in result, result
    assert result["from"] == "v2" and result["changed"] is True
    assert list(host.created) == [f"{LIVE}--next"]
    assert host.calls == [("rm", "-f", f"{LIVE}--next"), ("start", f"{LIVE}--next")]
    assert [s[:2] for s in _Engine.seen] == [
        ("GET", "/health"), ("GET", "/health"), ("GET", "/health"),
        ("POST", "/v1/chat/completions"),
    ]  # fmt: skip
    assert _Engine.seen[-1][2] == {"max_tokens": 1}


def test_start_refuses_before_any_change(engine: str) -> None:
    fleet = _fleet()
    del fleet[mod.kept_name(LIVE, "v1")]
    host = _Host(fleet)
    result = mod.start(host, _params(engine), False)
    assert result["failed"] and result["fast"] and result["changed"] is False
    assert result["msg"] == "no kept engine of v1"
    assert host.calls == [] and host.created == {} and _Engine.seen == []


def test_check_mode_checks_and_changes_nothing(engine: str) -> None:
    host = _Host(_fleet())
    result = mod.start(host, _params(engine), True)
    assert result["changed"] is True and "failed" not in result
    assert host.calls == [] and host.created == {} and _Engine.seen == []


def test_a_failed_warmup_names_the_gate(engine: str) -> None:
    _Engine.warmup_status = 500
    result = mod.start(_Host(_fleet()), _params(engine), False)
    assert result["failed"] and result["gate"] == "warm-up", result
    assert "answered 500" in result["msg"]


def test_an_engine_that_stops_fails_its_health_gate_at_once(engine: str) -> None:
    _Engine.loading = 10**6
    result = mod.start(_Host(_fleet(), alive=False), _params(engine, health_timeout=600), False)
    assert result["failed"] and result["gate"] == "health"
    assert "stopped before its health check passed (HTTP 503)" in result["msg"], result
    assert len(_Engine.seen) == 4  # a stopped container is noticed within four polls


def test_a_health_check_that_never_passes_times_out(engine: str) -> None:
    _Engine.loading = 10**6
    result = mod.start(_Host(_fleet()), _params(engine, health_timeout=0), False)
    assert result["failed"] and result["gate"] == "health"
    assert "did not pass its health check" in result["msg"], result


def test_live_keeps_the_newer_engine_and_brings_the_kept_one_back(engine: str) -> None:
    host = _Host(_fleet())
    params = _params(engine, keep_as=mod.kept_name(LIVE, "v2"), stop_timeout=60)
    result = mod.live_step(host, params, False)
    assert "failed" not in result and result["healthy_seconds"] >= 0
    assert host.calls[:5] == [
        ("stop", "--time", "60", LIVE),
        ("rm", "-f", f"{LIVE}--v2"),
        ("rename", LIVE, f"{LIVE}--v2"),
        ("rename", f"{LIVE}--v1", LIVE),
        ("start", LIVE),
    ]
    assert mod.live_step(_Host(_fleet()), params, True) == {"changed": True}


# ------------------------------------------------------------------- hearth_routing_apply


def _load_apply() -> Any:
    return plugin_module("modules", "hearth_routing_apply")


def test_routing_apply_reads_the_front_doors_own_words() -> None:
    """The in-flight count as the front door's own prometheus_client writes it (its labels
    sorted: backend before model). A hand-written page with the labels in the gauge's order
    passed here while every real wait for requests in flight read 0 and waited for nothing."""
    from prometheus_client import generate_latest

    from hearth.frontdoor.app import Metrics

    apply = _load_apply()
    door = Metrics()
    gauge = door.backend_in_flight
    gauge.labels("smollm2", "http://10.0.0.2:8080").inc(2)
    gauge.labels("smollm2", "http://10.0.0.2:8085").inc()
    gauge.labels("smollm2x", "http://10.0.0.2:8080").inc(5)
    metrics = generate_latest(door.registry).decode()
    assert 'backend="http://10.0.0.2:8080",model="smollm2"} 2.0' in metrics  # sorted labels
    assert apply.in_flight(metrics, "smollm2", "http://10.0.0.2:8080") == 2.0
    assert apply.in_flight(metrics, "smollm2", "http://10.0.0.2:8085") == 1.0
    assert apply.in_flight(metrics, "smollm2", "http://10.0.0.3:8080") == 0
    # a drain's wait: the backends drained, whatever the model (the canary abort's and the
    # drain's waits read the gauge here too, not in a playbook's own pattern)
    both = ["http://10.0.0.2:8080", "http://10.0.0.2:8085"]
    assert apply.in_flight(metrics, "", both) == 8.0
    assert apply.in_flight(metrics, "smollm2", both) == 3.0
    # either order of the labels is read
    line = 'hearth_frontdoor_backend_requests_in_flight{model="m",backend="b"} 3.0\n'
    assert apply.in_flight(line, "m", "b") == 3.0
    assert apply.routing_in_force(json.dumps({"loaded": {"routing": "abc"}})) == "abc"
    assert apply.routing_in_force("not json") == ""
    assert apply.routing_in_force(json.dumps({"status": "ok"})) == ""


def test_routing_apply_writes_only_a_change(tmp_path: Path) -> None:
    apply = _load_apply()
    target = tmp_path / "routing.json"
    gid = os.getgid()
    assert apply.write(str(target), '{"models": {}}\n', str(gid)) is True
    assert apply.write(str(target), '{"models": {}}\n', str(gid)) is False
    assert target.read_text() == '{"models": {}}\n'
    assert oct(target.stat().st_mode & 0o777) == "0o640" and target.stat().st_gid == gid
    assert sorted(p.name for p in tmp_path.iterdir()) == ["routing.json"]  # no temporary left
