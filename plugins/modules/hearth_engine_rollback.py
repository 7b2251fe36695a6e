#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Hearth contributors
# Apache-2.0

from __future__ import absolute_import, division, print_function

import http.client
import json
import os
import re
import socket
import time
import urllib.error
import urllib.request

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: hearth_engine_rollback
short_description: The host's steps of a fast model rollback, one round trip each
description:
  - The engine side of C(hearth models rollback)'s fast path (playbooks/rollback.yml), run on the
    inference host in three steps so that a rollback costs a few round trips per host whatever
    the model's size; the front door's switches between them are C(hearth_routing) tasks.
  - O(step=start) checks that the version's kept engine (O(kept)) and the live engine (O(live))
    exist with the same image (else it fails with C(fast=true) and a C(HEARTH-FAST) message,
    having changed nothing), then starts a copy of the kept engine in the candidate slot
    (O(candidate) - the kept container's own configuration, its published ports moved by
    O(port_offset), the label C(io.hearth.slot=candidate)) and gates it in order - its health
    check (O(health_url), polled every O(poll) seconds for O(health_timeout) seconds, failing as
    soon as the container stops), its warm-up (O(warmup)), then its golden questions when
    O(golden) is given (the canary's program, O(gate_program), with C(--gate)). A failed gate
    fails the task with C(gate) set and the candidate left for the caller's refusal (its logs,
    its removal and the changelog line - inference_engine's refuse.yml).
  - O(step=live) stops the live engine (C(docker stop --time) O(stop_timeout)) and keeps it as
    O(keep_as) (an older kept container under that name goes), renames the version's kept engine
    into the live slot, starts it (its id kept) and waits for its health check (O(health_url)).
  - O(step=finish) removes the candidate, appends O(changelog_line) to O(changelog), removes
    the kept engines of O(model) whose version directory the model store no longer keeps under
    O(store_dir) (with O(prune)), and writes the live record O(record) to O(record_path).
  - Check mode is supported - O(step=start) runs its checks and changes nothing; the other steps
    report what they would change.
version_added: "0.1.0"
author:
  - Hearth contributors
options:
  step:
    description: C(start), C(live) or C(finish).
    type: str
    required: true
    choices: [start, live, finish]
  model:
    description: The model rolled back.
    type: str
    required: true
  live:
    description: The live slot's container name (C(hearth-engine-MODEL)).
    type: str
    required: true
  kept:
    description: The name the version's engine is kept under (start, live).
    type: str
  candidate:
    description: The candidate slot's container name (start, finish).
    type: str
  port_offset:
    description: How far the candidate's published host ports are from the live slot's (start).
    type: int
    default: 5
  health_url:
    description: The health check of the engine gated (start the candidate's, live the live slot's).
    type: str
  health_timeout:
    description: Seconds the health check may take.
    type: int
    default: 900
  poll:
    description: Seconds between two health checks.
    type: float
    default: 0.25
  warmup:
    description: The warm-up request (C(url), C(method), C(body)); none to skip it (start).
    type: dict
  warmup_timeout:
    description: Seconds the warm-up may take.
    type: int
    default: 300
  golden:
    description: The golden-question gate's configuration (as the canary reads it); none to skip.
    type: dict
  gate_program:
    description: The canary's program, run with C(--gate --config FILE) (start, with O(golden)).
    type: path
    default: /usr/local/lib/hearth/hearth_canary.py
  gate_config:
    description: Where the golden-question gate's configuration is written (root's, 0600).
    type: path
  keep_as:
    description: The name the live engine is kept under (live).
    type: str
  stop_timeout:
    description: Seconds the live engine has to stop (live).
    type: int
    default: 60
  changelog:
    description: The model changelog (finish).
    type: path
  changelog_line:
    description: The line appended to it (finish; JSON).
    type: str
  store_dir:
    description: The model store's directory of O(model) (finish, with O(prune)).
    type: path
  prune:
    description: Remove the kept engines whose version the model store no longer keeps (finish).
    type: bool
    default: false
  record_path:
    description: The live record of the engine (finish).
    type: path
  record:
    description: What the live record says (finish).
    type: dict
  socket:
    description: Docker's API socket (the candidate is created through it).
    type: path
    default: /var/run/docker.sock
"""

EXAMPLES = r"""
- name: Start and gate v1 beside the live engine
  hearth_engine_rollback:
    step: start
    model: smollm2
    live: hearth-engine-smollm2
    kept: hearth-engine-smollm2--v1
    candidate: hearth-engine-smollm2--next
    health_url: http://127.0.0.1:8085/health
    warmup: {url: "http://127.0.0.1:8085/v1/chat/completions", method: POST, body: {}}
