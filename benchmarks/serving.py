"""Serving benchmark: time to first token and decode speed of a deployed model, through the front
door and straight from the engine; the first request after a (re)start's warm-up against steady
state; decode speed as a share of the memory-bandwidth roofline.

Against the lab (`hearth lab up` + `hearth up`, HEARTH_LAB_ID selects it) it needs no argument:
the front door and the engine are lab1's, the key is the lab's (``$HEARTH_HOME/lab-N/api-key``),
the model file is the cached SmolLM2 GGUF. ``--restart`` restarts the engine inside lab1 first
(docker restart), waits for its health check and sends the role's warm-up request, so the first
measured request is "the first request after warm-up"; one more restart measures the first
request without any warm-up.

Each request streams (``stream: true``): TTFT is the time to the first chunk with text; decode
tokens/s is (chunks with text - 1) / (time of the last - time of the first). The roofline of
single-stream decode is memory bandwidth / bytes read per token (the model's weights: the GGUF's
size); bandwidth is measured here with a large memory copy (read + write bytes counted, as STREAM
does), and again with a buffer of the model's size (what the caches hold).

    python benchmarks/serving.py [--restart [--rounds 3]] [--requests 10] [--max-tokens 64]
        [--front-door URL --engine URL --key-file FILE --model NAME --model-file GGUF]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROMPT = "Write three sentences about the history of Paris."
SYSTEM = "You are a helpful assistant."


@dataclass
class Sample:
    ttft: float
    tokens: int
    decode_tps: float
    total: float
    server_tps: float | None = None


def stream(base: str, model: str, key: str | None, max_tokens: int) -> Sample:
    body = {
        "model": model,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(  # noqa: S310 - http(s) only, checked in main()
        f"{base}/v1/chat/completions", data=json.dumps(body).encode(), headers=headers
    )
    started = time.perf_counter()
    stamps: list[float] = []
    server_tps: float | None = None
    with urllib.request.urlopen(request, timeout=300) as answer:  # noqa: S310
        for raw in answer:
            line = raw.decode().strip()
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            event = json.loads(line[5:])
            for choice in event.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    stamps.append(time.perf_counter())
            timings = event.get("timings") or {}
            if timings.get("predicted_per_second"):
                server_tps = float(timings["predicted_per_second"])
    ended = time.perf_counter()
    if not stamps:
        raise SystemExit(f"{base}: the model streamed no text")
    decode = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0
    return Sample(stamps[0] - started, len(stamps), decode, ended - started, server_tps)


def copy_bandwidth(size: int, rounds: int = 5) -> float:
    """GB/s of a single-threaded memory copy of ``size`` bytes (read + write counted)."""
    try:
        import numpy as np

        src = np.ones(size, dtype=np.uint8)
        dst = np.empty_like(src)

        def copy() -> None:
            np.copyto(dst, src)

    except ImportError:
        source, target = bytearray(b"\1" * size), bytearray(size)
        view = memoryview(target)

        def copy() -> None:
            view[:] = source

    copy()
    best = min(_timed(copy) for _ in range(rounds))
    return 2 * size / best / 1e9


def _timed(action: Any) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def _lab_defaults() -> dict[str, str]:
    from hearth import images, lab

    state_file = lab.lab_dir() / "lab.json"
    if not state_file.is_file():
        return {}
    state = json.loads(state_file.read_text())
    host = state["hosts"][0]
    model = next(images.fetch_lab_models("smollm2-135m-instruct-q4_1"))
    return {
        "front_door": f"http://{host['address']}:8090",
        "engine": f"http://{host['address']}:8080",
        "key_file": str(lab.api_key_file()),
        "model_file": str(model.path),
        "container": host["container"],
    }


def restart_engine(container: str, engine: str, model: str, warm_up: bool) -> float:
    """Restart the engine inside the lab host; wait for its health check; warm it up as the
    inference_engine role does. Returns the seconds until healthy."""
    from hearth import engines, models

    subprocess.run(
        ["docker", "exec", container, "docker", "restart", f"hearth-engine-{model}"],
        check=True,
        capture_output=True,
    )
    started = time.perf_counter()
    while True:
        try:
            with urllib.request.urlopen(f"{engine}/health", timeout=2) as answer:  # noqa: S310
                if answer.status == 200:
                    break
        except OSError:
            pass
        if time.perf_counter() - started > 300:
            raise SystemExit(f"{engine}/health did not answer within 300 s")
        time.sleep(0.05)
    healthy = time.perf_counter() - started
    if warm_up:
        spec = models.parse_models(
            [
                {
                    "name": model, "version": "x", "engine": "llamacpp", "format": "gguf",
                    "source": {"type": "path", "path": "/"}, "gpus": [],
                    "files": [{"path": "m.gguf", "sha256": "0" * 64}],
                    "max_model_len": 2048, "max_num_seqs": 2,
                }
            ]
        )[0]  # fmt: skip
        warmup = engines.warmup_request(spec)
        request = urllib.request.Request(  # noqa: S310 - http(s) only, checked in main()
            engine + warmup["path"],
            data=json.dumps(warmup["body"]).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=300) as answer:  # noqa: S310
            answer.read()
    return healthy


def line(label: str, samples: list[Sample]) -> str:
    # medians: the lab's 2 cores are shared, single requests are noisy
    ttft = statistics.median(s.ttft for s in samples)
    tps = statistics.median(s.decode_tps for s in samples)
    server = [s.server_tps for s in samples if s.server_tps]
    extra = f", server {statistics.median(server):6.1f} tok/s" if server else ""
    return (
        f"{label:<36} n={len(samples):<3} TTFT {ttft * 1000:7.1f} ms   decode {tps:6.1f} tok/s"
        f"{extra}   ({statistics.median(s.tokens for s in samples):.0f} tokens)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = _lab_defaults()
    parser.add_argument("--front-door", default=defaults.get("front_door"))
    parser.add_argument("--engine", default=defaults.get("engine"))
    parser.add_argument("--key-file", default=defaults.get("key_file"))
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--model-file", default=defaults.get("model_file"))
    parser.add_argument("--container", default=defaults.get("container"), help="the lab host")
    parser.add_argument("--requests", type=int, default=10, help="steady-state requests per path")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--restart", action="store_true", help="restart the engine first (lab)")
    parser.add_argument("--rounds", type=int, default=3, help="restarts per first-request figure")
    parser.add_argument("--bandwidth-gbs", type=float, help="skip the measurement, use this")
    args = parser.parse_args()
    if not args.front_door or not args.engine:
        parser.error("no lab found: give --front-door and --engine")
    for url in (args.front_door, args.engine):
        if not url.startswith(("http://", "https://")):
            parser.error(f"{url}: expected an http(s) URL")
    key = Path(args.key_file).read_text().strip() if args.key_file else None

    print(f"model {args.model}: front door {args.front_door}, engine {args.engine}")
    figures: dict[str, list[Sample]] = {}
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.restart and args.container:
        healthy: list[float] = []
        for _ in range(args.rounds):
            healthy.append(restart_engine(args.container, args.engine, args.model, False))
            figures.setdefault("first request, no warm-up", []).append(
                stream(args.engine, args.model, None, args.max_tokens)
            )
            healthy.append(restart_engine(args.container, args.engine, args.model, True))
            figures.setdefault("first request after warm-up", []).append(
                stream(args.engine, args.model, None, args.max_tokens)
            )
        print(f"engine restart: healthy after {statistics.median(healthy):.2f} s (median)")
    else:
        figures["first request (engine)"] = [stream(args.engine, args.model, None, args.max_tokens)]
    figures["steady state, engine"] = [
        stream(args.engine, args.model, None, args.max_tokens) for _ in range(args.requests)
    ]
    figures["steady state, front door"] = [
        stream(args.front_door, args.model, key, args.max_tokens) for _ in range(args.requests)
    ]
    for label, samples in figures.items():
        print(line(label, samples))
    engine_ttft = statistics.median(s.ttft for s in figures["steady state, engine"])
    door_ttft = statistics.median(s.ttft for s in figures["steady state, front door"])
    print(f"front door overhead on TTFT: {(door_ttft - engine_ttft) * 1000:+.1f} ms (median)")

    if args.model_file:
        size = Path(args.model_file).stat().st_size
        big = args.bandwidth_gbs or copy_bandwidth(1 << 30)
        cached = copy_bandwidth(size)
        tps = statistics.median(s.decode_tps for s in figures["steady state, engine"])
        print(
            f"roofline: {size / 1e6:.1f} MB read per token; memory copy {big:.1f} GB/s (1 GiB "
            f"buffers) -> {big * 1e9 / size:.0f} tok/s; {cached:.1f} GB/s at the model's size "
            f"-> {cached * 1e9 / size:.0f} tok/s"
        )
        print(
            f"decode {tps:.1f} tok/s = {tps / (big * 1e9 / size):.0%} of the DRAM roofline, "
            f"{tps / (cached * 1e9 / size):.0%} of the model-sized-copy roofline "
            f"(os.cpu_count()={os.cpu_count()})"
        )


if __name__ == "__main__":
    main()
