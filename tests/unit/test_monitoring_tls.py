"""monitoring_tls without hosts: the bcrypt hash (stable, verifying, checked by promtool), the
web configuration and Prometheus's scrape settings (checked by promtool), Grafana's datasource,
the certificates `hearth tls init` issues for the monitoring layer, and the preflight rule
(missing password, not issued, wrong SAN, key mismatch, another CA)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from hearth import tls
from hearth.monitoring import grafana_datasource, webauth
from hearth.monitoring.scrape import InventoryHost, prometheus_config
from hearth.rules import HostView, monitoring_tls

PROMTOOL = shutil.which("promtool")
PASSWORD = "a-scrape-password-of-some-length"


def test_the_hash_is_stable_verifies_and_depends_on_host_and_password() -> None:
    first = webauth.bcrypt_hash(PASSWORD, "lab1")
    assert first == webauth.bcrypt_hash(PASSWORD, "lab1")  # a second run writes the same file
    assert first.startswith(f"$2b${webauth.BCRYPT_COST}$")
    assert webauth.password_verifies(PASSWORD, first)
    assert not webauth.password_verifies(PASSWORD + "x", first)
    assert webauth.bcrypt_hash(PASSWORD, "lab2") != first  # another salt per host
    assert webauth.bcrypt_hash(PASSWORD + "x", "lab1")[:29] != first[:29]  # and per password
    with pytest.raises(ValueError, match="monitoring_web_password is empty"):
        webauth.bcrypt_hash("", "lab1")


def test_web_config_holds_the_hash_not_the_password() -> None:
    config = webauth.web_config(PASSWORD, "lab1", "hearth")
    assert config["tls_server_config"] == {
        "cert_file": "/etc/prometheus/web/tls.crt",
        "key_file": "/etc/prometheus/web/tls.key",
    }
    assert list(config["basic_auth_users"]) == ["hearth"]
    assert PASSWORD not in yaml.safe_dump(config)


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")
def test_promtool_accepts_the_web_config(tmp_path: Path) -> None:
    (one,) = tls.init_site(tmp_path / "ca", "t", {"lab1": ["127.0.0.1"]})
    config = webauth.web_config(PASSWORD, "lab1")
    config["tls_server_config"] = {"cert_file": str(one.cert), "key_file": str(one.key)}
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [str(PROMTOOL), "check", "web-config", str(path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _hosts() -> list[InventoryHost]:
    model = {"name": "smollm2", "version": "1", "engine": "llamacpp"}
    return [
        InventoryHost("lab1", "10.0.0.1", ("gpu_nodes", "inference"), (model,)),
        InventoryHost("lab3", "10.0.0.3", ("monitoring",)),
    ]


def _config(**options: Any) -> dict[str, Any]:
    return prometheus_config(
        _hosts(), scrape_interval="15s", evaluation_interval="15s", rule_files=[], **options
    )


def test_scrape_jobs_of_the_web_config_use_https_and_basic_auth() -> None:
    jobs = {c["job_name"]: c for c in _config(web_tls=True, web_user="scraper")["scrape_configs"]}
    for name in ("prometheus", "alertmanager", "node"):
        assert jobs[name]["scheme"] == "https", name
        assert jobs[name]["tls_config"] == {"ca_file": "/etc/prometheus/web/ca.crt"}, name
        assert jobs[name]["basic_auth"] == {
            "username": "scraper",
            "password_file": "/etc/prometheus/scrape-password",
        }
    assert "scheme" not in jobs["engine-llamacpp"] and "basic_auth" not in jobs["engine-llamacpp"]
    (alerting,) = _config(web_tls=True)["alerting"]["alertmanagers"]
    assert alerting["scheme"] == "https" and alerting["basic_auth"]["username"] == "hearth"


def test_without_monitoring_tls_nothing_changes() -> None:
    config = _config()
    assert not any("scheme" in c or "basic_auth" in c for c in config["scrape_configs"])
    plain = [{"static_configs": [{"targets": ["10.0.0.3:9093"]}]}]
    assert config["alerting"]["alertmanagers"] == plain


def test_prometheus_on_loopback_checks_its_certificate_under_its_host_name() -> None:
    jobs = {
        c["job_name"]: c
        for c in _config(web_tls=True, prometheus_listen_address="127.0.0.1")["scrape_configs"]
    }
    assert jobs["prometheus"]["tls_config"]["server_name"] == "lab3"
    assert "server_name" not in jobs["node"]["tls_config"]


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")
def test_promtool_accepts_the_scrape_config(tmp_path: Path) -> None:
    config = _config(web_tls=True)
    text = yaml.safe_dump(config).replace("/etc/prometheus/", f"{tmp_path}/")
    (tmp_path / "web").mkdir()
    tls.init_site(tmp_path / "site", "t", {"lab3": ["10.0.0.3"]})
    shutil.copy(tmp_path / "site" / "ca.crt", tmp_path / "web" / "ca.crt")
    (tmp_path / "scrape-password").write_text(PASSWORD)
    path = tmp_path / "prometheus.yml"
    path.write_text(text)
    done = subprocess.run(
        [str(PROMTOOL), "check", "config", str(path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_grafana_logs_in_and_checks_the_certificate() -> None:
    plain = grafana_datasource("http://127.0.0.1:9090")["datasources"][0]
    assert "basicAuth" not in plain and "secureJsonData" not in plain
    source = grafana_datasource(
        "https://127.0.0.1:9090", user="hearth", password=PASSWORD, ca_pem="PEM", server_name="m1"
    )["datasources"][0]
    assert source["basicAuth"] is True and source["basicAuthUser"] == "hearth"
    assert source["secureJsonData"] == {"basicAuthPassword": PASSWORD, "tlsCACert": "PEM"}
    assert source["jsonData"]["tlsAuthWithCACert"] is True
    assert source["jsonData"]["serverName"] == "m1"


def test_tls_init_issues_for_the_monitoring_layer_only_when_switched_on() -> None:
    roles = {
        "gpu01": ["node_exporter", "front_door"],
        "node2": ["node_exporter"],
        "mon1": ["node_exporter", "prometheus", "alertmanager"],
        "odd": ["common"],
    }
    on = {h: {"monitoring_tls": True, "ansible_host": f"10.0.0.{i}"} for i, h in enumerate(roles)}
    assert tls.hosts_to_issue(roles, on) == {
        "gpu01": ["10.0.0.0"], "node2": ["10.0.0.1"], "mon1": ["10.0.0.2"]
    }  # fmt: skip
    off = {h: {"ansible_host": f"10.0.0.{i}"} for i, h in enumerate(roles)}
    assert tls.hosts_to_issue(roles, off) == {"gpu01": ["10.0.0.0"]}  # the front door only


# ------------------------------------------------------------------------------ the rule
@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HEARTH_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "tls" / "s1"


def _view(**variables: Any) -> HostView:
    base = {"hearth_site": "s1", "ansible_host": "10.0.0.3", "monitoring_tls": True,
            "monitoring_web_password": PASSWORD}  # fmt: skip
    return HostView("mon1", {**base, **variables}, frozenset({"prometheus"}))


def _found(view: HostView) -> list[str]:
    return [f.text("mon1") for f in monitoring_tls(view)]


def test_rule_passes_an_issued_certificate(home: Path) -> None:
    tls.init_site(home, "s1", {"mon1": ["10.0.0.3"]})
    assert _found(_view()) == []
    assert _found(_view(monitoring_tls=False, monitoring_web_password="")) == []


def test_rule_refuses_what_is_missing_or_wrong(home: Path) -> None:
    assert any("run `hearth tls init" in f for f in _found(_view()))
    tls.init_site(home, "s1", {"mon1": ["10.0.0.99"]})
    assert any("SAN does not cover '10.0.0.3'" in f for f in _found(_view()))
    found = _found(_view(monitoring_web_password=""))
    assert any("monitoring_web_password: required with monitoring_tls" in f for f in found)
    short = _found(_view(monitoring_web_password="short"))
    assert any("'***'" in f and "at least 16" in f for f in short) and "short" not in str(short)
    assert _found(_view(monitoring_tls="yes")) == [
        "host mon1: monitoring_tls = 'yes': expected true (HTTPS and basic auth) or false"
    ]


def test_rule_refuses_a_key_of_another_certificate_and_another_ca(home: Path) -> None:
    tls.init_site(home, "s1", {"mon1": ["10.0.0.3"]})
    other = tls.init_site(home.parent / "other", "other", {"mon1": ["10.0.0.3"]})[0]
    shutil.copy(other.key, home / "hosts" / "mon1.key")
    assert any("the key does not match the certificate" in f for f in _found(_view()))
    shutil.copy(other.cert, home / "hosts" / "mon1.crt")
    assert any("not issued by the given CA" in f for f in _found(_view()))
