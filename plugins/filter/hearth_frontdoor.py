# -*- coding: utf-8 -*-
# Hearth: the front door's API keys as Jinja filters. Keys go in; only hashes, key names and
# problems that name keys (never show them) come out.
from __future__ import annotations

import re
import sys
from pathlib import Path

_PLUGIN_UTILS = str(Path(__file__).resolve().parents[1] / "plugin_utils")
if _PLUGIN_UTILS not in sys.path:
    sys.path.insert(0, _PLUGIN_UTILS)
from hearth_import import import_hearth  # the one "import hearth" helper (plugin_utils/)

DOCUMENTATION = r"""
name: hearth_frontdoor_keys
short_description: The front door's keys file from its API keys (names and sha256 only)
description:
  - Returns C({keys: [{name, sha256, models?, rpm?, tpm?, max_concurrent?, tokens_per_day?,
    expires?, not_after?}]}), what the front door compares presented keys with and the policy of
    each (hearth.frontdoor.policy.keys_file_entries); the keys themselves are not in it. A rotated
    key's previous value is kept, with C(not_after), until its overlap has ended.
  - The other filters in this file, C(hearth_frontdoor_key_problems),
    lists what is wrong with the keys, naming them by their names only; C(hearth_tls_files) names
    the certificate and key `hearth tls init` issued for a host; C(hearth_frontdoor_ca) gives the
    CA a client checks an HTTPS front door's certificate against.
positional: _input
options:
  _input:
    description: C(front_door_api_keys), C({name, key, ...policy}) each (kept in ansible-vault).
    type: list
    elements: dict
    required: true
"""

EXAMPLES = r"""
- name: Write the keys file
  ansible.builtin.copy:
    content: "{{ front_door_api_keys | hearth_frontdoor_keys | to_nice_json }}"
    dest: /etc/hearth/frontdoor/keys.json
    mode: "0600"
  no_log: true
  diff: false
"""

RETURN = r"""
_value:
  description: C({keys: [{name, sha256, ...policy}]}).
  type: dict
"""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _entries(keys):
    return [k if isinstance(k, dict) else {} for k in (keys if isinstance(keys, list) else [])]


def hearth_frontdoor_keys(keys):
    policy = import_hearth("frontdoor.policy").frontdoor.policy
    return {"keys": policy.keys_file_entries(_entries(keys))}


def hearth_frontdoor_key_problems(keys, min_length=32):
    """What is wrong with the keys, each key named by its name (or position), never shown: the
    rule of hearth.rules that `hearth check` runs (one implementation)."""
    rules = import_hearth("rules").rules
    return rules.front_door_key_problems(keys, int(min_length))


def hearth_tls_files(host, site="", inventory_dir=""):
    """The certificate and key `hearth tls init` issued for C(host): C({cert, key}) paths on the
    control node (hearth.tls.host_files, under $HEARTH_HOME/tls/<site>/hosts/)."""
    tls = import_hearth("tls").tls
    site = tls.site_name(site, inventory_dir)
    cert, key = tls.host_files(site, str(host))
    return {"cert": str(cert), "key": str(key), "ca": str(tls.site_dir(site) / "ca.crt")}


def hearth_frontdoor_ca(https, declared="", site="", inventory_dir=""):
    """The CA (PEM text) a client on a host checks front door certificates against: none when it
    reaches no front door over HTTPS (C(https) false), else C(declared) (the site's own chain),
    else the site's CA of `hearth tls init` when it exists on the control node, else none (the
    system's trusted CAs). Prometheus's and the canary's roles both ask it."""
    if not https:
        return ""
    if declared:
        return str(declared)
    ca = Path(hearth_tls_files("-", site, inventory_dir)["ca"])
    return ca.read_text() if ca.is_file() else ""


class FilterModule(object):
    def filters(self):
        return {
            "hearth_tls_files": hearth_tls_files,
            "hearth_frontdoor_ca": hearth_frontdoor_ca,
            "hearth_frontdoor_keys": hearth_frontdoor_keys,
            "hearth_frontdoor_key_problems": hearth_frontdoor_key_problems,
        }
