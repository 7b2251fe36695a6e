"""`hearth upgrade`'s pure parts: the front door drain, the DKMS verdict before a reboot (on
recorded `dkms status` outputs of dkms 2.8 and 3.x and real boot-loader files), the batches and
the refusal of a drain that leaves a model with no replica, the summary of each host's state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import plugin_module

from hearth import dkms, engines
from hearth.commands import upgrade
from hearth.errors import InvalidInputError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "dkms"

ROUTES: dict[str, dict[str, Any]] = {
    "smollm2": {
        "engine": "llamacpp",
        "version": "v1",
        "api": "openai",
        "backends": ["http://10.0.0.11:8080", "http://10.0.0.12:8080"],
        "hosts": ["lab1", "lab2"],
    },
    "solo": {
        "engine": "llamacpp",
        "version": "v1",
        "api": "openai",
        "backends": ["http://10.0.0.12:8081"],
        "hosts": ["lab2"],
    },
}


# ------------------------------------------------------------------------------------ drain
def test_a_drain_takes_the_host_out_and_an_undrain_leaves_the_routing_as_found() -> None:
    out = engines.drain_host({"models": {}}, ROUTES, "lab1", True, "upgrade of lab1")
    assert out["routing"] == {
        "models": {"smollm2": {"backends": ["http://10.0.0.12:8080"], "reason": "upgrade of lab1"}}
    }
    assert out["backends"] == ["http://10.0.0.11:8080"] and out["empty"] == []
    again = engines.drain_host(out["routing"], ROUTES, "lab1", True, "upgrade of lab1")
    assert again["routing"] == out["routing"] and again["backends"] == [], "idempotent"
    back = engines.drain_host(out["routing"], ROUTES, "lab1", False)
    assert back["routing"] == {"models": {}}
    assert back["backends"] == ["http://10.0.0.11:8080"]
    assert engines.drain_host(back["routing"], ROUTES, "lab1", False)["backends"] == []


def test_a_drain_names_the_models_it_would_leave_with_no_backend() -> None:
    out = engines.drain_host({}, ROUTES, "lab2", True, "upgrade of lab2")
    assert out["empty"] == ["solo"]
    assert out["routing"]["models"]["solo"]["backends"] == []
    assert out["routing"]["models"]["smollm2"]["backends"] == ["http://10.0.0.11:8080"]
    # with lab1 drained already, draining lab2 leaves smollm2 with nothing too
    first = engines.drain_host({}, ROUTES, "lab1", True, "a")["routing"]
    assert engines.drain_host(first, ROUTES, "lab2", True, "b")["empty"] == ["smollm2", "solo"]


def test_a_drain_removes_the_candidate_slot_a_stopped_rollout_left_in_force() -> None:
    halfway = engines.swap_backend({}, ROUTES, "smollm2", "lab1", 8080, 8085, "v2")["routing"]
    out = engines.drain_host(halfway, ROUTES, "lab1", True, "upgrade")
    assert out["routing"]["models"]["smollm2"]["backends"] == ["http://10.0.0.12:8080"]
    assert out["backends"] == ["http://10.0.0.11:8085"]


def test_an_undrain_keeps_another_hosts_drain_in_force() -> None:
    both = {"models": {"smollm2": {"backends": [], "reason": "two drained"}}}
    out = engines.drain_host(both, ROUTES, "lab1", False)
    assert out["routing"]["models"]["smollm2"] == {
        "backends": ["http://10.0.0.11:8080"], "reason": "two drained"
    }  # fmt: skip
    assert engines.drain_host({}, ROUTES, "lab3", True)["routing"] == {"models": {}}


# ------------------------------------------------------------------------------------- DKMS
def _fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_dkms_status_of_both_formats_is_read() -> None:
    old = dkms.parse_status(_fixture("dkms-2.8-ubuntu-next-kernel-missing.txt"))
    assert old == [
        dkms.Entry("nvidia", "535.183.01", "5.15.0-112-generic", "x86_64", "installed",
                   "(original_module exists)"),
        dkms.Entry("nvidia", "535.183.01", "", "", "added"),
    ]  # fmt: skip
    new = dkms.parse_status(_fixture("dkms-3-debian-built-running-only.txt"))
    assert [(e.module, e.version, e.kernel, e.status) for e in new] == [
        ("nvidia-current", "535.261.03", "6.1.0-37-amd64", "installed"),
        ("nvidia-current", "535.261.03", "6.1.0-38-amd64", "built"),
    ]
    assert dkms.parse_status(_fixture("dkms-3-empty.txt")) == []


@pytest.mark.parametrize(
    ("kwargs", "kernel", "how"),
    [
        ({"grub_cfg": "grub-debian12.cfg", "grubenv": "grubenv-empty"}, "6.1.0-38-amd64",
         "grub.cfg default '0'"),
        ({"grub_cfg": "grub-debian12-saved.cfg", "grubenv": "grubenv-saved-older"},
         "6.1.0-37-amd64", "grubenv saved_entry"),
        ({"grub_cfg": "grub-debian12.cfg", "grubenv": "grubenv-next-entry"}, "6.1.0-37-amd64",
         "grubenv next_entry (one-time)"),
        ({"grub_cfg": "grub-debian12-saved.cfg", "grubenv": "grubenv-empty"}, "6.1.0-38-amd64",
         "grubenv saved_entry"),
        ({"grubby": "grubby-rhel9.txt"}, "5.14.0-427.42.1.el9_4.x86_64", "grubby"),
    ],
)  # fmt: skip
def test_the_default_boot_kernel_is_found(kwargs: dict[str, str], kernel: str, how: str) -> None:
    found, source = dkms.default_boot_kernel(**{k: _fixture(v) for k, v in kwargs.items()})
    assert found == kernel and source.startswith(how), source


def test_the_default_boot_kernel_falls_back_to_the_vmlinuz_link() -> None:
    assert dkms.default_boot_kernel(vmlinuz="boot/vmlinuz-6.1.0-38-amd64")[0] == "6.1.0-38-amd64"
    assert dkms.default_boot_kernel() == (
        None, "no boot loader configuration found (grubby, /boot/grub/grub.cfg, /vmlinuz)"
    )  # fmt: skip


def test_dkms_built_for_the_next_kernel_allows_the_reboot() -> None:
    kernel, how = dkms.default_boot_kernel(
        grub_cfg=_fixture("grub-debian12.cfg"), grubenv=_fixture("grubenv-empty")
    )
    ok = dkms.verdict(_fixture("dkms-3-debian-both-kernels.txt"), kernel, "6.1.0-37-amd64", how=how)
    assert ok["ok"] and ok["module"] == "nvidia-current" and ok["version"] == "535.261.03"
    old = dkms.verdict(_fixture("dkms-2.8-ubuntu-both-kernels.txt"), "5.15.0-113-generic")
    assert old["ok"] and old["module"] == "nvidia"


def test_no_module_for_the_next_kernel_refuses_the_reboot() -> None:
    """The running kernel has its module; the kernel that boots next has only a built one (not
    installed): a reboot would bring the host back without GPUs."""
    kernel, how = dkms.default_boot_kernel(
        grub_cfg=_fixture("grub-debian12.cfg"), grubenv=_fixture("grubenv-empty")
    )
    out = dkms.verdict(
        _fixture("dkms-3-debian-built-running-only.txt"), kernel, "6.1.0-37-amd64", how=how
    )
    assert not out["ok"] and out["kernel"] == "6.1.0-38-amd64"
    assert out["message"].startswith("no nvidia module for the next kernel: DKMS has it built only")
    assert "the running kernel is 6.1.0-37-amd64" in out["message"]
    assert "dkms autoinstall -k 6.1.0-38-amd64" in out["message"]
    recorded = _fixture("dkms-2.8-ubuntu-next-kernel-missing.txt")
    missing = dkms.verdict(recorded, "5.15.0-113-generic")
    assert not missing["ok"] and "not built for 5.15.0-113-generic" in missing["message"]
    assert "nvidia 535.183.01 for no kernel: added" in missing["message"]
    nothing = dkms.verdict(_fixture("dkms-3-empty.txt"), "6.1.0-38-amd64")
    assert not nothing["ok"] and "DKMS has: nothing" in nothing["message"]


def test_a_dkms_warning_or_an_unknown_boot_kernel_refuses_the_reboot() -> None:
    warned = dkms.verdict(_fixture("dkms-3-ubuntu-open-warning.txt"), "6.8.0-49-generic")
    assert not warned["ok"] and "WARNING! Diff between built and installed" in warned["message"]
    unknown = dkms.verdict(_fixture("dkms-3-debian-both-kernels.txt"), None, how="no grub")
    assert not unknown["ok"] and "cannot tell which kernel boots next" in unknown["message"]


# ------------------------------------------------------------------------- batches, refusals
def test_batches_are_cut_as_ansible_serial_cuts_them() -> None:
    hosts = ["a", "b", "c", "d", "e"]
    assert upgrade.batches(hosts, 1) == [["a"], ["b"], ["c"], ["d"], ["e"]]
    assert upgrade.batches(hosts, 2) == [["a", "b"], ["c", "d"], ["e"]]
    assert upgrade.batches(hosts, "40%") == [["a", "b"], ["c", "d"], ["e"]]
    assert upgrade.batches(hosts, "10%") == [[h] for h in hosts]
    assert upgrade.batches(hosts, "100%") == [hosts]


def test_a_batch_that_drains_every_replica_is_named() -> None:
    serving = {"smollm2": ["lab1", "lab2"], "solo": ["lab2"]}
    assert upgrade.drain_problems(serving, [["lab1"], ["lab2"]]) == [
        "model solo: draining lab2 (batch lab2) leaves it with no serving backend"
    ]
    both = upgrade.drain_problems({"smollm2": ["lab1", "lab2"]}, [["lab1", "lab2"]])
    assert both == [
        "model smollm2: draining lab1, lab2 (batch lab1, lab2) leaves it with no serving backend"
    ]
    assert upgrade.drain_problems({"smollm2": ["lab1", "lab2"]}, [["lab1"], ["lab2"]]) == []


def test_the_summary_says_where_each_host_was_left() -> None:
    done = upgrade.HostState("lab1", {"step": "done", "started": "t0", "finished": "t1"})
    assert done.line() == "lab1: done (finished t1)"
    stuck = upgrade.HostState(
        "lab2",
        {"step": "dkms checked", "started": "t0", "silence_id": "abc", "silence_ends": "t9",
         "message": "no nvidia module for the next kernel"},
    )  # fmt: skip
    line = stuck.line()
    assert line.startswith("lab2: dkms checked (started t0); DRAINED at the front door")
    assert "alerts silenced (silence abc, expires t9)" in line
    assert "no nvidia module for the next kernel" in line and "resumes here" in line
    assert upgrade.HostState("lab3").line() == "lab3: not started (serving, untouched)"
    assert "unreadable (refused)" in upgrade.HostState("lab4", error="refused").line()


def test_bad_batches_are_refused() -> None:
    from hearth.cli import _batch

    for bad in ("0", "150%", "0%", "x"):
        with pytest.raises(InvalidInputError, match="--batch"):
            _batch(bad)


def test_one_probe_report_gives_the_verdict() -> None:
    report = (
        "=== dkms\n" + _fixture("dkms-3-debian-built-running-only.txt")
        + "=== grubby\n=== grubenv\n" + _fixture("grubenv-empty")
        + "=== vmlinuz\nboot/vmlinuz-6.1.0-38-amd64\n=== grub.cfg\n" + _fixture("grub-debian12.cfg")
    )  # fmt: skip
    parts = dkms.read_report(report)
    assert set(parts) == {"dkms", "grubby", "grubenv", "vmlinuz", "grub.cfg"}
    out = dkms.verdict_of_report(report, "6.1.0-37-amd64")
    assert not out["ok"] and out["kernel"] == "6.1.0-38-amd64"
    assert "grub.cfg default '0'" in out["message"]


# ------------------------------------------------------------------------------- reboot plan
def test_the_reboot_plan_follows_the_mode_and_the_policy() -> None:
    assert upgrade.reboot_plan("auto")["action"] == "none"
    assert upgrade.reboot_plan("auto", driver_pending=True)["action"] == "reboot"
    assert upgrade.reboot_plan("auto", reboot_required=True)["action"] == "reboot"
    assert upgrade.reboot_plan("always")["action"] == "reboot"
    assert upgrade.reboot_plan("never")["action"] == "none"
    refused = upgrade.reboot_plan("never", driver_pending=True)
    assert refused["action"] == "refuse" and "upgrade_reboot is never" in refused["message"]
    off = upgrade.reboot_plan("auto", driver_pending=True, reboot_enabled=False)
    assert off["action"] == "refuse" and "nvidia_driver_reboot is false" in off["message"]
    assert "stays drained" in off["message"]
    local = upgrade.reboot_plan("always", connection="local")
    assert local["action"] == "refuse" and "connection is local" in local["message"]
    assert "control node" in upgrade.reboot_plan("always", is_control_node=True)["message"]
    # a resumed window that rebooted already does not reboot again
    assert upgrade.reboot_plan("always", already_rebooted=True)["action"] == "none"
    assert upgrade.reboot_plan("auto", driver_pending=True, already_rebooted=True)["action"] == (
        "none"
    )
    with pytest.raises(InvalidInputError, match="upgrade_reboot"):
        upgrade.reboot_plan("sometimes")


def test_held_pins_are_checked_as_dpkg_reports_them() -> None:
    lines = ["tzdata 2026f-0+deb12u1 hold", "jq 1.6-2.1 install"]
    assert upgrade.held_problems(lines, {"tzdata": "2026f-0+deb12u1"}) == []
    assert upgrade.held_problems(lines, {"tzdata": "2026b-0+deb12u1", "jq": "1.6-2.1"}) == [
        "jq: not held (install)",
        "tzdata: 2026f-0+deb12u1 installed, pinned 2026b-0+deb12u1",
    ]
    assert upgrade.held_problems([], {"curl": "7"}) == ["curl: not installed (pinned 7)"]


# ------------------------------------------------------------------ the filters the role uses
def _filter(name: str) -> Any:
    return plugin_module("filter", name).FilterModule().filters()


def test_the_role_refuses_the_reboot_on_a_probe_without_the_next_kernels_module() -> None:
    report = (
        "=== dkms\n" + _fixture("dkms-2.8-ubuntu-next-kernel-missing.txt")
        + "=== grubby\n=== grubenv\n=== vmlinuz\nboot/vmlinuz-5.15.0-113-generic\n=== grub.cfg\n"
    )  # fmt: skip
    out = _filter("hearth_upgrade")["hearth_dkms_report"](report, "5.15.0-112-generic")
    assert not out["ok"] and out["kernel"] == "5.15.0-113-generic"
    assert "the /vmlinuz symlink" in out["message"]
    plan = _filter("hearth_upgrade")["hearth_reboot_plan"]("auto", driver_pending=True)
    assert plan["action"] == "reboot"


def _routing_action() -> Any:
    """plugins/action/hearth_routing.py's ActionModule (its pure part is tested here; the lab
    tests run it against real front doors)."""
    return plugin_module("action", "hearth_routing").ActionModule


def test_a_batch_drain_names_every_model_it_leaves_empty() -> None:
    from hearth import engines as hearth_engines

    hearth = type("Hearth", (), {"engines": hearth_engines})
    work_out = _routing_action()._work_out
    routes = {**ROUTES, "other": {**ROUTES["solo"], "backends": ["http://10.0.0.11:8081"],
                                  "hosts": ["lab1"]}}  # fmt: skip
    args = {"op": "drain", "routes": routes, "hosts": ["lab1", "lab2"], "reason": "batch"}
    routing, out = work_out(None, hearth, args, {})
    assert sorted(out["empty"]) == ["other", "smollm2", "solo"]
    back, _ = work_out(None, hearth, {**args, "op": "undrain"}, routing)
    assert back == {"models": {}}
    # a drain-first rollout drains one model of the host; its other models keep their backends
    one, out = work_out(None, hearth, {**args, "hosts": ["lab1"], "models": ["other"]}, {})
    assert list(one["models"]) == ["other"] and out["empty"] == ["other"]
    assert out["backends"] == ["http://10.0.0.11:8081"]
    # then the drain waits, in the module that puts the routing in force, for the requests in
    # flight on the backends it drained (any model) to finish
    module = plugin_module("action", "hearth_routing")
    door = {"health_url": "http://127.0.0.1:8090/health", "idle_timeout": 600}
    assert module.idle_of({**args, **door}, out) == {
        "metrics_url": "http://127.0.0.1:8090/metrics",
        "backends": ["http://10.0.0.11:8081"],
        "timeout": 600,
    }
    assert module.idle_of({**args, **door, "idle_timeout": 0}, out) is None
    _, back_out = work_out(None, hearth, {**args, "op": "undrain"}, one)
    assert module.idle_of({**args, **door, "op": "undrain"}, back_out) is None
    # the canary's end (and a swap) waits on the backend the engine left, for its model
    ended = {"from": "http://10.0.0.11:8085", "to": "http://10.0.0.11:8081"}
    canary_end = {**door, "op": "canary_end", "model": "other"}
    assert module.idle_of(canary_end, ended) == {
        "metrics_url": "http://127.0.0.1:8090/metrics",
        "model": "other",
        "backends": ["http://10.0.0.11:8085"],
        "timeout": 600,
    }


def test_a_recorded_probe_of_a_real_gpu_vm_without_dkms_refuses_the_reboot() -> None:
    """Recorded on an H200 machine (tests/fixtures/dkms/SOURCES.md): a kernel booted by its
    hypervisor, the nvidia module built outside DKMS, no boot loader files: the kernel that boots
    next cannot be told, so the window does not reboot it."""
    out = dkms.verdict_of_report(_fixture("probe-h200-vm-no-dkms.txt"), "6.18.44-fc-v657-gpu")
    assert not out["ok"] and out["kernel"] is None
    assert out["message"] == (
        "cannot tell which kernel boots next: no boot loader configuration found (grubby, "
        "/boot/grub/grub.cfg, /vmlinuz); not rebooting"
    )


def _samples(text: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        sample.name + "".join(f"/{v}" for v in sample.labels.values()): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_upgrade_state_is_published_as_metrics() -> None:
    """What roles/upgrade writes to node_exporter's textfile directory at each step (the
    HostUpgradeStopped alert reads it; its promtool case is in the prometheus role's tests)."""
    stopped = {"step": "drained", "started": "2026-11-28T10:00:00Z", "message": "gate failed"}
    assert _samples(upgrade.render_metrics(stopped, 1_800_000_000.4)) == {
        "hearth_upgrade_step_info/drained": 1,
        "hearth_upgrade_in_progress": 1,
        "hearth_upgrade_stopped": 1,
        "hearth_upgrade_step_timestamp_seconds": 1_800_000_000,
        "hearth_upgrade_started_timestamp_seconds": 1_795_860_000,
    }
    done = {**stopped, "step": "done", "message": "", "finished": "2026-11-28T10:30:00Z"}
    figures = _samples(upgrade.render_metrics(done, 0))
    assert figures["hearth_upgrade_stopped"] == figures["hearth_upgrade_in_progress"] == 0
    assert figures["hearth_upgrade_finished_timestamp_seconds"] == 1_795_861_800
    running = _samples(upgrade.render_metrics({"step": "rebooted", "message": ""}, 0))
    assert running["hearth_upgrade_in_progress"] == 1 and running["hearth_upgrade_stopped"] == 0
    # the role writes it through its filter
    text = _filter("hearth_upgrade")["hearth_upgrade_metrics"](stopped)
    assert _samples(text)["hearth_upgrade_stopped"] == 1


def test_skipped_hosts_are_left_out_of_the_batches(tmp_path: Path) -> None:
    """``upgrade_skip: true`` (the GPU Operator's skip label): the host is not upgraded and
    keeps serving, so a batch of the other replica alone drains nothing for good."""
    import yaml

    from hearth.inventory import load_inventory

    models = [{"name": "m", "version": "1", "engine": "llamacpp", "format": "gguf"}]
    (tmp_path / "host_vars").mkdir()
    (tmp_path / "host_vars" / "gpu02.yml").write_text("upgrade_skip: true\n")
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump({"all": {
        "vars": {"hearth_models": models},
        "children": {"gpu_nodes": {"hosts": {"gpu01": {}, "gpu02": {}, "gpu03": {}}},
                     "inference": {"hosts": {"gpu01": {}, "gpu02": {}}}},
    }}))  # fmt: skip
    inv = load_inventory(tmp_path / "hosts.yml")
    hosts = upgrade.upgrade_hosts(inv, None)
    assert upgrade.skipped_hosts(inv, hosts) == ["gpu02"]
    left = [h for h in hosts if h not in upgrade.skipped_hosts(inv, hosts)]
    assert upgrade.batches(left, 1) == [["gpu01"], ["gpu03"]]
