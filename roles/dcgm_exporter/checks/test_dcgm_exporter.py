"""testinfra checks of the `dcgm_exporter` role, run by `hearth audit` on the GPU hosts.

Hosts without an NVIDIA device skip every check, with the reason (the role skips them too).
"""

from __future__ import annotations

from typing import Any

import pytest

from hearth.checklib import http_get, nvidia_device


def _need_exporter(host: Any, hearth_vars: dict[str, Any]) -> None:
    if not hearth_vars["dcgm_exporter_enabled"]:
        pytest.skip("dcgm_exporter_enabled is false")
    if nvidia_device(host) is None:
        pytest.skip("no NVIDIA device on this host: the DCGM exporter runs only where a GPU exists")


def test_exporter_running(host: Any, hearth_vars: dict[str, Any]) -> None:
    """The DCGM exporter container runs on a host with an NVIDIA GPU."""
    _need_exporter(host, hearth_vars)
    state = host.run(
        "docker inspect --format '{{.State.Status}} {{.Config.Image}}' hearth-dcgm-exporter"
    )
    assert state.rc == 0, "hearth-dcgm-exporter: expected a container, found none"
    status, image = [*state.stdout.split(), "", ""][:2]
    assert status == "running", f"hearth-dcgm-exporter: expected running, found {status}"
    assert image == hearth_vars["dcgm_exporter_image"], (
        f"hearth-dcgm-exporter: expected image {hearth_vars['dcgm_exporter_image']}, found {image}"
    )


def test_exporter_reports_gpus(host: Any, hearth_vars: dict[str, Any]) -> None:
    """The DCGM exporter's metrics report the host's GPUs."""
    _need_exporter(host, hearth_vars)
    port = hearth_vars["dcgm_exporter_port"]
    status, metrics = http_get(host, f"http://127.0.0.1:{port}/metrics")
    assert status == 200, f"DCGM exporter on port {port}: expected /metrics, found status {status}"
    for field in ("DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_XID_ERRORS", "DCGM_FI_DEV_FB_USED"):
        assert f"\n{field}{{" in metrics, f"DCGM exporter: expected {field} series, found none"
