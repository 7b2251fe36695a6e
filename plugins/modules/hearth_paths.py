#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Hearth contributors
# Apache-2.0

from __future__ import absolute_import, division, print_function

import os
import shutil

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: hearth_paths
short_description: Make several directories (owner, group, mode) or remove them, in one call
description:
  - For each entry of O(paths), makes the directory (and its missing parents) and sets its
    owner, group and mode, or removes it (O(paths[].state=absent)), the way
    M(ansible.builtin.file) does for one path, with Ansible's own attribute handling; a role
    that prepares several directories pays one round trip instead of one per directory.
  - Changed only when something was made, removed or altered; check mode and diff mode are
    supported.
version_added: "0.1.0"
author:
  - Hearth contributors
options:
  paths:
    description: The directories, in order (a parent before its children).
    type: list
    elements: dict
    required: true
    suboptions:
      path:
        description: Absolute path of the directory.
        type: path
        required: true
      state:
        description: C(directory) makes it, C(absent) removes it and what it holds.
        type: str
        choices: [directory, absent]
        default: directory
      owner:
        description: Owner (name or uid); unchanged when omitted.
        type: str
      group:
        description: Group (name or gid); unchanged when omitted.
        type: str
      mode:
        description: Mode, as an octal string (C("0750"), C("2755")); unchanged when omitted.
        type: str
"""

EXAMPLES = r"""
- name: Create Hearth's directories
  hearth_paths:
    paths:
      - {path: /etc/hearth, owner: root, group: hearth, mode: "0750"}
      - {path: /var/lib/hearth, owner: hearth, group: hearth, mode: "0750"}
      - {path: /var/log/journal, state: absent}
"""

RETURN = r"""
changed_paths:
  description: The directories made, removed or altered (in check mode, that would be).
  returned: always
  type: list
  elements: str
"""


def main():
    module = AnsibleModule(
        argument_spec=dict(
            paths=dict(
                type="list",
                elements="dict",
                required=True,
                options=dict(
                    path=dict(type="path", required=True),
                    state=dict(type="str", choices=["directory", "absent"], default="directory"),
                    owner=dict(type="str"),
                    group=dict(type="str"),
                    mode=dict(type="str"),
                ),
            ),
        ),
        supports_check_mode=True,
    )
    changed_paths = []
    diffs = []
    for entry in module.params["paths"]:
        path = entry["path"]
        if not os.path.isabs(path):
            module.fail_json(msg="%s: expected an absolute path" % path)
        if entry["state"] == "absent":
            if os.path.lexists(path):
                if not module.check_mode:
                    if os.path.isdir(path) and not os.path.islink(path):
                        shutil.rmtree(path)
                    else:
                        os.unlink(path)
                changed_paths.append(path)
                diffs.append(dict(before_header=path, before="directory\n", after="absent\n"))
            continue
        if os.path.lexists(path) and not os.path.isdir(path):
            module.fail_json(msg="%s exists and is not a directory" % path)
        made = False
        if not os.path.exists(path):
            made = True
            if not module.check_mode:
                try:
                    os.makedirs(path)
                except OSError as e:
                    module.fail_json(msg="could not make %s: %s" % (path, e))
        if made and module.check_mode:
            changed_paths.append(path)  # its attributes cannot be read before it exists
            diffs.append(dict(before_header=path, before="absent\n", after="directory\n"))
            continue
        diff = dict(before={"path": path}, after={"path": path})
        file_args = module.load_file_common_arguments(
            dict(path=path, owner=entry["owner"], group=entry["group"], mode=entry["mode"])
        )
        altered = module.set_fs_attributes_if_different(file_args, False, diff, expand=False)
        if made or altered:
            changed_paths.append(path)
            if made:
                diff["before"]["state"] = "absent"
                diff["after"]["state"] = "directory"
            diffs.append(diff)
    module.exit_json(changed=bool(changed_paths), changed_paths=changed_paths, diff=diffs)


if __name__ == "__main__":
    main()
