"""Grafana: the datasource provisioning file and Hearth's dashboards, built as data.

The dashboards are shipped as JSON in ``roles/grafana/files/dashboards/``; ``python -m
hearth.monitoring dashboards`` rewrites them and a unit test proves the files are the generated
ones.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hearth import paths

__all__ = ["DASHBOARD_DATASOURCE_UID", "dashboards", "grafana_datasource", "write_dashboards"]


DASHBOARD_DATASOURCE_UID = "hearth-prometheus"


def grafana_datasource(
    prometheus_url: str,
    *,
    user: str = "",
    password: str = "",
    ca_pem: str = "",
    server_name: str = "",
) -> dict[str, Any]:
    """Grafana's datasource provisioning file as data. With ``password`` (``monitoring_tls``):
    basic auth, and Prometheus's certificate checked against the site's CA (``ca_pem``) under
    ``server_name`` (the URL is loopback, the certificate names the host). The file then holds
    the password: the role writes it 0640 and never shows it."""
    source: dict[str, Any] = {
        "name": "Prometheus",
        "uid": DASHBOARD_DATASOURCE_UID,
        "type": "prometheus",
        "access": "proxy",
        "url": prometheus_url,
        "isDefault": True,
        "editable": False,
        "jsonData": {"timeInterval": "15s"},
    }
    if password:
        source["basicAuth"] = True
        source["basicAuthUser"] = user or "hearth"
        source["secureJsonData"] = {"basicAuthPassword": password}
        if ca_pem:
            source["jsonData"].update({"tlsAuthWithCACert": True, "serverName": server_name})
            source["secureJsonData"]["tlsCACert"] = ca_pem
    return {"apiVersion": 1, "datasources": [source]}


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


def write_dashboards(directory: Path | None = None) -> list[Path]:
    """Write :func:`dashboards` as JSON files (default: the grafana role's files/dashboards)."""
    target = directory or paths.roles_dir() / "grafana" / "files" / "dashboards"
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, board in dashboards().items():
        path = target / name
        path.write_text(json.dumps(board, indent=2, ensure_ascii=False) + "\n")
        written.append(path)
    return written
