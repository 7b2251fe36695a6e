# -*- coding: utf-8 -*-
# Hearth: change a front door's routing.json in one step (read, work out, write, reload, confirm).
from __future__ import annotations

DOCUMENTATION = r"""
module: hearth_routing
short_description: Move or drain engines in a front door's routing.json, reloaded in place
description:
  - Runs against the front door host (delegate it there). In one task it reads the routing in
    force, works out the new one on the control node (C(hearth.engines.swap_backend) for a
    rollout's switch between an engine's live and candidate slots, C(hearth.engines.drain_host)
    to drain hosts or put them back), writes it when it changed, reloads the front door in place
    (C(SIGHUP)) and waits until its C(/health) shows the new file's sha256 in force: the write,
    the reload and the wait are one run of C(hearth_routing_apply) on the front door host.
  - Read, write and reload are one task so that hosts of one batch changing the same front door
    cannot lose each other's change; run it with C(throttle: 1).
  - A drain that would leave a model with no backend fails before anything is written, unless
    C(allow_downtime).
  - C(canary) adds a host's candidate engine to the model's canary (C(share) percent of the
    model's requests, C(hearth.engines.canary_backend)); C(canary_end) takes it out again
    (an abort, C(hearth.engines.end_canary)).
options:
  op:
    description: C(swap), C(drain), C(undrain), C(canary) or C(canary_end).
    type: str
    required: true
  path:
    description: routing.json on the front door host.
    type: path
    required: true
  group:
    description: The group that owns routing.json (the front door's user reads it).
    type: str
    required: true
  container:
    description: The front door's container (reloaded with SIGHUP).
    type: str
    required: true
  health_url:
    description: The front door's /health URL, as the front door host reaches it.
    type: str
    required: true
  routes:
    description: The front door's routes from the inventory (C(hearth_frontdoor_routes)).
    type: dict
    required: true
  model:
    description: The model whose engine moves (swap).
    type: str
  host:
    description: The host whose engine moves (swap).
    type: str
  from_port:
    description: The port the engine leaves (swap).
    type: int
  to_port:
    description: The port the engine goes to (swap).
    type: int
  hosts:
    description: The hosts drained or put back (drain, undrain).
    type: list
    elements: str
  models:
    description: Only these models of the hosts (drain, undrain; all when empty).
    type: list
    elements: str
  reason:
    description: Why (kept in routing.json beside the override).
    type: str
  share:
    description: The canary's percentage of the model's requests (canary, 1-99).
    type: int
  version:
    description: The version the candidate serves (canary).
    type: str
  stable_version:
    description: The version the live engines serve (canary).
    type: str
  soak_end:
    description: When the canary's soak ends (canary; UTC, ISO 8601).
    type: str
  allow_downtime:
    description: Allow a drain that leaves a model with no backend.
    type: bool
    default: false
  retries:
    description: Seconds to wait for the front door to have the new routing in force.
    type: int
    default: 30
  idle_timeout:
    description:
      - With a value above 0, then wait up to this many seconds until the front door has no
        request in flight on the backend the engine left (C(from); swap, canary_end) or on the
        backends drained (drain, any model).
    type: int
    default: 0
  metrics_url:
    description: The front door's /metrics URL (default the health URL's, with /metrics).
    type: str
author: Hearth
"""

EXAMPLES = r"""
- name: Send this host's share of the model to its candidate
  hearth_routing:
    op: swap
    path: /etc/hearth/frontdoor/routing.json
    group: "10003"
    container: hearth-frontdoor
    health_url: http://127.0.0.1:8090/health
    routes: "{{ groups['inference'] | hearth_frontdoor_routes(hostvars, door) }}"
    model: smollm2
    host: "{{ inventory_hostname }}"
    from_port: 8080
    to_port: 8085
  delegate_to: "{{ door }}"
  throttle: 1
"""

RETURN = r"""
routing:
  description: The routing now in force.
  type: dict
  returned: always
sha256:
  description: The sha256 of routing.json as written (what /health shows in force).
  type: str
  returned: always
from:
  description: The base URL the engine left (swap, canary_end) or the live engine (canary).
  type: str
  returned: when op is swap, canary or canary_end
backends:
  description: The base URLs taken out or put back (drain, undrain).
  type: list
  returned: when op is drain or undrain
empty:
  description: The models a drain leaves with no backend.
  type: list
  returned: when op is drain or undrain
"""

import base64
import hashlib
import json
import sys
from pathlib import Path

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

_PLUGIN_UTILS = str(Path(__file__).resolve().parents[1] / "plugin_utils")
if _PLUGIN_UTILS not in sys.path:
    sys.path.insert(0, _PLUGIN_UTILS)
from hearth_import import import_hearth  # the one "import hearth" helper (plugin_utils/)


