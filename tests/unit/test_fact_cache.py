"""Hearth's fact cache, for real: ansible-playbook through hearth.runner writes the facts to the
inventory's own cache (not to a directory in each run's artifacts, where ansible-runner puts them
unless told), the hosts of a run get theirs afresh, and a limited run still sees the last facts of
the hosts outside it (as Prometheus' DCGM targets and the planner need); hearth.plan reads them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from hearth import paths, plan, runner

PLAYBOOK = """\
- name: Preflight
  ansible.builtin.import_playbook: {preflight}

- name: Record what this run saw
  hosts: all
  gather_facts: true
  gather_subset: [min]
  tasks:
    - name: Record this run's mark, and what the run knows of the other host
      ansible.builtin.set_fact:
        hearth_test_mark: "{{{{ mark }}}}"
        hearth_test_seen: >-
          {{{{ hostvars[other].hearth_test_mark | default('nothing')
             if other not in ansible_play_hosts else 'in this run' }}}}
        cacheable: true
      vars:
        other: "{{{{ 'b' if inventory_hostname == 'a' else 'a' }}}}"

    - name: Record a fact in the first run only (as gpu_facts, which only some playbooks run)
      ansible.builtin.set_fact:
        hearth_test_first: "{{{{ mark }}}}"
        cacheable: true
      when: mark == "1"
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HEARTH_HOME", str(tmp_path / "home"))
    collections = Path.home() / ".local" / "share" / "hearth" / "collections"
    (tmp_path / "home").mkdir()
    if collections.is_dir():
        (tmp_path / "home" / "collections").symlink_to(collections)
    return tmp_path / "home"


def test_facts_persist_per_inventory_and_limited_runs_see_the_others(
    tmp_path: Path, home: Path
) -> None:
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory = tmp_path / "inv" / "hosts.yml"
    inventory.parent.mkdir()
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"a": local, "b": local}}}))
    book = tmp_path / "facts.yml"
    book.write_text(PLAYBOOK.format(preflight=paths.playbooks_dir() / "preflight.yml"))

    first = runner.run_playbook(book, inventory, extravars={"mark": "1"}, label="facts-1")
    assert first.status == "successful", first.failures
    cache = paths.facts_dir(inventory)
    assert cache.is_dir() and any(cache.iterdir()), f"no facts cached in {cache}"
    assert not list((home / "runs").glob("*/artifacts/*/fact_cache/*"))
    a_before = plan.cached_facts("a", cache) or {}
    assert a_before.get("hearth_test_mark") == "1" and a_before.get("ansible_date_time")

    second = runner.run_playbook(
        book, inventory, limit="a", extravars={"mark": "2"}, label="facts-2"
    )
    assert second.status == "successful", second.failures
    a_after, b_after = plan.cached_facts("a", cache) or {}, plan.cached_facts("b", cache) or {}
    assert a_after["hearth_test_mark"] == "2"
    assert a_after["hearth_test_seen"] == "1"  # b, outside --limit, known from its last run
    assert b_after["hearth_test_mark"] == "1"  # kept
    # a's facts are this run's only: a fact an earlier run set and this one did not is gone
    assert "hearth_test_first" not in a_after
    # a's facts were gathered afresh in the second run (not served from the cache)
    assert a_after["ansible_date_time"]["epoch"] != a_before["ansible_date_time"]["epoch"] or (
        a_after["ansible_date_time"]["iso8601_micro"]
        != a_before["ansible_date_time"]["iso8601_micro"]
    )


def test_cached_facts_reads_both_cache_layouts(tmp_path: Path) -> None:
    import json

    (tmp_path / "gpu01").write_text(json.dumps({"hearth_gpus": [1]}))  # ansible-core < 2.19
    assert plan.cached_facts("gpu01", tmp_path) == {"hearth_gpus": [1]}
    tagged = {"value": "L4", "tags": [{"__ansible_type": "Origin"}],
              "__ansible_type": "_AnsibleTaggedStr"}  # fmt: skip
    payload = {"hearth_gpus": [2], "names": [tagged]}
    wrapped = {"__payload__": json.dumps(payload)}  # 2.19: s<schema>_<host>, tagged values
    (tmp_path / "s1_gpu01").write_text(json.dumps(wrapped))
    import os

    os.utime(tmp_path / "gpu01", (1, 1))  # the older file
    assert plan.cached_facts("gpu01", tmp_path) == {"hearth_gpus": [2], "names": ["L4"]}
    assert plan.cached_facts("pu01", tmp_path) is None  # never another host's file
    assert plan.cached_facts("gpu02", tmp_path) is None
    assert plan.cached_facts("gpu01", tmp_path / "none") is None
