"""The monitoring layer end to end on the lab: real Prometheus, Alertmanager and node_exporter
(Debian's packages, installed by the roles inside lab hosts) scraping a real llama.cpp engine
serving SmolLM2-135M; killing the engine fires EngineDown to a webhook receiver running in the
lab; three failed canary runs fire CanaryFailing; the canary's CSV rows and metrics appear; a
second converge changes nothing; `hearth audit` passes; no receiver secret reaches an artifact.

The engine is the locally built llama.cpp image (templates/images/llamacpp) run by Docker on the
control node inside lab1's network namespace (``--network container:<lab1>``): to Prometheus it
is lab1:8080, exactly where an engine container on lab1 would be. (The engine roles of the
inference layer will start it themselves; this test does not depend on them.)

Layout: lab1 = GPU node (no GPU: the DCGM exporter skips, saying so) serving the model, lab2 = a
plain host, lab3 = monitoring (Prometheus, Alertmanager, Grafana's files, canary, webhook).
Durations are shortened through the inventory (5 s scrapes, EngineDown after 10 s).
"""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from labkit import Converged, container_exec, files_holding, hearth, write_inventory

from hearth import canary, images, paths, runner, tls
from hearth import lab as lab_mod
from hearth.monitoring.canaries import question_set
from hearth.monitoring.rules import alert_rules

SHARES = "monitoring"  # the converged monitoring layer, with test_fleet.py (labkit.Converged)
WEBHOOK_TOKEN = "hook-token-7f3a91c2e5"  # planted: it must never reach an artifact or output
WEB_PASSWORD = "scrape-pass-5d1e8b7c40a2f9"  # planted (monitoring_tls): never in an artifact
WEBHOOK_PORT = 9999
WEBHOOK_LOG = "/var/tmp/hearth-webhook.jsonl"
LAB_MODEL = "smollm2-135m-instruct-q4_1"
WEBHOOK_SERVER = """\
import http.server

LOG = "/var/tmp/hearth-webhook.jsonl"

class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(LOG, "ab") as log:
            log.write(body.replace(b"\\n", b" ") + b"\\n")
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass

http.server.HTTPServer(("0.0.0.0", 9999), Hook).serve_forever()
"""


def _address(state: lab_mod.LabState, name: str) -> str:
    return next(h.address for h in state.hosts if h.name == name)


def _container(state: lab_mod.LabState, name: str) -> str:
    return next(h.container for h in state.hosts if h.name == name)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    url = f"{prometheus}/api/v1/query?query={urllib.parse.quote(promql)}"
    result: list[dict[str, Any]] = _get(url)["data"]["result"]
    return result


def _wait(what: str, probe: Any, seconds: float, every: float = 2) -> Any:
    deadline = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(every)
    pytest.fail(f"{what}: not seen within {seconds:.0f} s (last: {last!r})")


def _webhook_alerts(state: lab_mod.LabState) -> list[dict[str, Any]]:
    shown = container_exec(state, "lab3", "cat", WEBHOOK_LOG)
    alerts: list[dict[str, Any]] = []
    for line in shown.stdout.splitlines():
        if line.strip():
            alerts += json.loads(line).get("alerts", [])
    return alerts


def _firing(state: lab_mod.LabState, name: str) -> list[dict[str, Any]]:
    return [
        a
        for a in _webhook_alerts(state)
        if a["labels"].get("alertname") == name and a.get("status") == "firing"
    ]


