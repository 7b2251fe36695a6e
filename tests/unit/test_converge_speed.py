"""Converge speed (issue 14): the ``hearth_hold`` and ``hearth_paths`` modules (a package set
held, several directories made, one call each), ``hearth_packages`` / ``hearth_apt`` (apt only
when dpkg says there is something to do), and ``--strategy mitogen``'s checks (Mitogen's
supported ansible-core range, read without importing it; a clear refusal where it cannot run)."""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from conftest import VALID_GROUP_VARS_ALL, VALID_HOSTS, plugin_module

from hearth import paths, runner
from hearth.errors import EnvironmentProblem, InvalidInputError

QUERY = (
    "nvidia-smi\t535.261.03-1\tinstall ok installed\n"
    "libcuda1:amd64\t535.261.03-1\thold ok installed\n"
    "libnvidia-ml1\t535.261.03-1~deb12u1\tinstall ok installed\n"
    "nvidia-driver-bin\t535.261.030-1\tinstall ok installed\n"  # 535.261.030: another release
    "libcudart11.0\t11.8.89~11.8.0-5~deb12u1\tinstall ok installed\n"
    "docker.io\t20.10.24+dfsg1-1+deb12u1\tinstall ok installed\n"
    "oldpkg\t1.0\tdeinstall ok config-files\n"
)


def hold_module(name: str = "hearth_hold") -> ModuleType:
    return plugin_module("modules", name)


def test_query_keeps_installed_packages_with_their_selection() -> None:
    installed = hold_module().parse_query(QUERY)
    assert installed["libcuda1"] == ("535.261.03-1", "hold")  # arch qualifier dropped
    assert installed["nvidia-smi"] == ("535.261.03-1", "install")
    assert "oldpkg" not in installed  # removed, only its config files left


def test_choose_by_name_and_by_version() -> None:
    mod = hold_module()
    installed = mod.parse_query(QUERY)
    pattern = re.escape("535.261.03") + "[-~+.]"
    packages, to_hold = mod.choose(installed, ["docker.io", "absent"], ".*", pattern)
    assert packages == ["docker.io", "libcuda1", "libnvidia-ml1", "nvidia-smi"]
    assert to_hold == ["docker.io", "libnvidia-ml1", "nvidia-smi"]  # libcuda1 is held already
    packages, to_hold = mod.choose(installed, [], "^(libcu|libnv)", "^11\\.8\\.89")
    assert (packages, to_hold) == (["libcudart11.0"], ["libcudart11.0"])
    assert mod.choose(installed, ["libcuda1"], ".*", None) == (["libcuda1"], [])


def test_module_in_check_mode_reads_the_real_dpkg_and_sets_nothing(tmp_path: Path) -> None:
    """Through the real ``ansible`` CLI on this machine's dpkg: check mode only, so nothing is
    held here; the answer must agree with ``apt-mark showhold``."""
    if not Path("/usr/bin/dpkg-query").exists():
        pytest.skip("no dpkg on this machine")
    before = subprocess.run(["apt-mark", "showhold"], capture_output=True, text=True).stdout
    args = {"names": ["dpkg", "no-such-package-here"]}
    result = run_local(tmp_path, "hearth_hold", args, "--check")
    held_before = "dpkg" in before.split()
    assert result["packages"] == ["dpkg"]  # the package that is not installed is left alone
    assert result["held"] == ([] if held_before else ["dpkg"])
    assert result["changed"] is (not held_before)
    after = subprocess.run(["apt-mark", "showhold"], capture_output=True, text=True).stdout
    assert after == before


