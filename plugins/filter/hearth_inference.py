# -*- coding: utf-8 -*-
# Hearth: the inference layer's arithmetic as Jinja filters (engine ports, container specs, the
# Triton model configuration, the front door's routes).
#
# Filters run on the control node, where Hearth's Python package is installed with Ansible, so
# this file only adapts hearth.engines to Jinja: the rules have one implementation, shared with
# the audit's checks and the tests.
from __future__ import annotations

import json
import sys
from pathlib import Path

from ansible.errors import AnsibleFilterError

_PLUGIN_UTILS = str(Path(__file__).resolve().parents[1] / "plugin_utils")
if _PLUGIN_UTILS not in sys.path:
    sys.path.insert(0, _PLUGIN_UTILS)
from hearth_import import import_hearth  # the one "import hearth" helper (plugin_utils/)

DOCUMENTATION = r"""
name: hearth_engine_container
short_description: Everything docker_container needs to run one declared model's engine
description:
  - Runs C(hearth.engines.container_spec) on the control node and returns the container's
    name, image, command (checked against the engine's real options), published ports, read-only
    mounts of the model's version directory, environment, labels, health check, GPU requests, and
    the health path and warm-up request the role gates the start on.
  - Other filters in this file are C(hearth_engine_ports), C(hearth_engine_port_problems),
    C(hearth_engine_recipes), C(hearth_engine_image), C(hearth_image_tag),
    C(hearth_triton_config), C(hearth_frontdoor_routes), C(hearth_stale_engines),
    C(hearth_engine_candidate), C(hearth_kept_engine), C(hearth_engine_health) and
    C(hearth_env_file) (routing.json changes: the C(hearth_routing) action).
positional: _input
options:
  _input:
    description: One entry of C(hearth_models).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Run the engine
  vars:
    __spec: >-
      {{ model | hearth_engine_container(image=tag, port=8080,
         store_dir='/var/lib/hearth/models') }}
  community.docker.docker_container:
    name: "{{ __spec.name }}"
    image: "{{ __spec.image }}"
    command: "{{ __spec.command }}"
"""

RETURN = r"""
_value:
  description: The container's parameters and C(health_path), C(port), C(metrics_port), C(warmup).
  type: dict
"""


def _hearth():
    """Hearth's package with the modules these filters use (plugin_utils/hearth_import.py)."""
    return import_hearth("engines", "errors", "images", "models")


def _plain(value):
    """Ansible's tagged values (2.19 data tagging) as plain JSON data."""
    return json.loads(json.dumps(value, default=str))


def _unsafe(value):
    """The result is data, never a template (commands and bodies may hold braces)."""
    from ansible.utils.unsafe_proxy import wrap_var

    return wrap_var(value)


def _models(hearth, value):
    try:
        return hearth.models.parse_models(_plain(value or []))
    except hearth.errors.HearthError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def _ports(value):
    return {str(k): int(v) for k, v in _plain(value or {}).items()}


def hearth_engine_ports(models, overrides=None):
    """{model name: host port} for a host's declared models."""
    hearth = _hearth()
    return hearth.engines.host_ports(_models(hearth, models), _ports(overrides))


def hearth_engine_port_problems(models, overrides=None, reserved=None):
    """Ports two engines (or an engine and a reserved port) would share; [] when none."""
    hearth = _hearth()
    taken = {int(k): str(v) for k, v in _plain(reserved or {}).items()}
    return hearth.engines.port_problems(_models(hearth, models), _ports(overrides), taken)


def hearth_engine_recipes(models):
    """The locally built images a host's models need (llamacpp, triton), each once."""
    hearth = _hearth()
    found = []
    for model in _models(hearth, models):
        recipe = hearth.engines.ENGINE_RECIPES.get(model.engine)
        if recipe and recipe not in found:
            found.append(recipe)
    return found


def hearth_engine_image(model, vllm_image=""):
    """The image a model's engine runs: Hearth's recipe tag (llama.cpp, Triton), else the site's
    vLLM image."""
    hearth = _hearth()
    (spec,) = _models(hearth, [model])
    recipe = hearth.engines.ENGINE_RECIPES.get(spec.engine)
    if recipe is None:
        return str(vllm_image or "")
    return hearth.images.image_tag(recipe)


def hearth_image_tag(recipe):
    """The tag of one of Hearth's locally built images (llamacpp, triton, frontdoor)."""
    hearth = _hearth()
    try:
        return hearth.images.image_tag(str(recipe))
    except hearth.errors.HearthError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def hearth_engine_container(model, declared=None, **options):
    hearth = _hearth()
    (spec,) = _models(hearth, [model])
    options = _plain(options)
    if options.get("group_id") in ("", None):
        options["group_id"] = None
    else:
        options["group_id"] = int(options["group_id"])
    try:
        result = hearth.engines.container_spec(
            spec, declared=_models(hearth, declared or []), **options
        )
    except hearth.errors.HearthError as exc:
        raise AnsibleFilterError(str(exc)) from exc
    return _unsafe(result)


def hearth_triton_config(model):
    """The generated config.pbtxt of a Triton model."""
    hearth = _hearth()
    (spec,) = _models(hearth, [model])
    return _unsafe(hearth.engines.triton_config_text(spec))


