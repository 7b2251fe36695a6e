# -*- coding: utf-8 -*-
# Hearth: the VRAM planner and the model-declaration helpers as Jinja filters.
#
# Filters run on the control node, where Hearth's Python package is installed with Ansible, so
# this file only adapts hearth.plan / hearth.models / hearth.engines to Jinja: the arithmetic has
# one implementation, shared by `hearth plan`, the role preflights and the model store.
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
name: hearth_vram_plan
short_description: Plan the declared models onto a host's GPUs (VRAM, shares, decode tokens/s)
description:
  - Runs Hearth's planner (C(hearth.plan)) on the control node and returns the plan as data.
  - Declaration problems and refusals (a model that cannot fit, shares of one GPU above 1) come back
    in C(refusals) with C(ok=false), each naming the model, the host and the GPU.
  - Other filters in this file are C(hearth_vram_weights_bytes), C(hearth_vram_kv_cache_bytes),
    C(hearth_engine_command), C(hearth_model_change), C(hearth_changelog_last) and
    C(hearth_rollout_how) (beside the live engine, or drain-first: C(hearth.plan.rollout_how)).
positional: _input, declared_gpus, gpu_facts, host
options:
  _input:
    description: The host's C(hearth_models).
    type: list
    elements: dict
    required: true
  declared_gpus:
    description: The host's C(hearth_declared_gpus).
    type: list
    elements: dict
  gpu_facts:
    description: The C(gpu_facts) module's facts (C(hearth_gpus)); they win over declarations.
    type: list
    elements: dict
  host:
    description: The host's name, for the messages.
    type: str
"""

EXAMPLES = r"""
- name: Refuse models that do not fit
  vars:
    __plan: >-
      {{ hearth_models | hearth_vram_plan(hearth_declared_gpus,
         ansible_facts['hearth_gpus'] | default([]), inventory_hostname) }}
  ansible.builtin.assert:
    that: __plan.ok
    fail_msg: "{{ __plan.refusals | join('; ') }}"
"""

RETURN = r"""
_value:
  description: C(ok), C(refusals), and per model and per GPU the plan's figures.
  type: dict
"""


def _hearth():
    """Hearth's package with the modules these filters use (plugin_utils/hearth_import.py)."""
    return import_hearth("engines", "models", "plan")


def _plain(value):
    """Ansible's tagged values (2.19 data tagging) as plain JSON data."""
    return json.loads(json.dumps(value, default=str))


def _model(hearth, value):
    try:
        models = hearth.models.parse_models([_plain(value)])
    except hearth.errors.HearthError as exc:
        raise AnsibleFilterError(str(exc)) from exc
    return models[0]


def _host_vars(models, declared_gpus, gpu_facts):
    """(variables, facts) of one host as hearth.plan's *_from_vars functions read them."""
    facts = {"hearth_gpus": _plain(gpu_facts)} if gpu_facts else None
    variables = {
        "hearth_models": _plain(models or []),
        "hearth_declared_gpus": _plain(declared_gpus or []),
    }
    return variables, facts


def hearth_vram_plan(models, declared_gpus=None, gpu_facts=None, host="host"):
    hearth = _hearth()
    variables, facts = _host_vars(models, declared_gpus, gpu_facts)
    try:
        plan = hearth.plan.plan_from_vars(str(host), variables, facts)
        hearth.engines.check_engine_args([p.model for p in plan.placements])
    except hearth.errors.InvalidInputError as exc:
        problems = getattr(exc, "problems", None) or [str(exc)]
        return {
            "ok": False,
            "refusals": ["%s: %s" % (host, p) for p in problems],
            "models": [],
            "gpus": [],
        }
    return plan.as_dict()


def hearth_rollout_how(
    models, declared_gpus=None, gpu_facts=None, host="host", model="", strategy="auto"
):
    hearth = _hearth()
    variables, facts = _host_vars(models, declared_gpus, gpu_facts)
    try:
        found = hearth.plan.rollout_how_from_vars(
            str(host), variables, facts, str(model), str(strategy)
        )
    except hearth.errors.HearthError as exc:
        raise AnsibleFilterError(str(exc)) from exc
    return found.as_dict()


def hearth_vram_weights_bytes(model):
    hearth = _hearth()
    found = hearth.plan.weights_bytes(_model(hearth, model))
    return None if found is None else found[0]


def hearth_vram_kv_cache_bytes(model):
    hearth = _hearth()
    return hearth.plan.kv_cache_bytes(_model(hearth, model))


def hearth_engine_command(model, port=None):
    hearth = _hearth()
    try:
        return hearth.engines.render_command(_model(hearth, model), port)
    except hearth.errors.HearthError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def hearth_changelog_last(lines, name):
    hearth = _hearth()
    if isinstance(lines, str):
        lines = lines.splitlines()
    return hearth.models.last_record([str(line) for line in lines or []], str(name))


def hearth_model_change(model, previous=None, current_version=None):
    hearth = _hearth()
    return hearth.models.change_record(
        _model(hearth, model), _plain(previous) if previous else None, current_version or None
    )


def hearth_model_local_files(models, bundle_dir=""):
    """The control node's paths of the files of every model that is copied from it (source type
    ``path``: under its ``source.path``; ``bundle``: under ``bundle_dir``/``source.path``), in
    declaration order; the role's preflight checks each is a file there (Ansible's ``file`` test,
    on the control node, no connection)."""
    found = []
    for model in models or []:
        source = model.get("source") or {}
        kind = source.get("type")
        if kind not in ("path", "bundle"):
            continue
        root = str(source.get("path") or "")
        if kind == "bundle":
            root = "%s/%s" % (bundle_dir or "", root)
        for item in model.get("files") or []:
            found.append("%s/%s" % (root, item.get("path")))
    return found


class FilterModule(object):
    def filters(self):
        return {
            "hearth_vram_plan": hearth_vram_plan,
            "hearth_vram_weights_bytes": hearth_vram_weights_bytes,
            "hearth_vram_kv_cache_bytes": hearth_vram_kv_cache_bytes,
            "hearth_engine_command": hearth_engine_command,
            "hearth_changelog_last": hearth_changelog_last,
            "hearth_model_change": hearth_model_change,
            "hearth_rollout_how": hearth_rollout_how,
            "hearth_model_local_files": hearth_model_local_files,
        }
