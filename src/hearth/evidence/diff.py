"""What changed between two audit reports of one inventory, per host: checks that started or
stopped failing, observed values that moved, hosts whose identity changed."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hearth.errors import InvalidInputError

__all__ = ["HostChanges", "ReportDiff", "diff"]

_BAD = ("failed", "error")


@dataclass
class HostChanges:
    started_failing: list[str] = field(default_factory=list)  # "role/check: message"
    stopped_failing: list[str] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)  # "role/check: name: before → after"
    other: list[str] = field(default_factory=list)  # identity, reachability, checks added/gone

    def empty(self) -> bool:
        return not (self.started_failing or self.stopped_failing or self.moved or self.other)

    def as_dict(self) -> dict[str, list[str]]:
        return {
            "started_failing": self.started_failing,
            "stopped_failing": self.stopped_failing,
            "values_moved": self.moved,
            "other": self.other,
        }


@dataclass
class ReportDiff:
    before: str  # report ids
    after: str
    inventory: str
    declared_changed: bool
    hosts: dict[str, HostChanges]

    def as_dict(self) -> dict[str, Any]:
        return {
            "before": self.before,
            "after": self.after,
            "inventory": self.inventory,
            "declared_state_changed": self.declared_changed,
            "hosts": {h: c.as_dict() for h, c in self.hosts.items() if not c.empty()},
        }

    def lines(self) -> list[str]:
        out = [f"audit {self.before} → {self.after} ({self.inventory})"]
        if self.declared_changed:
            out.append("the declared state changed between the two audits (inventory edited)")
        changed = {h: c for h, c in self.hosts.items() if not c.empty()}
        if not changed:
            out.append("no change: same verdicts and the same observed values on every host")
        for host, c in changed.items():
            out.append(f"{host}:")
            out += [f"  started failing: {x}" for x in c.started_failing]
            out += [f"  stopped failing: {x}" for x in c.stopped_failing]
            out += [f"  value moved: {x}" for x in c.moved]
            out += [f"  {x}" for x in c.other]
        return out


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _checks(entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{c['role']}/{c['check']}": c for c in entry.get("checks") or []}


def diff(before: dict[str, Any], after: dict[str, Any]) -> ReportDiff:
    """``before`` and ``after``: two loaded reports (:func:`hearth.evidence.store.load`) of the
    same inventory; two inventories are refused (exit 2) naming both."""
    inv_a = before["header"].get("inventory", {}).get("path", "")
    inv_b = after["header"].get("inventory", {}).get("path", "")
    if inv_a != inv_b:
        raise InvalidInputError(
            f"the two reports audit different inventories ({inv_a or 'unknown'} and "
            f"{inv_b or 'unknown'}): a diff compares one inventory's audits over time"
        )
    hosts: dict[str, HostChanges] = {}
    for host in sorted(set(before["hosts"]) | set(after["hosts"])):
        c = hosts[host] = HostChanges()
        a, b = before["hosts"].get(host), after["hosts"].get(host)
        if a is None or b is None:
            c.other.append("host added to the audit" if a is None else "host no longer audited")
            continue
        ida, idb = a.get("identity") or {}, b.get("identity") or {}
        for key, label in (("machine_id", "machine-id"), ("ssh_host_key", "SSH host key")):
            if ida.get(key) and idb.get(key) and ida[key] != idb[key]:
                c.other.append(f"identity changed: {label} {ida[key]} → {idb[key]}")
        if bool(a.get("unreachable")) != bool(b.get("unreachable")):
            c.other.append(
                f"became unreachable: {b['unreachable']}" if b.get("unreachable")
                else "reachable again"
            )  # fmt: skip
        ca, cb = _checks(a), _checks(b)
        for name in sorted(set(ca) | set(cb)):
            x, y = ca.get(name), cb.get(name)
            was = x["outcome"] if x else "not run"
            now = y["outcome"] if y else "not run"
            if now in _BAD and was not in _BAD and y is not None:
                c.started_failing.append(f"{name} ({was} → {now}): {y.get('message', '')}")
            elif was in _BAD and now not in _BAD and x is not None:
                c.stopped_failing.append(f"{name} ({was} → {now})")
            if x is None or y is None:
                continue
            va = {o["name"]: o for o in x.get("observed") or []}
            vb = {o["name"]: o for o in y.get("observed") or []}
            for key in sorted(set(va) | set(vb)):
                before_v = _text(va[key]["value"]) if key in va else "not observed"
                after_v = _text(vb[key]["value"]) if key in vb else "not observed"
                if before_v != after_v:
                    declared = vb.get(key, va.get(key, {})).get("declared")
                    tail = f" (declared {_text(declared)})" if declared is not None else ""
                    c.moved.append(f"{name}: {key}: {before_v} → {after_v}{tail}")
    a_sha = before["header"].get("inventory", {}).get("declared_sha256")
    b_sha = after["header"].get("inventory", {}).get("declared_sha256")
    return ReportDiff(
        before=str(before["header"].get("id", "?")),
        after=str(after["header"].get("id", "?")),
        inventory=inv_b,
        declared_changed=bool(a_sha and b_sha and a_sha != b_sha),
        hosts=hosts,
    )
