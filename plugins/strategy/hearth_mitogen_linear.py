# -*- coding: utf-8 -*-
# Copyright: Hearth contributors
# Apache-2.0
# Hearth: Mitogen's linear strategy, with less work forked to workers.
from __future__ import annotations

DOCUMENTATION = r"""
name: hearth_mitogen_linear
short_description: Mitogen's linear strategy; less work forked to workers
description:
  - Mitogen for Ansible's C(mitogen_linear) strategy, unchanged, except that a task whose
    C(when) is false on a host is skipped, and a task whose action never reaches the host
    (C(set_fact), C(debug), C(assert), includes ...) runs, in the strategy's own process: no
    worker process is forked for them, and the result is the one the worker would have sent
    (plugin_utils/hearth_strategy.py says what goes to a worker as before).
  - Hearth's default where Mitogen can run (hearth.runner.default_strategy); Mitogen's strategy
    folder must be on the strategy plugin path after Hearth's (hearth.runner.ansible_env).
    C(HEARTH_WORK_ON_CONTROLLER=0) leaves every task to a worker.
author: Hearth
"""

import sys
from pathlib import Path

from ansible.plugins.loader import strategy_loader

_PLUGIN_UTILS = str(Path(__file__).resolve().parents[1] / "plugin_utils")
if _PLUGIN_UTILS not in sys.path:
    sys.path.insert(0, _PLUGIN_UTILS)
from hearth_strategy import OnController  # controller-side helper (plugin_utils/)

MitogenLinear = strategy_loader.get("mitogen_linear", class_only=True)


class StrategyModule(OnController, MitogenLinear):
    pass
