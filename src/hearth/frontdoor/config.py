"""The front door's configuration and API keys: plain data, no web framework.

Ansible writes two JSON files on each front door host (``roles/front_door``):

``config.json``
    where to listen and, per served model, its engine, version, API (``openai`` for llama.cpp and
    vLLM, ``kserve`` for Triton) and backends (engine base URLs, tried in turn)::

        {"listen": {"host": "0.0.0.0", "port": 8090},
         "keys_file": "/etc/hearth/frontdoor/keys.json",
         "timeouts": {"connect": 5, "read": 600},
         "max_body_bytes": 8388608,
         "models": {"smollm2": {"engine": "llamacpp", "version": "v1", "api": "openai",
                                "backends": ["http://127.0.0.1:8080"]},
                    "upper": {"engine": "triton", "version": "1", "api": "kserve",
                              "backends": ["http://127.0.0.1:8000"],
                              "text": {"input": "TEXT", "output": "UPPER"}}}}

``keys.json``
    the sha256 of every API key with a name for it (``{"keys": [{"name": "lab", "sha256": …}]}``),
    mode 0600. The keys themselves live only in ansible-vault: a hash of a random key cannot be
    turned back into the key, so neither this file nor the front door's memory holds one.

:func:`verify_key` compares the sha256 of the presented key with every stored hash in constant
time (``hmac.compare_digest``, no early exit), so timing says nothing about which key was close.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ApiKey",
    "ConfigError",
    "FrontDoorConfig",
    "ModelRoute",
    "hash_key",
    "load_config",
    "load_keys",
    "parse_config",
    "parse_keys",
    "verify_key",
]

APIS = ("openai", "kserve")
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


@dataclass(frozen=True)
class ApiKey:
    name: str
    sha256: str


@dataclass(frozen=True)
class FrontDoorConfig:
    host: str = "0.0.0.0"  # noqa: S104 - the front door is the endpoint clients reach
    port: int = 8090
    keys_file: Path = Path("/etc/hearth/frontdoor/keys.json")
    connect_timeout: float = 5.0
    read_timeout: float = 600.0
    max_body_bytes: int = 8 * 1024 * 1024
    models: Mapping[str, ModelRoute] = field(default_factory=dict)


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
    return ModelRoute(
        name=name,
        engine=str(raw.get("engine", "")),
        version=str(raw.get("version", "")),
        api=str(api),
        backends=tuple(backends),
        text_input=str(text["input"]) if text.get("input") else None,
        text_output=str(text["output"]) if text.get("output") else None,
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
    return FrontDoorConfig(
        host=str(listen.get("host", "0.0.0.0")),  # noqa: S104
        port=port,
        keys_file=Path(str(raw.get("keys_file", "/etc/hearth/frontdoor/keys.json"))),
        connect_timeout=_number(timeouts, "connect", 5.0, "timeouts"),
        read_timeout=_number(timeouts, "read", 600.0, "timeouts"),
        max_body_bytes=body,
        models={str(name): _route(str(name), route) for name, route in models.items()},
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
        keys.append(ApiKey(name=str(entry.get("name") or f"key{i}"), sha256=digest))
    return keys


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