"""

RETURN = r"""
from:
  description: The version the live engine serves (its label C(io.hearth.version)) (start).
  type: str
  returned: when step is start
image:
  description: The image of the live and the kept engine (start).
  type: str
  returned: when step is start
fast:
  description: True when the fast path is refused on this host (nothing was changed) (start).
  type: bool
  returned: when step is start and it fails before a change
gate:
  description: The gate that refused the candidate (health, warm-up or golden questions).
  type: str
  returned: when a gate fails
golden:
  description: The golden-question program's output (JSON).
  type: str
  returned: when step is start and golden questions were asked
container_id:
  description: The id of the engine now in the live slot (live).
  type: str
  returned: when step is live
started_at:
  description: When the live slot's engine was started (epoch seconds) (live).
  type: float
  returned: when step is live
healthy_seconds:
  description: Seconds from the start of the engine gated to its healthy check.
  type: float
  returned: when step is start or live
removed:
  description: The kept engines removed (finish).
  type: list
  elements: str
  returned: when step is finish
"""

SLOT_LABEL = "io.hearth.slot"
MODEL_LABEL = "io.hearth.model"
VERSION_LABEL = "io.hearth.version"
KEPT_SEPARATOR = "--"


class Refusal(Exception):
    """A gate refused the engine (``gate`` names it)."""

    def __init__(self, gate, message, **extra):
        Exception.__init__(self, message)
        self.gate = gate
        self.extra = extra


def kept_name(live, version):
    """The name ``live``'s engine of ``version`` is kept under (hearth.engines.kept_container_name:
    a unit test holds the two to the same rule)."""
    return live + KEPT_SEPARATOR + re.sub(r"[^A-Za-z0-9_.-]", "_", version)


def fast_problem(engines, kept, live):
    """Why the fast path cannot start here (None when it can): ``engines`` is what ``docker
    inspect`` printed of the kept and the live engine, by name."""
    if kept not in engines:
        version = kept.rsplit(KEPT_SEPARATOR, 1)[-1]
        return "no kept engine of %s" % version
    if live not in engines:
        return "no live engine"
    if engines[kept].get("Image") != engines[live].get("Image"):
        return (
            "the kept engine of %s has another image than the live one"
            % (kept.rsplit(KEPT_SEPARATOR, 1)[-1])
        )
    return None


def moved_port(binding, offset):
    """A port binding of Docker's (``{"HostIp", "HostPort"}``) moved by ``offset``."""
    moved = dict(binding)
    if str(binding.get("HostPort") or "").isdigit():
        moved["HostPort"] = str(int(binding["HostPort"]) + offset)
    return moved


def candidate_body(inspected, offset):
    """The body of Docker's ``POST /containers/create`` for a copy of the container ``inspected``
    (``docker inspect``'s object) in the candidate slot: the same image, command, environment,
    mounts and limits, its published host ports moved by ``offset``, labelled the candidate."""
    config = dict(inspected["Config"])
    for own in ("Hostname", "Domainname"):
        config.pop(own, None)
    config["Labels"] = dict(config.get("Labels") or {}, **{SLOT_LABEL: "candidate"})
    host = dict(inspected["HostConfig"])
    host["PortBindings"] = {
        port: [moved_port(b, offset) for b in (bindings or [])]
        for port, bindings in (host.get("PortBindings") or {}).items()
    }
    # no restart of the candidate on its own: it lives for the minutes of the rollback
    host["RestartPolicy"] = {"Name": "no", "MaximumRetryCount": 0}
    config["HostConfig"] = host
    return config


def kept_to_prune(names, live, candidate, model_versions):
    """The kept engines (``names``: containers of the model) whose version the store no longer
    keeps (``model_versions``: its version directories)."""
    keep = set(kept_name(live, v) for v in model_versions)
    prefix = live + KEPT_SEPARATOR
    return sorted(n for n in names if n.startswith(prefix) and n != candidate and n not in keep)


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over Docker's unix socket."""

    def __init__(self, path, timeout=60):
        http.client.HTTPConnection.__init__(self, "localhost", timeout=timeout)
        self.socket_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


