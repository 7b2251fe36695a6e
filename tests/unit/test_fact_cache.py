"""hearth.plan.cached_facts reads both layouts of Ansible's jsonfile fact cache (ansible-core 2.19
wraps and tags the facts). The cache itself does not outlive a run yet: docs/converge.md."""

from __future__ import annotations

from pathlib import Path

from hearth import plan


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
