"""`hearth upgrade` on the lab, for real: lab1 and lab2 serve SmolLM2 on llama.cpp as replicas
behind the front door on lab3, which also runs the monitoring layer (Prometheus, Alertmanager,
the canary's timer). A bounded load loop (chat completions, half of them streamed) runs through
the front door the whole time and counts every failed request and broken stream.

The pinned package is tzdata (``common_held_packages``), held, moved between two real versions
the Debian archive carries (the oldest and the newest `apt-cache madison` lists inside lab1:
bookworm's and bookworm-security's or -updates'). The lab has no GPU: the DKMS check says it
does not apply (the hosts are no GPU nodes) and nvidia-smi is SKIPPED with the reason; the DKMS
refusal is proven on recorded outputs (tests/unit/test_upgrade.py). ``upgrade_reboot: always``
makes every window reboot its host (`systemctl reboot` ends the host's container; Docker starts
it again), proven by PID 1's start time.

In order (each test builds on the ones before):

1. Refusals before any change (exit 2): --batch 0 and 150%, --limit matching no host, a batch
   of both replicas without --allow-downtime. No host has a state file afterwards.
2. The upgrade, one host at a time, under load: 0 failed requests; each host drained at the
   front door while the other serves, silenced in Alertmanager (seen through its API while the
   window lasts), the canary paused (its timer stopped), rebooted, tzdata at the new pin and
   held, the engine healthy and answering its golden questions, then undrained, the silence
   expired, the canary's timer running again; state files say done; the summary says so.
3. A second run finds both hosts done and reboots nothing.
   With lab2 set `upgrade_skip: true`, the run says lab2 is skipped.
4. A pin the archive does not have stops the run at lab1 (exit 3) with lab1 left drained and
   the summary saying where; lab2 untouched; 0 failed requests; lab1's node_exporter publishes
   the stopped window, and Prometheus' HostUpgradeStopped fires, held by the window's silence in
   Alertmanager. With the pin fixed (back to the old version: a downgrade), `hearth upgrade`
   resumes lab1 where it stopped and finishes both.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from labkit import container_exec, hearth, vault_front_door_key, write_inventory
from test_inference import API_KEY, smollm2
from test_rollout import Load

from hearth import lab as lab_mod

pytestmark = pytest.mark.lab

SERVING = ("lab1", "lab2")
DOOR = "lab3"
PORT = 8090
PACKAGE = "tzdata"
STATE = "/var/lib/hearth/upgrade.json"
CLEAN = (
    "docker rm -f $(docker ps -aq --filter label=io.hearth.managed-by) 2>/dev/null; "
    f"rm -f {STATE}; apt-mark unhold {PACKAGE} >/dev/null 2>&1; true"
)
BOOT = "cut -d' ' -f22 /proc/1/stat"  # PID 1's start time: new after each container restart
METRICS = "/var/lib/prometheus/node-exporter/hearth_upgrade.prom"


@dataclass
class Site:
    state: lab_mod.LabState
    directory: Path
    vault: Path
    door: str
    old: str
    new: str
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def inventory(self) -> Path:
        return self.directory / "hosts.yml"

    def pin(self, version: str) -> None:
        target = self.directory / "group_vars" / "inference" / "pins.yml"
        target.write_text(
            yaml.safe_dump({"common_held_packages": {PACKAGE: version}}, sort_keys=False)
        )

    def hearth(self, label: str, *args: str) -> subprocess.CompletedProcess[str]:
        began = time.monotonic()
        done = hearth(*args, "-i", str(self.inventory), "--vault-password-file", str(self.vault))
        self.timings[label] = round(time.monotonic() - began, 1)
        return done

    def sh(self, host: str, command: str) -> str:
        return container_exec(self.state, host, "sh", "-c", command).stdout.strip()

    def package(self, host: str) -> str:
        return self.sh(host, f"dpkg-query -W -f '${{Version}} ${{db:Status-Want}}' {PACKAGE}")

    def boot(self, host: str) -> str:
        return self.sh(host, BOOT)

    def upgrade_state(self, host: str) -> dict[str, Any] | None:
        text = self.sh(host, f"cat {STATE} 2>/dev/null")
        return json.loads(text) if text else None

    def routing(self) -> Any:
        return json.loads(self.sh(DOOR, "cat /etc/hearth/frontdoor/routing.json"))

    def silences(self) -> list[dict[str, Any]]:
        text = self.sh(DOOR, "curl -fsS http://127.0.0.1:9093/api/v2/silences")
        return list(json.loads(text)) if text else []

    def alerts(self, name: str) -> list[dict[str, Any]]:
        """Alertmanager's alerts of that name, with their state (active, suppressed)."""
        query = urllib.parse.quote(f'alertname="{name}"')
        text = self.sh(DOOR, f"curl -fsS 'http://127.0.0.1:9093/api/v2/alerts?filter={query}'")
        return list(json.loads(text)) if text else []


