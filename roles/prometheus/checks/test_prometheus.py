"""testinfra checks of the `prometheus` role, run by `hearth audit` on the monitoring hosts.

``hearth_vars`` is the host's declared state (inventory over role defaults). The loaded rules are
compared with the rules Hearth builds from that state (hearth.monitoring), so a rule file edited
by hand, or one Prometheus did not reload, shows as drift.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from hearth import monitoring
from hearth.checklib import (
    WEB_PASSWORD_FILE,
    assert_package_pinned_and_held,
    assert_service_running,
    assert_web_tls,
    http_get,
    observe,
    observe_listeners,
    pinned_version,
    rules_digest,
    rules_drift,
    web_get,
    web_tls,
)

SERVICE = "prometheus"
VARS = Path(__file__).resolve().parent.parent / "vars"
RULES_FILE = "/etc/prometheus/rules/hearth.rules.yml"


def _api(host: Any, hearth_vars: dict[str, Any], path: str) -> Any:
    status, body = web_get(host, hearth_vars, hearth_vars["prometheus_port"], path)
    assert status == 200, f"Prometheus API {path}: expected an answer, found status {status}"
    return json.loads(body)["data"]


def _rendered(hearth_vars: dict[str, Any]) -> dict[str, Any]:
    """The rules the role writes, built by the same Python from the same declared state."""
    rules: dict[str, Any] = monitoring.alert_rules(
        hearth_vars["prometheus_alert_settings"],
        hearth_vars["prometheus_model_store_paths"],
        hearth_vars.get("hearth_model_hosts") or (),
    )
    return rules


_TOKEN = re.compile(r'"(?:\\.|[^"\\])*"|[A-Za-z_:][\w:]*|\d+(?:\.\d+)?|\S')


def _tokens(expr: Any) -> Counter[str]:
    """The tokens of a PromQL expression, in any order: Prometheus prints a loaded rule its own
    way (label matchers sorted, ``on(host)``, ``2`` for ``2.0``), but a changed threshold or
    matcher is another token."""
    found = _TOKEN.findall(str(expr))
    return Counter(repr(float(t)) if t[0].isdigit() else t for t in found)  # 2.0 is printed 2


def test_package_pinned_and_held(host: Any, hearth_vars: dict[str, Any]) -> None:
    """Prometheus' package is installed at the pinned version and held."""
    wanted = pinned_version(
        host, hearth_vars["prometheus_version"], VARS, "_prometheus_pinned_version"
    )
    assert_package_pinned_and_held(host, SERVICE, wanted)


def test_service_ready(host: Any, hearth_vars: dict[str, Any]) -> None:
    """Prometheus runs, starts at boot and answers /-/ready on its declared port."""
    assert_service_running(host, SERVICE)
    port = hearth_vars["prometheus_port"]
    observe_listeners(host, port)
    status, _ = web_get(host, hearth_vars, port, "/-/ready")
    observe("/-/ready status", status, 200)
    assert status == 200, f"Prometheus on port {port}: expected /-/ready, found status {status}"


def test_config_valid(host: Any) -> None:
    """promtool accepts the configuration Prometheus runs with."""
    check = host.run("promtool check config %s", "/etc/prometheus/prometheus.yml")
    observe("promtool check config exit status", check.rc, 0)
    assert check.rc == 0, (
        "/etc/prometheus/prometheus.yml: expected valid (promtool check config), found: "
        f"{(check.stdout + check.stderr).strip()[-300:]}"
    )


def test_rule_file_is_the_rendered_one(host: Any, hearth_vars: dict[str, Any]) -> None:
    """The alert rule file on the host is, as data, the one Hearth renders from the declared
    state (its sha256 compared with the rendered rules' sha256)."""
    wanted = _rendered(hearth_vars)
    found_file = host.file(RULES_FILE)
    observe(f"{RULES_FILE} sha256", found_file.sha256sum if found_file.is_file else "absent")
    assert found_file.is_file, f"{RULES_FILE}: expected Hearth's alert rules, found nothing"
    found = yaml.safe_load(found_file.content_string) or {}
    expected, digest = rules_digest(wanted), rules_digest(found)
    observe(f"{RULES_FILE} sha256 of the rules (as data)", digest, expected)
    assert digest == expected, (
        f"{RULES_FILE}: expected the rules Hearth renders (sha256 {expected[:12]}…), found "
        f"sha256 {digest[:12]}…, edited by hand: {'; '.join(rules_drift(wanted, found))}"
    )


def test_rules_loaded(host: Any, hearth_vars: dict[str, Any]) -> None:
    """Prometheus has loaded exactly Hearth's alert rules (names, durations and expressions) and
    none fails to evaluate."""
    wanted = _rendered(hearth_vars)
    expected = {r["alert"]: r for g in wanted["groups"] for r in g["rules"]}
    groups = _api(host, hearth_vars, "/api/v1/rules")["groups"]
    loaded = {r["name"]: r for g in groups for r in g["rules"] if r.get("type") == "alerting"}
    observe("alert rules loaded", len(loaded), len(expected))
    missing = sorted(set(expected) - set(loaded))
    assert not missing, f"alert rules: expected {len(expected)} loaded, missing {missing}"
    drift = {}
    for name, rule in expected.items():
        seconds = monitoring.duration_seconds(rule.get("for", "0s"))
        if seconds != int(loaded[name].get("duration", 0)):
            drift[name] = f"expected for {rule.get('for', '0s')}, found {loaded[name]['duration']}s"
        elif _tokens(rule["expr"]) != _tokens(loaded[name]["query"]):
            drift[name] = "expected Hearth's expression, found another one loaded"
    assert not drift, f"alert rules loaded by Prometheus drifted (not reloaded?): {drift}"
    broken = {n: r.get("lastError") for n, r in loaded.items() if r.get("health") == "err"}
    assert not broken, f"alert rules failing to evaluate: {broken}"


