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

_PLUGIN_UTILS = str(Path(__file__).resolve().parents[1] / "plugin_utils")
if _PLUGIN_UTILS not in sys.path:
    sys.path.insert(0, _PLUGIN_UTILS)
from hearth_import import import_hearth  # the one "import hearth" helper (plugin_utils/)

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
  - C(hearth_web_config) builds a host's exporter-toolkit web configuration (TLS, bcrypt users).
  - C(hearth_dcgm_serving) decides whether a host runs the DCGM exporter (the role and
    Prometheus ask the same function, from inventory variables and C(hearth_gpu_present)).
  - C(hearth_declared_gpu_counts) maps each host to the number of GPUs it declares.
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
    """Hearth's package with the modules these filters use (plugin_utils/hearth_import.py)."""
    return import_hearth("monitoring").monitoring


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


def _fact(hv, name):
    """A host's fact as the fact cache or this run knows it (None when never gathered)."""
    facts = hv.get("ansible_facts") or {}
    value = facts.get(name) if hasattr(facts, "get") else None
    return hv.get(name) if value is None else value


def hearth_question_set(name):
    """One of Hearth's golden-question sets by name (default, lab)."""
    return _call(lambda monitoring: monitoring.canaries.question_set, str(name))


def hearth_monitoring_hosts(groups, hostvars):
    """[{name, address, groups, models, node_exporter_port, dcgm_exporter_port,
    dcgm_exporter_enabled, gpu_present, engine_ports, declared_gpus, engine_bind_address,
    frontdoor_port, frontdoor_tls}] for every inventory host,
    from C(groups) and C(hostvars): inventory variables (the engines' ports are the inference
    layer's C(inference_engine_ports)) and one public fact, C(gpu_facts)'s C(hearth_gpu_present).
    No role's private variable (C(__role_*)) is read."""
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
        declared = hv.get("hearth_declared_gpus") or []
        present = _fact(hv, "hearth_gpu_present")
        enabled = hv.get("dcgm_exporter_enabled")
        found.append(
            {
                "name": str(name),
                "address": str(hv.get("ansible_host") or name),
                "groups": sorted(memberships.get(name, [])),
                "models": _plain(models) if isinstance(models, list) else [],
                "node_exporter_port": _int_or_none(hv.get("node_exporter_port")),
                "dcgm_exporter_port": _int_or_none(hv.get("dcgm_exporter_port")),
                "dcgm_exporter_enabled": True if enabled is None else _bool(enabled),
                "gpu_present": None if present is None else _bool(present),
                "engine_ports": _plain(hv.get("inference_engine_ports") or {}),
                "declared_gpus": len(declared) if isinstance(declared, list) else 0,
                "engine_bind_address": str(hv.get("inference_engine_bind_address") or "127.0.0.1"),
                "frontdoor_port": _int_or_none(hv.get("front_door_port")) or 8090,
                "frontdoor_tls": _bool(hv.get("front_door_tls", True)),
            }
        )
    return found


def _bool(value):
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _hosts(monitoring, hosts):
    return [
        monitoring.InventoryHost(
            name=h["name"],
            address=h["address"],
            groups=tuple(h.get("groups") or ()),
            models=tuple(h.get("models") or ()),
            node_exporter_port=h.get("node_exporter_port"),
            dcgm_exporter_port=h.get("dcgm_exporter_port"),
            dcgm_exporter_enabled=h.get("dcgm_exporter_enabled", True),
            gpu_present=h.get("gpu_present"),
            engine_ports=dict(h.get("engine_ports") or {}),
            declared_gpus=int(h.get("declared_gpus") or 0),
            engine_bind_address=str(h.get("engine_bind_address") or "127.0.0.1"),
            frontdoor_port=h.get("frontdoor_port"),
            frontdoor_tls=bool(h.get("frontdoor_tls", True)),
        )
        for h in _plain(hosts or [])
    ]


def hearth_dcgm_serving(group_names, enabled=True, gpu_present=None, gpu_group="gpu_nodes"):
    """Whether this host runs the DCGM exporter (C(hearth.monitoring.serves_dcgm)): the
    C(dcgm_exporter) role asks it, and Prometheus asks the same function for every host."""
    monitoring = _hearth()
    return monitoring.serves_dcgm(
        [str(g) for g in _plain(group_names or [])],
        enabled=_bool(enabled),
        gpu_present=None if gpu_present is None else _bool(gpu_present),
        gpu_group=str(gpu_group),
    )


def hearth_declared_gpu_counts(hosts):
    """{host: number of declared GPUs} of the hosts that declare GPUs (the GPU alerts use it)."""
    hosts = _plain(hosts or [])
    return {h["name"]: int(h["declared_gpus"]) for h in hosts if h.get("declared_gpus")}


def hearth_prometheus_config(hosts, **options):
    monitoring = _hearth()
    options = _plain(options)
    return _call(lambda m: m.prometheus_config, _hosts(monitoring, hosts), **options)


def hearth_alert_rules(settings, model_store_paths=None, model_hosts=None, declared_gpus=None):
    return _call(
        lambda m: m.alert_rules,
        _plain(settings or {}),
        tuple(_plain(model_store_paths or ["/var/lib/hearth/models"])),
        tuple(_plain(model_hosts or [])),
        {str(k): int(v) for k, v in _plain(declared_gpus or {}).items()},
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


def hearth_grafana_datasource(url, **options):
    return _call(lambda m: m.grafana_datasource, str(url), **_plain(options))


def hearth_web_config(password, seed, user="hearth"):
    """The exporter-toolkit web configuration of a host (hearth.monitoring.webauth.web_config):
    its certificate and the bcrypt hash of C(password), salted from C(seed), C(user) and the
    password (the same inputs give the same file: a second run changes nothing)."""
    webauth = import_hearth("monitoring.webauth").monitoring.webauth
    if not password:
        raise AnsibleFilterError("monitoring_web_password is empty (monitoring_tls is on)")
    return webauth.web_config(str(password), str(seed), str(user))


class FilterModule(object):
    def filters(self):
        return {
            "hearth_monitoring_hosts": hearth_monitoring_hosts,
            "hearth_question_set": hearth_question_set,
            "hearth_prometheus_config": hearth_prometheus_config,
            "hearth_alert_rules": hearth_alert_rules,
            "hearth_model_hosts": hearth_model_hosts,
            "hearth_alertmanager_config": hearth_alertmanager_config,
            "hearth_alertmanager_problems": hearth_alertmanager_problems,
            "hearth_canary_targets": hearth_canary_targets,
            "hearth_grafana_datasource": hearth_grafana_datasource,
            "hearth_web_config": hearth_web_config,
            "hearth_dcgm_serving": hearth_dcgm_serving,
            "hearth_declared_gpu_counts": hearth_declared_gpu_counts,
        }