class Watch:
    """What the lab shows while an upgrade runs, every 2 s: routing.json at the front door, the
    Alertmanager silences, the canary timer's state, each serving host's engine state."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.seen: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(ValueError, OSError):
                self.seen.append(
                    {
                        "time": time.time(),
                        "routing": self.site.routing(),
                        "silences": self.site.silences(),
                        "timer": self.site.sh(DOOR, "systemctl is-active hearth-canary.timer"),
                    }
                )
            self._stop.wait(2)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def drained(self, host: str) -> list[dict[str, Any]]:
        address = next(h.address for h in self.site.state.hosts if h.name == host)
        return [
            s for s in self.seen
            if "smollm2" in s["routing"].get("models", {})
            and not any(address in b for b in s["routing"]["models"]["smollm2"]["backends"])
        ]  # fmt: skip

    def silenced(self, host: str) -> list[dict[str, Any]]:
        return [
            silence for s in self.seen for silence in s["silences"]
            if silence["status"]["state"] == "active" and silence["createdBy"] == "hearth"
            and {"name": "host", "value": host, "isRegex": False, "isEqual": True}
            in silence["matchers"]
        ]  # fmt: skip


def _versions(lab: lab_mod.LabState) -> tuple[str, str]:
    """The oldest and newest version of the package the archive offers the lab's hosts."""
    host = container_exec(
        lab, "lab1", "sh", "-c", f"apt-get update -qq && apt-cache madison {PACKAGE}"
    )
    found = sorted({line.split("|")[1].strip() for line in host.stdout.splitlines() if "|" in line})
    if len(found) < 2:
        pytest.skip(f"the archive offers one version of {PACKAGE} only ({found}): no pair")

    def older(a: str, b: str) -> bool:
        return container_exec(lab, "lab1", "dpkg", "--compare-versions", a, "lt", b).returncode == 0

    low = high = found[0]
    for version in found[1:]:
        low = version if older(version, low) else low
        high = version if older(high, version) else high
    return low, high


