"""testinfra checks of the `alertmanager` role, run by `hearth audit` on the monitoring hosts.

``hearth_vars`` is the host's declared state (inventory over role defaults); receivers' URLs and
passwords are not in it (their spec marks them no_log), and nothing here prints them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from hearth import monitoring

SERVICE = "prometheus-alertmanager"
CONFIG = "/etc/prometheus/alertmanager.yml"
VARS = Path(__file__).resolve().parent.parent / "vars"
FETCH = monitoring.FETCH_COMMAND


def _pinned(host: Any, declared: str) -> str:
    if declared:
        return declared
    info = host.system_info
    name = f"{str(info.distribution).capitalize()}-{str(info.release).split('.')[0]}.yml"
    if (VARS / name).is_file():
        return str(yaml.safe_load((VARS / name).read_text()).get("_alertmanager_pinned_version"))
    return ""


def _api(host: Any, port: int, path: str) -> Any:
    done = host.run(FETCH, f"http://127.0.0.1:{port}{path}")
    assert done.rc == 0, (
        f"Alertmanager API {path}: expected an answer, found rc={done.rc} "
        f"{done.stderr.strip()[-200:]}"
    )
    return json.loads(done.stdout)


def test_package_pinned_and_held(host: Any, hearth_vars: dict[str, Any]) -> None:
    package = host.package(SERVICE)
    assert package.is_installed, f"{SERVICE}: expected installed, found absent"
    wanted = _pinned(host, hearth_vars["alertmanager_version"])
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
    port = hearth_vars["alertmanager_port"]
    ready = host.run(FETCH, f"http://127.0.0.1:{port}/-/ready")
    assert ready.rc == 0, f"Alertmanager on port {port}: expected /-/ready, found rc={ready.rc}"


def test_config_valid_and_private(host: Any) -> None:
    check = host.run("amtool check-config %s", CONFIG)
    assert check.rc == 0, (
        f"{CONFIG}: expected valid (amtool check-config), found: {check.stdout.strip()[-300:]}"
    )
    config = host.file(CONFIG)
    found = (config.user, config.group, oct(config.mode))
    assert found == ("root", "prometheus", "0o640"), (
        f"{CONFIG} holds receivers' secrets: expected root:prometheus mode 0640, "
        f"found {found[0]}:{found[1]} mode {found[2]}"
    )


def test_receivers_loaded(host: Any, hearth_vars: dict[str, Any]) -> None:
    status = _api(host, hearth_vars["alertmanager_port"], "/api/v2/status")
    loaded = yaml.safe_load(status["config"]["original"])  # Alertmanager masks secrets here
    names = sorted(r["name"] for r in loaded.get("receivers", []))
    wanted = sorted(["hearth-null"] + [r["name"] for r in hearth_vars["alertmanager_receivers"]])
    assert names == wanted, (
        f"Alertmanager receivers: expected {wanted}, found {names} (not reloaded?)"
    )
