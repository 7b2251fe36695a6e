"""testinfra checks of the `inference_engine` role, run by `hearth audit` on every inference host.

``hearth_vars`` is the host's declared state (inventory over role defaults). For every declared
model: its engine's container runs the declared version from the declared image, restarts unless
stopped, as a non-root user, with the model's version directory mounted read-only; the engine
answers its health check and its metrics endpoint; and the model is recorded as live for the
container that runs now.
"""

from __future__ import annotations

import json
from typing import Any

from hearth.checklib import docker_inspect, http_get, models_or_skip

METRIC_PREFIX = {"llamacpp": "llamacpp:", "triton": "nv_inference_", "vllm": "vllm:"}


def _address(hearth_vars: dict[str, Any]) -> str:
    bind = str(hearth_vars.get("inference_engine_bind_address") or "0.0.0.0")  # noqa: S104
    return "127.0.0.1" if bind in ("0.0.0.0", "::") else bind  # noqa: S104


def _ports(hearth_vars: dict[str, Any], models: list[Any]) -> dict[str, int]:
    from hearth.engines import host_ports

    return host_ports(models, hearth_vars.get("inference_engine_ports") or {})


def test_engine_containers_run_the_declared_version(host: Any, hearth_vars: dict[str, Any]) -> None:
    """Each declared model's engine container runs, with the declared version (its label) and
    the declared restart policy."""
    from hearth.engines import container_name

    wrong = {}
    policy = hearth_vars["inference_engine_restart_policy"]
    for model in models_or_skip(hearth_vars):
        data = docker_inspect(host, container_name(model))
        if data is None:
            wrong[model.name] = f"expected container {container_name(model)}, found none"
            continue
        labels = data["Config"].get("Labels") or {}
        found = {
            "running": data["State"]["Running"],
            "version": labels.get("io.hearth.version"),
            "restart": data["HostConfig"]["RestartPolicy"]["Name"],
        }
        expected = {"running": True, "version": model.version, "restart": policy}
        if found != expected:
            wrong[model.name] = f"expected {expected}, found {found}"
    assert not wrong, f"engine containers: {wrong}"


def test_engines_run_as_non_root(host: Any, hearth_vars: dict[str, Any]) -> None:
    """No engine container runs as root (vLLM's upstream image excepted when no user is declared
    for it)."""
    from hearth.engines import container_name

    root = []
    for model in models_or_skip(hearth_vars):
        if model.engine == "vllm" and not hearth_vars.get("inference_engine_vllm_user"):
            continue  # the upstream vLLM image's own user, as declared
        data = docker_inspect(host, container_name(model))
        user = (data or {}).get("Config", {}).get("User") or "root"
        if user.split(":")[0] in ("", "0", "root"):
            root.append(f"{model.name}: expected a non-root user, found {user!r}")
    assert not root, "; ".join(root)


def test_model_directory_mounted_read_only(host: Any, hearth_vars: dict[str, Any]) -> None:
    """Each engine sees its model's declared version directory from the store, mounted read-
    only: the engine cannot alter the weights it serves."""
    from hearth.engines import container_name

    store = hearth_vars["model_store_dir"]
    bad = []
    for model in models_or_skip(hearth_vars):
        data = docker_inspect(host, container_name(model)) or {}
        source = f"{store}/{model.name}/{model.version}"
        mounts = [m for m in data.get("Mounts") or [] if m.get("Source") == source]
        if not mounts:
            bad.append(f"{model.name}: expected {source} mounted, found no such mount")
        elif any(m.get("RW") for m in mounts):
            bad.append(f"{model.name}: expected {source} mounted read-only, found it writable")
    assert not bad, "; ".join(bad)


def test_engines_answer_their_health_check(host: Any, hearth_vars: dict[str, Any]) -> None:
    """Each engine answers its health path with 200 on the model's own port."""
    from hearth.engines import health_path

    models = models_or_skip(hearth_vars)
    ports = _ports(hearth_vars, models)
    bad = []
    for model in models:
        url = f"http://{_address(hearth_vars)}:{ports[model.name]}{health_path(model)}"
        status, body = http_get(host, url)
        if status != 200:
            bad.append(f"{model.name}: {url}: expected 200, found {status} {body.strip()[:100]}")
    assert not bad, "; ".join(bad)


def test_engine_metrics_are_up(host: Any, hearth_vars: dict[str, Any]) -> None:
    """Each engine serves its Prometheus metrics (the engine's own metric names) where
    Prometheus scrapes them."""
    from hearth.engines import METRICS_OFFSET

    models = models_or_skip(hearth_vars)
    ports = _ports(hearth_vars, models)
    bad = []
    for model in models:
        url = f"http://{_address(hearth_vars)}:{ports[model.name] + METRICS_OFFSET[model.engine]}"
        status, body = http_get(host, f"{url}/metrics")
        prefix = METRIC_PREFIX[model.engine]
        if status != 200 or prefix not in body:
            bad.append(f"{model.name}: {url}/metrics: expected 200 with {prefix}*, found {status}")
    assert not bad, "; ".join(bad)


def test_models_are_recorded_live(host: Any, hearth_vars: dict[str, Any]) -> None:
    """Each model's live record names the declared version and the container that runs now (the
    record a rollout writes after its gates)."""
    from hearth.engines import container_name

    live = hearth_vars["inference_engine_live_dir"]
    bad = []
    for model in models_or_skip(hearth_vars):
        record = host.file(f"{live}/{model.name}.json")
        if not record.is_file:
            bad.append(f"{record.path}: expected the live record, found nothing")
            continue
        data = json.loads(record.content_string)
        running = (docker_inspect(host, container_name(model)) or {}).get("Id")
        found = (data.get("version"), data.get("container_id"))
        if found != (model.version, running):
            bad.append(
                f"{record.path}: expected version {model.version} of container {running}, "
                f"found {found}"
            )
    assert not bad, "; ".join(bad)


def test_engines_serve_the_verified_files(host: Any, hearth_vars: dict[str, Any]) -> None:
    """Each engine serves the model files that are in the store now: no model file its process
    has mapped was deleted or replaced since it started (an engine keeps serving a replaced
    file from memory until it is restarted: the store would then verify one file while the
    engine answers from another)."""
    from hearth.engines import container_name, model_dir

    bad = []
    for model in models_or_skip(hearth_vars):
        data = docker_inspect(host, container_name(model)) or {}
        pid = (data.get("State") or {}).get("Pid") or 0
        if not pid:
            continue  # not running: the containers check says so
        inside = model_dir(model)
        maps = host.run("cat /proc/%s/maps", str(pid))
        if maps.rc != 0:
            bad.append(f"{model.name}: cannot read the engine's memory map (pid {pid})")
            continue
        stale = sorted(
            {
                line.split(None, 5)[-1]
                for line in maps.stdout.splitlines()
                if inside in line and line.endswith("(deleted)")
            }
        )
        if stale:
            bad.append(
                f"{model.name}: the engine serves a deleted or replaced file: {', '.join(stale)}; "
                "roll it out again (hearth up) so it loads the verified files"
            )
    assert not bad, "; ".join(bad)
