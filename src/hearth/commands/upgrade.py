"""``hearth upgrade``: rolling driver / CUDA / kernel / held-package upgrades (docs/operations.md).

The control node's part, before and after ``playbooks/upgrade.yml``:

- which hosts, in which batches (as Ansible's ``serial`` cuts them), and the refusal of a batch
  that would drain every replica of a model (exit 2 before any host changes, unless downtime is
  allowed);
- each host's state file (``/var/lib/hearth/upgrade.json``, written by the playbook step by step,
  so a second run resumes where the first stopped), read back over SSH, and the summary of where
  each host was left.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hearth.errors import InvalidInputError

__all__ = [
    "STATE_FILE",
    "STEPS",
    "HostState",
    "batches",
    "drain_problems",
    "read_states",
    "serving_models",
    "upgrade_hosts",
]

STATE_FILE = "/var/lib/hearth/upgrade.json"
# The steps of one host's window, in order; the state file names the last one reached.
STEPS: tuple[str, ...] = (
    "started",
    "drained",
    "silenced",
    "canary paused",
    "engines stopped",
    "packages upgraded",
    "dkms checked",
    "rebooted",
    "verified",
    "undrained",
    "silence expired",
    "done",
)
GROUPS = "gpu_nodes:inference"


def upgrade_hosts(inventory: Any, limit: str | None) -> list[str]:
    """The hosts the upgrade play runs on (the GPU and inference hosts, within ``--limit``), in
    the inventory's order; exit 2 when none is selected."""
    hosts = list(inventory.match(GROUPS))
    if limit:
        chosen = set(inventory.match(limit))
        if not chosen:
            raise InvalidInputError(
                f"--limit {limit!r} matches no host of {inventory.path} (hosts: "
                f"{', '.join(inventory.hosts) or 'none'}); nothing was changed"
            )
        hosts = [h for h in hosts if h in chosen]
    if not hosts:
        raise InvalidInputError(
            f"{inventory.path}: no host of the gpu_nodes or inference groups"
            + (f" within --limit {limit!r}" if limit else "")
            + " to upgrade; nothing was changed"
        )
    return hosts


def batches(hosts: Sequence[str], batch: int | str) -> list[list[str]]:
    """``hosts`` cut as Ansible's ``serial: N`` or ``"P%"`` cuts a play's hosts (a percentage
    rounds down, at least one host)."""
    if isinstance(batch, str) and batch.endswith("%"):
        size = max(1, math.floor(len(hosts) * int(batch[:-1]) / 100))
    else:
        size = max(1, int(batch))
    return [list(hosts[i : i + size]) for i in range(0, len(hosts), size)]


def serving_models(inventory: Any) -> dict[str, list[str]]:
    """{model: the inference hosts that declare it} over the whole inventory (hosts outside
    ``--limit`` keep serving during the upgrade, so they count as replicas)."""
    found: dict[str, list[str]] = {}
    for host in inventory.match("inference"):
        for entry in inventory.hostvars(host).get("hearth_models") or []:
            if isinstance(entry, Mapping) and entry.get("name"):
                found.setdefault(str(entry["name"]), []).append(host)
    return found


def drain_problems(serving: Mapping[str, Sequence[str]], cut: Sequence[Sequence[str]]) -> list[str]:
    """The batches that would drain every host serving a model, in words (one line each)."""
    problems = []
    for group in cut:
        for model, hosts in sorted(serving.items()):
            if hosts and set(hosts) <= set(group):
                where = ", ".join(hosts)
                problems.append(
                    f"model {model}: draining {where} (batch {', '.join(group)}) leaves it with "
                    "no serving backend"
                )
    return problems


@dataclass
class HostState:
    """Where one host's upgrade stands (its state file), or why it could not be read."""

    host: str
    state: dict[str, Any] | None = None
    error: str = ""

    @property
    def step(self) -> str:
        return str((self.state or {}).get("step") or "not started")

    def line(self) -> str:
        if self.error:
            return f"{self.host}: state unreadable ({self.error})"
        if self.state is None:
            return f"{self.host}: not started (serving, untouched)"
        s = self.state
        when = (
            f"finished {s['finished']}" if s.get("finished") else f"started {s.get('started', '?')}"
        )
        text = f"{self.host}: {self.step} ({when})"
        if self.step != "done":
            reached = STEPS.index(self.step) if self.step in STEPS else 1
            drained = STEPS.index("drained") <= reached < STEPS.index("undrained")
            if drained:
                text += "; DRAINED at the front door"
            if s.get("silence_id") and self.step != "silence expired":
                ends = s.get("silence_ends", "?")
                text += f"; alerts silenced (silence {s['silence_id']}, expires {ends})"
            if s.get("message"):
                text += f"; {s['message']}"
            text += "; `hearth upgrade` again resumes here"
        return text


_READ = f"cat {STATE_FILE} 2>/dev/null || true"


def read_states(inventory: Any, hosts: Sequence[str]) -> list[HostState]:
    """Each host's state file, read over the fleet's SSH connections (read-only)."""
    from hearth.fleet import connect, execute

    conns = [connect.host_connection(h, inventory.resolved_vars(h, []), become=True) for h in hosts]
    result = execute.run_command(conns, _READ, become=True)
    states = []
    for output in result.outputs:
        state = HostState(output.host)
        if output.status != "ok":
            state.error = output.reason or output.stderr.strip()[-300:] or output.status
        elif output.stdout.strip():
            try:
                state.state = dict(json.loads(output.stdout))
            except ValueError:
                state.error = f"{STATE_FILE} is not JSON: {output.stdout[:120]!r}"
        states.append(state)
    order = {h: i for i, h in enumerate(hosts)}
    return sorted(states, key=lambda s: order.get(s.host, 0))
