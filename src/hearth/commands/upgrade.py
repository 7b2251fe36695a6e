"""``hearth upgrade``: rolling driver / CUDA / kernel / held-package upgrades (docs/operations.md).

The control node's part, before and after ``playbooks/upgrade.yml``:

- which hosts, in which batches (as Ansible's ``serial`` cuts them), and the refusal of a batch
  that would drain every replica of a model (exit 2 before any host changes, unless downtime is
  allowed);
- each host's state file (``/var/lib/hearth/upgrade.json``, written by the playbook step by step,
  so a second run resumes where the first stopped), read back over SSH, and the summary of where
  each host was left;
- hosts kept out of every upgrade (``upgrade_skip: true``, as the GPU Operator's skip label), and
  the state as metrics (node_exporter's textfile collector) for the ``HostUpgradeStopped`` alert.
"""

from __future__ import annotations

import datetime as dt
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
    "render_metrics",
    "serving_models",
    "skipped_hosts",
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


def skipped_hosts(inventory: Any, hosts: Sequence[str]) -> list[str]:
    """The ``hosts`` the inventory keeps out of every upgrade (``upgrade_skip: true``): the
    playbook leaves them as they are (roles/upgrade's preflight asks the same setting), they keep
    serving, and the batches are cut from the others."""
    return [h for h in hosts if _true(inventory.hostvars(h).get("upgrade_skip", False))]


def _true(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("true", "yes", "on", "1")


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


def _epoch(value: Any) -> float | None:
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def render_metrics(state: Mapping[str, Any], now: float) -> str:
    """The host's upgrade state (its state file's data) for node_exporter's textfile collector:
    the step reached, whether a window is open, whether it stopped at a failed step (the
    ``HostUpgradeStopped`` alert), and when it started, changed and finished (unix time)."""
    step = str(state.get("step") or "not started")
    stopped = bool(state.get("message")) and step != "done"
    lines = [
        "# HELP hearth_upgrade_step_info The step the host's `hearth upgrade` window reached.",
        "# TYPE hearth_upgrade_step_info gauge",
        f"hearth_upgrade_step_info{{step={json.dumps(step)}}} 1",
        "# HELP hearth_upgrade_in_progress 1 while the host's upgrade window is open.",
        "# TYPE hearth_upgrade_in_progress gauge",
        f"hearth_upgrade_in_progress {int(step not in ('done', 'not started'))}",
        "# HELP hearth_upgrade_stopped 1 when the window stopped at a failed step (the host is "
        "left where it stopped; `hearth upgrade` again resumes).",
        "# TYPE hearth_upgrade_stopped gauge",
        f"hearth_upgrade_stopped {int(stopped)}",
        "# HELP hearth_upgrade_step_timestamp_seconds Unix time the step was reached.",
        "# TYPE hearth_upgrade_step_timestamp_seconds gauge",
        f"hearth_upgrade_step_timestamp_seconds {now:.0f}",
    ]
    for key in ("started", "finished"):
        at = _epoch(state.get(key)) if state.get(key) else None
        if at is not None:
            lines += [
                f"# HELP hearth_upgrade_{key}_timestamp_seconds Unix time the window {key}.",
                f"# TYPE hearth_upgrade_{key}_timestamp_seconds gauge",
                f"hearth_upgrade_{key}_timestamp_seconds {at:.0f}",
            ]
    return "\n".join(lines) + "\n"


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


def reboot_plan(
    mode: str,
    *,
    driver_pending: bool = False,
    reboot_required: bool = False,
    already_rebooted: bool = False,
    reboot_enabled: bool = True,
    connection: str = "ssh",
    is_control_node: bool = False,
) -> dict[str, Any]:
    """``{action: reboot|none|refuse, reasons, message}`` for one host's window.

    ``mode`` (``upgrade_reboot``): ``auto`` reboots when the installed driver waits for one
    (the driver role's ``nvidia_driver_reboot_pending``) or the OS asks for one
    (``/run/reboot-required``, a new kernel); ``always`` reboots every host in its window;
    ``never`` reboots none. The driver role's policy holds too: never over a local connection,
    never the control node, never with ``nvidia_driver_reboot: false``. A reboot that is needed
    and not allowed is refused (the host stays drained, the message says why). A host whose
    window already rebooted it (a resumed run) is not rebooted again."""
    if mode not in ("auto", "always", "never"):
        raise InvalidInputError(f"upgrade_reboot: expected auto, always or never, got {mode!r}")
    reasons = []
    if driver_pending:
        reasons.append("the installed NVIDIA driver is not the loaded one")
    if reboot_required:
        reasons.append("the OS asks for a reboot (/run/reboot-required: a new kernel or library)")
    if mode == "always":
        reasons.append("upgrade_reboot is always")
    if already_rebooted and mode != "always":
        reasons = []
    elif already_rebooted:
        return {"action": "none", "reasons": [], "message": "rebooted already in this window"}
    if not reasons:
        return {"action": "none", "reasons": [], "message": "no reboot needed"}
    blockers = []
    if mode == "never":
        blockers.append("upgrade_reboot is never")
    if not reboot_enabled:
        blockers.append("nvidia_driver_reboot is false")
    if connection in ("local", "ansible.builtin.local"):
        blockers.append("the connection is local (Hearth never reboots the machine it runs on)")
    elif is_control_node:
        blockers.append("this host is the control node (same machine-id)")
    if blockers:
        return {
            "action": "refuse",
            "reasons": reasons,
            "message": (
                f"REBOOT NEEDED but not done: {'; '.join(reasons)}; not rebooting because "
                f"{'; '.join(blockers)}. The host stays drained: reboot it in a maintenance "
                "window, then run `hearth upgrade` again"
            ),
        }
    return {"action": "reboot", "reasons": reasons, "message": "rebooting: " + "; ".join(reasons)}


def held_problems(dpkg_lines: Sequence[str], pins: Mapping[str, Any]) -> list[str]:
    """What is wrong with the held pins (``common_held_packages``), from ``dpkg-query -W -f
    '${Package} ${Version} ${db:Status-Want}'`` lines: not installed, another version, not
    held. [] when every pin runs and is held."""
    found = {}
    for line in dpkg_lines:
        parts = line.split()
        if len(parts) >= 3:
            found[parts[0]] = (parts[1], parts[2])
    problems = []
    for name, version in sorted(pins.items()):
        if name not in found:
            problems.append(f"{name}: not installed (pinned {version})")
            continue
        have, want = found[name]
        if have != str(version):
            problems.append(f"{name}: {have} installed, pinned {version}")
        if want != "hold":
            problems.append(f"{name}: not held ({want})")
    return problems
