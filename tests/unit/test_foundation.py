"""Unit tests of the foundation's pieces that need no host: runner events and results, reports,
the ssh config the audit writes, collection vendoring, lab naming, the CLI's exit codes, and the
roles' argument specs against their defaults."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from hearth import audit, lab, paths, report, runner, vendor
from hearth.cli import cli
from hearth.errors import HearthError, RunFailedError, UnreachableError

EVENTS = Path(__file__).parent.parent / "fixtures" / "runner-events"


def _event(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return data


# ------------------------------------------------------------------------------ runner events
@pytest.mark.parametrize(
    ("name", "host", "status", "task", "role", "message"),
    [
        ("runner_on_ok", "lab1", "ok", "Gathering Facts", "", ""),
        ("runner_on_ok_changed", "lab1", "changed", "Create Hearth's directories", "common", ""),
        ("runner_on_skipped", "localhost", "skipped", "Remember that the preflight passed", "", ""),
        (
            "runner_on_failed",
            "lab3",
            "failed",
            "Install the base packages (apt)",
            "common",
            "No package matching 'curl' is available",
        ),
    ],
)
def test_recorded_events_become_task_events(
    name: str, host: str, status: str, task: str, role: str, message: str
) -> None:
    event = runner._event_to_task_event(_event(name))
    assert event is not None
    assert (event.host, event.status, event.task, event.role, event.message) == (
        host,
        status,
        task,
        role,
        message,
    )


def test_unreachable_event_keeps_the_reason() -> None:
    event = runner._event_to_task_event(_event("runner_on_unreachable"))
    assert event is not None and event.status == "unreachable" and event.host == "lab3"
    assert "could not be sent to remote host" in event.message


def test_role_reports_become_notices_shown_by_default() -> None:
    raw = _event("runner_on_ok")
    raw["event_data"]["task_action"] = "ansible.builtin.debug"
    raw["event_data"]["res"] = {"msg": "SKIPPED on lab1: no NVIDIA device", "changed": False}
    event = runner._event_to_task_event(raw)
    assert event is not None
    assert (event.status, event.message) == ("notice", "SKIPPED on lab1: no NVIDIA device")
    raw["event_data"]["res"] = {"msg": "all good", "changed": False}
    plain = runner._event_to_task_event(raw)
    assert plain is not None and plain.status == "ok"


def test_non_host_events_are_ignored() -> None:
    assert (
        runner._event_to_task_event({"event": "playbook_on_task_start", "event_data": {}}) is None
    )
    assert (
        runner._event_to_task_event({"event": "runner_on_start", "event_data": {"host": "a"}})
        is None
    )


def test_ignored_failure_is_not_a_failure() -> None:
    raw = _event("runner_on_failed")
    raw["event_data"]["ignore_errors"] = True
    event = runner._event_to_task_event(raw)
    assert event is not None and event.status == "ignored"


class _FakeRunner:
    """The three attributes of ansible_runner.Runner that _collect reads (shape recorded above)."""

    def __init__(self, stats: dict[str, dict[str, int]], events: list[dict[str, Any]], rc: int):
        self.stats, self.events, self.rc = stats, events, rc
        self.status = "successful" if rc == 0 else "failed"


def test_result_from_stats_and_exit_codes(tmp_path: Path) -> None:
    stats = {
        "ok": {"lab1": 20, "lab2": 20},
        "changed": {"lab1": 2},
        "dark": {"lab3": 1},
        "failures": {},
        "skipped": {"lab1": 1},
    }
    result = runner._collect(_FakeRunner(stats, [_event("runner_on_unreachable")], 4), tmp_path)
    assert result.changed == 2
    assert result.unreachable_hosts == ["lab3"] and result.failed_hosts == []
    assert result.hosts["lab1"].skipped == 1 and result.hosts["lab3"].unreachable == 1
    with pytest.raises(
        UnreachableError, match="unreachable: lab3 — the other hosts were converged"
    ):
        result.raise_for_status()

    stats["failures"] = {"lab3": 1}
    stats["dark"] = {}
    failed = runner._collect(_FakeRunner(stats, [_event("runner_on_failed")], 2), tmp_path)
    with pytest.raises(RunFailedError, match="lab3: Install the base packages"):
        failed.raise_for_status()
    assert RunFailedError("x").exit_code == 3 and UnreachableError("x").exit_code == 4


def test_tuned_and_default_environments_differ_only_in_tuning() -> None:
    tuned, default = (
        runner.ansible_env(runner.Tuning()),
        runner.ansible_env(runner.Tuning.ansible_defaults()),
    )
    assert tuned["ANSIBLE_PIPELINING"] == "True" and default["ANSIBLE_PIPELINING"] == "False"
    assert "ControlPersist=15m" in tuned["ANSIBLE_SSH_ARGS"]
    assert "ControlPersist=60s" in default["ANSIBLE_SSH_ARGS"]
    assert tuned["ANSIBLE_CACHE_PLUGIN"] == "jsonfile" and "ANSIBLE_CACHE_PLUGIN" not in default
    assert tuned["ANSIBLE_ROLES_PATH"] == default["ANSIBLE_ROLES_PATH"] == str(paths.roles_dir())


def test_fact_cache_is_per_inventory(tmp_path: Path) -> None:
    staging = runner.ansible_env(inventory=tmp_path / "staging" / "hosts.yml")
    production = runner.ansible_env(inventory=tmp_path / "production" / "hosts.yml")
    same = runner.ansible_env(inventory=tmp_path / "staging" / "." / "hosts.yml")
    key = "ANSIBLE_CACHE_PLUGIN_CONNECTION"
    assert staging[key] != production[key], "two inventories share a fact cache"
    assert staging[key] == same[key]
    assert Path(staging[key]).parent == paths.hearth_home() / "facts"


# ------------------------------------------------------------------------------------- reports
def _audit_result() -> audit.AuditResult:
    return audit.AuditResult(
        results=[
            audit.CheckResult("lab1", "common", "test_sysctl", "passed", "", 0.12),
            audit.CheckResult(
                "lab1",
                "common",
                "test_time_sync",
                "failed",
                "chrony: expected running, found <stopped>",
                0.2,
            ),
        ],
        roles={"lab1": ["common"], "lab2": ["common"]},
        unreachable={"lab2": "ssh: connect to host 10.0.0.2 port 22: No route to host"},
    )


def test_json_report_counts() -> None:
    data = json.loads(report.to_json(_audit_result()))
    assert data["ok"] is False
    assert data["summary"] == {
        "hosts": 2, "checks": 2, "passed": 1, "failed": 1, "error": 0, "skipped": 0,
        "unreachable": 1,
    }  # fmt: skip
    assert data["hosts"]["lab2"]["unreachable"].startswith("ssh: connect")
    assert (
        data["hosts"]["lab1"]["checks"][1]["message"] == "chrony: expected running, found <stopped>"
    )


def test_junit_report_is_valid_xml_with_failures_and_errors() -> None:
    root = ET.fromstring(report.to_junit(_audit_result()).split("\n", 1)[1])
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert suites["lab1"].get("failures") == "1" and suites["lab1"].get("tests") == "2"
    assert suites["lab2"].get("errors") == "1"
    failure = root.find(".//testcase[@name='test_time_sync']/failure")
    assert failure is not None and "found <stopped>" in (failure.get("message") or "")


def test_html_report_escapes_messages() -> None:
    page = report.to_html(_audit_result())
    assert "found &lt;stopped&gt;" in page and "<stopped>" not in page
    assert "FAILED" in page and 'id="lab2"' in page


def test_audit_failure_message_names_host_and_check() -> None:
    with pytest.raises(HearthError) as err:
        _audit_result().raise_for_status()
    assert err.value.exit_code == 5
    assert "lab1: common/test_time_sync: chrony: expected running" in err.value.message
    assert "lab2: unreachable: ssh: connect" in err.value.message


# ------------------------------------------------------------------------------ audit ssh config
def test_ssh_config_from_ansible_connection_vars(tmp_path: Path) -> None:
    hostvars = {
        "inventory_hostname": "gpu01",
        "ansible_host": "10.1.2.3",
        "ansible_port": 2222,
        "ansible_user": "deploy",
        "ansible_ssh_private_key_file": "/keys/id",
        "ansible_ssh_common_args": "-o UserKnownHostsFile=/kh -o StrictHostKeyChecking=accept-new",
        "ansible_ssh_extra_args": "-oProxyJump=bastion",
    }
    config = audit.write_ssh_config({"gpu01": hostvars}, tmp_path).read_text()
    for line in (
        "Host gpu01", "HostName 10.1.2.3", "Port 2222", "User deploy", "IdentityFile /keys/id",
        "UserKnownHostsFile /kh", "StrictHostKeyChecking accept-new", "ProxyJump bastion",
        "ControlMaster auto",
    ):  # fmt: skip
        assert f"\n    {line}" in "\n" + config or config.startswith(line), line


# ---------------------------------------------------------------------------------- collections
def _fake_wheel(tmp_path: Path, version: str) -> Path:
    wheel = tmp_path / "ansible-x.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name in vendor.pins()["collections"]:
            ns, coll = name.split(".")
            manifest = {"collection_info": {"namespace": ns, "name": coll, "version": version}}
            archive.writestr(f"ansible_collections/{ns}/{coll}/MANIFEST.json", json.dumps(manifest))
        archive.writestr("ansible_collections/other/thing/MANIFEST.json", "{}")
    return wheel


def test_collections_refuse_a_wheel_with_another_sha256(tmp_path: Path) -> None:
    wheel = _fake_wheel(tmp_path, "1.0.0")
    with pytest.raises(HearthError, match="does not match the pinned"):
        vendor.install(wheel=wheel, target=tmp_path / "target")
    assert not (tmp_path / "target").exists()


def test_collections_extract_only_the_pinned_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pins = vendor.pins()
    wheel = _fake_wheel(tmp_path, "0")
    versions = dict(pins["collections"])
    # rebuild the wheel with the pinned versions, and pin its own sha256 for this test
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, version in versions.items():
            ns, coll = name.split(".")
            info = {"collection_info": {"namespace": ns, "name": coll, "version": version}}
            archive.writestr(f"ansible_collections/{ns}/{coll}/MANIFEST.json", json.dumps(info))
        archive.writestr("ansible_collections/other/thing/MANIFEST.json", "{}")
    pins["source"]["sha256"] = hashlib.sha256(wheel.read_bytes()).hexdigest()
    monkeypatch.setattr(vendor, "pins", lambda: pins)
    installed = vendor.install(wheel=wheel, target=tmp_path / "target")
    assert installed == versions
    assert not (tmp_path / "target" / "ansible_collections" / "other").exists()
    assert vendor.missing(tmp_path / "target") == []


def test_pinned_collections_are_the_ones_the_roles_use() -> None:
    used: set[str] = set()
    for task_file in paths.roles_dir().glob("*/*/*.yml"):
        for line in task_file.read_text().splitlines():
            stripped = line.strip().rstrip(":")
            if stripped.count(".") == 2 and stripped.split(".")[0] in ("community", "ansible"):
                namespace, name, _module = stripped.split(".")
                if namespace != "ansible" or name != "builtin":
                    used.add(f"{namespace}.{name}")
    assert used, "no collection module found: the scan is broken"
    assert used <= set(vendor.pins()["collections"]), used - set(vendor.pins()["collections"])


# ---------------------------------------------------------------------------------------- lab
def test_lab_names_are_namespaced_by_lab_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEARTH_LAB_ID", "0")
    assert (lab.container_name(1), lab.network_name(False), lab.subnet(False)) == (
        "hearth-lab1", "hearth-lab", "172.29.200.0/24",
    )  # fmt: skip
    monkeypatch.setenv("HEARTH_LAB_ID", "7")
    assert lab.container_name(2) == "hearth-lab-7-2"
    assert lab.network_name(True) == "hearth-lab-7-airgap"
    assert lab.subnet(True) == "172.29.215.0/24"
    assert lab.host_address(0, True) == "172.29.215.11"
    monkeypatch.setenv("HEARTH_LAB_ID", "x")
    with pytest.raises(HearthError, match="HEARTH_LAB_ID='x'"):
        lab.lab_id()


def test_lab_image_tag_follows_the_recipe() -> None:
    tag = lab.image_tag()
    assert tag.startswith("hearth-lab-base:") and len(tag.split(":")[1]) == 12
    assert lab.image_tag() == tag


def test_lab_inventory_is_valid_for_hearth(tmp_path: Path) -> None:
    from hearth.inventory import validate_inventory

    state = lab.LabState(
        hosts=[
            lab.LabHost("lab1", "c1", "172.29.200.11"),
            lab.LabHost("lab2", "c2", "172.29.200.12"),
        ],
        private_key="/k/id_ed25519",
        known_hosts="/k/known_hosts",
    )
    inventory = lab.write_inventory(state, tmp_path)
    assert validate_inventory(inventory) == []
    data = yaml.safe_load(inventory.read_text())
    assert data["all"]["children"]["lab"]["hosts"]["lab2"] == {"ansible_host": "172.29.200.12"}


# ---------------------------------------------------------------------------------------- CLI
def test_cli_check_refuses_the_sample_until_tls_init(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The sample is a real site's starting point, closed by default: `hearth check` refuses it
    (exit 2) until `hearth tls init` has issued the monitoring certificates and written the
    password, and says so."""
    from hearth.cli import main

    monkeypatch.setenv("HEARTH_HOME", str(tmp_path / "home"))  # no certificates there
    with pytest.raises(SystemExit) as refused:
        main(["check", "-i", str(paths.content_root() / "inventories" / "sample" / "hosts.yml")])
    assert refused.value.code == 2
    said = capsys.readouterr()
    told = " ".join((said.err + said.out).split())
    assert "hearth tls init" in told and "monitoring_tls: false" in told, told


