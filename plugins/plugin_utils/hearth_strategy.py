# -*- coding: utf-8 -*-
# Copyright: Hearth contributors
# Apache-2.0
"""What Hearth's strategies do on the controller instead of forking a worker.

Ansible's linear strategy forks a worker process for every task on every host. A worker costs
the fork, its copy-on-write page faults, its first Jinja compile and the result's trip back
through the queue: about 30-40 ms of controller CPU per task and host (docs/converge.md), on a
2-core machine shared with the hosts. Two kinds of task need none of it:

- **A task whose ``when`` is false.** The worker evaluates the condition and returns a skip.
  :func:`skip_result` evaluates it in the strategy, as the worker would
  (``TaskExecutor._execute_internal``: the task's play context applied, its connection
  variables added, ``Task._resolve_conditional``), and returns the worker's own skip result
  (``skip_reason``, ``false_condition``, ``_ansible_no_log``).
- **A task whose action runs on the controller only** (:data:`CONTROLLER_ACTIONS`: set_fact,
  debug, assert, fail, include_vars, validate_argument_spec, include_tasks, include_role). Their
  action plugins template variables and never reach the host. :func:`run_on_controller` runs the
  worker's own ``TaskExecutor`` on a copy of the task and of its variables, in the strategy's
  process.

Either way the result goes through the same result queue the workers use, after the same
``v2_runner_on_start`` callback, so callbacks, the recap, registered variables, handlers and
ansible-runner's events see what they saw before. Everything else goes to a worker as before:

- any task with ``delegate_to``, ``async`` or ``until``; a loop's condition (it is per item);
- a condition that is true, that fails to evaluate (the worker raises the same error, in the
  task's result) or that warns while evaluated (the worker records the warning with the result);
- every task, on an ansible-core other than the release this was written against (2.19,
  :data:`WRITTEN_FOR`): the strategies are then Ansible's and Mitogen's own.

``HEARTH_WORK_ON_CONTROLLER=0`` (hearth.runner.Tuning.work_on_controller) sends every task to a
worker, for a benchmark's side-by-side run or to rule this out when a result looks wrong.

Controller-side code only (``plugin_utils``): no module ships it to a host.
"""

from __future__ import annotations

import os
from typing import Any

try:  # ansible-core 2.19's internals; other releases run the strategies unchanged
    from ansible import constants as C
    from ansible._internal import _task
    from ansible._internal._display_utils import DeferredWarningContext
    from ansible._internal._errors import _error_utils
    from ansible._internal._templating._engine import TemplateEngine
    from ansible.executor.task_executor import TaskExecutor
    from ansible.executor.task_result import _RawTaskResult
    from ansible.plugins import loader as plugin_loader
    from ansible.utils.fqcn import add_internal_fqcns

    CONTROLLER_ACTIONS = frozenset(
        C._ACTION_SET_FACT
        + C._ACTION_DEBUG
        + C._ACTION_INCLUDE_VARS
        + C._ACTION_ALL_INCLUDES
        + add_internal_fqcns(("assert", "fail", "validate_argument_spec"))
    )
except ImportError:  # pragma: no cover - depends on the installed ansible-core
    TemplateEngine = None
    CONTROLLER_ACTIONS = frozenset()

# The release whose TaskExecutor, results and templating this replays (a later one may keep the
# names and change what they do): any other runs every task through a worker.
WRITTEN_FOR = (2, 19)


def _release() -> tuple[int, ...]:
    from ansible.release import __version__

    return tuple(int(part) for part in __version__.split(".")[:2] if part.isdigit())


ENABLED = (
    TemplateEngine is not None
    and _release() == WRITTEN_FOR
    and os.environ.get("HEARTH_WORK_ON_CONTROLLER", "1") != "0"
)


def _plain(task: Any) -> bool:
    """No delegation, no async, no retries: what the strategy may do instead of a worker."""
    return not (task.delegate_to or task.async_val or task.until)


def skip_result(host: Any, task: Any, task_vars: dict[str, Any], play_context: Any, loader: Any):
    """The result the worker would return for ``task`` on ``host`` when its ``when`` is false,
    or None when the task must run (see the module's docstring)."""
    if not (ENABLED and task.when and task.loop is None and not task.loop_with and _plain(task)):
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


def runs_on_controller(task: Any) -> bool:
    """Whether the strategy runs ``task`` itself (an action that never reaches the host)."""
    return ENABLED and task.action in CONTROLLER_ACTIONS and _plain(task)


def run_on_controller(strategy: Any, host: Any, task: Any, task_vars: dict[str, Any], context):
    """What WorkerProcess._run does, in this process: the worker's TaskExecutor on a copy of the
    task and of its variables (the executor post-validates the one and adds to the other, as it
    does to the worker's copies). Returns the task copy and its result."""
    copy = task.copy()
    try:
        with _task.TaskContext(copy):
            result = TaskExecutor(
                host,
                copy,
                dict(task_vars),
                context,
                strategy._loader,
                plugin_loader.get_plugin_loader_namespace(),
                strategy._final_q,
                strategy._variable_manager,
            ).run()
    except Exception as ex:  # TaskExecutor.run returns its own errors; this is a last resort
        result = _error_utils.result_dict_from_exception(ex)
    return copy, result


class OnController(object):
    """Mixed into a linear strategy (Ansible's or Mitogen's): see the module's docstring."""

    def _queue_task(self, host, task, task_vars, play_context):
        result = skip_result(host, task, task_vars, play_context, self._loader)
        if result is None and not runs_on_controller(task):
            return super()._queue_task(host, task, task_vars, play_context)
        # what StrategyBase._queue_task and WorkerProcess._run do for a task sent to a worker
        self._queued_task_cache[(host.name, task._uuid)] = {
            "host": host,
            "task": task,
            "task_vars": task_vars,
            "play_context": play_context,
        }
        self._tqm.send_callback("v2_runner_on_start", host, task)
        ran = task
        if result is None:
            ran, result = run_on_controller(self, host, task, task_vars, play_context)
        self._final_q.send_task_result(
            _RawTaskResult(host=host, task=ran, return_data=result, task_fields=ran.dump_attrs())
        )
        self._pending_results += 1
        return None
