"""The CLI tells the truth on the lab: `hearth up` and `hearth audit` reach hosts through a jump
host exactly as the inventory says; `--format json` alone on standard output; `--diff` shows the
diff of a changed file and never a no_log task's; a crashed audit exits 7; a host stopped in the
middle of a task is reported as gone (exit 4), not as a module failure.

lab2 and lab3 are named in the jump inventory by their container names, which only Docker's DNS
inside the lab network resolves: the control node cannot reach them directly, lab1 can.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from labkit import container_exec, files_holding, hearth, write_inventory

from hearth import audit
from hearth import lab as lab_mod
from hearth.errors import AuditCrashedError
from hearth.inventory import load_inventory

PLAYBOOKS = Path(__file__).parent / "playbooks"
BEHIND = ("lab2", "lab3")


@pytest.fixture(scope="module")
def jump_inventory(lab: lab_mod.LabState, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """lab1 reached directly; lab2 and lab3 only through lab1 (ProxyCommand ssh -W)."""
    inventory = write_inventory(lab, tmp_path_factory.mktemp("jump") / "inventory")
    first = lab.hosts[0]
    proxy = (
        f"ssh -i {lab.private_key} -o UserKnownHostsFile={lab.known_hosts} "
        f"-o StrictHostKeyChecking=accept-new -o BatchMode=yes -W %h:%p root@{first.address}"
    )
    hosts: dict[str, dict[str, str]] = {first.name: {"ansible_host": first.address}}
    for host in lab.hosts[1:]:
        hosts[host.name] = {
            "ansible_host": host.container,  # resolvable only inside the lab network
            "ansible_ssh_common_args": (
                f"-o UserKnownHostsFile={lab.known_hosts} -o StrictHostKeyChecking=accept-new "
                f"-o 'ProxyCommand={proxy}'"
            ),
        }
    inventory.write_text(yaml.safe_dump({"all": {"children": {"lab": {"hosts": hosts}}}}))
    return inventory


def test_the_direct_path_is_closed(lab: lab_mod.LabState) -> None:
    """Without the jump host, the control node cannot reach lab2 at its inventory address."""
    host = lab.hosts[1]
    direct = subprocess.run(
        ["ssh", *lab_mod.ssh_options(Path(lab.private_key), Path(lab.known_hosts)),
         f"root@{host.container}", "true"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert direct.returncode == 255, direct.stderr
    assert "Could not resolve hostname" in direct.stderr


def test_up_and_audit_through_a_jump_host(
    lab: lab_mod.LabState, jump_inventory: Path, tmp_path: Path
) -> None:
    # the base layer (playbooks/site.yml: no layer groups, so only `common`) through lab1
    up = hearth("up", "-i", str(jump_inventory))
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    # what lab2's own sshd saw: the connection came from lab1, not from the control node
    seen = container_exec(lab, "lab2", "journalctl", "-u", "ssh", "--no-pager", "-o", "cat")
    accepted = [line for line in seen.stdout.splitlines() if line.startswith("Accepted ")]
    assert any(f"from {lab.hosts[0].address} " in line for line in accepted), accepted[-20:]

    audited = hearth("audit", "-i", str(jump_inventory), "--format", "json")
    assert audited.returncode == 0, audited.stdout[-3000:] + audited.stderr[-3000:]
    data = json.loads(audited.stdout)  # standard output holds the report alone
    assert data["ok"] is True and data["summary"]["unreachable"] == 0
    for host in BEHIND:
        checks = data["hosts"][host]["checks"]
        assert checks and all(c["outcome"] in ("passed", "skipped") for c in checks), checks
    assert "PASSED" in audited.stderr  # the human table went to standard error

    # a setting the audit cannot honour: refused with exit 2, naming host and variable
    refused = yaml.safe_load(jump_inventory.read_text())
    refused["all"]["children"]["lab"]["hosts"]["lab3"]["ansible_ssh_extra_args"] = "-F /nope"
    bad = tmp_path / "hosts.yml"
    bad.write_text(yaml.safe_dump(refused))
    (tmp_path / "group_vars").symlink_to(jump_inventory.parent / "group_vars")
    done = hearth("audit", "-i", str(bad))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "lab3: ansible_ssh_extra_args: the ssh option '-F'" in done.stderr


def test_up_diff_shows_the_change_and_hides_no_log(
    lab: lab_mod.LabState, jump_inventory: Path
) -> None:
    book = str(PLAYBOOKS / "mark.yml")
    mark = jump_inventory.parent / "group_vars" / "all" / "mark.yml"
    mark.write_text("mark_text: first\n")
    first = hearth("up", "-i", str(jump_inventory), "--playbook", book)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    mark.write_text("mark_text: second\n")
    done = hearth("up", "-i", str(jump_inventory), "--playbook", book, "--diff")
    mark.unlink()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for host in ("lab1", *BEHIND):
        assert f"-{host} reached as first" in done.stdout, done.stdout[-3000:]
        assert f"+{host} reached as second" in done.stdout
        mark = container_exec(lab, host, "cat", "/etc/hearth-mark").stdout
        assert mark == f"{host} reached as second\n"
    assert "hearth-mark-S3CR3T" not in done.stdout + done.stderr
    assert "+++ after: /etc/hearth-mark\n" in done.stdout
    assert "/etc/hearth-mark-secret" not in done.stdout


def test_audit_becomes_with_a_vaulted_sudo_password(lab: lab_mod.LabState, tmp_path: Path) -> None:
    """lab1 reached as `deploy`, whose sudo asks a password held in ansible-vault: the checks run
    as root through sudo, and the password is in no output and no file."""
    password = "hearth-sudo-pw-9c1e77"
    script = (
        "id deploy >/dev/null 2>&1 || useradd -m -s /bin/bash -G sudo deploy; "
        f"echo 'deploy:{password}' | chpasswd; "
        "install -d -m 700 -o deploy -g deploy /home/deploy/.ssh; "
        "install -m 600 -o deploy -g deploy /root/.ssh/authorized_keys /home/deploy/.ssh/"
    )
    assert container_exec(lab, "lab1", "sh", "-c", script).returncode == 0
    asks = container_exec(lab, "lab1", "su", "deploy", "-c", "sudo -n true")
    assert asks.returncode != 0, "sudo does not ask deploy for a password: the test is void"
    vault_pass = tmp_path / "vault-pass"
    vault_pass.write_text("a vault password for the become test\n")
    encrypted = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-vault"), "encrypt_string",
         "--vault-password-file", str(vault_pass), "--name", "ansible_become_password", password],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    inventory = write_inventory(lab, tmp_path / "inv")
    (inventory.parent / "host_vars").mkdir()
    (inventory.parent / "host_vars" / "lab1.yml").write_text("ansible_user: deploy\n" + encrypted)
    since = container_exec(lab, "lab1", "date", "+%Y-%m-%d %H:%M:%S").stdout.strip()
    started = time.time()
    done = hearth(
        "audit", "-i", str(inventory), "--limit", "lab1", "--format", "json",
        "--vault-password-file", str(vault_pass),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    checks = json.loads(done.stdout)["hosts"]["lab1"]["checks"]
    # every check passed through sudo; the TLS ones skip, saying so (monitoring_tls is off here)
    plain = [c for c in checks if c["check"] == "test_serves_tls_and_refuses_anonymous"]
    assert all("monitoring_tls is false" in c["message"] for c in plain), plain
    assert checks and all(c["outcome"] == "passed" for c in checks if c not in plain), checks
    log = container_exec(lab, "lab1", "journalctl", "_COMM=sudo", "--since", since, "--no-pager")
    assert "deploy : " in log.stdout and "USER=root" in log.stdout, log.stdout[-2000:]
    assert "incorrect password" not in log.stdout
    assert password not in done.stdout + done.stderr
    leaks = files_holding([Path(tempfile.gettempdir())], [password], started - 1)
    assert not leaks, f"the become password leaked into: {leaks}"


def test_a_crashed_audit_exits_7_not_5(
    lab: lab_mod.LabState, jump_inventory: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "test_broken.py"
    broken.write_text(
        "import hearth_no_such_module  # noqa: F401\n\n\ndef test_x(host):\n    pass\n"
    )
    monkeypatch.setattr(audit, "check_files", lambda role: [broken])
    with pytest.raises(AuditCrashedError) as err:
        audit.run_audit(load_inventory(jump_inventory), limit="lab1")
    assert err.value.exit_code == 7
    assert "hearth_no_such_module" in err.value.message


def test_a_host_stopped_mid_task_is_reported_gone(
    lab: lab_mod.LabState, jump_inventory: Path, tmp_path: Path
) -> None:
    """lab2's container is stopped while `sleep 45` runs on it: exit 4, "lab2 went away"."""
    direct = write_inventory(lab, tmp_path / "direct")
    cmd = [*_hearth_cmd(), "up", "-i", str(direct), "--playbook", str(PLAYBOOKS / "sleep.yml")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env())  # fmt: skip
    container = next(h.container for h in lab.hosts if h.name == "lab2")
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if container_exec(lab, "lab2", "pgrep", "-f", "sleep 45").returncode == 0:
                break
            time.sleep(0.5)
        else:
            pytest.fail("the sleep never started on lab2")
        subprocess.run(["docker", "stop", container], check=True, capture_output=True)
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
        subprocess.run(["docker", "start", container], check=False, capture_output=True)
        lab_mod.up(3, inventory_dir=Path(lab.inventory).parent)  # back, with SSH, for the rest
    assert proc.returncode == 4, out[-3000:] + err[-3000:]
    assert "lab2 went away during Sleep a while" in err
    assert "MODULE FAILURE" not in err and "deserialization" not in err


def _hearth_cmd() -> list[str]:
    return [sys.executable, "-m", "hearth"]


def _env() -> dict[str, str]:
    import os

    return dict(os.environ, COLUMNS="200", NO_COLOR="1")
