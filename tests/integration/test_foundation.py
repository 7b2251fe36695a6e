"""The foundation end to end on real hosts: hearth up, idempotence, check mode, audit, unreachable
hosts, secrets kept out of every artifact, and the air-gapped lab."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from labkit import (
    TEST_OWNER,
    container_exec,
    files_holding,
    hearth,
    owned_lab,
    write_inventory,
)

from hearth import lab as lab_mod
from hearth import paths, runner
from hearth.inventory import load_inventory
from hearth.layers import roles_for_hosts

HOSTS = ("lab1", "lab2", "lab3")


@pytest.fixture(scope="module")
def base_site(lab: lab_mod.LabState, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three lab hosts converged once by the real CLI; returns the inventory used. (Not named
    `converged`: that is the session's shared configuration, conftest.py.)"""
    inventory = write_inventory(lab, tmp_path_factory.mktemp("converged"))
    done = hearth("up", "-i", str(inventory))
    assert done.returncode == 0, f"hearth up failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    for host in HOSTS:
        assert host in done.stdout, f"recap does not name {host}:\n{done.stdout[-2000:]}"
    return inventory


def _snapshot(lab: lab_mod.LabState, host: str) -> dict[str, str]:
    """What a changed inventory would alter, read straight from the host through Docker."""
    return {
        "somaxconn": container_exec(lab, host, "sysctl", "-n", "net.core.somaxconn").stdout.strip(),
        "tree": str(container_exec(lab, host, "dpkg", "-s", "tree").returncode),
        "journald": container_exec(
            lab, host, "md5sum", "/etc/systemd/journald.conf.d/90-hearth.conf"
        ).stdout,
        "sysctl_file": container_exec(lab, host, "md5sum", "/etc/sysctl.d/90-hearth.conf").stdout,
    }


def test_converge_is_real(lab: lab_mod.LabState, base_site: Path) -> None:
    for host in HOSTS:
        assert container_exec(lab, host, "id", "-u", "hearth").returncode == 0
        assert (
            container_exec(lab, host, "systemctl", "is-active", "chrony").stdout.strip() == "active"
        )
        assert (
            container_exec(lab, host, "sysctl", "-n", "vm.max_map_count").stdout.strip() == "262144"
        )
        assert container_exec(lab, host, "test", "-d", "/var/log/journal").returncode == 0


def test_second_run_changes_nothing(base_site: Path) -> None:
    result = runner.run_playbook("site.yml", base_site, label="test-idempotence")
    assert result.status == "successful", result.failures
    per_host = {h: r.changed for h, r in result.hosts.items()}
    assert result.changed == 0, f"second run changed something: {per_host}"
    assert set(HOSTS) <= set(result.hosts), result.hosts.keys()
    assert all(result.hosts[h].ok > 10 for h in HOSTS), "the second run did not really run the role"


def test_drift_a_removed_package_is_put_back(lab: lab_mod.LabState, base_site: Path) -> None:
    """A run that changes nothing skips apt (hearth_apt reads dpkg first) and the timezone module
    (common reads /etc/localtime first); a package removed and a timezone changed by hand since
    must still be seen and put back by the next run."""
    removed = container_exec(lab, "lab2", "dpkg", "--remove", "lsof")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    moved = container_exec(
        lab, "lab2", "ln", "-sfn", "/usr/share/zoneinfo/Etc/GMT+1", "/etc/localtime"
    )
    assert moved.returncode == 0, moved.stdout + moved.stderr
    gone = container_exec(lab, "lab2", "dpkg-query", "-W", "-f", "${Status}", "lsof").stdout
    assert gone != "install ok installed", "lsof is still installed: the test is void"
    result = runner.run_playbook("base.yml", base_site, label="test-drift")
    assert result.status == "successful", result.failures
    assert result.hosts["lab2"].changed >= 1, "the run did not notice the removed package"
    assert result.hosts["lab1"].changed == 0 and result.hosts["lab3"].changed == 0
    status = container_exec(lab, "lab2", "dpkg-query", "-W", "-f", "${Status}", "lsof").stdout
    assert status == "install ok installed", status
    zone = container_exec(lab, "lab2", "timedatectl", "show", "--property=Timezone", "--value")
    assert zone.stdout.strip() == "Etc/UTC", zone.stdout + zone.stderr


