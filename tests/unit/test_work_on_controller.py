"""Hearth's strategies skip a task whose `when` is false, and run a task whose action never
reaches the host, in ansible-playbook's own process, without forking a worker for it
(plugins/plugin_utils/hearth_strategy.py): the same playbook, run through Ansible on this machine
with this on and off, gives the same results; only where the work was done changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import plugin_module

from hearth import runner

STRATEGY = {  # the strategy plugin ansible-playbook is given: skip on the controller or not
    "linear": {True: "hearth_linear", False: "linear"},
    "mitogen": {True: "hearth_mitogen_linear", False: "mitogen_linear"},
}

PLAYBOOK = """\
- name: Conditions, through Hearth's strategy
  hosts: local
  gather_facts: false
  vars:
    flag: false
  handlers:
    - name: Never notified
      ansible.builtin.debug:
        msg: handler
      when: flag
  tasks:
    - name: A false condition
      ansible.builtin.debug:
        msg: never
      when: "'false-one' | hearth_test_pid and flag"
      register: skipped

    - name: A true condition
      ansible.builtin.debug:
        msg: ran
      when: "'true-one' | hearth_test_pid"
      register: ran

    - name: A secret task, skipped
      ansible.builtin.debug:
        msg: secret
      no_log: true
      when: flag
      register: quiet

    - name: A loop, whose condition is each item's
      ansible.builtin.debug:
        msg: "{{ item }}"
      loop: [1, 2]
      when: item == 2
      register: looped

    - name: Tasks skipped as a block
      when: not flag and flag
      block:
        - name: In the block
          ansible.builtin.debug:
            msg: never

    - name: A condition that cannot be evaluated
      ansible.builtin.debug:
        msg: never
      when: no_such_variable
      ignore_errors: true
      register: broken

    - name: A fact, set on the controller
      ansible.builtin.set_fact:
        fact_one: "{{ 'set-fact' | hearth_test_pid }}"
      register: fact

    - name: A message per item
      ansible.builtin.debug:
        msg: "{{ item }} {{ fact_one }}"
      loop: [a, b]
      register: said

    - name: A check that holds
      ansible.builtin.assert:
        that: fact_one
        success_msg: holds
      register: held

    - name: A check that does not
      ansible.builtin.assert:
        that: not fact_one
        fail_msg: does not hold
      ignore_errors: true
      register: refused

    - name: A failure asked for
      ansible.builtin.fail:
        msg: asked for
      ignore_errors: true
      register: failed

    - name: Variables from a file
      ansible.builtin.include_vars: extra.yml
      register: extra

    - name: Tasks from a file
      ansible.builtin.include_tasks: more.yml

    - name: A command, on the host through a worker
      ansible.builtin.command: echo host
      changed_when: false
      register: command

    - name: Record what the tasks registered
      ansible.builtin.copy:
        content: "{{ {'skipped': skipped, 'ran': ran, 'quiet': quiet, 'looped': looped,
                      'broken': broken, 'fact': fact, 'said': said, 'held': held,
                      'refused': refused, 'failed': failed, 'extra': extra,
                      'from_file': from_file, 'included': included,
                      'command': command.stdout} | to_json }}"
        dest: "{{ out }}"
        mode: "0600"
"""

MORE = """- name: A fact from an included file
  ansible.builtin.set_fact:
    included: "{{ from_file }} and more"
"""

FILTER = """\
import os


def record_pid(value):
    with open(os.environ["HEARTH_TEST_PIDS"], "a") as stream:
        stream.write(f"{value} {os.getpid()}\\n")
    return True


class FilterModule:
    def filters(self):
        return {"hearth_test_pid": record_pid}
