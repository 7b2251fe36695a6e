"""testinfra checks of the `grafana` role, run by `hearth audit` on the monitoring hosts.

The dashboards on the host must be exactly the ones this Hearth ships (roles/grafana/files), and
the datasource must point at the declared Prometheus. Grafana itself is checked only where an
image is declared (no distribution ships Grafana).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

SHIPPED = Path(__file__).resolve().parent.parent / "files" / "dashboards"


def test_dashboards_provisioned(host: Any, hearth_vars: dict[str, Any]) -> None:
    """Hearth's dashboards are provisioned on the host as Hearth renders them."""
    directory = hearth_vars["grafana_dashboards_dir"]
    drift = {}
    for shipped in sorted(SHIPPED.glob("*.json")):
        found = host.file(f"{directory}/{shipped.name}")
        if not found.exists:
            drift[shipped.name] = "missing"
            continue
        want = hashlib.sha256(shipped.read_bytes()).hexdigest()
        if found.sha256sum != want:
            drift[shipped.name] = "differs from the shipped dashboard"
    assert not drift, f"dashboards in {directory}: {drift}"
    for shipped in SHIPPED.glob("*.json"):
        board = json.loads(host.file(f"{directory}/{shipped.name}").content_string)
        assert board.get("uid") and board.get("panels"), f"{shipped.name}: not a dashboard"


def test_provisioning_files(host: Any, hearth_vars: dict[str, Any]) -> None:
    """Grafana's provisioning points at the declared Prometheus and at the dashboards directory."""
    base = hearth_vars["grafana_provisioning_dir"]
    datasource = yaml.safe_load(host.file(f"{base}/datasources/hearth.yml").content_string)
    urls = [d.get("url") for d in datasource.get("datasources", [])]
    want = hearth_vars["grafana_prometheus_url"]
    assert urls == [want], (
        f"{base}/datasources/hearth.yml: expected Prometheus at {want}, found {urls}"
    )
    if hearth_vars.get("monitoring_tls", True) is True:  # it logs in, and the file is private
        source = host.file(f"{base}/datasources/hearth.yml")
        logs_in = [bool(d.get("basicAuth")) for d in datasource.get("datasources", [])]
        assert logs_in == [True] and oct(source.mode) == "0o640", (
            f"{source.path}: with monitoring_tls expected basic auth in a 0640 file, found "
            f"basicAuth {logs_in} mode {oct(source.mode)}"
        )
    provider = yaml.safe_load(host.file(f"{base}/dashboards/hearth.yml").content_string)
    paths = [p["options"]["path"] for p in provider.get("providers", [])]
    assert paths, f"{base}/dashboards/hearth.yml: expected a dashboard provider, found none"


def test_grafana_serves_the_dashboards(host: Any, hearth_vars: dict[str, Any]) -> None:
    """Grafana answers its health check and serves Hearth's dashboards."""
    if not hearth_vars["grafana_image"]:
        pytest.skip("grafana_image is not set: the dashboards are provisioned, no server runs")
    port = hearth_vars["grafana_port"]
    health = host.run("curl -fsS --max-time 5 http://127.0.0.1:%s/api/health", str(port))
    assert health.rc == 0, f"Grafana on port {port}: expected /api/health, found rc={health.rc}"
