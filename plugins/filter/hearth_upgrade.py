# -*- coding: utf-8 -*-
# Hearth: `hearth upgrade`'s decisions as Jinja filters (playbooks/upgrade.yml, roles/upgrade):
# the DKMS verdict for the kernel that boots next, and whether the host's window reboots it.
# The rules live in hearth.dkms and hearth.commands.upgrade (unit tested on recorded outputs).
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
name: hearth_dkms_verdict
short_description: Is the nvidia module built by DKMS for the kernel that boots next?
description:
  - Reads C(dkms status) (dkms 2.x and 3.x) and the boot loader (C(grubby --default-kernel),
    C(/boot/grub/grub.cfg) with C(grubenv), the C(/vmlinuz) link) with C(hearth.dkms), and
    returns C({ok, kernel, module, version, message}).
  - C(hearth_reboot_plan) decides whether an upgrade window reboots the host
    (C(hearth.commands.upgrade.reboot_plan)).
positional: _input
options:
  _input:
    description: The output of C(dkms status).
    type: str
    required: true
"""

EXAMPLES = r"""
- name: Refuse the reboot without a module for the next kernel
  ansible.builtin.assert:
    that: __verdict.ok
    fail_msg: "{{ __verdict.message }}"
  vars:
    __verdict: "{{ dkms_out.stdout | hearth_dkms_verdict(running=ansible_facts.kernel,
                   grub_cfg=cfg, grubenv=env, grubby='', vmlinuz=link) }}"
"""

RETURN = r"""
_value:
  description: C({ok, kernel, module, version, message}).
  type: dict
"""


def _plain(value):
    return json.loads(json.dumps(value, default=str))


def hearth_dkms_verdict(status, running="", grub_cfg="", grubenv="", grubby="", vmlinuz=""):
    hearth = import_hearth("dkms")
    kernel, how = hearth.dkms.default_boot_kernel(
        grubby=str(grubby or ""), grub_cfg=str(grub_cfg or ""), grubenv=str(grubenv or ""),
        vmlinuz=str(vmlinuz or ""),
    )  # fmt: skip
    return hearth.dkms.verdict(str(status or ""), kernel, str(running or ""), how=how)


def hearth_dkms_report(report, running=""):
    """C(hearth_dkms_verdict) from one probe's output: C(=== dkms), C(=== grubby),
    C(=== grubenv), C(=== vmlinuz) and C(=== grub.cfg) sections."""
    return import_hearth("dkms").dkms.verdict_of_report(str(report or ""), str(running or ""))


def hearth_reboot_plan(mode, **options):
    hearth = import_hearth("commands.upgrade", "errors")
    options = _plain(options)
    try:
        return hearth.commands.upgrade.reboot_plan(
            str(mode),
            **{k: bool(v) if k != "connection" else str(v) for k, v in options.items()},
        )
    except hearth.errors.HearthError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def hearth_held_problems(lines, pins):
    """What is wrong with C(common_held_packages) on a host, from dpkg-query lines; []: none."""
    hearth = import_hearth("commands.upgrade")
    return hearth.commands.upgrade.held_problems(
        [str(line) for line in lines or []], _plain(pins or {})
    )


def hearth_upgrade_metrics(state):
    """The host's upgrade state as node_exporter textfile metrics
    (C(hearth.commands.upgrade.render_metrics)), stamped now."""
    import time

    return import_hearth("commands.upgrade").commands.upgrade.render_metrics(
        _plain(state), time.time()
    )


class FilterModule(object):
    def filters(self):
        return {
            "hearth_dkms_verdict": hearth_dkms_verdict,
            "hearth_dkms_report": hearth_dkms_report,
            "hearth_reboot_plan": hearth_reboot_plan,
            "hearth_held_problems": hearth_held_problems,
            "hearth_upgrade_metrics": hearth_upgrade_metrics,
        }
