"""testinfra checks of the `prometheus` role, run by `hearth audit` on the monitoring hosts.

``hearth_vars`` is the host's declared state (inventory over role defaults). The loaded rules are
compared with the rules Hearth builds from that state (hearth.monitoring), so a rule file edited
by hand, or one Prometheus did not reload, shows as drift.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from hearth import monitoring

SERVICE = "prometheus"
VARS = Path(__file__).resolve().parent.parent / "vars"
FETCH = monitoring.FETCH_COMMAND


def _pinned(host: Any, declared: str) -> str:
    if declared:
        return declared
    info = host.system_info
    name = f"{str(info.distribution).capitalize()}-{str(info.release).split('.')[0]}.yml"
    if (VARS / name).is_file():
        return str(yaml.safe_load((VARS / name).read_text()).get("_prometheus_pinned_version"))
    return ""


def _api(host: Any, port: int, path: str) -> Any:
    done = host.run(FETCH, f"http://127.0.0.1:{port}{path}")
    assert done.rc == 0, (
        f"Prometheus API {path}: expected an answer, found rc={done.rc} "
        f"{done.stderr.strip()[-200:]}"
    )
    return json.loads(done.stdout)["data"]


def test_package_pinned_and_held(host: Any, hearth_vars: dict[str, Any]) -> None:
    package = host.package(SERVICE)
    assert package.is_installed, f"{SERVICE}: expected installed, found absent"
    wanted = _pinned(host, hearth_vars["prometheus_version"])
    if wanted:
        assert package.version == wanted, (
            f"{SERVICE}: expected version {wanted}, found {package.version}"
        )
    selection = host.check_output("dpkg --get-selections %s", SERVICE).split()[-1]
    assert selection == "hold", f"{SERVICE}: expected held at its version, found '{selection}'"


def test_service_ready(host: Any, hearth_vars: dict[str, Any]) -> None:
    service = host.service(SERVICE)
    assert service.is_running, f"{SERVICE}: expected running, found stopped"
    assert service.is_enabled, f"{SERVICE}: expected enabled at boot, found disabled"
    port = hearth_vars["prometheus_port"]
    ready = host.run(FETCH, f"http://127.0.0.1:{port}/-/ready")
    assert ready.rc == 0, f"Prometheus on port {port}: expected /-/ready, found rc={ready.rc}"


def test_config_valid(host: Any) -> None:
    check = host.run("promtool check config %s", "/etc/prometheus/prometheus.yml")
    assert check.rc == 0, (
        "/etc/prometheus/prometheus.yml: expected valid (promtool check config), found: "
        f"{(check.stdout + check.stderr).strip()[-300:]}"
    )


def test_rules_loaded(host: Any, hearth_vars: dict[str, Any]) -> None:
    wanted = monitoring.alert_rules(
        hearth_vars["prometheus_alert_settings"], hearth_vars["prometheus_model_store_paths"]
    )
    expected = {r["alert"]: r.get("for", "0s") for g in wanted["groups"] for r in g["rules"]}
    groups = _api(host, hearth_vars["prometheus_port"], "/api/v1/rules")["groups"]
    loaded = {r["name"]: r for g in groups for r in g["rules"] if r.get("type") == "alerting"}
    missing = sorted(set(expected) - set(loaded))
    assert not missing, f"alert rules: expected {len(expected)} loaded, missing {missing}"
    drift = {
        name: f"expected for {expected[name]}, found {int(loaded[name].get('duration', 0))}s"
        for name in expected
        if monitoring.duration_seconds(expected[name]) != int(loaded[name].get("duration", 0))
    }
    assert not drift, f"alert rules drifted (not reloaded, or edited by hand): {drift}"
    broken = {n: r.get("lastError") for n, r in loaded.items() if r.get("health") == "err"}
    assert not broken, f"alert rules failing to evaluate: {broken}"


def test_targets_up(host: Any, hearth_vars: dict[str, Any]) -> None:
    targets = _api(host, hearth_vars["prometheus_port"], "/api/v1/targets?state=active")
    active = targets["activeTargets"]
    jobs = {t["labels"].get("job") for t in active}
    assert "node" in jobs, (
        f"scrape targets: expected node_exporter targets, found jobs {sorted(jobs)}"
    )
    down = [
        f"{t['labels'].get('job')}@{t['labels'].get('host')} ({t.get('scrapeUrl')}): "
        f"{t.get('lastError') or t.get('health')}"
        for t in active
        if t.get("health") != "up"
    ]
    assert not down, f"scrape targets: expected all {len(active)} up, found down: {down}"


def test_alertmanager_connected(host: Any, hearth_vars: dict[str, Any]) -> None:
    found = _api(host, hearth_vars["prometheus_port"], "/api/v1/alertmanagers")
    active = [a["url"] for a in found.get("activeAlertmanagers", [])]
    assert active, "Prometheus: expected an Alertmanager to send alerts to, found none"


def test_admin_api_only_on_loopback(host: Any) -> None:
    flags = host.file("/etc/default/prometheus").content_string
    if "--web.enable-admin-api" not in flags:
        return
    listen = next(
        (f.split("=", 1)[1] for f in flags.replace('"', " ").split()
         if f.startswith("--web.listen-address=")),
        "",
    )  # fmt: skip
    assert listen.startswith(("127.0.0.1:", "[::1]:", "localhost:")), (
        f"Prometheus' admin API: expected on loopback only, found it listening on {listen}"
    )