def run_local(tmp_path: Path, module: str, args: dict[str, Any], *flags: str) -> dict[str, Any]:
    """``module`` on localhost through the real ``ansible`` CLI; its result."""
    env = dict(
        os.environ,
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.minimal",
        ANSIBLE_HOME=str(tmp_path / "home"),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
    )
    env["ANSIBLE_ACTION_PLUGINS"] = str(paths.plugins_dir() / "action")
    cmd = [str(Path(sys.executable).parent / "ansible"), "-i", "localhost,", "-c", "local"]
    cmd += ["-M", str(paths.plugins_dir() / "modules"), "localhost", *flags, "-m", module]
    cmd += ["-a", json.dumps(args)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    match = re.search(r"^localhost \| ([A-Z!]+) => ", proc.stdout, re.M)
    assert match, proc.stdout + proc.stderr
    result, _ = json.JSONDecoder().raw_decode(proc.stdout[match.end() :])
    assert isinstance(result, dict)
    return {**result, "status": match.group(1)}


def test_packages_reads_versions_and_matches_apt_globs() -> None:
    mod = hold_module("hearth_packages")
    installed = mod.parse_query(QUERY)
    assert installed["nvidia-smi"] == "535.261.03-1" and "oldpkg" not in installed
    specs = [
        "nvidia-smi=535.261.03-*",  # apt's version glob
        "nvidia-driver-bin=535.261.03-*",  # 535.261.030-1: another release
        "docker.io",
        "docker.io=20.10.24+dfsg1-1+deb12u1",
        "docker.io=20.10.25*",
        "oldpkg",  # config files only: not installed
        "absent",
    ]
    assert mod.missing(installed, specs) == [
        "nvidia-driver-bin=535.261.03-*",
        "docker.io=20.10.25*",
        "oldpkg",
        "absent",
    ]
    # what hearth_apt's hold reads: installed and selected hold (config files only is not)
    held = QUERY + "gonepkg\t1.0\thold ok config-files\n"
    assert mod.held(held) == ["libcuda1"]


def apt_action() -> ModuleType:
    return plugin_module("action", "hearth_apt")


def test_apt_action_takes_the_short_way_only_for_plain_names() -> None:
    names_of = apt_action().names_of
    assert names_of({"name": ["a", "b=1.0-*"]}) == ["a", "b=1.0-*"]
    assert names_of({"pkg": "a, b"}) == ["a", "b"]
    assert names_of({"update_cache": True}) == []
    for apt_resolves in ("a>=1.0", "/tmp/x.deb", "python3-*", "a b"):
        assert names_of({"name": [apt_resolves]}) is None, apt_resolves


def test_packages_and_apt_action_read_the_real_dpkg(tmp_path: Path) -> None:
    """Through the real ``ansible`` CLI on this machine's dpkg (check mode): an installed
    package is reported and apt is not run; one at a version that is not installed goes to
    apt, whose own answer comes back."""
    if not Path("/usr/bin/dpkg-query").exists():
        pytest.skip("no dpkg on this machine")
    version = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "dpkg"], capture_output=True, text=True
    ).stdout
    read = run_local(tmp_path, "hearth_packages", {"names": ["dpkg", "no-such-package-here"]})
    assert read["installed"] == {"dpkg": version}
    assert read["missing"] == ["no-such-package-here"] and read["changed"] is False
    short = run_local(tmp_path, "hearth_apt", {"name": ["dpkg", f"dpkg={version}"]}, "--check")
    assert (short["apt_skipped"], short["changed"]) == (True, False), short
    assert short["installed"] == {"dpkg": version}
    to_apt = run_local(tmp_path, "hearth_apt", {"name": ["dpkg=0.0.0-none"]}, "--check")
    assert to_apt["apt_skipped"] is False  # apt's own answer (no such candidate, or no python-apt)
    assert to_apt["status"] == "FAILED!", to_apt
    # hold: one read says dpkg is installed but not held; check mode says it would be held,
    # and sets nothing
    assert read["held"] == []
    selection = ["dpkg", "--get-selections", "dpkg"]
    before = subprocess.run(selection, capture_output=True, text=True).stdout
    hold = run_local(tmp_path, "hearth_apt", {"name": ["dpkg"], "hold": True}, "--check")
    assert (hold["apt_skipped"], hold["changed"], hold["held"]) == (True, True, ["dpkg"]), hold
    assert subprocess.run(selection, capture_output=True, text=True).stdout == before
    refused = run_local(tmp_path, "hearth_apt", {"name": ["python3-*"], "hold": True}, "--check")
    assert refused["status"] == "FAILED!" and "name the packages plainly" in refused["msg"]
    # dpkg holds packages: on a host with another package manager, hold is refused, naming it
    dnf = run_local(tmp_path, "hearth_apt", {"name": ["dpkg"], "hold": True}, "--check",
                    "-e", "ansible_pkg_mgr=dnf")  # fmt: skip
    assert dnf["status"] == "FAILED!" and "this host uses dnf" in dnf["msg"], dnf


