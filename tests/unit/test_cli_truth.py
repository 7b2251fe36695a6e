"""Unit tests of what the CLI and the runner tell the operator, with no host: how the audit
connects (every Ansible connection setting honoured or refused), report-only standard output,
the audit's crash exit code, ``--diff`` and a host that goes away (on recorded runner events),
and tables that keep their width off a terminal."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from hearth import audit, audit_plugin, report, runner
from hearth.errors import EXIT_AUDIT_CRASHED, AuditCrashedError, InvalidInputError, UnreachableError

EVENTS = Path(__file__).parent.parent / "fixtures" / "runner-events"
BASE = {"ansible_host": "10.1.2.3", "ansible_user": "root"}


def _event(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return data


# ---------------------------------------------------------------------------- audit connection
def test_jump_host_through_proxycommand_and_proxyjump() -> None:
    proxy = "ssh -i /keys/id -W %h:%p root@10.0.0.1"
    conn = audit.connection_for(
        "gpu02", {**BASE, "ansible_ssh_common_args": f'-o ProxyCommand="{proxy}"'}
    )
    assert conn.option("ProxyCommand") == proxy
    jump = audit.connection_for(
        "gpu03", {**BASE, "ansible_ssh_extra_args": "-J admin@bastion:2222"}
    )
    assert jump.option("ProxyJump") == "admin@bastion:2222"
    spaced = audit.connection_for("gpu04", {**BASE, "ansible_ssh_common_args": "-o 'ProxyJump b1'"})
    assert spaced.option("ProxyJump") == "b1"


def test_connection_options_keep_ansibles_order_first_value_wins(tmp_path: Path) -> None:
    hostvars = {
        "ansible_host": "10.1.2.3",
        "ansible_port": 2222,
        "ansible_user": "deploy",
        "ansible_ssh_private_key_file": "/keys/id",
        "ansible_host_key_checking": False,
        # Ansible puts -o Port/-o User before the common args: ssh keeps the first value
        "ansible_ssh_common_args": "-p 22 -l other -o 'UserKnownHostsFile=/kh dir/known'",
        "ansible_ssh_extra_args": "-C -4",
    }
    conn = audit.connection_for("gpu01", hostvars)
    assert conn.option("Port") == "2222" and conn.option("User") == "deploy"
    assert conn.option("StrictHostKeyChecking") == "no"
    assert conn.option("Compression") == "yes" and conn.option("AddressFamily") == "inet"
    config = audit.write_ssh_config({"gpu01": conn}, tmp_path).read_text()
    assert "    Port 2222\n" in config and "Port 22\n" not in config
    assert '    UserKnownHostsFile "/kh dir/known"\n' in config
    assert "Include ~/.ssh/config" in config  # the operator's ssh configuration, as Ansible's


def test_proxycommand_is_written_unquoted_to_the_ssh_config(tmp_path: Path) -> None:
    proxy = "ssh -o UserKnownHostsFile=/kh -W %h:%p root@10.0.0.1"
    conn = audit.connection_for(
        "gpu02", {**BASE, "ansible_ssh_common_args": f"-o 'ProxyCommand={proxy}'"}
    )
    config = audit.write_ssh_config({"gpu02": conn}, tmp_path).read_text()
    assert f"    ProxyCommand {proxy}\n" in config
    checked = subprocess.run(
        ["ssh", "-G", "-F", str(tmp_path / "ssh_config"), "gpu02"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert f"proxycommand {proxy}" in checked and "hostname 10.1.2.3" in checked


@pytest.mark.parametrize(
    ("hostvars", "var"),
    [
        ({"ansible_connection": "paramiko"}, "ansible_connection"),
        ({"ansible_connection": "winrm"}, "ansible_connection"),
        ({"ansible_password": "x"}, "ansible_password"),
        ({"ansible_ssh_pass": "x"}, "ansible_ssh_pass"),
        ({"ansible_ssh_executable": "/opt/ssh"}, "ansible_ssh_executable"),
        ({"ansible_become_method": "su"}, "ansible_become_method"),
        ({"ansible_become_exe": "doas"}, "ansible_become_exe"),
        ({"ansible_become_flags": "-E"}, "ansible_become_flags"),
        ({"ansible_ssh_common_args": "-F /etc/other_config"}, "ansible_ssh_common_args"),
        ({"ansible_ssh_extra_args": "-o ProxyCommand"}, "ansible_ssh_extra_args"),
        ({"ansible_ssh_args": "-R 80:localhost:80"}, "ansible_ssh_args"),
        ({"ansible_ssh_common_args": "-o 'unbalanced"}, "ansible_ssh_common_args"),
        ({"ansible_ssh_frobnicate": "yes"}, "ansible_ssh_frobnicate"),
        ({"ansible_become_password": "{{ vault_sudo }}"}, "ansible_become_password"),
    ],
)
def test_settings_the_audit_cannot_honour_are_refused(hostvars: dict[str, Any], var: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        audit.connection_for("gpu01", {**BASE, **hostvars})
    assert err.value.exit_code == 2
    assert err.value.message.startswith(f"gpu01: {var}: ")
    assert "x" not in hostvars.get("ansible_password", "") or "'x'" not in err.value.message


@pytest.mark.parametrize(
    ("hostvars", "spec"),
    [
        ({}, "ssh://h"),  # root, becoming root: nothing to do
        ({"ansible_user": "deploy"}, "ssh://h?sudo=true"),  # Hearth's plays say become: true
        ({"ansible_user": "deploy", "ansible_become": False}, "ssh://h"),
        ({"ansible_user": "deploy", "ansible_become": "no"}, "ssh://h"),
        ({"ansible_become_user": "postgres"}, "ssh://h?sudo=true&sudo_user=postgres"),
    ],
)
def test_become_as_ansible_would(hostvars: dict[str, Any], spec: str) -> None:
    assert audit.connection_for("h", {**BASE, **hostvars}).spec() == spec


def test_become_password_is_kept_but_never_shown() -> None:
    conn = audit.connection_for(
        "h", {**BASE, "ansible_user": "deploy", "ansible_become_pass": "s3cr3t-pw"}
    )
    assert conn.become and conn.become_password == "s3cr3t-pw"
    assert "s3cr3t-pw" not in repr(conn) and "s3cr3t-pw" not in conn.spec()


def test_sudo_password_goes_to_standard_input_never_the_command_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from testinfra.backend.ssh import SshBackend

    monkeypatch.setattr(SshBackend, "get_sudo_command", SshBackend.get_sudo_command)
    monkeypatch.setattr(SshBackend, "run_local", SshBackend.run_local)
    monkeypatch.setattr(audit_plugin, "_PASSWORDS", {"gpu01": "s3cr3t-pw"})
    audit_plugin._install_sudo_password()
    backend = SshBackend("gpu01", sudo=True)
    command = backend.get_command("id -u")
    assert command.startswith("sudo -k -S -p '' /bin/sh -c") and "s3cr3t-pw" not in command
    ssh_cmd, ssh_args = backend._build_ssh_command(command)
    assert "s3cr3t-pw" not in " ".join(ssh_cmd + ssh_args)
    # run_local feeds the password on stdin: a local `cat` (standing in for sudo -S) reads it
    assert backend.run_local("cat").stdout == "s3cr3t-pw\n"
    other = SshBackend("gpu02", sudo=True)
    assert other.get_command("id -u") == "sudo /bin/sh -c 'id -u'"
    assert other.run_local("cat").stdout == ""


def _inventory(tmp_path: Path, host_line: str) -> Path:
    inv = tmp_path / "inv"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "group_vars" / "all" / "monitoring.yml").write_text("monitoring_tls: false\n")
    (inv / "hosts.yml").write_text(
        "all:\n  hosts:\n    gpu01:\n      ansible_host: 127.0.0.9\n"
        f"      ansible_port: 9\n      {host_line}\n"
    )
    return inv / "hosts.yml"


def test_hearth_audit_refuses_before_contacting_any_host(tmp_path: Path) -> None:
    inventory = _inventory(tmp_path, "ansible_connection: paramiko")
    done = subprocess.run(
        [sys.executable, "-m", "hearth", "audit", "-i", str(inventory)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "gpu01: ansible_connection: 'paramiko'" in done.stderr
    assert "unreachable" not in done.stdout + done.stderr  # refused, never tried


# ------------------------------------------------------------------------------ audit output
def _result() -> audit.AuditResult:
    long_check = "test_the_front_door_key_file_holds_exactly_the_declared_key_hashes"
    return audit.AuditResult(
        results=[
            audit.CheckResult("lab1", "front_door", long_check, "passed", "", 0.1),
            audit.CheckResult(
                "lab2",
                "common",
                "test_time_sync",
                "failed",
                "chrony: expected running, found stopped " + "and a long explanation " * 8,
                0.2,
            ),
        ],
        roles={"lab1": ["front_door"], "lab2": ["common"]},
    )


def test_json_format_without_output_writes_only_json_to_stdout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from click.testing import CliRunner

    from hearth import cli

    monkeypatch.setattr(cli, "_validated", lambda *a: object())
    monkeypatch.setattr(audit, "run_audit", lambda *a, **k: _result())
    err = io.StringIO()
    monkeypatch.setattr(cli, "err_console", Console(file=err, width=200))
    done = CliRunner().invoke(cli.cli, ["audit", "-i", "x", "--format", "json"])
    assert done.exit_code != 0  # a failed check: AuditFailedError, handled by main()
    data = json.loads(done.stdout)  # nothing but the report on standard output
    assert data["summary"]["failed"] == 1
    assert "test_time_sync" in err.getvalue() and "FAILED" in err.getvalue()


def test_workers_help_says_the_real_default() -> None:
    from click.testing import CliRunner

    from hearth.cli import cli

    text = CliRunner().invoke(cli, ["audit", "--help"]).stdout
    assert "two per host reached, at most 8" in " ".join(text.split())
    assert [audit.default_workers(n) for n in (1, 3, 4, 10)] == [2, 6, 8, 8]


def test_a_crashed_audit_has_its_own_exit_code() -> None:
    assert AuditCrashedError("x").exit_code == EXIT_AUDIT_CRASHED == 7
    assert EXIT_AUDIT_CRASHED not in (0, 1, 2, 3, 4, 5, 6)
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert "`7` the audit\nitself crashed" in readme


def test_a_check_module_that_cannot_import_is_recorded_as_a_crash(tmp_path: Path) -> None:
    """The audit's pytest plugin, run on a check module that fails to import (no host needed)."""
    broken = tmp_path / "test_broken.py"
    broken.write_text("import hearth_no_such_module\n\n\ndef test_x():\n    pass\n")
    results = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(broken), "-p", "hearth.audit_plugin",
         "-p", "no:cacheprovider", "-n", "1", "-q", "-o", "addopts=", "--rootdir", str(tmp_path)],
        capture_output=True, text=True, check=False,
        env={**os.environ, "HEARTH_AUDIT_RESULTS": str(results)},
    )  # fmt: skip
    assert done.returncode not in (0, 5), done.stdout + done.stderr
    crashes = [r for r in json.loads(results.read_text()) if r["outcome"] == "crash"]
    assert len(crashes) == 1 and "hearth_no_such_module" in crashes[0]["message"]


