"""The monitoring layer without hosts: scrape targets from the inventory, Alertmanager's routing,
the alert rules (``promtool test rules``), the configuration files (``promtool check config``,
``amtool check-config``), and Grafana's dashboards (``tsc`` against ``@grafana/schema``, every
PromQL expression parsed by promtool, every metric name one the engines and exporters really
export)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from promql_helpers import dashboard_exprs, metric_names, promql_for_check

from hearth import monitoring, paths
from hearth.monitoring import InventoryHost, MonitoringError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
ROLES = paths.roles_dir()
DASHBOARDS = ROLES / "grafana" / "files" / "dashboards"
PROMTOOL = shutil.which("promtool")
AMTOOL = shutil.which("amtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (scripts/bootstrap.sh installs it)"
)
needs_amtool = pytest.mark.skipif(
    AMTOOL is None, reason="amtool is not installed (scripts/bootstrap.sh installs it)"
)

LLAMA = {"name": "smollm2", "version": "1.0", "engine": "llamacpp"}
VLLM_A = {"name": "llama", "version": "2", "engine": "vllm"}
VLLM_B = {"name": "qwen", "version": "1", "engine": "vllm"}
TRITON = {"name": "upper", "version": "1", "engine": "triton"}


def _site() -> list[InventoryHost]:
    return [
        InventoryHost("gpu01", "10.0.0.11", ("gpu_nodes", "inference"), (LLAMA, VLLM_A, VLLM_B)),
        InventoryHost(
            "gpu02",
            "10.0.0.12",
            ("gpu_nodes",),
            (TRITON,),
            gpu_present=False,
            node_exporter_port=9101,
            engine_ports={"upper": 8100},
        ),
        InventoryHost("gw01", "fd00::5", ("frontdoor",)),
        InventoryHost("mon01", "10.0.0.5", ("monitoring",)),
    ]


def _targets(configs: list[dict[str, Any]]) -> dict[str, list[tuple[str, dict[str, str]]]]:
    return {
        c["job_name"]: [(t, s["labels"]) for s in c["static_configs"] for t in s["targets"]]
        for c in configs
    }


# ------------------------------------------------------------------------------ scrape targets
def test_targets_come_from_the_inventory() -> None:
    jobs = _targets(monitoring.scrape_configs(_site(), frontdoor_port=8443))
    assert [t for t, _ in jobs["node"]] == [
        "10.0.0.11:9100", "10.0.0.12:9101", "[fd00::5]:9100", "10.0.0.5:9100",
    ]  # fmt: skip
    # gpu_facts found no GPU on gpu02 (hearth_gpu_present: false): not scraped for DCGM
    assert jobs["dcgm"] == [("10.0.0.11:9400", {"host": "gpu01"})]
    assert jobs["engine-llamacpp"] == [
        (
            "10.0.0.11:8080",
            {"host": "gpu01", "hearth_model": "smollm2", "hearth_version": "1.0",
             "hearth_engine": "llamacpp"},
        )
    ]  # fmt: skip
    # a second vLLM model on one host gets the next port; Triton's metrics are on port + 2
    assert [t for t, _ in jobs["engine-vllm"]] == ["10.0.0.11:8000", "10.0.0.11:8010"]
    assert jobs["engine-triton"][0][0] == "10.0.0.12:8102"
    # front_door_tls is on unless declared false: the front door is scraped over HTTPS
    assert jobs["frontdoor"] == [("[fd00::5]:8443", {"host": "gw01", "__scheme__": "https"})]
    assert jobs["prometheus"] == [("10.0.0.5:9090", {"host": "mon01"})]
    assert jobs["alertmanager"] == [("10.0.0.5:9093", {"host": "mon01"})]


def test_no_front_door_port_scrapes_no_front_door() -> None:
    assert "frontdoor" not in _targets(monitoring.scrape_configs(_site()))


def test_extra_scrape_jobs_may_not_take_hearths_names() -> None:
    extra = [{"job_name": "node", "static_configs": [{"targets": ["x:1"]}]}]
    with pytest.raises(MonitoringError, match="job_name node is already used"):
        monitoring.scrape_configs(_site(), extra=extra)
    mine = [{"job_name": "ups", "static_configs": [{"targets": ["ups01:9099"]}]}]
    assert monitoring.scrape_configs(_site(), extra=mine)[-1]["job_name"] == "ups"


def test_engines_on_loopback_are_scraped_through_their_front_door_with_the_token() -> None:
    """Engines that listen on loopback on a front door host: the target is the front door, the
    path /engine-metrics/<model>, and the job presents the scrape token file; engines published
    on the network (gpu02) are scraped on their own port, as before."""
    site = [
        InventoryHost("gpu01", "10.0.0.11", ("gpu_nodes", "inference", "frontdoor"), (LLAMA,),
                      frontdoor_port=8090, frontdoor_tls=False),
        InventoryHost("gpu02", "10.0.0.12", ("inference",), (TRITON,),
                      engine_bind_address="10.0.0.12"),
        InventoryHost("mon01", "10.0.0.5", ("monitoring",)),
    ]  # fmt: skip
    configs = {
        c["job_name"]: c
        for c in monitoring.scrape_configs(site, scrape_token_file="/etc/prometheus/t")
    }
    llama = configs["engine-llamacpp"]
    assert llama["authorization"] == {"type": "Bearer", "credentials_file": "/etc/prometheus/t"}
    (static,) = llama["static_configs"]
    assert static["targets"] == ["10.0.0.11:8090"]
    assert static["labels"]["__metrics_path__"] == "/engine-metrics/smollm2"
    assert static["labels"]["__scheme__"] == "http"
    assert static["labels"]["hearth_model"] == "smollm2"
    triton = configs["engine-triton"]
    assert "authorization" not in triton
    assert triton["static_configs"][0]["targets"] == ["10.0.0.12:8002"]
    with pytest.raises(MonitoringError, match="hearth_scrape_token"):
        monitoring.scrape_configs(site)


def _filters() -> Any:
    sys.path.insert(0, str(paths.plugins_dir() / "filter"))
    import hearth_monitoring  # type: ignore[import-not-found]

    return hearth_monitoring


GROUPS = {"all": ["gpu01", "mon01"], "ungrouped": [], "gpu_nodes": ["gpu01"],
          "monitoring": ["mon01"]}  # fmt: skip


def test_filter_reads_hosts_from_groups_and_hostvars() -> None:
    hearth_monitoring = _filters()
    hostvars = {
        "gpu01": {"ansible_host": "10.0.0.11", "hearth_models": [LLAMA],
                  "ansible_facts": {"hearth_gpu_present": False},
                  "inference_engine_ports": {"smollm2": 8081},
                  "hearth_declared_gpus": [{"index": 0, "memory_mib": 49140}]},
        "mon01": {},
    }  # fmt: skip
    hosts = hearth_monitoring.hearth_monitoring_hosts(GROUPS, hostvars)
    assert hosts[0] == {
        "name": "gpu01", "address": "10.0.0.11", "groups": ["gpu_nodes"], "models": [LLAMA],
        "node_exporter_port": None, "dcgm_exporter_port": None, "dcgm_exporter_enabled": True,
        "gpu_present": False, "engine_ports": {"smollm2": 8081}, "declared_gpus": 1,
        "engine_bind_address": "127.0.0.1", "frontdoor_port": 8090, "frontdoor_tls": True,
    }  # fmt: skip
    plain = {**hostvars, "gpu01": {**hostvars["gpu01"], "front_door_tls": False}}
    assert not hearth_monitoring.hearth_monitoring_hosts(GROUPS, plain)[0]["frontdoor_tls"]
    assert hosts[1]["address"] == "mon01" and hosts[1]["gpu_present"] is None
    assert hearth_monitoring.hearth_model_hosts(hosts) == ["gpu01"]
    assert hearth_monitoring.hearth_declared_gpu_counts(hosts) == {"gpu01": 1}
    config = hearth_monitoring.hearth_prometheus_config(
        hosts, scrape_interval="15s", evaluation_interval="15s", rule_files=["/r/*.yml"]
    )
    jobs = _targets(config["scrape_configs"])
    assert jobs["engine-llamacpp"][0][0] == "10.0.0.11:8081" and "dcgm" not in jobs
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["mon01:9093"]


def test_the_exporter_decision_ignores_a_stale_private_fact() -> None:
    """Prometheus decides its DCGM targets from inventory variables and gpu_facts' public
    hearth_gpu_present, never from the dcgm_exporter role's private __dcgm_exporter_serving: a
    fact cache still holding that fact (from before the GPU went, or before the exporter was
    switched off) brings back no target of a host that runs no exporter."""
    hearth_monitoring = _filters()

    def dcgm_targets(gpu01: dict[str, Any]) -> list[str]:
        hostvars = {"gpu01": {"ansible_host": "10.0.0.11", **gpu01}, "mon01": {}}
        hosts = hearth_monitoring.hearth_monitoring_hosts(GROUPS, hostvars)
        config = hearth_monitoring.hearth_prometheus_config(
            hosts, scrape_interval="15s", evaluation_interval="15s", rule_files=[]
        )
        return [t for t, _ in _targets(config["scrape_configs"]).get("dcgm", [])]

    stale = {"__dcgm_exporter_serving": True}
    assert dcgm_targets({**stale, "ansible_facts": {"hearth_gpu_present": False}}) == []
    assert dcgm_targets({**stale, "dcgm_exporter_enabled": False,
                         "ansible_facts": {"hearth_gpu_present": True}}) == []  # fmt: skip
    assert dcgm_targets({"__dcgm_exporter_serving": False, "hearth_gpu_present": True}) == [
        "10.0.0.11:9400"
    ]
    # never gathered: the inventory's word (gpu_nodes) stands
    assert dcgm_targets({"__dcgm_exporter_serving": False}) == ["10.0.0.11:9400"]


def test_the_role_and_prometheus_ask_one_function() -> None:
    hearth_monitoring = _filters()
    cases = [
        (["gpu_nodes"], True, True, True),
        (["gpu_nodes"], True, False, False),
        (["gpu_nodes"], False, True, False),
        (["gpu_nodes"], "false", True, False),
        (["gpu_nodes"], True, None, True),
        (["inference"], True, True, False),
    ]
    for groups, enabled, present, wanted in cases:
        assert hearth_monitoring.hearth_dcgm_serving(groups, enabled, present) is wanted
        assert (
            monitoring.serves_dcgm(groups, enabled=enabled is True, gpu_present=present) is wanted
        )
    # the function's default is the role's default
    defaults = yaml.safe_load((ROLES / "dcgm_exporter" / "defaults" / "main.yml").read_text())
    assert defaults["dcgm_exporter_enabled"] is True
    preflight = (ROLES / "dcgm_exporter" / "tasks" / "preflight.yml").read_text()
    assert "hearth_dcgm_serving" in preflight and "cacheable" not in preflight


@needs_promtool
def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "hearth.rules.yml").write_text(yaml.safe_dump(monitoring.alert_rules()))
    config = monitoring.prometheus_config(
        _site(),
        scrape_interval="15s",
        evaluation_interval="15s",
        rule_files=[f"{rules}/*.yml"],
        external_labels={"site": "hospital-east"},
        frontdoor_port=8443,
    )
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    done = subprocess.run([PROMTOOL, "check", "config", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout + done.stderr


def test_bad_intervals_are_refused() -> None:
    with pytest.raises(MonitoringError, match="prometheus_scrape_interval: expected a duration"):
        monitoring.prometheus_config(
            _site(), scrape_interval="15 seconds", evaluation_interval="15s", rule_files=[]
        )


# -------------------------------------------------------------------------------- alert rules
def _rules_by_name(rules: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in rules["groups"] for r in g["rules"]}


def test_the_issue_asks_for_these_alerts() -> None:
    names = set(_rules_by_name(monitoring.alert_rules()))
    assert {
        "EngineDown", "CanaryFailing", "CanaryLatencyRegression", "TimeToFirstTokenSLO",
        "KVCacheSaturated", "InferenceQueueGrowing", "GpuTemperatureHigh", "GpuXidError",
        "GpuEccDoubleBitErrors", "GpuRowRemapFailure", "GpuFellOffTheBus", "GpuMemoryNearlyFull",
        "ModelStoreDiskAlmostFull", "ModelStoreDiskFilling", "HostDown", "ScrapeTargetDown",
    } <= names  # fmt: skip


def test_settings_change_the_rules() -> None:
    rules = _rules_by_name(
        monitoring.alert_rules(
            {"engine_down_for": "30s", "canary_failures": 5, "gpu_temperature_celsius": 80}
        )
    )
    assert rules["EngineDown"]["for"] == "30s"
    assert rules["CanaryFailing"]["expr"].endswith(">= 5")
    assert rules["GpuTemperatureHigh"]["expr"].endswith("> 80")
    assert "for" not in rules["CanaryFailing"]  # canary_for 0s: the runs themselves space it


def test_bad_settings_are_refused_with_their_names() -> None:
    with pytest.raises(MonitoringError) as err:
        monitoring.alert_rules(
            {"engine_down_fr": "1m", "host_down_for": "two minutes", "queue_waiting": "8"}
        )
    text = str(err.value)
    assert "prometheus_alert_settings.engine_down_fr: unknown setting" in text
    assert "host_down_for: expected a Prometheus duration" in text
    assert "queue_waiting: expected a number" in text


def test_disk_alerts_watch_the_model_store_filesystems_of_model_hosts() -> None:
    assert monitoring.model_store_mountpoints(["/srv/models"]) == ["/", "/srv", "/srv/models"]
    rules = _rules_by_name(monitoring.alert_rules(model_hosts=["gpu01", "gpu.02"]))
    expr = rules["ModelStoreDiskAlmostFull"]["expr"]
    assert 'mountpoint=~"/|/var|/var/lib|/var/lib/hearth|/var/lib/hearth/models"' in expr
    assert r'host=~"gpu\.02|gpu01"' in expr
    every_host = _rules_by_name(monitoring.alert_rules())["ModelStoreDiskAlmostFull"]["expr"]
    assert 'host=~".+"' in every_host  # no model declared yet: every host


def _site_rules(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The rules of the promtool tests' site: models on gpu01, which declares 2 GPUs."""
    return monitoring.alert_rules(overrides, model_hosts=["gpu01"], declared_gpus={"gpu01": 2})


