"""Per-key policies of the front door: which models a key may use, how fast and how much.

A key entry of ``keys.json`` may carry, beside ``name`` and ``sha256``:

``models``
    the models (or aliases) the key may call; any other is a 403 naming the allowed ones.
``rpm`` / ``tpm``
    requests and tokens (prompt + completion) per minute, in a sliding window of 60 seconds;
    beyond either, 429 with ``Retry-After`` (the seconds until the window has room again).
``max_concurrent``
    requests of the key answered at once; one more is a 429 (``Retry-After: 1``).
``tokens_per_day``
    tokens per UTC day; once spent, 429 until midnight UTC (``Retry-After`` says how long).
``max_input_bytes``
    the largest request body the key may send, in bytes as received (the JSON body, before the
    front door adds a model's pinned system prompt); beyond, 413 naming the limit.
``expires``
    a date (``2026-12-31``: refused from that day's 00:00 UTC) or an ISO time with its zone;
    from then on 401 "expired". The front door exports it as
    ``hearth_frontdoor_key_expiry_timestamp_seconds`` so an alert fires 7 days before.
``not_after``
    set only on the hash of a rotated key's previous value (``hearth keys rotate --overlap``):
    the end of the overlap, after which that hash is refused (and the next ``hearth up`` drops it).

What survives a restart (documented in docs/frontdoor.md): the per-minute windows and the
concurrency counts live in memory and start empty after a restart (at worst a key gets one more
minute's worth); a reload (SIGHUP) keeps them. The daily token counts are kept in
``quota.json`` in the state directory, written (atomically, by rename) at most once a second
after a request of a key that has a ``tokens_per_day`` and at a clean stop, read at start: the
day's counts hold across restarts, and a crash (not a stop) may forget the last second's.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "POLICY_FIELDS",
    "Limiter",
    "Refusal",
    "keys_file_entries",
    "parse_expiry",
    "policy_problems",
]

WINDOW = 60.0
SAVE_EVERY = 1.0
"""Seconds between two writes of the daily counts (and one at shutdown)."""
POLICY_FIELDS = (
    "models", "rpm", "tpm", "max_concurrent", "tokens_per_day", "max_input_bytes", "expires",
)  # fmt: skip
COUNTS = ("rpm", "tpm", "max_concurrent", "tokens_per_day", "max_input_bytes")


def parse_expiry(value: object) -> float | None:
    """The epoch seconds of an ``expires``: a date (its 00:00 UTC) or an ISO 8601 time with a
    zone (a time without one is read as UTC); ``None`` for none. ``ValueError`` otherwise."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, dt.date):
        moment = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        text = value.strip()
        try:
            if len(text) == 10:
                day = dt.date.fromisoformat(text)
                moment = dt.datetime(day.year, day.month, day.day)
            else:
                moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as e:
            raise ValueError(f"expected a date (YYYY-MM-DD) or an ISO time, got {value!r}") from e
    else:
        raise ValueError(f"expected a date (YYYY-MM-DD) or an ISO time, got {value!r}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def policy_problems(entry: Mapping[str, object]) -> list[str]:
    """What is wrong with one key entry's policy fields (the words of a finding, without the key's
    name): counts positive integers, ``models`` a list of names, ``expires`` a date."""
    problems: list[str] = []
    for name in COUNTS:
        value = entry.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            problems.append(f"{name}: expected a positive integer, got {value!r}")
    models = entry.get("models")
    if models is not None and (
        not isinstance(models, list) or not all(isinstance(m, str) and m for m in models)
    ):
        problems.append("models: expected a list of model names")
    for name in ("expires", "not_after"):
        try:
            parse_expiry(entry.get(name))
        except ValueError as e:
            problems.append(f"{name}: {e}")
    return problems


def _iso(value: object) -> object:
    return value.isoformat() if isinstance(value, dt.date) else value


def keys_file_entries(keys: object, now: float | None = None) -> list[dict[str, object]]:
    """The entries of ``keys.json`` for the declared keys (``front_door_api_keys``: ``{name, key,
    models?, rpm?, …, previous?: [{key, until}]}``): name, sha256 and policy, never the key.
    A rotated key's ``previous`` values become entries of the same name with ``not_after``
    while their overlap lasts; once it has ended (at ``now``) they are left out."""
    import hashlib

    moment = time.time() if now is None else now
    out: list[dict[str, object]] = []
    for entry in keys if isinstance(keys, list) else []:
        if not isinstance(entry, Mapping):
            continue
        name = str(entry.get("name") or "")
        rules = {f: _iso(entry[f]) for f in POLICY_FIELDS if entry.get(f) is not None}
        key = str(entry.get("key") or "")
        out.append({"name": name, "sha256": hashlib.sha256(key.encode()).hexdigest(), **rules})
        for old in entry.get("previous") or []:
            if not isinstance(old, Mapping) or not old.get("key"):
                continue
            until = _iso(old.get("until"))
            try:
                ends = parse_expiry(until)
            except ValueError:
                ends = None  # the rule front_door_key_policies says what is wrong
            if ends is not None and ends <= moment:
                continue
            digest = hashlib.sha256(str(old["key"]).encode()).hexdigest()
            out.append({"name": name, "sha256": digest, **rules, "not_after": until})
    return out


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused before it reaches an engine: an HTTP status, a message, an
    OpenAI error code and, for a 429, the seconds to wait."""

    status: int
    message: str
    code: str
    retry_after: int | None = None


def _seconds_to_midnight(now: float) -> float:
    day = dt.datetime.fromtimestamp(now, dt.UTC).date()
    midnight = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC) + dt.timedelta(days=1)
    return midnight.timestamp() - now


def _day(now: float) -> str:
    return dt.datetime.fromtimestamp(now, dt.UTC).date().isoformat()


class Limiter:
    """The counters behind the per-key limits, by key name (a rotated key's old and new value
    share its name, so its limits). ``clock`` is wall time (the daily window follows UTC)."""

    def __init__(
        self, state_file: Path | None = None, clock: Callable[[], float] | None = None
    ) -> None:
        self._clock = clock or time.time
        self._requests: dict[str, deque[float]] = {}
        self._tokens: dict[str, deque[tuple[float, int]]] = {}
        self._active: dict[str, int] = {}
        self.state_file = state_file
        self._day = _day(self.now())
        self.daily: dict[str, int] = {}
        self._saved = 0.0
        self._dirty = False
        self._load()

    def now(self) -> float:
        return float(self._clock())

    # ------------------------------------------------------------------ daily quota state
    def _load(self) -> None:
        if self.state_file is None:
            return
        try:
            raw = json.loads(self.state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return  # absent or unreadable: the day starts from 0 (said in the docs)
        if isinstance(raw, Mapping) and raw.get("day") == self._day:
            used = raw.get("tokens")
            if isinstance(used, Mapping):
                self.daily = {str(k): int(v) for k, v in used.items() if isinstance(v, int)}

    def _save(self) -> None:
        self._saved, self._dirty = self.now(), False
        if self.state_file is None:
            return
        body = json.dumps({"day": self._day, "tokens": self.daily}, sort_keys=True)
        temporary = self.state_file.with_name(self.state_file.name + ".tmp")
        with contextlib.suppress(OSError):
            temporary.write_text(body + "\n", encoding="utf-8")
            temporary.replace(self.state_file)

    def _roll_day(self, now: float) -> None:
        today = _day(now)
        if today != self._day:
            self._day, self.daily = today, {}

    # ---------------------------------------------------------------------------- checks
    def admit(self, name: str, policy: Mapping[str, object]) -> Refusal | None:
        """Count one request of key ``name`` in, or say why not. Every admitted request must
        be ended with :meth:`finish`."""
        now = self.now()
        self._roll_day(now)
        rpm, tpm = policy.get("rpm"), policy.get("tpm")
        limit = policy.get("max_concurrent")
        quota = policy.get("tokens_per_day")
        if isinstance(limit, int) and self._active.get(name, 0) >= limit:
            return Refusal(
                429, f"key {name!r}: {limit} requests at once at most", "concurrency_exceeded", 1
            )
        if isinstance(quota, int) and self.daily.get(name, 0) >= quota:
            wait = math.ceil(_seconds_to_midnight(now))
            return Refusal(
                429,
                f"key {name!r}: the daily quota of {quota} tokens is spent (resets at 00:00 UTC)",
                "daily_quota_exceeded",
                wait,
            )
        requests = self._requests.setdefault(name, deque())
        while requests and requests[0] <= now - WINDOW:
            requests.popleft()
        if isinstance(rpm, int) and len(requests) >= rpm:
            wait = max(1, math.ceil(requests[len(requests) - rpm] + WINDOW - now))
            return Refusal(
                429, f"key {name!r}: {rpm} requests per minute at most", "rate_limit_exceeded", wait
            )
        if isinstance(tpm, int):
            spent = self._tokens.setdefault(name, deque())
            while spent and spent[0][0] <= now - WINDOW:
                spent.popleft()
            total = sum(n for _, n in spent)
            if total >= tpm:
                # the wait until enough of the window has passed to bring it under the limit
                freed, wait_until = total, now + WINDOW
                for at, n in spent:
                    freed -= n
                    if freed < tpm:
                        wait_until = at + WINDOW
                        break
                wait = max(1, math.ceil(wait_until - now))
                return Refusal(
                    429, f"key {name!r}: {tpm} tokens per minute at most", "token_rate_exceeded",
                    wait,
                )  # fmt: skip
        requests.append(now)
        self._active[name] = self._active.get(name, 0) + 1
        return None

    def finish(self, name: str, policy: Mapping[str, object], tokens: int) -> None:
        """The request admitted for ``name`` is answered, having used ``tokens``."""
        self._active[name] = max(0, self._active.get(name, 0) - 1)
        if tokens <= 0:
            return
        now = self.now()
        if isinstance(policy.get("tpm"), int):
            self._tokens.setdefault(name, deque()).append((now, tokens))
        self._roll_day(now)
        self.daily[name] = self.daily.get(name, 0) + tokens
        if isinstance(policy.get("tokens_per_day"), int):
            self._dirty = True
            if now - self._saved >= SAVE_EVERY:
                self._save()

    def active(self, name: str) -> int:
        return self._active.get(name, 0)

    def save(self) -> None:
        """Write the day's counts now if they changed (at shutdown)."""
        if self._dirty:
            self._save()


def allowed(models: Sequence[str] | None, requested: str, target: str) -> bool:
    """Whether a key limited to ``models`` may call ``requested`` (an alias of ``target``, or
    ``target`` itself)."""
    return models is None or requested in models or target in models
