# -*- coding: utf-8 -*-
# Copyright: Hearth contributors
# Apache-2.0
"""Filters of the monitoring layer (prometheus, alertmanager, grafana, canary roles).

They adapt ``hearth.monitoring`` to Jinja, so that the scrape targets, alert rules, Alertmanager
routing and canary targets have one implementation, shared with the unit tests (which run
``promtool test rules`` on exactly these rules). Filters run on the control node, where Hearth's
Python package is installed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: hearth_monitoring
short_description: Filters for Hearth's monitoring layer (targets, rules, Alertmanager, canaries)
description:
  - C(hearth_monitoring_hosts) reads, from C(groups) and C(hostvars), what monitoring needs of
    each host (address, groups, declared models, exporter ports).
  - C(hearth_prometheus_config) builds prometheus.yml as data from those hosts.
  - C(hearth_alert_rules) builds the alert rules file as data.
  - C(hearth_alertmanager_config) builds alertmanager.yml as data from the receivers.
  - C(hearth_canary_targets) lists each declared model with its endpoint and question set.
  - C(hearth_grafana_datasource) builds Grafana's datasource provisioning file.
author: Hearth
"""

EXAMPLES = r"""
- name: Write the rules
  ansible.builtin.copy:
    content: "{{ prometheus_alert_settings | hearth_alert_rules | to_nice_yaml }}"
    dest: /etc/prometheus/rules/hearth.rules.yml
    validate: promtool check rules %s
"""

RETURN = r"""
_value:
  description: Plain data (dicts and lists) ready for to_nice_yaml / to_nice_json.
  type: raw
"""


def _hearth():
    """Import hearth.monitoring; from a checkout, put its src/ on the path first if needed."""
    try:
        import hearth.monitoring
    except ImportError:
        here = Path(__file__).resolve()
        for candidate in (here.parents[2] / "src", here.parents[3]):
            if (candidate / "hearth" / "monitoring.py").is_file():
                sys.path.insert(0, str(candidate))
                break
        try:
            import hearth.monitoring
        except ImportError as exc:
            raise AnsibleFilterError(
                "the hearth Python package is not importable by this Ansible (%s): install "
                "Hearth in the Python that runs ansible-playbook" % exc
            ) from exc
    return hearth.monitoring


def _plain(value):
    """Ansible's tagged values (2.19 data tagging) as plain JSON data."""
    return json.loads(json.dumps(value, default=str))


def _unsafe(value):
    """Mark the result as data, never a template: rules and receivers carry Prometheus and
    Alertmanager templates ({{ $labels.host }}) that Jinja must not touch."""
    from ansible.utils.unsafe_proxy import wrap_var

    return wrap_var(value)


def _call(function, *args, **kwargs):
    monitoring = _hearth()
    try:
        return _unsafe(function(monitoring)(*args, **kwargs))
    except monitoring.MonitoringError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def _int_or_none(value):
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def hearth_monitoring_hosts(groups, hostvars, engine_ports_var="prometheus_engine_ports"):
    """[{name, address, groups, models, node_exporter_port, dcgm_exporter_port, dcgm_serving,
    engine_ports}] for every inventory host, from C(groups) and C(hostvars)."""
    memberships = {}
    for group, members in (groups or {}).items():
        if group in ("all", "ungrouped"):
            continue
        for member in members:
            memberships.setdefault(member, []).append(group)
    found = []
    for name in (groups or {}).get("all", []):
        hv = hostvars[name]
        models = hv.get("hearth_models") or []
        serving = hv.get("__dcgm_exporter_serving")
        found.append(
            {
                "name": str(name),
                "address": str(hv.get("ansible_host") or name),
                "groups": sorted(memberships.get(name, [])),
                "models": _plain(models) if isinstance(models, list) else [],
                "node_exporter_port": _int_or_none(hv.get("node_exporter_port")),
                "dcgm_exporter_port": _int_or_none(hv.get("dcgm_exporter_port")),
                "dcgm_serving": None if serving is None else bool(serving),
                "engine_ports": _plain(hv.get(engine_ports_var) or {}),
            }
        )
    return found


def _hosts(monitoring, hosts):
    return [
        monitoring.InventoryHost(
            name=h["name"],
            address=h["address"],
            groups=tuple(h.get("groups") or ()),
            models=tuple(h.get("models") or ()),
            node_exporter_port=h.get("node_exporter_port"),
            dcgm_exporter_port=h.get("dcgm_exporter_port"),
            dcgm_serving=h.get("dcgm_serving"),
            engine_ports=dict(h.get("engine_ports") or {}),
        )
        for h in _plain(hosts or [])
    ]


def hearth_prometheus_config(hosts, **options):
    monitoring = _hearth()
    options = _plain(options)
    return _call(lambda m: m.prometheus_config, _hosts(monitoring, hosts), **options)


def hearth_alert_rules(settings, model_store_paths=None, model_hosts=None):
    return _call(
        lambda m: m.alert_rules,
        _plain(settings or {}),
        tuple(_plain(model_store_paths or ["/var/lib/hearth/models"])),
        tuple(_plain(model_hosts or [])),
    )


def hearth_model_hosts(hosts):
    """Names of the hosts that declare models."""
    return [h["name"] for h in _plain(hosts or []) if h.get("models")]


def hearth_alertmanager_config(receivers, **options):
    return _call(lambda m: m.alertmanager_config, _plain(receivers or []), **_plain(options))


def hearth_alertmanager_problems(receivers, smtp=None):
    """The receivers' problems, naming keys and receivers but never a URL or a password."""
    monitoring = _hearth()
    try:
        monitoring.alertmanager_config(_plain(receivers or []), smtp=_plain(smtp or {}))
    except monitoring.MonitoringError as exc:
        return [p.strip() for p in str(exc).split("; ")]
    return []


def hearth_canary_targets(hosts, **options):
    monitoring = _hearth()
    return _call(lambda m: m.canary_targets, _hosts(monitoring, hosts), **_plain(options))


def hearth_grafana_datasource(url):
    return _call(lambda m: m.grafana_datasource, str(url))


class FilterModule(object):
    def filters(self):
        return {
            "hearth_monitoring_hosts": hearth_monitoring_hosts,
            "hearth_prometheus_config": hearth_prometheus_config,
            "hearth_alert_rules": hearth_alert_rules,
            "hearth_model_hosts": hearth_model_hosts,
            "hearth_alertmanager_config": hearth_alertmanager_config,
            "hearth_alertmanager_problems": hearth_alertmanager_problems,
            "hearth_canary_targets": hearth_canary_targets,
            "hearth_grafana_datasource": hearth_grafana_datasource,
        }
