"""Monitoring as data: scrape targets from the inventory, alert rules, Alertmanager's routing,
Grafana dashboards, and the PromQL helpers the tests use to check them.

Everything here is pure (no host, no network): the ``prometheus``, ``alertmanager``, ``grafana``
and ``canary`` roles call it through the Jinja filters of ``plugins/filter/hearth_monitoring.py``
and write the results with ``to_nice_yaml`` / ``to_nice_json`` (validated on the host by
``promtool`` / ``amtool``), and the unit tests call the same functions, so the rules that
``promtool test rules`` proves are the rules a site runs.

Metric names come from the engines themselves (``tests/fixtures/engines/*-metrics.txt``, recorded
from llama.cpp 0.7.0, vLLM 0.32.0 and Triton 2.51.0) and, for GPU-only series that cannot be
recorded without a GPU, from NVIDIA's documentation (``docs/monitoring.md`` cites each).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hearth.errors import InvalidInputError

__all__ = [
    "ALERT_DEFAULTS",
    "DASHBOARD_DATASOURCE_UID",
    "ENGINE_JOBS",
    "FETCH_COMMAND",
    "CanaryRun",
    "InventoryHost",
    "MonitoringError",
    "alert_rules",
    "alertmanager_config",
    "canary_targets",
    "dashboard_exprs",
    "dashboards",
    "duration_seconds",
    "engine_endpoints",
    "grafana_datasource",
    "metric_names",
    "model_store_mountpoints",
    "prometheus_config",
    "promql_for_check",
    "run_canaries",
    "scrape_configs",
    "settings_with_defaults",
    "write_dashboards",
]

# ------------------------------------------------------------------------------------ errors


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
    "ttft_p95_seconds": 2.0,
    "kv_cache_usage_ratio": 0.95,
    "queue_waiting": 8,
    "gpu_temperature_celsius": 85,
    "vram_used_ratio": 0.98,
    "disk_free_ratio": 0.10,
    "disk_fill_hours": 24,
}
_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
_DURATION_KEYS = {k for k in ALERT_DEFAULTS if k.endswith("_for")} | {"canary_stale_after"}

ENGINE_JOBS = {"vllm": "engine-vllm", "llamacpp": "engine-llamacpp", "triton": "engine-triton"}
ENGINE_METRICS_OFFSET = {"vllm": 0, "llamacpp": 0, "triton": 2}  # Triton: metrics on port + 2
ENGINE_DEFAULT_PORT = {"vllm": 8000, "llamacpp": 8080, "triton": 8000}
# Ports of several models of one engine on one host: the first gets the engine's port, the next
# ones step by this much (Triton uses three consecutive ports per server: http, grpc, metrics).
ENGINE_PORT_STEP = 10


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
            if not isinstance(value, str) or not _DURATION.match(value):
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


def model_store_mountpoints(paths: Iterable[str]) -> list[str]:
    """Every mount point that could hold one of ``paths``: the path and each of its parents."""
    found: set[str] = set()
    for path in paths:
        parts = [p for p in str(path).split("/") if p]
        found.add("/")
        for i in range(1, len(parts) + 1):
            found.add("/" + "/".join(parts[:i]))
    return sorted(found)


def _regex_alternatives(values: Iterable[str]) -> str:
    return "|".join(re.escape(v) for v in values)


def _alert(
    name: str,
    expr: str,
    severity: str,
    summary: str,
    description: str,
    for_: str | None = None,
) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": name, "expr": expr}
    if for_ and not re.fullmatch(r"0+(ms|s|m|h)?", for_):
        rule["for"] = for_
    rule["labels"] = {"severity": severity}
    rule["annotations"] = {"summary": summary, "description": description}
    return rule


def alert_rules(
    overrides: Mapping[str, Any] | None = None,
    model_store_paths: Sequence[str] = ("/var/lib/hearth/models",),
    model_hosts: Sequence[str] = (),
) -> dict[str, Any]:
    """Prometheus's rule file (``groups:``) for Hearth's alerts, as data.

    ``model_store_paths`` are the model store directories of the site (the disk alert watches
    the filesystems that can hold them) and ``model_hosts`` the hosts that serve models (the disk
    alert is limited to them; every host when none is given).
    """
    s = settings_with_defaults(overrides)
    mounts = _regex_alternatives(model_store_mountpoints(model_store_paths))
    hosts = _regex_alternatives(sorted(set(model_hosts))) or ".+"
    fs = f'mountpoint=~"{mounts}",fstype!~"tmpfs|ramfs",host=~"{hosts}"'
    engine = 'job=~"engine-.+"'
    # labels every engine target carries (see scrape_configs)
    on_model = "host, hearth_model, hearth_engine"

    engines = [
        _alert(
            "EngineDown",
            f"up{{{engine}}} == 0",
            "critical",
            "Inference engine down: {{ $labels.hearth_model }} on {{ $labels.host }}",
            "The {{ $labels.hearth_engine }} engine serving {{ $labels.hearth_model }} "
            "{{ $labels.hearth_version }} on {{ $labels.host }} has not answered its metrics "
            f"endpoint ({{{{ $labels.instance }}}}) for {s['engine_down_for']}.",
            s["engine_down_for"],
        ),
        _alert(
            "FrontDoorDown",
            'up{job="frontdoor"} == 0',
            "critical",
            "Front door down on {{ $labels.host }}",
            "The OpenAI-compatible front door on {{ $labels.host }} has not answered "
            f"({{{{ $labels.instance }}}}) for {s['frontdoor_down_for']}: users cannot reach "
            "any model through it.",
            s["frontdoor_down_for"],
        ),
        _alert(
            "TimeToFirstTokenSLO",
            "histogram_quantile(0.95, sum by (le, host, hearth_model, hearth_engine) "
            "(rate(vllm:time_to_first_token_seconds_bucket[5m]))) "
            f"> {s['ttft_p95_seconds']}",
            "warning",
            "Slow first token: {{ $labels.hearth_model }} on {{ $labels.host }}",
            "p95 time to first token of {{ $labels.hearth_model }} on {{ $labels.host }} is "
            "{{ $value | humanizeDuration }} over 5 minutes, above the SLO of "
            f"{s['ttft_p95_seconds']}s.",
            s["ttft_for"],
        ),
        _alert(
            "KVCacheSaturated",
            f"max by ({on_model}) (vllm:kv_cache_usage_perc) > {s['kv_cache_usage_ratio']}",
            "warning",
            "KV cache saturated: {{ $labels.hearth_model }} on {{ $labels.host }}",
            "The KV cache of {{ $labels.hearth_model }} on {{ $labels.host }} is "
            "{{ $value | humanizePercentage }} full: new requests wait or are preempted. "
            "Lower max_num_seqs or max_model_len, or give the model more GPU memory.",
            s["kv_cache_for"],
        ),
        _alert(
            "InferenceQueueGrowing",
            " or ".join(
                f"(sum by ({on_model}) ({m}) > {s['queue_waiting']} "
                f"and sum by ({on_model}) (deriv({m}[10m])) > 0)"
                for m in (
                    "vllm:num_requests_waiting",
                    "llamacpp:requests_deferred",
                    "nv_inference_pending_request_count",
                )
            ),
            "warning",
            "Request queue growing: {{ $labels.hearth_model }} on {{ $labels.host }}",
            "{{ $value }} requests are waiting for {{ $labels.hearth_model }} on "
            "{{ $labels.host }} and the queue keeps growing: the engine cannot keep up.",
            s["queue_for"],
        ),
    ]

    canary = "hearth_model, hearth_version"
    canaries = [
        _alert(
            "CanaryFailing",
            f"max by ({canary}) (hearth_canary_consecutive_failures) >= {s['canary_failures']}",
            "critical",
            "Golden-question canary failing: {{ $labels.hearth_model }}",
            "The canary of {{ $labels.hearth_model }} {{ $labels.hearth_version }} failed "
            "{{ $value }} runs in a row (answers missing, wrong format or leaking the system "
            "prompt). See the canary CSV and `hearth canary run`.",
            s["canary_for"],
        ),
        _alert(
            "CanaryLatencyRegression",
            f"max by ({canary}) (hearth_canary_latency_p95_seconds) > "
            f"{s['canary_latency_factor']} * max by ({canary}) "
            "(hearth_canary_latency_baseline_seconds > 0)",
            "warning",
            "Canary latency regression: {{ $labels.hearth_model }}",
            "p95 latency of the canary questions of {{ $labels.hearth_model }} "
            "{{ $labels.hearth_version }} is {{ $value | humanizeDuration }}, more than "
            f"{s['canary_latency_factor']} times its baseline.",
            s["canary_for"],
        ),
        _alert(
            "CanaryPromptLeak",
            f"max by ({canary}) (hearth_canary_prompt_leak) > 0",
            "critical",
            "System prompt leaked: {{ $labels.hearth_model }}",
            "A prompt-injection probe of the canary made {{ $labels.hearth_model }} "
            "{{ $labels.hearth_version }} reveal its system prompt.",
            s["canary_for"],
        ),
        _alert(
            "CanaryStale",
            f"time() - max by ({canary}) (hearth_canary_last_run_timestamp_seconds) > "
            f"{_seconds(s['canary_stale_after'])}",
            "warning",
            "Canary has not run: {{ $labels.hearth_model }}",
            "The canary of {{ $labels.hearth_model }} last ran {{ $value | humanizeDuration }} "
            "ago: check the hearth-canary.timer on the monitoring host.",
            "10m",
        ),
    ]

    gpu = "host, gpu, UUID"
    gpus = [
        _alert(
            "GpuTemperatureHigh",
            f"max by ({gpu}) (DCGM_FI_DEV_GPU_TEMP) > {s['gpu_temperature_celsius']}",
            "warning",
            "GPU {{ $labels.gpu }} of {{ $labels.host }} is hot",
            "GPU {{ $labels.gpu }} ({{ $labels.UUID }}) of {{ $labels.host }} is at "
            f"{{{{ $value }}}}°C, above {s['gpu_temperature_celsius']}°C: check cooling; "
            "the GPU will throttle.",
            s["gpu_temperature_for"],
        ),
        _alert(
            "GpuXidError",
            "max by (host, gpu, UUID) (DCGM_FI_DEV_XID_ERRORS) > 0 and on (host, gpu, UUID) "
            "(max by (host, gpu, UUID) (changes(DCGM_FI_DEV_XID_ERRORS[15m])) > 0 "
            "or max by (host, gpu, UUID) (DCGM_FI_DEV_XID_ERRORS) unless on (host, gpu, UUID) "
            "max by (host, gpu, UUID) (DCGM_FI_DEV_XID_ERRORS offset 15m))",
            "warning",
            "XID {{ $value }} on GPU {{ $labels.gpu }} of {{ $labels.host }}",
            "GPU {{ $labels.gpu }} ({{ $labels.UUID }}) of {{ $labels.host }} reported XID "
            "{{ $value }}. Look it up in NVIDIA's XID catalogue; 48, 63, 64, 74, 79, 94 and 95 "
            "mean the GPU needs attention.",
        ),
        _alert(
            "GpuFellOffTheBus",
            "max by (host, gpu, UUID) (DCGM_FI_DEV_XID_ERRORS) == 79 or on (host, gpu, UUID) "
            "((max by (host, gpu, UUID) (max_over_time(DCGM_FI_DEV_GPU_TEMP[1h] offset 5m)) "
            "unless on (host, gpu, UUID) max by (host, gpu, UUID) (DCGM_FI_DEV_GPU_TEMP)) "
            'and on (host) max by (host) (up{job="dcgm"}) == 1)',
            "critical",
            "GPU {{ $labels.gpu }} of {{ $labels.host }} fell off the bus",
            "GPU {{ $labels.gpu }} ({{ $labels.UUID }}) of {{ $labels.host }} is gone (XID 79 or "
            "no longer reported by DCGM while the exporter runs). The models on it are down; the "
            "host needs a reset or a reboot, then a hardware check.",
        ),
        _alert(
            "GpuEccDoubleBitErrors",
            f"sum by ({gpu}) (increase(DCGM_FI_DEV_ECC_DBE_VOL_TOTAL[15m])) > 0",
            "critical",
            "Uncorrectable ECC errors on GPU {{ $labels.gpu }} of {{ $labels.host }}",
            "GPU {{ $labels.gpu }} ({{ $labels.UUID }}) of {{ $labels.host }} had "
            "{{ $value }} double-bit (uncorrectable) ECC errors in 15 minutes: answers computed "
            "on it may be wrong. Drain it and reset it.",
        ),
        _alert(
            "GpuRowRemapFailure",
            f"max by ({gpu}) (DCGM_FI_DEV_ROW_REMAP_FAILURE) > 0",
            "critical",
            "Row remapping failed on GPU {{ $labels.gpu }} of {{ $labels.host }}",
            "GPU {{ $labels.gpu }} ({{ $labels.UUID }}) of {{ $labels.host }} could not remap a "
            "failing memory row: the GPU must be replaced (RMA).",
        ),
        _alert(
            "GpuUncorrectableRowsRemapped",
            f"sum by ({gpu}) (increase(DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS[1h])) > 0",
            "warning",
            "Memory rows remapped on GPU {{ $labels.gpu }} of {{ $labels.host }}",
            "GPU {{ $labels.gpu }} ({{ $labels.UUID }}) of {{ $labels.host }} remapped rows "
            "after uncorrectable errors: reset the GPU at the next maintenance window.",
        ),
        _alert(
            "GpuMemoryNearlyFull",
            f"max by ({gpu}) (DCGM_FI_DEV_FB_USED / (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE)) "
            f"> {s['vram_used_ratio']}",
            "warning",
            "VRAM nearly full on GPU {{ $labels.gpu }} of {{ $labels.host }}",
            "GPU {{ $labels.gpu }} of {{ $labels.host }} uses {{ $value | humanizePercentage }} "
            "of its memory: a new model or a longer context will fail to allocate. Check "
            "`hearth plan`.",
            s["vram_for"],
        ),
    ]

    avail = f"node_filesystem_avail_bytes{{{fs}}}"
    size = f"node_filesystem_size_bytes{{{fs}}}"
    hosts_rules = [
        _alert(
            "ModelStoreDiskAlmostFull",
            f"{avail} / {size} < {s['disk_free_ratio']}",
            "critical",
            "Model store disk almost full on {{ $labels.host }}",
            "{{ $labels.mountpoint }} on {{ $labels.host }} (it holds the model store) has "
            "{{ $value | humanizePercentage }} free: the next model version will not fit.",
            s["disk_for"],
        ),
        _alert(
            "ModelStoreDiskFilling",
            f"predict_linear({avail}[6h], {int(s['disk_fill_hours']) * 3600}) < 0 "
            f"and {avail} / {size} < 0.5",
            "warning",
            "Model store disk filling on {{ $labels.host }}",
            "At the rate of the last 6 hours, {{ $labels.mountpoint }} on {{ $labels.host }} "
            f"(it holds the model store) fills up within {s['disk_fill_hours']} hours.",
            s["disk_for"],
        ),
        _alert(
            "HostDown",
            'up{job="node"} == 0',
            "critical",
            "Host {{ $labels.host }} is down",
            "node_exporter on {{ $labels.host }} ({{ $labels.instance }}) has not answered for "
            f"{s['host_down_for']}: the host is down or unreachable.",
            s["host_down_for"],
        ),
        _alert(
            "ScrapeTargetDown",
            'up{job!~"node|frontdoor|engine-.+"} == 0',
            "warning",
            "{{ $labels.job }} on {{ $labels.host }} is not scraped",
            "Prometheus cannot scrape {{ $labels.job }} at {{ $labels.instance }} on "
            f"{{{{ $labels.host }}}} (for {s['target_down_for']}).",
            s["target_down_for"],
        ),
        _alert(
            "AlertmanagerNotificationsFailing",
            "sum by (host, integration) (rate(alertmanager_notifications_failed_total[10m])) > 0",
            "critical",
            "Alertmanager on {{ $labels.host }} cannot deliver {{ $labels.integration }} "
            "notifications",
            "Notifications to the {{ $labels.integration }} receiver fail: alerts may not reach "
            "anyone. Check the receiver's URL, credentials and the network path.",
            "10m",
        ),
    ]
    return {
        "groups": [
            {"name": "hearth-engines", "rules": engines},
            {"name": "hearth-canaries", "rules": canaries},
            {"name": "hearth-gpus", "rules": gpus},
            {"name": "hearth-hosts", "rules": hosts_rules},
        ]
    }


# How the audit's checks read an HTTP API on a host: the host's own python3, nothing to install.
FETCH_COMMAND = (
    "python3 -c 'import sys, urllib.request; "
    "print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' %s"
)


def duration_seconds(duration: str) -> int:
    """Seconds of a Prometheus duration (``1h30m`` → 5400)."""
    return _seconds(duration)


def _seconds(duration: str) -> int:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    total = 0.0
    for number, unit in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", duration):
        total += int(number) * units[unit]
    return int(total)


# ---------------------------------------------------------------------------- the inventory


@dataclass(frozen=True)
class InventoryHost:
    """What monitoring needs to know about one inventory host."""

    name: str
    address: str
    groups: tuple[str, ...] = ()
    models: tuple[Mapping[str, Any], ...] = ()
    node_exporter_port: int | None = None
    dcgm_exporter_port: int | None = None
    dcgm_serving: bool | None = None
    engine_ports: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineEndpoint:
    host: str
    address: str
    model: str
    version: str
    engine: str
    port: int  # the OpenAI-compatible (or Triton HTTP) port
    metrics_port: int

    @property
    def labels(self) -> dict[str, str]:
        return {
            "host": self.host,
            "hearth_model": self.model,
            "hearth_version": self.version,
            "hearth_engine": self.engine,
        }


def engine_endpoints(host: InventoryHost) -> list[EngineEndpoint]:
    """The engines a host serves, one per declared model, with their ports.

    A model's port is ``engine_ports[name]`` when the inventory sets one, else the engine's
    default port for the first model of that engine on the host and steps of
    ``ENGINE_PORT_STEP`` for the next ones. An engine role that places its engines otherwise
    sets ``prometheus_engine_ports`` on the host (docs/monitoring.md).
    """
    found: list[EngineEndpoint] = []
    seen: dict[str, int] = {}
    for model in host.models:
        engine = str(model.get("engine", ""))
        name = str(model.get("name", ""))
        if engine not in ENGINE_JOBS or not name:
            continue
        index = seen.get(engine, 0)
        seen[engine] = index + 1
        port = host.engine_ports.get(name) or ENGINE_DEFAULT_PORT[engine] + index * ENGINE_PORT_STEP
        found.append(
            EngineEndpoint(
                host=host.name,
                address=host.address,
                model=name,
                version=str(model.get("version", "")),
                engine=engine,
                port=int(port),
                metrics_port=int(port) + ENGINE_METRICS_OFFSET[engine],
            )
        )
    return found


def _target(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def scrape_configs(
    hosts: Sequence[InventoryHost],
    *,
    node_exporter_port: int = 9100,
    dcgm_exporter_port: int = 9400,
    gpu_group: str = "gpu_nodes",
    monitoring_group: str = "monitoring",
    prometheus_port: int = 9090,
    prometheus_listen_address: str = "0.0.0.0",  # noqa: S104 - the role default, only compared
    alertmanager_port: int = 9093,
    frontdoor_group: str = "frontdoor",
    frontdoor_port: int | None = None,
    frontdoor_metrics_path: str = "/metrics",
    extra: Sequence[Mapping[str, Any]] = (),
) -> list[dict[str, Any]]:
    """Prometheus's ``scrape_configs`` for the inventory: node_exporter on every host, the DCGM
    exporter on GPU hosts, each declared model's engine, the front door, Prometheus and
    Alertmanager themselves. Each target's ``instance`` is its address; ``host`` is the inventory
    name (alerts and dashboards use it)."""
    jobs: dict[str, list[dict[str, Any]]] = {}

    def add(job: str, address: str, port: int, labels: Mapping[str, str]) -> None:
        jobs.setdefault(job, []).append(
            {"targets": [_target(address, port)], "labels": dict(labels)}
        )

    for host in hosts:
        node_port = host.node_exporter_port or node_exporter_port
        add("node", host.address, node_port, {"host": host.name})
        if gpu_group in host.groups and host.dcgm_serving is not False:
            add(
                "dcgm",
                host.address,
                host.dcgm_exporter_port or dcgm_exporter_port,
                {"host": host.name},
            )
        for endpoint in engine_endpoints(host):
            add(
                ENGINE_JOBS[endpoint.engine],
                endpoint.address,
                endpoint.metrics_port,
                endpoint.labels,
            )
        if frontdoor_port and frontdoor_group in host.groups:
            add("frontdoor", host.address, frontdoor_port, {"host": host.name})
        if monitoring_group in host.groups:
            # Prometheus on loopback only (admin API for backups) scrapes itself there.
            loopback = prometheus_listen_address in ("127.0.0.1", "::1", "localhost")
            own = prometheus_listen_address if loopback else host.address
            add("prometheus", own, prometheus_port, {"host": host.name})
            add("alertmanager", host.address, alertmanager_port, {"host": host.name})
    configs: list[dict[str, Any]] = []
    order = ["prometheus", "alertmanager", "node", "dcgm", *ENGINE_JOBS.values(), "frontdoor"]
    for job in order:
        if job not in jobs:
            continue
        config: dict[str, Any] = {"job_name": job, "static_configs": jobs[job]}
        if job == "frontdoor":
            config["metrics_path"] = frontdoor_metrics_path
        configs.append(config)
    for item in extra:
        configs.append(copy.deepcopy(dict(item)))
    names = [c.get("job_name") for c in configs]
    duplicates = sorted({str(n) for n in names if names.count(n) > 1})
    if duplicates:
        raise MonitoringError(
            f"prometheus_extra_scrape_configs: job_name {', '.join(map(str, duplicates))} is "
            "already used by Hearth's own scrape jobs; choose another name"
        )
    return configs


def prometheus_config(
    hosts: Sequence[InventoryHost],
    *,
    scrape_interval: str,
    evaluation_interval: str,
    rule_files: Sequence[str],
    external_labels: Mapping[str, str] | None = None,
    alertmanagers: Sequence[str] | None = None,
    **scrape_options: Any,
) -> dict[str, Any]:
    """``prometheus.yml`` as data. Alertmanager runs beside Prometheus on the monitoring hosts
    unless ``alertmanagers`` lists other addresses (host:port)."""
    if alertmanagers is None:
        group = scrape_options.get("monitoring_group", "monitoring")
        port = int(scrape_options.get("alertmanager_port", 9093))
        alertmanagers = [_target(h.address, port) for h in hosts if group in h.groups]
    for key, value in (
        ("scrape_interval", scrape_interval),
        ("evaluation_interval", evaluation_interval),
    ):
        if not _DURATION.match(str(value)):
            raise MonitoringError(f"prometheus_{key}: expected a duration (15s, 1m), got {value!r}")
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": scrape_interval,
            "evaluation_interval": evaluation_interval,
        },
        "rule_files": list(rule_files),
        "scrape_configs": scrape_configs(hosts, **scrape_options),
    }
    if external_labels:
        config["global"]["external_labels"] = dict(external_labels)
    if alertmanagers:
        targets = [{"targets": list(alertmanagers)}]
        config["alerting"] = {"alertmanagers": [{"static_configs": targets}]}
    return config


# ------------------------------------------------------------------------------ alertmanager

RECEIVER_TYPES = ("slack", "webhook", "email")
SEVERITIES = ("critical", "warning", "info")
_RECEIVER_KEYS = {
    "slack": {"api_url", "channel"},
    "webhook": {"url", "max_alerts"},
    "email": {"to"},
}
_COMMON_RECEIVER_KEYS = {"name", "type", "severities", "send_resolved"}


def alertmanager_config(
    receivers: Sequence[Mapping[str, Any]],
    *,
    smtp: Mapping[str, Any] | None = None,
    group_by: Sequence[str] = ("alertname", "host", "hearth_model"),
    group_wait: str = "30s",
    group_interval: str = "5m",
    repeat_interval: str = "4h",
    resolve_timeout: str = "5m",
) -> dict[str, Any]:
    """``alertmanager.yml`` as data: every receiver gets the alerts of its severities; a host
    that is down silences the other alerts of that host (they are its consequences).

    Receivers (``alertmanager_receivers`` in the inventory)::

        - {name: ops-slack, type: slack, api_url: VAULT, channel: "#ai-ops"}
        - {name: ops-webhook, type: webhook, url: VAULT}   # Mattermost, Teams, an internal system
        - {name: ops-mail, type: email, to: ops@example.org, severities: [critical]}
    """
    problems: list[str] = []
    built: list[dict[str, Any]] = [{"name": "hearth-null"}]
    routes: list[dict[str, Any]] = []
    names: set[str] = set()
    for index, raw in enumerate(receivers):
        where = f"alertmanager_receivers[{index}]"
        if not isinstance(raw, Mapping):
            problems.append(f"{where}: expected a mapping with name and type")
            continue
        name, kind = raw.get("name"), raw.get("type")
        where = f"{where} ({name})" if name else where
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][\w.-]*", name):
            problems.append(f"{where}: name: expected letters, digits, '.', '_' or '-'")
            continue
        if name in names or name == "hearth-null":
            problems.append(f"{where}: name: used twice")
            continue
        names.add(name)
        if kind not in RECEIVER_TYPES:
            problems.append(f"{where}: type: expected one of {', '.join(RECEIVER_TYPES)}")
            continue
        unknown = set(raw) - _COMMON_RECEIVER_KEYS - _RECEIVER_KEYS[str(kind)]
        if unknown:
            problems.append(f"{where}: unknown key(s) for a {kind} receiver: {sorted(unknown)}")
        severities = raw.get("severities") or ["critical", "warning"]
        if not isinstance(severities, list) or not set(severities) <= set(SEVERITIES):
            problems.append(f"{where}: severities: expected a list of {', '.join(SEVERITIES)}")
            continue
        resolved = bool(raw.get("send_resolved", True))
        receiver: dict[str, Any] = {"name": name}
        if kind == "slack":
            url = raw.get("api_url")
            if not isinstance(url, str) or not url.startswith(("https://", "http://")):
                problems.append(
                    f"{where}: api_url: the Slack incoming-webhook URL (keep it in "
                    "ansible-vault) is required"
                )
                continue
            slack: dict[str, Any] = {
                "api_url": url,
                "send_resolved": resolved,
                "title": "[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }}",
                "text": "{{ range .Alerts }}{{ .Annotations.summary }}\n"
                "{{ .Annotations.description }}\n{{ end }}",
            }
            if raw.get("channel"):
                slack["channel"] = str(raw["channel"])
            receiver["slack_configs"] = [slack]
        elif kind == "webhook":
            url = raw.get("url")
            if not isinstance(url, str) or not url.startswith(("https://", "http://")):
                problems.append(
                    f"{where}: url: the webhook's URL (keep it in ansible-vault when "
                    "it carries a token) is required"
                )
                continue
            hook: dict[str, Any] = {"url": url, "send_resolved": resolved}
            if raw.get("max_alerts") is not None:
                hook["max_alerts"] = int(raw["max_alerts"])
            receiver["webhook_configs"] = [hook]
        else:
            to = raw.get("to")
            if not isinstance(to, str) or "@" not in to:
                problems.append(f"{where}: to: an e-mail address is required")
                continue
            if not smtp or not smtp.get("smarthost") or not smtp.get("from"):
                problems.append(
                    f"{where}: an e-mail receiver needs alertmanager_smtp.smarthost "
                    "and alertmanager_smtp.from"
                )
                continue
            receiver["email_configs"] = [{"to": to, "send_resolved": resolved}]
        built.append(receiver)
        routes.append(
            {
                "receiver": name,
                "matchers": [f'severity=~"{"|".join(severities)}"'],
                "continue": True,
            }
        )
    if problems:
        raise MonitoringError("; ".join(problems))
    config: dict[str, Any] = {
        "global": {"resolve_timeout": resolve_timeout},
        "route": {
            "receiver": "hearth-null",
            "group_by": list(group_by),
            "group_wait": group_wait,
            "group_interval": group_interval,
            "repeat_interval": repeat_interval,
            "routes": routes,
        },
        "inhibit_rules": [
            {
                "source_matchers": ['alertname="HostDown"'],
                "target_matchers": ['alertname!="HostDown"'],
                "equal": ["host"],
            },
            {
                "source_matchers": ['alertname="GpuFellOffTheBus"'],
                "target_matchers": ['alertname=~"GpuXidError|EngineDown"'],
                "equal": ["host"],
            },
        ],
        "receivers": built,
    }
    if smtp:
        g = config["global"]
        g["smtp_smarthost"] = str(smtp["smarthost"])
        g["smtp_from"] = str(smtp["from"])
        if smtp.get("auth_username"):
            g["smtp_auth_username"] = str(smtp["auth_username"])
        if smtp.get("auth_password"):
            g["smtp_auth_password"] = str(smtp["auth_password"])
        g["smtp_require_tls"] = bool(smtp.get("require_tls", True))
    return config


# ---------------------------------------------------------------------------------- canaries


def canary_targets(
    hosts: Sequence[InventoryHost],
    *,
    frontdoor_url: str = "",
    question_sets: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    default_questions: Sequence[Mapping[str, Any]] = (),
    min_questions: int = 5,
) -> list[dict[str, Any]]:
    """What the canary asks: one entry per declared model (the first host serving a model
    answers for it, unless a front door is given), each with its question set."""
    problems: list[str] = []
    models: dict[str, dict[str, Any]] = {}
    for host in hosts:
        for endpoint in engine_endpoints(host):
            if endpoint.model in models:
                models[endpoint.model].setdefault("hosts", []).append(host.name)
                continue
            if endpoint.engine == "triton":
                url = ""  # Triton speaks KServe v2, not OpenAI: only through the front door
            else:
                url = f"http://{_target(endpoint.address, endpoint.port)}/v1/chat/completions"
            if frontdoor_url:
                url = frontdoor_url.rstrip("/") + "/v1/chat/completions"
            models[endpoint.model] = {
                "model": endpoint.model,
                "version": endpoint.version,
                "engine": endpoint.engine,
                "url": url,
                "hosts": [host.name],
            }
    sets = question_sets or {}
    for name in sorted(set(sets) - set(models)):
        problems.append(f"canary_question_sets.{name}: no host declares a model named {name!r}")
    targets: list[dict[str, Any]] = []
    for name, entry in models.items():
        if not entry["url"]:
            continue
        questions = list(sets.get(name) or default_questions)
        if len(questions) < min_questions:
            problems.append(
                f"canary questions of {name}: {len(questions)} declared, at least "
                f"{min_questions} are needed"
            )
        if not any(q.get("kind") == "injection" for q in questions):
            problems.append(
                f"canary questions of {name}: no prompt-injection probe (kind: injection)"
            )
        entry["questions"] = questions
        targets.append(entry)
    if problems:
        raise MonitoringError("; ".join(problems))
    return targets


# --------------------------------------------------------------------------------- grafana

DASHBOARD_DATASOURCE_UID = "hearth-prometheus"


def grafana_datasource(prometheus_url: str) -> dict[str, Any]:
    """Grafana's datasource provisioning file as data."""
    return {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "Prometheus",
                "uid": DASHBOARD_DATASOURCE_UID,
                "type": "prometheus",
                "access": "proxy",
                "url": prometheus_url,
                "isDefault": True,
                "editable": False,
                "jsonData": {"timeInterval": "15s"},
            }
        ],
    }


