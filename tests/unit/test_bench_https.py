"""`hearth bench` through an HTTPS front door: the target follows the door's front_door_tls (on
unless declared false) and checks its certificate against the site's CA of `hearth tls init`
(or the CA given); a real local HTTPS server streams the answer with a certificate of that CA."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from hearth import bench, tls
from hearth.inventory import load_inventory

KEY = "bench-https-key-" + "k" * 32


class Door:
    """A streaming /v1/chat/completions on HTTPS (the certificate the site's CA issued)."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.seen: list[str] = []
        door = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                door.seen.append(self.headers.get("Authorization", ""))
                chunks = [
                    {"choices": [{"delta": {"content": word}}]} for word in ("Par", "is", ".")
                ]
                usage = {"prompt_tokens": 9, "completion_tokens": 3}
                chunks.append({"choices": [], "usage": usage})
                body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
                body += b"data: [DONE]\n\n"
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), str(key))
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Door]]:
    monkeypatch.setenv("HEARTH_HOME", str(tmp_path / "home"))
    (issued,) = tls.init_site(tls.site_dir("ward"), "ward", {"gw01": ["127.0.0.1"]})
    door = Door(issued.cert, issued.key)
    yield tls.site_dir("ward") / "ca.crt", door
    door.server.shutdown()


def _inventory(tmp_path: Path, port: int, extra: str = "") -> Path:
    root = tmp_path / "inv"
    (root / "group_vars").mkdir(parents=True)
    (root / "hosts.yml").write_text(
        "all:\n  children:\n    frontdoor:\n      hosts:\n        gw01: {ansible_host: 127.0.0.1}\n"
    )
    (root / "group_vars" / "all.yml").write_text(
        f"hearth_site: ward\nfront_door_port: {port}\n"
        f"front_door_api_keys:\n  - {{name: bench, key: {KEY}}}\n{extra}"
    )
    return root / "hosts.yml"


def _body() -> dict[str, Any]:
    return bench.PROMPT_SETS["chat"].body("smollm2", 0, 8)


def test_the_front_door_is_reached_over_https_checked_against_the_site_ca(
    tmp_path: Path, site: tuple[Path, Door]
) -> None:
    ca, door = site
    target, _ = bench.resolve_target(load_inventory(_inventory(tmp_path, door.port)))
    assert (target.tls, target.ca_file) == (True, str(ca))
    assert target.url == f"https://127.0.0.1:{door.port}"
    result = bench.stream_chat(target, _body(), timeout=10)
    assert result.ok and (result.output_tokens, result.prompt_tokens) == (3, 9), result
    assert door.seen == [f"Bearer {KEY}"]
    # without the site's CA (the system's trusted CAs) the certificate is refused: nothing sent
    untrusted = bench.Target("gw01", "127.0.0.1", door.port, "bench", KEY, tls=True)
    refused = bench.stream_chat(untrusted, _body(), timeout=10)
    assert not refused.ok and "CERTIFICATE_VERIFY_FAILED" in refused.error, refused
    assert len(door.seen) == 1


def test_declared_plain_http_and_a_ca_given(tmp_path: Path, site: tuple[Path, Door]) -> None:
    ca, door = site
    plain, _ = bench.resolve_target(
        load_inventory(_inventory(tmp_path, door.port, "front_door_tls: false\n"))
    )
    assert (plain.tls, plain.ca_file, plain.url) == (False, "", f"http://127.0.0.1:{door.port}")
    given = tmp_path / "given-ca.crt"
    given.write_bytes(ca.read_bytes())
    other = tmp_path / "other"
    target, _ = bench.resolve_target(
        load_inventory(_inventory(other, door.port)), ca_file=str(given)
    )
    assert target.ca_file == str(given)
    assert bench.stream_chat(target, _body(), timeout=10).ok
