"""The audit tells the whole truth: every check of every role fails on the broken state it names.

One converged lab (the session lab, every layer from the lab's own inventory: lab1 a GPU node
without a GPU serving SmolLM2 behind the front door, lab3 monitoring). For each check, in turn:
break the named state on the host (stop a service, edit a file, unhold a package, change a
sysctl, append a key hash, edit a rule threshold, ...), run the audit for that one check and
expect it to FAIL with a message naming the state; repair the host directly and expect the check
to pass again. Checks that cannot be broken here (a GPU, DCGM, a Grafana server, a bundle) are
listed with the reason; `test_every_check_is_proven_or_says_why` keeps the two lists complete.

The GPU count check is proven by declaring one GPU more than the host has (inventory) and by a
GPU recorded in the facts at the last `hearth up` that nvidia-smi no longer lists.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from labkit import container_exec, hearth

from hearth import lab as lab_mod
from hearth import paths
from hearth.audit import CheckResult, run_audit
from hearth.inventory import check_inventory

pytestmark = pytest.mark.lab

BAK = "/root/hearth-audit-bak"
STORE = "/var/lib/hearth/models/smollm2"
ENGINE = "hearth-engine-smollm2"
ROGUE_KEY = "rogue-key-appended-by-hand-" + "5" * 24
ROGUE_HASH = hashlib.sha256(ROGUE_KEY.encode()).hexdigest()
# a threshold the issue saw edited by hand (85 → 95) and reloaded
RULES = "/etc/prometheus/rules/hearth.rules.yml"


@dataclass(frozen=True)
class Break:
    """How to break the state a check names, on ``host`` (``on``: where to break it, when not
    the audited host), what the failure must say, and how to put it back."""

    role: str
    check: str
    host: str
    breaks: str
    repairs: str
    says: str
    on: str = ""

    @property
    def id(self) -> str:
        return f"{self.role}/{self.check}"


def _key(path: str) -> str:
    return path.strip("/").replace("/", "__")


def edit(path: str, command: str) -> tuple[str, str]:
    """Break by running ``command`` (with ``$F`` the file) on a copy-saved file; repair restores
    it byte for byte with owner and mode."""
    saved = f"{BAK}/{_key(path)}"
    return (
        f"mkdir -p {BAK} && cp -a {path} {saved} && F={path} && {command}",
        f"cp -a --remove-destination {saved} {path} && rm -f {saved}",
    )


def unhold(package: str) -> tuple[str, str]:
    return f"apt-mark unhold {package} >/dev/null", f"apt-mark hold {package} >/dev/null"


def stop(unit: str) -> tuple[str, str]:
    return f"systemctl stop {unit}", f"systemctl start {unit}"


def docker_policy(container: str) -> tuple[str, str]:
    return (
        f"docker update --restart=no {container} >/dev/null",
        f"docker update --restart=unless-stopped {container} >/dev/null",
    )


def jq_edit(path: str, program: str) -> tuple[str, str]:
    # `cat > $F` keeps the file's inode, owner and mode
    return edit(path, f"jq '{program}' $F > {BAK}/jq.tmp && cat {BAK}/jq.tmp > $F")


IMPOSTOR = (  # the engine's name on a container that runs as root with the model writable
    f"docker stop {ENGINE} >/dev/null && docker rename {ENGINE} {ENGINE}-audit && "
    f"docker create --name {ENGINE} --user 0 -v {STORE}/0.1.2-q4_1:/models/smollm2 "
    f"$(docker inspect -f '{{{{.Config.Image}}}}' {ENGINE}-audit) true >/dev/null",
    f"docker rm -f {ENGINE} >/dev/null && docker rename {ENGINE}-audit {ENGINE} && "
    f"docker start {ENGINE} >/dev/null",
)
RELOAD_PROMETHEUS = "systemctl reload prometheus"
RELOAD_ALERTMANAGER = "systemctl reload prometheus-alertmanager"


def _rules_edit(reload: bool) -> tuple[str, str]:
    pair = edit(RULES, "sed -i 's/ > 85$/ > 95/' $F && grep -q ' > 95$' $F")
    return then(pair, RELOAD_PROMETHEUS) if reload else pair


def then(pair: tuple[str, str], command: str) -> tuple[str, str]:
    """Run ``command`` after breaking and after repairing (a restart, a reload)."""
    return f"{pair[0]} && {command}", f"{pair[1]} && {command}"


def _case(
    role: str, check: str, host: str, pair: tuple[str, str], says: str, on: str = ""
) -> Break:
    return Break(role, check, host, pair[0], pair[1], says, on)


BREAKS = [
    # ------------------------------------------------------------------ common (lab2)
    _case("common", "test_hearth_user", "lab2",
          ("usermod -s /bin/bash hearth", "usermod -s /usr/sbin/nologin hearth"),
          "expected shell /usr/sbin/nologin, found /bin/bash"),
    _case("common", "test_directories", "lab2",
          ("chmod 0755 /var/lib/hearth", "chmod 0750 /var/lib/hearth"),
          "/var/lib/hearth: expected owner hearth:hearth mode 0750"),
    _case("common", "test_base_packages", "lab2",
          ("dpkg -r --force-depends lsof >/dev/null 2>&1",
           "DEBIAN_FRONTEND=noninteractive apt-get install -y -q lsof >/dev/null"),
          "found missing ['lsof']"),
    _case("common", "test_timezone", "lab2",
          # Not `timedatectl set-timezone`: timedated calls settimeofday() with the zone, and
          # the first such call since boot warps the clock of the kernel the lab hosts share
          # with the control node (by the zone's offset: an hour back for Paris). A symlink is
          # what the check reads and touches no kernel state.
          # timedated (which the check asks) reads the link when it starts: stop it after.
          ("ln -sfn /usr/share/zoneinfo/Europe/Paris /etc/localtime && "
           "systemctl stop systemd-timedated",
           "ln -sfn /usr/share/zoneinfo/Etc/UTC /etc/localtime && "
           "systemctl stop systemd-timedated"),
          "timezone: expected Etc/UTC, found Europe/Paris"),
    _case("common", "test_time_sync", "lab2", stop("chrony"), "chrony: expected running"),
    _case("common", "test_sysctl", "lab2",
          ("sysctl -qw net.core.somaxconn=128", "sysctl -qw net.core.somaxconn=4096"),
          "'net.core.somaxconn': 'expected 4096, found 128'"),
    _case("common", "test_limits", "lab2",
          edit("/etc/security/limits.d/90-hearth.conf", "sed -i '/nofile/d' $F"),
          "expected 'hearth hard nofile 1048576', not found"),
    _case("common", "test_journal", "lab2",
          edit("/etc/systemd/journald.conf.d/90-hearth.conf", "sed -i '/^Storage=/d' $F"),
          "expected Storage=persistent, not found"),
    # a listener nobody declared, on every address
    _case("common", "test_only_declared_listeners", "lab2",
          ("systemd-run --unit=hearth-audit-listener --collect "
           "python3 -m http.server 8765 --bind 0.0.0.0 && sleep 2",
           "systemctl stop hearth-audit-listener"),
          "0.0.0.0:8765 tcp python3 (pid"),
    # ---------------------------------------------------------------- front_door (lab1)
    # a prompt file left readable by others, of a day long past the retention (the front door
    # writes them 0600 and deletes the old ones; prompts are off in this lab, so none is there)
    _case("front_door", "test_prompt_files_are_private_and_within_their_retention", "lab1",
          ("install -m 0644 /dev/null /var/lib/hearth/frontdoor/prompts-2000-01-01.jsonl",
           "rm -f /var/lib/hearth/frontdoor/prompts-2000-01-01.jsonl"),
          "prompts-2000-01-01.jsonl: expected uid"),
    # ------------------------------------------------------------ nvidia_driver (lab1)
    _case("nvidia_driver", "test_driver_installed_at_the_pin", "lab1",
          edit("/var/lib/dpkg/status",
               "sed -i '/^Package: libcuda1$/,/^$/ s/^Version: .*/Version: 535.247.01-1/' "
               "$F && grep -q 'Version: 535.247.01-1' $F"),
          "(driver and libraries together), found {'libcuda1': '535.247.01-1'}"),
    _case("nvidia_driver", "test_driver_held", "lab1", unhold("libcuda1"),
          "expected held (apt-mark hold / dnf versionlock), found not held ['libcuda1']"),
    _case("nvidia_driver", "test_unattended_upgrades_keep_away", "lab1",
          edit("/etc/apt/apt.conf.d/51hearth-nvidia-unattended", "sed -i '/libnvidia/d' $F"),
          "it would upgrade ['libnvidia-ml1']"),
    _case("nvidia_driver", "test_nouveau_blacklisted", "lab1",
          edit("/etc/modprobe.d/hearth-blacklist-nouveau.conf", "sed -i '/^blacklist/d' $F"),
          "expected 'blacklist nouveau', not found"),
    _case("nvidia_driver", "test_persistence_daemon_enabled", "lab1",
          ("systemctl disable -q nvidia-persistenced", "systemctl enable -q nvidia-persistenced"),
          "nvidia-persistenced: expected enabled at boot, found disabled"),
    # --------------------------------------------------------------------- cuda (lab1)
    _case("cuda", "test_toolkit_pinned_and_held", "lab1", unhold("libcudart11.0"),
          "libcudart11.0 not held"),
    _case("cuda", "test_login_shell_environment", "lab1",
          edit("/etc/profile.d/hearth-cuda.sh", "sed -i 's#/usr/lib/cuda#/opt/elsewhere#g' $F"),
          "login shell: expected CUDA_HOME=/usr/lib/cuda, found '/opt/elsewhere'"),
    _case("cuda", "test_non_login_shell_environment", "lab1",
          edit("/etc/bash.bashrc", "sed -i '/hearth-cuda.sh/d' $F"),
          "non-login shell (ssh command): expected CUDA_HOME=/usr/lib/cuda, found ''"),
    _case("cuda", "test_systemd_service_environment", "lab1",
          edit("/etc/default/hearth-cuda", "sed -i 's#/usr/lib/cuda#/opt/elsewhere#g' $F"),
          "systemd service with EnvironmentFile=/etc/default/hearth-cuda: expected CUDA_HOME"),
    _case("cuda", "test_container_environment_file", "lab1",
          edit("/etc/default/hearth-cuda.container", "sed -i 's#/usr/lib/cuda#/opt/x#g' $F"),
          "expected CUDA_HOME=/usr/lib/cuda, not found"),
    _case("cuda", "test_linker_path", "lab1",
          edit("/etc/ld.so.conf.d/hearth-cuda.conf", "sed -i 's#/usr/lib/cuda#/opt/x#g' $F"),
          "expected /usr/lib/cuda/lib64, not found"),
    # --------------------------------------------------------- container_runtime (lab1)
    _case("container_runtime", "test_docker_running_pinned_and_held", "lab1",
          unhold("docker.io"), "docker.io: expected held, found install"),
    _case("container_runtime", "test_daemon_json_keys", "lab1",
          jq_edit("/etc/docker/daemon.json", '."live-restore" = false'),
          "daemon.json live-restore: expected true, found False"),
    _case("container_runtime", "test_container_gets_cuda_environment", "lab1",
          edit("/etc/default/hearth-cuda.container", "sed -i 's#/usr/lib/cuda#/opt/x#g' $F"),
          "expected CUDA_HOME=/usr/lib/cuda, found rc=0 '/opt/x'"),
    # --------------------------------------------------------------- model_store (lab1)
    _case("model_store", "test_current_points_at_declared_version", "lab1",
          edit(f"{STORE}/current", "ln -sfn 0.0.9 $F"),
          "expected current -> 0.1.2-q4_1, found /var/lib/hearth/models/smollm2/0.0.9"),
    _case("model_store", "test_files_match_their_sha256", "lab1",
          (f"f=$(ls {STORE}/0.1.2-q4_1/*.gguf) && mkdir -p {BAK} && stat -c %s $f > {BAK}/size "
           "&& printf x >> $f",
           f"f=$(ls {STORE}/0.1.2-q4_1/*.gguf) && truncate -s $(cat {BAK}/size) $f"),
          ".gguf: expected sha256 "),
    _case("model_store", "test_files_are_not_world_readable", "lab1",
          (f"chmod o+r {STORE}/0.1.2-q4_1/*.gguf", f"chmod o-r {STORE}/0.1.2-q4_1/*.gguf"),
          "and no access for others, found"),
    _case("model_store", "test_changelog_records_the_current_version", "lab1",
          edit("/var/lib/hearth/models/changelog.jsonl",
               """echo '{"model": "smollm2", "to_version": "9.9.9"}' >> $F"""),
          "last record of smollm2: expected to_version 0.1.2-q4_1, found 9.9.9"),
    _case("model_store", "test_versions_kept", "lab1",
          (f"mkdir {STORE}/old-1 {STORE}/old-2 {STORE}/old-3",
           f"rmdir {STORE}/old-1 {STORE}/old-2 {STORE}/old-3"),
          "smollm2: expected at most 3 versions (current + 2)"),
    # ---------------------------------------------------------- inference_engine (lab1)
    _case("inference_engine", "test_engine_containers_run_the_declared_version", "lab1",
          docker_policy(ENGINE), "'restart': 'no'"),
    _case("inference_engine", "test_engines_run_as_non_root", "lab1", IMPOSTOR,
          "smollm2: expected a non-root user, found '0'"),
    _case("inference_engine", "test_model_directory_mounted_read_only", "lab1", IMPOSTOR,
          "mounted read-only, found it writable"),
    _case("inference_engine", "test_engines_answer_their_health_check", "lab1",
          (f"docker stop {ENGINE} >/dev/null", f"docker start {ENGINE} >/dev/null"),
          "smollm2: http://127.0.0.1:8080/health: expected 200, found 0"),
    _case("inference_engine", "test_engine_metrics_are_up", "lab1",
          (f"docker stop {ENGINE} >/dev/null", f"docker start {ENGINE} >/dev/null"),
          "smollm2: http://127.0.0.1:8080/metrics: expected 200 with llamacpp:*, found 0"),
    # a model file replaced under the running engine (same bytes, new inode): the engine still
    # maps the old one, the store verifies the new one
    _case("inference_engine", "test_engines_serve_the_verified_files", "lab1",
          (f"f=$(ls {STORE}/0.1.2-q4_1/*.gguf) && cp -p $f $f.new && mv $f.new $f",
           f"docker restart {ENGINE} >/dev/null"),
          "smollm2: the engine serves a deleted or replaced file: /models/smollm2/"),
    _case("inference_engine", "test_models_are_recorded_live", "lab1",
          jq_edit("/etc/hearth/live/smollm2.json", '.version = "0.0.9"'),
          "expected version 0.1.2-q4_1 of container"),
    # ---------------------------------------------------------------- front_door (lab1)
    _case("front_door", "test_front_door_container_runs_confined", "lab1",
          docker_policy("hearth-frontdoor"), "'restart': 'no'"),
    _case("front_door", "test_keys_file_holds_exactly_the_declared_keys", "lab1",
          then(jq_edit("/etc/hearth/frontdoor/keys.json",
                       f'.keys += [{{"name": "rogue", "sha256": "{ROGUE_HASH}"}}]'),
               "docker restart hearth-frontdoor >/dev/null"),
          "expected exactly the 1 declared key(s), found 2 entries; not declared: entry 2 "
          "(name 'rogue')"),
    _case("front_door", "test_front_door_healthy_and_refuses_requests_without_a_key", "lab1",
          ("docker stop hearth-frontdoor >/dev/null", "docker start hearth-frontdoor >/dev/null"),
          "http://127.0.0.1:8090/health: expected 200, found 0"),
    _case("front_door", "test_front_door_metrics_are_up", "lab1",
          ("docker stop hearth-frontdoor >/dev/null", "docker start hearth-frontdoor >/dev/null"),
          "http://127.0.0.1:8090/metrics: expected 200 with hearth_frontdoor_*, found 0"),
    # ------------------------------------------------------------- node_exporter (lab2)
    _case("node_exporter", "test_package_pinned_and_held", "lab2",
          unhold("prometheus-node-exporter"),
          "prometheus-node-exporter: expected held at its version, found 'install'"),
    _case("node_exporter", "test_service_answers", "lab2", stop("prometheus-node-exporter"),
          "prometheus-node-exporter: expected running, found stopped"),
    _case("node_exporter", "test_textfile_directory", "lab2",
          ("chmod 2755 /var/lib/prometheus/node-exporter",
           "chmod 2775 /var/lib/prometheus/node-exporter"),
          "expected group hearth mode 2775, found hearth mode 0o2755"),
    # ---------------------------------------------------------------- prometheus (lab3)
    _case("prometheus", "test_package_pinned_and_held", "lab3", unhold("prometheus"),
          "prometheus: expected held at its version, found 'install'"),
    _case("prometheus", "test_service_ready", "lab3", stop("prometheus"),
          "prometheus: expected running, found stopped"),
    _case("prometheus", "test_config_valid", "lab3",
          edit("/etc/prometheus/prometheus.yml", "echo 'hand_edit: 1' >> $F"),
          "/etc/prometheus/prometheus.yml: expected valid (promtool check config)"),
    _case("prometheus", "test_rule_file_is_the_rendered_one", "lab3", _rules_edit(reload=True),
          "edited by hand: GpuTemperatureHigh: expr changed"),
    _case("prometheus", "test_rules_loaded", "lab3", _rules_edit(reload=True),
          "'GpuTemperatureHigh': \"expected Hearth's expression, found another one loaded\""),
    _case("prometheus", "test_targets_up", "lab3", stop("prometheus-node-exporter"),
          "scrape targets: expected all", on="lab2"),
    _case("prometheus", "test_alertmanager_connected", "lab3", stop("prometheus-alertmanager"),
          "expected ready to receive alerts, found not answering"),
    _case("prometheus", "test_admin_api_only_on_loopback", "lab3",
          edit("/etc/default/prometheus", "sed -i 's/^ARGS=\"/ARGS=\"--web.enable-admin-api /' $F"),
          "Prometheus' admin API: expected on loopback only, found it listening on"),
    # -------------------------------------------------------------- alertmanager (lab3)
    _case("alertmanager", "test_package_pinned_and_held", "lab3",
          unhold("prometheus-alertmanager"),
          "prometheus-alertmanager: expected held at its version, found 'install'"),
    _case("alertmanager", "test_service_ready", "lab3", stop("prometheus-alertmanager"),
          "prometheus-alertmanager: expected running, found stopped"),
    _case("alertmanager", "test_config_valid_and_private", "lab3",
          edit("/etc/prometheus/alertmanager.yml", "chmod 0644 $F"),
          "expected root:prometheus mode 0640, found root:prometheus mode 0o644"),
    _case("alertmanager", "test_receivers_loaded", "lab3",
          then(edit("/etc/prometheus/alertmanager.yml", "sed -i 's/hearth-null/hand-made/g' $F"),
               RELOAD_ALERTMANAGER),
          "expected ['hearth-null'], found ['hand-made'] (not reloaded?)"),
    # ------------------------------------------------------------------- grafana (lab3)
    _case("grafana", "test_dashboards_provisioned", "lab3",
          edit("/var/lib/hearth/grafana/dashboards/hearth-gpu.json", "echo ' ' >> $F"),
          "'hearth-gpu.json': 'differs from the shipped dashboard'"),
    _case("grafana", "test_provisioning_files", "lab3",
          edit("/etc/hearth/grafana/provisioning/datasources/hearth.yml",
               "sed -i 's#url: http.*#url: http://elsewhere:9090#' $F"),
          "found ['http://elsewhere:9090']"),
    # -------------------------------------------------------------------- canary (lab3)
    _case("canary", "test_program_is_the_shipped_one", "lab3",
          edit("/usr/local/lib/hearth/hearth_canary.py", "echo '# edited' >> $F"),
          "expected Hearth's canary (sha256"),
    _case("canary", "test_config_valid_and_private", "lab3",
          edit("/etc/hearth/canary.json", "chmod 0644 $F"), "mode 0640, found root:"),
    _case("canary", "test_timer_scheduled", "lab3", stop("hearth-canary.timer"),
          "hearth-canary.timer: expected active (waiting), found inactive"),
    _case("canary", "test_results_recorded", "lab3",
          edit("/var/lib/hearth/canary/results.csv", "sed -i '1s/.*/time,hand,made/' $F"),
          "expected the header"),
]  # fmt: skip

# Checks that cannot be broken in the lab, each with the reason (asserted as the lab audit's skip
# reason where the check itself skips).
CANNOT_BREAK_HERE = {
    "nvidia_driver/test_nvidia_smi_healthy": "no NVIDIA device",
    "nvidia_driver/test_running_driver_matches_pin": "no NVIDIA device",
    "nvidia_driver/test_persistence_mode_on": "no NVIDIA device",
    "nvidia_driver/test_nouveau_not_loaded": "no NVIDIA device",
    "cuda/test_nvcc_is_the_pinned_release": "runtime-only set",
    "container_runtime/test_nvidia_runtime_registered": "not available from the configured",
    "container_runtime/test_toolkit_pinned_and_held": "not available from the configured",
    "container_runtime/test_container_sees_gpu": "no NVIDIA device",
    # not broken here: it takes restarting lab1's Docker with another cgroup driver under the
    # running engines and the front door (not attempted); the daemon.json key that sets the
    # driver is proven by test_daemon_json_keys
    "container_runtime/test_cgroup_driver_in_effect": "",
    "dcgm_exporter/test_exporter_running": "no NVIDIA device",
    "dcgm_exporter/test_exporter_reports_gpus": "no NVIDIA device",
    "grafana/test_grafana_serves_the_dashboards": "grafana_image is not set",
    # needs hosts converged from a bundle (hearth up --bundle, test_airgap.py's own lab)
    "offline_repo/test_only_the_bundle_is_a_package_source": "",
    "offline_repo/test_repository_and_backup_in_place": "",
    # the backup role runs from playbooks/backup.yml (hearth backup), not from site.yml
    "backup/test_no_backup_left_on_the_host": "",
    # the session lab serves plain HTTP (front_door_tls: false, as `hearth lab up` declares);
    # tests/integration/test_gateway.py serves HTTPS and breaks this check there (a certificate
    # deployed that the front door does not serve) and repairs it
    "front_door/test_front_door_serves_the_deployed_certificate": "front_door_tls is false",
    # the upgrade role runs from playbooks/upgrade.yml (hearth upgrade), not from site.yml;
    # tests/integration/test_upgrade.py leaves it done and reads the state file
    "upgrade/test_no_upgrade_left_halfway": "",
}
# monitoring_tls's checks skip on the session lab (plain HTTP, as `hearth lab up` declares):
# test_monitoring.py's test_monitoring_tls_scrapes_every_target_over_tls_with_auth switches it on
# and breaks and repairs each of them (TLS_BREAKS there)
TLS_CHECKS = {
    f"{role}/test_serves_tls_and_refuses_anonymous"
    for role in ("node_exporter", "alertmanager", "prometheus")
}
SPECIAL = {"nvidia_driver/test_gpus_present_as_declared"} | TLS_CHECKS


class Lab:
    def __init__(self, state: lab_mod.LabState, inventory: Path, vault: Path) -> None:
        self.state, self.inventory, self.vault = state, inventory, vault
        self.loaded = check_inventory(inventory, vault_password_file=vault)

    def sh(self, host: str, script: str) -> str:
        done = container_exec(self.state, host, "sh", "-c", script)
        assert done.returncode == 0, f"{host}: {script}: {done.stdout}{done.stderr}"
        return done.stdout

    def audit(self, host: str, check: str, loaded: Any = None) -> CheckResult:
        result = run_audit(loaded or self.loaded, limit=host, workers=0, checks=[check])
        assert not result.unreachable, result.unreachable
        found = [r for r in result.results if f"{r.role}/{r.check}" == check]
        assert len(found) == 1, f"{check} on {host}: {result.results}"
        return found[0]

    def settle(self, host: str, check: str, outcome: str, seconds: float = 60) -> CheckResult:
        """The check's result once it is ``outcome`` (state that others observe takes a scrape
        or a restart to show), or the last one after ``seconds``."""
        deadline = time.monotonic() + seconds
        while True:
            found = self.audit(host, check)
            if found.outcome == outcome or time.monotonic() > deadline:
                return found
            time.sleep(3)


@pytest.fixture(scope="module")
def site(
    lab: lab_mod.LabState, engine_images: dict[str, Any], tmp_path_factory: Any
) -> Iterator[Lab]:
    """The session lab converged, every layer, from a copy of the lab's own inventory (5 s
    scrapes so that a stopped exporter shows within seconds); the canary has run once."""
    directory = tmp_path_factory.mktemp("audit-truth") / "inventory"
    shutil.copytree(Path(lab.inventory).parent, directory)
    (directory / "group_vars" / "monitoring" / "audit-truth.yml").write_text(
        yaml.safe_dump({"prometheus_scrape_interval": "5s", "prometheus_evaluation_interval": "5s",
                        "prometheus_alert_settings": {"engine_down_for": "10s"}})
    )  # fmt: skip
    inventory = directory / "hosts.yml"
    began = time.monotonic()
    done = hearth(
        "up", "-i", str(inventory), "--vault-password-file", str(lab_mod.vault_password_file())
    )
    assert done.returncode == 0, f"hearth up:\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    print(f"\nconverge (every layer): {time.monotonic() - began:.0f} s")
    converged = Lab(lab, inventory, lab_mod.vault_password_file())
    converged.sh("lab3", "systemctl start hearth-canary || true")  # results.csv for its check
    yield converged
    converged.sh("lab1", "docker rm -f $(docker ps -aq --filter label=io.hearth.managed-by) "
            "2>/dev/null; true")  # fmt: skip


def test_every_check_is_proven_or_says_why() -> None:
    checks = {
        f"{f.parent.parent.name}/{name}"
        for f in paths.roles_dir().glob("*/checks/test_*.py")
        for name in re.findall(r"^def (test_\w+)\(", f.read_text(), re.M)
    }
    proven = {b.id for b in BREAKS} | SPECIAL | set(CANNOT_BREAK_HERE)
    assert checks - proven == set(), "checks with no broken-state test and no reason"
    assert proven - checks == set(), "tests of checks that do not exist"


def test_converged_lab_passes_and_skips_only_what_it_cannot_check(site: Lab) -> None:
    result = run_audit(site.loaded)
    bad = [r for r in result.results if r.outcome not in ("passed", "skipped")]
    assert not bad and not result.unreachable, bad or result.unreachable
    for r in (r for r in result.results if r.outcome == "skipped"):
        key = f"{r.role}/{r.check}"
        assert key in CANNOT_BREAK_HERE or key in SPECIAL, f"{r.host}: {key} skipped: {r.message}"
        assert CANNOT_BREAK_HERE.get(key, "") in r.message, f"{key}: {r.message}"
    # evidence, passed or not: the sha256 of each model file as read on the host
    digests = [o for r in result.results if r.check == "test_files_match_their_sha256"
               for o in r.observed]  # fmt: skip
    assert digests and all(o["name"].endswith(".gguf sha256") for o in digests), digests
    assert all(re.fullmatch(r"[0-9a-f]{64}", str(o["value"])) for o in digests), digests


@pytest.mark.parametrize("case", BREAKS, ids=lambda b: b.id)
def test_check_fails_on_the_broken_state_and_passes_repaired(site: Lab, case: Break) -> None:
    where = case.on or case.host
    site.sh(where, case.breaks)
    try:
        failed = site.settle(case.host, case.id, "failed")
    finally:
        site.sh(where, case.repairs)
    assert failed.outcome == "failed", f"{case.id} did not fail on a broken host: {failed}"
    assert case.says in failed.message, f"{case.id}: the failure does not name the state"
    again = site.settle(case.host, case.id, "passed", seconds=90)
    assert again.outcome == "passed", f"{case.id} after the repair: {again}"


def test_cli_audit_one_check_fails_naming_it(site: Lab) -> None:
    """The same through `hearth audit --check`: a rule threshold edited by hand (85 → 95) and
    not even reloaded fails the audit."""
    broke, repaired = _rules_edit(reload=False)
    site.sh("lab3", broke)
    try:
        done = hearth(
            "audit", "-i", str(site.inventory), "--limit", "lab3", "--check",
            "prometheus/test_rule_file_is_the_rendered_one",
            "--vault-password-file", str(site.vault),
        )  # fmt: skip
    finally:
        site.sh("lab3", repaired)
    said = " ".join((done.stdout + done.stderr).split())
    assert done.returncode != 0, said
    assert "GpuTemperatureHigh: expr changed" in said, said[-3000:]


def test_rogue_key_is_served_yet_fails_the_audit(site: Lab) -> None:
    """What the issue saw: a key hash appended by hand and the front door restarted, the rogue
    key gets 200. The audit now fails on it (test above); this shows the state is real."""
    import urllib.error
    import urllib.request

    case = next(b for b in BREAKS if b.check == "test_keys_file_holds_exactly_the_declared_keys")
    address = next(h.address for h in site.state.hosts if h.name == "lab1")
    site.sh("lab1", case.breaks)
    try:
        status = 0
        for _ in range(30):
            request = urllib.request.Request(
                f"http://{address}:8090/v1/models", headers={"Authorization": f"Bearer {ROGUE_KEY}"}
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as answer:
                    status = answer.status
                    break
            except (urllib.error.URLError, OSError) as exc:
                status = getattr(exc, "code", 0)
                time.sleep(1)
        assert status == 200, "the rogue key was not served: the break did not take"
        assert site.audit("lab1", case.id).outcome == "failed"
    finally:
        site.sh("lab1", case.repairs)
    assert ROGUE_HASH not in json.dumps(site.settle("lab1", case.id, "passed").__dict__)


def test_gpu_declared_but_absent_fails_and_none_declared_skips(site: Lab, tmp_path: Path) -> None:
    check = "nvidia_driver/test_gpus_present_as_declared"
    skipped = site.audit("lab1", check)
    assert skipped.outcome == "skipped" and "nothing to compare" in skipped.message, skipped
    copy = tmp_path / "inventory"
    shutil.copytree(site.inventory.parent, copy)
    (copy / "host_vars").mkdir(exist_ok=True)
    (copy / "host_vars" / "lab1.yml").write_text(
        yaml.safe_dump({"hearth_declared_gpus": [{"index": 0, "name": "NVIDIA L40S",
                                                 "memory_mib": 46068}]})
    )  # fmt: skip
    declared = check_inventory(copy / "hosts.yml", vault_password_file=site.vault)
    failed = site.audit("lab1", check, declared)
    assert failed.outcome == "failed", failed
    assert failed.message == "GPUs: expected 1 as declared (hearth_declared_gpus), found 0"


def test_gpu_recorded_in_the_facts_then_gone_fails(site: Lab) -> None:
    """The facts of the last `hearth up` recorded a T4 (the recorded nvidia-smi output of a real
    one); nvidia-smi on the host lists none now: the GPU fell off the bus."""
    from hearth import gpu

    check = "nvidia_driver/test_gpus_present_as_declared"
    cache = paths.facts_dir(site.inventory) / "lab1"
    saved = cache.read_text() if cache.is_file() else None
    fixture = Path(__file__).resolve().parent.parent / "fixtures" / "nvidia-smi"
    t4 = gpu.parse_xml((fixture / "tesla-t4_driver-515.105.01_q-x.xml").read_text())["gpus"]
    facts = json.loads(saved) if saved else {}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(dict(facts, hearth_gpus=t4)))
    try:
        failed = site.audit("lab1", check)
    finally:
        if saved is None:
            cache.unlink()
        else:
            cache.write_text(saved)
    assert failed.outcome == "failed", failed
    assert failed.message == (
        "GPUs: expected 1 as recorded in the facts of the last hearth up, found 0; missing "
        "GPU 0 (GPU-d37e67a5-91dd-3774-a5cb-99096249601a)"
    )
    assert site.audit("lab1", check).outcome == "skipped"


def _prometheus(site: Lab, path: str) -> Any:
    """A GET of Prometheus' API on lab3 (its own loopback), as JSON."""
    return json.loads(site.sh("lab3", f"curl -sf 'http://127.0.0.1:9090{path}'"))


