"""Day-2 models on the lab, for real: two hosts (lab1, lab2) serve SmolLM2 on llama.cpp as
replicas behind the front door on lab1, while a bounded load loop (chat completions, half of
them streamed) runs through the front door and counts every failed request and broken stream.

In order (each test builds on the ones before):

1. v1 → v2 through the inventory and `hearth up`: 0 failed requests; v2 live on both hosts, one
   host at a time; v1's engine kept, stopped; the front door's routing back to the inventory's;
   the changelog says promoted.
2. A second run changes nothing and restarts no container.
3. v3, whose chat template drops the user's question, is refused at the golden-question gate on
   the first host (exit 3 naming the gate and the question); v2 serves on both hosts, the second
   host untouched; the refusal is in the changelog; 0 failed requests.
4. `hearth models rollback --to v1` from the kept container, the fast path (v1 served on both
   hosts, its kept engines and verified files are there): 0 failed requests, v1 live on both
   hosts, `rolled back` with path fast and the health and warm-up gates in the changelog; with
   the inventory set back to v1 as the command says, a run changes nothing.
   A rollback the fast path cannot take (lab2 lost its kept engine of v2) goes the full gated
   path and says why; the fast rollback to v1 after it puts lab2 back.
5. The first host's new engine is killed while it is gated: the run stops (exit 3, the health
   gate), the second host is not touched, v1 serves on both, 0 failed requests.
6. A drain-first rollout (forced: the lab has no GPU to run out of): a batch that would drain
   both replicas is refused from the inventory (exit 2); lab1 alone drains to lab2, is replaced
   and gated in place, and comes back: 0 failed requests.
7. Refusals before any change: an unknown model, a version that is not kept (exit 2).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from labkit import container_exec, hearth, vault_front_door_key, write_inventory
from test_inference import API_KEY, smollm2

from hearth import lab as lab_mod
from hearth import paths, runner
from hearth.fleet import backup
from hearth.inventory import check_inventory

pytestmark = pytest.mark.lab

HOSTS = ("lab1", "lab2")
DOOR = "lab1"
PORT = 8090
ENGINE = "hearth-engine-smollm2"
CHANGELOG = "/var/lib/hearth/models/changelog.jsonl"
# A chat template that drops the conversation and asks something else: the engine answers, its
# health check and warm-up pass, and the golden questions catch it.
GOLDEN_ONLY = "{{ 'lab' | hearth_question_set | rejectattr('kind', 'defined') | list }}"
BROKEN_TEMPLATE = (
    "<|im_start|>user\nTell me a short story about a cat.<|im_end|>\n<|im_start|>assistant\n"
)


@dataclass
class Load:
    """A bounded load loop through the front door: ``workers`` clients, each alternating a
    plain and a streamed chat completion, until stopped (the operation under test ended) or
    ``limit`` requests were sent (then ``covered`` is false: the loop did not last the whole
    operation, and a test must say so).

    Each client waits ``pause`` seconds between its requests. Without a pause two clients kept
    both lab engines busy all the time (about 10 requests a second), and on a 2-core machine
    that load took the CPU from the very operation under test and from the other test group
    beside it. With it, a request still starts every few tenths of a second and one is in
    flight about half of the time, so an outage or a dropped connection at a switch is still
    met: in the lab's runs, one to four requests a second, a hundred or more per operation."""

    url: str
    workers: int = 2
    limit: int = 20000
    pause: float = 0.3
    sent: int = 0
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _one(self, stream: bool) -> str | None:
        body = {
            "model": "smollm2",
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 8,
            "temperature": 0,
            "stream": stream,
        }
        request = urllib.request.Request(
            f"{self.url}/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as answer:
                text = answer.read().decode()
        except urllib.error.HTTPError as e:
            return f"HTTP {e.code}: {e.read()[:200]!r}"
        except OSError as e:
            return f"{type(e).__name__}: {e}"
        if stream and "[DONE]" not in text:
            return f"broken stream: {text[-200:]!r}"
        if not stream and '"choices"' not in text:
            return f"no answer: {text[:200]!r}"
        return None

    def _work(self, index: int) -> None:
        stream = bool(index % 2)
        while not self._stop.is_set():
            with self._lock:
                if self.sent >= self.limit:
                    return
                self.sent += 1
            problem = self._one(stream)
            stream = not stream
            with self._lock:
                if problem is None:
                    self.ok += 1
                else:
                    self.failures.append(f"{time.strftime('%H:%M:%S')} {problem}")
            self._stop.wait(self.pause)

    def __enter__(self) -> Load:
        for index in range(self.workers):
            thread = threading.Thread(target=self._work, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    @property
    def covered(self) -> bool:
        return self.sent < self.limit

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=180)
        print(f"\nload loop: {self.sent} requests, {self.ok} answered, {len(self.failures)} failed")


@dataclass
class Fleet:
    state: lab_mod.LabState
    directory: Path
    vault: Path
    door: str
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def inventory(self) -> Path:
        return self.directory / "hosts.yml"

    def declare(self, version: str, **over: Any) -> None:
        model = smollm2(version, engine_args={"threads": 1}, **over)
        target = self.directory / "group_vars" / "inference" / "models.yml"
        target.write_text(yaml.safe_dump({"hearth_models": [model]}, sort_keys=False))

    def hearth(self, label: str, *args: str) -> Any:
        began = time.monotonic()
        done = hearth(*args, "-i", str(self.inventory), "--vault-password-file", str(self.vault))
        self.timings[label] = round(time.monotonic() - began, 1)
        return done

    def sh(self, host: str, command: str) -> str:
        return container_exec(self.state, host, "sh", "-c", command).stdout.strip()

    def live_version(self, host: str) -> str:
        fmt = '{{index .Config.Labels "io.hearth.version"}} {{.State.Status}}'
        return self.sh(host, f"docker inspect --format '{fmt}' {ENGINE}")

    def events(self, host: str) -> list[dict[str, Any]]:
        lines = self.sh(host, f"cat {CHANGELOG}").splitlines()
        return [json.loads(line) for line in lines if '"event"' in line]

    def routing(self) -> Any:
        return json.loads(self.sh(self.door_host, "cat /etc/hearth/frontdoor/routing.json"))

    door_host: str = DOOR


def _clean(fleet: Fleet) -> None:
    for host in HOSTS:
        fleet.sh(
            host,
            "docker rm -f $(docker ps -aq --filter label=io.hearth.managed-by) 2>/dev/null; "
            "rm -rf /var/lib/hearth/models/smollm2 /etc/hearth/live /etc/hearth/frontdoor "
            f"{CHANGELOG}; true",
        )


@pytest.fixture(scope="module")
def fleet(
    lab: lab_mod.LabState, engine_images: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    directory = tmp_path_factory.mktemp("rollout") / "inventory"
    write_inventory(
        lab,
        directory,
        group_vars={
            "container_runtime_toolkit_source": "distribution",
            "hearth_operator": "rollout-test",
            # the front door on one host routes to engines on the others: they listen on every
            # address (docs/inference.md, "Who reaches an engine"), not on loopback
            "inference_engine_bind_address": "0.0.0.0",
            "front_door_port": PORT,
            "canary_questions": "{{ 'lab' | hearth_question_set }}",
            # The gates ask the lab set's golden questions only: the 135M model's answers to an
            # injection probe are not stable enough to gate a test on (it leaked the per-run
            # marker to one in some runs); the canary still asks the probe.
            "canary_question_sets": {"smollm2": GOLDEN_ONLY},
        },
        groups={"inference": list(HOSTS), "frontdoor": [DOOR]},
    )
    vault = vault_front_door_key(directory, API_KEY)
    (directory / "group_vars" / "inference").mkdir(parents=True)
    address = next(h.address for h in lab.hosts if h.name == DOOR)
    result = Fleet(lab, directory, vault, f"http://{address}:{PORT}")
    _clean(result)
    result.declare("v1")
    done = result.hearth("first", "up", "--limit", ",".join(HOSTS))
    assert done.returncode == 0, f"hearth up:\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    yield result
    print(f"\nrollout: {', '.join(f'{k} {v} s' for k, v in result.timings.items())}")
    _clean(result)  # free lab1's and lab2's ports for the modules that follow


def test_v1_to_v2_rolls_out_host_by_host_with_no_failed_request(fleet: Fleet) -> None:
    fleet.declare("v2")
    with Load(fleet.door) as load:
        time.sleep(3)  # the loop is running before the rollout starts
        done = fleet.hearth("rollout v2", "up", "--playbook", "inference.yml")
        time.sleep(3)
    assert done.returncode == 0, f"{done.stdout[-6000:]}\n{done.stderr[-2000:]}"
    assert load.failures == [], load.failures[:10]
    assert load.ok >= 20 and load.covered, f"the load loop did not last ({load.sent} sent)"
    for host in HOSTS:
        assert fleet.live_version(host) == "v2 running", host
        kept = fleet.sh(host, f"docker inspect --format '{{{{.State.Status}}}}' {ENGINE}--v1")
        assert kept == "exited", f"{host}: v1's engine is not kept stopped ({kept!r})"
        assert fleet.sh(host, f"docker ps -aq --filter name={ENGINE}--next") == ""
        promoted = [e for e in fleet.events(host) if e["event"] == "promoted"]
        assert promoted and promoted[-1]["to_version"] == "v2", fleet.events(host)
        assert promoted[-1]["from_version"] == "v1" and promoted[-1]["operator"] == "rollout-test"
    assert fleet.routing() == {"models": {}}, "a finished rollout leaves no routing override"
    first = [e for e in fleet.events("lab1") if e["event"] == "promoted"][-1]["time"]
    second = [e for e in fleet.events("lab2") if e["event"] == "promoted"][-1]["time"]
    assert first <= second, "lab2 was rolled out before lab1 finished (batches of one host)"


def _container_ids(fleet: Fleet) -> dict[str, str]:
    found = {}
    for host in HOSTS:
        for line in fleet.sh(host, "docker ps -q --no-trunc --format '{{.Names}} {{.ID}}'").split(
            "\n"
        ):
            if line:
                name, ident = line.split()
                found[f"{host}/{name}"] = ident
    return found


def test_a_second_run_changes_nothing(fleet: Fleet) -> None:
    before = _container_ids(fleet)
    result = runner.run_playbook(
        "inference.yml", fleet.inventory, vault_password_file=fleet.vault, label="rollout-noop"
    )
    result.raise_for_status()
    for host in HOSTS:
        assert result.hosts[host].changed == 0, f"{host} not idempotent: {result.artifacts}"
    assert _container_ids(fleet) == before, "a second run restarted a container"


def test_a_version_failing_its_golden_questions_is_refused(fleet: Fleet) -> None:
    fleet.declare("v3", chat_template=BROKEN_TEMPLATE)
    with Load(fleet.door) as load:
        time.sleep(2)
        done = fleet.hearth("refused v3", "up", "--playbook", "inference.yml")
    output = done.stdout + done.stderr
    assert done.returncode == 3, output[-5000:]
    assert "refused on lab1 at the golden questions gate" in output, output[-5000:]
    assert "question 'capital-france' failed" in output, output[-5000:]
    assert load.failures == [] and load.covered, load.failures[:10]
    for host in HOSTS:
        assert fleet.live_version(host) == "v2 running", host
    assert fleet.sh("lab1", f"docker ps -aq --filter name={ENGINE}--next") == ""
    refused = [e for e in fleet.events("lab1") if e["event"] == "refused"]
    assert refused and refused[-1]["to_version"] == "v3", fleet.events("lab1")
    assert refused[-1]["gate"] == "golden questions" and "capital" in refused[-1]["detail"]
    assert not [e for e in fleet.events("lab2") if e["to_version"] == "v3"], "lab2 was touched"
    assert fleet.sh("lab1", "readlink /var/lib/hearth/models/smollm2/current") == "v2"
    assert fleet.routing() == {"models": {}}
    fleet.declare("v2")  # the operator takes v3 back out of the inventory


def test_rollback_to_v1_from_the_kept_engine(fleet: Fleet) -> None:
    kept_ids = {
        h: fleet.sh(h, f"docker inspect --format '{{{{.Id}}}}' {ENGINE}--v1") for h in HOSTS
    }
    began = time.time()
    with Load(fleet.door) as load:
        time.sleep(2)
        done = fleet.hearth(
            "rollback v1", "models", "rollback", "smollm2", "--to", "v1", "--reason", "test"
        )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    assert "To keep v1" in output, output[-2000:]
    # v1 served on both hosts and its kept engines and verified files are there: the fast path
    assert "fast path" in output and "full gated path" not in output, output[-4000:]
    assert load.failures == [] and load.covered, load.failures[:10]
    # the automatic backup of both hosts came first (hearth_backup_before_changes, default on)
    assert "backup before the rollback of smollm2 of lab1, lab2" in output, output[-4000:]
    ident = backup.identity(check_inventory(fleet.inventory, vault_password_file=fleet.vault))
    archives = [
        a
        for a in backup.archives(paths.hearth_home() / "backups", ident)
        if a.stat().st_mtime >= began
    ]
    assert len(archives) == 1, archives
    assert sorted(backup.read_manifest(archives[0])["hosts"]) == list(HOSTS)
    for host in HOSTS:
        assert fleet.live_version(host) == "v1 running", host
        live_id = fleet.sh(host, f"docker inspect --format '{{{{.Id}}}}' {ENGINE}")
        assert live_id == kept_ids[host], f"{host}: v1 was not brought back from its kept engine"
        back = [e for e in fleet.events(host) if e["event"] == "rolled back"]
        assert back and back[-1]["to_version"] == "v1" and back[-1]["reason"] == "test"
        assert back[-1]["from_version"] == "v2" and back[-1]["path"] == "fast", back[-1]
        # it passed its golden questions here: health and warm-up gate the fast path
        assert back[-1]["gates"] == ["health", "warm-up"], back[-1]
        kept = fleet.sh(host, f"docker inspect --format '{{{{.State.Status}}}}' {ENGINE}--v2")
        assert kept == "exited", f"{host}: v2's engine is not kept stopped ({kept!r})"
        assert fleet.sh(host, "readlink /var/lib/hearth/models/smollm2/current") == "v1"
    assert fleet.routing() == {"models": {}}, "a finished rollback leaves no routing override"
    status = fleet.hearth("status", "models", "status", "smollm2")
    assert status.returncode == 0 and "v1" in status.stdout, status.stdout + status.stderr
    log = fleet.hearth("log", "models", "log", "smollm2")
    assert log.returncode == 0 and "refused" in log.stdout and "rolled back" in log.stdout
    assert "[fast path]" in log.stdout, log.stdout
    # as the command says: the inventory keeps v1, and a run then changes nothing
    fleet.declare("v1")
    result = runner.run_playbook(
        "inference.yml", fleet.inventory, vault_password_file=fleet.vault, label="rollout-kept"
    )
    result.raise_for_status()
    assert all(result.hosts[h].changed == 0 for h in HOSTS), result.artifacts


def test_a_rollback_the_fast_path_cannot_take_goes_the_full_gated_path(fleet: Fleet) -> None:
    """lab2 lost its kept engine of v2: a rollback to v2 there takes the full gated path and says
    why (0 failed requests, v2 live, the golden questions asked); the fast rollback to v1 that
    follows puts things back as the tests after this one expect them."""
    fleet.sh("lab2", f"docker rm {ENGINE}--v2")
    with Load(fleet.door) as load:
        time.sleep(2)
        done = fleet.hearth(
            "rollback v2 full", "models", "rollback", "smollm2", "--to", "v2", "--limit", "lab2",
            "--no-backup",
        )  # fmt: skip
    said = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 0, said[-6000:]
    assert (
        "full gated path (not the fast one): lab2: no kept container of v2 "
        f"({ENGINE}--v2 was removed or pruned)" in said
    ), said[-3000:]
    assert load.failures == [] and load.covered, load.failures[:10]
    assert fleet.live_version("lab2") == "v2 running" and fleet.live_version("lab1") == "v1 running"
    last = fleet.events("lab2")[-1]
    assert (last["to_version"], last["path"]) == ("v2", "full"), last
    assert last["gates"] == ["health", "warm-up", "golden questions"], last
    with Load(fleet.door) as load:
        time.sleep(2)
        done = fleet.hearth(
            "rollback v1 fast", "models", "rollback", "smollm2", "--to", "v1", "--limit", "lab2",
            "--no-backup",
        )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "fast path" in output, output[-6000:]
    assert load.failures == [] and load.covered, load.failures[:10]
    assert fleet.live_version("lab2") == "v1 running"
    last = fleet.events("lab2")[-1]
    assert (last["event"], last["to_version"], last["path"]) == ("rolled back", "v1", "fast")


def test_an_engine_killed_mid_rollout_stops_the_run_before_the_next_host(fleet: Fleet) -> None:
    site = fleet.directory / "group_vars" / "all" / "site.yml"
    settings = yaml.safe_load(site.read_text())
    site.write_text(yaml.safe_dump({**settings, "inference_engine_health_timeout": 20}))
    before = {h: len(fleet.events(h)) for h in HOSTS}
    killed: list[str] = []

    def kill_the_candidate() -> None:
        for _ in range(1200):
            state = fleet.sh(
                "lab1", f"docker inspect --format '{{{{.State.Status}}}}' {ENGINE}--next"
            )
            if state == "running":
                fleet.sh("lab1", f"docker kill {ENGINE}--next")
                killed.append(time.strftime("%H:%M:%S"))
                return
            time.sleep(0.1)

    fleet.declare("v2")
    killer = threading.Thread(target=kill_the_candidate, daemon=True)
    with Load(fleet.door) as load:
        killer.start()
        done = fleet.hearth("killed", "up", "--playbook", "inference.yml")
        killer.join(timeout=10)
    output = done.stdout + done.stderr
    assert killed, "the candidate never ran"
    assert done.returncode == 3, output[-5000:]
    assert "refused on lab1 at the health gate" in output, output[-5000:]
    assert load.failures == [] and load.covered, load.failures[:10]
    assert fleet.live_version("lab1") == "v1 running"
    assert fleet.live_version("lab2") == "v1 running"
    assert len(fleet.events("lab2")) == before["lab2"], "lab2 was touched"
    assert [e["event"] for e in fleet.events("lab1")[before["lab1"] :]] == ["refused"]
    site.write_text(yaml.safe_dump(settings))
    fleet.declare("v1")


def test_drain_first_rollout_serves_from_the_other_replica(fleet: Fleet) -> None:
    """A version that does not fit beside the live one (forced here: the lab has no GPU) rolls
    out drain-first: a batch that would drain both replicas is refused from the inventory (exit
    2, no host changed); one host at a time, lab1's share drains to lab2 while its engine is
    replaced and gated in place, then comes back. 0 failed requests."""
    rollout = fleet.directory / "group_vars" / "inference" / "rollout.yml"
    rollout.write_text("inference_engine_rollout_strategy: drain\n")
    before = _container_ids(fleet)
    refused = fleet.hearth("drain refused", "models", "rollout", "smollm2", "v1", "--batch", "2")
    said = " ".join((refused.stdout + refused.stderr).split())
    assert refused.returncode == 2, said[-3000:]
    assert "drains lab1, lab2 (batch lab1, lab2) and leaves it with no serving replica" in said
    assert "inference_engine_rollout_strategy is drain" in said and "--allow-downtime" in said
    assert _container_ids(fleet) == before
    lab2 = len(fleet.events("lab2"))
    fleet.declare("v4")
    try:
        with Load(fleet.door) as load:
            time.sleep(2)
            done = fleet.hearth(
                "drain-first v4", "up", "--playbook", "inference.yml", "--limit", "lab1"
            )
            time.sleep(2)
        output = done.stdout + done.stderr
        assert done.returncode == 0, output[-6000:]
        assert "drain-first: inference_engine_rollout_strategy is drain" in " ".join(
            output.split()
        ), output[-4000:]
        assert load.failures == [] and load.covered, load.failures[:10]
        assert load.ok >= 10, f"too few answered ({load.ok})"
        assert fleet.live_version("lab1") == "v4 running"
        assert fleet.live_version("lab2") == "v1 running"
        assert len(fleet.events("lab2")) == lab2, "lab2 was touched"
        last = fleet.events("lab1")[-1]
        assert (last["event"], last["to_version"], last["how"]) == ("promoted", "v4", "drain")
        kept = fleet.sh("lab1", f"docker inspect --format '{{{{.State.Status}}}}' {ENGINE}--v1")
        assert kept == "exited", kept
        assert fleet.routing() == {"models": {}}, "lab1 is not back in the front door's routing"
    finally:
        rollout.unlink()


@pytest.mark.parametrize(
    ("args", "culprit"),
    [
        (("rollback", "llama"), "model 'llama': no inference host"),
        (("rollback", "smollm2", "--to", "v9"), "version 'v9' is not kept on lab1"),
        (("rollout", "smollm2", "v9"), "version 'v9' is not kept on lab1"),
        (("rollout", "smollm2", "v1", "--batch", "150%"), "--batch '150%'"),
    ],
)
def test_refusals_change_nothing(fleet: Fleet, args: tuple[str, ...], culprit: str) -> None:
    before = _container_ids(fleet)
    done = fleet.hearth("refusal", "models", *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert culprit in done.stdout + done.stderr, done.stdout + done.stderr
    assert _container_ids(fleet) == before


# ------------------------------------------------------------------- canary share (issue 10)
NEXT = f"{ENGINE}--next"
fmt_version = '{{index .Config.Labels "io.hearth.version"}} {{.State.Status}}'


def _answered_by_version(fleet: Fleet) -> dict[str, float]:
    """The front door's answered requests of smollm2 (status 200), by the version that answered
    (its per-version metrics)."""
    with urllib.request.urlopen(f"{fleet.door}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        ours = line.startswith("hearth_frontdoor_requests_total{") and 'model="smollm2"' in line
        if ours and 'status="200"' in line and 'version="' in line:
            version = line.split('version="', 1)[1].split('"', 1)[0]
            found[version] = found.get(version, 0.0) + float(line.rsplit(" ", 1)[1])
    return found


def _grown(before: dict[str, float], after: dict[str, float]) -> set[str]:
    return {v for v, n in after.items() if n > before.get(v, 0.0)}


def _canary_started(fleet: Fleet, label: str, olds: dict[str, str]) -> None:
    with Load(fleet.door) as load:
        time.sleep(2)
        done = fleet.hearth(label, "up", "--playbook", "inference.yml")
        time.sleep(2)
    assert done.returncode == 0, f"{done.stdout[-6000:]}\n{done.stderr[-2000:]}"
    assert load.failures == [] and load.covered, load.failures[:10]
    for host in HOSTS:
        assert fleet.live_version(host) == f"{olds[host]} running", f"{host}: the old one stopped"
        running = fleet.sh(host, f"docker inspect --format '{fmt_version}' {NEXT}")
        assert running == "v5 running", f"{host}: the canary's engine ({running!r})"
        last = fleet.events(host)[-1]
        assert (last["event"], last["to_version"], last["share"]) == ("canary", "v5", 50), last
        assert last["from_version"] == olds[host] and last["soak_end"] > last["time"], last
    entry = fleet.routing()["models"]["smollm2"]
    assert entry["canary"]["share"] == 50 and len(entry["canary"]["backends"]) == 2, entry


def test_a_canary_share_then_abort_then_promote_with_no_failed_request(fleet: Fleet) -> None:
    """v5 with canary_share 50: beside the live engines and gated, then half of the requests go
    to it (both versions answer, by the front door's per-version metrics) while the old engines
    keep serving; the inventory's share changed to 25 is applied by a routing reload with no
    restart; a second run changes nothing; promote before the soak is refused (exit 2);
    `hearth models abort` sends every request back to the old version and removes v5's engine;
    the canary again, then `hearth models promote --now`: v5 alone serves, the old engines are
    kept stopped. 0 failed requests throughout."""
    olds = {h: fleet.live_version(h).split()[0] for h in HOSTS}
    fleet.declare("v5", canary_share=50, canary_soak="2h")
    before = _answered_by_version(fleet)
    _canary_started(fleet, "canary v5", olds)
    during = _answered_by_version(fleet)
    assert _grown(before, during) == {"v5", *olds.values()}, (before, during)

    ids = _container_ids(fleet)
    # the inventory changes the share of the same version mid-canary: applied by a routing
    # reload (no engine or front door restarted, nothing dropped), recorded as `canary share`
    fleet.declare("v5", canary_share=25, canary_soak="2h")
    with Load(fleet.door) as load:
        time.sleep(2)
        reshared = fleet.hearth("canary share 25", "up", "--playbook", "inference.yml")
    assert reshared.returncode == 0, f"{reshared.stdout[-6000:]}\n{reshared.stderr[-2000:]}"
    assert load.failures == [] and load.covered, load.failures[:10]
    assert fleet.routing()["models"]["smollm2"]["canary"]["share"] == 25, fleet.routing()
    for host in HOSTS:
        last = fleet.events(host)[-1]
        assert (last["event"], last["from_share"], last["share"]) == ("canary share", 50, 25), last
        assert last["to_version"] == "v5" and last["from_version"] == olds[host], last
    assert _container_ids(fleet) == ids, "a new canary share restarted a container"
    again = runner.run_playbook(
        "inference.yml", fleet.inventory, vault_password_file=fleet.vault, label="canary-noop"
    )
    again.raise_for_status()
    assert all(again.hosts[h].changed == 0 for h in HOSTS), again.artifacts
    assert _container_ids(fleet) == ids, "a run during the canary restarted a container"

    early = fleet.hearth("promote refused", "models", "promote", "smollm2")
    said = " ".join((early.stdout + early.stderr).split())
    assert early.returncode == 2 and "soaks until" in said and "--now" in said, said[-2000:]
    status = fleet.hearth("canary status", "models", "status", "smollm2")
    assert "lab1: canary v5 serves 25% of the requests" in " ".join(status.stdout.split())

    with Load(fleet.door) as load:
        time.sleep(2)
        done = fleet.hearth("abort", "models", "abort", "smollm2", "--reason", "canary test")
        time.sleep(2)
        aborted = _answered_by_version(fleet)
        time.sleep(3)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    assert load.failures == [] and load.covered, load.failures[:10]
    assert _grown(aborted, _answered_by_version(fleet)) <= set(olds.values())
    for host in HOSTS:
        assert fleet.live_version(host) == f"{olds[host]} running", host
        assert fleet.sh(host, f"docker ps -aq --filter name={NEXT}") == ""
        last = fleet.events(host)[-1]
        assert (last["event"], last["to_version"]) == ("aborted", "v5"), last
        assert last["reason"] == "canary test" and last["from_version"] == olds[host], last
    assert "canary" not in fleet.routing()["models"].get("smollm2", {})
    assert {k: v for k, v in _container_ids(fleet).items() if NEXT not in k} == {
        k: v for k, v in ids.items() if NEXT not in k
    }, "the old engines were restarted"

    fleet.declare("v5", canary_share=50, canary_soak="2h")
    _canary_started(fleet, "canary v5 again", olds)
    with Load(fleet.door) as load:
        time.sleep(2)
        done = fleet.hearth("promote", "models", "promote", "smollm2", "--now")
        time.sleep(2)
        promoted = _answered_by_version(fleet)
        time.sleep(3)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    assert load.failures == [] and load.covered, load.failures[:10]
    grown = _grown(promoted, _answered_by_version(fleet))
    assert grown == {"v5"}, (grown, fleet.routing(), output[-3000:])
    for host in HOSTS:
        assert fleet.live_version(host) == "v5 running", host
        state = "{{.State.Status}}"
        kept = fleet.sh(host, f"docker inspect --format '{state}' {ENGINE}--{olds[host]}")
        assert kept == "exited", f"{host}: {olds[host]}'s engine is not kept stopped ({kept!r})"
        assert fleet.sh(host, f"docker ps -aq --filter name={NEXT}") == ""
        last = fleet.events(host)[-1]
        assert (last["event"], last["to_version"], last["share"]) == ("promoted", "v5", 50), last
    assert fleet.routing() == {"models": {}}, "a promoted canary leaves no routing override"
    fleet.declare("v5")
