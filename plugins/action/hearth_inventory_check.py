# -*- coding: utf-8 -*-
# Hearth: validate the inventory of this run against Hearth's schema, on the control node.
from __future__ import annotations

DOCUMENTATION = r"""
module: hearth_inventory_check
short_description: Refuse a bad inventory before any host is touched
description:
  - Runs on the control node, with the same code as C(hearth check) (C(hearth.preflight)).
  - Validates Hearth's variables in every inventory source (files, group_vars, host_vars)
    against the roles' argument specs and Hearth's global spec, then the GPU layer's
    driver/CUDA/GPU compatibility, then the VRAM plan of the declared models, and fails listing
    every problem (file, line and key; or the model, host and GPU).
options:
  sources:
    description: Inventory sources of this run (normally C(ansible_inventory_sources)).
    type: list
    elements: path
    required: true
author: Hearth
"""

EXAMPLES = r"""
- name: Validate the inventory against Hearth's schema
  hearth_inventory_check:
    sources: "{{ ansible_inventory_sources }}"
"""

RETURN = r"""
problems:
  description: One line per problem found (empty when the inventory is valid).
  type: list
  elements: str
  returned: always
"""

import sys
from pathlib import Path

from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase

_PLUGIN_UTILS = str(Path(__file__).resolve().parents[1] / "plugin_utils")
if _PLUGIN_UTILS not in sys.path:
    sys.path.insert(0, _PLUGIN_UTILS)
from hearth_import import import_hearth  # the one "import hearth" helper (plugin_utils/)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        sources = self._task.args.get("sources") or []
        if isinstance(sources, str):
            sources = [sources]
        try:
            preflight_problems = import_hearth("preflight").preflight.problems
        except AnsibleError as exc:  # Hearth's Python package is not in this Ansible's Python
            result.update(failed=True, msg=str(exc))
            return result
        problems = []
        for source in sources:
            problems.extend(preflight_problems(source))
        result["changed"] = False
        result["problems"] = problems
        if problems:
            result["failed"] = True
            result["msg"] = (
                "the inventory has %d problem(s); fix them and run again "
                "(`hearth check -i INVENTORY` lists them too):\n%s"
                % (len(problems), "\n".join(problems))
            )
        return result
