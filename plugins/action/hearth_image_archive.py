# -*- coding: utf-8 -*-
# Hearth: an engine or front door image as a `docker save` archive on the control node.
from __future__ import annotations

DOCUMENTATION = r"""
module: hearth_image_archive
short_description: Build (or load from Hearth's cache) one of Hearth's images and save its archive
description:
  - Runs on the control node, with the same code as C(hearth images build) (C(hearth.images)).
  - Makes sure the image of the recipe is in the control node's Docker (present, loaded from
    C($HEARTH_CACHE/images), or built from its pinned recipe), then writes the plain
    C(docker save) archive the roles copy to hosts, once per image id.
  - In check mode an image that would have to be built is not built; C(id) is then empty.
options:
  recipe:
    description: The recipe under templates/images/ (llamacpp, triton, frontdoor).
    type: str
    required: true
author: Hearth
"""

EXAMPLES = r"""
- name: Save the llama.cpp image for the hosts
  hearth_image_archive:
    recipe: llamacpp
  delegate_to: localhost
  become: false
  register: __archive
"""

RETURN = r"""
tag:
  description: The image's tag (the recipe's name and the hash of the recipe).
  type: str
  returned: always
id:
  description: The image id (sha256:…), the digest of the image's configuration.
  type: str
  returned: always
archive:
  description: Path of the archive on the control node.
  type: str
  returned: when the image exists
sha256:
  description: sha256 of the archive.
  type: str
  returned: when the image exists
size:
  description: Size of the archive in bytes.
  type: int
  returned: when the image exists
"""

import sys
from pathlib import Path

from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase

_PLUGIN_UTILS = str(Path(__file__).resolve().parents[1] / "plugin_utils")
if _PLUGIN_UTILS not in sys.path:
    sys.path.insert(0, _PLUGIN_UTILS)
from hearth_import import import_hearth  # the one "import hearth" helper (plugin_utils/)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        recipe = str(self._task.args.get("recipe") or "")
        try:
            hearth = import_hearth("errors", "images")
        except AnsibleError as exc:  # Hearth's Python package is not in this Ansible's Python
            result.update(failed=True, msg=str(exc))
            return result
        images = hearth.images
        if recipe not in images.RECIPES:
            result.update(
                failed=True,
                msg="unknown image recipe %r: expected one of %s"
                % (recipe, ", ".join(images.RECIPES)),
            )
            return result
        try:
            tag = images.image_tag(recipe)
            state = images.image_state(recipe)
            if self._task.check_mode and not (state["present"] or state["cached"]):
                result.update(
                    changed=True,
                    tag=tag,
                    id="",
                    msg="%s would be built on the control node (check mode: not built)" % tag,
                )
                return result
            saved = images.export_archive(recipe)
        except hearth.errors.HearthError as exc:
            result.update(failed=True, msg="image %s: %s" % (recipe, exc))
            return result
        result.update(changed=False, **saved)
        return result
