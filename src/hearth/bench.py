"""Measured capacity: a concurrency sweep through the inventory's front door (``hearth bench``).

For each model and each concurrency level ``c``, ``c`` workers send streaming chat completions
(``stream: true``) with the front door's API key for ``duration`` seconds (and at most
``max_requests`` requests), each request bounded by ``request_timeout``. Per request: the time to
the first streamed token (TTFT), the gaps between streamed tokens (inter-token latency, ITL), the
output tokens (the stream's ``usage`` when the engine sends it, else the streamed chunks). Per
level: aggregate output tokens/s and requests/s over the level's wall time (until its last request
ended), p50/p95 of TTFT and ITL (nearest rank), errors.

The sweep stops after a level whose p95 TTFT passes ``hearth_slo.ttft_p95_s`` (higher levels only
queue more), or whose every request failed. The *knee* is the highest level that meets the whole
SLO (p95 TTFT and p95 ITL, no errors).

The only target is a front door of the inventory (a host the playbooks give the ``front_door``
role, at its ``front_door_port``); the API key is the inventory's (``front_door_api_keys``, in
ansible-vault) and never leaves this process: not in the results, not in any message.

Results are JSON files under ``$HEARTH_HOME/bench/`` (:func:`write_results`), read back by
``hearth plan --cost`` (:func:`latest_results`).
"""

from __future__ import annotations

import hashlib
import http.client
import itertools
import json
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hearth import paths
from hearth.canary import percentile
from hearth.cost import DEFAULT_SLO, Slo, parse_slo
from hearth.errors import InvalidInputError

__all__ = [
    "PROMPT_SETS",
    "LevelStats",
    "RequestResult",
    "Sweep",
    "Target",
    "knee",
    "latest_results",
    "meets",
    "parse_concurrency",
    "parse_duration",
    "run_level",
    "stream_chat",
    "summarize",
    "sweep",
    "write_results",
]

MAX_LEVELS = 12
MAX_CONCURRENCY = 512
MAX_DURATION_S = 600.0
RESULTS_KIND = "hearth-bench"


class BenchInputError(InvalidInputError):
    """A bad ``hearth bench`` argument or target (exit 2, nothing was sent)."""


# ---------------------------------------------------------------------------------- arguments


def parse_concurrency(text: str) -> list[int]:
    """``"1,2,4"`` → ``[1, 2, 4]``: whole numbers from 1 to 512, at most 12 levels, ascending."""
    levels: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not re.fullmatch(r"\d+", part):
            raise BenchInputError(f"--concurrency {text!r}: {part!r} is not a whole number")
        value = int(part)
        if not 1 <= value <= MAX_CONCURRENCY:
            raise BenchInputError(
                f"--concurrency {text!r}: {value} is outside 1–{MAX_CONCURRENCY} "
                "(a level of 0 concurrent requests measures nothing)"
            )
        levels.append(value)
    if len(levels) > MAX_LEVELS:
        raise BenchInputError(f"--concurrency {text!r}: at most {MAX_LEVELS} levels")
    return sorted(set(levels))


