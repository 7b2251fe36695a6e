"""testinfra checks of the `node_exporter` role, run by `hearth audit` on every host.

``hearth_vars`` is the host's declared state (inventory over role defaults).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hearth.checklib import (
    WEB_PASSWORD_FILE,
    assert_package_pinned_and_held,
    assert_service_running,
    assert_web_tls,
    observe,
    observe_listeners,
    pinned_version,
    web_get,
    web_tls,
)

SERVICE = "prometheus-node-exporter"
VARS = Path(__file__).resolve().parent.parent / "vars"


def test_package_pinned_and_held(host: Any, hearth_vars: dict[str, Any]) -> None:
    """node_exporter's package is installed at the pinned version and held."""
    wanted = pinned_version(
        host, hearth_vars["node_exporter_version"], VARS, "_node_exporter_pinned_version"
    )
    assert_package_pinned_and_held(host, SERVICE, wanted)


def test_service_answers(host: Any, hearth_vars: dict[str, Any]) -> None:
    """node_exporter runs, starts at boot, answers /metrics on its declared port and reads its
    textfile directory without error."""
    assert_service_running(host, SERVICE)
    port = hearth_vars["node_exporter_port"]
    observe_listeners(host, port)
    if web_tls(hearth_vars) and not host.file(WEB_PASSWORD_FILE).exists:
        # no password on this host (Prometheus's is on the monitoring hosts): the scrape with
        # credentials is proven by Prometheus's targets (the prometheus role's checks)
        status, _ = web_get(host, hearth_vars, port, "/metrics")
        observe("/metrics without credentials", status, 401)
        assert status == 401, f"node_exporter on port {port}: expected 401, found {status}"
        return
    status, metrics = web_get(host, hearth_vars, port, "/metrics")
    observe("/metrics status", status, 200)
    assert status == 200, f"node_exporter on port {port}: expected /metrics, found status {status}"
    assert "node_textfile_scrape_error 0" in metrics, (
        "node_exporter's textfile collector: expected node_textfile_scrape_error 0, found "
        + next(
            (line for line in metrics.splitlines() if "textfile_scrape_error" in line),
            "no textfile collector",
        )
    )


def test_textfile_directory(host: Any, hearth_vars: dict[str, Any]) -> None:
    """The textfile collector's directory exists (group-writable, setgid) and node_exporter is
    started with it."""
    path, group = (
        hearth_vars["node_exporter_textfile_dir"],
        hearth_vars["node_exporter_textfile_group"],
    )
    d = host.file(path)
    if d.exists:
        observe(path, f"group {d.group} mode {oct(d.mode)}", f"group {group} mode 0o2775")
    assert d.is_directory, (
        f"{path}: expected a directory, found {'a file' if d.exists else 'nothing'}"
    )
    found = (d.group, oct(d.mode))
    assert found == (group, "0o2775"), (
        f"{path}: expected group {group} mode 2775, found {found[0]} mode {found[1]}"
    )
    args = host.file("/etc/default/prometheus-node-exporter").content_string
    assert f"--collector.textfile.directory={path}" in args, (
        f"/etc/default/prometheus-node-exporter: expected the textfile directory {path}, not found"
    )


def test_serves_tls_and_refuses_anonymous(host: Any, hearth_vars: dict[str, Any]) -> None:
    """With monitoring_tls: node_exporter serves the deployed certificate and refuses a request
    without credentials."""
    assert_web_tls(host, hearth_vars, hearth_vars["node_exporter_port"], "/metrics")
