# -*- coding: utf-8 -*-
# Hearth: ansible.builtin.apt, asked only when dpkg says there is something to do.
from __future__ import annotations

DOCUMENTATION = r"""
module: hearth_apt
short_description: C(ansible.builtin.apt), run only when a package is missing or the index stale
description:
  - Takes C(ansible.builtin.apt)'s options. First reads the packages named with C(hearth_packages)
    (one C(dpkg-query), no apt cache opened); when every one is installed, at the version asked
    where one is, and the package index is younger than O(cache_valid_time) (or no refresh is
    asked), it reports ok, unchanged, and apt is not run. Otherwise it runs
    C(ansible.builtin.apt) with the task's own options, so what gets installed, and how, is
    apt's decision as before.
  - On a run that changes nothing this replaces the apt cache's open (a second or more on a
    host with large package lists) with a short read; a package removed or at another version
    since the last run is still put back by apt.
  - An apt package index with no package lists at all (a minimal image) counts as stale
    whatever O(cache_valid_time) says: apt is then asked to refresh it (C(cache_valid_time=0)).
  - Only C(state=present) (the default) with plain C(name) / C(name=version) entries takes the
    short way; any other use goes straight to apt. On hosts whose package manager is not apt it
    runs C(ansible.builtin.package) with O(name) and O(state).
  - With O(hold), the packages named are also held (C(hearth_hold)) in the same task; a pin
    that moves lets apt change the held package (C(allow_change_held_packages)). A run that
    changes nothing then costs one read for both.
  - Check mode is supported (apt's own check mode when apt is run).
options:
  name:
    description: As C(ansible.builtin.apt)'s (aliases C(pkg), C(package)).
    type: list
    elements: str
  state:
    description: As C(ansible.builtin.apt)'s.
    type: str
    default: present
  update_cache:
    description: As C(ansible.builtin.apt)'s.
    type: bool
  cache_valid_time:
    description: As C(ansible.builtin.apt)'s.
    type: int
  hold:
    description:
      - Hearth's own. Hold the packages named at the version installed, so that unattended
        upgrades leave them; only a change of the pin moves them. Hosts with apt only.
    type: bool
    default: false
author: Hearth
"""

EXAMPLES = r"""
- name: Install node_exporter at the pinned version
  hearth_apt:
    name: prometheus-node-exporter=1.5.0-1+b6
    install_recommends: false
    update_cache: true
    cache_valid_time: 3600
    hold: true
"""

RETURN = r"""
installed:
  description: Name to version of the packages named, when apt was not needed.
  type: dict
  returned: when apt was not run
apt_skipped:
  description: True when every package was in place and the index fresh, so apt was not run.
  type: bool
  returned: always
held:
  description: With O(hold), the packages this run set on hold (in check mode, would set).
  type: list
  elements: str
  returned: with O(hold)
"""

from typing import Any

from ansible.module_utils.common.text.converters import to_text
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase

# Options that do not change what a package set already in place means; any other (deb,
# autoremove, upgrade, purge, ...) goes straight to apt.
SHORT_WAY_OPTIONS = {
    "name",
    "pkg",
    "package",
    "state",
    "update_cache",
    "cache_valid_time",
    "install_recommends",
    "allow_downgrade",
    "allow_change_held_packages",
    "allow_unauthenticated",
    "force_apt_get",
    "lock_timeout",
    "dpkg_options",
    "default_release",
}


def names_of(args: dict[str, Any]) -> list[str] | None:
    """The package entries of apt's options, or None when they are not plain names."""
    raw = args.get("name", args.get("pkg", args.get("package", [])))
    if raw is None:
        raw = []
    if isinstance(raw, str):
        raw = raw.split(",")
    if not isinstance(raw, list):
        return None
    names = [to_text(entry).strip() for entry in raw]
    for entry in names:
        # apt's other forms (name>=1.0, a .deb path, a glob of names) are apt's to resolve; a
        # version after `=` may be a glob, as apt matches it
        name = entry.partition("=")[0]
        if not name or entry.endswith(".deb") or any(c in name for c in "<>/*?[ "):
            return None
    return names


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        hold = boolean(args.pop("hold", False), strict=False)
        facts = task_vars.get("ansible_facts") or {}
        manager = facts.get("pkg_mgr") or task_vars.get("ansible_pkg_mgr")
        try:
            if manager and manager != "apt":
                if hold:
                    msg = f"hold: dpkg holds packages; this host uses {manager}"
                    result.update(failed=True, msg=msg)
                    return result
                generic = {k: v for k, v in args.items() if k in ("name", "state")}
                return self._module("ansible.builtin.package", generic, task_vars, result)
            names = names_of(args)
            if hold and not names:
                msg = "hold: name the packages plainly (name or name=version)"
                result.update(failed=True, msg=msg)
                return result
            bare = sorted({entry.partition("=")[0] for entry in names or []})
            short = (
                names is not None
                and str(args.get("state", "present")) == "present"
                and set(args) <= SHORT_WAY_OPTIONS
            )
            if short and names is not None:
                probe = self._execute_module(
                    module_name="hearth_packages",
                    module_args={"names": names},
                    task_vars=task_vars,
                )
                if probe.get("failed"):
                    result.update(probe)
                    return result
                valid = int(args.get("cache_valid_time") or 0)
                refresh = boolean(args.get("update_cache", False), strict=False) or valid > 0
                empty = int(probe.get("index_files", 0)) == 0
                stale = refresh and (empty or float(probe.get("cache_age", 1e12)) > valid)
                if refresh and empty:
                    args.update(update_cache=True, cache_valid_time=0)
                if not probe.get("missing") and not stale:
                    result.update(
                        changed=False,
                        apt_skipped=True,
                        installed=probe.get("installed", {}),
                        cache_updated=False,
                        msg="every package is installed as asked; apt was not needed",
                    )
                    if hold and set(bare) - set(probe.get("held") or []):
                        return self._hold(bare, task_vars, result)
                    if hold:
                        result["held"] = []
                    return result
            if hold:
                # a pin that moved must be able to replace the package it held
                args.setdefault("allow_change_held_packages", True)
            self._module("ansible.builtin.apt", args, task_vars, result)
            if hold and not result.get("failed"):
                return self._hold(bare, task_vars, result)
            return result
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)

    def _module(
        self, name: str, args: dict[str, Any], task_vars: dict[str, Any], result: dict[str, Any]
    ) -> dict[str, Any]:
        answer = self._execute_module(module_name=name, module_args=args, task_vars=task_vars)
        result.update(answer)
        result["apt_skipped"] = False
        return result

    def _hold(
        self, names: list[str], task_vars: dict[str, Any], result: dict[str, Any]
    ) -> dict[str, Any]:
        """Hold ``names`` (hearth_hold: one dpkg-query, one dpkg --set-selections)."""
        answer = self._execute_module(
            module_name="hearth_hold", module_args={"names": names}, task_vars=task_vars
        )
        if answer.get("failed"):
            result.update(failed=True, msg=answer.get("msg", "hearth_hold failed"))
            return result
        result["held"] = answer.get("held", [])
        result["changed"] = bool(result.get("changed")) or bool(answer.get("changed"))
        return result