def parse_duration(text: str) -> float:
    """``"30s"``, ``"2m"``, ``"45"`` (seconds) → seconds, from 1 s to 10 min."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*", text)
    if not found:
        raise BenchInputError(f"--duration {text!r}: expected seconds such as 30s or 2m")
    value = float(found.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[found.group(2)]
    if not 1 <= value <= MAX_DURATION_S:
        raise BenchInputError(f"--duration {text!r}: expected 1 s to {MAX_DURATION_S:g} s a level")
    return value


# ---------------------------------------------------------------------------------- prompts

_CHAT = (
    "What is the capital of France? Answer in one sentence.",
    "Give three tips for writing clear e-mails.",
    "Explain what a hash function is to a new colleague.",
    "Summarise the water cycle in a short paragraph.",
    "Write a haiku about a server room at night.",
    "What are the pros and cons of working from home?",
    "How do vaccines train the immune system? Keep it simple.",
    "List five questions to ask before buying a used car.",
)
_LONG_PARAGRAPH = (
    "The hospital's night shift begins at seven. The ward nurse reads the handover notes, checks "
    "the medication chart for every patient, and writes down which observations are due in the "
    "next hour. Two patients are waiting for results from the laboratory, one is due for a "
    "dressing change, and a new admission from the emergency department is expected before "
    "midnight. The notes mention a fall risk in bed four and an allergy to penicillin in bed "
    "nine. "
)


@dataclass(frozen=True)
class PromptSet:
    name: str
    max_tokens: int
    prompts: tuple[str, ...]

    def body(self, model: str, n: int, max_tokens: int | None = None) -> dict[str, Any]:
        """The ``n``-th request: the prompts in turn, each with its number first (so an engine's
        prefix cache cannot answer a long prompt from the previous request)."""
        prompt = self.prompts[n % len(self.prompts)]
        return {
            "model": model,
            "messages": [{"role": "user", "content": f"Request {n}. {prompt}"}],
            "max_tokens": max_tokens or self.max_tokens,
            "temperature": 0.7,
            "stream": True,
            "stream_options": {"include_usage": True},
        }


PROMPT_SETS: dict[str, PromptSet] = {
    "chat": PromptSet("chat", 128, _CHAT),
    "long": PromptSet(
        "long",
        256,
        tuple(
            f"Read this shift report and list every task with its time.\n\n{_LONG_PARAGRAPH * 12}"
            f"\n(Report {i}.) {question}"
            for i, question in enumerate(_CHAT[:4])
        ),
    ),
}


# ---------------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Target:
    """A front door of the inventory: where to send, and with which key (never shown)."""

    host: str
    address: str
    port: int
    key_name: str
    api_key: str = field(repr=False)
    # HTTPS (the door's front_door_tls), its certificate checked against ca_file (the site's CA
    # of `hearth tls init`, or the one given) or, empty, the system's trusted CAs
    tls: bool = False
    ca_file: str = ""

    @property
    def url(self) -> str:
        address = f"[{self.address}]" if ":" in self.address else self.address
        return f"{'https' if self.tls else 'http'}://{address}:{self.port}"

    def connection(self, timeout: float) -> http.client.HTTPConnection:
        """A connection to the front door: HTTPS verifying its certificate (the CA, the name)
        when ``tls``."""
        if not self.tls:
            return http.client.HTTPConnection(self.address, self.port, timeout=timeout)
        context = ssl.create_default_context(cafile=self.ca_file or None)
        return http.client.HTTPSConnection(
            self.address, self.port, timeout=timeout, context=context
        )


@dataclass
class RequestResult:
    ok: bool
    status: int = 0
    error: str = ""
    ttft_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    output_tokens: int = 0
    prompt_tokens: int = 0
    seconds: float = 0.0


def stream_chat(
    target: Target,
    body: Mapping[str, Any],
    timeout: float = 120.0,
    clock: Callable[[], float] = time.perf_counter,
) -> RequestResult:
    """One streaming chat completion through the front door, timed token by token."""
    started = clock()
    conn = target.connection(min(timeout, 60.0))
    stamps: list[float] = []
    usage: Mapping[str, Any] | None = None
    try:
        conn.request(
            "POST",
            "/v1/chat/completions",
            body=json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {target.api_key}",
                "Content-Type": "application/json",
                "Accept": "text/event-stream",
            },
        )
        response = conn.getresponse()
        if response.status != 200:
            detail = _error_detail(response.read(4096))
            return RequestResult(
                False,
                response.status,
                f"HTTP {response.status}: {detail}",
                seconds=clock() - started,
            )
        while True:
            line = response.readline()
            if not line:
                break
            if clock() - started > timeout:
                return RequestResult(False, 200, f"no end after {timeout:g} s", seconds=timeout)
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            try:
                event = json.loads(data)
            except ValueError:
                continue
            if isinstance(event.get("usage"), Mapping):
                usage = event["usage"]
            for choice in event.get("choices") or ():
                delta = choice.get("delta") or {}
                if delta.get("content") or delta.get("reasoning_content"):
                    stamps.append(clock())
    except (OSError, http.client.HTTPException) as e:
        return RequestResult(
            False, 0, f"{e.__class__.__name__}: {e}"[:200], seconds=clock() - started
        )
    finally:
        conn.close()
    ended = clock()
    if not stamps:
        return RequestResult(False, 200, "the stream carried no token", seconds=ended - started)
    tokens = len(stamps)
    prompt_tokens = 0
    if usage:
        tokens = int(usage.get("completion_tokens") or tokens)
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
    return RequestResult(
        ok=True,
        status=200,
        ttft_s=stamps[0] - started,
        itl_s=[b - a for a, b in itertools.pairwise(stamps)],
        output_tokens=tokens,
        prompt_tokens=prompt_tokens,
        seconds=ended - started,
    )


def _error_detail(raw: bytes) -> str:
    try:
        data = json.loads(raw)
        message = data.get("error", {}).get("message") if isinstance(data, dict) else None
        return str(message or data)[:160]
    except (ValueError, AttributeError):
        return raw.decode("utf-8", "replace").strip()[:160]


# ---------------------------------------------------------------------------------- statistics


@dataclass
class LevelStats:
    concurrency: int
    requests: int
    errors: int
    seconds: float
    output_tokens: int
    tokens_per_s: float
    requests_per_s: float
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    itl_p50_ms: float | None
    itl_p95_ms: float | None
    prompt_tokens: int = 0
    error_samples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(concurrency: int, results: Sequence[RequestResult], seconds: float) -> LevelStats:
    """A level's figures from its requests and its wall time."""
    good = [r for r in results if r.ok]
    ttfts = [r.ttft_s for r in good if r.ttft_s is not None]
    itls = [gap for r in good for gap in r.itl_s]
    tokens = sum(r.output_tokens for r in good)
    samples: list[str] = []
    for r in results:
        if not r.ok and r.error not in samples and len(samples) < 3:
            samples.append(r.error)
    rate = (lambda n: n / seconds) if seconds > 0 else (lambda n: 0.0)
    return LevelStats(
        concurrency=concurrency,
        requests=len(results),
        errors=len(results) - len(good),
        seconds=round(seconds, 3),
        output_tokens=tokens,
        tokens_per_s=rate(tokens),
        requests_per_s=rate(len(good)),
        ttft_p50_s=percentile(ttfts, 0.50) if ttfts else None,
        ttft_p95_s=percentile(ttfts, 0.95) if ttfts else None,
        itl_p50_ms=percentile(itls, 0.50) * 1000 if itls else None,
        itl_p95_ms=percentile(itls, 0.95) * 1000 if itls else None,
        prompt_tokens=sum(r.prompt_tokens for r in good),
        error_samples=samples,
    )