def hearth_frontdoor_routes(
    inference_hosts,
    hostvars,
    local,
    ports_var="inference_engine_ports",
    bind_var="inference_engine_bind_address",
    overrides=None,
):
    """The front door's routes: every model declared on the inference hosts, with its engines."""
    hearth = _hearth()
    hosts = []
    for name in inference_hosts or []:
        hv = hostvars[name]
        hosts.append(
            hearth.engines.ServingHost(
                name=str(name),
                address=str(hv.get("ansible_host") or name),
                models=tuple(
                    _models(hearth, hearth_model_overrides(hv.get("hearth_models"), overrides))
                ),
                ports=_ports(hv.get(ports_var) or {}),
                bind_address=str(hv.get(bind_var) or "127.0.0.1"),  # the role's default
            )
        )
    try:
        return _unsafe(hearth.engines.frontdoor_routes(hosts, str(local)))
    except hearth.errors.HearthError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def hearth_engine_metrics_targets(models, overrides=None, bind_address="127.0.0.1"):
    """{model: metrics URL} of a host's engines as its own front door reaches them (on
    loopback by default), for the front door's relay of engine metrics."""
    hearth = _hearth()
    return _unsafe(
        hearth.engines.local_metrics_targets(
            _models(hearth, models), _ports(overrides), str(bind_address or "127.0.0.1")
        )
    )


def hearth_engine_candidate(spec):
    """The candidate slot of a live engine's container spec (a gated rollout's new version)."""
    return _unsafe(_hearth().engines.candidate_of(_plain(spec)))


def hearth_kept_engine(model, version):
    """The name a replaced version's engine container is kept under."""
    return _hearth().engines.kept_container_name(str(model), str(version))


def hearth_model_overrides(models, overrides=None):
    """C(models) with each model named in C(overrides) updated from it (`hearth models rollout`
    and `rollback` pass a kept version and its files this way)."""
    overrides = _plain(overrides or {})
    result = []
    for model in _plain(models or []):
        name = model.get("name") if isinstance(model, dict) else None
        result.append({**model, **overrides[name]} if name in overrides else model)
    return result


def hearth_kept_engine_of(version, model):
    """C(hearth_kept_engine) with the version first (for map over a list of versions)."""
    return hearth_kept_engine(model, version)


def hearth_soak_seconds(text):
    """The seconds of a canary soak (C(30m), C(2h), C(1d)), as hearth.models reads it."""
    try:
        return _hearth().models.soak_seconds(str(text))
    except ValueError as exc:
        raise AnsibleFilterError("canary_soak: %s" % exc) from exc


def hearth_gate_failure(entry):
    """One failed golden question of a gate's report, in words."""
    entry = _plain(entry or {})
    checks = ", ".join(entry.get("checks") or []) or entry.get("error") or "no answer"
    answer = str(entry.get("answer") or "")[:200]
    return f"question {entry.get('question')!r} failed ({checks}); the answer: {answer!r}"


def hearth_engine_health(models, overrides=None):
    """[{model, engine, container, port, path}]: where each of a host's declared engines
    answers its health check (the live slot)."""
    hearth = _hearth()
    specs = _models(hearth, models)
    ports = hearth.engines.host_ports(specs, _ports(overrides))
    return [
        {"model": m.name, "engine": m.engine, "container": hearth.engines.container_name(m),
         "port": ports[m.name], "path": hearth.engines.health_path(m)}
        for m in specs
    ]  # fmt: skip


def hearth_stale_engines(containers, models):
    """[{container, model}] of Hearth's engine containers (docker_host_info, verbose) whose model
    is not in C(models)."""
    declared = {str(m.get("name")) for m in _plain(models or [])}
    stale = []
    for container in _plain(containers or []):
        model = (container.get("Labels") or {}).get("io.hearth.model", "")
        if model not in declared:
            names = container.get("Names") or [container.get("Id", "")]
            stale.append({"container": str(names[0]).lstrip("/"), "model": model})
    return stale


def hearth_env_file(text):
    """KEY=VALUE lines (an environment file such as the cuda role's) as a mapping."""
    found = {}
    for line in str(text or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        found[key.strip()] = value.strip().strip('"')
    return found


class FilterModule(object):
    def filters(self):
        return {
            "hearth_engine_ports": hearth_engine_ports,
            "hearth_engine_port_problems": hearth_engine_port_problems,
            "hearth_engine_recipes": hearth_engine_recipes,
            "hearth_engine_container": hearth_engine_container,
            "hearth_engine_image": hearth_engine_image,
            "hearth_engine_candidate": hearth_engine_candidate,
            "hearth_kept_engine": hearth_kept_engine,
            "hearth_kept_engine_of": hearth_kept_engine_of,
            "hearth_model_overrides": hearth_model_overrides,
            "hearth_gate_failure": hearth_gate_failure,
            "hearth_image_tag": hearth_image_tag,
            "hearth_triton_config": hearth_triton_config,
            "hearth_frontdoor_routes": hearth_frontdoor_routes,
            "hearth_engine_metrics_targets": hearth_engine_metrics_targets,
            "hearth_env_file": hearth_env_file,
            "hearth_stale_engines": hearth_stale_engines,
            "hearth_engine_health": hearth_engine_health,
            "hearth_soak_seconds": hearth_soak_seconds,
        }
