"""Hearth's alert rules as data (Prometheus's rule file), proven by ``promtool test rules``
(``roles/prometheus/tests/hearth.rules.test.yml``, run by the unit tests)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hearth.monitoring.settings import duration_seconds, settings_with_defaults

__all__ = ["alert_rules", "model_store_mountpoints"]


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


KEY_EXPIRY_WARNING_DAYS = 7
"""An API key's expiry is announced this many days before (FrontDoorKeyExpiring)."""


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


def _declared_vector(declared_gpus: Mapping[str, int]) -> str:
    """PromQL for ``{host=NAME} N`` per host that declares GPUs ("" when none does)."""
    parts = [
        f'label_replace(vector({int(n)}), "host", {json.dumps(host)}, "", "")'
        for host, n in sorted(declared_gpus.items())
        if int(n) > 0
    ]
    return f"({' or '.join(parts)})" if parts else ""


def _gpu_gone(declared: str) -> str:
    """GpuFellOffTheBus, per GPU (``host, gpu, UUID``), which holds while the GPU is missing:

    - DCGM reports XID 79 for it, or
    - DCGM reported it in the last hour and no longer does while its exporter answers, or
    - the alert fires already (its own ``ALERTS`` series) and DCGM still does not report that GPU
      while the host is still a DCGM target: it ends when the GPU is back, or when the host reports
      as many GPUs as it declares again (a replaced GPU has a new UUID; a removed one is declared
      away), never because a time window forgot it.
    """
    by = "host, gpu, UUID"
    seen = f"max by ({by}) (DCGM_FI_DEV_GPU_TEMP)"
    scraped = 'max by (host) (up{job="dcgm"})'
    xid = f"max by ({by}) (DCGM_FI_DEV_XID_ERRORS) == 79"
    vanished = (
        f"(max by ({by}) (max_over_time(DCGM_FI_DEV_GPU_TEMP[1h] offset 5m)) "
        f"unless on ({by}) {seen}) and on (host) {scraped} == 1"
    )
    still = (
        f'max by ({by}) (ALERTS{{alertname="GpuFellOffTheBus", alertstate="firing"}}) '
        f"unless on ({by}) {seen}"
    )
    if declared:
        back = f"count by (host) (DCGM_FI_DEV_GPU_TEMP) >= on (host) {declared}"
        still += f" unless on (host) ({back})"
    still = f"({still}) and on (host) {scraped}"
    return f"{xid} or on ({by}) ({vanished}) or on ({by}) ({still})"


def alert_rules(
    overrides: Mapping[str, Any] | None = None,
    model_store_paths: Sequence[str] = ("/var/lib/hearth/models",),
    model_hosts: Sequence[str] = (),
    declared_gpus: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Prometheus's rule file (``groups:``) for Hearth's alerts, as data.

    ``model_store_paths`` are the model store directories of the site (the disk alert watches
    the filesystems that can hold them), ``model_hosts`` the hosts that serve models (the disk
    alert is limited to them; every host when none is given) and ``declared_gpus`` the number of
    GPUs each host declares (``hearth_declared_gpus``): a host that reports fewer is missing one.
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
            "FrontDoorKeyExpiring",
            f"hearth_frontdoor_key_expiry_timestamp_seconds - time() < {KEY_EXPIRY_WARNING_DAYS}"
            " * 86400",
            "warning",
            f"API key {{{{ $labels.key_name }}}} expires within {KEY_EXPIRY_WARNING_DAYS} days",
            "The front door on {{ $labels.host }} will refuse the API key "
            "{{ $labels.key_name }} (401 expired) from its `expires` on: rotate it "
            "(hearth keys rotate) or move its expiry, then hearth up --tags front_door.",
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
    # A traffic share (canary_share): the new version's error ratio at the front doors against
    # the version before, over the soak window, each with enough requests to mean something.
    window, least = s["canary_share_window"], int(s["canary_share_min_requests"])
    asked = f"sum by (model, version) (increase(hearth_frontdoor_requests_total[{window}]))"
    failed = (
        "sum by (model, version) "
        f'(increase(hearth_frontdoor_requests_total{{status=~"5.."}}[{window}]))'
    )
    ratio = f"(({failed} or {asked} * 0) / {asked}) and on (model, version) ({asked} >= {least})"
    share_on = "group by (model, version, stable_version) (hearth_frontdoor_canary_share)"
    as_stable = f'label_replace({ratio}, "stable_version", "$1", "version", "(.*)")'
    canary_share = (
        f"({ratio}) * on (model, version) group_left (stable_version) {share_on} "
        # Prometheus prints a group_left without labels as `group_left ()`: the audit compares
        # the loaded expression token by token
        f"> on (model, stable_version) group_left () {as_stable}"
    )
    canaries = [
        _alert(
            "CanaryShareErrorRate",
            canary_share,
            "warning",
            "Canary {{ $labels.model }} {{ $labels.version }} fails more than "
            "{{ $labels.stable_version }}",
            f"Over the last {window}, {{{{ $value | humanizePercentage }}}} of the requests the "
            "front door sent to {{ $labels.model }} {{ $labels.version }} (its canary share) "
            "failed (5xx), more than with {{ $labels.stable_version }}. `hearth models abort -i "
            "INVENTORY {{ $labels.model }}` sends every request back to "
            "{{ $labels.stable_version }}.",
        ),
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
            f"{duration_seconds(s['canary_stale_after'])}",
            "warning",
            "Canary has not run: {{ $labels.hearth_model }}",
            "The canary of {{ $labels.hearth_model }} last ran {{ $value | humanizeDuration }} "
            "ago: check the hearth-canary.timer on the monitoring host.",
            "10m",
        ),
    ]

    gpu = "host, gpu, UUID"
    declared = _declared_vector(declared_gpus or {})
    gpus_seen = "count by (host) (DCGM_FI_DEV_GPU_TEMP)"
    dcgm_up = 'max by (host) (up{job="dcgm"} == 1)'
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
            _gpu_gone(declared),
            "critical",
            "GPU {{ $labels.gpu }} of {{ $labels.host }} fell off the bus",
            "GPU {{ $labels.gpu }} ({{ $labels.UUID }}) of {{ $labels.host }} is gone (XID 79 or "
            "no longer reported by DCGM while the exporter runs). The models on it are down; the "
            "host needs a reset or a reboot, then a hardware check.",
        ),
        *(
            [
                _alert(
                    "GpuMissing",
                    f"({gpus_seen} or on (host) 0 * {dcgm_up}) < on (host) {declared} "
                    f"and on (host) {dcgm_up}",
                    "critical",
                    "{{ $labels.host }} has fewer GPUs than declared",
                    "The DCGM exporter of {{ $labels.host }} reports {{ $value }} GPU(s), fewer "
                    "than its hearth_declared_gpus: a GPU is missing (it fell off the bus, or was "
                    "not found at boot). Run `hearth audit`; the host needs a reset or a reboot, "
                    "then a hardware check.",
                    "5m",
                )
            ]
            if declared
            else []
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
        _alert(
            "HostUpgradeStopped",
            "max by (host) (hearth_upgrade_stopped) == 1",
            "critical",
            "hearth upgrade stopped on {{ $labels.host }}",
            "The maintenance window of {{ $labels.host }} stopped at a failed step: the host is "
            "left where it stopped (drained at the front door, its engines maybe stopped). Read "
            "the summary of `hearth upgrade`, fix the cause and run it again: it resumes there. "
            "(The window's own silence holds this alert until the silence expires.)",
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
