"""The front door's configuration and API keys: plain data, no web framework.

Ansible writes two JSON files on each front door host (``roles/front_door``):

``config.json``
    where to listen and, per served model, its engine, version, API (``openai`` for llama.cpp and
    vLLM, ``kserve`` for Triton) and backends (engine base URLs, tried in turn)::

        {"listen": {"host": "0.0.0.0", "port": 8090},
         "keys_file": "/etc/hearth/frontdoor/keys.json",
         "timeouts": {"connect": 5, "read": 600},
         "max_body_bytes": 8388608,
         "state_dir": "/var/lib/hearth/frontdoor",
         "tls": {"cert": "/etc/hearth/frontdoor/tls.crt", "key": "/etc/hearth/frontdoor/tls.key"},
         "prompts": {"log": false, "retention_days": 7},
         "aliases": {"chat": "smollm2"},
         "engine_metrics": {"token_sha256": "<64 hex>",
                            "targets": {"smollm2": "http://127.0.0.1:8080/metrics"}},
         "models": {"smollm2": {"engine": "llamacpp", "version": "v1", "api": "openai",
                                "backends": ["http://127.0.0.1:8080"], "embeddings": false,
                                "system_prompt": "You are …", "system_prompt_policy": "refuse"},
                    "upper": {"engine": "triton", "version": "1", "api": "kserve",
                              "backends": ["http://127.0.0.1:8000"],
                              "text": {"input": "TEXT", "output": "UPPER"}}}}

``routing.json`` (optional)
    the routing of the moment, written by a rollout or a drain and read on every reload: per
    model, the backends that serve it now instead of the ones ``config.json`` lists (an empty
    list: the model is drained everywhere and answers 503)::

        {"models": {"smollm2": {"backends": ["http://10.0.0.12:8085"],
                                "reason": "rollout smollm2 v2 on lab1"}}}

    During a canary (``canary_share`` on a model), the new version's engines form a second pool
    that gets ``share`` percent of the model's requests; the ``backends`` serve ``version`` (the
    version before) and ``versions`` names a backend's own where it differs (a promotion in
    progress); the per-version metrics are labelled with them::

        {"models": {"smollm2": {"backends": ["http://10.0.0.12:8080"], "version": "v1",
                                "canary": {"backends": ["http://10.0.0.12:8085"], "share": 10,
                                           "version": "v2", "soak_end": "2026-11-28T13:00:00Z"},
                                "reason": "canary of smollm2 v2 on lab1"}}}

    Ansible creates it empty and never overwrites it; ``SIGHUP`` makes the running front door
    read all three files again without dropping a request (:func:`load_all`).

``keys.json``
    the sha256 of every API key with a name for it (``{"keys": [{"name": "lab", "sha256": …}]}``),
    mode 0600, each with its optional policy (``models``, ``rpm``, ``tpm``, ``max_concurrent``,
    ``tokens_per_day``, ``max_input_bytes``, ``expires``; see :mod:`hearth.frontdoor.policy`).
    The keys themselves live only in ansible-vault: a hash of a random key cannot be
    turned back into the key, so neither this file nor the front door's memory holds one.

:func:`verify_key` compares the sha256 of the presented key with every stored hash in constant
time (``hmac.compare_digest``, no early exit), so timing says nothing about which key was close.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hearth.frontdoor.policy import parse_expiry, policy_problems

__all__ = [
    "ApiKey",
    "ConfigError",
    "FrontDoorConfig",
    "Loaded",
    "ModelRoute",
    "apply_routing",
    "hash_key",
    "load_all",
    "load_config",
    "load_keys",
    "load_routing",
    "parse_config",
    "parse_keys",
    "parse_routing",
    "parse_routing_entries",
    "verify_key",
]

APIS = ("openai", "kserve")
DEFAULT_PROMPT_RETENTION_DAYS = 7
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class ConfigError(ValueError):
    """The front door's configuration or keys file is unusable; the message says where."""


