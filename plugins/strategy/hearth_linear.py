# -*- coding: utf-8 -*-
# Copyright: Hearth contributors
# Apache-2.0
# Hearth: Ansible's linear strategy, with less work forked to workers.
from __future__ import annotations

DOCUMENTATION = r"""
name: hearth_linear
short_description: Ansible's linear strategy; less work forked to workers
description:
  - Ansible's C(linear) strategy, unchanged, except that a task whose C(when) is false
    on a host is skipped, and a task whose action never reaches the host (C(set_fact),
    C(debug), C(assert), includes ...) runs, in the strategy's own process: no worker process is
    forked for them, and the result is the one the worker would have sent
    (plugin_utils/hearth_strategy.py says what goes to a worker as before).
  - C(hearth up --strategy linear) runs it; C(HEARTH_WORK_ON_CONTROLLER=0) leaves every task to
    a worker.
author: Hearth
"""

import sys
from pathlib import Path

from ansible.plugins.strategy.linear import StrategyModule as LinearStrategy

_PLUGIN_UTILS = str(Path(__file__).resolve().parents[1] / "plugin_utils")
if _PLUGIN_UTILS not in sys.path:
    sys.path.insert(0, _PLUGIN_UTILS)
from hearth_strategy import OnController  # controller-side helper (plugin_utils/)


class StrategyModule(OnController, LinearStrategy):
    pass