def test_tables_off_a_terminal_keep_check_names_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    buffer = io.StringIO()
    console = report.make_console(file=buffer)
    assert not console.is_terminal and console.width == report.NON_TTY_WIDTH
    report.print_table(_result(), console)
    text = buffer.getvalue()
    assert "test_the_front_door_key_file_holds_exactly_the_declared_key_hashes" in text
    assert "chrony: expected running, found stopped" in text
    monkeypatch.setenv("COLUMNS", "120")
    assert report.make_console(file=io.StringIO()).width == 120


def test_plan_table_piped_shows_the_model_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from test_plan import write_inventory

    from hearth import plan

    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setenv("HEARTH_HOME", str(tmp_path / "home"))
    result = plan.plan_inventory(write_inventory(tmp_path / "inv"), use_facts=False)
    buffer = io.StringIO()
    console = report.make_console(file=buffer)
    for table in plan.tables(result):
        console.print(table)
    assert "llama-8b@" in buffer.getvalue() and "qwen-7b@" in buffer.getvalue()


# ------------------------------------------------------------------------- runner: --diff
def test_recorded_diff_event_becomes_a_unified_diff() -> None:
    event = runner._event_to_task_event(_event("runner_on_file_diff"))
    assert event is not None and event.status == "diff" and event.host == "lab1"
    assert event.task == "Write the mark"
    lines = event.message.splitlines()
    assert lines[0].startswith("--- before") and lines[1] == "+++ after: /etc/hearth-mark"
    assert "+lab1 reached as second" in lines and "-lab1 reached as first" in lines


