# -*- coding: utf-8 -*-
# Copyright: Hearth contributors
# Apache-2.0
"""Skip a task on the controller when its ``when`` is false: no worker forked for it.

Ansible's linear strategy forks a worker process for every task on every host, and the worker
is where ``when`` is evaluated: a task that is skipped costs a fork, the worker's copy-on-write
page faults, its first Jinja compile and the result's trip back through the queue, about 30 ms of
controller CPU for each host (docs/converge.md). A Hearth run that changes nothing skips about a
hundred tasks on the inference host alone.

:class:`SkipOnController` evaluates the condition in the strategy, the way the worker would
(``TaskExecutor._execute_internal``: the task's play context applied, its connection variables
added, ``Task._resolve_conditional``), and when it is false sends the worker's own skip result
(``skip_reason``, ``false_condition``, ``_ansible_no_log``) through the same result queue, with
the same ``v2_runner_on_start`` callback first: callbacks, the recap, registered variables and
ansible-runner's events see what they saw before. Anything else goes to a worker as before:

- a task with a loop (its condition is per item), ``delegate_to`` (the worker evaluates it with
  the delegated host's variables) or no ``when``;
- a condition that is true, that fails to evaluate (the worker raises the same error, in the
  task's result) or that warns while evaluated (the worker records the warning with the result);
- an ansible-core whose internals differ from the ones this was written against (2.19): the
  imports below fail and the strategy is Ansible's own.

Controller-side code only (``plugin_utils``): no module ships it to a host.
"""

from __future__ import annotations

import os
from typing import Any

try:  # ansible-core 2.19's internals; other releases run the strategy unchanged
    from ansible._internal._display_utils import DeferredWarningContext
    from ansible._internal._templating._engine import TemplateEngine
    from ansible.executor.task_result import _RawTaskResult
except ImportError:  # pragma: no cover - depends on the installed ansible-core
    TemplateEngine = None

# `HEARTH_SKIP_ON_CONTROLLER=0` turns it off (hearth.runner.Tuning.skip_on_controller), for a
# benchmark's side-by-side run or to rule it out when a skip looks wrong.
ENABLED = TemplateEngine is not None and os.environ.get("HEARTH_SKIP_ON_CONTROLLER", "1") != "0"


def skip_result(host: Any, task: Any, task_vars: dict[str, Any], play_context: Any, loader: Any):
    """The result the worker would return for ``task`` on ``host`` when its ``when`` is false,
    or None when the task must go to a worker (see the module's docstring)."""
    if not ENABLED or not task.when or task.loop is not None or task.loop_with:
        return None
    if task.delegate_to:
        return None
    try:
        with DeferredWarningContext(variables=task_vars) as warnings:
            templar = TemplateEngine(loader=loader, variables=task_vars)
            tempvars = task_vars.copy()
            context = play_context.set_task_and_variable_override(
                task=task, variables=task_vars, templar=templar
            )
            context.post_validate(templar=templar)
            if not context.remote_addr:
                context.remote_addr = host.address
            context.update_vars(tempvars)
            found: dict[str, Any] = {}
            if task._resolve_conditional(task.when, tempvars, result_context=found):
                return None
            result = {
                "changed": False,
                "skipped": True,
                "skip_reason": "Conditional result was False",
                **found,
            }
            task.update_result_no_log(templar, result)
        if warnings.get_warnings() or warnings.get_deprecation_warnings():
            return None
    except Exception:  # the worker evaluates it again and reports the error, as before
        return None
    return result


class SkipOnController(object):
    """Mixed into a linear strategy (Ansible's or Mitogen's): see the module's docstring."""

    def _queue_task(self, host, task, task_vars, play_context):
        result = skip_result(host, task, task_vars, play_context, self._loader)
        if result is None:
            return super()._queue_task(host, task, task_vars, play_context)
        # what StrategyBase._queue_task and WorkerProcess._run do for a task that runs
        self._queued_task_cache[(host.name, task._uuid)] = {
            "host": host,
            "task": task,
            "task_vars": task_vars,
            "play_context": play_context,
        }
        self._tqm.send_callback("v2_runner_on_start", host, task)
        self._final_q.send_task_result(
            _RawTaskResult(host=host, task=task, return_data=result, task_fields=task.dump_attrs())
        )
        self._pending_results += 1
        return None