def test_paths_makes_alters_and_removes_in_one_call_idempotently(tmp_path: Path) -> None:
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    top, child, gone = tmp_path / "top", tmp_path / "top" / "child", tmp_path / "gone"
    (gone / "inside").mkdir(parents=True)
    args = {
        "paths": [
            {"path": str(top), "owner": user, "group": group, "mode": "2755"},
            {"path": str(child), "mode": "0750"},
            {"path": str(gone), "state": "absent"},
        ]
    }
    checked = run_local(tmp_path, "hearth_paths", args, "--check")
    assert checked["changed"] is True
    assert checked["changed_paths"] == [str(top), str(child), str(gone)]
    assert not top.exists() and gone.exists(), "check mode changed the machine"
    done = run_local(tmp_path, "hearth_paths", args)
    assert done["changed_paths"] == [str(top), str(child), str(gone)]
    assert stat.S_IMODE(top.stat().st_mode) == 0o2755 and not gone.exists()
    assert stat.S_IMODE(child.stat().st_mode) == 0o750
    again = run_local(tmp_path, "hearth_paths", args)
    assert (again["changed"], again["changed_paths"]) == (False, [])
    child.chmod(0o700)  # drift: only that directory is reported, and put back
    drifted = run_local(tmp_path, "hearth_paths", args)
    assert drifted["changed_paths"] == [str(child)]
    assert stat.S_IMODE(child.stat().st_mode) == 0o750


def test_paths_refuses_a_file_where_a_directory_belongs(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("x")
    result = run_local(tmp_path, "hearth_paths", {"paths": [{"path": str(tmp_path / "plain")}]})
    assert result["status"] == "FAILED!"
    assert result["msg"] == f"{tmp_path / 'plain'} exists and is not a directory"


def fake_mitogen(tmp_path: Path, high: tuple[int, int] | None) -> Path:
    """A Mitogen install's strategy folder; ``high`` None: its loaders.py declares no ceiling
    (Mitogen 0.3.54's does not)."""
    strategy = tmp_path / "ansible_mitogen" / "plugins" / "strategy"
    strategy.mkdir(parents=True)
    (strategy / "mitogen_linear.py").write_text("# strategy\n")
    ceiling = "" if high is None else f"ANSIBLE_VERSION_MAX = {high}\n"
    (tmp_path / "ansible_mitogen" / "loaders.py").write_text(
        f"ANSIBLE_VERSION_MIN = (2, 10)\n{ceiling}"
    )
    return strategy


def test_mitogen_missing_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "mitogen_strategy_dir", lambda: None)
    assert "not installed" in runner.mitogen_problem()
    with pytest.raises(EnvironmentProblem, match="--strategy mitogen: Mitogen is not installed"):
        runner.ansible_env(runner.Tuning(strategy="mitogen"))


def test_mitogen_outside_its_ansible_range_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from ansible.release import __version__ as core

    major, minor = (int(p) for p in core.split(".")[:2])
    strategy = fake_mitogen(tmp_path, (major, minor - 1))
    monkeypatch.setattr(runner, "mitogen_strategy_dir", lambda: strategy)
    problem = runner.mitogen_problem()
    assert f"ansible-core {core} is outside the releases the installed Mitogen supports" in problem
    assert f"2.10 to {major}.{minor - 1}" in problem


def test_mitogen_in_range_sets_the_strategy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from ansible.release import __version__ as core

    major, minor = (int(p) for p in core.split(".")[:2])
    strategy = fake_mitogen(tmp_path, (major, minor))
    monkeypatch.setattr(runner, "mitogen_strategy_dir", lambda: strategy)
    low, high = runner.MITOGEN_ANSIBLE_CORE
    if not low <= (major, minor) <= high:
        assert "the releases Hearth has run Mitogen with" in runner.mitogen_problem()
        return
    assert runner.mitogen_problem() == ""
    hearths = str(paths.plugins_dir() / "strategy")
    env = runner.ansible_env(runner.Tuning(strategy="mitogen"))
    # Hearth's subclass of mitogen_linear, which finds Mitogen's after Hearth's own folder
    assert env["ANSIBLE_STRATEGY"] == "hearth_mitogen_linear"
    assert env["ANSIBLE_STRATEGY_PLUGINS"] == f"{hearths}:{strategy}"
    assert env["HEARTH_WORK_ON_CONTROLLER"] == "1"
    untouched = runner.ansible_env(runner.Tuning(strategy="mitogen", work_on_controller=False))
    assert untouched["ANSIBLE_STRATEGY"] == "mitogen_linear"
    assert untouched["ANSIBLE_STRATEGY_PLUGINS"] == str(strategy)
    assert untouched["HEARTH_WORK_ON_CONTROLLER"] == "0"
    monkeypatch.delenv("HEARTH_STRATEGY", raising=False)  # the default where it can run
    assert runner.ansible_env(runner.Tuning())["ANSIBLE_STRATEGY"] == "hearth_mitogen_linear"
    monkeypatch.setenv("HEARTH_STRATEGY", "linear")  # Ansible's linear, asked for
    assert runner.ansible_env(runner.Tuning())["ANSIBLE_STRATEGY"] == "hearth_linear"
    monkeypatch.setenv("HEARTH_STRATEGY", "mitogen")
    assert runner.ansible_env(runner.Tuning())["ANSIBLE_STRATEGY"] == "hearth_mitogen_linear"


