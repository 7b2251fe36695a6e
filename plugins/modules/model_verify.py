#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Hearth contributors
# Apache-2.0

from __future__ import absolute_import, division, print_function

import hashlib
import json
import os

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: model_verify
short_description: Check a model version's files against their declared sha256 on the host
description:
  - Hashes every declared file of a model version directory on the managed host (sha256, read in
    blocks) and compares it, and its size where declared, with the declaration.
  - Reports the files that are missing and those whose sha256 differs, each with the expected and
    the found value. Fails with a message naming the model, the file, the expected and the found
    sha256, unless O(fail_on_mismatch=false).
  - Only reads the model; it reports C(changed=false) and runs the same in check mode.
  - With O(record), a file whose device, inode, size, modification time and change time are those
    recorded when it last matched is not hashed again (a converge that changes nothing does not
    read a 140 GB model); any write to a file changes its change time, which a user cannot set, so
    an edited file (even with its size and modification time put back) is hashed. The record is
    rewritten after each run outside check mode. C(hearth audit) never trusts it: it hashes.
version_added: "0.1.0"
options:
  path:
    description: The version directory (or the model's C(current) link) holding the files.
    type: path
    required: true
  files:
    description: The declared files, as in C(hearth_models[].files).
    type: list
    elements: dict
    required: true
    suboptions:
      path:
        description: Path of the file inside O(path).
        type: str
        required: true
      sha256:
        description: Expected sha256 (64 hex digits).
        type: str
        required: true
      size:
        description: Expected size in bytes.
        type: int
      url:
        description: Ignored here (where the file was downloaded from).
        type: str
  name:
    description: The model (and version) to name in messages.
    type: str
    default: model
  fail_on_mismatch:
    description: Fail when a file is missing or differs. With V(false), report C(ok=false) instead.
    type: bool
    default: true
  record:
    description:
      - A file (root's) that keeps, for each file that matched, its sha256 and what C(stat) said
        of it; files unchanged since are not hashed again. Without it, every file is hashed.
    type: path
  record_root:
    description:
      - The directory O(record) is kept for, when O(path) is a staging directory that is then
        renamed there (its files keep their device, inode and change time), so that the version
        put in place has the record of its verification and a later check (a fast rollback)
        need not hash it again. Default O(path).
    type: path
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
author: Hearth
"""

EXAMPLES = r"""
- name: Verify a version before the current pointer moves to it
  model_verify:
    path: /var/lib/hearth/models/llama-3.1-8b/2024-07-23
    name: llama-3.1-8b 2024-07-23
    files:
      - path: model-00001-of-00002.safetensors
        sha256: 0f5b7c7e5c1e9b6bd6f4c3e5e8f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d
        size: 4976698672

- name: Look without failing
  model_verify:
    path: /var/lib/hearth/models/smollm2/current
    files: "{{ model.files }}"
    fail_on_mismatch: false
  register: verified
"""

RETURN = r"""
ok:
  description: True when every file exists and matches its sha256 (and size).
  type: bool
  returned: always
verified:
  description: The files that matched.
  type: list
  elements: str
  returned: always
missing:
  description: The files that do not exist (or are not regular files).
  type: list
  elements: str
  returned: always
mismatches:
  description: The files whose content differs, with what was expected and what was found.
  type: list
  elements: dict
  returned: always
  contains:
    path:
      description: The file.
      type: str
    expected:
      description: The declared sha256.
      type: str
    found:
      description: The sha256 of the file on the host.
      type: str
    size:
      description: The file's size on the host.
      type: int
    expected_size:
      description: The declared size, when declared.
      type: int
hashed:
  description: The files that were hashed (the others matched the record, unchanged since).
  type: list
  elements: str
  returned: always
msg:
  description: A summary naming the model, and each bad file with its expected and found sha256.
  type: str
  returned: always
"""

BLOCK = 1 << 20


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while True:
            block = stream.read(BLOCK)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


def identity(stat):
    """What says that a file was not written since it was hashed (a user cannot set ctime)."""
    return [stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


def read_record(path):
    """{relative path: {sha256, stat}} from the record file (empty when absent or unreadable)."""
    try:
        with open(path) as stream:
            data = json.load(stream)
    except (IOError, OSError, ValueError):
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    return files if isinstance(files, dict) else {}


def write_record(path, root, entries):
    """Write the record atomically, readable by root only."""
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o700)
    temporary = path + ".tmp"
    with open(temporary, "w") as stream:
        json.dump({"root": root, "files": entries}, stream, sort_keys=True)
    os.chmod(temporary, 0o600)
    os.rename(temporary, path)


def read_root(path):
    """The directory a record was written for (None when unreadable)."""
    try:
        with open(path) as stream:
            return json.load(stream).get("root")
    except (IOError, OSError, ValueError, AttributeError):
        return None


def verify(root, files, record=None):
    """(verified, missing, mismatches, hashed) for the declared files under root; with
    ``record`` ({path: {sha256, stat}}), files unchanged since they matched are not hashed, and
    the record is updated in place with the files that match now."""
    verified, missing, mismatches, hashed = [], [], [], []
    for item in files:
        rel = item["path"]
        full = os.path.join(root, rel)
        if not os.path.isfile(full):
            missing.append(rel)
            if record is not None:
                record.pop(rel, None)
            continue
        stat = os.stat(full)
        size = stat.st_size
        expected = str(item["sha256"]).lower()
        known = (record or {}).get(rel) or {}
        if known.get("sha256") == expected and known.get("stat") == identity(stat):
            found = expected
        else:
            found = sha256_of(full)
            hashed.append(rel)
        expected_size = item.get("size")
        if record is not None:
            if found == expected:
                record[rel] = {"sha256": found, "stat": identity(stat)}
            else:
                record.pop(rel, None)
        if found != expected or (expected_size is not None and int(expected_size) != size):
            mismatches.append(
                {
                    "path": rel,
                    "expected": expected,
                    "found": found,
                    "size": size,
                    "expected_size": expected_size,
                }
            )
        else:
            verified.append(rel)
    return verified, missing, mismatches, hashed


def describe(name, root, missing, mismatches):
    parts = []
    for bad in mismatches:
        text = "file %s: expected sha256 %s, found %s" % (
            bad["path"],
            bad["expected"],
            bad["found"],
        )
        if bad["expected_size"] is not None and bad["expected_size"] != bad["size"]:
            text += " (size %s, expected %s)" % (bad["size"], bad["expected_size"])
        parts.append(text)
    for rel in missing:
        parts.append("file %s: missing" % rel)
    if not parts:
        return "model %s: every file in %s matches its sha256" % (name, root)
    return "model %s: %s (in %s)" % (name, "; ".join(parts), root)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            files=dict(
                type="list",
                elements="dict",
                required=True,
                options=dict(
                    path=dict(type="str", required=True),
                    sha256=dict(type="str", required=True),
                    size=dict(type="int"),
                    url=dict(type="str"),
                ),
            ),
            name=dict(type="str", default="model"),
            fail_on_mismatch=dict(type="bool", default=True),
            record=dict(type="path"),
            record_root=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    root = module.params["path"]
    name = module.params["name"]
    for item in module.params["files"]:
        rel = item["path"]
        if os.path.isabs(rel) or ".." in rel.split("/"):
            module.fail_json(
                msg="model %s: file %s: expected a path inside the version" % (name, rel)
            )
    if not os.path.isdir(root):
        missing = [item["path"] for item in module.params["files"]]
        result = dict(changed=False, ok=False, verified=[], missing=missing, mismatches=[])
        result["msg"] = "model %s: %s does not exist" % (name, root)
        if module.params["fail_on_mismatch"]:
            module.fail_json(**result)
        module.exit_json(**result)
    record_path = module.params["record"]
    record_root = os.path.realpath(module.params["record_root"] or root)
    record = None
    if record_path:
        record = read_record(record_path)
        if record and (read_root(record_path) != record_root):
            record = {}  # a record of another directory: hash everything
    try:
        verified, missing, mismatches, hashed = verify(root, module.params["files"], record)
        if record is not None and not module.check_mode:
            write_record(record_path, record_root, record)
    except (IOError, OSError) as exc:
        module.fail_json(msg="model %s: cannot read the files in %s: %s" % (name, root, exc))
    ok = not missing and not mismatches
    result = dict(
        changed=False,
        ok=ok,
        verified=verified,
        missing=missing,
        mismatches=mismatches,
        hashed=hashed,
        msg=describe(name, root, missing, mismatches),
    )
    if not ok and module.params["fail_on_mismatch"]:
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