def _engine_target(site: Lab) -> dict[str, Any]:
    targets = _prometheus(site, "/api/v1/targets?state=active")["data"]["activeTargets"]
    (found,) = [t for t in targets if t["labels"].get("hearth_model") == "smollm2"]
    return dict(found)


def test_engine_scraped_through_the_front_door_and_engine_down_fires(site: Lab) -> None:
    """The lab's own inventory, as `hearth lab up` writes it: lab1's engine listens on loopback
    only (lab2 is refused at its port); Prometheus on lab3 scrapes it through lab1's front door
    with the scrape token (the target is the front door's /engine-metrics/smollm2, up); the
    engine stopped, the relay answers 503, the target is down and EngineDown fires for lab1;
    started again, the target is up."""
    lab1 = next(h.address for h in site.state.hosts if h.name == "lab1")
    refused = container_exec(site.state, "lab2", "sh", "-c",
                             f"curl -sS -m 5 http://{lab1}:8080/health; echo rc=$?")  # fmt: skip
    said = refused.stdout + refused.stderr
    assert "rc=7" in said, said  # curl's "could not connect": refused, not a timeout (28)
    assert site.sh("lab1", "curl -s -o /dev/null -w '%{http_code}' "
                   "http://127.0.0.1:8080/health") == "200"  # fmt: skip
    relay = f"http://{lab1}:8090/engine-metrics/smollm2"
    assert site.sh("lab2", f"curl -s -o /dev/null -w '%{{http_code}}' {relay}") == "401"
    target = _engine_target(site)
    assert target["scrapeUrl"] == relay and target["health"] == "up", target
    token_file = site.sh("lab3", "stat -c '%U %G %a' /etc/prometheus/hearth-scrape-token")
    assert token_file.split() == ["root", "prometheus", "640"], token_file

    def alert() -> list[dict[str, Any]]:
        found = _prometheus(site, "/api/v1/alerts")["data"]["alerts"]
        return [a for a in found if a["labels"].get("alertname") == "EngineDown"
                and a["labels"].get("host") == "lab1" and a["state"] == "firing"]  # fmt: skip

    site.sh("lab1", f"docker stop {ENGINE} >/dev/null")
    try:
        deadline, firing = time.monotonic() + 120, []
        while time.monotonic() < deadline and not firing:
            time.sleep(3)
            firing = alert()
        target = _engine_target(site)
        assert target["health"] == "down" and "503" in target["lastError"], target
        assert firing, f"EngineDown did not fire for lab1 through the relay: {target}"
        assert firing[0]["labels"]["hearth_model"] == "smollm2", firing
    finally:
        site.sh("lab1", f"docker start {ENGINE} >/dev/null")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _engine_target(site)["health"] != "up":
        time.sleep(3)
    assert _engine_target(site)["health"] == "up", _engine_target(site)
