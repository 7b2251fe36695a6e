"""testinfra checks of the `front_door` role, run by `hearth audit` on every front door host.

The front door's container runs (non-root, read-only root filesystem, on the host's network); its
keys file holds only sha256 hashes, mode 0600, owned by the container's user; it answers /health,
refuses an API request without a key (401), and serves its Prometheus metrics. The keys
themselves are never part of the declared state the audit sees.
"""

from __future__ import annotations

import json
import re
from typing import Any

CONTAINER = "hearth-frontdoor"
UID = 10003  # templates/images/frontdoor/recipe.yml


def _inspect(host: Any) -> dict[str, Any]:
    found = host.run("docker inspect --type container %s", CONTAINER)
    assert found.rc == 0, f"{CONTAINER}: expected a container, found none"
    data: list[dict[str, Any]] = json.loads(found.stdout)
    return data[0]


def _get(host: Any, url: str) -> tuple[int, str]:
    script = (
        "import sys, urllib.request, urllib.error\n"
        "try:\n"
        "    r = urllib.request.urlopen(sys.argv[1], timeout=10)\n"
        "    print(r.status); sys.stdout.write(r.read().decode('utf-8', 'replace'))\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code)\n"
        "except OSError as e:\n"
        "    print(0); print(e)\n"
    )
    out = host.run("python3 -c %s %s", script, url).stdout
    status, _, body = out.partition("\n")
    return int(status or 0), body


def _url(hearth_vars: dict[str, Any]) -> str:
    bind = str(hearth_vars["front_door_bind_address"])
    address = "127.0.0.1" if bind in ("0.0.0.0", "::") else bind  # noqa: S104
    return f"http://{address}:{hearth_vars['front_door_port']}"


def test_front_door_container_runs_confined(host: Any, hearth_vars: dict[str, Any]) -> None:
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


def test_keys_file_holds_only_hashes_mode_0600(host: Any, hearth_vars: dict[str, Any]) -> None:
    keys = host.file(f"{hearth_vars['front_door_config_dir']}/keys.json")
    assert keys.is_file, f"{keys.path}: expected the keys file, found nothing"
    found = (keys.uid, keys.mode)
    assert found == (UID, 0o600), (
        f"{keys.path}: expected uid {UID} mode 0600, found uid {found[0]} mode {oct(found[1])}"
    )
    entries = json.loads(keys.content_string).get("keys") or []
    assert entries, f"{keys.path}: expected at least one key, found none"
    for entry in entries:
        assert set(entry) == {"name", "sha256"} and re.fullmatch(
            r"[0-9a-f]{64}", entry["sha256"]
        ), f"{keys.path}: expected only names and sha256 hashes, found the fields {sorted(entry)}"


def test_front_door_healthy_and_refuses_requests_without_a_key(
    host: Any, hearth_vars: dict[str, Any]
) -> None:
    status, body = _get(host, f"{_url(hearth_vars)}/health")
    assert status == 200, f"{_url(hearth_vars)}/health: expected 200, found {status} {body[:100]}"
    status, _ = _get(host, f"{_url(hearth_vars)}/v1/models")
    assert status == 401, (
        f"{_url(hearth_vars)}/v1/models without a key: expected 401, found {status}"
    )


def test_front_door_metrics_are_up(host: Any, hearth_vars: dict[str, Any]) -> None:
    status, body = _get(host, f"{_url(hearth_vars)}/metrics")
    assert status == 200 and "hearth_frontdoor_model_info" in body, (
        f"{_url(hearth_vars)}/metrics: expected 200 with hearth_frontdoor_*, found {status}"
    )
    routed = re.findall(r'hearth_frontdoor_model_info\{[^}]*model="([^"]+)"', body)
    assert routed, f"{_url(hearth_vars)}/metrics: expected routed models, found none"
