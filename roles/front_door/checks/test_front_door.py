"""testinfra checks of the `front_door` role, run by `hearth audit` on every front door host.

The front door's container runs (non-root, read-only root filesystem, on the host's network); its
keys file holds only sha256 hashes, mode 0600, owned by the container's user, and exactly the
declared keys' hashes with their policies (a key appended by hand fails); it answers /health,
refuses an API request without a key (401), and serves its Prometheus metrics. With
``front_door_tls`` it serves the certificate deployed beside its configuration (not expired, nor
within 14 days of it) and nothing over plain HTTP. Prompt files, where a site logs prompts, are
mode 0600 and none outlives its retention. The keys and their
hashes are never part of the declared state the audit sees: the audit passes a fingerprint of each
declared key's hash (hearth.checklib.key_fingerprint), and a drift is reported by count, position
and key name.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import pytest

from hearth.checklib import docker_inspect, http_get, keys_drift, observe, served_certificate
from hearth.frontdoor.policy import POLICY_FIELDS
from hearth.tls import served_problems

CONTAINER = "hearth-frontdoor"
UID = 10003  # templates/images/frontdoor/recipe.yml


def _inspect(host: Any) -> dict[str, Any]:
    data = docker_inspect(host, CONTAINER)
    assert data is not None, f"{CONTAINER}: expected a container, found none"
    return data


def _address(hearth_vars: dict[str, Any]) -> str:
    bind = str(hearth_vars["front_door_bind_address"])
    return "127.0.0.1" if bind in ("0.0.0.0", "::") else bind  # noqa: S104


def _url(hearth_vars: dict[str, Any], scheme: str | None = None) -> str:
    scheme = scheme or ("https" if hearth_vars.get("front_door_tls", True) else "http")
    return f"{scheme}://{_address(hearth_vars)}:{hearth_vars['front_door_port']}"


def _get(host: Any, hearth_vars: dict[str, Any], path: str) -> tuple[int, str]:
    return http_get(
        host, _url(hearth_vars) + path, loopback_tls=bool(hearth_vars.get("front_door_tls", True))
    )


def test_front_door_container_runs_confined(host: Any, hearth_vars: dict[str, Any]) -> None:
    """The front door's container runs from Hearth's image with a read-only root, its
    configuration mounted read-only, and the declared restart policy."""
    data = _inspect(host)
    found = {
        "running": data["State"]["Running"],
        "user": (data["Config"].get("User") or "root").split(":")[0],
        "read_only": data["HostConfig"]["ReadonlyRootfs"],
        "network": data["HostConfig"]["NetworkMode"],
        "restart": data["HostConfig"]["RestartPolicy"]["Name"],
        "config_writable": [
            m["RW"] for m in data["Mounts"] if m["Destination"] == "/etc/hearth/frontdoor"
        ],
    }
    expected = {
        "running": True,
        "user": str(UID),
        "read_only": True,
        "network": "host",
        "restart": hearth_vars["front_door_restart_policy"],
        "config_writable": [False],
    }
    assert found == expected, f"{CONTAINER}: expected {expected}, found {found}"


def test_keys_file_holds_exactly_the_declared_keys(host: Any, hearth_vars: dict[str, Any]) -> None:
    """The keys file on the host holds exactly the sha256 of each declared API key (never a key)
    and is readable by the front door's user only."""
    keys = host.file(f"{hearth_vars['front_door_config_dir']}/keys.json")
    assert keys.is_file, f"{keys.path}: expected the keys file, found nothing"
    found = (keys.uid, keys.mode)
    assert found == (UID, 0o600), (
        f"{keys.path}: expected uid {UID} mode 0600, found uid {found[0]} mode {oct(found[1])}"
    )
    entries = json.loads(keys.content_string).get("keys") or []
    assert entries, f"{keys.path}: expected at least one key, found none"
    allowed = {"name", "sha256", "not_after", *POLICY_FIELDS}
    for entry in entries:
        assert set(entry) <= allowed and re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]), (
            f"{keys.path}: expected only names, sha256 hashes and policies, found the fields "
            f"{sorted(entry)}"
        )
    drift = keys_drift(hearth_vars.get("front_door_key_fingerprints") or [], entries)
    assert not drift, f"{keys.path}: {drift} (a key added or changed by hand?)"


def test_prompt_files_are_private_and_within_their_retention(
    host: Any, hearth_vars: dict[str, Any]
) -> None:
    """Prompt files (written only when ``front_door_log_prompts``) are readable by the front
    door's user only, and none is of a day older than ``front_door_prompt_retention_days``."""
    state = str(hearth_vars["front_door_state_dir"])
    listed = host.run(
        "find %s -maxdepth 1 -name 'prompts-*.jsonl' -printf '%%f %%U %%m\\n'", state
    )
    assert listed.rc == 0, f"{state}: could not be listed: {listed.stderr.strip()[:200]}"
    found = [line.split() for line in listed.stdout.splitlines() if line.strip()]
    observe("prompt_files", len(found))
    days = int(hearth_vars["front_door_prompt_retention_days"])
    oldest = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=days)).isoformat()
    for name, uid, mode in found:
        assert (int(uid), mode) == (UID, "600"), (
            f"{state}/{name}: expected uid {UID} mode 0600, found uid {uid} mode 0{mode}"
        )
        day = name.removeprefix("prompts-").removesuffix(".jsonl")
        assert day >= oldest, (
            f"{state}/{name}: older than the retention ({days} days): the front door should "
            "have deleted it"
        )


def test_front_door_healthy_and_refuses_requests_without_a_key(
    host: Any, hearth_vars: dict[str, Any]
) -> None:
    """The front door answers its health check and refuses an API request without a key (401)."""
    status, body = _get(host, hearth_vars, "/health")
    assert status == 200, f"{_url(hearth_vars)}/health: expected 200, found {status} {body[:100]}"
    status, _ = _get(host, hearth_vars, "/v1/models")
    assert status == 401, (
        f"{_url(hearth_vars)}/v1/models without a key: expected 401, found {status}"
    )


def test_front_door_metrics_are_up(host: Any, hearth_vars: dict[str, Any]) -> None:
    """The front door serves its Prometheus metrics."""
    status, body = _get(host, hearth_vars, "/metrics")
    assert status == 200 and "hearth_frontdoor_model_info" in body, (
        f"{_url(hearth_vars)}/metrics: expected 200 with hearth_frontdoor_*, found {status}"
    )
    routed = re.findall(r'hearth_frontdoor_model_info\{[^}]*model="([^"]+)"', body)
    assert routed, f"{_url(hearth_vars)}/metrics: expected routed models, found none"


def test_front_door_serves_the_deployed_certificate(host: Any, hearth_vars: dict[str, Any]) -> None:
    """With front_door_tls: the certificate served is the one deployed (tls.crt), it does not
    expire within 14 days, and plain HTTP gets no answer on the port."""
    if not hearth_vars.get("front_door_tls", True):
        pytest.skip("front_door_tls is false: the front door serves plain HTTP")
    deployed = host.file(f"{hearth_vars['front_door_config_dir']}/tls.crt")
    assert deployed.is_file, f"{deployed.path}: expected the deployed certificate, found nothing"
    served = served_certificate(host, _address(hearth_vars), int(hearth_vars["front_door_port"]))
    problems = served_problems(served.encode(), deployed.content_string.encode())
    assert not problems, f"{_url(hearth_vars)}: " + "; ".join(problems)
    status, _ = http_get(host, _url(hearth_vars, "http") + "/health")
    assert status == 0, f"{_url(hearth_vars, 'http')}/health: expected no answer, found {status}"