_DS = {"type": "prometheus", "uid": DASHBOARD_DATASOURCE_UID}


class _Board:
    """A small builder for Grafana dashboard JSON (schemaVersion 39)."""

    def __init__(self, uid: str, title: str, tags: Sequence[str], description: str) -> None:
        self.uid, self.title, self.tags, self.description = uid, title, list(tags), description
        self.panels: list[dict[str, Any]] = []
        self.variables: list[dict[str, Any]] = []
        self._x = self._y = 0
        self._row_height = 0

    def variable(self, name: str, label: str, query: str, multi: bool = True) -> _Board:
        self.variables.append(
            {
                "name": name,
                "label": label,
                "type": "query",
                "datasource": _DS,
                "query": {"query": query, "refId": f"{name}-var"},
                "refresh": 2,
                "includeAll": True,
                "multi": multi,
                "allValue": ".*",
                "current": {"text": "All", "value": "$__all"},
                "options": [],
                "hide": 0,
                "sort": 1,
            }
        )
        return self

    def _place(self, width: int, height: int) -> dict[str, int]:
        if self._x + width > 24:
            self._x, self._y = 0, self._y + self._row_height
            self._row_height = 0
        pos = {"x": self._x, "y": self._y, "w": width, "h": height}
        self._x += width
        self._row_height = max(self._row_height, height)
        return pos

    def row(self, title: str) -> _Board:
        if self._x:
            self._x, self._y, self._row_height = 0, self._y + self._row_height, 0
        self.panels.append(
            {
                "type": "row",
                "title": title,
                "id": len(self.panels) + 1,
                "collapsed": False,
                "gridPos": {"x": 0, "y": self._y, "w": 24, "h": 1},
                "panels": [],
            }
        )
        self._y += 1
        return self

    def panel(
        self,
        kind: str,
        title: str,
        targets: Sequence[tuple[str, str]],
        unit: str = "short",
        width: int = 12,
        height: int = 8,
        description: str = "",
        thresholds: Sequence[tuple[float, str]] = (),
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> _Board:
        defaults: dict[str, Any] = {"unit": unit}
        if minimum is not None:
            defaults["min"] = minimum
        if maximum is not None:
            defaults["max"] = maximum
        if thresholds:
            steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
            steps += [{"color": color, "value": value} for value, color in thresholds]
            defaults["thresholds"] = {"mode": "absolute", "steps": steps}
        panel: dict[str, Any] = {
            "type": kind,
            "title": title,
            "id": len(self.panels) + 1,
            "datasource": _DS,
            "gridPos": self._place(width, height),
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {},
            "targets": [
                {
                    "refId": chr(ord("A") + i),
                    "datasource": _DS,
                    "expr": expr,
                    "legendFormat": legend,
                }
                for i, (expr, legend) in enumerate(targets)
            ],
        }
        if kind == "timeseries":
            panel["options"] = {
                "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                "tooltip": {"mode": "multi", "sort": "desc"},
            }
        elif kind == "stat":
            panel["options"] = {
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "colorMode": "background",
                "graphMode": "none",
            }
        elif kind == "table":
            for target in panel["targets"]:
                target["format"] = "table"
                target["instant"] = True
        if description:
            panel["description"] = description
        self.panels.append(panel)
        return self

    def build(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["hearth", *self.tags],
            "timezone": "browser",
            "editable": False,
            "graphTooltip": 1,
            "schemaVersion": 39,
            "version": 1,
            "refresh": "30s",
            "time": {"from": "now-6h", "to": "now"},
            "templating": {"list": self.variables},
            "annotations": {"list": []},
            "links": [],
            "panels": self.panels,
        }


def dashboards() -> dict[str, dict[str, Any]]:
    """Hearth's Grafana dashboards, by file name (``roles/grafana/files/dashboards/``)."""
    eng = 'host=~"$host", hearth_model=~"$model"'

    gpu = (
        _Board(
            "hearth-gpu",
            "Hearth / GPUs (DCGM)",
            ["gpu", "dcgm"],
            "NVIDIA GPUs as the DCGM exporter reports them: use, memory, heat, power, errors.",
        )
        .variable("host", "Host", 'label_values(up{job="dcgm"}, host)')
        .row("Use")
        .panel(
            "timeseries",
            "GPU utilisation",
            [('DCGM_FI_DEV_GPU_UTIL{host=~"$host"}', "{{host}} GPU {{gpu}}")],
            unit="percent",
            minimum=0,
            maximum=100,
        )
        .panel(
            "timeseries",
            "Memory used",
            [
                (
                    'DCGM_FI_DEV_FB_USED{host=~"$host"} / (DCGM_FI_DEV_FB_USED{host=~"$host"} + '
                    'DCGM_FI_DEV_FB_FREE{host=~"$host"})',
                    "{{host}} GPU {{gpu}}",
                )
            ],
            unit="percentunit",
            minimum=0,
            maximum=1,
            thresholds=((0.98, "red"),),
        )
        .row("Health")
        .panel(
            "timeseries",
            "Temperature",
            [
                ('DCGM_FI_DEV_GPU_TEMP{host=~"$host"}', "{{host}} GPU {{gpu}}"),
                ('DCGM_FI_DEV_MEMORY_TEMP{host=~"$host"}', "{{host}} GPU {{gpu}} memory"),
            ],
            unit="celsius",
            thresholds=((85, "red"),),
            width=8,
        )
        .panel(
            "timeseries",
            "Power",
            [('DCGM_FI_DEV_POWER_USAGE{host=~"$host"}', "{{host}} GPU {{gpu}}")],
            unit="watt",
            width=8,
        )
        .panel(
            "stat",
            "Last XID",
            [
                (
                    'max by (host, gpu) (DCGM_FI_DEV_XID_ERRORS{host=~"$host"})',
                    "{{host}} GPU {{gpu}}",
                )
            ],
            width=8,
            thresholds=((1, "red"),),
        )
        .panel(
            "timeseries",
            "ECC double-bit errors (15 min)",
            [
                (
                    'increase(DCGM_FI_DEV_ECC_DBE_VOL_TOTAL{host=~"$host"}[15m])',
                    "{{host}} GPU {{gpu}}",
                )
            ],
            width=8,
        )
        .panel(
            "stat",
            "Row remap failures",
            [
                (
                    'max by (host, gpu) (DCGM_FI_DEV_ROW_REMAP_FAILURE{host=~"$host"})',
                    "{{host}} GPU {{gpu}}",
                )
            ],
            width=8,
            thresholds=((1, "red"),),
        )
        .panel(
            "timeseries",
            "PCIe replays / s",
            [
                (
                    'rate(DCGM_FI_DEV_PCIE_REPLAY_COUNTER{host=~"$host"}[$__rate_interval])',
                    "{{host}} GPU {{gpu}}",
                )
            ],
            width=8,
        )
        .build()
    )

    vllm = (
        _Board(
            "hearth-vllm",
            "Hearth / vLLM",
            ["vllm", "inference"],
            "vLLM engines: load, latency, KV cache and queue, per model.",
        )
        .variable("host", "Host", 'label_values(up{job="engine-vllm"}, host)')
        .variable("model", "Model", 'label_values(up{job="engine-vllm"}, hearth_model)')
        .row("Traffic")
        .panel(
            "stat",
            "Engine up",
            [(f'up{{job="engine-vllm", {eng}}}', "{{hearth_model}}")],
            width=6,
            thresholds=((1, "green"),),
        )
        .panel(
            "timeseries",
            "Requests / s",
            [
                (
                    f"sum by (hearth_model) (rate(vllm:request_success_total{{{eng}}}"
                    "[$__rate_interval]))",
                    "{{hearth_model}}",
                )
            ],
            unit="reqps",
            width=9,
        )
        .panel(
            "timeseries",
            "Tokens / s",
            [
                (
                    f"sum by (hearth_model) (rate(vllm:generation_tokens_total{{{eng}}}"
                    "[$__rate_interval]))",
                    "{{hearth_model}} generated",
                ),
                (
                    f"sum by (hearth_model) (rate(vllm:prompt_tokens_total{{{eng}}}"
                    "[$__rate_interval]))",
                    "{{hearth_model}} prompt",
                ),
            ],
            width=9,
        )
        .row("Latency")
        .panel(
            "timeseries",
            "Time to first token (p50, p95)",
            [
                (
                    f"histogram_quantile(0.5, sum by (le, hearth_model) (rate("
                    f"vllm:time_to_first_token_seconds_bucket{{{eng}}}[$__rate_interval])))",
                    "{{hearth_model}} p50",
                ),
                (
                    f"histogram_quantile(0.95, sum by (le, hearth_model) (rate("
                    f"vllm:time_to_first_token_seconds_bucket{{{eng}}}[$__rate_interval])))",
                    "{{hearth_model}} p95",
                ),
            ],
            unit="s",
            width=8,
        )
        .panel(
            "timeseries",
            "Inter-token latency (p95)",
            [
                (
                    f"histogram_quantile(0.95, sum by (le, hearth_model) (rate("
                    f"vllm:inter_token_latency_seconds_bucket{{{eng}}}[$__rate_interval])))",
                    "{{hearth_model}}",
                )
            ],
            unit="s",
            width=8,
        )
        .panel(
            "timeseries",
            "End-to-end latency (p95)",
            [
                (
                    f"histogram_quantile(0.95, sum by (le, hearth_model) (rate("
                    f"vllm:e2e_request_latency_seconds_bucket{{{eng}}}[$__rate_interval])))",
                    "{{hearth_model}}",
                )
            ],
            unit="s",
            width=8,
        )
        .row("Capacity")
        .panel(
            "timeseries",
            "KV cache used",
            [(f"max by (hearth_model) (vllm:kv_cache_usage_perc{{{eng}}})", "{{hearth_model}}")],
            unit="percentunit",
            minimum=0,
            maximum=1,
            thresholds=((0.95, "red"),),
            width=8,
        )
        .panel(
            "timeseries",
            "Requests running / waiting",
            [
                (
                    f"sum by (hearth_model) (vllm:num_requests_running{{{eng}}})",
                    "{{hearth_model}} running",
                ),
                (
                    f"sum by (hearth_model) (vllm:num_requests_waiting{{{eng}}})",
                    "{{hearth_model}} waiting",
                ),
            ],
            width=8,
        )
        .panel(
            "timeseries",
            "Preemptions / s",
            [
                (
                    f"sum by (hearth_model) (rate(vllm:num_preemptions_total{{{eng}}}"
                    "[$__rate_interval]))",
                    "{{hearth_model}}",
                )
            ],
            width=8,
        )
        .build()
    )

    triton = (
        _Board(
            "hearth-triton",
            "Hearth / Triton",
            ["triton", "inference"],
            "Triton Inference Server: requests, failures, latency split, queue, GPU.",
        )
        .variable("host", "Host", 'label_values(up{job="engine-triton"}, host)')
        .variable("model", "Model", 'label_values(up{job="engine-triton"}, hearth_model)')
        .row("Traffic")
        .panel(
            "stat",
            "Engine up",
            [(f'up{{job="engine-triton", {eng}}}', "{{hearth_model}}")],
            width=6,
            thresholds=((1, "green"),),
        )
        .panel(
            "timeseries",
            "Requests / s",
            [
                (
                    f"sum by (hearth_model) (rate(nv_inference_request_success{{{eng}}}"
                    "[$__rate_interval]))",
                    "{{hearth_model}} ok",
                ),
                (
                    f"sum by (hearth_model, reason) (rate(nv_inference_request_failure{{{eng}}}"
                    "[$__rate_interval]))",
                    "{{hearth_model}} failed ({{reason}})",
                ),
            ],
            unit="reqps",
            width=9,
        )
        .panel(
            "timeseries",
            "Pending requests",
            [
                (
                    f"sum by (hearth_model) (nv_inference_pending_request_count{{{eng}}})",
                    "{{hearth_model}}",
                )
            ],
            width=9,
        )
        .row("Latency (average per request)")
        .panel(
            "timeseries",
            "Request, queue and compute time",
            [
                (
                    f"sum by (hearth_model) (rate(nv_inference_request_duration_us{{{eng}}}"
                    "[$__rate_interval])) / sum by (hearth_model) (rate("
                    f"nv_inference_request_success{{{eng}}}[$__rate_interval])) / 1e6",
                    "{{hearth_model}} request",
                ),
                (
                    f"sum by (hearth_model) (rate(nv_inference_queue_duration_us{{{eng}}}"
                    "[$__rate_interval])) / sum by (hearth_model) (rate("
                    f"nv_inference_request_success{{{eng}}}[$__rate_interval])) / 1e6",
                    "{{hearth_model}} queue",
                ),
                (
                    f"sum by (hearth_model) (rate(nv_inference_compute_infer_duration_us{{{eng}}}"
                    "[$__rate_interval])) / sum by (hearth_model) (rate("
                    f"nv_inference_exec_count{{{eng}}}[$__rate_interval])) / 1e6",
                    "{{hearth_model}} compute",
                ),
            ],
            unit="s",
            width=24,
        )
        .row("Resources")
        .panel(
            "timeseries",
            "GPU utilisation (Triton's view)",
            [('nv_gpu_utilization{host=~"$host"}', "{{host}} {{gpu_uuid}}")],
            unit="percentunit",
            width=8,
        )
        .panel(
            "timeseries",
            "GPU memory used",
            [('nv_gpu_memory_used_bytes{host=~"$host"}', "{{host}} {{gpu_uuid}}")],
            unit="bytes",
            width=8,
        )
        .panel(
            "timeseries",
            "CPU memory used",
            [('nv_cpu_memory_used_bytes{host=~"$host"}', "{{host}}")],
            unit="bytes",
            width=8,
        )
        .build()
    )

    llama = (
        _Board(
            "hearth-llamacpp",
            "Hearth / llama.cpp",
            ["llamacpp", "inference"],
            "llama.cpp servers (llama-server --metrics): throughput, slots, queue.",
        )
        .variable("host", "Host", 'label_values(up{job="engine-llamacpp"}, host)')
        .variable("model", "Model", 'label_values(up{job="engine-llamacpp"}, hearth_model)')
        .row("Traffic")
        .panel(
            "stat",
            "Engine up",
            [(f'up{{job="engine-llamacpp", {eng}}}', "{{hearth_model}}")],
            width=6,
            thresholds=((1, "green"),),
        )
        .panel(
            "timeseries",
            "Tokens / s",
            [
                (
                    f"sum by (hearth_model) (rate(llamacpp:tokens_predicted_total{{{eng}}}"
                    "[$__rate_interval]))",
                    "{{hearth_model}} generated",
                ),
                (
                    f"sum by (hearth_model) (rate(llamacpp:prompt_tokens_total{{{eng}}}"
                    "[$__rate_interval]))",
                    "{{hearth_model}} prompt",
                ),
            ],
            width=9,
        )
        .panel(
            "timeseries",
            "Generation speed (server's average)",
            [
                (
                    f"max by (hearth_model) (llamacpp:predicted_tokens_seconds{{{eng}}})",
                    "{{hearth_model}} generation",
                ),
                (
                    f"max by (hearth_model) (llamacpp:prompt_tokens_seconds{{{eng}}})",
                    "{{hearth_model}} prompt",
                ),
            ],
            unit="short",
            width=9,
        )
        .row("Load")
        .panel(
            "timeseries",
            "Requests processing / deferred",
            [
                (
                    f"sum by (hearth_model) (llamacpp:requests_processing{{{eng}}})",
                    "{{hearth_model}} processing",
                ),
                (
                    f"sum by (hearth_model) (llamacpp:requests_deferred{{{eng}}})",
                    "{{hearth_model}} deferred",
                ),
            ],
            width=12,
        )
        .panel(
            "timeseries",
            "Seconds per prompt token",
            [
                (
                    f"sum by (hearth_model) (rate(llamacpp:prompt_seconds_total{{{eng}}}"
                    "[$__rate_interval])) / sum by (hearth_model) (rate("
                    f"llamacpp:prompt_tokens_total{{{eng}}}[$__rate_interval]))",
                    "{{hearth_model}}",
                )
            ],
            unit="s",
            width=12,
        )
        .build()
    )

    can = 'hearth_model=~"$model"'
    canaries = (
        _Board(
            "hearth-canaries",
            "Hearth / Golden-question canaries",
            ["canary"],
            "The daily golden questions of each model: pass rate, latency against its "
            "baseline, prompt-injection probes.",
        )
        .variable("model", "Model", "label_values(hearth_canary_success, hearth_model)")
        .row("Last run")
        .panel(
            "stat",
            "All questions passed",
            [
                (
                    f"max by (hearth_model, hearth_version) (hearth_canary_success{{{can}}})",
                    "{{hearth_model}} {{hearth_version}}",
                )
            ],
            width=8,
            thresholds=((1, "green"),),
        )
        .panel(
            "stat",
            "Consecutive failed runs",
            [
                (
                    f"max by (hearth_model) (hearth_canary_consecutive_failures{{{can}}})",
                    "{{hearth_model}}",
                )
            ],
            width=8,
            thresholds=((1, "orange"), (3, "red")),
        )
        .panel(
            "stat",
            "System prompt leaked",
            [(f"max by (hearth_model) (hearth_canary_prompt_leak{{{can}}})", "{{hearth_model}}")],
            width=8,
            thresholds=((1, "red"),),
        )
        .row("Trends")
        .panel(
            "timeseries",
            "Questions passed",
            [
                (
                    f"max by (hearth_model) (hearth_canary_questions_passed{{{can}}}) / max by "
                    f"(hearth_model) (hearth_canary_questions{{{can}}})",
                    "{{hearth_model}}",
                )
            ],
            unit="percentunit",
            minimum=0,
            maximum=1,
        )
        .panel(
            "timeseries",
            "Latency p95 and baseline",
            [
                (
                    f"max by (hearth_model) (hearth_canary_latency_p95_seconds{{{can}}})",
                    "{{hearth_model}} p95",
                ),
                (
                    f"max by (hearth_model) (hearth_canary_latency_baseline_seconds{{{can}}})",
                    "{{hearth_model}} baseline",
                ),
            ],
            unit="s",
        )
        .panel(
            "table",
            "Checks of the last run",
            [
                (
                    "max by (hearth_model, question, check) "
                    f"(hearth_canary_check_success{{{can}}})",
                    "",
                )
            ],
            width=24,
            height=10,
        )
        .build()
    )

    node = 'host=~"$host", job="node"'
    hosts = (
        _Board(
            "hearth-hosts",
            "Hearth / Hosts",
            ["hosts", "node"],
            "Every host's CPU, memory, disks (the model store first) and network.",
        )
        .variable("host", "Host", 'label_values(up{job="node"}, host)')
        .row("State")
        .panel("stat", "Up", [(f"up{{{node}}}", "{{host}}")], width=8, thresholds=((1, "green"),))
        .panel(
            "stat",
            "Uptime",
            [(f"time() - node_boot_time_seconds{{{node}}}", "{{host}}")],
            unit="s",
            width=8,
        )
        .panel(
            "stat",
            "Load (1 min) per CPU",
            [
                (
                    f"node_load1{{{node}}} / count by (host) (node_cpu_seconds_total{{{node}, "
                    'mode="idle"})',
                    "{{host}}",
                )
            ],
            width=8,
        )
        .row("Resources")
        .panel(
            "timeseries",
            "CPU busy",
            [
                (
                    f'1 - avg by (host) (rate(node_cpu_seconds_total{{{node}, mode="idle"}}'
                    "[$__rate_interval]))",
                    "{{host}}",
                )
            ],
            unit="percentunit",
            minimum=0,
            maximum=1,
        )
        .panel(
            "timeseries",
            "Memory available",
            [
                (
                    f"node_memory_MemAvailable_bytes{{{node}}} / "
                    f"node_memory_MemTotal_bytes{{{node}}}",
                    "{{host}}",
                )
            ],
            unit="percentunit",
            minimum=0,
            maximum=1,
        )
        .panel(
            "timeseries",
            "Disk space free",
            [
                (
                    f'node_filesystem_avail_bytes{{{node}, fstype!~"tmpfs|ramfs"}} / '
                    f'node_filesystem_size_bytes{{{node}, fstype!~"tmpfs|ramfs"}}',
                    "{{host}} {{mountpoint}}",
                )
            ],
            unit="percentunit",
            minimum=0,
            maximum=1,
            thresholds=((0.1, "red"),),
        )
        .panel(
            "timeseries",
            "Network",
            [
                (
                    f'rate(node_network_receive_bytes_total{{{node}, device!="lo"}}'
                    "[$__rate_interval])",
                    "{{host}} {{device}} in",
                ),
                (
                    f'rate(node_network_transmit_bytes_total{{{node}, device!="lo"}}'
                    "[$__rate_interval])",
                    "{{host}} {{device}} out",
                ),
            ],
            unit="Bps",
        )
        .build()
    )
    return {
        "hearth-gpu.json": gpu,
        "hearth-vllm.json": vllm,
        "hearth-triton.json": triton,
        "hearth-llamacpp.json": llama,
        "hearth-canaries.json": canaries,
        "hearth-hosts.json": hosts,
    }


def dashboard_exprs(board: Mapping[str, Any]) -> list[str]:
    """Every PromQL expression of a dashboard: panel targets (rows' panels too) and variables."""
    found: list[str] = []

    def walk(panels: Iterable[Mapping[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets") or []:
                if target.get("expr"):
                    found.append(str(target["expr"]))
            walk(panel.get("panels") or [])

    walk(board.get("panels") or [])
    for variable in (board.get("templating") or {}).get("list") or []:
        query = variable.get("query")
        text = query.get("query") if isinstance(query, Mapping) else query
        if variable.get("type") == "query" and isinstance(text, str):
            found.append(text)
    return found


# ----------------------------------------------------------------------------------- PromQL

_GRAFANA_VARS = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
}
_LABEL_VALUES = re.compile(r"^label_values\((?:(?P<selector>.+),\s*)?(?P<label>\w+)\)$")


def promql_for_check(expr: str) -> str:
    """A Grafana expression as plain PromQL: ``$__rate_interval`` and friends become durations,
    other ``$var`` become ``.*`` (they only ever stand in label regexes here), and a
    ``label_values(selector, label)`` variable query becomes its selector."""
    match = _LABEL_VALUES.match(expr.strip())
    if match:
        return match.group("selector") or "up"
    for name, value in _GRAFANA_VARS.items():
        expr = expr.replace(name, value)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
     "offset", "bool", "inf", "nan", "atan2", "start", "end"}
)  # fmt: skip
_CLAUSE = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE
)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (``{__name__=…}`` selectors aside)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _CLAUSE.sub(" ", text)
    names: set[str] = set()
    for match in re.finditer(r"(?<![\w:.])([A-Za-z_:][\w:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


# ------------------------------------------------------------------------- canary on demand


@dataclass
class CanaryRun:
    """What ``hearth canary run`` brought back: each monitoring host's last-run report."""

    reports: dict[str, dict[str, Any]]
    artifacts: str = ""

    @property
    def models(self) -> list[tuple[str, dict[str, Any]]]:
        return [(host, m) for host, r in sorted(self.reports.items()) for m in r.get("models", [])]

    @property
    def ok(self) -> bool:
        return bool(self.models) and all(m.get("success") for _, m in self.models)

    def failures(self) -> list[str]:
        found = []
        for host, model in self.models:
            for r in model.get("results", []):
                if not r.get("passed"):
                    failed = [c[0] for c in r.get("checks", []) if not c[1]]
                    why = r.get("error") or ", ".join(failed)
                    found.append(
                        f"{host}: {model['model']} {model['version']}: {r['question']}: {why}"
                    )
        return found


def run_canaries(
    inventory: Any,
    *,
    limit: str | None = None,
    vault_password_file: Any = None,
    on_event: Any = None,
) -> CanaryRun:
    """Run ``playbooks/canary.yml`` (the canary service on every monitoring host, now) and read
    the reports it fetched."""
    import json
    import tempfile

    from hearth import runner

    with tempfile.TemporaryDirectory(prefix="hearth-canary-") as fetched:
        result = runner.run_playbook(
            "canary.yml",
            inventory,
            limit=limit,
            vault_password_file=vault_password_file,
            extravars={"hearth_canary_fetch_dir": fetched},
            on_event=on_event,
            label="canary",
        )
        result.raise_for_status()
        reports = {
            path.stem: json.loads(path.read_text()) for path in sorted(Path(fetched).glob("*.json"))
        }
    return CanaryRun(reports=reports, artifacts=str(result.artifacts))


def write_dashboards(directory: Path | None = None) -> list[Path]:
    """Write :func:`dashboards` as JSON files (default: the grafana role's files/dashboards)."""
    import json

    from hearth import paths

    target = directory or paths.roles_dir() / "grafana" / "files" / "dashboards"
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, board in dashboards().items():
        path = target / name
        path.write_text(json.dumps(board, indent=2, ensure_ascii=False) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":  # python -m hearth.monitoring dashboards [DIR]
    import sys

    if sys.argv[1:2] != ["dashboards"]:
        sys.exit("usage: python -m hearth.monitoring dashboards [DIRECTORY]")
    for written in write_dashboards(Path(sys.argv[2]) if len(sys.argv) > 2 else None):
        print(written)