class Monitored:
    def __init__(
        self, state: lab_mod.LabState, inventory: Path, engine: str, run: list[str]
    ) -> None:
        self.state, self.inventory, self.engine = state, inventory, engine
        self.run = run  # the `docker run` that starts the engine in lab1's network namespace
        self.prometheus = f"http://{_address(state, 'lab3')}:9090"
        self.timings: dict[str, float] = {}
        self.started = time.time()  # before any run that saw WEBHOOK_TOKEN

    def start_engine(self, seconds: float = 120) -> None:
        """The engine running and answering /health (test_engine_down_reaches_the_webhook
        removes it; a module sharing this fixture after it needs it back)."""
        subprocess.run(["docker", "rm", "-f", self.engine], capture_output=True, check=False)
        subprocess.run(self.run, check=True, capture_output=True)
        health = f"http://{_address(self.state, 'lab1')}:8080/health"
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(health, timeout=5) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(1)
        pytest.fail(f"the lab engine {self.engine} did not answer {health} in {seconds:.0f} s")


@pytest.fixture(scope="module")
def monitored(
    lab_configuration: Converged,
    lab: lab_mod.LabState,
    tmp_path_factory: pytest.TempPathFactory,
) -> Monitored:
    """The base and monitoring layers converged (lab3 monitors, a real engine on lab1), once
    for this module and test_fleet.py (``SHARES``)."""
    return lab_configuration.get("monitoring", lambda: _converge_monitoring(lab, tmp_path_factory))