@dataclass(frozen=True)
class ModelRoute:
    name: str
    engine: str
    version: str
    api: str
    backends: tuple[str, ...]
    text_input: str | None = None
    text_output: str | None = None
    embeddings: bool = False
    system_prompt: str | None = None
    """Pinned: prepended to every chat request (:mod:`hearth.frontdoor.guard`)."""
    system_prompt_policy: str = "refuse"
    canary_backends: tuple[str, ...] = ()
    """A canary (routing.json): the new version's engines, which get ``canary_share`` percent
    of the model's requests while ``backends`` (the version before) get the rest."""
    canary_share: int = 0
    canary_version: str = ""
    versions: Mapping[str, str] = field(default_factory=dict)
    """The version each backend serves where it is not the route's (a rollout in progress)."""

    def version_of(self, backend: str) -> str:
        """The version the engine at ``backend`` serves (the per-version metrics' label)."""
        if backend in self.versions:
            return self.versions[backend]
        if backend in self.canary_backends:
            return self.canary_version
        return self.version


@dataclass(frozen=True)
class ApiKey:
    name: str
    sha256: str
    models: tuple[str, ...] | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    tokens_per_day: int | None = None
    max_input_bytes: int | None = None
    """The largest request body the key may send (413 beyond)."""
    expires: float | None = None
    """Epoch seconds from which the key is refused (401 "expired")."""
    not_after: float | None = None
    """A rotated key's previous value: epoch seconds at which its overlap ends."""

    @property
    def policy(self) -> dict[str, object]:
        return {
            "rpm": self.rpm,
            "tpm": self.tpm,
            "max_concurrent": self.max_concurrent,
            "tokens_per_day": self.tokens_per_day,
        }

    @property
    def limited(self) -> bool:
        return any(v is not None for v in self.policy.values())


