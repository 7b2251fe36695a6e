#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Hearth contributors
# Apache-2.0

from __future__ import absolute_import, division, print_function

import fnmatch
import os
import time

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: hearth_packages
short_description: Read which of a set of Debian packages are installed, and at which version
description:
  - One C(dpkg-query) for the packages named (no apt cache is opened, which is what makes
    C(ansible.builtin.apt) and C(package_facts) cost a second or more on a host with large
    package lists).
  - Names are written as C(ansible.builtin.apt) takes them, C(name) or C(name=version), the
    version a glob (C(535.261.03-*)) as apt matches it.
  - Also says how old the apt package index is, the way C(ansible.builtin.apt) reckons it for
    C(cache_valid_time) (C(/var/lib/apt/periodic/update-success-stamp), else C(/var/lib/apt/lists)).
  - Also counts the downloaded package lists: a minimal image may have none, with a fresh
    directory date that would pass C(cache_valid_time).
  - Read-only; check mode is supported. The C(hearth_apt) action runs it before
    C(ansible.builtin.apt).
version_added: "0.1.0"
author:
  - Hearth contributors
options:
  names:
    description: Packages, C(name) or C(name=version).
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Read the installed driver's version
  hearth_packages:
    names: [nvidia-driver]
  register: installed_driver
"""

RETURN = r"""
installed:
  description: The installed packages among O(names), name to version.
  returned: always
  type: dict
missing:
  description: The entries of O(names) not installed, or installed at a version the entry does
    not match.
  returned: always
  type: list
  elements: str
cache_age:
  description: Seconds since the apt package index was last updated (a large number when never).
  returned: always
  type: float
held:
  description: The installed packages among O(names) that are on hold (C(dpkg --set-selections)).
  returned: always
  type: list
  elements: str
index_files:
  description: How many package lists (C(*_Packages*)) C(/var/lib/apt/lists) holds; 0 on a
    minimal image whose index was never downloaded, where apt can find nothing until it is.
  returned: always
  type: int
"""

QUERY_FORMAT = "${Package}\t${Version}\t${Status}\n"
UPDATE_STAMP = "/var/lib/apt/periodic/update-success-stamp"
LISTS = "/var/lib/apt/lists"


def split_spec(spec):
    """``name=version`` → (name, version or None); an architecture qualifier is kept apart."""
    name, _, version = spec.partition("=")
    return name.strip(), (version.strip() or None)


def _installed_rows(text):
    """``dpkg-query -W -f QUERY_FORMAT`` output → (name, version, selection) of each fully
    installed package (half-installed, unpacked or removed ones are not installed for apt
    either); the selection is install, hold, deinstall or purge."""
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) != 3:
            continue
        name, version, status = parts
        words = status.split()
        if len(words) == 3 and words[1] == "ok" and words[2] == "installed":
            yield name, version, words[0]


def parse_query(text):
    """``dpkg-query -W -f QUERY_FORMAT`` output → {name: version} of the installed packages."""
    installed = {}
    for name, version, _ in _installed_rows(text):
        installed[name] = version
        installed.setdefault(name.split(":")[0], version)
    return installed


def held(text):
    """``dpkg-query -W -f QUERY_FORMAT`` output → the installed packages selected ``hold``."""
    return sorted(
        set(name.split(":")[0] for name, _, want in _installed_rows(text) if want == "hold")
    )


def missing(installed, specs):
    """The specs the installed packages do not satisfy (apt's own test: the version a glob)."""
    left = []
    for spec in specs:
        name, version = split_spec(spec)
        have = installed.get(name)
        if have is None or (version is not None and not fnmatch.fnmatch(have, version)):
            left.append(spec)
    return left


def cache_age(now=None):
    now = time.time() if now is None else now
    for path in (UPDATE_STAMP, LISTS):
        if os.path.exists(path):
            return max(now - os.stat(path).st_mtime, 0.0)
    return float("inf")


def index_files():
    try:
        return sum(1 for entry in os.listdir(LISTS) if fnmatch.fnmatch(entry, "*_Packages*"))
    except OSError:
        return 0


def main():
    module = AnsibleModule(
        argument_spec=dict(names=dict(type="list", elements="str", default=[])),
        supports_check_mode=True,
    )
    specs = module.params["names"]
    names = sorted(set(split_spec(spec)[0] for spec in specs))
    installed = {}
    on_hold = []
    if names:
        query = module.get_bin_path("dpkg-query", required=True)
        # rc 1 only says some names are unknown to dpkg: they are not installed
        rc, out, err = module.run_command([query, "-W", "-f", QUERY_FORMAT, "--", *names])
        if rc not in (0, 1):
            module.fail_json(msg="dpkg-query failed: %s" % err.strip(), rc=rc)
        installed = parse_query(out)
        on_hold = [name for name in held(out) if name in names]
    age = cache_age()
    module.exit_json(
        changed=False,
        installed=dict((n, installed[n]) for n in names if n in installed),
        missing=missing(installed, specs),
        held=on_hold,
        cache_age=age if age != float("inf") else 1e12,
        index_files=index_files(),
    )


if __name__ == "__main__":
    main()