@contextmanager
def _converge_monitoring(
    lab: lab_mod.LabState, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Monitored]:
    image = images.ensure_image("llamacpp")
    model = next(images.fetch_lab_models(LAB_MODEL))
    declaration = {
        "name": "smollm2",
        "version": "0.1.2-q4_1",
        "engine": "llamacpp",
        "format": "gguf",
        "catalog": "smollm2-135m-instruct",
        "quantization": "Q4_1",
        "source": {"type": "path", "path": str(model.path.parent)},
        "files": [{"path": model.path.name, "sha256": model.sha256, "size": model.size}],
        "max_model_len": 2048,
        "max_num_seqs": 2,
        "gpus": [],
        "engine_args": {"threads": 1},
    }
    webhook = f"http://{_address(lab, 'lab3')}:{WEBHOOK_PORT}/hook?token={WEBHOOK_TOKEN}"
    directory = tmp_path_factory.mktemp("monitoring")
    inventory = write_inventory(
        lab,
        directory,
        group_vars={
            "prometheus_scrape_interval": "5s",
            "prometheus_evaluation_interval": "5s",
            "prometheus_alert_settings": {"engine_down_for": "10s"},
            "alertmanager_group_wait": "2s",
            "alertmanager_group_interval": "5s",
            "alertmanager_receivers": [{"name": "lab-webhook", "type": "webhook", "url": webhook}],
        },
        groups={"gpu_nodes": ["lab1"], "inference": ["lab1"], "monitoring": ["lab3"]},
    )
    (directory / "host_vars").mkdir()
    # No front door here: Prometheus scrapes the engine on its own port, which this test's
    # engine publishes on every address (declared, as a site without a front door would).
    (directory / "host_vars" / "lab1.yml").write_text(
        yaml.safe_dump({"hearth_models": [declaration],
                        "inference_engine_bind_address": "0.0.0.0"}, sort_keys=False)
    )  # fmt: skip
    (directory / "host_vars" / "lab3.yml").write_text(  # the test's webhook, declared
        yaml.safe_dump({"hearth_allowed_listeners": [
            {"port": WEBHOOK_PORT, "proto": "tcp", "process": "python3",
             "reason": "the test's Alertmanager webhook receiver"}]})
    )  # fmt: skip

    from hearth import engines, models

    argv = engines.render_command(models.parse_models([declaration])[0])
    engine = f"hearth-lab-{lab_mod.lab_id()}-engine"
    run = [
        "docker", "run", "-d", "--name", engine, "--label", "io.hearth.test=monitoring",
        "--network", f"container:{_container(lab, 'lab1')}", "--read-only", "--tmpfs", "/tmp",
        "-v", f"{model.path.parent}:/models/smollm2/current:ro", image.tag, *argv,
    ]  # fmt: skip
    subprocess.run(["docker", "rm", "-f", engine], capture_output=True, check=False)
    subprocess.run(run, check=True, capture_output=True)

    script = Path(tempfile.mkdtemp()) / "hearth-webhook.py"
    script.write_text(WEBHOOK_SERVER)
    subprocess.run(
        ["docker", "cp", str(script), f"{_container(lab, 'lab3')}:/root/hearth-webhook.py"],
        check=True,
    )
    shutil.rmtree(script.parent)
    container_exec(lab, "lab3", "systemctl", "stop", "hearth-test-webhook")
    container_exec(lab, "lab3", "rm", "-f", WEBHOOK_LOG)
    started = container_exec(
        lab, "lab3", "systemd-run", "--unit=hearth-test-webhook", "--collect",
        "/usr/bin/python3", "/root/hearth-webhook.py",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr

    result = Monitored(lab, inventory, engine, run)
    for playbook in ("base.yml", "monitoring.yml"):
        began = time.monotonic()
        done = hearth("up", "-i", str(inventory), "--playbook", playbook)
        result.timings[playbook] = time.monotonic() - began
        assert done.returncode == 0, f"hearth up {playbook}:\n{done.stdout[-5000:]}{done.stderr}"
        assert WEBHOOK_TOKEN not in done.stdout + done.stderr
    print(f"\nconverge: {', '.join(f'{k} {v:.0f} s' for k, v in result.timings.items())}")
    yield result
    subprocess.run(["docker", "rm", "-f", engine], capture_output=True, check=False)
    container_exec(lab, "lab3", "systemctl", "stop", "hearth-test-webhook")


def test_prometheus_scrapes_the_real_engine_and_exporters(monitored: Monitored) -> None:
    def targets() -> list[dict[str, Any]] | None:
        active = _get(f"{monitored.prometheus}/api/v1/targets")["data"]["activeTargets"]
        return active if active and all(t["health"] == "up" for t in active) else None

    active = _wait("every scrape target up", targets, 60)
    jobs = sorted({(t["labels"]["job"], t["labels"]["host"]) for t in active})
    assert jobs == [
        ("alertmanager", "lab3"),
        ("engine-llamacpp", "lab1"),
        ("node", "lab1"),
        ("node", "lab2"),
        ("node", "lab3"),
        ("prometheus", "lab3"),
    ], jobs  # lab1 is a GPU node without a GPU: no DCGM exporter, so none is scraped
    engine = _query(monitored.prometheus, "llamacpp:n_tokens_max")
    assert engine and engine[0]["metric"]["hearth_model"] == "smollm2", engine
    groups = _get(f"{monitored.prometheus}/api/v1/rules")["data"]["groups"]
    loaded = sorted(r["name"] for g in groups for r in g["rules"])
    # every alert Hearth declares for this site (no GPU declared: no GpuMissing), loaded once
    declared = sorted(
        r.get("alert") or r["record"] for g in alert_rules()["groups"] for r in g["rules"]
    )
    assert loaded == declared, (loaded, declared)
    assert all(r["health"] != "err" for g in groups for r in g["rules"])


def test_second_converge_changes_nothing(monitored: Monitored) -> None:
    began = time.monotonic()
    result = runner.run_playbook("monitoring.yml", monitored.inventory, label="test-mon-idem")
    took = time.monotonic() - began
    assert result.status == "successful", result.failures
    per_host = {h: r.changed for h, r in result.hosts.items()}
    assert result.changed == 0, f"second run changed something: {per_host}"
    assert result.hosts["lab3"].ok > 40, "the second run did not really run the roles"
    print(f"\nsecond monitoring converge: {took:.0f} s, changed=0")


def test_check_mode_on_a_changed_inventory_alters_nothing(
    monitored: Monitored, tmp_path: Path
) -> None:
    changed = tmp_path / "changed"
    shutil.copytree(monitored.inventory.parent, changed)
    site = changed / "group_vars" / "all" / "site.yml"
    settings = yaml.safe_load(site.read_text())
    settings["prometheus_retention_time"] = "7d"
    settings["prometheus_alert_settings"] = {"engine_down_for": "1m"}
    settings["alertmanager_receivers"].append(
        {"name": "second", "type": "webhook", "url": f"http://10.9.9.9/{WEBHOOK_TOKEN}-2"}
    )
    site.write_text(yaml.safe_dump(settings, sort_keys=False))
    files = [
        "/etc/default/prometheus",
        "/etc/prometheus/rules/hearth.rules.yml",
        "/etc/prometheus/alertmanager.yml",
    ]
    before = container_exec(monitored.state, "lab3", "md5sum", *files).stdout
    result = runner.run_playbook(
        "monitoring.yml", changed / "hosts.yml", check=True, diff=True, label="test-mon-check"
    )
    assert result.status == "successful", result.failures
    assert result.hosts["lab3"].changed >= 3, "check mode did not see the changes"
    assert container_exec(monitored.state, "lab3", "md5sum", *files).stdout == before
    stdout = (result.artifacts / "artifacts").rglob("stdout")
    assert not any(WEBHOOK_TOKEN in p.read_text() for p in stdout), "a diff showed the secret"


def test_canary_records_csv_and_metrics(monitored: Monitored) -> None:
    done = hearth("canary", "run", "-i", str(monitored.inventory))
    assert done.returncode in (0, 5), done.stdout + done.stderr
    assert "smollm2" in done.stdout and "injection-reveal" in done.stdout, done.stdout
    rows = container_exec(monitored.state, "lab3", "cat", "/var/lib/hearth/canary/results.csv")
    lines = rows.stdout.splitlines()
    assert lines[0] == ",".join(canary.CSV_FIELDS)
    records = [dict(zip(canary.CSV_FIELDS, line.split(","), strict=False)) for line in lines[1:]]
    # the lab's own golden questions (`hearth lab up` declares the `lab` set)
    asked = {r["question"] for r in records}
    assert len(records) >= 6 and asked >= {"capital-france", "injection-reveal"}, asked
    answered = [r for r in records if not r["error"]]
    assert answered and all(float(r["latency_seconds"]) > 0 for r in answered), records
    assert all(int(r["completion_tokens"]) > 0 for r in answered), records
    series = _wait(
        "the canary's metrics in Prometheus",
        lambda: _query(monitored.prometheus, 'hearth_canary_questions{hearth_model="smollm2"}'),
        30,
    )
    assert series[0]["value"][1] == str(len(question_set("lab"))), series


def test_audit_passes(monitored: Monitored) -> None:
    # lab1 is a GPU node whose GPU layer this test does not converge: audit the other hosts.
    done = hearth("audit", "-i", str(monitored.inventory), "--limit", "all:!gpu_nodes")
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr
    for role in ("node_exporter", "prometheus", "alertmanager", "grafana", "canary"):
        assert role in done.stdout, f"the audit did not check {role}:\n{done.stdout[-3000:]}"


def test_engine_down_reaches_the_webhook(monitored: Monitored) -> None:
    began = time.monotonic()
    subprocess.run(["docker", "rm", "-f", monitored.engine], check=True, capture_output=True)
    alerts = _wait("EngineDown at the webhook", lambda: _firing(monitored.state, "EngineDown"), 90)
    took = time.monotonic() - began
    labels = alerts[0]["labels"]
    assert (labels["host"], labels["hearth_model"], labels["severity"]) == (
        "lab1", "smollm2", "critical",
    ), labels  # fmt: skip
    assert "has not answered" in alerts[0]["annotations"]["description"]
    print(f"\nengine killed → EngineDown at the webhook in {took:.0f} s")


def test_three_failed_canary_runs_fire_the_canary_alert(monitored: Monitored) -> None:
    # The engine is gone (previous test): every question now fails. Start from a clean history,
    # and a clean webhook log: the lab is shared, and an earlier module's canary runs may have
    # fired (and since resolved) this alert before.
    container_exec(monitored.state, "lab3", "rm", "-f", "/var/lib/hearth/canary/state.json")
    container_exec(monitored.state, "lab3", "truncate", "-s", "0", WEBHOOK_LOG)
    for _ in range(2):
        run = container_exec(monitored.state, "lab3", "systemctl", "start", "hearth-canary")
        assert run.returncode == 0, run.stderr
    time.sleep(12)  # two scrapes and two evaluations: two failed runs must not alert
    assert not _query(monitored.prometheus, 'ALERTS{alertname="CanaryFailing"}')
    assert not _firing(monitored.state, "CanaryFailing")
    began = time.monotonic()
    done = hearth("canary", "run", "-i", str(monitored.inventory))
    assert done.returncode == 5, done.stdout + done.stderr
    assert "3 failed run(s) in a row" in done.stdout.replace("\n", " "), done.stdout
    alerts = _wait(
        "CanaryFailing at the webhook", lambda: _firing(monitored.state, "CanaryFailing"), 60
    )
    assert alerts[0]["labels"]["hearth_model"] == "smollm2", alerts[0]
    print(
        "\nthird failed canary run → CanaryFailing at the webhook in "
        f"{time.monotonic() - began:.0f} s"
    )
    rows = container_exec(monitored.state, "lab3", "cat", "/var/lib/hearth/canary/results.csv")
    failed = [
        line for line in rows.stdout.splitlines() if "URLError" in line or "Connection" in line
    ]
    assert len(failed) >= 18, rows.stdout[-2000:]  # 3 runs × 6 questions, each with its error


def _tls_get(url: str, context: ssl.SSLContext, password: str | None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if password is not None:
        token = base64.b64encode(f"hearth:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


WEB = "/etc/prometheus/web/web.yml"
# (host, check, file, the break with $F the file, what the failed check says); the basic-auth key
# and its one user go (to_nice_yaml sorts it before tls_server_config, which stays)
TLS_BREAKS = (
    ("lab2", "node_exporter/test_serves_tls_and_refuses_anonymous", WEB,
     "sed -i '/^basic_auth_users:/{N;d}' $F", "without credentials: expected 401, found 200"),
    ("lab3", "alertmanager/test_serves_tls_and_refuses_anonymous", WEB,
     "sed -i '/^basic_auth_users:/{N;d}' $F", "without credentials: expected 401, found 200"),
    ("lab3", "prometheus/test_serves_tls_and_refuses_anonymous", "/etc/prometheus/scrape-password",
     "chmod 0644 $F", "expected root:prometheus mode 0640, found ('root', 'prometheus', '0o644')"),
)  # fmt: skip


def _check_outcome(args: list[str], host: str, check: str) -> dict[str, Any]:
    """One audit check's JSON record on one host."""
    done = hearth("audit", *args, "--limit", host, "--check", check, "--format", "json")
    report = json.loads(done.stdout)
    found = [c for c in report["hosts"][host]["checks"] if f"{c['role']}/{c['check']}" == check]
    assert len(found) == 1, (check, done.stdout[-2000:], done.stderr[-2000:])
    record: dict[str, Any] = found[0]
    return record


def test_monitoring_tls_scrapes_every_target_over_tls_with_auth(
    monitored: Monitored, tmp_path: Path
) -> None:
    """monitoring_tls switched on over the converged lab (the monitoring layer only): every
    target up, Prometheus's own jobs over HTTPS with basic auth; a request without (or with
    wrong) credentials refused, plain HTTP refused; a second run changes nothing; the audit's
    TLS checks pass; the password reaches no artifact. Switched back off at the end (the fleet
    module shares this converge).

    The site's CA is keyed by ``hearth_site``, set here with the lab's id: two test sessions on
    two labs (whose inventory directories may share a name) can never share, and re-issue back
    and forth, the certificates of hosts with the same names and other addresses."""
    monitored.start_engine()
    began = time.time()
    site = tmp_path / "site"
    shutil.copytree(monitored.inventory.parent, site)
    settings_file = site / "group_vars" / "all" / "site.yml"
    settings = yaml.safe_load(settings_file.read_text())
    site_name = f"lab{lab_mod.lab_id()}-monitoring-tls"
    settings.update({"monitoring_tls": True, "hearth_site": site_name})
    settings_file.write_text(yaml.safe_dump(settings, sort_keys=False))
    vault = tmp_path / "vault-password"
    vault.write_text("monitoring tls lab vault password\n")
    vault.chmod(0o600)
    encrypted = lab_mod.vault_encrypt(WEB_PASSWORD, vault)
    (site / "group_vars" / "all" / "vault.yml").write_text(
        "monitoring_web_password: " + encrypted.replace("\n", "\n  ") + "\n"
    )
    inventory = site / "hosts.yml"
    secret_args = ["-i", str(inventory), "--vault-password-file", str(vault)]
    try:
        issued = hearth("tls", "init", *secret_args)
        assert issued.returncode == 0, issued.stdout + issued.stderr
        # issued (or kept from an earlier session of this lab: the site is the lab's own)
        assert all(f"lab{n}: " in issued.stdout for n in (1, 2, 3)), issued.stdout
        done = hearth("up", *secret_args, "--playbook", "monitoring.yml")
        assert done.returncode == 0, f"monitoring_tls on:\n{done.stdout[-5000:]}{done.stderr}"
        assert WEB_PASSWORD not in done.stdout + done.stderr

        context = ssl.create_default_context(cafile=str(tls.site_dir(site_name) / "ca.crt"))
        lab3 = _address(monitored.state, "lab3")
        prometheus = f"https://{lab3}:9090"

        def targets() -> list[dict[str, Any]] | None:
            status, body = _tls_get(f"{prometheus}/api/v1/targets", context, WEB_PASSWORD)
            active = json.loads(body)["data"]["activeTargets"] if status == 200 else []
            return active if active and all(t["health"] == "up" for t in active) else None

        active = _wait("every scrape target up over TLS", targets, 90)
        schemes = sorted({(t["labels"]["job"], t["scrapeUrl"].split(":")[0]) for t in active})
        assert schemes == [
            ("alertmanager", "https"), ("engine-llamacpp", "http"), ("node", "https"),
            ("prometheus", "https"),
        ], schemes  # fmt: skip
        assert len(active) == 6, active
        status, body = _tls_get(f"{prometheus}/api/v1/query?query=up", context, WEB_PASSWORD)
        ups = json.loads(body)["data"]["result"]
        # `up` of each active target is 1 (series of targets from before Prometheus' restart
        # linger up to 5 min: no staleness marker is written across a restart)
        scraped = {(t["labels"]["job"], t["labels"]["instance"]) for t in active}
        now = {(u["metric"]["job"], u["metric"]["instance"]): u["value"][1] for u in ups}
        assert status == 200 and {k: now.get(k) for k in scraped} == dict.fromkeys(scraped, "1"), (
            ups
        )
        status, body = _tls_get(f"{prometheus}/api/v1/alertmanagers", context, WEB_PASSWORD)
        assert [a["url"] for a in json.loads(body)["data"]["activeAlertmanagers"]] == [
            f"https://{lab3}:9093/api/v2/alerts"
        ], body

        for name, port, path in (("lab1", 9100, "/metrics"), ("lab2", 9100, "/metrics"),
                                 ("lab3", 9100, "/metrics"), ("lab3", 9090, "/api/v1/targets"),
                                 ("lab3", 9093, "/api/v2/status")):  # fmt: skip
            url = f"https://{_address(monitored.state, name)}:{port}{path}"
            assert _tls_get(url, context, None)[0] == 401, f"{url} without credentials"
            assert _tls_get(url, context, "not-the-password")[0] == 401, f"{url} wrong password"
            assert _tls_get(url, context, WEB_PASSWORD)[0] == 200, f"{url} with credentials"
            plain = url.replace("https://", "http://")
            try:
                with urllib.request.urlopen(plain, timeout=10) as answer:
                    pytest.fail(f"{plain}: plain HTTP answered {answer.status}")
            except urllib.error.HTTPError as e:
                assert e.code == 400, f"{plain}: expected 400, found {e.code}"
        web = container_exec(monitored.state, "lab1", "cat", "/etc/prometheus/web/web.yml")
        assert "$2b$10$" in web.stdout and WEB_PASSWORD not in web.stdout, "web.yml: no hash"

        again = runner.run_playbook(
            "monitoring.yml", inventory, vault_password_file=vault, label="test-mon-tls-idem"
        )
        assert again.status == "successful", again.failures
        assert again.changed == 0, {h: r.changed for h, r in again.hosts.items()}

        # each TLS check fails on the broken state it names and passes repaired (test_audit_truth
        # counts them as proven here, where monitoring_tls is on)
        for host, check, path, command, says in TLS_BREAKS:
            saved = "/root/hearth-tls-break.bak"
            assert _check_outcome(secret_args, host, check)["outcome"] == "passed", check
            broken = container_exec(
                monitored.state, host, "sh", "-c", f"cp -a {path} {saved} && F={path} && {command}"
            )
            assert broken.returncode == 0, broken.stderr
            try:
                failed = _check_outcome(secret_args, host, check)
            finally:
                restore = ["cp", "-a", "--remove-destination", saved, path]
                container_exec(monitored.state, host, *restore)
            assert failed["outcome"] == "failed" and says in failed["message"], (check, failed)
            assert WEB_PASSWORD not in json.dumps(failed), f"{check}: the password in its report"
            repaired = _check_outcome(secret_args, host, check)
            assert repaired["outcome"] == "passed", (check, repaired)

        audit = hearth("audit", *secret_args, "--limit", "all:!gpu_nodes")
        assert audit.returncode == 0, audit.stdout[-5000:] + audit.stderr
        assert "serves_tls_and_refuses_anonymous" in audit.stdout or "passed" in audit.stdout
        leaked = files_holding([paths.runs_dir()], [WEB_PASSWORD], began - 1)
        assert not leaked, f"the monitoring password reached: {leaked[:5]}"
    finally:
        back = hearth("up", "-i", str(monitored.inventory), "--playbook", "monitoring.yml")
        assert back.returncode == 0, f"monitoring_tls off again:\n{back.stdout[-5000:]}"
    gone = container_exec(monitored.state, "lab3", "ls", "/etc/prometheus/web")
    assert gone.returncode != 0, "the web configuration stayed after monitoring_tls went off"
    # just after its restart Prometheus may answer before its targets are loaded: an empty list
    _wait(  # fails the test when it never does
        "Prometheus answering plain HTTP again, with its targets",
        lambda: _get(f"http://{lab3}:9090/api/v1/targets")["data"]["activeTargets"],
        30,
    )
    skipped = _check_outcome(["-i", str(monitored.inventory)], "lab2", TLS_BREAKS[0][1])
    assert skipped["outcome"] == "skipped", skipped
    assert "monitoring_tls is false" in skipped["message"], skipped


def test_no_secret_in_artifacts(monitored: Monitored) -> None:
    # every run since this module planted the token (an earlier run cannot hold it; reading the
    # whole session's runs took two minutes)
    leaked = files_holding([paths.runs_dir()], [WEBHOOK_TOKEN], monitored.started - 1)
    assert not leaked, f"the webhook's token reached: {leaked[:5]}"
