#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Hearth contributors
# Apache-2.0

from __future__ import absolute_import, division, print_function

import re

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: hearth_hold
short_description: Hold installed Debian packages at their version, in one call
description:
  - Reads every installed package once (C(dpkg-query)) and sets C(hold) on the chosen ones that
    are not held yet, all in one C(dpkg --set-selections); a role that holds a driver, a toolkit
    or a pinned set of packages pays one round trip instead of one per package (and no
    C(package_facts) read of its own).
  - The packages chosen are the installed ones among O(names), and the installed ones whose name
    matches O(name_match) and whose version matches O(version_match) (both Python regular
    expressions, matched from the start).
  - Packages that are not installed are left alone (dpkg cannot hold them).
  - Changed only when a package was not held; check mode is supported (nothing is set).
version_added: "0.1.0"
author:
  - Hearth contributors
options:
  names:
    description: Packages to hold when they are installed.
    type: list
    elements: str
    default: []
  name_match:
    description:
      - With O(version_match), the installed packages whose name matches this expression are
        held too. Without O(version_match) it is ignored.
    type: str
    default: ".*"
  version_match:
    description:
      - The installed packages whose version matches this expression (and whose name matches
        O(name_match)) are held too.
    type: str
"""

EXAMPLES = r"""
- name: Hold the driver packages at the pinned release
  hearth_hold:
    names: [nvidia-driver, nvidia-smi]
    version_match: '535\.261\.03[-~+.]'

- name: Hold Docker
  hearth_hold:
    names: [docker.io, containerd]
"""

RETURN = r"""
held:
  description: The packages this run set on hold (in check mode, would set).
  returned: always
  type: list
  elements: str
packages:
  description: Every installed package chosen (held before or now), sorted.
  returned: always
  type: list
  elements: str
"""

QUERY_FORMAT = "${Package}\t${Version}\t${Status}\n"


def parse_query(text):
    """``dpkg-query -W -f QUERY_FORMAT`` output → {name: (version, wanted)} of the installed
    packages (``wanted``: the selection, install, hold, deinstall or purge)."""
    installed = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) != 3:
            continue
        name, version, status = parts
        words = status.split()
        if len(words) == 3 and words[2] in ("installed", "half-configured", "unpacked"):
            installed[name.split(":")[0]] = (version, words[0])
    return installed


def choose(installed, names, name_match, version_match):
    """The installed packages to hold (sorted) and those of them not held yet."""
    chosen = set(name for name in names if name in installed)
    if version_match:
        name_re = re.compile(name_match or ".*")
        version_re = re.compile(version_match)
        for name, (version, _) in installed.items():
            if name_re.match(name) and version_re.match(version):
                chosen.add(name)
    packages = sorted(chosen)
    return packages, [name for name in packages if installed[name][1] != "hold"]


def main():
    module = AnsibleModule(
        argument_spec=dict(
            names=dict(type="list", elements="str", default=[]),
            name_match=dict(type="str", default=".*"),
            version_match=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    try:
        re.compile(module.params["name_match"] or ".*")
        re.compile(module.params["version_match"] or "")
    except re.error as e:
        module.fail_json(msg="name_match/version_match is not a regular expression: %s" % e)
    query = module.get_bin_path("dpkg-query", required=True)
    rc, out, err = module.run_command([query, "-W", "-f", QUERY_FORMAT])
    if rc != 0:
        module.fail_json(msg="dpkg-query failed: %s" % err.strip(), rc=rc)
    packages, held = choose(
        parse_query(out),
        module.params["names"],
        module.params["name_match"],
        module.params["version_match"],
    )
    if held and not module.check_mode:
        dpkg = module.get_bin_path("dpkg", required=True)
        selections = "".join("%s hold\n" % name for name in held)
        rc, out, err = module.run_command([dpkg, "--set-selections"], data=selections)
        if rc != 0:
            module.fail_json(msg="dpkg --set-selections failed: %s" % err.strip(), rc=rc)
    module.exit_json(changed=bool(held), held=held, packages=packages)


if __name__ == "__main__":
    main()