def _write_rules(directory: Path) -> Path:
    """The rules as the role writes them for the promtool tests."""
    rules = _site_rules()
    target = directory / "hearth.rules.yml"
    target.write_text(yaml.safe_dump(rules, sort_keys=False, width=1000))
    return target


@needs_promtool
def test_promtool_test_rules(tmp_path: Path) -> None:
    """Every alert has a case in roles/prometheus/tests/hearth.rules.test.yml, and they pass."""
    tests = ROLES / "prometheus" / "tests" / "hearth.rules.test.yml"
    shutil.copy(tests, tmp_path / tests.name)
    _write_rules(tmp_path)
    check = subprocess.run(
        [PROMTOOL, "check", "rules", str(tmp_path / "hearth.rules.yml")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    done = subprocess.run(
        [PROMTOOL, "test", "rules", tests.name], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    cases = yaml.safe_load(tests.read_text())["tests"]
    fired = {t["alertname"] for case in cases for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert fired == set(_rules_by_name(_site_rules())), (
        f"alerts without a firing test case: {set(_rules_by_name(_site_rules())) - fired}"
    )


@needs_promtool
def test_a_broken_rule_fails_its_promtool_test(tmp_path: Path) -> None:
    """The promtool tests really look at the rules: a wrong threshold fails them."""
    tests = ROLES / "prometheus" / "tests" / "hearth.rules.test.yml"
    shutil.copy(tests, tmp_path / tests.name)
    rules = _site_rules({"canary_failures": 4})
    (tmp_path / "hearth.rules.yml").write_text(yaml.safe_dump(rules, width=1000))
    done = subprocess.run(
        [PROMTOOL, "test", "rules", tests.name], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode != 0 and "CanaryFailing" in done.stdout + done.stderr


# The rule before issue 9: a GPU missing for more than an hour fell out of its window and the
# alert cleared itself while the GPU was still gone.
FORGETFUL_GPU_RULE = (
    "max by (host, gpu, UUID) (DCGM_FI_DEV_XID_ERRORS) == 79 or on (host, gpu, UUID) "
    "((max by (host, gpu, UUID) (max_over_time(DCGM_FI_DEV_GPU_TEMP[1h] offset 5m)) "
    "unless on (host, gpu, UUID) max by (host, gpu, UUID) (DCGM_FI_DEV_GPU_TEMP)) "
    'and on (host) max by (host) (up{job="dcgm"}) == 1)'
)


@needs_promtool
def test_a_gpu_alert_that_forgets_a_missing_gpu_fails_its_promtool_test(tmp_path: Path) -> None:
    """The GPU that fell off the bus and stays missing for hours keeps its alert: the promtool
    cases fail on the old rule, which cleared itself after an hour."""
    tests = ROLES / "prometheus" / "tests" / "hearth.rules.test.yml"
    shutil.copy(tests, tmp_path / tests.name)
    rules = _site_rules()
    gpu_rule = _rules_by_name(rules)["GpuFellOffTheBus"]
    assert "ALERTS" in gpu_rule["expr"]  # it holds itself while the GPU is missing
    gpu_rule["expr"] = FORGETFUL_GPU_RULE
    (tmp_path / "hearth.rules.yml").write_text(yaml.safe_dump(rules, width=1000))
    done = subprocess.run(
        [PROMTOOL, "test", "rules", tests.name], cwd=tmp_path, capture_output=True, text=True
    )
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert "stays missing for hours, so does the alert" in out, out[-3000:]
    assert "a declared GPU missing for hours keeps both alerts" in out, out[-3000:]


def test_gpu_missing_needs_declared_gpus() -> None:
    """GpuMissing compares with the inventory's declared GPUs; without any, it is not written."""
    assert "GpuMissing" not in _rules_by_name(monitoring.alert_rules())
    rule = _rules_by_name(_site_rules())["GpuMissing"]
    assert 'label_replace(vector(2), "host", "gpu01", "", "")' in rule["expr"]
    config = monitoring.alertmanager_config([])
    inhibited = [r for r in config["inhibit_rules"] if "GpuFellOffTheBus" in str(r)]
    assert "GpuMissing" in str(inhibited[0]["target_matchers"])


# ------------------------------------------------------------------------------- alertmanager
SLACK_URL = "https://hooks.slack.com/services/T000/B000/fake-planted-slack-secret"
HOOK_URL = "https://mattermost.hospital.internal/hooks/planted-hook-secret"
SMTP_PASSWORD = "planted-smtp-secret"
RECEIVERS = [
    {"name": "ops-slack", "type": "slack", "api_url": SLACK_URL, "channel": "#ai-ops"},
    {"name": "ops-hook", "type": "webhook", "url": HOOK_URL, "send_resolved": False},
    {"name": "ops-mail", "type": "email", "to": "ops@hospital.example", "severities": ["critical"]},
]
SMTP = {
    "smarthost": "mail.hospital.example:587", "from": "hearth@hospital.example",
    "auth_username": "hearth", "auth_password": SMTP_PASSWORD,
}  # fmt: skip


def test_receivers_get_the_alerts_of_their_severities() -> None:
    config = monitoring.alertmanager_config(RECEIVERS, smtp=SMTP)
    routes = {r["receiver"]: r for r in config["route"]["routes"]}
    assert routes["ops-mail"]["matchers"] == ['severity=~"critical"']
    assert routes["ops-slack"]["matchers"] == ['severity=~"critical|warning"']
    assert all(r["continue"] for r in routes.values())
    assert config["route"]["receiver"] == "hearth-null"
    by_name = {r["name"]: r for r in config["receivers"]}
    assert by_name["ops-slack"]["slack_configs"][0]["channel"] == "#ai-ops"
    assert by_name["ops-hook"]["webhook_configs"][0] == {"url": HOOK_URL, "send_resolved": False}
    assert config["global"]["smtp_auth_password"] == SMTP_PASSWORD
    assert config["inhibit_rules"][0]["equal"] == ["host"]


@needs_amtool
def test_alertmanager_config_passes_amtool(tmp_path: Path) -> None:
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(monitoring.alertmanager_config(RECEIVERS, smtp=SMTP)))
    done = subprocess.run([AMTOOL, "check-config", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 receivers" in done.stdout
    empty = tmp_path / "empty.yml"
    empty.write_text(yaml.safe_dump(monitoring.alertmanager_config([])))
    assert subprocess.run([AMTOOL, "check-config", str(empty)], capture_output=True).returncode == 0


def test_receiver_problems_name_keys_never_secrets() -> None:
    bad = [
        {"name": "s", "type": "slack", "api_url": "not-a-url-planted-secret"},
        {"name": "w", "type": "webhook", "url": HOOK_URL, "token": "planted-other-secret"},
        {"name": "m", "type": "email", "to": "ops@example.org"},
        {"name": "w", "type": "teams", "url": HOOK_URL},
        {"name": "x", "type": "webhook", "url": HOOK_URL, "severities": ["page"]},
    ]
    with pytest.raises(MonitoringError) as err:
        monitoring.alertmanager_config(bad)
    text = str(err.value)
    assert "alertmanager_receivers[0] (s): api_url" in text
    assert "unknown key(s) for a webhook receiver: ['token']" in text
    assert "needs alertmanager_smtp.smarthost" in text
    assert "(w): name: used twice" in text
    assert "severities: expected a list of critical" in text
    for secret in ("planted", "hooks/"):
        assert secret not in text


# ----------------------------------------------------------------------------------- canaries
def _questions(n: int, injection: bool = True) -> list[dict[str, Any]]:
    found = [{"id": f"q{i}", "prompt": "?", "checks": []} for i in range(n)]
    if injection:
        found[-1]["kind"] = "injection"
    return found


def test_canary_asks_each_model_once_directly_or_through_the_front_door() -> None:
    targets = monitoring.canary_targets(_site(), default_questions=_questions(5))
    assert [(t["model"], t["url"]) for t in targets] == [
        ("smollm2", "http://10.0.0.11:8080/v1/chat/completions"),
        ("llama", "http://10.0.0.11:8000/v1/chat/completions"),
        ("qwen", "http://10.0.0.11:8010/v1/chat/completions"),
    ]  # Triton speaks KServe, not OpenAI: only through a front door
    through = monitoring.canary_targets(
        _site(), frontdoor_url="https://gw01:8443/", default_questions=_questions(5)
    )
    assert {t["url"] for t in through} == {"https://gw01:8443/v1/chat/completions"}
    assert [t["model"] for t in through][-1] == "upper"


def test_the_canary_sends_no_system_prompt_where_the_front_door_pins_one() -> None:
    """A model whose front door pins a system prompt (hearth_models[].system_prompt) gets it in
    its canary entry, through a front door only (an engine asked directly pins nothing)."""
    pinned = {**LLAMA, "system_prompt": "You answer for the ward desk only."}
    hosts = [InventoryHost("gpu01", "10.0.0.11", ("gpu_nodes", "inference"), (pinned, VLLM_A))]
    through = monitoring.canary_targets(
        hosts, frontdoor_url="https://gw01:8443", default_questions=_questions(5)
    )
    assert {t["model"]: t.get("pinned_system_prompt") for t in through} == {
        LLAMA["name"]: "You answer for the ward desk only.", VLLM_A["name"]: None,
    }  # fmt: skip
    direct = monitoring.canary_targets(hosts, default_questions=_questions(5))
    assert all("pinned_system_prompt" not in t for t in direct)


def test_canary_question_sets_are_checked() -> None:
    with pytest.raises(MonitoringError) as err:
        monitoring.canary_targets(
            _site(),
            default_questions=_questions(4, injection=False),
            question_sets={"llama": _questions(6), "ghost": _questions(6)},
        )
    text = str(err.value)
    assert "canary_question_sets.ghost: no host declares a model named 'ghost'" in text
    assert "canary questions of smollm2: 4 declared, at least 5 are needed" in text
    assert "canary questions of smollm2: no prompt-injection probe" in text
    assert "of llama" not in text


@pytest.mark.parametrize("name", ["default", "lab"])
def test_hearths_question_sets_are_valid_canary_sets(name: str) -> None:
    from hearth import canary
    from hearth.monitoring.canaries import question_set

    defaults = yaml.safe_load((ROLES / "canary" / "defaults" / "main.yml").read_text())
    assert defaults["canary_questions"] == "{{ 'default' | hearth_question_set }}"
    questions = question_set(name)
    targets = monitoring.canary_targets(_site(), default_questions=questions)
    config = {"models": targets}
    assert canary.validate_config(config) == []
    assert sum(1 for q in questions if q.get("kind") == "injection") >= (
        2 if name == "default" else 1
    )
    assert all(q.get("checks") for q in questions if q.get("kind", "golden") == "golden")


def test_an_unknown_question_set_is_named() -> None:
    from hearth.monitoring.canaries import question_set

    with pytest.raises(monitoring.MonitoringError, match="no golden-question set named 'hard'"):
        question_set("hard")


# ---------------------------------------------------------------------------------- dashboards
def test_dashboard_files_are_the_generated_ones() -> None:
    built = monitoring.dashboards()
    shipped = {p.name for p in DASHBOARDS.glob("*.json")}
    assert shipped == set(built), "regenerate: python -m hearth.monitoring dashboards"
    for name, board in built.items():
        on_disk = json.loads((DASHBOARDS / name).read_text())
        assert on_disk == board, f"{name} differs from hearth.monitoring.dashboards()"
    titles = {b["title"] for b in built.values()}
    assert {"Hearth / GPUs (DCGM)", "Hearth / vLLM", "Hearth / Triton", "Hearth / llama.cpp",
            "Hearth / Golden-question canaries", "Hearth / Hosts"} == titles  # fmt: skip


def _all_exprs() -> list[tuple[str, str]]:
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for expr in dashboard_exprs(json.loads(path.read_text())):
            found.append((path.name, expr))
    for rule in _rules_by_name(monitoring.alert_rules()).values():
        found.append(("alert " + rule["alert"], rule["expr"]))
    return found


@needs_promtool
def test_every_promql_expression_parses(tmp_path: Path) -> None:
    """promtool has no parse-only command: each expression becomes a recording rule that
    `promtool check rules` parses (Grafana's $variables replaced first)."""
    exprs = _all_exprs()
    rules = {
        "groups": [
            {
                "name": "parse",
                "rules": [
                    {"record": f"hearth:parse_check_{i}", "expr": promql_for_check(e)}
                    for i, (_, e) in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "parse.yml"
    path.write_text(yaml.safe_dump(rules, width=1000))
    done = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in done.stdout
    broken = path.with_name("broken.yml")
    broken.write_text(yaml.safe_dump({"groups": [{"name": "b", "rules": [
        {"record": "x:y", "expr": "sum by (host (up)"}]}]}))  # fmt: skip
    assert subprocess.run([PROMTOOL, "check", "rules", str(broken)], capture_output=True).returncode


def _exported(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def known_metrics() -> set[str]:
    """Every metric name the engines and exporters really export (recorded), plus the GPU-only
    ones from NVIDIA's documentation, the canary's and the front door's own, and Prometheus's
    synthetic series."""
    names: set[str] = set()
    for recorded in [
        *(FIXTURES / "engines").glob("*-metrics.txt"),
        *(FIXTURES / "monitoring").glob("*-metrics.txt"),
    ]:
        names |= _exported(recorded)
    for line in (
        (FIXTURES / "monitoring" / "dcgm-exporter-default-counters.csv").read_text().splitlines()
    ):
        match = re.match(r"^#?\s*(DCGM_FI_\w+)\s*,", line)
        if match:
            names.add(match.group(1))
    names |= {
        line.strip()
        for line in (FIXTURES / "monitoring" / "triton-gpu-metrics.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    from hearth import canary

    result = {"question": "q", "checks": [("regex", True, "")], "error": ""}
    report = {"model": "m", "version": "1", "results": [result]}
    summary = {**report, "ts": 0, "success": 1, "questions": 0, "passed": 0,
               "consecutive_failures": 0, "p95": 0, "baseline": 0, "leak": 0,
               "completion_tokens": 0, "runs": 1}  # fmt: skip
    names |= _exported_text(canary.render_metrics([summary]))
    from hearth.commands import upgrade

    names |= _exported_text(upgrade.render_metrics({"step": "drained", "message": "x"}, 0))
    from prometheus_client import generate_latest

    from hearth.frontdoor.app import Metrics as FrontDoorMetrics

    door = FrontDoorMetrics()  # the front door's own (Hearth's code): a sample of each labelled one
    door.key_expiry.labels("k").set(0)
    door.requests.labels("m", "/v1/chat/completions", "200", "k", "v1").inc()
    door.canary.labels("m", "v2", "v1").set(10)
    names |= _exported_text(generate_latest(door.registry).decode())
    names |= {"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds"}
    return names


def _exported_text(text: str) -> set[str]:
    return {re.split(r"[{\s]", line, maxsplit=1)[0] for line in text.splitlines()
            if line and not line.startswith("#")}  # fmt: skip


def test_every_metric_named_is_really_exported() -> None:
    known = known_metrics()
    unknown = sorted(
        f"{where}: {name}"
        for where, expr in _all_exprs()
        for name in metric_names(promql_for_check(expr))
        if name not in known
    )
    assert not unknown, f"metrics no engine or exporter exports: {unknown}"
    assert "vllm:time_to_first_token_seconds_bucket" in known  # the recordings are read


def test_the_dcgm_role_exports_what_the_rules_use() -> None:
    defaults = yaml.safe_load((ROLES / "dcgm_exporter" / "defaults" / "main.yml").read_text())
    exported = {c["field"] for c in defaults["dcgm_exporter_counters"]}
    used = {
        name
        for _, expr in _all_exprs()
        for name in metric_names(promql_for_check(expr))
        if name.startswith("DCGM_FI_")
    }  # fmt: skip
    assert used <= exported, f"not in dcgm_exporter_counters: {used - exported}"
    upstream = {
        m.group(1)
        for line in (FIXTURES / "monitoring" / "dcgm-exporter-default-counters.csv")
        .read_text()
        .splitlines()
        if (m := re.match(r"^#?\s*(DCGM_FI_\w+)\s*,", line))
    }
    assert exported <= upstream, f"fields dcgm-exporter does not know: {exported - upstream}"


def test_metric_names_of_promql() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, host) (rate(vllm:x_bucket{a="b"}[5m]))) > 2 '
        "and on (host) up offset 1h or time() - foo_total unless ignoring (x) bar / 1e6"
    )
    assert metric_names(expr) == {"vllm:x_bucket", "up", "foo_total", "bar"}
    assert promql_for_check('rate(x{h=~"$host"}[$__rate_interval])') == ('rate(x{h=~".*"}[5m])')
    assert promql_for_check('label_values(up{job="node"}, host)') == 'up{job="node"}'


# ---------------------------------------------------------------- dashboards vs @grafana/schema
NPM_PACKAGES = ("@grafana/schema@13.2.3", "typescript@5.9.3")
ENUM_FIELDS = {("thresholds", "mode"): "ThresholdsMode"}


def _npm_dir() -> Path:
    """``@grafana/schema`` and TypeScript, pinned, in Hearth's cache (installed once)."""
    target = paths.cache_dir() / "npm"
    marker = target / ".hearth-packages"
    if marker.is_file() and marker.read_text() == " ".join(NPM_PACKAGES):
        return target
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed (scripts/bootstrap.sh installs it)")
    target.mkdir(parents=True, exist_ok=True)
    (target / "package.json").write_text('{"name": "hearth-dashboard-check", "private": true}\n')
    done = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--save-exact", *NPM_PACKAGES],
        cwd=target, capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"},
    )  # fmt: skip
    assert done.returncode == 0, f"npm install {NPM_PACKAGES}: {done.stderr[-2000:]}"
    marker.write_text(" ".join(NPM_PACKAGES))
    return target


def _ts_value(value: Any, path: tuple[str, ...] = ()) -> str:
    """JSON as a TypeScript literal; string-enum fields become checked enum values."""
    if isinstance(value, dict):
        items = []
        for key, item in value.items():
            enum = ENUM_FIELDS.get((path[-1] if path else "", key))
            text = (
                f"enumValue({enum}, {json.dumps(item)})" if enum else _ts_value(item, (*path, key))
            )
            items.append(f"{json.dumps(key)}: {text}")
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_ts_value(v, path) for v in value) + "]"
    return json.dumps(value)


def _typecheck(boards: dict[str, Any], directory: Path) -> subprocess.CompletedProcess[str]:
    npm = _npm_dir()
    lines = [
        'import { Dashboard, ThresholdsMode } from "@grafana/schema";',
        "function enumValue<E extends Record<string, string>>(_e: E, v: `${E[keyof E]}`): "
        "E[keyof E] { return v as unknown as E[keyof E]; }",
    ]
    for i, (name, board) in enumerate(sorted(boards.items())):
        lines.append(f"// {name}\nexport const board{i}: Dashboard = {_ts_value(board)};")
    (directory / "dashboards.ts").write_text("\n".join(lines) + "\n")
    (directory / "tsconfig.json").write_text(json.dumps({
        "compilerOptions": {"strict": True, "noEmit": True, "module": "esnext",
                            "moduleResolution": "bundler", "target": "es2022",
                            "skipLibCheck": True, "typeRoots": []},
        "files": ["dashboards.ts"],
    }))  # fmt: skip
    (directory / "node_modules").symlink_to(npm / "node_modules")
    node = shutil.which("node") or "node"
    tsc = npm / "node_modules" / "typescript" / "bin" / "tsc"
    return subprocess.run(
        [node, str(tsc), "-p", str(directory / "tsconfig.json")], capture_output=True, text=True
    )


def test_dashboards_match_grafanas_schema(tmp_path: Path) -> None:
    boards = {p.name: json.loads(p.read_text()) for p in DASHBOARDS.glob("*.json")}
    done = _typecheck(boards, tmp_path)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_the_schema_check_catches_a_bad_dashboard(tmp_path: Path) -> None:
    board = json.loads((DASHBOARDS / "hearth-vllm.json").read_text())
    board["panels"][1]["gridPos"]["width"] = 12  # not a GridPos key
    board["panels"][1]["fieldConfig"]["defaults"]["thresholds"]["mode"] = "relative"
    board["refresh"] = 30
    done = _typecheck({"bad.json": board}, tmp_path)
    assert done.returncode != 0
    assert "'\"width\"' does not exist in type 'GridPos'" in done.stdout, done.stdout
    assert (
        '"relative"' in done.stdout and "number' is not assignable to type 'string" in done.stdout
    )


# ------------------------------------------------------------------------------- the roles
SECRET_INPUTS = {
    "alertmanager": ("alertmanager.yml.j2",),
    "canary": ("_canary_config",),
    "grafana": ("grafana_admin_password",),
}
WRITERS = ("ansible.builtin.template", "ansible.builtin.copy", "community.docker.docker_container")


@pytest.mark.parametrize("role", sorted(SECRET_INPUTS))
def test_tasks_writing_secrets_hide_them(role: str) -> None:
    """Every task that writes a receiver URL, the SMTP password, the canary's API key or
    Grafana's admin password has no_log and diff: false."""
    found = 0
    for task_file in (ROLES / role / "tasks").glob("*.yml"):
        for task in yaml.safe_load(task_file.read_text()) or []:
            module = next((m for m in WRITERS if m in task), None)
            if module is None or not any(s in json.dumps(task) for s in SECRET_INPUTS[role]):
                continue
            found += 1
            assert task.get("no_log") is True, f"{task_file.name}: {task['name']}: no_log"
            assert task.get("diff") is False, f"{task_file.name}: {task['name']}: diff: false"
    assert found, f"{role}: no task writes its secrets? the scan is broken"


def test_monitoring_roles_are_pinned_per_os() -> None:
    for role, key, version in (
        ("prometheus", "_prometheus_pinned_version", "2.42.0+ds-5+deb12u1"),
        ("alertmanager", "_alertmanager_pinned_version", "0.25.0-1+b4"),
        ("node_exporter", "_node_exporter_pinned_version", "1.5.0-1+b6"),
    ):
        pinned = yaml.safe_load((ROLES / role / "vars" / "Debian-12.yml").read_text())
        assert pinned[key] == version
        # installed at the role's version (the inventory's pin, else this one), and held
        (install, *_) = yaml.safe_load((ROLES / role / "tasks" / "install.yml").read_text())
        apt = install["hearth_apt"]
        assert apt["hold"] is True and apt["install_recommends"] is False, apt
        assert apt["name"].endswith("={{ _" + role + "_version }}"), apt
        role_vars = yaml.safe_load((ROLES / role / "vars" / "main.yml").read_text())
        assert role_vars[f"_{role}_version"] == "{{ " + f"{role}_version or {key}" + " }}"
