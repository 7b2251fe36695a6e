"""Front door benchmark: the latency it adds and the request rate it carries, with and without
per-key limits and the prompt log, against a fast fake engine on loopback (it measures the
proxy, not a model), or (``--engine real``) against the real llama.cpp engine serving SmolLM2.

Three processes on this machine: a fake llama.cpp (a minimal asyncio HTTP/1.1 server answering
every chat completion at once with a fixed body and its usage), the real front door
(``python -m hearth.frontdoor`` with a config.json and keys.json written here, its request log and
quota file in a temporary state directory) and this load generator (httpx, keep-alive, N requests
in flight). For each concurrency (default 1, 8, 32) it runs, for --seconds each:

- ``direct``: the load generator straight to the fake engine (the baseline);
- ``front door``: through the front door, a key with no policy;
- ``front door + prompts``: through a second front door that logs prompts and answers
  (``prompts.log``: a record per request in ``prompts-*.jsonl``, its sha256 in the chained line);
- ``front door + limits``: a key with models, rpm, tpm, max_concurrent and tokens_per_day set high
  enough never to refuse (the limiter's bookkeeping and the quota file's rewrites, at most once a
  second, are measured, not refusals);
- ``+ limits + TLS``: the same through a second front door serving HTTPS with a certificate of
  ``hearth tls init`` (the client verifies it against the site CA; connections are kept alive, so
  this is mostly the record layer, with a handshake per connection).

Prints p50 and p99 latency, requests per second, and the front door's added p50/p99 (its figure
minus the direct one at the same concurrency).

With ``--engine real`` the engine is the real one instead: the locally built llama.cpp image
(``hearth-llamacpp:<recipe hash>``, never built here: ``hearth images build`` makes it) started
on this machine's Docker with the lab model (``hearth models fetch-lab``; SmolLM2-135M Q4_1), its
arguments from :func:`hearth.engines.render_command` as the role starts it (one thread,
``--parallel 2``), on the host's network at a free loopback port for the run, removed at the
end. Each request asks for ``--max-tokens`` (default 8) tokens at temperature 0; the rows are
``direct``, ``front door`` and ``front door + prompts`` (limits and TLS are the proxy's cost,
measured against the fake engine). Defaults there: concurrency 1,2, 8 s per row in four slices
taken in turn (direct, front door, + prompts, again), as the model's own time varies with what
else the shared cores run; then a paired run at concurrency 1 (one request by each path in
turn, the difference taken within each turn) for twice as long, whose median difference is the
steadiest figure of the front door's added latency over a real model on shared cores.

    python benchmarks/frontdoor.py [--concurrency 1,8,32] [--seconds 5]
    python benchmarks/frontdoor.py --engine real [--concurrency 1,2] [--seconds 8]
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

LAB_MODEL = "smollm2-135m-instruct-q4_1"
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
    directory: Path, engine: str, secure: bool = False, prompts: bool = False
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
        "prompts": {"log": prompts, "retention_days": 1},
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


def start_real_engine() -> tuple[str, str]:
    """The real llama.cpp engine in Docker on a free port of the host's network: (container
    name, base URL), once it answers /health with 200."""
    from hearth import engines, images, models

    tag = images.image_tag("llamacpp")
    if subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode:
        raise SystemExit(f"{tag} is not in Docker: `hearth images build` makes it")
    model = next(images.fetch_lab_models(LAB_MODEL))
    declaration = {
        "name": "smollm2", "version": "0.1.2-q4_1", "engine": "llamacpp", "format": "gguf",
        "catalog": "smollm2-135m-instruct", "quantization": "Q4_1",
        "source": {"type": "path", "path": str(model.path.parent)},
        "files": [{"path": model.path.name, "sha256": model.sha256, "size": model.size}],
        "max_model_len": 2048, "max_num_seqs": 2, "gpus": [], "engine_args": {"threads": 1},
    }  # fmt: skip
    port = free_port()
    argv = engines.render_command(models.parse_models([declaration])[0], port=port)
    name = f"hearth-bench-frontdoor-{os.getpid()}"
    subprocess.run(
        ["docker", "run", "-d", "--rm", "--name", name, "--label", "io.hearth.test=bench-frontdoor",
         "--network", "host", "--read-only", "--tmpfs", "/tmp",
         "-v", f"{model.path.parent}:/models/smollm2/current:ro", tag, *argv],
        check=True, capture_output=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return name, url
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
    raise SystemExit(f"the llama.cpp engine ({tag}) did not become healthy in 90 s")


async def load(
    url: str,
    key: str | None,
    concurrency: int,
    seconds: float,
    verify: ssl.SSLContext | bool,
    body: bytes = BODY,
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
            await client.post(url + "/v1/chat/completions", content=body, headers=headers)
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                answer = await client.post(
                    url + "/v1/chat/completions", content=body, headers=headers
                )
                if answer.status_code != 200:
                    raise SystemExit(f"{url}: {answer.status_code} {answer.text[:200]}")
                latencies.append(time.perf_counter() - began)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_rows(
    rows: list[tuple[str, str, str | None]],
    levels: list[int],
    seconds: float,
    verify: ssl.SSLContext | bool,
    body: bytes,
    rounds: int = 1,
) -> None:
    """Each row at each concurrency for ``seconds``, in ``rounds`` slices taken in turn (so a
    neighbour's burst on the shared cores falls on every row alike)."""
    header = (f"{'concurrency':>11}  {'path':<22} {'requests':>8} {'req/s':>8} "
              f"{'p50 ms':>8} {'p99 ms':>8} {'added p50':>10} "
              f"{'added p99':>10}")  # fmt: skip
    print(header)
    for level in levels:
        base: tuple[float, float] | None = None
        measured: dict[str, list[float]] = {label: [] for label, _, _ in rows}
        for _ in range(rounds):
            for label, url, key in rows:
                check = verify if url.startswith("https") else True
                measured[label] += asyncio.run(load(url, key, level, seconds / rounds, check, body))
        for label, _, _ in rows:
            latencies = measured[label]
            p50, p99 = quantile(latencies, 0.5) * 1e3, quantile(latencies, 0.99) * 1e3
            added = "" if base is None else f"{p50 - base[0]:>10.2f} {p99 - base[1]:>10.2f}"
            if base is None:
                base = (p50, p99)
            rate = len(latencies) / seconds
            print(f"{level:>11}  {label:<22} {len(latencies):>8} {rate:>8.1f} "
                  f"{p50:>8.2f} {p99:>8.2f} {added}")  # fmt: skip


def paired(rows: list[tuple[str, str, str | None]], seconds: float, body: bytes) -> None:
    """One request by each row in turn, again and again (the order rotating), for ``seconds``:
    each row's latency minus the first row's in the same turn, so a slow spell of the shared
    cores falls on both sides of each difference. Prints the median and mean difference."""
    import statistics

    async def run() -> dict[str, list[float]]:
        differences: dict[str, list[float]] = {label: [] for label, _, _ in rows[1:]}
        async with httpx.AsyncClient(timeout=60, trust_env=False) as client:

            async def one(url: str, key: str | None) -> float:
                headers = {"content-type": "application/json"}
                if key:
                    headers["authorization"] = f"Bearer {key}"
                began = time.perf_counter()
                answer = await client.post(url + "/v1/chat/completions", content=body,
                                           headers=headers)  # fmt: skip
                if answer.status_code != 200:
                    raise SystemExit(f"{url}: {answer.status_code} {answer.text[:200]}")
                return time.perf_counter() - began

            for _, url, key in rows:  # connections open before the clock starts
                await one(url, key)
            deadline = time.perf_counter() + seconds
            turn = 0
            while time.perf_counter() < deadline:
                order = rows[turn % len(rows) :] + rows[: turn % len(rows)]
                took = {label: await one(url, key) for label, url, key in order}
                for label in differences:
                    differences[label].append(took[label] - took[rows[0][0]])
                turn += 1
        return differences

    for label, values in asyncio.run(run()).items():
        print(f"paired, concurrency 1 ({len(values)} turns): {label} minus {rows[0][0]}: "
              f"median {statistics.median(values) * 1e3:+.2f} ms, "
              f"mean {statistics.fmean(values) * 1e3:+.2f} ms")  # fmt: skip


def report_logs(directory: Path) -> None:
    logged = sum(p.read_bytes().count(b"\n") for p in directory.glob("*/state/requests-*"))
    prompts = list(directory.glob("*/state/prompts-*"))
    records = sum(p.read_bytes().count(b"\n") for p in prompts)
    size = sum(p.stat().st_size for p in prompts)
    print(f"request log: {logged} chained lines written; prompt log: {records} records, "
          f"{size / max(records, 1):.0f} bytes each")  # fmt: skip


def log_write_cost(count: int = 3000) -> None:
    """The request log's own cost per request, in this process (no network, no scheduler of
    three processes in between): a chained line alone, and a line with its prompt record."""
    from hearth.frontdoor.reqlog import RequestLog

    entry = {"key": "bench", "model": "smollm2", "version": "v1", "endpoint":
             "/v1/chat/completions", "status": 200, "prompt_tokens": 9, "completion_tokens": 1,
             "seconds": 0.0123, "client": "127.0.0.1"}  # fmt: skip
    prompt = {"key": "bench", "model": "smollm2", "endpoint": "/v1/chat/completions",
              "request": json.loads(BODY), "answer": "Paris"}  # fmt: skip
    figures = []
    for with_prompt in (False, True):
        with tempfile.TemporaryDirectory(prefix="hearth-bench-reqlog-") as tmp:
            log = RequestLog(Path(tmp))
            began = time.perf_counter()
            for _ in range(count):
                log.write(entry, prompt if with_prompt else None)
            figures.append((time.perf_counter() - began) / count * 1e6)
            log.close()
    print(
        f"log writes per request, in-process ({count}): chained line {figures[0]:.1f} µs, "
        f"with its prompt record {figures[1]:.1f} µs (+{figures[1] - figures[0]:.1f} µs)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("fake", "real"), default="fake")
    parser.add_argument("--concurrency", help="default 1,8,32 (fake), 1,2 (real)")
    parser.add_argument("--seconds", type=float, help="per row; default 5 (fake), 8 (real)")
    parser.add_argument("--max-tokens", type=int, default=8, help="real engine: tokens asked")
    args = parser.parse_args()
    real = args.engine == "real"
    levels = [int(c) for c in (args.concurrency or ("1,2" if real else "1,8,32")).split(",")]
    seconds = args.seconds or (8.0 if real else 5.0)
    if real:
        main_real(levels, seconds, args.max_tokens)
    else:
        main_fake(levels, seconds)


def main_real(levels: list[int], seconds: float, max_tokens: int) -> None:
    body = json.dumps(
        {"model": "smollm2", "max_tokens": max_tokens, "temperature": 0,
         "messages": [{"role": "user", "content": "What is the capital of France?"}]}
    ).encode()  # fmt: skip
    container, engine_url = start_real_engine()
    try:
        with tempfile.TemporaryDirectory(prefix="hearth-bench-frontdoor-") as tmp:
            door, door_url = start_front_door(Path(tmp) / "plain", engine_url)
            logging, logging_url = start_front_door(Path(tmp) / "prompts", engine_url, prompts=True)
            try:
                print(f"cores: {os.cpu_count()}; load average {os.getloadavg()[0]:.1f}; "
                      f"{seconds:.0f} s per run; the real llama.cpp engine (SmolLM2-135M Q4_1, "
                      f"1 thread, 2 slots, {max_tokens} tokens per answer), the front doors and "
                      "this load generator share them")  # fmt: skip
                rows = [
                    ("direct", engine_url, None),
                    ("front door", door_url, KEY),
                    ("front door + prompts", logging_url, KEY),
                ]
                run_rows(rows, levels, seconds, True, body, rounds=4)
                paired(rows, 2 * seconds, body)
                report_logs(Path(tmp))
                log_write_cost()
            finally:
                for process in (door, logging):
                    process.terminate()
                    process.wait(10)
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)


def main_fake(levels: list[int], seconds: float) -> None:
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
        logging, logging_url = start_front_door(Path(tmp) / "prompts", engine_url, prompts=True)
        secure_door, secure_url = start_front_door(Path(tmp) / "tls", engine_url, secure=True)
        verify = trust(Path(tmp) / "tls")
        try:
            print(f"cores: {os.cpu_count()}; load average {os.getloadavg()[0]:.1f}; "
                  f"{seconds:.0f} s per run; the fake engine, the front door and this load "
                  "generator share them")  # fmt: skip
            rows = [
                ("direct", engine_url, None),
                ("front door", door_url, KEY),
                ("front door + prompts", logging_url, KEY),
                ("front door + limits", door_url, LIMITED),
                ("+ limits + TLS", secure_url, LIMITED),
            ]
            run_rows(rows, levels, seconds, verify, BODY, rounds=2)
            report_logs(Path(tmp))
            log_write_cost()
        finally:
            for process in (door, logging, secure_door):
                process.terminate()
                process.wait(10)
            engine.terminate()
            engine.wait(10)


if __name__ == "__main__":
    main()
