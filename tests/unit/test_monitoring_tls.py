"""monitoring_tls without hosts: the bcrypt hash (stable, verifying, checked by promtool), the
web configuration and Prometheus's scrape settings (checked by promtool), Grafana's datasource,
the certificates `hearth tls init` issues for the monitoring layer, and the preflight rule
(missing password, not issued, wrong SAN, key mismatch, another CA)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from hearth import paths, tls
from hearth.monitoring import grafana_datasource, webauth
from hearth.monitoring.scrape import InventoryHost, prometheus_config
from hearth.rules import HostView, monitoring_tls

PROMTOOL = shutil.which("promtool")
COLLECTIONS = paths.collections_dir()  # the real one, before HEARTH_HOME moves to tmp below
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


def test_monitoring_tls_is_on_unless_declared_off() -> None:
    """Closed by default: without web_tls, Prometheus's own jobs and its Alertmanager entry use
    HTTPS and basic auth; web_tls=False (monitoring_tls: false declared) is plain HTTP."""
    jobs = {c["job_name"]: c for c in _config()["scrape_configs"]}
    assert all(jobs[name]["scheme"] == "https" for name in webauth.TLS_JOBS)
    (alerting,) = _config()["alerting"]["alertmanagers"]
    assert alerting["scheme"] == "https" and "basic_auth" in alerting


def test_with_monitoring_tls_false_nothing_changes() -> None:
    config = _config(web_tls=False)
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


def test_tls_init_issues_for_the_monitoring_layer_unless_switched_off() -> None:
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
    default = {h: {"ansible_host": f"10.0.0.{i}"} for i, h in enumerate(roles)}
    assert tls.hosts_to_issue(roles, default) == tls.hosts_to_issue(roles, on)  # on by default
    off = {h: {"monitoring_tls": False, **v} for h, v in default.items()}
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


def test_rule_left_at_its_default_says_the_three_ways_on(home: Path) -> None:
    """monitoring_tls not declared, no certificate, no password: one finding naming the host and
    what to do (tls init with a vault password, the password by hand, or false declared)."""
    view = HostView("mon1", {"hearth_site": "s1", "ansible_host": "10.0.0.3"},
                    frozenset({"node_exporter"}))  # fmt: skip
    (found,) = _found(view)
    assert found.startswith("host mon1: monitoring_tls is on by default"), found
    assert "no certificate for mon1" in found and "no monitoring_web_password" in found
    for way in ("`hearth tls init -i INVENTORY --vault-password-file FILE`",
                "add monitoring_web_password", "declare monitoring_tls: false"):  # fmt: skip
        assert way in found, (way, found)
    declared_off = HostView("mon1", {**view.vars, "monitoring_tls": False}, view.roles)
    assert _found(declared_off) == []
    # the certificates issued but no password: the password is what is named
    tls.init_site(home, "s1", {"mon1": ["10.0.0.3"]})
    (found,) = _found(view)
    assert "monitoring_web_password: required with monitoring_tls" in found, found
    assert "declare monitoring_tls: false" in found


def test_rule_refuses_a_key_of_another_certificate_and_another_ca(home: Path) -> None:
    tls.init_site(home, "s1", {"mon1": ["10.0.0.3"]})
    other = tls.init_site(home.parent / "other", "other", {"mon1": ["10.0.0.3"]})[0]
    shutil.copy(other.key, home / "hosts" / "mon1.key")
    assert any("the key does not match the certificate" in f for f in _found(_view()))
    shutil.copy(other.cert, home / "hosts" / "mon1.crt")
    assert any("not issued by the given CA" in f for f in _found(_view()))


# ------------------------------------------------------- `hearth tls init` and the password
def _hearth(*args: str) -> tuple[int, str]:
    from hearth import cli

    with pytest.raises(SystemExit) as done:
        cli.main(list(args))
    code = done.value.code
    return (code if isinstance(code, int) else 1), ""


def _flat(text: str) -> str:
    return "".join(text.split())


def test_tls_init_writes_a_random_password_into_the_vault_and_check_then_passes(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """An inventory left at the default (monitoring_tls on) with no password: `hearth check`
    refuses it (exit 2) saying the three ways; `hearth tls init` without a vault password issues
    the certificates and says the password is missing; with one, it writes a random password into
    group_vars/all/monitoring_web_password.yml (ciphertext only, 0600, printed nowhere), and
    `hearth check` passes. A second run keeps the password."""
    from ansible.parsing.vault import VaultLib, VaultSecret

    from hearth import webpassword

    monkeypatch.setenv("COLUMNS", "400")
    inventory = tmp_path / "site" / "hosts.yml"
    (inventory.parent / "group_vars" / "all").mkdir(parents=True)
    (inventory.parent / "group_vars" / "all" / "site.yml").write_text("hearth_site: s1\n")
    inventory.write_text(
        "all:\n  children:\n    monitoring:\n      hosts:\n"
        "        mon1: {ansible_host: 127.0.0.1, ansible_port: 1}\n"
    )
    vault = tmp_path / "vault-password"
    vault.write_text("a vault password\n")

    assert _hearth("check", "-i", str(inventory))[0] == 2
    said = _flat(capsys.readouterr().err)  # the console wraps lines, even inside a path
    assert _flat("host mon1: monitoring_tls is on by default") in said, said
    assert _flat("declare monitoring_tls: false") in said and "--vault-password-fileFILE" in said

    assert _hearth("tls", "init", "-i", str(inventory))[0] == 0
    out = capsys.readouterr()
    assert "mon1:issued" in _flat(out.out) and "nomonitoring_web_password" in _flat(out.err), out
    target = inventory.parent / webpassword.FILE
    assert not target.exists()
    assert _hearth("check", "-i", str(inventory))[0] == 2
    said = _flat(capsys.readouterr().err)
    assert _flat("monitoring_web_password: required with monitoring_tls") in said, said

    code = _hearth("tls", "init", "-i", str(inventory), "--vault-password-file", str(vault))[0]
    out = capsys.readouterr()
    assert code == 0 and f"writtento{target}" in _flat(out.out), out
    raw = target.read_bytes()
    assert raw.startswith(b"$ANSIBLE_VAULT;1.1;AES256") and target.stat().st_mode & 0o777 == 0o600
    secret = VaultSecret(b"a vault password")
    password = yaml.safe_load(VaultLib([("default", secret)]).decrypt(raw))[webpassword.VAR]
    assert isinstance(password, str) and len(password) >= webauth.MIN_PASSWORD_LENGTH
    assert password not in _flat(out.out + out.err)

    # a new process: Ansible caches the group_vars it has read for the life of this one (and
    # `hearth check`'s syntax check needs the collections under the temporary HEARTH_HOME)
    paths.collections_dir().symlink_to(COLLECTIONS, target_is_directory=True)
    for args in (("check",), ("tls", "init")):
        done = subprocess.run(
            [sys.executable, "-m", "hearth", *args, "-i", str(inventory),
             "--vault-password-file", str(vault)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
    assert "mon1:kept" in _flat(done.stdout) and "written" not in _flat(done.stdout), done.stdout
    assert target.read_bytes() == raw


def test_the_password_file_is_never_overwritten(tmp_path: Path) -> None:
    from hearth import webpassword
    from hearth.errors import InvalidInputError

    vault = tmp_path / "vault-password"
    vault.write_text("a vault password\n")
    target = tmp_path / webpassword.FILE
    target.parent.mkdir(parents=True)
    target.write_text("# the operator's own\n")
    with pytest.raises(InvalidInputError, match="exists, yet the inventory declares no"):
        webpassword.write_password(tmp_path / "hosts.yml", vault)
    assert target.read_text() == "# the operator's own\n"