def test_no_log_task_diff_is_never_shown() -> None:
    raw = _event("runner_on_file_diff_no_log")
    assert raw["event_data"]["diff"] is None  # recorded: Ansible censors it
    assert runner._event_to_task_event(raw) is None
    assert runner.diff_text([{"prepared": "changed 3 lines"}]) == "changed 3 lines"


def test_up_prints_the_diff(monkeypatch: pytest.MonkeyPatch) -> None:
    from hearth import cli

    out = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, width=200))
    event = runner._event_to_task_event(_event("runner_on_file_diff"))
    cli._progress_printer(False)(event)
    assert "+lab1 reached as second" in out.getvalue() and "/etc/hearth-mark" in out.getvalue()


# -------------------------------------------------------------- runner: a host goes away
def test_host_that_went_away_is_unreachable_and_named(tmp_path: Path) -> None:
    reached, gone = _event("runner_on_ok_lab2_reached"), _event("runner_on_unreachable_went_away")
    read = runner.EventReader()
    assert read(reached) is not None
    event = read(gone)
    assert event is not None and event.status == "unreachable"
    assert event.message == "lab2 went away during Sleep a while"
    # a host never reached keeps Ansible's own reason
    first = runner.EventReader()(gone)
    assert first is not None and "Data could not be sent" in first.message

    stats = {"ok": {"lab1": 2, "lab2": 1}, "dark": {"lab2": 1}}
    done = SimpleNamespace(status="failed", rc=4, events=[reached, gone], stats=stats)
    result = runner._collect(done, tmp_path)
    with pytest.raises(UnreachableError, match="lab2 went away during Sleep a while") as err:
        result.raise_for_status()
    assert err.value.exit_code == 4


