# -*- coding: utf-8 -*-
# Hearth: run named rules of hearth.rules on the running host, inside a role's preflight.
from __future__ import annotations

DOCUMENTATION = r"""
module: hearth_preflight
short_description: Run Hearth's inventory rules (hearth.rules) for this host in a role's preflight
description:
  - Runs on the control node with the variables of the task (the role's defaults under the
    inventory), the very functions C(hearth check) runs before any host is touched, so a role's
    preflight and the control node's cannot disagree.
  - Fails listing every problem, each naming the host and the key; secrets are never shown.
  - Each role's task carries C(when: not (hearth_preflight_done | default(false))): C(hearth up)
    sets that flag (an extra variable; an inventory cannot) after running every rule on every
    host of the inventory, on the control node, before any host was contacted, and the task is
    then skipped by the strategy without a worker (plugins/plugin_utils/hearth_strategy.py). A run
    of C(ansible-playbook) by hand checks here, as does every other C(hearth) command.
options:
  rules:
    description: Names of rules in C(hearth.rules) (C(front_door_keys), C(ports_unique), ...).
    type: list
    elements: str
    required: true
author: Hearth
"""

EXAMPLES = r"""
- name: Check the front door's keys and settings (the rules `hearth check` runs)
  hearth_preflight:
    rules: [front_door_keys, front_door_settings]
"""

RETURN = r"""
problems:
  description: One line per problem found (empty when every rule passed).
  type: list
  elements: str
  returned: always
warnings:
  description: One line per warning (an unknown GPU model, ...).
  type: list
  elements: str
  returned: always
"""

import contextlib
import json
import sys
from pathlib import Path

from ansible.plugins.action import ActionBase

_PLUGIN_UTILS = str(Path(__file__).resolve().parents[1] / "plugin_utils")
if _PLUGIN_UTILS not in sys.path:
    sys.path.insert(0, _PLUGIN_UTILS)
from hearth_import import import_hearth  # the one "import hearth" helper (plugin_utils/)


def _plain(value):
    """Ansible's values (2.19 data tagging, decrypted vault strings) as plain JSON data."""
    return json.loads(json.dumps(value, default=str))


class _Vars(object):
    """A mapping of the task's variables, each templated when a rule reads it."""

    def __init__(self, variables, templar):
        self._variables = variables
        self._templar = templar
        self._done = {}

    def __iter__(self):
        return iter(self._variables)

    def __contains__(self, name):
        return name in self._variables

    def __getitem__(self, name):
        if name not in self._done:
            value = self._variables[name]
            # A value that cannot be templated here is judged as written.
            with contextlib.suppress(Exception):
                value = self._templar.template(value)
            with contextlib.suppress(TypeError, ValueError):
                value = _plain(value)
            self._done[name] = value
        return self._done[name]

    def get(self, name, default=None):
        return self[name] if name in self._variables else default

    def keys(self):
        return self._variables.keys()


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        try:
            hearth = import_hearth("layers", "rules")
        except Exception as exc:  # Hearth's Python package is not in this Ansible's Python
            result.update(failed=True, msg=str(exc))
            return result
        layers, rules = hearth.layers, hearth.rules
        names = self._task.args.get("rules") or []
        if isinstance(names, str):
            names = [names]
        try:
            chosen = rules.by_name(names)
        except KeyError as exc:
            result.update(failed=True, msg=str(exc))
            return result
        host = str(task_vars.get("inventory_hostname"))
        groups = _plain(task_vars.get("groups") or {})
        hostvars = task_vars.get("hostvars") or {}

        def view(name, variables):
            group_names = [g for g, members in groups.items() if name in members]
            return rules.HostView(
                name=name,
                vars=_Vars(variables, self._templar),
                roles=frozenset(layers.roles_for_group_names(name, group_names)),
                groups=groups,
                raw=variables.get,
                peer=peer,
            )

        def peer(name):
            return view(name, hostvars[name])

        this = view(host, task_vars)
        findings = rules.run_rules(this, chosen)
        problems = [f.text() for f in findings if f.level == "error"]
        warnings = [f.text() for f in findings if f.level == "warning"]
        result["changed"] = False
        result["problems"] = problems
        result["warnings"] = warnings
        if problems:
            result["failed"] = True
            result["msg"] = "%s: %s" % (host, " | ".join(problems))
        return result
