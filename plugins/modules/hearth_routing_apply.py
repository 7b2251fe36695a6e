#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Hearth contributors
# Apache-2.0

from __future__ import absolute_import, division, print_function

import grp
import json
import os
import re
import ssl
import subprocess
import time
import urllib.error
import urllib.request

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: hearth_routing_apply
short_description: Put a front door's routing.json in force in one step on the front door host
description:
  - The host side of the C(hearth_routing) action (which works out the routing on the control
    node) - writes O(content) to O(path) when it differs (atomically; owner root, group O(group),
    mode 0640), reloads the front door in place (C(docker kill --signal HUP) O(container)), and
    polls its O(health_url) every 0.25 s until C(/health) shows O(digest) in force.
  - With O(idle), then waits until the front door has no request in flight on the backends
    named (its C(hearth_frontdoor_backend_requests_in_flight) at O(idle.metrics_url) reaches 0) -
    what a switch away from an engine, a canary's end and a drain wait for before an engine is
    stopped.
  - One module run instead of a read, a copy, a signal and a poll per round trip.
  - Check mode is supported - nothing is written, reloaded or waited for.
version_added: "0.1.0"
author:
  - Hearth contributors
options:
  path:
    description: routing.json on the front door host.
    type: path
    required: true
  content:
    description: What it says.
    type: str
    required: true
  digest:
    description: The sha256 of O(content), as the front door's C(/health) shows it in force.
    type: str
    required: true
  group:
    description: The group that owns routing.json (a name or a number).
    type: str
    required: true
  container:
    description: The front door's container.
    type: str
    required: true
  health_url:
    description: The front door's C(/health) URL, as the front door host reaches it (loopback).
    type: str
    required: true
  retries:
    description: Seconds to wait for the new routing to be in force.
    type: int
    default: 30
  idle:
    description:
      - Wait for the requests in flight to finish (C(metrics_url); C(backends), a list;
        C(model), or every model when it is not given; C(timeout) in seconds).
    type: dict
"""

EXAMPLES = r"""
- name: Put the routing in force
  hearth_routing_apply:
    path: /etc/hearth/frontdoor/routing.json
    content: '{"models": {}}'
    digest: 0123abcd...
    group: "10003"
    container: hearth-frontdoor
    health_url: http://127.0.0.1:8090/health
"""

RETURN = r"""
written:
  description: True when routing.json was written (and the front door reloaded).
  type: bool
  returned: always
in_flight:
  description: The requests in flight on the backend when the wait ended (0 unless it timed out).
  type: float
  returned: with idle
"""

_LOOPBACK = ssl.create_default_context()
_LOOPBACK.check_hostname = False
_LOOPBACK.verify_mode = ssl.CERT_NONE  # the front door's own loopback address: HTTPS or not


def fetch(url, timeout=5):
    """(status, text) of a GET on loopback; (0, why) when it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=_LOOPBACK) as answer:  # noqa: S310
            return answer.status, answer.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(getattr(exc, "reason", exc))


def routing_in_force(text):
    """The routing digest a front door's /health shows in force ('' when it shows none)."""
    try:
        body = json.loads(text)
    except ValueError:
        return ""
    return str(((body or {}).get("loaded") or {}).get("routing") or "")


_IN_FLIGHT = "hearth_frontdoor_backend_requests_in_flight{"
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def in_flight(metrics, model, backend):
    """The requests in flight in a front door's /metrics text on ``backend`` (one, or a list of
    them) of ``model`` (any model when empty).

    The labels are read by name: prometheus_client writes them sorted (backend before model),
    not in the order the gauge declares them. The one reader of this gauge: the switch's, the
    canary abort's and the drain's waits all come here."""
    backends = {backend} if isinstance(backend, str) else set(backend)
    total = 0.0
    for line in metrics.splitlines():
        if not line.startswith(_IN_FLIGHT):
            continue
        labels, _, value = line[len(_IN_FLIGHT) :].rpartition("} ")
        found = dict(_LABEL.findall(labels))
        if (not model or found.get("model") == model) and found.get("backend") in backends:
            try:
                total += float(value.split()[0])
            except (IndexError, ValueError):
                continue
    return total


def group_id(group):
    return int(group) if str(group).isdigit() else grp.getgrnam(group).gr_gid


def write(path, content, group):
    """``content`` in ``path`` (atomically, root:group 0640) unless it says that already."""
    try:
        with open(path) as stream:
            if stream.read() == content:
                return False
    except (IOError, OSError):
        pass
    temporary = path + ".hearth-tmp"
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(handle, "w") as stream:
        stream.write(content)
    os.chown(temporary, 0, group_id(group))
    os.chmod(temporary, 0o640)
    os.rename(temporary, path)
    return True


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            content=dict(type="str", required=True),
            digest=dict(type="str", required=True),
            group=dict(type="str", required=True),
            container=dict(type="str", required=True),
            health_url=dict(type="str", required=True),
            retries=dict(type="int", default=30),
            idle=dict(type="dict"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if module.check_mode:
        try:
            with open(params["path"]) as stream:
                same = stream.read() == params["content"]
        except (IOError, OSError):
            same = False
        module.exit_json(changed=not same, written=False)
    try:
        written = write(params["path"], params["content"], params["group"])
    except (IOError, OSError, KeyError) as exc:
        module.fail_json(msg="writing %s: %s" % (params["path"], exc))
    if written:
        done = subprocess.run(
            ["docker", "kill", "--signal", "HUP", params["container"]],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            module.fail_json(
                msg="reloading %s: %s" % (params["container"], (done.stderr or done.stdout).strip())
            )
    seen = ""
    for _ in range(max(1, params["retries"] * 4)):
        _, text = fetch(params["health_url"])
        seen = routing_in_force(text)
        if seen == params["digest"]:
            break
        time.sleep(0.25)
    else:
        module.fail_json(
            msg="the front door at %s did not take the new routing in force (it shows %s, "
            "expected %s): check `docker logs %s`"
            % (params["health_url"], seen or "nothing", params["digest"], params["container"]),
            written=written,
        )
    result = dict(changed=written, written=written)
    idle = params["idle"]
    if idle:
        deadline = time.monotonic() + int(idle.get("timeout") or 600)
        backends = [str(b) for b in idle.get("backends") or []]
        model = str(idle.get("model") or "")
        while True:
            status, text = fetch(str(idle["metrics_url"]))
            busy = in_flight(text, model, backends) if status == 200 else -1
            if busy == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        result["in_flight"] = busy
        if busy:
            module.fail_json(
                msg="%s still had %s request(s) in flight on %s after %s s (-1: its metrics did "
                "not answer)"
                % (params["container"], busy, ", ".join(backends), idle.get("timeout")),
                **result,
            )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