def test_cli_check_sample_inventory_passes_after_tls_init(
    sample_site: tuple[Path, Path],
) -> None:
    """…and passes once it has run (the production sample: the password is in vault, a whole
    encrypted file, which the plain-text rule recognises)."""
    hosts, password = sample_site
    written = hosts.parent / "group_vars" / "all" / "monitoring_web_password.yml"
    assert written.read_text().startswith("$ANSIBLE_VAULT;")
    result = subprocess.run(  # a new process, as the operator's next command
        [sys.executable, "-m", "hearth", "check", "-i", str(hosts),
         "--vault-password-file", str(password)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "inventory valid" in result.stdout


def test_cli_check_bad_inventory_exits_2(tmp_path: Path) -> None:
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "hosts.yml").write_text("all:\n  hosts:\n    h1:\n      ansible_host: 10.0.0.1\n")
    (tmp_path / "group_vars" / "all.yml").write_text("common_limit_nofile: many\n")
    from hearth.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["check", "-i", str(tmp_path / "hosts.yml")])
    assert exit_info.value.code == 2


def test_cli_lists_its_commands() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    for command in ("check", "up", "lab", "audit", "collections"):
        assert f"  {command}" in result.output


# --------------------------------------------------------------------------- roles and specs
ROLES = sorted(p.parent.parent.name for p in paths.roles_dir().glob("*/meta/argument_specs.yml"))


@pytest.mark.parametrize("role", ROLES)
def test_argument_spec_matches_defaults(role: str) -> None:
    role_dir = paths.roles_dir() / role
    defaults = yaml.safe_load((role_dir / "defaults" / "main.yml").read_text()) or {}
    spec = yaml.safe_load((role_dir / "meta" / "argument_specs.yml").read_text())
    options = spec["argument_specs"]["main"]["options"]
    assert set(defaults) == set(options), (
        f"{role}: in defaults only {set(defaults) - set(options)}, "
        f"in spec only {set(options) - set(defaults)}"
    )
    for name, option in options.items():
        assert option.get("description"), f"{role}: {name} has no description"
        if "default" in option:
            assert option["default"] == defaults[name], f"{role}: {name} default differs"


@pytest.mark.parametrize("role", ROLES)
def test_role_has_phases_and_checks(role: str) -> None:
    role_dir = paths.roles_dir() / role
    main = yaml.safe_load((role_dir / "tasks" / "main.yml").read_text())
    imported = [t.get("ansible.builtin.import_tasks") for t in main]
    assert imported[0] == "preflight.yml", f"{role}: tasks/main.yml must start with the preflight"
    assert list((role_dir / "checks").glob("test_*.py")), f"{role}: no testinfra checks"