def meets(level: LevelStats, slo: Slo) -> bool:
    """The level answered every request within the SLO's p95 TTFT and p95 ITL."""
    if level.errors or not level.requests or level.ttft_p95_s is None:
        return False
    itl_ok = level.itl_p95_ms is None or level.itl_p95_ms <= slo.itl_p95_ms
    return level.ttft_p95_s <= slo.ttft_p95_s and itl_ok


def knee(levels: Iterable[LevelStats], slo: Slo) -> LevelStats | None:
    """The highest concurrency that meets the SLO."""
    good = [level for level in levels if meets(level, slo)]
    return max(good, key=lambda level: level.concurrency) if good else None


# ---------------------------------------------------------------------------------- the sweep

Send = Callable[[int], RequestResult]


def run_level(
    send: Send,
    concurrency: int,
    duration: float,
    max_requests: int,
    clock: Callable[[], float] = time.perf_counter,
) -> LevelStats:
    """``concurrency`` workers call ``send(n)`` until ``duration`` has passed or ``max_requests``
    were started; the level ends when the last request has."""
    lock = threading.Lock()
    results: list[RequestResult] = []
    issued = 0
    start = clock()

    def worker() -> None:
        nonlocal issued
        while True:
            with lock:
                if clock() - start >= duration or issued >= max_requests:
                    return
                n = issued
                issued += 1
            outcome = send(n)
            with lock:
                results.append(outcome)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return summarize(concurrency, results, clock() - start)


