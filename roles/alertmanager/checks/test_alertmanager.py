"""testinfra checks of the `alertmanager` role, run by `hearth audit` on the monitoring hosts.

``hearth_vars`` is the host's declared state (inventory over role defaults); receivers' URLs and
passwords are not in it (their spec marks them no_log), and nothing here prints them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from hearth.checklib import (
    assert_package_pinned_and_held,
    assert_service_running,
    assert_web_tls,
    observe,
    observe_listeners,
    pinned_version,
    web_get,
)

SERVICE = "prometheus-alertmanager"
CONFIG = "/etc/prometheus/alertmanager.yml"
VARS = Path(__file__).resolve().parent.parent / "vars"


def test_package_pinned_and_held(host: Any, hearth_vars: dict[str, Any]) -> None:
    """Alertmanager's package is installed at the pinned version and held."""
    wanted = pinned_version(
        host, hearth_vars["alertmanager_version"], VARS, "_alertmanager_pinned_version"
    )
    assert_package_pinned_and_held(host, SERVICE, wanted)


def test_service_ready(host: Any, hearth_vars: dict[str, Any]) -> None:
    """Alertmanager runs, starts at boot and answers /-/ready on its declared port."""
    assert_service_running(host, SERVICE)
    port = hearth_vars["alertmanager_port"]
    observe_listeners(host, port)
    status, _ = web_get(host, hearth_vars, port, "/-/ready")
    assert status == 200, f"Alertmanager on port {port}: expected /-/ready, found status {status}"


def test_config_valid_and_private(host: Any) -> None:
    """amtool accepts the configuration, and the file (it holds receivers' secrets) is
    root:prometheus, mode 0640."""
    check = host.run("amtool check-config %s", CONFIG)
    assert check.rc == 0, (
        f"{CONFIG}: expected valid (amtool check-config), found: {check.stdout.strip()[-300:]}"
    )
    config = host.file(CONFIG)
    found = (config.user, config.group, oct(config.mode))
    observe(CONFIG, f"{found[0]}:{found[1]} {found[2]}", "root:prometheus 0o640")
    assert found == ("root", "prometheus", "0o640"), (
        f"{CONFIG} holds receivers' secrets: expected root:prometheus mode 0640, "
        f"found {found[0]}:{found[1]} mode {found[2]}"
    )


def test_receivers_loaded(host: Any, hearth_vars: dict[str, Any]) -> None:
    """Alertmanager has loaded exactly the declared receivers."""
    port = hearth_vars["alertmanager_port"]
    code, body = web_get(host, hearth_vars, port, "/api/v2/status")
    assert code == 200, f"Alertmanager API /api/v2/status: expected an answer, found {code}"
    status = json.loads(body)
    loaded = yaml.safe_load(status["config"]["original"])  # Alertmanager masks secrets here
    names = sorted(r["name"] for r in loaded.get("receivers", []))
    wanted = sorted(["hearth-null"] + [r["name"] for r in hearth_vars["alertmanager_receivers"]])
    observe("receivers loaded", names, wanted)
    assert names == wanted, (
        f"Alertmanager receivers: expected {wanted}, found {names} (not reloaded?)"
    )


def test_serves_tls_and_refuses_anonymous(host: Any, hearth_vars: dict[str, Any]) -> None:
    """With monitoring_tls: Alertmanager serves the deployed certificate and refuses a request
    without credentials."""
    assert_web_tls(host, hearth_vars, hearth_vars["alertmanager_port"], "/api/v2/status")
