"""Alert settings: Hearth's defaults for the alerts' thresholds and durations, the inventory's
overrides (``prometheus_alert_settings``) checked, and Prometheus durations."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from hearth.errors import InvalidInputError

__all__ = [
    "ALERT_DEFAULTS",
    "DURATION",
    "MonitoringError",
    "duration_seconds",
    "settings_with_defaults",
]


class MonitoringError(InvalidInputError):
    """A monitoring setting that cannot work (a bad duration, a receiver missing its URL)."""


# ----------------------------------------------------------------------------- alert settings

ALERT_DEFAULTS: dict[str, Any] = {
    # how long a condition must hold before the alert fires
    "engine_down_for": "2m",
    "frontdoor_down_for": "2m",
    "host_down_for": "2m",
    "target_down_for": "5m",
    "ttft_for": "10m",
    "kv_cache_for": "10m",
    "queue_for": "10m",
    "gpu_temperature_for": "5m",
    "vram_for": "15m",
    "disk_for": "15m",
    "canary_for": "0s",
    # thresholds
    "canary_failures": 3,
    "canary_latency_factor": 2.0,
    "canary_stale_after": "26h",
    "canary_share_window": "1h",
    "canary_share_min_requests": 20,
    "ttft_p95_seconds": 2.0,
    "kv_cache_usage_ratio": 0.95,
    "queue_waiting": 8,
    "gpu_temperature_celsius": 85,
    "vram_used_ratio": 0.98,
    "disk_free_ratio": 0.10,
    "disk_fill_hours": 24,
}
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
_DURATION_KEYS = {k for k in ALERT_DEFAULTS if k.endswith("_for")} | {
    "canary_stale_after",
    "canary_share_window",
}


def settings_with_defaults(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """``ALERT_DEFAULTS`` with the inventory's overrides; unknown keys and bad values raise."""
    problems: list[str] = []
    merged = dict(ALERT_DEFAULTS)
    for key, value in (overrides or {}).items():
        if key not in ALERT_DEFAULTS:
            problems.append(f"prometheus_alert_settings.{key}: unknown setting")
            continue
        default = ALERT_DEFAULTS[key]
        if key in _DURATION_KEYS:
            if not isinstance(value, str) or not DURATION.match(value):
                problems.append(
                    f"prometheus_alert_settings.{key}: expected a Prometheus duration "
                    f"(30s, 5m, 2h), got {value!r}"
                )
                continue
        elif isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(
                f"prometheus_alert_settings.{key}: expected a number like {default!r}, "
                f"got {value!r}"
            )
            continue
        merged[key] = value
    if problems:
        raise MonitoringError("; ".join(problems))
    return merged


def duration_seconds(duration: str) -> int:
    """Seconds of a Prometheus duration (``1h30m`` → 5400)."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    total = 0.0
    for number, unit in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", duration):
        total += int(number) * units[unit]
    return int(total)