def test_check_mode_on_changed_inventory_alters_nothing(
    lab: lab_mod.LabState, base_site: Path, tmp_path: Path
) -> None:
    changed = write_inventory(
        lab,
        tmp_path / "changed",
        group_vars={
            "common_sysctl_extra": {"net.core.somaxconn": 2048},
            "common_extra_packages": ["tree"],
            "common_journal_max_use": "1G",
        },
    )
    before = {h: _snapshot(lab, h) for h in HOSTS}
    result = runner.run_playbook("site.yml", changed, check=True, diff=True, label="test-check")
    assert result.status == "successful", result.failures
    assert all(result.hosts[h].changed >= 3 for h in HOSTS), (
        "check mode should report the three pending changes on every host: "
        f"{ {h: r.changed for h, r in result.hosts.items()} }"
    )
    after = {h: _snapshot(lab, h) for h in HOSTS}
    assert after == before, "check mode changed a host"
    assert before["lab1"]["tree"] != "0", "tree was installed before the check run: test is void"


def _started(lab: lab_mod.LabState, host: str, unit: str) -> str:
    done = container_exec(
        lab, host, "systemctl", "show", "--property=ActiveEnterTimestampMonotonic", unit
    )
    assert done.returncode == 0 and "=" in done.stdout, done.stdout + done.stderr
    return done.stdout.strip()


def test_a_changed_file_restarts_its_own_service_only(
    lab: lab_mod.LabState, base_site: Path, tmp_path: Path
) -> None:
    # common writes its files in one looped task, which notifies every handler of the loop when
    # any file changed: each handler must still run only for its own file
    changed = write_inventory(
        lab, tmp_path / "journal", group_vars={"common_journal_max_use": "1G"}
    )
    units = ("systemd-journald", "chrony")
    before = {unit: _started(lab, "lab2", unit) for unit in units}
    try:
        result = runner.run_playbook("base.yml", changed, limit="lab2", label="test-handlers")
        assert result.status == "successful", result.failures
        after = {unit: _started(lab, "lab2", unit) for unit in units}
        assert after["systemd-journald"] != before["systemd-journald"], "journald kept running"
        assert after["chrony"] == before["chrony"], "chrony restarted for journald's file"
        assert result.hosts["lab2"].changed == 2, result.hosts["lab2"]  # the file, journald
    finally:
        back = runner.run_playbook("base.yml", base_site, limit="lab2", label="test-handlers")
        assert back.status == "successful", back.failures


def test_audit_passes_then_names_a_broken_service(
    lab: lab_mod.LabState, base_site: Path, tmp_path: Path
) -> None:
    report = tmp_path / "audit.json"
    done = hearth("audit", "-i", str(base_site), "--format", "json", "-o", str(report))
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(report.read_text())
    assert data["ok"] is True
    assert data["summary"]["failed"] == 0
    assert data["summary"]["passed"] >= 8 * len(HOSTS)
    assert set(data["hosts"]) == set(HOSTS)
    # the roles audited are the ones the playbooks give each host (base layer + node_exporter)
    expected = roles_for_hosts(load_inventory(base_site))
    assert {h: d["roles"] for h, d in data["hosts"].items()} == {h: expected[h] for h in HOSTS}
    assert all(d["roles"][0] == "common" for d in data["hosts"].values())

    container_exec(lab, "lab2", "systemctl", "stop", "chrony")
    try:
        junit = tmp_path / "audit.xml"
        broken = hearth("audit", "-i", str(base_site), "--format", "junit", "-o", str(junit))
        assert broken.returncode == 5, broken.stdout + broken.stderr
        assert (
            "lab2: common/test_time_sync: chrony: expected running, found stopped" in broken.stderr
        )
        failures = ET.parse(junit).getroot().findall(".//testcase/failure")
        assert [f.get("message") for f in failures] == ["chrony: expected running, found stopped"]
        html = tmp_path / "audit.html"
        hearth("audit", "-i", str(base_site), "--format", "html", "-o", str(html))
        page = html.read_text()
        assert "FAILED" in page and "expected running, found stopped" in page
    finally:
        container_exec(lab, "lab2", "systemctl", "start", "chrony")
    assert hearth("audit", "-i", str(base_site)).returncode == 0


