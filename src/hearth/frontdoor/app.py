"""The front door: one OpenAI-compatible endpoint for every model a site serves.

- ``Authorization: Bearer <key>`` on every API route, checked against the sha256 hashes Ansible
  wrote (:func:`hearth.frontdoor.config.verify_key`); 401 without a key or with a wrong one. Keys
  are never logged, echoed or kept.
- Per-key policies (:mod:`hearth.frontdoor.policy`): allowed models (403 naming them), requests
  and tokens per minute, requests at once, tokens per day (429 with ``Retry-After``), an expiry
  (401 "expired"). Aliases (``chat`` -> ``smollm2``) are routed as their model and listed.
- ``GET /v1/models`` lists the served models and aliases, ``GET /v1/models/{id}`` one of them;
  ``POST /v1/chat/completions``, ``/v1/completions`` and ``/v1/embeddings`` are routed by the
  body's ``model`` to that model's engines (tried in turn when one does not accept the
  connection), streamed back as they come (server-sent events included). An unknown model is a
  404 naming the served ones; a body without ``model`` a 400; embeddings from a model not
  declared ``embeddings: true`` a 400 naming those that are.
- The prompt-injection guard (:mod:`hearth.frontdoor.guard`): a model's pinned system prompt
  comes first in every chat request (a client ``system`` message refused, 400, or demoted to a
  user message, as the model declares; raw completions of such a model refused), and a key's
  ``max_input_bytes`` bounds its request bodies (413 naming the limit).
- Triton models (KServe v2) are reached at ``/v2/models/<name>[/ready|/infer]``; a Triton model
  declared with a text input and output also answers ``/v1/chat/completions`` (the last user
  message in, the output text back).
- ``GET /metrics`` (Prometheus): requests by model, endpoint, status and key name; latency and
  time to first byte by model; prompt and completion tokens by model; authentication failures;
  backend errors; requests in flight, by model and by backend (a drain waits for a backend's count
  to reach 0). ``GET /health`` says the process is up and which files are in force (the sha256
  of ``config.json``, ``keys.json`` and ``routing.json`` as last read). Neither needs a key (they
  say nothing about the traffic's content).
- ``GET /engine-metrics/<model>`` relays the metrics of the model's engine on this host (which
  listens on loopback only) to a scraper presenting the scrape token (``Authorization: Bearer``,
  checked against its sha256 like a key; 401 without it, 404 when no token is configured or the
  model has no engine here, 503 when the engine does not answer, so that Prometheus's ``up`` is
  the engine's).
- ``SIGHUP`` reads the three files again and switches to them between two requests: requests in
  flight (streams included) finish on the backend they started on, new ones take the new
  routes. A file that does not parse is refused, logged, and the routing in force stays.

One JSON line per request goes to stdout (time, model, endpoint, status, seconds, key name,
tokens): never the key, never the prompt. With a ``state_dir``, the same facts (and the model's
version and the client's address) also go to the hash-chained request log
(:mod:`hearth.frontdoor.reqlog`) that ``hearth logs verify`` checks and ``hearth keys usage``
reads. Only when the site opts in (``prompts.log``), each OpenAI request's body as the client
sent it and the answer's text (a streamed answer is copied as it is relayed, never held back) go
to the day's prompt file, bound to the request line by its sha256; the front door deletes prompt
files older than ``prompts.retention_days`` at start, at a reload and at the first request of
each UTC day. Headers (the key among them) are never written.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import json
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from hearth.frontdoor.config import (
    ApiKey,
    ConfigError,
    FrontDoorConfig,
    Loaded,
    ModelRoute,
    hash_key,
    verify_key,
)
from hearth.frontdoor.guard import Refused, input_too_large, pin_system_prompt
from hearth.frontdoor.policy import Limiter, Refusal, allowed
from hearth.frontdoor.reqlog import RequestLog

__all__ = ["FrontDoor", "create_app"]

OPENAI_ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
UNKNOWN = "_unknown"  # the model label of requests for no served model (never client text)
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)
_TTFB_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)


class Metrics:
    """The front door's Prometheus metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "hearth_frontdoor_requests",
            "API requests answered, by model, endpoint, HTTP status, API key name and the version "
            "of the engine that answered (empty when no engine was asked).",
            ["model", "endpoint", "status", "key", "version"],
            registry=r,
        )
        self.latency = Histogram(
            "hearth_frontdoor_request_duration_seconds",
            "Time from the request to the last byte of the answer, by model, endpoint and version.",
            ["model", "endpoint", "version"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.first_byte = Histogram(
            "hearth_frontdoor_time_to_first_byte_seconds",
            "Time from the request to the engine's first byte (the first token when streaming).",
            ["model", "endpoint", "version"],
            buckets=_TTFB_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "hearth_frontdoor_tokens",
            "Tokens the engines reported (usage), by model, kind (prompt, completion) and version.",
            ["model", "kind", "version"],
            registry=r,
        )
        self.auth_failures = Counter(
            "hearth_frontdoor_auth_failures",
            "Requests refused for want of a valid API key (reason: missing, invalid).",
            ["reason"],
            registry=r,
        )
        self.backend_errors = Counter(
            "hearth_frontdoor_backend_errors",
            "Engine connections that failed (the next backend is tried), by model and backend.",
            ["model", "backend"],
            registry=r,
        )
        self.in_flight = Gauge(
            "hearth_frontdoor_requests_in_flight",
            "Requests being answered now, by model.",
            ["model"],
            registry=r,
        )
        self.backend_in_flight = Gauge(
            "hearth_frontdoor_backend_requests_in_flight",
            "Requests an engine is answering now, by model and backend (base URL).",
            ["model", "backend"],
            registry=r,
        )
        self.reloads = Counter(
            "hearth_frontdoor_reloads",
            "Reloads of the configuration, keys and routing (SIGHUP), by result (ok, refused).",
            ["result"],
            registry=r,
        )
        self.key_tokens = Counter(
            "hearth_frontdoor_key_tokens",
            "Tokens used, by API key name, model and kind (prompt, completion).",
            ["key_name", "model", "kind"],
            registry=r,
        )
        self.key_refusals = Counter(
            "hearth_frontdoor_key_refusals",
            "Requests refused by a key's policy, by key name and reason (the error code).",
            ["key_name", "reason"],
            registry=r,
        )
        self.key_expiry = Gauge(
            "hearth_frontdoor_key_expiry_timestamp_seconds",
            "When an API key expires (Unix time), for keys that declare `expires`.",
            ["key_name"],
            registry=r,
        )
        self.canary = Gauge(
            "hearth_frontdoor_canary_share",
            "A canary in progress: the percentage of the model's requests its new version gets "
            "(version), the rest going to the version before (stable_version).",
            ["model", "version", "stable_version"],
            registry=r,
        )
        self.models = Gauge(
            "hearth_frontdoor_model_info",
            "The models the front door routes (1 per model), with engine and version.",
            ["model", "engine", "version"],
            registry=r,
        )


def _error(
    status: int, message: str, kind: str, code: str, retry_after: int | None = None
) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    body = {"error": {"message": message, "type": kind, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers or None)


@dataclass
class Caller:
    """One request's caller: its key, its address, the model name it asked for, and whether the
    key's limits counted it in (then it is counted out once, when it is recorded)."""

    key: ApiKey
    client: str = ""
    requested: str = ""
    admitted: bool = False
    prompt: dict[str, Any] | None = None
    """The body as the client sent it, kept only when prompts are logged."""
    answer: str | list[str] | None = None


def _client(request: Request) -> str:
    return request.client.host if request.client is not None else ""


def _usage(data: object) -> tuple[int, int]:
    usage = data.get("usage") if isinstance(data, Mapping) else None
    if not isinstance(usage, Mapping):
        return 0, 0
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return (
        prompt if isinstance(prompt, int) else 0,
        completion if isinstance(completion, int) else 0,
    )


def _answer_text(data: object) -> str | list[str] | None:
    """The text of an OpenAI answer's choices (``message.content`` or ``text``): a string for one
    choice, a list by index for several, ``None`` without choices (embeddings, errors)."""
    choices = data.get("choices") if isinstance(data, Mapping) else None
    if not isinstance(choices, list) or not choices:
        return None
    texts: list[str] = []
    for choice in choices:
        if not isinstance(choice, Mapping):
            continue
        message = choice.get("message")
        text = message.get("content") if isinstance(message, Mapping) else choice.get("text")
        texts.append(text if isinstance(text, str) else "")
    return texts[0] if len(texts) == 1 else texts


class _SseTokens:
    """Counts tokens in a relayed server-sent-event stream: the final ``usage`` when the engine
    sends one, else one completion token per chunk that carries text. With ``capture``, it also
    keeps a copy of the text of each choice (the prompt log's answer)."""

    def __init__(self, capture: bool = False) -> None:
        self._buffer = b""
        self.chunks = 0
        self.prompt = 0
        self.completion: int | None = None
        self._parts: dict[int, list[str]] | None = {} if capture else None

    def feed(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                continue
            try:
                event = json.loads(payload)
            except ValueError:
                continue
            prompt, completion = _usage(event)
            if prompt or completion:
                self.prompt, self.completion = prompt, completion
            for choice in event.get("choices") or [] if isinstance(event, dict) else []:
                delta = choice.get("delta") or {}
                text = choice.get("text") or (delta.get("content") if isinstance(delta, dict)
                                              else None)  # fmt: skip
                if text:
                    self.chunks += 1
                    if self._parts is not None and isinstance(text, str):
                        index = choice.get("index", 0)
                        self._parts.setdefault(index if isinstance(index, int) else 0,
                                               []).append(text)  # fmt: skip

    @property
    def text(self) -> str | list[str] | None:
        """The copied answer (as :func:`_answer_text` gives it); ``None`` without capture."""
        if self._parts is None:
            return None
        texts = ["".join(self._parts[i]) for i in sorted(self._parts)] or [""]
        return texts[0] if len(texts) == 1 else texts

    @property
    def completion_tokens(self) -> int:
        return self.completion if self.completion is not None else self.chunks


class FrontDoor:
    """The routing, authentication and accounting behind :func:`create_app`."""

    def __init__(
        self,
        config: FrontDoorConfig,
        keys: Sequence[ApiKey],
        transport: httpx.AsyncBaseTransport | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.keys = list(keys)
        self.metrics = Metrics()
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._turn: dict[str, int] = {}  # pool → requests it was first for (round robin)
        self._canary_turn: dict[str, itertools.count[int]] = {}
        self._log = log or (lambda line: print(line, file=sys.stdout, flush=True))
        self.digests: Mapping[str, str] = {}
        state = config.state_dir
        self.limiter = Limiter(state / "quota.json" if state is not None else None)
        self.request_log = RequestLog(state) if state is not None else None
        self._prune_day = -1  # the UTC day (days since the epoch) prompt files were last pruned
        self._publish(config)
        self._prune_prompts()

    def _publish_keys(self) -> None:
        self.metrics.key_expiry.clear()
        for key in self.keys:
            if key.expires is not None and key.not_after is None:
                self.metrics.key_expiry.labels(key.name).set(key.expires)

    def _publish(self, config: FrontDoorConfig) -> None:
        self._publish_keys()
        for name in config.models:
            self._turn.setdefault(name, 0)
        self.metrics.models.clear()
        self.metrics.canary.clear()
        for route in config.models.values():
            self.metrics.models.labels(route.name, route.engine, route.version).set(1)
            if route.canary_backends:
                self.metrics.canary.labels(route.name, route.canary_version, route.version).set(
                    route.canary_share
                )

    def reload(self, loaded: Loaded) -> None:
        """Switch to ``loaded`` (one assignment each: a request reads its route once, so it
        never mixes the old and the new)."""
        self.keys = list(loaded.keys)
        self.config = loaded.config
        self.digests = dict(loaded.digests)
        self._publish(loaded.config)
        self._prune_prompts()
        self.metrics.reloads.labels("ok").inc()
        self._log(json.dumps({"event": "reload", **self.digests}, sort_keys=True))

    def reload_from(self, load: Callable[[], Loaded]) -> None:
        try:
            loaded = load()
        except ConfigError as e:
            self.metrics.reloads.labels("refused").inc()
            print(f"hearth-frontdoor: reload refused, the routing in force stays: {e}",
                  file=sys.stderr, flush=True)  # fmt: skip
            return
        self.reload(loaded)

    # ----------------------------------------------------------------------------- plumbing
    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            timeout = httpx.Timeout(
                self.config.read_timeout, connect=self.config.connect_timeout, pool=30.0
            )
            limits = httpx.Limits(max_connections=512, max_keepalive_connections=64)
            self._client = httpx.AsyncClient(
                timeout=timeout, limits=limits, transport=self._transport, trust_env=False
            )
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        self.limiter.save()
        if self.request_log is not None:
            self.request_log.close()

    def _prune_prompts(self) -> None:
        """Delete the prompt files older than the retention (once a UTC day, and at start and
        reload); said on stderr, never a reason to stop answering."""
        if self.request_log is None:
            return
        self._prune_day = int(time.time() // 86400)
        try:
            removed = self.request_log.prune_prompts(self.config.prompt_retention_days)
        except OSError as e:
            print(f"hearth-frontdoor: prompt retention: {e}", file=sys.stderr, flush=True)
            return
        if removed:
            days = self.config.prompt_retention_days
            self._log(json.dumps({"event": "prompts_deleted", "files": removed,
                                  "retention_days": days}))  # fmt: skip

    def _rotated(self, pool: str, backends: Sequence[str], advance: bool = True) -> list[str]:
        """``backends`` starting with the pool's next one in turn; ``advance``: this request
        starts with this pool, so the pool's turn moves on (a pool only tried after another
        keeps its turn: two pools advanced together on every request would stay in step, and
        with a 50% canary each would always start with the same backend)."""
        if not backends:
            return []
        turn = self._turn.get(pool, 0)
        if advance:
            self._turn[pool] = turn + 1
        start = turn % len(backends)
        return list(backends[start:]) + list(backends[:start])

    def _backends(self, route: ModelRoute) -> list[str]:
        """The backends to try, in order: the request's pool, starting with the pool's next
        backend in turn (round robin within each pool), then the other pool. With a canary,
        ``canary_share`` of every hundred requests (spread evenly: request n goes to the canary
        when ``n * share mod 100 < share``) start with the canary's engines, the others with the
        backends in force; a pool that refuses the connection hands the request to the other
        one."""
        if not route.canary_backends or route.canary_share <= 0:
            return self._rotated(route.name, route.backends)
        turn = next(self._canary_turn.setdefault(route.name, itertools.count()))
        to_canary = (turn * route.canary_share) % 100 < route.canary_share
        stable = self._rotated(route.name, route.backends, advance=not to_canary)
        canary = self._rotated(f"{route.name} canary", route.canary_backends, advance=to_canary)
        first, then = (canary, stable) if to_canary else (stable, canary)
        return first + [b for b in then if b not in first]

    def _record(
        self,
        route: ModelRoute | None,
        endpoint: str,
        status: int,
        key: ApiKey | Caller | None,
        started: float,
        tokens: tuple[int, int] = (0, 0),
        unknown: bool = False,
        client: str = "",
        backend: str = "",
    ) -> None:
        caller = key if isinstance(key, Caller) else None
        if caller is not None:
            key, client = caller.key, caller.client or client
            if caller.admitted:
                caller.admitted = False
                self.limiter.finish(caller.key.name, caller.key.policy, sum(tokens))
        model = route.name if route is not None else (UNKNOWN if unknown else "")
        seconds = time.monotonic() - started
        name = key.name if isinstance(key, ApiKey) else ""
        version = route.version_of(backend) if route is not None and backend else ""
        self.metrics.requests.labels(model, endpoint, str(status), name, version).inc()
        if route is not None:
            self.metrics.latency.labels(model, endpoint, version).observe(seconds)
            for kind, count in zip(("prompt", "completion"), tokens, strict=True):
                if count:
                    self.metrics.tokens.labels(model, kind, version).inc(count)
                    if name:
                        self.metrics.key_tokens.labels(name, model, kind).inc(count)
        if self.request_log is not None:
            if int(time.time() // 86400) != self._prune_day:
                self._prune_prompts()
            entry: dict[str, Any] = {
                "key": name,
                "model": model,
                "version": version or (route.version if route is not None else ""),
                "endpoint": endpoint,
                "status": status,
                "prompt_tokens": tokens[0],
                "completion_tokens": tokens[1],
                "seconds": round(seconds, 4),
                "client": client,
            }
            if caller is not None and caller.requested and caller.requested != model:
                entry["alias"] = caller.requested
            prompt: dict[str, Any] | None = None
            if caller is not None and caller.prompt is not None and self.config.log_prompts:
                prompt = {"key": name, "model": model, "endpoint": endpoint,
                          "request": caller.prompt, "answer": caller.answer}  # fmt: skip
            try:
                self.request_log.write(entry, prompt)
            except OSError as e:  # a full disk must not stop the answers; it is said loudly
                print(f"hearth-frontdoor: request log: {e}", file=sys.stderr, flush=True)
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "model": model,
            "endpoint": endpoint,
            "status": status,
            "seconds": round(seconds, 4),
            "key": name,
            "prompt_tokens": tokens[0],
            "completion_tokens": tokens[1],
        }
        self._log(json.dumps(line, sort_keys=True))

    def authenticate(self, request: Request) -> ApiKey | Response:
        """The request's key, or the 401 to answer (missing, invalid, expired, rotated out)."""
        header = request.headers.get("authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            self.metrics.auth_failures.labels("missing").inc()
            return _error(
                401,
                "an API key is required: send the header 'Authorization: Bearer <key>'",
                "invalid_request_error",
                "missing_api_key",
            )
        key = verify_key(presented.strip(), self.keys)
        if key is None:
            self.metrics.auth_failures.labels("invalid").inc()
            return _error(401, "invalid API key", "invalid_request_error", "invalid_api_key")
        now = time.time()
        if key.not_after is not None and now >= key.not_after:
            self.metrics.auth_failures.labels("rotated").inc()
            return _error(
                401,
                f"this API key of {key.name!r} was replaced and its overlap has ended: use the "
                "new key",
                "invalid_request_error",
                "key_rotated",
            )
        if key.expires is not None and now >= key.expires:
            self.metrics.auth_failures.labels("expired").inc()
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(key.expires))
            return _error(
                401,
                f"the API key {key.name!r} expired at {when}",
                "invalid_request_error",
                "expired",
            )
        return key

    def _refuse(self, caller: Caller, refusal: Refusal) -> JSONResponse:
        self.metrics.key_refusals.labels(caller.key.name, refusal.code).inc()
        kind = "rate_limit_error" if refusal.status == 429 else "permission_error"
        return _error(refusal.status, refusal.message, kind, refusal.code, refusal.retry_after)

    def _check_policy(self, caller: Caller, route: ModelRoute) -> Refusal | None:
        """The key may call this model (or alias), and its limits have room: counted in."""
        key = caller.key
        if not allowed(key.models, caller.requested, route.name):
            names = ", ".join(key.models or ()) or "none"
            return Refusal(
                403,
                f"the key {key.name!r} may not use the model {caller.requested!r} (allowed: "
                f"{names})",
                "model_not_allowed",
            )
        if not key.limited:
            return None
        refusal = self.limiter.admit(key.name, key.policy)
        caller.admitted = refusal is None
        return refusal

    async def _body(self, request: Request) -> bytes | Response:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.config.max_body_bytes:
            return _error(413, "request body too large", "invalid_request_error", "too_large")
        body = await request.body()
        if len(body) > self.config.max_body_bytes:
            return _error(413, "request body too large", "invalid_request_error", "too_large")
        return body

    def _unknown_model(self, model: object) -> JSONResponse:
        served = ", ".join(sorted(self.config.models)) or "none"
        shown = model if isinstance(model, str) and len(model) <= 128 else "?"
        return _error(
            404,
            f"the model {shown!r} is not served here (served: {served})",
            "invalid_request_error",
            "model_not_found",
        )

    # ------------------------------------------------------------------------------- routes
    async def health(self, request: Request) -> Response:
        body: dict[str, Any] = {"status": "ok", "models": len(self.config.models)}
        if self.digests:
            body["loaded"] = dict(self.digests)
        if self.request_log is not None:
            body["request_log"] = {"seq": self.request_log.seq, "head": self.request_log.head}
        return JSONResponse(body)

    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def engine_metrics(self, request: Request) -> Response:
        config = self.config
        if not config.scrape_token_sha256:
            return PlainTextResponse("no scrape token configured\n", status_code=404)
        header = request.headers.get("authorization", "")
        presented = header[7:].strip() if header[:7].lower() == "bearer " else ""
        digest = hash_key(presented).encode("ascii")
        if not presented or not hmac.compare_digest(
            digest, config.scrape_token_sha256.encode("ascii")
        ):
            return PlainTextResponse("scrape token required\n", status_code=401)
        url = config.engine_metrics.get(str(request.path_params["model"]))
        if url is None:
            return PlainTextResponse("no engine of that model on this host\n", status_code=404)
        try:
            answer = await self.client.get(url)
        except httpx.HTTPError as exc:
            return PlainTextResponse(f"engine not answering: {type(exc).__name__}\n", 503)
        if answer.status_code != 200:
            return PlainTextResponse(f"engine answered {answer.status_code}\n", 503)
        kind = answer.headers.get("content-type", CONTENT_TYPE_LATEST)
        return Response(answer.content, media_type=kind)

    async def list_models(self, request: Request) -> Response:
        key = self.authenticate(request)
        started = time.monotonic()
        if isinstance(key, Response):
            self._record(None, "/v1/models", 401, None, started)
            return key
        names = [*self.config.models, *self.config.aliases]
        data = [self._model_entry(name) for name in names]
        self._record(None, "/v1/models", 200, key, started, client=_client(request))
        return JSONResponse({"object": "list", "data": data})

    def _model_entry(self, name: str) -> dict[str, Any]:
        route = self.config.resolve(name)
        assert route is not None
        hearth: dict[str, Any] = {"engine": route.engine, "version": route.version}
        if route.api == "openai":
            hearth["embeddings"] = route.embeddings
        if name in self.config.aliases:
            hearth["alias_of"] = route.name
        return {"id": name, "object": "model", "created": 0, "owned_by": "hearth", "hearth": hearth}

    async def get_model(self, request: Request) -> Response:
        started = time.monotonic()
        endpoint = "/v1/models/{id}"
        key = self.authenticate(request)
        if isinstance(key, Response):
            self._record(None, endpoint, 401, None, started, client=_client(request))
            return key
        name = request.path_params["id"]
        if self.config.resolve(name) is None:
            self._record(None, endpoint, 404, key, started, unknown=True, client=_client(request))
            return self._unknown_model(name)
        self._record(None, endpoint, 200, key, started, client=_client(request))
        return JSONResponse(self._model_entry(name))

    async def openai(self, request: Request) -> Response:
        endpoint = request.url.path
        started = time.monotonic()
        key = self.authenticate(request)
        if isinstance(key, Response):
            self._record(None, endpoint, 401, None, started, client=_client(request))
            return key
        caller = Caller(key, _client(request))
        body = await self._body(request)
        if isinstance(body, Response):
            self._record(None, endpoint, body.status_code, caller, started)
            return body
        too_large = input_too_large(len(body), key.max_input_bytes, key.name)
        if too_large is not None:
            self._record(None, endpoint, 413, caller, started)
            return self._guard_refusal(caller, too_large)
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            self._record(None, endpoint, 400, caller, started)
            return _error(400, "the body must be a JSON object", "invalid_request_error", "bad")
        if self.config.log_prompts and self.request_log is not None:
            caller.prompt = dict(payload)  # as the client sent it (an alias is renamed below)
        if not isinstance(payload.get("model"), str) or not payload["model"]:
            self._record(None, endpoint, 400, caller, started)
            return _error(
                400,
                "the body must name a model ('model': one of GET /v1/models)",
                "invalid_request_error",
                "model_required",
            )
        caller.requested = payload["model"]
        route = self.config.resolve(caller.requested)
        if route is None:
            self._record(None, endpoint, 404, caller, started, unknown=True)
            return self._unknown_model(payload.get("model"))
        if endpoint == "/v1/embeddings" and route.api == "openai" and not route.embeddings:
            self._record(route, endpoint, 400, caller, started)
            serving = [n for n, r in self.config.models.items() if r.embeddings]
            return _error(
                400,
                f"the model {route.name!r} does not serve embeddings (models that do: "
                f"{', '.join(serving) or 'none'})",
                "invalid_request_error",
                "embeddings_not_served",
            )
        if route.system_prompt is not None and endpoint != "/v1/embeddings":
            pinned = self._pin(route, endpoint, payload)
            if isinstance(pinned, Refused):
                self._record(route, endpoint, pinned.status, caller, started)
                return self._guard_refusal(caller, pinned)
            payload = pinned
        refusal = self._check_policy(caller, route)
        if refusal is not None:
            self._record(route, endpoint, refusal.status, caller, started)
            return self._refuse(caller, refusal)
        if caller.requested != route.name:  # an alias: the engine knows the model's own name
            payload["model"] = route.name
        if caller.requested != route.name or route.system_prompt is not None:
            body = json.dumps(payload).encode("utf-8")
        if route.api == "kserve":
            return await self._kserve_text(route, endpoint, payload, caller, started)
        if payload.get("stream") is True:
            return await self._stream(route, endpoint, body, caller, started)
        return await self._forward(route, "POST", endpoint, body, caller, started, endpoint)

    def _pin(
        self, route: ModelRoute, endpoint: str, payload: Mapping[str, Any]
    ) -> dict[str, Any] | Refused:
        """The chat request with the model's pinned system prompt first (a raw completion
        would bypass it: refused)."""
        assert route.system_prompt is not None
        if endpoint != "/v1/chat/completions":
            return Refused(
                400,
                f"the model {route.name!r} pins its own system prompt: use /v1/chat/completions "
                "(a raw prompt would bypass it)",
                "system_prompt_pinned",
            )
        return pin_system_prompt(payload, route.name, route.system_prompt,
                                 route.system_prompt_policy)  # fmt: skip

    def _guard_refusal(self, caller: Caller, refused: Refused) -> JSONResponse:
        self.metrics.key_refusals.labels(caller.key.name, refused.code).inc()
        return _error(refused.status, refused.message, "invalid_request_error", refused.code)

    async def kserve(self, request: Request) -> Response:
        name = request.path_params["name"]
        action = request.path_params.get("action", "")
        endpoint = "/v2/models/{name}" + (f"/{action}" if action else "")
        started = time.monotonic()
        key = self.authenticate(request)
        if isinstance(key, Response):
            self._record(None, endpoint, 401, None, started, client=_client(request))
            return key
        caller = Caller(key, _client(request), name)
        route = self.config.resolve(name)
        if route is None or route.api != "kserve" or action not in ("", "ready", "infer"):
            self._record(None, endpoint, 404, caller, started, unknown=True)
            return self._unknown_model(name)
        body = b""
        if request.method == "POST":
            read = await self._body(request)
            if isinstance(read, Response):
                self._record(route, endpoint, read.status_code, caller, started)
                return read
            body = read
            too_large = input_too_large(len(body), key.max_input_bytes, key.name)
            if too_large is not None:
                self._record(route, endpoint, 413, caller, started)
                return self._guard_refusal(caller, too_large)
        refusal = self._check_policy(caller, route)
        if refusal is not None:
            self._record(route, endpoint, refusal.status, caller, started)
            return self._refuse(caller, refusal)
        path = f"/v2/models/{route.name}" + (f"/{action}" if action else "")
        return await self._forward(route, request.method, path, body, caller, started, endpoint)

    # ---------------------------------------------------------------------------- forwarding
    async def _send(
        self,
        route: ModelRoute,
        method: str,
        path: str,
        body: bytes,
        stream: bool,
        order: Sequence[str] | None = None,
    ) -> tuple[httpx.Response, str] | None:
        """The first backend that accepts the connection answers, with its base URL; ``None``
        when none does. A kept-alive connection the engine closed (it restarted) is retried
        once on a new one: the engine saw no request on it. The backend counts the request as
        in flight from the send until the answer is read (a stream: until :meth:`_done`)."""
        headers = {"content-type": "application/json"} if body else {}
        for backend in self._backends(route) if order is None else order:
            url = backend + path
            busy = self.metrics.backend_in_flight.labels(route.name, backend)
            busy.inc()
            answered = False
            try:
                for attempt in (1, 2):
                    request = self.client.build_request(method, url, content=body, headers=headers)
                    try:
                        response = await self.client.send(request, stream=stream)
                    except httpx.RemoteProtocolError:
                        if attempt == 2:
                            raise
                        continue
                    except (httpx.ConnectError, httpx.ConnectTimeout):
                        self.metrics.backend_errors.labels(route.name, backend).inc()
                        break
                    answered = True
                    return response, backend
            finally:
                if not (answered and stream):
                    busy.dec()
        return None

    def _done(self, route: ModelRoute, backend: str) -> None:
        """A streamed answer was relayed to its end (or broke): its backend is free of it."""
        self.metrics.backend_in_flight.labels(route.name, backend).dec()

    def _unavailable(self, route: ModelRoute) -> JSONResponse:
        return _error(
            503,
            f"no engine of model {route.name!r} accepted the connection; try again shortly",
            "server_error",
            "engine_unavailable",
        )

    async def _forward(
        self,
        route: ModelRoute,
        method: str,
        path: str,
        body: bytes,
        key: ApiKey | Caller,
        started: float,
        endpoint: str,
    ) -> Response:
        self.metrics.in_flight.labels(route.name).inc()
        order = self._backends(route)
        meant = order[0] if order else ""
        try:
            try:
                sent = await self._send(route, method, path, body, False, order)
            except httpx.HTTPError as e:
                self._record(route, endpoint, 502, key, started, backend=meant)
                return _error(502, f"engine error: {type(e).__name__}", "server_error", "engine")
            if sent is None:
                self._record(route, endpoint, 503, key, started, backend=meant)
                return self._unavailable(route)
            answer, backend = sent
            self.metrics.first_byte.labels(route.name, endpoint, route.version_of(backend)).observe(
                time.monotonic() - started
            )
            tokens = (0, 0)
            if "json" in answer.headers.get("content-type", ""):
                with contextlib.suppress(ValueError):
                    data = answer.json()
                    tokens = _usage(data)
                    if isinstance(key, Caller) and key.prompt is not None:
                        key.answer = _answer_text(data)
            self._record(route, endpoint, answer.status_code, key, started, tokens, backend=backend)
            return Response(
                answer.content,
                status_code=answer.status_code,
                media_type=answer.headers.get("content-type", "application/json"),
            )
        finally:
            self.metrics.in_flight.labels(route.name).dec()

    async def _stream(
        self, route: ModelRoute, endpoint: str, body: bytes, key: ApiKey | Caller, started: float
    ) -> Response:
        self.metrics.in_flight.labels(route.name).inc()
        order = self._backends(route)
        meant = order[0] if order else ""
        try:
            sent = await self._send(route, "POST", endpoint, body, True, order)
        except httpx.HTTPError as e:
            self.metrics.in_flight.labels(route.name).dec()
            self._record(route, endpoint, 502, key, started, backend=meant)
            return _error(502, f"engine error: {type(e).__name__}", "server_error", "engine")
        if sent is None:
            self.metrics.in_flight.labels(route.name).dec()
            self._record(route, endpoint, 503, key, started, backend=meant)
            return self._unavailable(route)
        caller = key if isinstance(key, Caller) and key.prompt is not None else None
        counter = _SseTokens(capture=caller is not None)
        response, backend = sent

        async def relay() -> AsyncIterator[bytes]:
            first = True
            status = response.status_code
            try:
                async for chunk in response.aiter_bytes():
                    if first:
                        first = False
                        self.metrics.first_byte.labels(
                            route.name, endpoint, route.version_of(backend)
                        ).observe(time.monotonic() - started)
                    counter.feed(chunk)
                    yield chunk
            except httpx.HTTPError:
                status = 502
            finally:
                await response.aclose()
                self._done(route, backend)
                self.metrics.in_flight.labels(route.name).dec()
                tokens = (counter.prompt, counter.completion_tokens)
                if caller is not None:
                    caller.answer = counter.text
                self._record(route, endpoint, status, key, started, tokens, backend=backend)

        return StreamingResponse(
            relay(),
            status_code=response.status_code,
            media_type=response.headers.get("content-type", "text/event-stream"),
            headers={"cache-control": "no-cache"},
        )

    async def _kserve_text(
        self,
        route: ModelRoute,
        endpoint: str,
        payload: Mapping[str, Any],
        key: ApiKey | Caller,
        started: float,
    ) -> Response:
        """An OpenAI request for a Triton text model: the prompt in, the output text back."""
        if not (route.text_input and route.text_output) or endpoint == "/v1/embeddings":
            self._record(route, endpoint, 400, key, started)
            return _error(
                400,
                f"model {route.name!r} is served by Triton (KServe v2): use "
                f"/v2/models/{route.name}/infer",
                "invalid_request_error",
                "wrong_api",
            )
        if payload.get("stream") is True:
            self._record(route, endpoint, 400, key, started)
            return _error(
                400, "streaming is not available for Triton models", "invalid_request_error", "bad"
            )
        prompt = _prompt(payload)
        request = {
            "inputs": [
                {"name": route.text_input, "datatype": "BYTES", "shape": [1], "data": [prompt]}
            ],
            "outputs": [{"name": route.text_output}],
        }
        path = f"/v2/models/{route.name}/infer"
        self.metrics.in_flight.labels(route.name).inc()
        order = self._backends(route)
        meant = order[0] if order else ""
        try:
            try:
                sent = await self._send(
                    route, "POST", path, json.dumps(request).encode(), False, order
                )
            except httpx.HTTPError as e:
                self._record(route, endpoint, 502, key, started, backend=meant)
                return _error(502, f"engine error: {type(e).__name__}", "server_error", "engine")
            if sent is None:
                self._record(route, endpoint, 503, key, started, backend=meant)
                return self._unavailable(route)
            answer, meant = sent
            if answer.status_code != 200:
                self._record(route, endpoint, answer.status_code, key, started, backend=meant)
                return Response(answer.content, status_code=answer.status_code)
            text = _output_text(answer.json(), route.text_output)
        finally:
            self.metrics.in_flight.labels(route.name).dec()
        tokens = (len(prompt.split()), len(text.split()))
        if isinstance(key, Caller) and key.prompt is not None:
            key.answer = text
        self._record(route, endpoint, 200, key, started, tokens, backend=meant)
        created = int(time.time())
        ident = f"hearth-{uuid.uuid4().hex}"
        usage = {
            "prompt_tokens": tokens[0],
            "completion_tokens": tokens[1],
            "total_tokens": sum(tokens),
        }
        if endpoint == "/v1/completions":
            choice: dict[str, Any] = {"index": 0, "text": text, "finish_reason": "stop"}
            obj = "text_completion"
        else:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
            obj = "chat.completion"
        return JSONResponse(
            {
                "id": ident,
                "object": obj,
                "created": created,
                "model": route.name,
                "choices": [choice],
                "usage": usage,
            }
        )


def _prompt(payload: Mapping[str, Any]) -> str:
    messages = payload.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, Mapping) and message.get("role") == "user":
                content = message.get("content")
                if isinstance(content, list):  # content parts: the text ones
                    return " ".join(
                        str(p.get("text", "")) for p in content if isinstance(p, Mapping)
                    )
                return str(content or "")
        return ""
    prompt = payload.get("prompt")
    return prompt if isinstance(prompt, str) else ""


def _output_text(data: object, name: str) -> str:
    outputs = data.get("outputs") if isinstance(data, Mapping) else None
    for output in outputs or []:
        if isinstance(output, Mapping) and output.get("name") == name:
            values = output.get("data") or []
            return " ".join(str(v) for v in values)
    return ""


def create_app(
    config: FrontDoorConfig,
    keys: Sequence[ApiKey],
    transport: httpx.AsyncBaseTransport | None = None,
    log: Callable[[str], None] | None = None,
    load: Callable[[], Loaded] | None = None,
    digests: Mapping[str, str] | None = None,
) -> Starlette:
    """The front door as an ASGI application (``transport`` replaces the engines in tests).
    With ``load``, ``SIGHUP`` reloads through it (see the module's docstring)."""
    door = FrontDoor(config, keys, transport, log)
    door.digests = dict(digests or {})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if load is not None:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, door.reload_from, load)
        yield
        if load is not None:
            loop.remove_signal_handler(signal.SIGHUP)
        await door.close()

    def post(handler: Callable[[Request], Awaitable[Response]], path: str) -> Route:
        return Route(path, handler, methods=["POST"])

    routes = [
        Route("/health", door.health, methods=["GET"]),
        Route("/metrics", door.metrics_endpoint, methods=["GET"]),
        Route("/engine-metrics/{model}", door.engine_metrics, methods=["GET"]),
        Route("/v1/models", door.list_models, methods=["GET"]),
        Route("/v1/models/{id:path}", door.get_model, methods=["GET"]),
        *(post(door.openai, path) for path in OPENAI_ENDPOINTS),
        Route("/v2/models/{name}", door.kserve, methods=["GET"]),
        Route("/v2/models/{name}/{action:str}", door.kserve, methods=["GET", "POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.front_door = door
    return app
