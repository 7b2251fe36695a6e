"""One preflight refuses the same things in `hearth check`/`up`/`audit` and at the start of every
playbook (the hearth_inventory_check action plugin): schema, GPU compatibility, engine arguments,
the VRAM plan. The playbook test runs the real preflight play (it touches only localhost)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_plan import MODELS, write_inventory

from hearth import paths, preflight, runner

COLLECTIONS = paths.collections_dir()  # the real one, before HEARTH_HOME moves to tmp below
QWEN_REFUSAL = "model qwen-7b does not fit its share of host gpu02 GPU 0 (NVIDIA L40S)"


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEARTH_HOME", str(tmp_path / "home"))


def test_a_model_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    problems = preflight.problems(write_inventory(tmp_path / "inv"))
    assert len(problems) == 1
    assert QWEN_REFUSAL in problems[0] and "Nothing was changed on any host." in problems[0]


def test_an_unknown_engine_argument_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    models = MODELS.replace(
        "    gpu_memory_share: 0.5\n",
        "    gpu_memory_share: 0.5\n    engine_args:\n      enable_prefix_cachin: true\n",
        1,
    )
    (problem,) = preflight.problems(write_inventory(tmp_path / "inv", models))
    assert "llama-8b" in problem and "enable_prefix_cachin" in problem
    assert "--enable-prefix-caching" in problem


def test_schema_problems_come_first_and_alone(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path / "inv")
    (inventory.parent / "group_vars" / "all.yml").write_text("common_time_sync_enabled: 'no'\n")
    (problem,) = preflight.problems(inventory)
    assert "group_vars/all.yml:1: common_time_sync_enabled = 'no'" in problem


def test_cli_check_exits_2_naming_model_and_gpu(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path / "inv")
    done = subprocess.run(
        [sys.executable, "-m", "hearth", "check", "-i", str(inventory)],
        capture_output=True,
        text=True,
        env=dict(os.environ, COLUMNS="300"),
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert QWEN_REFUSAL in done.stderr


def test_every_playbook_refuses_it_before_any_host(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path / "inv")
    env = dict(os.environ, **runner.ansible_env(), ANSIBLE_NOCOLOR="1")
    env["ANSIBLE_COLLECTIONS_PATH"] = str(COLLECTIONS)
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i", str(inventory),
            str(paths.playbooks_dir() / "site.yml"),
        ],
        capture_output=True, text=True, env=env, check=False, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout[-3000:]
    assert QWEN_REFUSAL in done.stdout
    # the refusal came from the control node: no inventory host was even contacted
    assert "gpu01" not in done.stdout.split("PLAY RECAP")[1]