@dataclass(frozen=True)
class FrontDoorConfig:
    host: str = "0.0.0.0"  # noqa: S104 - the front door is the endpoint clients reach
    port: int = 8090
    keys_file: Path = Path("/etc/hearth/frontdoor/keys.json")
    connect_timeout: float = 5.0
    read_timeout: float = 600.0
    max_body_bytes: int = 8 * 1024 * 1024
    models: Mapping[str, ModelRoute] = field(default_factory=dict)
    routing_file: Path | None = None
    aliases: Mapping[str, str] = field(default_factory=dict)
    """Other names clients may call a model by (``chat`` -> ``smollm2``)."""
    state_dir: Path | None = None
    """Writable: the request log (hash-chained) and the daily quotas (``quota.json``)."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    """With both: HTTPS only (PEM files; the certificate of ``hearth tls init`` or the site's)."""
    log_prompts: bool = False
    """Opt-in: each request's body and answer go to ``prompts-YYYY-MM-DD.jsonl`` in the state
    directory, bound to the chained request line by its sha256 (:mod:`hearth.frontdoor.reqlog`)."""
    prompt_retention_days: int = DEFAULT_PROMPT_RETENTION_DAYS
    """Prompt files of days older than this are deleted (at start, reload and each new UTC day),
    whether or not prompts are logged now."""
    engine_metrics: Mapping[str, str] = field(default_factory=dict)
    """Model -> the metrics URL of its engine on this host (on loopback): relayed at
    ``/engine-metrics/<model>`` to a scraper presenting the scrape token."""
    scrape_token_sha256: str = ""
    """The sha256 of the scrape token (``hearth_scrape_token``, in ansible-vault); none: the
    engines' metrics are not relayed."""

    def resolve(self, name: str) -> ModelRoute | None:
        """The route of a model name or alias."""
        return self.models.get(self.aliases.get(name, name))


@dataclass(frozen=True)
class Loaded:
    """What one (re)load read: the configuration with the routing applied, the keys, and the
    sha256 of each file as read (``/health`` shows them, so a playbook can wait for a reload)."""

    config: FrontDoorConfig
    keys: list[ApiKey]
    digests: Mapping[str, str]


def hash_key(key: str) -> str:
    """The sha256 (hex) of an API key, as Ansible's ``hash('sha256')`` writes it."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def verify_key(presented: str | None, keys: Sequence[ApiKey]) -> ApiKey | None:
    """The stored key whose hash matches ``presented``, else ``None``. Every stored hash is
    compared, in constant time each, whatever matched before."""
    if not presented:
        return None
    digest = hash_key(presented).encode("ascii")
    found: ApiKey | None = None
    for key in keys:
        if hmac.compare_digest(digest, key.sha256.encode("ascii")) and found is None:
            found = key
    return found


def _number(raw: Mapping[str, Any], key: str, default: float, where: str) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{where}: {key}: expected a positive number, got {value!r}")
    return float(value)


def _route(name: str, raw: object) -> ModelRoute:
    where = f"models.{name}"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping (engine, version, api, backends)")
    if not _NAME.match(name):
        raise ConfigError(f"{where}: not a model name (lower-case letters, digits, . _ -)")
    api = raw.get("api")
    if api not in APIS:
        raise ConfigError(f"{where}: api: expected one of {', '.join(APIS)}, got {api!r}")
    backends = raw.get("backends")
    if (
        not isinstance(backends, list)
        or not backends
        or not all(isinstance(b, str) and re.match(r"^https?://[^/]+$", b) for b in backends)
    ):
        raise ConfigError(f"{where}: backends: expected a list of base URLs (http://host:port)")
    text = raw.get("text") or {}
    if not isinstance(text, Mapping):
        raise ConfigError(f"{where}: text: expected a mapping {{input, output}}")
    pinned = raw.get("system_prompt")
    if pinned is not None and (not isinstance(pinned, str) or not pinned.strip()):
        raise ConfigError(f"{where}: system_prompt: expected a non-empty string")
    policy = raw.get("system_prompt_policy", "refuse")
    if policy not in ("refuse", "demote"):
        raise ConfigError(
            f"{where}: system_prompt_policy: expected refuse or demote, got {policy!r}"
        )
    return ModelRoute(
        name=name,
        engine=str(raw.get("engine", "")),
        version=str(raw.get("version", "")),
        api=str(api),
        backends=tuple(backends),
        text_input=str(text["input"]) if text.get("input") else None,
        text_output=str(text["output"]) if text.get("output") else None,
        embeddings=raw.get("embeddings") is True,
        system_prompt=pinned,
        system_prompt_policy=str(policy),
    )


def parse_config(raw: object) -> FrontDoorConfig:
    if not isinstance(raw, Mapping):
        raise ConfigError("config: expected a mapping (listen, keys_file, models, …)")
    listen = raw.get("listen") or {}
    if not isinstance(listen, Mapping):
        raise ConfigError("listen: expected a mapping {host, port}")
    port = listen.get("port", 8090)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f"listen.port: expected 1-65535, got {port!r}")
    timeouts = raw.get("timeouts") or {}
    if not isinstance(timeouts, Mapping):
        raise ConfigError("timeouts: expected a mapping {connect, read}")
    models = raw.get("models") or {}
    if not isinstance(models, Mapping):
        raise ConfigError("models: expected a mapping of model names to routes")
    body = raw.get("max_body_bytes", 8 * 1024 * 1024)
    if isinstance(body, bool) or not isinstance(body, int) or body <= 0:
        raise ConfigError(f"max_body_bytes: expected a positive integer, got {body!r}")
    routing = raw.get("routing_file")
    routes = {str(name): _route(str(name), route) for name, route in models.items()}
    aliases = raw.get("aliases") or {}
    if not isinstance(aliases, Mapping):
        raise ConfigError("aliases: expected a mapping of alias names to model names")
    for alias, target in aliases.items():
        if alias in routes:
            raise ConfigError(f"aliases.{alias}: the name of a served model (an alias shadows it)")
        if target not in routes:
            raise ConfigError(f"aliases.{alias}: {target!r} is not a served model")
    state = raw.get("state_dir")
    tls = raw.get("tls") or {}
    if not isinstance(tls, Mapping) or bool(tls.get("cert")) != bool(tls.get("key")):
        raise ConfigError("tls: expected {cert: PEM file, key: PEM file} (both, or no tls)")
    prompts = raw.get("prompts") or {}
    if not isinstance(prompts, Mapping) or not isinstance(prompts.get("log", False), bool):
        raise ConfigError("prompts: expected {log: true|false, retention_days: N}")
    retention = prompts.get("retention_days", DEFAULT_PROMPT_RETENTION_DAYS)
    if isinstance(retention, bool) or not isinstance(retention, int) or retention <= 0:
        raise ConfigError(
            f"prompts.retention_days: expected a positive number of days, got {retention!r}"
        )
    if prompts.get("log") is True and state is None:
        raise ConfigError("prompts.log: needs a state_dir to write the prompt files to")
    relay = raw.get("engine_metrics") or {}
    targets = relay.get("targets") or {} if isinstance(relay, Mapping) else None
    token = str(relay.get("token_sha256") or "").lower() if isinstance(relay, Mapping) else ""
    if not isinstance(targets, Mapping) or (token and not _SHA256.match(token)):
        raise ConfigError(
            "engine_metrics: expected {token_sha256: 64 hex digits, targets: {model: URL}}"
        )
    for name, url in targets.items():
        if not str(url).startswith(("http://", "https://")):
            raise ConfigError(f"engine_metrics.targets.{name}: expected an http(s) URL")
    return FrontDoorConfig(
        engine_metrics={str(k): str(v) for k, v in targets.items()},
        scrape_token_sha256=token,
        log_prompts=prompts.get("log") is True,
        prompt_retention_days=retention,
        tls_cert=Path(str(tls["cert"])) if tls.get("cert") else None,
        tls_key=Path(str(tls["key"])) if tls.get("key") else None,
        aliases={str(k): str(v) for k, v in aliases.items()},
        state_dir=Path(str(state)) if state else None,
        routing_file=Path(str(routing)) if routing else None,
        host=str(listen.get("host", "0.0.0.0")),  # noqa: S104
        port=port,
        keys_file=Path(str(raw.get("keys_file", "/etc/hearth/frontdoor/keys.json"))),
        connect_timeout=_number(timeouts, "connect", 5.0, "timeouts"),
        read_timeout=_number(timeouts, "read", 600.0, "timeouts"),
        max_body_bytes=body,
        models=routes,
    )


def parse_keys(raw: object) -> list[ApiKey]:
    entries = raw.get("keys") if isinstance(raw, Mapping) else None
    if not isinstance(entries, list):
        raise ConfigError("keys: expected {keys: [{name, sha256}, …]}")
    keys: list[ApiKey] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise ConfigError(f"keys[{i}]: expected a mapping {{name, sha256}}")
        digest = str(entry.get("sha256", "")).lower()
        if not _SHA256.match(digest):
            raise ConfigError(f"keys[{i}]: sha256: expected 64 hex digits")
        name = str(entry.get("name") or f"key{i}")
        problems = policy_problems(entry)
        if problems:
            raise ConfigError(f"keys[{i}] ({name}): " + "; ".join(problems))
        models = entry.get("models")
        keys.append(
            ApiKey(
                name=name,
                sha256=digest,
                models=tuple(str(m) for m in models) if isinstance(models, list) else None,
                rpm=_count(entry, "rpm"),
                tpm=_count(entry, "tpm"),
                max_concurrent=_count(entry, "max_concurrent"),
                tokens_per_day=_count(entry, "tokens_per_day"),
                max_input_bytes=_count(entry, "max_input_bytes"),
                expires=parse_expiry(entry.get("expires")),
                not_after=parse_expiry(entry.get("not_after")),
            )
        )
    return keys


def _count(entry: Mapping[str, Any], name: str) -> int | None:
    value = entry.get(name)
    return value if isinstance(value, int) else None


def _read_json(path: Path, what: str) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the {what}: {e.strerror}") from e
    except ValueError as e:
        raise ConfigError(f"{path}: the {what} is not JSON: {e}") from e


def load_config(path: Path) -> FrontDoorConfig:
    raw = _read_json(path, "configuration")
    try:
        return parse_config(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e


def load_keys(path: Path) -> list[ApiKey]:
    raw = _read_json(path, "keys file")
    try:
        return parse_keys(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e


def _urls(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(b, str) and re.match(r"^https?://[^/]+$", b) for b in value
    )


def parse_routing_entries(
    raw: object, models: Mapping[str, ModelRoute]
) -> dict[str, dict[str, Any]]:
    """Each overridden model's routing (``routing.json``): its ``backends`` and, optionally,
    the version they serve (``version``), per-backend ``versions``, and a ``canary`` (``backends``,
    ``share`` 0-100, ``version``). A model that is not served or a value of the wrong shape is
    refused (the old routing stays)."""
    entries = raw.get("models") if isinstance(raw, Mapping) else None
    if not isinstance(entries, Mapping):
        raise ConfigError("routing: expected {models: {NAME: {backends: [URL, …]}}}")
    found: dict[str, dict[str, Any]] = {}
    for name, entry in entries.items():
        where = f"routing.models.{name}"
        if name not in models:
            raise ConfigError(f"{where}: the front door serves no model {name!r}")
        backends = entry.get("backends") if isinstance(entry, Mapping) else None
        if not _urls(backends):
            raise ConfigError(f"{where}: backends: expected a list of base URLs (http://host:port)")
        assert isinstance(entry, Mapping) and isinstance(backends, list)
        parsed: dict[str, Any] = {"backends": tuple(backends)}
        if entry.get("version") is not None:
            parsed["version"] = str(entry["version"])
        versions = entry.get("versions") or {}
        if not isinstance(versions, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in versions.items()
        ):
            raise ConfigError(f"{where}: versions: expected a mapping of base URLs to versions")
        parsed["versions"] = dict(versions)
        canary = entry.get("canary")
        if canary is not None:
            share = canary.get("share") if isinstance(canary, Mapping) else None
            if not isinstance(canary, Mapping) or not _urls(canary.get("backends")):
                raise ConfigError(f"{where}: canary: expected {{backends: [URL, …], share, …}}")
            if isinstance(share, bool) or not isinstance(share, int) or not 0 <= share <= 100:
                raise ConfigError(f"{where}: canary.share: expected 0-100, got {share!r}")
            parsed["canary"] = {
                "backends": tuple(canary["backends"]),
                "share": share,
                "version": str(canary.get("version") or ""),
            }
        found[str(name)] = parsed
    return found


def parse_routing(raw: object, models: Mapping[str, ModelRoute]) -> dict[str, tuple[str, ...]]:
    """The backends of each overridden model (``routing.json``, see
    :func:`parse_routing_entries`)."""
    return {k: v["backends"] for k, v in parse_routing_entries(raw, models).items()}


def _routed(route: ModelRoute, entry: tuple[str, ...] | Mapping[str, Any]) -> ModelRoute:
    if not isinstance(entry, Mapping):
        return dataclasses.replace(route, backends=tuple(entry))
    canary = entry.get("canary") or {}
    return dataclasses.replace(
        route,
        backends=tuple(entry["backends"]),
        version=str(entry.get("version") or route.version),
        versions=dict(entry.get("versions") or {}),
        canary_backends=tuple(canary.get("backends") or ()),
        canary_share=int(canary.get("share") or 0),
        canary_version=str(canary.get("version") or ""),
    )


def apply_routing(
    config: FrontDoorConfig,
    routing: Mapping[str, tuple[str, ...]] | Mapping[str, Mapping[str, Any]],
) -> FrontDoorConfig:
    """``config`` with each overridden model's backends replaced (and its canary and versions,
    given :func:`parse_routing_entries`)."""
    models = {
        name: _routed(route, routing[name]) if name in routing else route
        for name, route in config.models.items()
    }
    return dataclasses.replace(config, models=models)


def _read(path: Path, what: str, missing_ok: bool = False) -> tuple[object, str]:
    """The parsed JSON of ``path`` (``None`` when it is absent and ``missing_ok``, or empty) and
    the sha256 of the bytes parsed."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        if not missing_ok:
            raise ConfigError(f"{path}: cannot read the {what}: {e.strerror}") from e
        data = b""
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the {what}: {e.strerror}") from e
    digest = hashlib.sha256(data).hexdigest()
    if missing_ok and not data.strip():
        return None, digest
    try:
        return json.loads(data), digest
    except ValueError as e:
        raise ConfigError(f"{path}: the {what} is not JSON: {e}") from e