def test_without_mitogen_the_default_is_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HEARTH_STRATEGY", raising=False)
    monkeypatch.setattr(runner, "mitogen_strategy_dir", lambda: None)
    assert runner.Tuning().strategy == "linear"
    env = runner.ansible_env(runner.Tuning())
    assert env["ANSIBLE_STRATEGY"] == "hearth_linear"
    assert env["ANSIBLE_STRATEGY_PLUGINS"] == str(paths.plugins_dir() / "strategy")
    assert "ANSIBLE_STRATEGY" not in runner.ansible_env(runner.Tuning(work_on_controller=False))


def test_mitogen_with_a_floor_only_is_bounded_by_hearths_range(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from ansible.release import __version__ as core

    strategy = fake_mitogen(tmp_path, None)
    monkeypatch.setattr(runner, "mitogen_strategy_dir", lambda: strategy)
    low, high = runner.MITOGEN_ANSIBLE_CORE
    have = tuple(int(p) for p in core.split(".")[:2])
    if low <= have <= high:
        assert runner.mitogen_problem() == ""
    else:
        assert "the releases Hearth has run Mitogen with" in runner.mitogen_problem()
    monkeypatch.setattr(runner, "MITOGEN_ANSIBLE_CORE", ((2, 10), (have[0], have[1] - 1)))
    problem = runner.mitogen_problem()
    assert f"ansible-core {core} is outside the releases the installed Mitogen supports" in problem
    assert f"2.10 to {have[0]}.{have[1] - 1}" in problem


def test_unknown_strategy_is_invalid_input() -> None:
    with pytest.raises(InvalidInputError, match="--strategy free: expected one of linear, mitogen"):
        runner.ansible_env(runner.Tuning(strategy="free"))


# Facts the roles may read only as ansible_facts[...]: Hearth runs with ANSIBLE_INJECT_FACT_VARS
# off (no top-level copies), where a bare `hearth_gpus | default([])` would quietly be empty.
_GATHERED = (
    "distribution|distribution_\\w+|os_family|kernel|kernel_version|architecture|machine|"
    "service_mgr|pkg_mgr|system|hostname|nodename|fqdn|domain|machine_id|processor\\w*|"
    "memtotal_mb|memfree_mb|default_ipv4|default_ipv6|all_ipv4_addresses|lsb|selinux|apparmor|"
    "virtualization_\\w+|date_time|env|user_id|mounts|devices|local|python"
)


def _top_level_fact_reads(text: str, names: list[str]) -> list[str]:
    bare = "|".join([f"ansible_(?:{_GATHERED})", *names])
    # A name not reached through ansible_facts[...] / ansible_facts.x / hostvars[h][...]: not
    # after a quote, a dot or a word character.
    pattern = re.compile(rf"(?<![\w'\".])(?:{bare})\b")
    return [m.group(0) for m in pattern.finditer(text)]


def test_facts_are_not_copied_to_top_level_variables() -> None:
    assert (
        runner.ansible_env(runner.Tuning(strategy="linear"))["ANSIBLE_INJECT_FACT_VARS"] == "False"
    )
    cfg = (paths.content_root() / "ansible.cfg").read_text()
    assert re.search(r"^inject_facts_as_vars = false$", cfg, re.M), "ansible.cfg must match"


def test_no_role_reads_a_fact_as_a_top_level_variable() -> None:
    module = (paths.plugins_dir() / "modules" / "gpu_facts.py").read_text()
    found = re.search(r'RETURN = r"""(.*?)"""', module, re.S)
    assert found, "gpu_facts.py has no RETURN"
    returned = yaml.safe_load(found[1])
    names = sorted(returned["ansible_facts"]["contains"])
    assert "hearth_gpus" in names and "hearth_gpu_present" in names
    # The scan finds what it is for: the read this test was written against.
    assert _top_level_fact_reads("x | hearth_vram_plan(d, hearth_gpus | default([]), h)", names)
    assert _top_level_fact_reads("when: ansible_distribution == 'Debian'", names)
    assert not _top_level_fact_reads(
        "ansible_facts['hearth_gpus'] + ansible_facts.hearth_gpu_present "
        "+ hostvars[h]['hearth_gpus'] + ansible_python_interpreter",
        names,
    )
    root = paths.content_root()
    found = []
    for folder in ("roles", "playbooks", "templates"):
        for path in sorted((root / folder).rglob("*")):
            if path.suffix not in (".yml", ".yaml", ".j2") or not path.is_file():
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if line.lstrip().startswith("#"):
                    continue
                found += [
                    f"{path.relative_to(root)}:{number}: {hit}"
                    for hit in _top_level_fact_reads(line, names)
                ]
    assert not found, "read these as ansible_facts[...]:\n" + "\n".join(found)


def test_hearth_up_tells_the_playbook_its_preflight_passed(
    make_inventory: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`hearth up` runs hearth.preflight on the control node before Ansible starts; the
    playbooks' own preflight (the same function, for ansible-playbook run by hand) is then one
    skipped include per layer, not three tasks and a second validation of the inventory."""
    from click.testing import CliRunner

    from hearth import cli as cli_module

    seen: dict[str, Any] = {}

    def run_playbook(playbook: str, inventory: Path, **kwargs: Any) -> Any:
        seen.update(kwargs.get("extravars") or {})
        raise SystemExit(0)

    monkeypatch.setattr(runner, "run_playbook", run_playbook)
    monkeypatch.setattr(cli_module, "_ensure_collections", lambda: None)
    hosts = VALID_HOSTS.replace("      vars:\n        common_swappiness: 5\n", "")
    all_vars = VALID_GROUP_VARS_ALL + "monitoring_tls: false\n"
    inventory = make_inventory({"hosts.yml": hosts, "group_vars/all.yml": all_vars})
    done = CliRunner().invoke(cli_module.cli, ["up", "-i", str(inventory)])
    assert done.exit_code == 0, str(done.exception)
    assert seen == {"hearth_preflight_done": True}
    # A refused inventory never reaches the playbook (exit 2, no host contacted).
    seen.clear()
    bad = make_inventory({"hosts.yml": hosts.replace("lab-a", "[not, a, name]")}, name="bad")
    done = CliRunner().invoke(cli_module.cli, ["up", "-i", str(bad)])
    assert isinstance(done.exception, InvalidInputError), done.output  # exit 2 from `hearth`
    assert seen == {}
    # Neither flag that skips a preflight can come from an inventory: both are refused there.
    for flag in ("hearth_preflight_done", "nvidia_driver_preflight_passed"):
        flagged = make_inventory(
            {"hosts.yml": hosts, "group_vars/all.yml": all_vars + f"{flag}: true\n"}, name=flag
        )
        done = CliRunner().invoke(cli_module.cli, ["up", "-i", str(flagged)])
        assert isinstance(done.exception, InvalidInputError), done.output
        message = done.exception.message
        assert f": {flag} = " in message and "unknown Hearth variable" in message, message
        assert seen == {}
    # The playbook skips its own checks only when told so.
    play = yaml.safe_load((paths.playbooks_dir() / "preflight.yml").read_text())[0]
    (gate,) = play["tasks"]
    assert gate["when"] == "not (hearth_preflight_done | default(false))"
    assert gate["ansible.builtin.include_tasks"]["file"] == "tasks/control-node.yml"
    # So does every role's hearth_preflight task (a condition: skipped on the controller)
    checks = [
        (path.relative_to(paths.roles_dir()), task)
        for path in sorted(paths.roles_dir().glob("*/tasks/*.yml"))
        for task in yaml.safe_load(path.read_text()) or []
        if "hearth_preflight" in task
    ]
    assert len(checks) >= 13
    for where, task in checks:
        when = task.get("when")
        conditions = when if isinstance(when, list) else [when]
        assert conditions[0] == "not (hearth_preflight_done | default(false))", where