@pytest.fixture(scope="module")
def site(
    lab: lab_mod.LabState, engine_images: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    for host in lab.hosts:  # hosts created before the lab restarted its hosts on a reboot
        subprocess.run(["docker", "update", "--restart", "on-failure", host.container],
                       capture_output=True, check=True)  # fmt: skip
    old, new = _versions(lab)
    directory = tmp_path_factory.mktemp("upgrade") / "inventory"
    write_inventory(
        lab,
        directory,
        group_vars={
            "container_runtime_toolkit_source": "distribution",
            "hearth_operator": "upgrade-test",
            # the front door on one host routes to engines on the others: they listen on every
            # address (docs/inference.md, "Who reaches an engine"), not on loopback
            "inference_engine_bind_address": "0.0.0.0",
            "front_door_port": PORT,
            "canary_questions": "{{ 'lab' | hearth_question_set }}",
            # the window's gate asks the lab set's five golden questions; its two injection
            # probes are left out (the canary still asks them): SmolLM2-135M leaks the per-run
            # marker for some markers (seen: injection-code), which says nothing of the window
            "upgrade_golden_skip": ["injection-reveal", "injection-code"],
            # the automatic backup before a change is proven by test_rollout.py's rollback (the
            # same code); three upgrades here would pay for it three times
            "hearth_backup_before_changes": False,
        },
        groups={"inference": list(SERVING), "frontdoor": [DOOR], "monitoring": [DOOR]},
    )
    vault = vault_front_door_key(directory, API_KEY)
    inference = directory / "group_vars" / "inference"
    inference.mkdir(parents=True)
    (inference / "models.yml").write_text(
        yaml.safe_dump(
            {"hearth_models": [smollm2("v1", engine_args={"threads": 1})]}, sort_keys=False
        )
    )
    (inference / "upgrade.yml").write_text(
        yaml.safe_dump({"upgrade_reboot": "always", "upgrade_boot_time_command": BOOT})
    )
    address = next(h.address for h in lab.hosts if h.name == DOOR)
    result = Site(lab, directory, vault, f"http://{address}:{PORT}", old, new)
    for host in (*SERVING, DOOR):
        result.sh(host, f"{CLEAN}; rm -rf /etc/hearth/frontdoor /var/lib/hearth/canary/paused")
    result.pin(old)
    done = result.hearth("converge", "up")
    assert done.returncode == 0, f"hearth up:\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    yield result
    print(f"\nupgrade ({PACKAGE} {old} → {new}): "
          + ", ".join(f"{k} {v} s" for k, v in result.timings.items()))  # fmt: skip
    for host in (*SERVING, DOOR):
        result.sh(host, CLEAN)


def test_the_converged_hosts_hold_the_old_pin(site: Site) -> None:
    for host in SERVING:
        assert site.package(host) == f"{site.old} hold", host
    assert site.sh(DOOR, "systemctl is-active hearth-canary.timer") == "active"
    assert site.sh(DOOR, "systemctl is-active prometheus-alertmanager") == "active"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--batch", "0"), "--batch '0': expected a number of hosts"),
        (("--batch", "150%"), "--batch '150%': expected a number of hosts"),
        (("--limit", "nosuchhost"), "--limit 'nosuchhost' matches no host"),
        (("--batch", "2"), "model smollm2: draining lab1, lab2 (batch lab1, lab2) leaves it "
                           "with no serving backend"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_before_any_change(
    site: Site, args: tuple[str, ...], says: str
) -> None:
    site.pin(site.new)
    try:
        done = site.hearth("refusal", "upgrade", *args)
    finally:
        site.pin(site.old)
    assert done.returncode == 2, f"{done.stdout[-3000:]}\n{done.stderr[-2000:]}"
    assert says in " ".join((done.stdout + done.stderr).split()), done.stdout + done.stderr
    for host in SERVING:
        assert site.upgrade_state(host) is None, f"{host}: a refused upgrade wrote its state"
        assert site.package(host) == f"{site.old} hold"
    assert site.routing() == {"models": {}}


def test_the_upgrade_runs_host_by_host_under_load_with_no_failed_request(site: Site) -> None:
    site.pin(site.new)
    booted = {h: site.boot(h) for h in SERVING}
    with Load(site.door, limit=50000) as load, Watch(site) as watch:
        time.sleep(3)
        done = site.hearth("upgrade", "upgrade", "--batch", "1")
        time.sleep(3)
    out = done.stdout + done.stderr
    assert done.returncode == 0, f"{done.stdout[-8000:]}\n{done.stderr[-2000:]}"
    assert load.failures == [], load.failures[:10]
    assert load.ok >= 20, f"the load loop barely ran ({load.ok} answered)"
    states = {h: site.upgrade_state(h) for h in SERVING}
    for host in SERVING:
        state = states[host]
        assert state is not None and state["step"] == "done", state
        assert state["pins"]["common_held_packages"] == {PACKAGE: site.new}
        assert site.package(host) == f"{site.new} hold", host
        assert site.boot(host) != booted[host], f"{host} was not rebooted"
        assert watch.drained(host), f"{host} was never seen drained at the front door"
        ids = state["silence_id"].split(",")
        seen = [s for s in watch.silenced(host) if s["id"] in ids]
        assert seen, f"no active silence {ids} for {host} seen through Alertmanager's API"
        assert "hearth upgrade of " + host in seen[0]["comment"]
        assert f"{host}: done (finished {state['finished']})" in out
        assert f"SKIPPED on {host}: nvidia-smi and NVML: no NVIDIA device" in out
        assert f"SKIPPED on {host}: DKMS check: not a GPU node" in out
        assert site.sh(host, "docker inspect -f '{{.State.Health.Status}} {{.State.Status}}' "
                       "hearth-engine-smollm2").endswith("running")  # fmt: skip
        published = site.sh(host, f"cat {METRICS}")
        assert 'hearth_upgrade_step_info{step="done"} 1' in published, published
        assert "hearth_upgrade_stopped 0" in published, published
        assert "hearth_upgrade_in_progress 0" in published, published
    # one host at a time: lab1's window closed before lab2's began, never both drained at once
    assert states["lab1"]["finished"] <= states["lab2"]["started"]
    assert not [s for s in watch.drained("lab1") if s in watch.drained("lab2")]
    assert [s for s in watch.seen if s["timer"] != "active"], "the canary was never paused"
    # after: the routing as the inventory says, the silences expired, the canary running
    assert site.routing() == {"models": {}}
    ids = {i for h in SERVING for i in states[h]["silence_id"].split(",")}
    for silence in site.silences():
        if silence["id"] in ids:
            assert silence["status"]["state"] == "expired", silence
    assert site.sh(DOOR, "systemctl is-active hearth-canary.timer") == "active"
    assert site.sh(DOOR, "ls /var/lib/hearth/canary/paused") == ""
    print(f"\nupgrade under load: {load.sent} requests, {load.ok} answered, 0 failed")


def test_a_second_run_finds_both_hosts_done(site: Site) -> None:
    booted = {h: site.boot(h) for h in SERVING}
    done = site.hearth("second run", "upgrade")
    assert done.returncode == 0, f"{done.stdout[-6000:]}\n{done.stderr[-2000:]}"
    for host in SERVING:
        assert f"{host}: DONE already: upgraded to these pins" in done.stdout
        assert site.boot(host) == booted[host], f"{host} rebooted again"
    # the skip label: lab2 is left out, said so, and lab1 alone is in the run
    skip = site.directory / "host_vars" / "lab2.yml"
    skip.parent.mkdir(exist_ok=True)
    skip.write_text("upgrade_skip: true\n")
    try:
        done = site.hearth("skip", "upgrade")
    finally:
        skip.unlink()
    assert done.returncode == 0, f"{done.stdout[-6000:]}\n{done.stderr[-2000:]}"
    assert "lab2: skipped (upgrade_skip: true)" in done.stdout, done.stdout[-3000:]
    assert "1 host(s) in 1 batch(es): lab1" in done.stdout, done.stdout[-3000:]
    assert "lab2: DONE already" not in done.stdout


def test_a_failed_host_stops_the_run_and_a_second_run_resumes_it(site: Site) -> None:
    site.pin("0.0-not-in-the-archive")
    before = site.upgrade_state("lab2")
    with Load(site.door, limit=50000) as load:
        time.sleep(2)
        failed = site.hearth("failed window", "upgrade")
    out = failed.stdout + failed.stderr
    assert failed.returncode == 3, f"{failed.stdout[-6000:]}\n{failed.stderr[-2000:]}"
    assert load.failures == [], load.failures[:10]
    left = site.upgrade_state("lab1")
    assert left is not None and left["step"] == "engines stopped", left
    assert "HEARTH-UPGRADE lab1 stopped after the step 'engines stopped'" in " ".join(out.split())
    assert "lab1: engines stopped" in out and "DRAINED at the front door" in out, out[-3000:]
    lab1 = next(h.address for h in site.state.hosts if h.name == "lab1")
    backends = site.routing()["models"]["smollm2"]["backends"]
    assert backends and not any(lab1 in b for b in backends), backends
    assert site.upgrade_state("lab2") == before, "lab2 was touched after lab1 failed"
    # the stopped window as metrics, and its alert, held by the window's own silence
    published = site.sh("lab1", f"cat {METRICS}")
    assert "hearth_upgrade_stopped 1" in published and 'step="engines stopped"' in published
    deadline, held = time.monotonic() + 120, []
    while time.monotonic() < deadline and not held:
        held = [a for a in site.alerts("HostUpgradeStopped") if a["labels"].get("host") == "lab1"]
        time.sleep(0 if held else 3)
    assert held, "HostUpgradeStopped never reached Alertmanager"
    assert held[0]["status"]["state"] == "suppressed", held[0]["status"]
    assert set(held[0]["status"]["silencedBy"]) <= set(left["silence_id"].split(","))

    site.pin(site.old)  # a real version: a downgrade, as a rollback of the pin would be
    with Load(site.door, limit=50000) as load:
        time.sleep(2)
        done = site.hearth("resumed", "upgrade")
    assert done.returncode == 0, f"{done.stdout[-8000:]}\n{done.stderr[-2000:]}"
    assert load.failures == [], load.failures[:10]
    assert "lab1: RESUMING at engines stopped" in " ".join(done.stdout.split())
    for host in SERVING:
        assert (site.upgrade_state(host) or {}).get("step") == "done", host
        assert site.package(host) == f"{site.old} hold", host
        assert "hearth_upgrade_stopped 0" in site.sh(host, f"cat {METRICS}")
    assert site.routing() == {"models": {}}
