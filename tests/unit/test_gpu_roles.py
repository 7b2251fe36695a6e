"""Static checks of Hearth's roles (every role: defaults vs argument spec) and of the GPU layer's
roles, playbook and lab inventory. No host is contacted."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from hearth import lab, paths
from hearth.inventory import load_inventory, validate_inventory
from hearth.layers import roles_for_hosts

ROLES = sorted(p.parent.parent.name for p in paths.roles_dir().glob("*/tasks/main.yml"))
GPU_ROLES = ("nvidia_driver", "cuda", "container_runtime")
PHASES = ("preflight", "install", "configure", "service")
# Modules shipped in plugins/modules (no collection namespace).
LOCAL_MODULES = {
    "gpu_facts", "hearth_apt", "hearth_hold", "hearth_inventory_check", "hearth_packages",
    "hearth_paths", "hearth_preflight",
}  # fmt: skip
TASK_KEYWORDS = {
    "name", "when", "register", "loop", "loop_control", "vars", "tags", "notify", "become",
    "changed_when", "failed_when", "check_mode", "environment", "block", "rescue", "always",
    "delegate_to", "run_once", "no_log", "diff", "ignore_errors", "listen", "args", "until",
    "retries", "delay", "timeout", "throttle", "any_errors_fatal",
}  # fmt: skip


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def spec_options(role: str) -> dict[str, Any]:
    spec = load(paths.roles_dir() / role / "meta" / "argument_specs.yml")
    return dict(spec["argument_specs"]["main"].get("options") or {})


@pytest.mark.parametrize("role", ROLES)
def test_every_role_has_an_argument_spec(role: str) -> None:
    assert (paths.roles_dir() / role / "meta" / "argument_specs.yml").is_file(), (
        f"roles/{role}: meta/argument_specs.yml is missing"
    )


# Every role's defaults against its spec: tests/unit/test_foundation.py; here the GPU roles, with
# types required too.
@pytest.mark.parametrize("role", GPU_ROLES)
def test_defaults_and_argument_spec_agree(role: str) -> None:
    defaults_file = paths.roles_dir() / role / "defaults" / "main.yml"
    defaults = load(defaults_file) or {} if defaults_file.is_file() else {}
    options = spec_options(role)
    assert set(defaults) - set(options) == set(), f"{role}: defaults missing from the spec"
    assert set(options) - set(defaults) == set(), f"{role}: spec options without a default"
    for name, option in options.items():
        assert option.get("description"), f"{role}: {name} has no description"
        assert option.get("type"), f"{role}: {name} has no type"
        if "default" in option:
            assert option["default"] == defaults[name], f"{role}: {name} default differs"


def iter_tasks(items: Any) -> Any:
    for item in items or []:
        if not isinstance(item, dict):
            continue
        yield item
        for key in ("block", "rescue", "always"):
            yield from iter_tasks(item.get(key))


def module_of(task: dict[str, Any]) -> str:
    candidates = [k for k in task if k not in TASK_KEYWORDS]
    assert len(candidates) == 1, f"task {task.get('name')!r}: cannot tell its module ({candidates})"
    return candidates[0]


def gpu_task_files() -> list[Path]:
    files = []
    for role in GPU_ROLES:
        files += sorted((paths.roles_dir() / role / "tasks").glob("*.yml"))
        files += sorted((paths.roles_dir() / role / "handlers").glob("*.yml"))
    return files


@pytest.mark.parametrize("path", gpu_task_files(), ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_gpu_tasks_are_named_fqcn_and_honest_about_changes(path: Path) -> None:
    for task in iter_tasks(load(path)):
        assert task.get("name"), f"{path}: a task without a name"
        if "block" in task:
            continue
        module = module_of(task)
        assert module in LOCAL_MODULES or module.count(".") >= 2, (
            f"{path}: {task['name']!r} uses {module} without its collection (FQCN)"
        )
        if module in ("ansible.builtin.command", "ansible.builtin.shell"):
            args = task[module] if isinstance(task[module], dict) else {}
            assert "changed_when" in task or "creates" in args or "removes" in args, (
                f"{path}: {task['name']!r} runs a command without changed_when/creates"
            )


@pytest.mark.parametrize("role", GPU_ROLES)
def test_gpu_roles_run_in_tagged_phases(role: str) -> None:
    main = load(paths.roles_dir() / role / "tasks" / "main.yml")
    assert [t["ansible.builtin.import_tasks"] for t in main] == [f"{p}.yml" for p in PHASES]
    for task, phase in zip(main, PHASES, strict=True):
        tag = {"service": "run"}.get(phase, phase)
        assert task["tags"] == [role, f"{role}_{tag}"]


@pytest.mark.parametrize("role", GPU_ROLES)
def test_gpu_role_variables_follow_the_naming_levels(role: str) -> None:
    for name in spec_options(role):
        assert name.startswith(f"{role}_"), f"{role}: public variable {name} lacks the prefix"
    for vars_file in (paths.roles_dir() / role / "vars").glob("*.yml"):
        for name in load(vars_file) or {}:
            assert name.startswith(f"_{role}_"), f"{vars_file}: internal {name} must be _{role}_*"
    text = "".join(p.read_text() for p in (paths.roles_dir() / role / "tasks").glob("*.yml"))
    for registered in re.findall(r"register: (\S+)", text):
        assert registered.startswith(f"__{role}_"), f"{role}: registered {registered}"


@pytest.mark.parametrize("role", GPU_ROLES)
def test_gpu_templates_say_they_are_managed(role: str) -> None:
    for template in (paths.roles_dir() / role / "templates").glob("*.j2"):
        first = template.read_text().splitlines()[0]
        assert first == "{{ ansible_managed | comment }}", f"{template}: first line {first!r}"


@pytest.mark.parametrize("role", GPU_ROLES)
def test_gpu_roles_have_checks_using_the_declared_state(role: str) -> None:
    check = paths.roles_dir() / role / "checks" / f"test_{role}.py"
    tree = ast.parse(check.read_text())
    tests = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]
    assert len(tests) >= 4
    for test in tests:
        assert [a.arg for a in test.args.args] == ["host", "hearth_vars"], test.name


def test_gpu_playbook_preflights_every_role_before_any_change() -> None:
    plays = load(paths.playbooks_dir() / "gpu.yml")
    assert plays[0] == {"name": "Preflight", "ansible.builtin.import_playbook": "preflight.yml"}
    preflight, layer = plays[1], plays[2]
    assert preflight["hosts"] == layer["hosts"] == "gpu_nodes"
    assert preflight["tags"] == ["always"]
    *imports, passed = preflight["tasks"]
    imported = [t["ansible.builtin.import_role"] for t in imports]
    assert imported == [{"name": r, "tasks_from": "preflight.yml"} for r in GPU_ROLES]
    # the driver role's own preflight, in the next play, does not run the same checks again
    assert passed["ansible.builtin.set_fact"] == {"nvidia_driver_preflight_passed": True}
    gate = load(paths.roles_dir() / "nvidia_driver" / "tasks" / "preflight.yml")
    assert gate[0]["ansible.builtin.include_tasks"] == "preflight-host.yml"
    assert gate[0]["when"] == "not (nvidia_driver_preflight_passed | default(false))"
    assert gate[1]["ansible.builtin.set_fact"] == {"nvidia_driver_preflight_passed": False}
    assert [r["role"] for r in layer["roles"]] == list(GPU_ROLES)


def test_site_imports_the_gpu_layer_after_the_base_layer() -> None:
    imports = [
        p.get("ansible.builtin.import_playbook") for p in load(paths.playbooks_dir() / "site.yml")
    ]
    assert imports.index("gpu.yml") > imports.index("base.yml")


def test_lab_inventory_has_a_gpu_node_with_no_device_declared(tmp_path: Path) -> None:
    state = lab.LabState(
        hosts=[lab.LabHost("lab1", "c1", "172.29.202.11"),
               lab.LabHost("lab2", "c2", "172.29.202.12")],
        private_key="/k/id", known_hosts="/k/known",
    )  # fmt: skip
    hosts = lab.write_inventory(state, tmp_path / "inv")
    assert validate_inventory(hosts.parent) == []
    inv = load_inventory(hosts.parent)
    assert inv.groups["gpu_nodes"] == ["lab1"]
    roles = roles_for_hosts(inv)
    assert set(GPU_ROLES) <= set(roles["lab1"]) and not set(GPU_ROLES) & set(roles["lab2"])
    gpu_vars = load(hosts.parent / "group_vars" / "gpu_nodes" / "gpu.yml")
    assert not any("gpu_present" in k or "device" in k for k in gpu_vars)
    assert inv.resolved_vars("lab1", roles["lab1"])["cuda_home"] == "/usr/lib/cuda"
