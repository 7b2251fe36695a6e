# -*- coding: utf-8 -*-
# Hearth: `hearth restore`'s decision as a Jinja filter (roles/backup/tasks/prometheus-restore.yml):
# which of the backup's Prometheus blocks the host lacks. The rule lives in
# hearth.fleet.backup.missing_blocks (unit tested on real block metadata layouts).
from __future__ import annotations

import sys
from pathlib import Path

_PLUGIN_UTILS = str(Path(__file__).resolve().parents[1] / "plugin_utils")
if _PLUGIN_UTILS not in sys.path:
    sys.path.insert(0, _PLUGIN_UTILS)
from hearth_import import import_hearth  # the one "import hearth" helper (plugin_utils/)

DOCUMENTATION = r"""
name: hearth_missing_blocks
short_description: The backed-up Prometheus blocks a host's Prometheus lacks
description:
  - Reads each block's C(meta.json) under the backup's C(prometheus/) directory on the control
    node and returns the names of the blocks whose ULID, or every block they were compacted
    from, is not among the host's known block ULIDs (C(hearth.fleet.backup.tsdb_block_ids) on
    the host, through C(python3 -m) or the same walk).
positional: _input
options:
  _input:
    description: The backup's Prometheus directory on the control node.
    type: path
    required: true
  known:
    description: The ULIDs the host's Prometheus holds (blocks and their compaction sources).
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- name: Put back the blocks Prometheus lacks
  ansible.builtin.copy:
    src: "{{ backup_restore_dir }}/prometheus/{{ item }}/"
    dest: "{{ backup_prometheus_storage_dir }}/{{ item }}/"
  loop: "{{ (backup_restore_dir ~ '/prometheus') | hearth_missing_blocks(__known) }}"
"""

RETURN = r"""
_value:
  description: Block directory names (ULIDs) to copy, sorted.
  type: list
  elements: str
"""


def hearth_missing_blocks(backup_storage, known):
    hearth = import_hearth("fleet.backup")
    return hearth.fleet.backup.missing_blocks(Path(str(backup_storage)), [str(k) for k in known])


class FilterModule:
    def filters(self):
        return {"hearth_missing_blocks": hearth_missing_blocks}