def _plain(value):
    """Ansible's values (2.19 data tagging) as plain JSON data."""
    return json.loads(json.dumps(value, default=str))


def idle_of(args, extra):
    """What the module then waits for (None: nothing): no request in flight on the backend the
    engine left (swap, canary_end) or on the backends drained (drain, any model). The module
    reads the front door's metrics: the one reader of them."""
    timeout = int(args.get("idle_timeout") or 0)
    if timeout <= 0:
        return None
    metrics_url = args.get("metrics_url") or (
        str(args["health_url"]).rsplit("/health", 1)[0] + "/metrics"
    )
    if extra.get("from"):
        return {"metrics_url": metrics_url, "model": str(args["model"]),
                "backends": [extra["from"]], "timeout": timeout}  # fmt: skip
    if args["op"] == "drain" and extra.get("backends"):
        return {"metrics_url": metrics_url, "backends": list(extra["backends"]),
                "timeout": timeout}  # fmt: skip
    return None


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True

    def _module(self, name, args, task_vars):
        return self._execute_module(module_name=name, module_args=args, task_vars=task_vars)

    def _work_out(self, hearth, args, current):
        routes = _plain(args["routes"])
        op = args["op"]
        if op == "swap":
            out = hearth.engines.swap_backend(
                current, routes, str(args["model"]), str(args["host"]),
                int(args["from_port"]), int(args["to_port"]), str(args.get("reason") or ""),
            )  # fmt: skip
            return out["routing"], {"from": out["from"], "to": out["to"]}
        if op in ("canary", "canary_end"):
            where = (current, routes, str(args["model"]), str(args["host"]),
                     int(args["from_port"]), int(args["to_port"]))  # fmt: skip
            if op == "canary":
                out = hearth.engines.canary_backend(
                    *where, share=int(args["share"]), version=str(args["version"]),
                    stable_version=str(args["stable_version"]),
                    soak_end=str(args.get("soak_end") or ""), reason=str(args.get("reason") or ""),
                )  # fmt: skip
            else:
                out = hearth.engines.end_canary(*where, reason=str(args.get("reason") or ""))
            return out["routing"], {"from": out["from"], "to": out["to"]}
        if op not in ("drain", "undrain"):
            raise AnsibleActionFail(
                "op: expected swap, drain, undrain, canary or canary_end, got %r" % op
            )
        routing, moved, empty = current, [], []
        for host in [str(h) for h in args.get("hosts") or []]:
            out = hearth.engines.drain_host(
                routing, routes, host, op == "drain", str(args.get("reason") or ""),
                models=[str(m) for m in args.get("models") or []],
            )  # fmt: skip
            routing = out["routing"]
            moved += out["backends"]
            empty += [m for m in out["empty"] if m not in empty]
        return routing, {"backends": moved, "empty": empty}

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super(ActionModule, self).run(tmp, task_vars)
        args = dict(self._task.args)
        for key in ("op", "path", "group", "container", "health_url", "routes"):
            if args.get(key) in (None, ""):
                raise AnsibleActionFail("hearth_routing: %s is required" % key)
        hearth = import_hearth("engines")
        read = self._module("ansible.legacy.slurp", {"src": args["path"]}, task_vars)
        before = base64.b64decode(read["content"]).decode() if "content" in read else ""
        try:
            current = json.loads(before) if before else {"models": {}}
        except ValueError:
            current = {"models": {}}
        try:
            routing, extra = self._work_out(hearth, args, current)
        except hearth.errors.HearthError as exc:
            raise AnsibleActionFail(str(exc)) from exc
        if args["op"] == "drain" and extra["empty"] and not args.get("allow_downtime"):
            raise AnsibleActionFail(
                "HEARTH-DRAIN refused at %s: draining %s leaves model(s) %s with no serving "
                "backend (the other replicas are drained already, or there are none). Nothing "
                "was changed. Run again with --allow-downtime to accept the outage, or bring "
                "another replica back first."
                % (task_vars.get("inventory_hostname"), ", ".join(args.get("hosts") or []),
                   ", ".join(extra["empty"]))
            )  # fmt: skip
        content = json.dumps(routing, indent=4, sort_keys=True) + "\n"
        digest = hashlib.sha256(content.encode()).hexdigest()
        changed = content != before
        # written, reloaded and confirmed in force in one module run on the front door host
        apply = {
            "path": args["path"], "content": content, "digest": digest,
            "group": str(args["group"]), "container": args["container"],
            "health_url": args["health_url"], "retries": int(args.get("retries") or 30),
        }  # fmt: skip
        idle = idle_of(args, extra)
        if idle:
            apply["idle"] = idle
        applied = self._module("hearth_routing_apply", apply, task_vars)
        if applied.get("failed"):
            raise AnsibleActionFail(str(applied.get("msg")))
        result.update(changed=changed, routing=routing, sha256=digest, **extra)
        return result
