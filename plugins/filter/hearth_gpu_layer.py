# -*- coding: utf-8 -*-
# Copyright: Hearth contributors
# Apache-2.0
"""Filters of the GPU layer (nvidia_driver, cuda, container_runtime roles).

- ``hearth_gpu_compat``: driver / CUDA / GPU / kernel compatibility, the same code as
  ``hearth check`` (``hearth.compat``); returns a list of ``{level, code, message}``.
- ``hearth_docker_daemon_config``: Docker's daemon.json merged with Hearth's keys, never dropping a
  key that is already there.
- ``hearth_reboot_decision``: whether a driver change needs a reboot and whether Hearth may do it.

Run on the control node (filters always do), where Hearth's Python package is installed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

_PLUGIN_UTILS = str(Path(__file__).resolve().parents[1] / "plugin_utils")
if _PLUGIN_UTILS not in sys.path:
    sys.path.insert(0, _PLUGIN_UTILS)
from hearth_import import import_hearth  # the one "import hearth" helper (plugin_utils/)

DOCUMENTATION = r"""
name: hearth_gpu_layer
short_description: Filters for Hearth's GPU layer (compatibility, daemon.json merge, reboot policy)
description:
  - C(hearth_gpu_compat) checks driver, CUDA, GPU models and kernel against Hearth's table.
  - C(hearth_docker_daemon_config) merges Hearth's keys into an existing daemon.json mapping.
  - C(hearth_reboot_decision) decides whether a reboot is needed and allowed.
author: Hearth
"""


def gpu_compat(
    driver_version,
    cuda_version=None,
    gpus=None,
    kernel=None,
    kernel_flavor="proprietary",
    allow_minor_version_compat=False,
):
    """Findings as dicts: ``[{level: error|warning, code, message}]``."""
    check = import_hearth("compat").compat.check
    findings = check(
        driver_version=str(driver_version),
        cuda_version=str(cuda_version) if cuda_version else None,
        gpus=[str(g) for g in (gpus or []) if str(g).strip()],
        kernel=str(kernel) if kernel else None,
        kernel_flavor=str(kernel_flavor),
        allow_minor_version_compat=bool(allow_minor_version_compat),
    )
    return [f.as_dict() for f in findings]


def _plain(value):
    """A fresh copy of JSON data as plain dicts and lists.

    Not ``copy.deepcopy``: on Ansible 2.19's lazy containers it copies their templating context
    too (about 0.8 s on every run for a daemon.json of a few keys, measured in a no-op converge).
    """
    return json.loads(json.dumps(value))


def _merge(base, extra):
    """Recursive merge into ``base`` (plain data, changed in place): mappings are merged key by
    key, anything else in ``extra`` wins."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def docker_daemon_config(existing, wanted, exec_opts=None):
    """``existing`` daemon.json (a mapping, possibly empty) with ``wanted`` merged in.

    Keys Hearth does not manage stay as they are; nested mappings (``runtimes``) are merged, so
    another runtime already registered stays registered. ``exec_opts`` (``name=value`` strings)
    replace only the options of the same name in ``exec-opts`` and keep the others.
    """
    if existing is None or existing == "":
        existing = {}
    if not isinstance(existing, dict):
        from ansible.errors import AnsibleFilterError

        raise AnsibleFilterError(
            "daemon.json does not hold a JSON object (found %s): fix or remove it"
            % type(existing).__name__
        )
    merged = _merge(_plain(existing), _plain(wanted or {}))
    if exec_opts:
        names = set(opt.split("=", 1)[0] for opt in exec_opts)
        kept = [o for o in merged.get("exec-opts", []) if o.split("=", 1)[0] not in names]
        merged["exec-opts"] = kept + [o for o in exec_opts if o not in kept]
    return merged


def reboot_decision(
    device_present,
    loaded_version,
    installed_version,
    nouveau_loaded=False,
    connection="ssh",
    is_control_node=False,
    engines_running=None,
    allow_disruption=False,
    reboot_enabled=True,
):
    """``{needed, action: none|reboot|report, reasons, blockers, message}``.

    A reboot is needed only on a host with an NVIDIA device whose loaded module differs from the
    installed driver (or is missing, or nouveau holds the device). It is never done over a local
    connection, on the control node, or while inference engines run (unless disruption is
    allowed), nor when the operator turned reboots off: then the message says what to do.
    """
    loaded = (loaded_version or "").strip()
    installed = (installed_version or "").strip()
    reasons = []
    if device_present:
        if loaded and installed and loaded != installed:
            reasons.append(
                "the loaded nvidia module is %s but the installed driver is %s"
                % (loaded, installed)
            )
        elif not loaded and installed:
            reasons.append("driver %s is installed but its module is not loaded" % installed)
        if nouveau_loaded:
            reasons.append("the nouveau module is loaded and holds the GPU")
    blockers = []
    if reasons:
        if connection in ("local", "ansible.builtin.local"):
            blockers.append("the connection is local (Hearth never reboots the machine it runs on)")
        elif is_control_node:
            blockers.append("this host is the control node (same machine-id)")
        running = sorted(engines_running or [])
        if running and not allow_disruption:
            blockers.append(
                "inference containers are running (%s); set nvidia_driver_allow_disruption: true "
                "to allow it" % ", ".join(running)
            )
        if not reboot_enabled:
            blockers.append("nvidia_driver_reboot is false")
    if not reasons:
        action = "none"
        message = (
            "no reboot needed"
            if device_present
            else "no reboot needed: no NVIDIA device on this host, no module to load"
        )
    elif blockers:
        action = "report"
        message = (
            "REBOOT NEEDED but not done: %s; not rebooting because %s. Reboot the host in a "
            "maintenance window, then run Hearth again." % ("; ".join(reasons), "; ".join(blockers))
        )
    else:
        action = "reboot"
        message = "rebooting: %s" % "; ".join(reasons)
    return {
        "needed": bool(reasons),
        "action": action,
        "reasons": reasons,
        "blockers": blockers,
        "message": message,
    }


class FilterModule(object):
    def filters(self):
        return {
            "hearth_gpu_compat": gpu_compat,
            "hearth_docker_daemon_config": docker_daemon_config,
            "hearth_reboot_decision": reboot_decision,
        }
