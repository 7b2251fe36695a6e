"""testinfra checks of the `common` role, run by `hearth audit` on every host that has the role.

``hearth_vars`` is the host's declared state (inventory over role defaults). Each failure says
what was expected and what was found.
"""

from __future__ import annotations

from typing import Any

import pytest

from hearth.checklib import observe


def _chrony_service(host: Any) -> str:
    return (
        "chronyd"
        if host.system_info.distribution in ("rhel", "rocky", "almalinux", "centos")
        else "chrony"
    )


def test_hearth_user(host: Any, hearth_vars: dict[str, Any]) -> None:
    """Hearth's service account exists as a system account with its group and no login shell."""
    name, group = hearth_vars["common_user"], hearth_vars["common_group"]
    user = host.user(name)
    if user.exists:
        observe(f"user {name}", {"group": user.group, "uid": user.uid, "shell": user.shell},
                {"group": group, "uid": "< 1000", "shell": "/usr/sbin/nologin"})  # fmt: skip
    else:
        observe(f"user {name}", "absent", "present")
    assert user.exists, f"user {name}: expected to exist, found absent"
    assert user.group == group, f"user {name}: expected primary group {group}, found {user.group}"
    assert user.uid < 1000, (
        f"user {name}: expected a system account (uid < 1000), found uid {user.uid}"
    )
    assert user.shell == "/usr/sbin/nologin", (
        f"user {name}: expected shell /usr/sbin/nologin, found {user.shell}"
    )


def test_directories(host: Any, hearth_vars: dict[str, Any]) -> None:
    """Hearth's configuration, data, model and log directories exist with their owner, group and
    mode 0750."""
    owner, group = hearth_vars["common_user"], hearth_vars["common_group"]
    expected = [
        (hearth_vars["common_config_dir"], "root"),
        (hearth_vars["common_data_dir"], owner),
        (hearth_vars["common_model_dir"], owner),
        (hearth_vars["common_log_dir"], owner),
    ]
    for path, user in expected:
        d = host.file(path)
        assert d.is_directory, (
            f"{path}: expected a directory, found {'a file' if d.exists else 'nothing'}"
        )
        found = (d.user, d.group, oct(d.mode))
        observe(path, f"{found[0]}:{found[1]} {found[2]}", f"{user}:{group} 0o750")
        assert found == (user, group, "0o750"), (
            f"{path}: expected owner {user}:{group} mode 0750, "
            f"found {found[0]}:{found[1]} mode {found[2]}"
        )


def test_base_packages(host: Any, hearth_vars: dict[str, Any]) -> None:
    """Every base package the inventory declares (common_packages, common_extra_packages) is
    installed."""
    wanted = list(hearth_vars["common_packages"]) + list(hearth_vars["common_extra_packages"])
    missing = [p for p in wanted if not host.package(p).is_installed]
    observe("packages installed", sorted(set(wanted) - set(missing)), sorted(wanted))
    assert not missing, f"packages: expected installed {wanted}, found missing {missing}"


def test_timezone(host: Any, hearth_vars: dict[str, Any]) -> None:
    """The system timezone is the declared one (common_timezone)."""
    expected = hearth_vars["common_timezone"]
    found = host.check_output("timedatectl show --property=Timezone --value")
    observe("timezone", found, expected)
    assert found == expected, f"timezone: expected {expected}, found {found}"


def test_time_sync(host: Any, hearth_vars: dict[str, Any]) -> None:
    """Time is synchronised: chrony runs, starts at boot and uses the declared pools and servers."""
    if not hearth_vars["common_time_sync_enabled"]:
        pytest.skip("common_time_sync_enabled is false: time is not synchronised by Hearth")
    service = host.service(_chrony_service(host))
    observe(f"{service.name} running", service.is_running, True)
    observe(f"{service.name} enabled", service.is_enabled, True)
    assert service.is_running, f"{service.name}: expected running, found stopped"
    assert service.is_enabled, f"{service.name}: expected enabled at boot, found disabled"
    conf = host.file("/etc/chrony/chrony.conf" if service.name == "chrony" else "/etc/chrony.conf")
    for pool in hearth_vars["common_ntp_pools"]:
        assert conf.contains(f"^pool {pool} iburst"), (
            f"{conf.path}: expected 'pool {pool} iburst', not found"
        )
    for server in hearth_vars["common_ntp_servers"]:
        assert conf.contains(f"^server {server} iburst"), (
            f"{conf.path}: expected 'server {server} iburst', not found"
        )


