"""Front door benchmark: the latency it adds and the request rate it carries, with and without
per-key limits, against a fast fake engine on loopback (it measures the proxy, not a model).

Three processes on this machine: a fake llama.cpp (a minimal asyncio HTTP/1.1 server answering
every chat completion at once with a fixed body and its usage), the real front door
(``python -m hearth.frontdoor`` with a config.json and keys.json written here, its request log and
quota file in a temporary state directory) and this load generator (httpx, keep-alive, N requests
in flight). For each concurrency (default 1, 8, 32) it runs, for --seconds each:

- ``direct``: the load generator straight to the fake engine (the baseline);
- ``front door``: through the front door, a key with no policy;
- ``front door + limits``: a key with models, rpm, tpm, max_concurrent and tokens_per_day set high
  enough never to refuse (the limiter's bookkeeping and the quota file's rewrites, at most once a
  second, are measured, not refusals);
- ``+ limits + TLS``: the same through a second front door serving HTTPS with a certificate of
  ``hearth tls init`` (the client verifies it against the site CA; connections are kept alive, so
  this is mostly the record layer, with a handshake per connection).

Prints p50 and p99 latency, requests per second, and the front door's added p50/p99 (its figure
minus the direct one at the same concurrency).

    python benchmarks/frontdoor.py [--concurrency 1,8,32] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

KEY = "bench-key-" + "0" * 40
LIMITED = "bench-limited-" + "1" * 40
ANSWER = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "smollm2",
        "choices": [
            {"index": 0, "finish_reason": "stop",
             "message": {"role": "assistant", "content": "Paris"}}
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10},
    }
).encode()  # fmt: skip
BODY = json.dumps(
    {"model": "smollm2", "messages": [{"role": "user", "content": "capital of France?"}]}
).encode()

FAKE_ENGINE = r"""
import asyncio, sys
ANSWER = sys.stdin.buffer.read()
HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(ANSWER)).encode() + b"\r\n\r\n")

async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if length:
                await reader.readexactly(length)
            writer.write(HEAD + ANSWER)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, seconds: float = 20, verify: ssl.SSLContext | bool = True) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1, verify=verify)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer in {seconds} s")


def start_front_door(
    directory: Path, engine: str, secure: bool = False
) -> tuple[subprocess.Popen[bytes], str]:
    from hearth import tls
    from hearth.frontdoor.config import hash_key

    directory.mkdir()
    port = free_port()
    state = directory / "state"
    state.mkdir()
    limits = {"models": ["smollm2"], "rpm": 10**9, "tpm": 10**12, "max_concurrent": 10**4,
              "tokens_per_day": 10**15}  # fmt: skip
    keys = {
        "keys": [
            {"name": "bench", "sha256": hash_key(KEY)},
            {"name": "limited", "sha256": hash_key(LIMITED), **limits},
        ]
    }
    (directory / "keys.json").write_text(json.dumps(keys))
    config = {
        "listen": {"host": "127.0.0.1", "port": port},
        "keys_file": str(directory / "keys.json"),
        "state_dir": str(state),
        "models": {"smollm2": {"engine": "llamacpp", "version": "v1", "api": "openai",
                               "backends": [engine]}},
    }  # fmt: skip
    if secure:
        (issued,) = tls.init_site(directory / "tls", "bench", {"bench": ["127.0.0.1"]})
        config["tls"] = {"cert": str(issued.cert), "key": str(issued.key)}
    (directory / "config.json").write_text(json.dumps(config))
    process = subprocess.Popen(
        [sys.executable, "-m", "hearth.frontdoor", "--config", str(directory / "config.json")],
        stdout=subprocess.DEVNULL,
    )
    url = f"{'https' if secure else 'http'}://127.0.0.1:{port}"
    wait_http(url + "/health", verify=trust(directory) if secure else True)
    return process, url


def trust(directory: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(directory / "tls" / "ca.crt"))


async def load(
    url: str, key: str | None, concurrency: int, seconds: float, verify: ssl.SSLContext | bool
) -> list[float]:
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    async with httpx.AsyncClient(
        limits=limits, timeout=30, trust_env=False, verify=verify
    ) as client:
        for _ in range(min(concurrency, 4)):  # open connections before the clock starts
            await client.post(url + "/v1/chat/completions", content=BODY, headers=headers)
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                answer = await client.post(
                    url + "/v1/chat/completions", content=BODY, headers=headers
                )
                if answer.status_code != 200:
                    raise SystemExit(f"{url}: {answer.status_code} {answer.text[:200]}")
                latencies.append(time.perf_counter() - began)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    engine_port = free_port()
    engine = subprocess.Popen(
        [sys.executable, "-c", FAKE_ENGINE, str(engine_port)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert engine.stdin is not None and engine.stdout is not None
    engine.stdin.write(ANSWER)
    engine.stdin.close()
    engine.stdout.readline()
    engine_url = f"http://127.0.0.1:{engine_port}"
    with tempfile.TemporaryDirectory(prefix="hearth-bench-frontdoor-") as tmp:
        door, door_url = start_front_door(Path(tmp) / "plain", engine_url)
        secure_door, secure_url = start_front_door(Path(tmp) / "tls", engine_url, secure=True)
        verify = trust(Path(tmp) / "tls")
        try:
            print(f"cores: {os.cpu_count()}; {args.seconds:.0f} s per run; the fake engine, the "
                  "front door and this load generator share them")  # fmt: skip
            header = (f"{'concurrency':>11}  {'path':<20} {'requests':>8} {'req/s':>8} "
                      f"{'p50 ms':>8} {'p99 ms':>8} {'added p50':>10} "
                      f"{'added p99':>10}")  # fmt: skip
            print(header)
            for level in levels:
                base: tuple[float, float] | None = None
                for label, url, key in (
                    ("direct", engine_url, None),
                    ("front door", door_url, KEY),
                    ("front door + limits", door_url, LIMITED),
                    ("+ limits + TLS", secure_url, LIMITED),
                ):
                    check = verify if url.startswith("https") else True
                    latencies = asyncio.run(load(url, key, level, args.seconds, check))
                    p50, p99 = quantile(latencies, 0.5) * 1e3, quantile(latencies, 0.99) * 1e3
                    added = "" if base is None else f"{p50 - base[0]:>10.2f} {p99 - base[1]:>10.2f}"
                    if base is None:
                        base = (p50, p99)
                    rate = len(latencies) / args.seconds
                    print(f"{level:>11}  {label:<20} {len(latencies):>8} {rate:>8.0f} "
                          f"{p50:>8.2f} {p99:>8.2f} {added}")  # fmt: skip
            logged = sum(p.read_bytes().count(b"\n") for p in Path(tmp).glob("*/state/requests-*"))
            print(f"request log: {logged} chained lines written")
        finally:
            for process in (door, secure_door):
                process.terminate()
                process.wait(10)
            engine.terminate()
            engine.wait(10)


if __name__ == "__main__":
    main()