@dataclass
class Sweep:
    model: str
    levels: list[LevelStats] = field(default_factory=list)
    stopped: str | None = None
    knee: LevelStats | None = None


def sweep(
    target: Target,
    model: str,
    concurrency: Sequence[int],
    duration: float,
    slo: Slo = DEFAULT_SLO,
    prompt_set: str = "chat",
    max_tokens: int | None = None,
    max_requests: int = 2000,
    request_timeout: float = 120.0,
    on_level: Callable[[LevelStats], None] | None = None,
) -> Sweep:
    """One model's sweep: a warm-up request, then each level in turn (see the module doc)."""
    prompts = PROMPT_SETS[prompt_set]

    def send(n: int) -> RequestResult:
        return stream_chat(target, prompts.body(model, n, max_tokens), request_timeout)

    result = Sweep(model=model)
    warm = send(10**6)
    if not warm.ok:
        raise BenchInputError(
            f"model {model} through the front door {target.url} ({target.host}): the warm-up "
            f"request failed: {warm.error}; nothing was measured"
        )
    for level in concurrency:
        stats = run_level(send, level, duration, max_requests)
        result.levels.append(stats)
        if on_level is not None:
            on_level(stats)
        if stats.errors == stats.requests:
            result.stopped = f"every request failed at concurrency {level}"
            break
        if stats.ttft_p95_s is not None and stats.ttft_p95_s > slo.ttft_p95_s:
            rest = [c for c in concurrency if c > level]
            if rest:
                result.stopped = (
                    f"p95 TTFT {stats.ttft_p95_s:.2f} s passed ttft_p95_s {slo.ttft_p95_s:g} s "
                    f"at concurrency {level}; not run: {', '.join(map(str, rest))}"
                )
            break
    result.knee = knee(result.levels, slo)
    return result


# ------------------------------------------------------------------------- the inventory side


@dataclass(frozen=True)
class Served:
    """A model the front door routes, and where it runs."""

    name: str
    version: str
    engine: str
    hosts: tuple[str, ...]
    gpus: Mapping[str, list[str]]


def inventory_id(inventory: Path) -> str:
    """Which inventory (its real path), as the fact cache keys it."""
    return hashlib.sha256(str(Path(inventory).resolve()).encode()).hexdigest()[:16]


def inventory_sha256(inventory: Path) -> str:
    """The content of every file Ansible reads for the inventory (vault files as encrypted)."""
    from hearth.inventory import _considered_files

    base = Path(inventory)
    root = base if base.is_dir() else base.parent
    files = list(_considered_files(base))
    for extra in ("group_vars", "host_vars"):
        if (root / extra).is_dir() and not base.is_dir():
            files += [p for p in sorted((root / extra).rglob("*")) if p.is_file()]
    digest = hashlib.sha256()
    for path in sorted(set(files)):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def front_doors(inv: Any) -> list[str]:
    """The inventory's hosts that the playbooks give the ``front_door`` role."""
    from hearth.layers import roles_for_hosts

    return [host for host, roles in roles_for_hosts(inv).items() if "front_door" in roles]


