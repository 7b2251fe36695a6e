"""testinfra checks of the `node_exporter` role, run by `hearth audit` on every host.

``hearth_vars`` is the host's declared state (inventory over role defaults).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

SERVICE = "prometheus-node-exporter"
VARS = Path(__file__).resolve().parent.parent / "vars"


def _pinned(host: Any, declared: str) -> str:
    """The version the role installs: the inventory's, else this release's pin for the OS."""
    if declared:
        return declared
    info = host.system_info
    name = f"{str(info.distribution).capitalize()}-{str(info.release).split('.')[0]}.yml"
    if (VARS / name).is_file():
        return str(yaml.safe_load((VARS / name).read_text()).get("_node_exporter_pinned_version"))
    return ""


def test_package_pinned_and_held(host: Any, hearth_vars: dict[str, Any]) -> None:
    package = host.package(SERVICE)
    assert package.is_installed, f"{SERVICE}: expected installed, found absent"
    wanted = _pinned(host, hearth_vars["node_exporter_version"])
    if wanted:
        assert package.version == wanted, (
            f"{SERVICE}: expected version {wanted}, found {package.version}"
        )
    selection = host.check_output("dpkg --get-selections %s", SERVICE).split()[-1]
    assert selection == "hold", f"{SERVICE}: expected held at its version, found '{selection}'"


def test_service_answers(host: Any, hearth_vars: dict[str, Any]) -> None:
    service = host.service(SERVICE)
    assert service.is_running, f"{SERVICE}: expected running, found stopped"
    assert service.is_enabled, f"{SERVICE}: expected enabled at boot, found disabled"
    port = hearth_vars["node_exporter_port"]
    metrics = host.run("curl -fsS --max-time 5 http://127.0.0.1:%s/metrics", str(port))
    assert metrics.rc == 0, (
        f"node_exporter on port {port}: expected /metrics, found rc={metrics.rc}"
    )
    assert "node_textfile_scrape_error 0" in metrics.stdout, (
        "node_exporter's textfile collector: expected node_textfile_scrape_error 0, found "
        + next(
            (line for line in metrics.stdout.splitlines() if "textfile_scrape_error" in line),
            "no textfile collector",
        )
    )


def test_textfile_directory(host: Any, hearth_vars: dict[str, Any]) -> None:
    path, group = (
        hearth_vars["node_exporter_textfile_dir"],
        hearth_vars["node_exporter_textfile_group"],
    )
    d = host.file(path)
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