class Host(object):
    """What the steps do on the host: the docker CLI, Docker's API, HTTP on loopback."""

    def __init__(self, module):
        self.module = module

    def docker(self, *args, **kw):
        rc, out, err = self.module.run_command(["docker", *args])
        if rc != 0 and kw.get("check", True):
            raise RuntimeError("docker %s: %s" % (" ".join(args), (err or out).strip()))
        return rc, out

    def inspect(self, *names):
        """{name: docker inspect object} of those of ``names`` that exist."""
        _, out = self.docker("inspect", *names, check=False)
        try:
            found = json.loads(out) if out.strip().startswith("[") else []
        except ValueError:
            found = []
        return dict((str(c.get("Name", "")).lstrip("/"), c) for c in found)

    def create(self, name, body):
        connection = UnixHTTPConnection(self.module.params["socket"])
        try:
            connection.request(
                "POST",
                "/containers/create?name=%s" % name,
                body=json.dumps(body),
                headers={"Content-Type": "application/json"},
            )
            answer = connection.getresponse()
            text = answer.read().decode("utf-8", "replace")
        finally:
            connection.close()
        if answer.status != 201:
            raise RuntimeError("creating %s: Docker said %s %s" % (name, answer.status, text))
        return json.loads(text)["Id"]

    def running(self, name):
        rc, out = self.docker("inspect", "--format", "{{.State.Running}}", name, check=False)
        return rc == 0 and out.strip() == "true"

    def http(self, url, method="GET", body=None, timeout=5):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - loopback
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
                answer.read()
                return answer.status, ""
        except urllib.error.HTTPError as exc:
            return exc.code, str(exc)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            return 0, str(getattr(exc, "reason", exc))


def wait_healthy(host, name, url, timeout, poll):
    """Poll ``url`` until it answers 200; fails at ``timeout`` or as soon as ``name`` stops."""
    began = time.monotonic()
    last = ""
    rounds = 0
    while True:
        status, last = host.http(url)
        if status == 200:
            return round(time.monotonic() - began, 2)
        last = "HTTP %s" % status if status else last
        rounds += 1
        if rounds % 4 == 0 and not host.running(name):
            raise Refusal("health", "%s stopped before its health check passed (%s)" % (name, last))
        if time.monotonic() - began > timeout:
            raise Refusal(
                "health",
                "%s did not pass its health check %s in %s s (%s)" % (name, url, timeout, last),
            )
        time.sleep(poll)


def gate(host, params, name):
    """The candidate's gates after its health check: the warm-up, then the golden questions."""
    result = {}
    warmup = params["warmup"]
    if warmup:
        status, detail = host.http(
            warmup["url"], warmup.get("method") or "POST", warmup.get("body"),
            timeout=params["warmup_timeout"],
        )  # fmt: skip
        if status != 200:
            raise Refusal("warm-up", "the warm-up of %s answered %s %s" % (name, status, detail))
    if params["golden"]:
        path = params["gate_config"] or "/run/hearth-gate-%s.json" % params["model"]
        handle = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(handle, "w") as stream:
            json.dump(params["golden"], stream, indent=4, sort_keys=True)
        os.rename(path + ".tmp", path)
        rc, out, err = host.module.run_command(
            ["/usr/bin/python3", params["gate_program"], "--gate", "--config", path]
        )
        result["golden"] = out
        if rc != 0:
            raise Refusal(
                "golden questions",
                "the golden questions failed on %s: %s" % (name, (err or out)[-600:]),
                golden=out,
            )
    return result


def start(host, params, check_mode):
    live, kept, candidate = params["live"], params["kept"], params["candidate"]
    engines = host.inspect(kept, live)
    problem = fast_problem(engines, kept, live)
    if problem:
        return dict(failed=True, fast=True, changed=False, msg=problem)
    result = dict(
        changed=True,
        image=engines[live].get("Image"),
        **{"from": (engines[live]["Config"].get("Labels") or {}).get(VERSION_LABEL, "unknown")},
    )
    if check_mode:
        return result
    host.docker("rm", "-f", candidate, check=False)  # one an interrupted rollback left
    began = time.monotonic()
    host.create(candidate, candidate_body(engines[kept], params["port_offset"]))
    host.docker("start", candidate)
    try:
        wait_healthy(
            host, candidate, params["health_url"], params["health_timeout"], params["poll"]
        )
        result["healthy_seconds"] = round(time.monotonic() - began, 2)
        result.update(gate(host, params, candidate))
    except Refusal as refusal:
        result.update(refusal.extra)
        result.update(failed=True, gate=refusal.gate, msg=str(refusal))
    return result