_PROM_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def _duration_s(text: str) -> float:
    """A Prometheus duration (``15s``, ``1m30s``) in seconds."""
    return sum(int(n) * _UNIT_S[unit] for n, unit in _PROM_DURATION.findall(str(text)))


def _active_targets(host: Any, hearth_vars: dict[str, Any]) -> list[dict[str, Any]]:
    """The active targets, once each has been scraped at least once.

    A target Prometheus has not scraped yet (just after a restart) has health ``unknown``: that
    proves neither up nor down, so wait for its first scrape, at most one scrape interval and a
    margin. One still ``unknown`` after that is reported as such (never scraped is not up)."""
    wait_s = _duration_s(hearth_vars.get("prometheus_scrape_interval") or "15s") + 10
    deadline = time.monotonic() + wait_s
    while True:
        active: list[dict[str, Any]] = _api(host, hearth_vars, "/api/v1/targets?state=active")[
            "activeTargets"
        ]
        if time.monotonic() >= deadline or all(t.get("health") != "unknown" for t in active):
            return active
        time.sleep(1)


def _health(target: dict[str, Any]) -> str:
    health = str(target.get("health"))
    return "never scraped (health unknown)" if health == "unknown" else health


def test_targets_up(host: Any, hearth_vars: dict[str, Any]) -> None:
    """Prometheus scrapes node_exporter and every one of its active targets is up."""
    active = _active_targets(host, hearth_vars)
    observe("scrape targets", sorted(
        f"{t['labels'].get('job')}@{t['labels'].get('host')}: {t.get('health')}" for t in active
    ))  # fmt: skip
    jobs = {t["labels"].get("job") for t in active}
    assert "node" in jobs, (
        f"scrape targets: expected node_exporter targets, found jobs {sorted(jobs)}"
    )
    down = [
        f"{t['labels'].get('job')}@{t['labels'].get('host')} ({t.get('scrapeUrl')}): "
        f"{t.get('lastError') or _health(t)}"
        for t in active
        if t.get("health") != "up"
    ]
    assert not down, f"scrape targets: expected all {len(active)} up, found down: {down}"


def test_alertmanager_connected(host: Any, hearth_vars: dict[str, Any]) -> None:
    """Prometheus sends alerts to at least one Alertmanager, and each one it lists is ready."""
    found = _api(host, hearth_vars, "/api/v1/alertmanagers")
    active = [a["url"] for a in found.get("activeAlertmanagers", [])]
    observe("Alertmanagers", active)
    assert active, "Prometheus: expected an Alertmanager to send alerts to, found none"
    silent = []
    for url in active:  # http://host:9093/api/v2/alerts: the same Alertmanager's readiness
        ready = url.split("/api/", 1)[0] + "/-/ready"
        if web_tls(hearth_vars):  # the certificate is checked by Prometheus itself
            user = str(hearth_vars.get("monitoring_web_user") or "hearth")
            status, body = http_get(host, ready, loopback_tls=True, auth=(user, WEB_PASSWORD_FILE))
        else:
            status, body = http_get(host, ready)
        if status != 200:
            silent.append(f"{ready}: {status or body.strip()[-120:]}")
    assert not silent, (
        f"Prometheus's Alertmanager(s): expected ready to receive alerts, found not answering: "
        f"{silent}"
    )


def test_admin_api_only_on_loopback(host: Any) -> None:
    """No unauthenticated admin API (snapshots, series deletion) is reachable from the network:
    the API is off, or Prometheus listens on loopback only."""
    flags = host.file("/etc/default/prometheus").content_string
    observe("admin API enabled", "--web.enable-admin-api" in flags)
    if "--web.enable-admin-api" not in flags:
        return  # off: nothing to reach
    listen = next(
        (f.split("=", 1)[1] for f in flags.replace('"', " ").split()
         if f.startswith("--web.listen-address=")),
        "",
    )  # fmt: skip
    assert listen.startswith(("127.0.0.1:", "[::1]:", "localhost:")), (
        f"Prometheus' admin API: expected on loopback only, found it listening on {listen}"
    )


def test_serves_tls_and_refuses_anonymous(host: Any, hearth_vars: dict[str, Any]) -> None:
    """With monitoring_tls: Prometheus serves the deployed certificate and refuses a request
    without credentials; its scrape password file is root:prometheus 0640."""
    assert_web_tls(host, hearth_vars, hearth_vars["prometheus_port"], "/api/v1/targets")
    secret = host.file(WEB_PASSWORD_FILE)
    found = (secret.user, secret.group, oct(secret.mode)) if secret.exists else None
    observe(WEB_PASSWORD_FILE, found, ("root", "prometheus", "0o640"))
    assert found == ("root", "prometheus", "0o640"), (
        f"{WEB_PASSWORD_FILE}: expected root:prometheus mode 0640, found {found}"
    )