"""


def _run(
    tmp_path: Path, strategy: str, skip: bool
) -> tuple[dict[str, Any], list[tuple[str, bool]], str]:
    """The registered results, which process evaluated each recorded condition (True: the
    playbook's own process, False: a worker) and the recap line."""
    folder = tmp_path / ("skip" if skip else "workers")
    (folder / "filter_plugins").mkdir(parents=True)
    (folder / "filter_plugins" / "pids.py").write_text(FILTER)
    (folder / "site.yml").write_text(PLAYBOOK)
    (folder / "more.yml").write_text(MORE)
    (folder / "extra.yml").write_text("from_file: read\n")
    (folder / "hosts.yml").write_text(
        "all:\n  hosts:\n    local:\n      ansible_connection: local\n"
        f"      ansible_python_interpreter: {sys.executable}\n"
    )
    env = dict(os.environ, ANSIBLE_NOCOLOR="1")
    env |= runner.ansible_env(runner.Tuning(strategy=strategy, work_on_controller=skip))
    assert env.get("ANSIBLE_STRATEGY", "linear") == STRATEGY[strategy][skip]
    env["ANSIBLE_FILTER_PLUGINS"] += os.pathsep + str(folder / "filter_plugins")
    env["HEARTH_TEST_PIDS"] = str(folder / "pids")
    out = folder / "registered.json"
    playbook = Path(sys.executable).parent / "ansible-playbook"
    args = [str(playbook), "-i", str(folder / "hosts.yml"), "-e", f"out={out}", "site.yml"]
    process = subprocess.Popen(
        args, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    stdout, _ = process.communicate(timeout=300)
    assert process.returncode == 0, stdout[-4000:]
    recap = next(line for line in stdout.splitlines() if line.startswith("local "))
    evaluated = [
        (name, int(pid) == process.pid)
        for name, pid in (line.split() for line in (folder / "pids").read_text().splitlines())
    ]
    registered = json.loads(out.read_text().replace(str(folder), "<folder>"))
    return registered, evaluated, " ".join(recap.split())


@pytest.mark.parametrize("strategy", ["linear", "mitogen"])
def test_the_strategy_skips_and_runs_controller_actions_with_the_workers_results(
    tmp_path: Path, strategy: str
) -> None:
    if strategy == "mitogen" and (problem := runner.mitogen_problem()):
        pytest.skip(problem)
    with_skip, where, recap = _run(tmp_path, strategy, skip=True)
    without, where_before, recap_before = _run(tmp_path, strategy, skip=False)
    # what the playbook sees is the same, to the key: the skip result the worker gave
    assert with_skip == without
    assert with_skip["skipped"] == {
        "changed": False,
        "skipped": True,
        "skip_reason": "Conditional result was False",
        "false_condition": "'false-one' | hearth_test_pid and flag",
    }
    assert with_skip["quiet"]["skipped"] and with_skip["ran"]["msg"] == "ran"
    assert [r.get("skipped", False) for r in with_skip["looped"]["results"]] == [True, False]
    assert with_skip["broken"]["failed"] and "no_such_variable" in with_skip["broken"]["msg"]
    assert with_skip["fact"]["ansible_facts"] == {"fact_one": True}
    assert [r["msg"] for r in with_skip["said"]["results"]] == ["a True", "b True"]
    assert with_skip["held"]["msg"] == "holds" and not with_skip["held"].get("failed")
    assert with_skip["refused"]["failed"] and with_skip["refused"]["msg"] == "does not hold"
    assert with_skip["failed"]["failed"] and with_skip["failed"]["msg"] == "asked for"
    assert with_skip["extra"]["ansible_facts"] == {"from_file": "read"}
    assert with_skip["included"] == "read and more" and with_skip["command"] == "host"
    assert recap == recap_before
    assert "skipped=3" in recap and "ignored=3" in recap, recap
    # a worker evaluated each condition and set each fact before; now the false condition is
    # evaluated by the playbook's own process only, the true one there first, then by its
    # worker (a debug task, which runs on the controller: its condition is evaluated once
    # more there), and the fact is set there too
    assert where_before == [("false-one", False), ("true-one", False), ("set-fact", False)]
    assert where == [
        ("false-one", True), ("true-one", True), ("true-one", True), ("set-fact", True)
    ]  # fmt: skip


def test_other_ansible_releases_and_the_switch_send_every_task_to_a_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ansible.release

    assert plugin_module("plugin_utils", "hearth_strategy").ENABLED  # this machine's 2.19
    monkeypatch.setenv("HEARTH_WORK_ON_CONTROLLER", "0")
    assert not plugin_module("plugin_utils", "hearth_strategy").ENABLED
    monkeypatch.delenv("HEARTH_WORK_ON_CONTROLLER")
    # a later release may keep the internals' names and change what they do
    monkeypatch.setattr(ansible.release, "__version__", "2.20.0")
    strategy = plugin_module("plugin_utils", "hearth_strategy")
    assert not strategy.ENABLED
    assert not strategy.runs_on_controller(type("Task", (), {"action": "set_fact"})())
