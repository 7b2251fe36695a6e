"""Alertmanager's routing and receivers as data (``alertmanager.yml``, checked by ``amtool``)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from hearth.monitoring.settings import MonitoringError

__all__ = ["RECEIVER_TYPES", "SEVERITIES", "alertmanager_config"]


RECEIVER_TYPES = ("slack", "webhook", "email")
SEVERITIES = ("critical", "warning", "info")
_RECEIVER_KEYS = {
    "slack": {"api_url", "channel"},
    "webhook": {"url", "max_alerts"},
    "email": {"to"},
}
_COMMON_RECEIVER_KEYS = {"name", "type", "severities", "send_resolved"}


def alertmanager_config(
    receivers: Sequence[Mapping[str, Any]],
    *,
    smtp: Mapping[str, Any] | None = None,
    group_by: Sequence[str] = ("alertname", "host", "hearth_model"),
    group_wait: str = "30s",
    group_interval: str = "5m",
    repeat_interval: str = "4h",
    resolve_timeout: str = "5m",
) -> dict[str, Any]:
    """``alertmanager.yml`` as data: every receiver gets the alerts of its severities; a host
    that is down silences the other alerts of that host (they are its consequences).

    Receivers (``alertmanager_receivers`` in the inventory)::

        - {name: ops-slack, type: slack, api_url: VAULT, channel: "#ai-ops"}
        - {name: ops-webhook, type: webhook, url: VAULT}   # Mattermost, Teams, an internal system
        - {name: ops-mail, type: email, to: ops@example.org, severities: [critical]}
    """
    problems: list[str] = []
    built: list[dict[str, Any]] = [{"name": "hearth-null"}]
    routes: list[dict[str, Any]] = []
    names: set[str] = set()
    for index, raw in enumerate(receivers):
        where = f"alertmanager_receivers[{index}]"
        if not isinstance(raw, Mapping):
            problems.append(f"{where}: expected a mapping with name and type")
            continue
        name, kind = raw.get("name"), raw.get("type")
        where = f"{where} ({name})" if name else where
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][\w.-]*", name):
            problems.append(f"{where}: name: expected letters, digits, '.', '_' or '-'")
            continue
        if name in names or name == "hearth-null":
            problems.append(f"{where}: name: used twice")
            continue
        names.add(name)
        if kind not in RECEIVER_TYPES:
            problems.append(f"{where}: type: expected one of {', '.join(RECEIVER_TYPES)}")
            continue
        unknown = set(raw) - _COMMON_RECEIVER_KEYS - _RECEIVER_KEYS[str(kind)]
        if unknown:
            problems.append(f"{where}: unknown key(s) for a {kind} receiver: {sorted(unknown)}")
        severities = raw.get("severities") or ["critical", "warning"]
        if not isinstance(severities, list) or not set(severities) <= set(SEVERITIES):
            problems.append(f"{where}: severities: expected a list of {', '.join(SEVERITIES)}")
            continue
        resolved = bool(raw.get("send_resolved", True))
        receiver: dict[str, Any] = {"name": name}
        if kind == "slack":
            url = raw.get("api_url")
            if not isinstance(url, str) or not url.startswith(("https://", "http://")):
                problems.append(
                    f"{where}: api_url: the Slack incoming-webhook URL (keep it in "
                    "ansible-vault) is required"
                )
                continue
            slack: dict[str, Any] = {
                "api_url": url,
                "send_resolved": resolved,
                "title": "[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }}",
                "text": "{{ range .Alerts }}{{ .Annotations.summary }}\n"
                "{{ .Annotations.description }}\n{{ end }}",
            }
            if raw.get("channel"):
                slack["channel"] = str(raw["channel"])
            receiver["slack_configs"] = [slack]
        elif kind == "webhook":
            url = raw.get("url")
            if not isinstance(url, str) or not url.startswith(("https://", "http://")):
                problems.append(
                    f"{where}: url: the webhook's URL (keep it in ansible-vault when "
                    "it carries a token) is required"
                )
                continue
            hook: dict[str, Any] = {"url": url, "send_resolved": resolved}
            if raw.get("max_alerts") is not None:
                hook["max_alerts"] = int(raw["max_alerts"])
            receiver["webhook_configs"] = [hook]
        else:
            to = raw.get("to")
            if not isinstance(to, str) or "@" not in to:
                problems.append(f"{where}: to: an e-mail address is required")
                continue
            if not smtp or not smtp.get("smarthost") or not smtp.get("from"):
                problems.append(
                    f"{where}: an e-mail receiver needs alertmanager_smtp.smarthost "
                    "and alertmanager_smtp.from"
                )
                continue
            receiver["email_configs"] = [{"to": to, "send_resolved": resolved}]
        built.append(receiver)
        routes.append(
            {
                "receiver": name,
                "matchers": [f'severity=~"{"|".join(severities)}"'],
                "continue": True,
            }
        )
    if problems:
        raise MonitoringError("; ".join(problems))
    config: dict[str, Any] = {
        "global": {"resolve_timeout": resolve_timeout},
        "route": {
            "receiver": "hearth-null",
            "group_by": list(group_by),
            "group_wait": group_wait,
            "group_interval": group_interval,
            "repeat_interval": repeat_interval,
            "routes": routes,
        },
        "inhibit_rules": [
            {
                "source_matchers": ['alertname="HostDown"'],
                "target_matchers": ['alertname!="HostDown"'],
                "equal": ["host"],
            },
            {
                "source_matchers": ['alertname="GpuFellOffTheBus"'],
                "target_matchers": ['alertname=~"GpuXidError|GpuMissing|EngineDown"'],
                "equal": ["host"],
            },
        ],
        "receivers": built,
    }
    if smtp:
        g = config["global"]
        g["smtp_smarthost"] = str(smtp["smarthost"])
        g["smtp_from"] = str(smtp["from"])
        if smtp.get("auth_username"):
            g["smtp_auth_username"] = str(smtp["auth_username"])
        if smtp.get("auth_password"):
            g["smtp_auth_password"] = str(smtp["auth_password"])
        g["smtp_require_tls"] = bool(smtp.get("require_tls", True))
    return config


# ---------------------------------------------------------------------------------- canaries