def test_sysctl(host: Any, hearth_vars: dict[str, Any]) -> None:
    """Every declared kernel setting (common_sysctl, common_sysctl_extra) has its value now and is
    persisted in /etc/sysctl.d/90-hearth.conf for the next boot."""
    wanted = {**hearth_vars["common_sysctl"], **hearth_vars["common_sysctl_extra"]}
    drift = {}
    for key, value in wanted.items():
        found = " ".join(host.check_output("sysctl -n %s", key).split())
        observe(key, found, " ".join(str(value).split()))
        if found != " ".join(str(value).split()):
            drift[key] = f"expected {value}, found {found}"
    assert not drift, f"kernel settings drifted: {drift}"
    persisted = host.file("/etc/sysctl.d/90-hearth.conf")
    for key in wanted:
        assert persisted.contains(f"^{key}"), (
            f"/etc/sysctl.d/90-hearth.conf: expected {key} to persist across reboots, not found"
        )


def test_limits(host: Any, hearth_vars: dict[str, Any]) -> None:
    """The open-file and locked-memory limits are set for Hearth's user and as systemd's
    defaults."""
    user, nofile = hearth_vars["common_user"], hearth_vars["common_limit_nofile"]
    memlock = hearth_vars["common_limit_memlock"]
    limits = host.file("/etc/security/limits.d/90-hearth.conf")
    for line in (f"{user} hard nofile {nofile}", f"{user} hard memlock {memlock}"):
        assert limits.contains(f"^{line}$"), f"{limits.path}: expected '{line}', not found"
    shown = host.check_output(
        "systemctl show --property=DefaultLimitNOFILE --property=DefaultLimitMEMLOCK"
    )
    found = dict(line.split("=", 1) for line in shown.splitlines())
    expected_memlock = "infinity" if memlock == "unlimited" else str(int(memlock) * 1024)
    observe("systemd DefaultLimitNOFILE", found.get("DefaultLimitNOFILE"), str(nofile))
    observe("systemd DefaultLimitMEMLOCK", found.get("DefaultLimitMEMLOCK"), expected_memlock)
    assert found.get("DefaultLimitNOFILE") == str(nofile), (
        f"systemd DefaultLimitNOFILE: expected {nofile}, found {found.get('DefaultLimitNOFILE')}"
    )
    assert found.get("DefaultLimitMEMLOCK") == expected_memlock, (
        f"systemd DefaultLimitMEMLOCK: expected {expected_memlock}, "
        f"found {found.get('DefaultLimitMEMLOCK')}"
    )


def test_journal(host: Any, hearth_vars: dict[str, Any]) -> None:
    """journald runs and, where declared (common_journal_persistent), keeps the journal on disk
    across reboots."""
    journald = host.service("systemd-journald")
    observe("systemd-journald running", journald.is_running, True)
    assert journald.is_running, "systemd-journald: expected running, found stopped"
    if not hearth_vars["common_journal_persistent"]:
        pytest.skip("common_journal_persistent is false: the journal stays in /run")
    conf = host.file("/etc/systemd/journald.conf.d/90-hearth.conf")
    assert conf.contains("^Storage=persistent$"), (
        f"{conf.path}: expected Storage=persistent, not found"
    )
    machine_id = host.file("/etc/machine-id").content_string.strip()
    journal = host.file(f"/var/log/journal/{machine_id}")
    observe("persistent journal", journal.is_directory, True)
    assert journal.is_directory, (
        f"/var/log/journal/{machine_id}: expected the persistent journal, found none "
        "(journald is writing to /run only)"
    )


def test_only_declared_listeners(host: Any, hearth_vars: dict[str, Any]) -> None:
    """Every TCP and UDP socket listening beyond loopback (``ss -Hltnup``) is one the inventory
    declares for this host: SSH, the exporters, Prometheus, Alertmanager, Grafana, the front
    door, each engine's published ports on their bind address, and the site's own
    ``hearth_allowed_listeners``. Anything else is named, with its process."""
    from hearth.listeners import (
        SS_COMMAND,
        Declared,
        failure_message,
        parse_ss,
        unexpected,
    )

    done = host.run(SS_COMMAND)
    assert done.rc == 0, f"{SS_COMMAND}: could not list the listeners: {done.stderr.strip()[:200]}"
    found = parse_ss(done.stdout)
    declared = [Declared(**d) for d in hearth_vars.get("hearth_listeners_declared") or []]
    observe(
        "listeners beyond loopback",
        sorted({s.describe() for s in found if not s.loopback}),
        sorted({f"{d.address or '*'}:{d.port} {d.proto} ({d.reason})" for d in declared}),
    )
    bad = unexpected(found, declared)
    assert not bad, failure_message(str(hearth_vars["inventory_hostname"]), bad, declared)