def test_unreachable_host_is_named_and_others_converge(
    lab: lab_mod.LabState, base_site: Path, tmp_path: Path
) -> None:
    inventory = write_inventory(
        lab, tmp_path / "inv", group_vars={"common_extra_packages": ["tree"]}
    )
    lab3 = next(h.container for h in lab.hosts if h.name == "lab3")
    subprocess.run(["docker", "stop", "-t", "1", lab3], check=True, capture_output=True)
    try:
        done = hearth("up", "-i", str(inventory))
        assert done.returncode == 4, done.stdout + done.stderr
        assert "unreachable: lab3" in done.stderr
        for host in ("lab1", "lab2"):
            assert container_exec(lab, host, "dpkg", "-s", "tree").returncode == 0, (
                f"{host} was not converged while lab3 was down"
            )
    finally:
        subprocess.run(["docker", "start", lab3], check=True, capture_output=True)
        lab_mod.up(3, inventory_dir=Path(lab.inventory).parent, owner=TEST_OWNER)
        # put the hosts back to the converged state for the tests that follow
        assert hearth("up", "-i", str(base_site)).returncode in (0,)
        for host in ("lab1", "lab2"):
            container_exec(lab, host, "apt-get", "remove", "-y", "-q", "tree")


def test_bad_inventory_changes_nothing(
    lab: lab_mod.LabState, base_site: Path, tmp_path: Path
) -> None:
    bad = write_inventory(
        lab,
        tmp_path / "bad",
        group_vars={
            "common_sysctl_extra": {"net.core.somaxconn": 1024},
            "common_time_sync_enabled": "false",
        },
    )
    before = {h: _snapshot(lab, h) for h in HOSTS}
    done = hearth("up", "-i", str(bad))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "group_vars/all/site.yml:3: common_time_sync_enabled = 'false'" in done.stderr
    assert "expected a boolean" in done.stderr
    assert {h: _snapshot(lab, h) for h in HOSTS} == before


def test_secrets_never_reach_artifacts_or_output(
    lab: lab_mod.LabState, base_site: Path, tmp_path: Path
) -> None:
    secret = "hearth-planted-S3CR3T-7f3a9c"
    vault_pass = tmp_path / "vault-pass"
    vault_pass.write_text("correct horse battery staple\n")
    encrypted = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-vault"), "encrypt_string",
            "--vault-password-file", str(vault_pass), "--name", "ansible_become_password", secret,
        ],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    inventory = write_inventory(lab, tmp_path / "vaulted")
    (inventory.parent / "group_vars" / "all" / "vault.yml").write_text(encrypted)
    started = time.time()
    # also in the operator's environment, which ansible-runner records beside the command
    done = hearth(
        "up", "-i", str(inventory), "--diff", "--vault-password-file", str(vault_pass),
        env={"OPERATOR_SLACK_TOKEN": secret},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    result = runner.run_playbook(
        "site.yml", inventory, extravars={"hearth_planted_secret": secret}, diff=True,
        vault_password_file=vault_pass, label="test-secret",
    )  # fmt: skip
    assert result.status == "successful"
    audit = hearth(
        "audit", "-i", str(inventory), "--format", "html", "-o", str(tmp_path / "a.html"),
        env={"ANSIBLE_VAULT_PASSWORD_FILE": str(vault_pass)},
    )  # fmt: skip
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert secret not in done.stdout + done.stderr + audit.stdout + audit.stderr
    roots = (paths.runs_dir(), paths.hearth_home() / "facts", Path(tempfile.gettempdir()))
    leaks = files_holding(roots, [secret], started - 1, skip=lambda path: path == vault_pass)
    assert not leaks, f"the planted secret leaked into: {leaks}"
    assert result.artifacts.is_dir() and any(result.artifacts.rglob("job_events/*.json"))


def test_airgapped_lab_has_no_route_out() -> None:
    with owned_lab("foundation"):
        state = lab_mod.up(
            1, airgapped=True, inventory_dir=Path("/tmp") / "hearth-airgap-inv", owner=TEST_OWNER
        )
        assert state.airgapped and state.hosts[0].ssh, "the control node must reach the host"
        probe = container_exec(
            state, "lab1", "python3", "-c",
            "import socket; socket.create_connection(('deb.debian.org', 80), 5)",
        )  # fmt: skip
        assert probe.returncode != 0, "an air-gapped lab host reached the internet"
        status = hearth("lab", "status")
        assert "air-gapped" in status.stdout and "lab1" in status.stdout
