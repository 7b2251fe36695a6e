"""Hearth's strategies skip a task whose `when` is false on the controller, without forking a
worker for it (plugins/plugin_utils/hearth_skip.py): the same playbook, run through Ansible on
this machine with the skip on and off, gives the same results, and only the worker count
changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

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

    - name: Record what the tasks registered
      ansible.builtin.copy:
        content: "{{ {'skipped': skipped, 'ran': ran, 'quiet': quiet, 'looped': looped,
                      'broken': broken} | to_json }}"
        dest: "{{ out }}"
        mode: "0600"
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
    (folder / "hosts.yml").write_text(
        "all:\n  hosts:\n    local:\n      ansible_connection: local\n"
        f"      ansible_python_interpreter: {sys.executable}\n"
    )
    env = dict(os.environ, ANSIBLE_NOCOLOR="1")
    env |= runner.ansible_env(runner.Tuning(strategy=strategy, skip_on_controller=skip))
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
    return json.loads(out.read_text()), evaluated, " ".join(recap.split())


@pytest.mark.parametrize("strategy", ["linear", "mitogen"])
def test_a_false_condition_is_skipped_on_the_controller_with_the_workers_result(
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
    assert recap == recap_before
    assert "skipped=3" in recap and "ignored=1" in recap, recap
    # a worker evaluated each condition before; now the false one is evaluated by the
    # playbook's own process only, and the true one there first, then by its worker
    assert where_before == [("false-one", False), ("true-one", False)]
    assert where == [("false-one", True), ("true-one", True), ("true-one", False)]