def live_step(host, params, check_mode):
    live, kept, keep_as = params["live"], params["kept"], params["keep_as"]
    if check_mode:
        return dict(changed=True)
    host.docker("stop", "--time", str(params["stop_timeout"]), live)
    host.docker("rm", "-f", keep_as, check=False)
    host.docker("rename", live, keep_as)
    host.docker("rename", kept, live)
    started_at = time.time()
    host.docker("start", live)
    try:
        healthy = wait_healthy(
            host, live, params["health_url"], params["health_timeout"], params["poll"]
        )
    except Refusal as refusal:
        return dict(changed=True, failed=True, gate="health", msg=str(refusal))
    _, ident = host.docker("inspect", "--format", "{{.Id}}", live)
    return dict(
        changed=True, container_id=ident.strip(), started_at=started_at, healthy_seconds=healthy
    )


def append_line(path, line):
    """``line`` at the end of ``path`` (created 0640) unless it is there; True when appended."""
    try:
        with open(path) as stream:
            if line in stream.read().splitlines():
                return False
    except (IOError, OSError):
        pass
    handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    with os.fdopen(handle, "a") as stream:
        stream.write(line + "\n")
    return True


def write_file(path, content, mode=0o644):
    """``content`` in ``path`` (atomically) unless it is there; True when written."""
    try:
        with open(path) as stream:
            if stream.read() == content:
                return False
    except (IOError, OSError):
        pass
    handle = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(handle, "w") as stream:
        stream.write(content)
    os.chmod(path + ".tmp", mode)
    os.rename(path + ".tmp", path)
    return True


def finish(host, params, check_mode):
    result = dict(changed=False, removed=[])
    candidate = params["candidate"]
    if host.inspect(candidate):
        result["changed"] = True
        if not check_mode:
            host.docker("rm", "-f", candidate)
    if params["changelog"] and params["changelog_line"]:
        result["changed"] = True
        if not check_mode:
            append_line(params["changelog"], params["changelog_line"])
    if params["prune"] and params["store_dir"]:
        _, out = host.docker(
            "ps", "-a", "--filter", "label=%s=%s" % (MODEL_LABEL, params["model"]),
            "--format", "{{.Names}}",
        )  # fmt: skip
        versions = [
            e for e in os.listdir(params["store_dir"])
            if os.path.isdir(os.path.join(params["store_dir"], e))
        ] if os.path.isdir(params["store_dir"]) else []  # fmt: skip
        gone = kept_to_prune(out.split(), params["live"], candidate, versions)
        for name in gone:
            if not check_mode:
                host.docker("rm", "-f", name)
        result["removed"] = gone
        result["changed"] = result["changed"] or bool(gone)
    if params["record_path"] and params["record"] is not None:
        content = json.dumps(params["record"], indent=4, sort_keys=True) + "\n"
        if check_mode or write_file(params["record_path"], content):
            result["changed"] = True
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            step=dict(type="str", required=True, choices=["start", "live", "finish"]),
            model=dict(type="str", required=True),
            live=dict(type="str", required=True),
            kept=dict(type="str"),
            candidate=dict(type="str"),
            port_offset=dict(type="int", default=5),
            health_url=dict(type="str"),
            health_timeout=dict(type="int", default=900),
            poll=dict(type="float", default=0.25),
            warmup=dict(type="dict"),
            warmup_timeout=dict(type="int", default=300),
            golden=dict(type="dict"),
            gate_program=dict(type="path", default="/usr/local/lib/hearth/hearth_canary.py"),
            gate_config=dict(type="path"),
            keep_as=dict(type="str"),
            stop_timeout=dict(type="int", default=60),
            changelog=dict(type="path"),
            changelog_line=dict(type="str"),
            store_dir=dict(type="path"),
            prune=dict(type="bool", default=False),
            record_path=dict(type="path"),
            record=dict(type="dict"),
            socket=dict(type="path", default="/var/run/docker.sock"),
        ),
        required_if=[
            ("step", "start", ("kept", "candidate", "health_url")),
            ("step", "live", ("kept", "keep_as", "health_url")),
            ("step", "finish", ("candidate",)),
        ],
        supports_check_mode=True,
    )
    host = Host(module)
    step = {"start": start, "live": live_step, "finish": finish}[module.params["step"]]
    try:
        result = step(host, module.params, module.check_mode)
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        module.fail_json(
            msg="%s of the rollback of %s: %s"
            % (module.params["step"], module.params["model"], exc)
        )
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