def resolve_target(
    inv: Any, front_door: str | None = None, key_name: str | None = None, ca_file: str = ""
) -> tuple[Target, dict[str, Any]]:
    """The front door to measure through (``front_door``: one of the inventory's front door
    hosts, by name or address; anything else is refused) with its API key, and its variables.
    With ``front_door_tls`` (on unless declared false) it is reached over HTTPS, its certificate
    checked against ``ca_file`` when given, else the site's CA of ``hearth tls init`` (no
    ``front_door_tls_cert``), else the system's trusted CAs (the site's own certificate)."""
    doors = front_doors(inv)
    if not doors:
        raise BenchInputError(
            f"{inv.path}: no front door: no host gets the front_door role (group frontdoor); "
            "hearth bench only measures through the inventory's front door"
        )
    chosen = doors[0]
    if front_door is not None:
        matches = [h for h in doors if front_door in (h, _address(inv, h))]
        if not matches:
            listed = ", ".join(f"{h} ({_address(inv, h)})" for h in doors)
            raise BenchInputError(
                f"--front-door {front_door}: not a front door of {inv.path} (its front doors: "
                f"{listed}); hearth bench sends requests nowhere else"
            )
        chosen = matches[0]
    variables = inv.resolved_vars(chosen, ["front_door"])
    keys = variables.get("front_door_api_keys") or []
    usable = [k for k in keys if isinstance(k, Mapping) and isinstance(k.get("key"), str)]
    if key_name is not None:
        usable = [k for k in usable if k.get("name") == key_name]
    if not usable:
        which = f" named {key_name!r}" if key_name else ""
        raise BenchInputError(
            f"front door {chosen}: no API key{which} in front_door_api_keys that Hearth can read "
            "(is the vault password given with --vault-password-file?)"
        )
    key = usable[0]
    if key["key"].startswith("$ANSIBLE_VAULT"):
        raise BenchInputError(
            f"front door {chosen}: front_door_api_keys is vault-encrypted: give "
            "--vault-password-file"
        )
    target = Target(
        host=chosen,
        address=_address(inv, chosen),
        port=int(variables.get("front_door_port") or 8090),
        key_name=str(key.get("name") or "?"),
        api_key=key["key"],
        tls=variables.get("front_door_tls", True) is True,
        ca_file=ca_file or _site_ca(inv, chosen, variables),
    )
    return target, variables


def _site_ca(inv: Any, host: str, variables: Mapping[str, Any]) -> str:
    """The CA a front door's certificate is checked against: the site's of ``hearth tls init``
    when the door has no certificate of the site's own (and the CA exists), else none."""
    from hearth import tls

    if variables.get("front_door_tls", True) is not True or variables.get("front_door_tls_cert"):
        return ""
    source = Path(inv.path).resolve()
    site = tls.site_name(variables.get("hearth_site"), source if source.is_dir() else source.parent)
    ca = tls.site_dir(site) / "ca.crt"
    return str(ca) if ca.is_file() else ""


def _address(inv: Any, host: str) -> str:
    return str(inv.hostvars(host).get("ansible_host") or host)


def served_models(inv: Any, front_door_vars: Mapping[str, Any]) -> dict[str, Served]:
    """The models the front door routes (``hearth_models`` of its inference group), with their
    hosts and GPUs (from the VRAM plan: declared GPUs or gathered facts)."""
    from hearth import plan as plan_mod

    group = str(front_door_vars.get("front_door_inference_group") or "inference")
    members = set(inv.groups.get(group, []))
    placements = [p for p in plan_mod.plan_loaded(inv).placements if p.host in members]
    served: dict[str, Served] = {}
    for p in placements:
        gpus = ["cpu"] if p.model.on_cpu else [g.name or f"GPU {g.index}" for g in p.gpus]
        found = served.get(p.model.name)
        if found is None:
            served[p.model.name] = Served(
                p.model.name, p.model.version, p.model.engine, (p.host,), {p.host: gpus}
            )
        else:
            served[p.model.name] = Served(
                found.name, found.version, found.engine, (*found.hosts, p.host),
                {**found.gpus, p.host: gpus},
            )  # fmt: skip
    return served