def load_routing(path: Path, models: Mapping[str, ModelRoute]) -> dict[str, tuple[str, ...]]:
    """The overrides in ``path`` (none when it is absent or empty)."""
    raw, _ = _read(path, "routing file", missing_ok=True)
    if raw is None:
        return {}
    try:
        return parse_routing(raw, models)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e


def load_all(config_path: Path) -> Loaded:
    """Read ``config.json``, its keys file and its routing file; every problem names its file.
    The digests are of the bytes parsed, so what ``/health`` shows is what is in force."""
    raw, config_digest = _read(config_path, "configuration")
    try:
        config = parse_config(raw)
    except ConfigError as e:
        raise ConfigError(f"{config_path}: {e}") from e
    raw, keys_digest = _read(config.keys_file, "keys file")
    try:
        keys = parse_keys(raw)
    except ConfigError as e:
        raise ConfigError(f"{config.keys_file}: {e}") from e
    routing_path = config.routing_file or config_path.with_name("routing.json")
    raw, routing_digest = _read(routing_path, "routing file", missing_ok=True)
    try:
        routing = parse_routing_entries(raw, config.models) if raw is not None else {}
    except ConfigError as e:
        raise ConfigError(f"{routing_path}: {e}") from e
    return Loaded(
        config=apply_routing(config, routing),
        keys=keys,
        digests={"config": config_digest, "keys": keys_digest, "routing": routing_digest},
    )
