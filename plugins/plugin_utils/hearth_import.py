# -*- coding: utf-8 -*-
# Copyright: Hearth contributors
# Apache-2.0
"""Import Hearth's Python package from a controller-side plugin (filters, action plugins).

The one copy of "find hearth": every plugin under ``plugins/filter`` and ``plugins/action`` puts
this folder on ``sys.path`` and calls :func:`import_hearth`. Layouts it serves:

- Hearth installed with pip: the plugins are package data under ``hearth/_content/plugins`` and
  ``hearth`` is importable by the Python that runs Ansible; nothing to do. (Ansible run by another
  Python: the site-packages that holds ``hearth/_content`` goes on the path.)
- A checkout run with plain ``ansible-playbook`` (``ansible.cfg`` at its root): ``plugins/`` sits
  beside ``src/``; ``src/`` goes first on the path when ``hearth`` is not importable.

Controller-side code only (``plugin_utils``, as in a collection): no module ships it to a host.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

_PLUGINS = Path(__file__).resolve().parents[1]
# a checkout's src/; the site-packages holding hearth/_content/plugins (installed)
_CANDIDATES = (_PLUGINS.parent / "src", _PLUGINS.parents[2])


def import_hearth(*modules):
    """The ``hearth`` package with ``hearth.<module>`` imported for each of ``modules``.

    Raises ``ansible.errors.AnsibleError`` naming what to install when it cannot be imported.
    """
    try:
        importlib.import_module("hearth")
    except ImportError:
        for candidate in _CANDIDATES:
            if (candidate / "hearth" / "__init__.py").is_file():
                sys.path.insert(0, str(candidate))
                break
    try:
        hearth = importlib.import_module("hearth")
        for module in modules:
            importlib.import_module("hearth." + module)
    except ImportError as exc:
        from ansible.errors import AnsibleError

        raise AnsibleError(
            "the hearth Python package is not importable by this Ansible (%s): install Hearth "
            "in the Python that runs ansible-playbook" % exc
        ) from exc
    return hearth