def test_a_cut_session_reported_as_module_failure_is_unreachable(tmp_path: Path) -> None:
    """Ansible reports a session cut under a pipelined module as MODULE FAILURE (no JSON)."""
    reached, raw = _event("runner_on_ok_lab2_reached"), _event("runner_on_unreachable_went_away")
    raw["event"] = "runner_on_failed"
    raw["event_data"]["res"] = {
        "msg": "MODULE FAILURE\nSee stdout/stderr for the exact error", "rc": 137,
        "module_stdout": "", "module_stderr": "Shared connection to 172.29.204.12 closed.\r\n",
        "changed": False,
    }  # fmt: skip
    event = runner.EventReader()(raw)
    assert event is not None and event.status == "unreachable"
    assert event.message == "lab2 went away during Sleep a while"

    stats = {"ok": {"lab2": 1}, "failures": {"lab2": 1}}
    done = SimpleNamespace(status="failed", rc=2, events=[reached, raw], stats=stats)
    result = runner._collect(done, tmp_path)
    assert result.failed_hosts == [] and result.unreachable_hosts == ["lab2"]
    with pytest.raises(UnreachableError, match="lab2 went away during Sleep a while"):
        result.raise_for_status()


def test_a_real_module_failure_stays_a_failure() -> None:
    event = runner._event_to_task_event(_event("runner_on_failed"))
    assert event is not None and event.status == "failed"
    crash = {"msg": "MODULE FAILURE\nSee stdout/stderr for the exact error", "rc": 1,
             "module_stdout": "", "module_stderr": "Traceback ...\nKeyError: 'x'\n"}  # fmt: skip
    assert not runner.went_away(crash)
    assert runner.went_away({**crash, "module_stderr": "Shared connection to 10.0.0.2 closed.\r\n"})
