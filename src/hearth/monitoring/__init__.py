"""Monitoring as data: everything Prometheus, Alertmanager, Grafana and the canary are configured
with, built from the inventory. Pure: no host, no network, no Ansible.

One module per concern:

- :mod:`~hearth.monitoring.settings` — the alerts' thresholds and durations
  (``prometheus_alert_settings`` over Hearth's defaults), Prometheus durations;
- :mod:`~hearth.monitoring.rules` — the alert rules (proven by ``promtool test rules``,
  ``roles/prometheus/tests/hearth.rules.test.yml``);
- :mod:`~hearth.monitoring.scrape` — ``prometheus.yml`` and its scrape targets (engine ports come
  from :mod:`hearth.engines`; whether a host runs the DCGM exporter from :func:`serves_dcgm`);
- :mod:`~hearth.monitoring.alertmanager` — Alertmanager's routing and receivers;
- :mod:`~hearth.monitoring.dashboards` — Grafana's datasource and dashboards;
- :mod:`~hearth.monitoring.canaries` — what the golden-question canary asks.

The ``prometheus``, ``alertmanager``, ``grafana``, ``dcgm_exporter`` and ``canary`` roles call it
through the Jinja filters of ``plugins/filter/hearth_monitoring.py`` and write the results with
``to_nice_yaml`` / ``to_nice_json`` (validated on the host by ``promtool`` / ``amtool``); the unit
tests call the same functions. ``hearth canary run``, which runs Ansible, lives with the commands
(:mod:`hearth.commands.canary`).

Metric names come from the engines themselves (``tests/fixtures/engines/*-metrics.txt``, recorded
from llama.cpp 0.7.0, vLLM 0.32.0 and Triton 2.51.0) and, for GPU-only series that cannot be
recorded without a GPU, from NVIDIA's documentation (``docs/monitoring.md`` cites each).
"""

from __future__ import annotations

from typing import Any

from hearth.monitoring.alertmanager import RECEIVER_TYPES, SEVERITIES, alertmanager_config
from hearth.monitoring.canaries import canary_targets
from hearth.monitoring.dashboards import (
    DASHBOARD_DATASOURCE_UID,
    dashboards,
    grafana_datasource,
    write_dashboards,
)
from hearth.monitoring.rules import alert_rules, model_store_mountpoints
from hearth.monitoring.scrape import (
    ENGINE_JOBS,
    EngineEndpoint,
    InventoryHost,
    engine_endpoints,
    prometheus_config,
    scrape_configs,
    serves_dcgm,
)
from hearth.monitoring.settings import (
    ALERT_DEFAULTS,
    MonitoringError,
    duration_seconds,
    settings_with_defaults,
)

__all__ = [
    "ALERT_DEFAULTS",
    "DASHBOARD_DATASOURCE_UID",
    "ENGINE_JOBS",
    "FETCH_COMMAND",
    "RECEIVER_TYPES",
    "SEVERITIES",
    "CanaryRun",
    "EngineEndpoint",
    "InventoryHost",
    "MonitoringError",
    "alert_rules",
    "alertmanager_config",
    "canary_targets",
    "dashboards",
    "duration_seconds",
    "engine_endpoints",
    "grafana_datasource",
    "model_store_mountpoints",
    "prometheus_config",
    "run_canaries",
    "scrape_configs",
    "serves_dcgm",
    "settings_with_defaults",
    "write_dashboards",
]

# How the audit's checks of Prometheus and Alertmanager read their HTTP APIs on a host: the host's
# own python3, nothing to install.
FETCH_COMMAND = (
    "python3 -c 'import sys, urllib.request; "
    "print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' %s"
)


def __getattr__(name: str) -> Any:
    """``CanaryRun`` and ``run_canaries`` moved to :mod:`hearth.commands.canary` (they run
    Ansible); the old names still resolve, without importing the runner until asked."""
    if name in ("CanaryRun", "run_canaries"):
        from hearth.commands import canary

        return getattr(canary, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
