"""The commented sample inventory shows something meaningful to every command that contacts no
host (issue 9: `hearth plan` on it printed two empty tables)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from click.testing import CliRunner

from hearth import paths
from hearth.cli import cli

SAMPLE = paths.content_root() / "inventories" / "sample"
MODELS = {"llama-3.1-8b": "vllm", "qwen2.5-7b": "llamacpp"}
GPUS = {"gpu01": "NVIDIA H100 80GB HBM3", "gpu02": "NVIDIA L40S"}


def test_plan_lists_the_sample_models_on_every_gpu_node(sample_site: tuple[Path, Path]) -> None:
    hosts, password = sample_site
    result = CliRunner().invoke(
        cli,
        ["plan", "-i", str(hosts), "--no-facts", "--json", "--vault-password-file", str(password)],
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["ok"] is True and plan["refusals"] == []
    placed = {(m["host"], m["model"], m["engine"]) for m in plan["models"]}
    assert placed == {(h, m, e) for h in GPUS for m, e in MODELS.items()}
    for model in plan["models"]:  # the planner used the declared file sizes, and all fits
        assert model["weights_basis"] == "files" and model["refused"] == [], model
        assert model["need_per_gpu_bytes"] <= model["budget_per_gpu_bytes"], model
    names = {(g["host"], g["name"]) for g in plan["gpus"]}
    assert names == {(h, n) for h, n in GPUS.items()}, names


def test_plan_table_shows_the_models(sample_site: tuple[Path, Path]) -> None:
    """Run from the inventory's own directory, as an operator would, not from a checkout whose
    ansible.cfg names Hearth's filter plugins: the canary's default questions (a role default
    that uses one) resolve all the same."""
    hosts, password = sample_site
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    done = subprocess.run(
        [sys.executable, "-m", "hearth", "plan", "-i", str(hosts),
         "--vault-password-file", str(password)],
        capture_output=True, text=True, env=env, check=False, cwd=hosts.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "declares hearth_models" not in done.stdout
    for host in GPUS:
        for model in MODELS:
            assert any(host in line and model in line for line in done.stdout.splitlines()), (
                host, model, done.stdout,
            )  # fmt: skip


def test_placeholders_are_well_formed_and_say_so() -> None:
    text = (SAMPLE / "group_vars" / "inference" / "models.yml").read_text()
    models = yaml.safe_load(text)["hearth_models"]
    for model in models:
        assert len(model["source"]["revision"]) == 40
        for file in model["files"]:
            assert len(file["sha256"]) == 64 and int(file["sha256"], 16) >= 0
            assert isinstance(file["size"], int) and file["size"] > 0
    assert text.count("PLACEHOLDER") >= 2 * len(models)