def choose_models(served: Mapping[str, Served], wanted: Sequence[str]) -> list[Served]:
    """The models to sweep: those named (each must be served), else every token-streaming one
    (vLLM, llama.cpp)."""
    streaming = {n: s for n, s in served.items() if s.engine != "triton"}
    if not wanted:
        if not streaming:
            raise BenchInputError("the front door routes no vLLM or llama.cpp model to measure")
        return list(streaming.values())
    chosen = []
    for name in wanted:
        if name not in served:
            raise BenchInputError(
                f"--model {name}: not declared in hearth_models of the front door's inference "
                f"hosts (served: {', '.join(sorted(served)) or 'none'})"
            )
        if name not in streaming:
            raise BenchInputError(
                f"--model {name}: a Triton model; hearth bench measures token streams (vLLM, "
                "llama.cpp)"
            )
        chosen.append(streaming[name])
    return chosen


# ---------------------------------------------------------------------------------- results


def bench_dir() -> Path:
    return paths.hearth_home() / "bench"


def results_document(
    result: Sweep,
    served: Served,
    target: Target,
    inventory: Path,
    settings: Mapping[str, Any],
    slo: Slo,
    date: datetime | None = None,
) -> dict[str, Any]:
    from hearth import __version__

    when = (date or datetime.now(UTC)).replace(microsecond=0)
    the_knee = result.knee
    return {
        "kind": RESULTS_KIND,
        "schema": 1,
        "date": when.isoformat().replace("+00:00", "Z"),
        "hearth_version": __version__,
        "inventory": str(Path(inventory).resolve()),
        "inventory_id": inventory_id(inventory),
        "inventory_sha256": inventory_sha256(inventory),
        "front_door": {"host": target.host, "url": target.url, "key_name": target.key_name},
        "model": served.name,
        "version": served.version,
        "engine": served.engine,
        "hosts": list(served.hosts),
        "gpus": dict(served.gpus),
        "settings": dict(settings),
        "slo": asdict(slo),
        "levels": [level.as_dict() for level in result.levels],
        "stopped": result.stopped,
        "knee": None if the_knee is None else the_knee.as_dict(),
    }


def write_results(document: Mapping[str, Any], directory: Path | None = None) -> Path:
    """Write one sweep's results as ``<date>-<model>.json`` (mode 0644) and return the path."""
    directory = directory or bench_dir()
    directory.mkdir(parents=True, exist_ok=True)
    stamp = str(document["date"]).replace(":", "").replace("-", "")
    path = directory / f"{stamp}-{document['model']}.json"
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path


def load_results(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BenchInputError(f"{path}: not a hearth bench results file: {e}") from e
    if not isinstance(data, dict) or data.get("kind") != RESULTS_KIND:
        raise BenchInputError(f"{path}: not a hearth bench results file (kind {RESULTS_KIND})")
    return data


def latest_results(inventory: Path, directory: Path | None = None) -> dict[str, dict[str, Any]]:
    """The newest results of each model measured through this inventory's front door."""
    directory = directory or bench_dir()
    wanted = inventory_id(inventory)
    latest: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else ():
        try:
            data = load_results(path)
        except BenchInputError:
            continue
        if data.get("inventory_id") != wanted:
            continue
        data["_path"] = str(path)
        name = str(data.get("model"))
        if name not in latest or str(data["date"]) >= str(latest[name]["date"]):
            latest[name] = data
    return latest


def slo_for(variables: Mapping[str, Any], override: str | None = None) -> Slo:
    """The SLO: ``--slo`` when given, else the front door host's ``hearth_slo``, else defaults."""
    if override:
        return parse_slo(override, "--slo")
    return parse_slo(variables.get("hearth_slo"), "hearth_slo")
