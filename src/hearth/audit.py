"""Audit hosts with testinfra: each role's checks, on the hosts the playbooks give that role.

The checks live beside their role (``roles/<role>/checks/test_*.py``) and compare each host with
the declared state (the inventory over the role defaults, resolved by Ansible), so drift shows as a
failed check saying what was expected and what was found. Hosts are checked in parallel
(pytest-xdist) over SSH connections that are reused (ControlMaster), from an ssh config written
from the inventory's connection variables.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hearth import paths
from hearth.errors import AuditFailedError, InvalidInputError

OUTCOMES = ("passed", "failed", "error", "skipped", "unreachable")


@dataclass(frozen=True)
class CheckResult:
    host: str
    role: str
    check: str
    outcome: str  # one of OUTCOMES
    message: str = ""
    duration: float = 0.0


@dataclass
class AuditResult:
    results: list[CheckResult] = field(default_factory=list)
    roles: dict[str, list[str]] = field(default_factory=dict)  # host → roles audited
    unreachable: dict[str, str] = field(default_factory=dict)  # host → reason

    def count(self, outcome: str) -> int:
        return sum(1 for r in self.results if r.outcome == outcome)

    @property
    def ok(self) -> bool:
        return not self.unreachable and not any(
            r.outcome in ("failed", "error") for r in self.results
        )

    def raise_for_status(self) -> None:
        if self.ok:
            return
        bad = [r for r in self.results if r.outcome in ("failed", "error")]
        lines = [f"{r.host}: {r.role}/{r.check}: {r.message}" for r in bad[:20]]
        lines += [f"{h}: unreachable: {why}" for h, why in self.unreachable.items()]
        raise AuditFailedError(
            f"audit failed: {len(bad)} check(s) failed, {len(self.unreachable)} host(s) "
            "unreachable:\n  " + "\n  ".join(lines)
        )


def check_files(role: str) -> list[Path]:
    return sorted((paths.roles_dir() / role / "checks").glob("test_*.py"))


def _role_of(check_file: Path) -> str:
    return check_file.parent.parent.name


def _wanted_checks(checks: list[str] | None) -> dict[str, set[str]] | None:
    """``["prometheus", "common/test_sysctl"]`` → ``{"prometheus": set(), "common":
    {"test_sysctl"}}`` (an empty set: every check of the role); refuses unknown names."""
    if not checks:
        return None
    wanted: dict[str, set[str]] = {}
    for entry in checks:
        role, _, name = entry.partition("/")
        files = check_files(role)
        if not files:
            raise InvalidInputError(f"--check {entry}: no role {role!r} with checks")
        if name:
            known = {
                line.split("(", 1)[0].removeprefix("def ").strip()
                for f in files
                for line in f.read_text().splitlines()
                if line.startswith("def test_")
            }
            if name not in known:
                raise InvalidInputError(
                    f"--check {entry}: role {role} has no check {name!r} "
                    f"(it has {', '.join(sorted(known))})"
                )
            if role not in wanted or wanted[role]:
                wanted.setdefault(role, set()).add(name)
        else:
            wanted[role] = set()
    return wanted


def _ssh_options(hostvars: dict[str, Any]) -> dict[str, str]:
    """ssh_config options from Ansible's connection variables."""
    options: dict[str, str] = {
        "HostName": str(hostvars.get("ansible_host") or hostvars["inventory_hostname"]),
        "Port": str(hostvars.get("ansible_port") or 22),
        "BatchMode": "yes",
        "ConnectTimeout": "10",
        "ControlMaster": "auto",
        "ControlPersist": "120s",
        "ServerAliveInterval": "15",
    }
    if hostvars.get("ansible_user"):
        options["User"] = str(hostvars["ansible_user"])
    if hostvars.get("ansible_ssh_private_key_file"):
        options["IdentityFile"] = str(hostvars["ansible_ssh_private_key_file"])
    args: list[str] = []
    for key in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
        if hostvars.get(key):
            args += shlex.split(str(hostvars[key]))
    it = iter(args)
    for arg in it:
        value = next(it, "") if arg == "-o" else arg[2:] if arg.startswith("-o") else ""
        if "=" in value:
            name, _, val = value.partition("=")
            options[name.strip()] = val.strip()
    return options


def write_ssh_config(hosts: dict[str, dict[str, Any]], directory: Path) -> Path:
    control = Path(tempfile.gettempdir()) / "hearth-audit-cp"
    control.mkdir(mode=0o700, exist_ok=True)
    lines = []
    for host, hostvars in hosts.items():
        lines.append(f"Host {host}")
        options = _ssh_options(hostvars)
        options.setdefault("ControlPath", str(control / "%C"))
        lines += [f"    {k} {v}" for k, v in options.items()]
    config = directory / "ssh_config"
    config.write_text("\n".join(lines) + "\n")
    return config


def _probe(host: str, config: Path) -> tuple[str, str | None]:
    cmd = ["ssh", "-F", str(config), host, "true"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=40, check=False)
    except subprocess.TimeoutExpired:
        return host, "SSH timed out"
    if done.returncode == 0:
        return host, None
    lines = done.stderr.strip().splitlines()
    return host, (lines[-1] if lines else f"ssh exited {done.returncode}")


def _become(hostvars: dict[str, Any]) -> bool:
    return str(hostvars.get("ansible_user") or "root") != "root"


def run_audit(
    inventory: Any,
    limit: str | None = None,
    workers: int | None = None,
    keep_dir: Path | None = None,
    checks: list[str] | None = None,
) -> AuditResult:
    """Run every applicable role check on every host of ``inventory`` (a loaded Inventory).

    ``checks`` narrows the run to some roles (``prometheus``) or checks
    (``prometheus/test_rules_loaded``) of those roles."""
    from hearth.layers import roles_for_hosts

    roles_by_host = roles_for_hosts(inventory)
    wanted = _wanted_checks(checks)
    selected = list(roles_by_host)
    if limit:
        matched = {h.name for h in inventory.ansible_inventory().get_hosts(limit)}
        if not matched:
            raise InvalidInputError(f"--limit {limit!r} matches no host in {inventory.path}")
        selected = [h for h in selected if h in matched]
    result = AuditResult(roles={h: roles_by_host[h] for h in selected})
    if not selected:
        return result

    work = keep_dir or Path(tempfile.mkdtemp(prefix="hearth-audit-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        hostvars = {h: inventory.hostvars(h) for h in selected}
        config = write_ssh_config(hostvars, work)
        with ThreadPoolExecutor(max_workers=min(16, len(selected))) as pool:
            for host, why in pool.map(lambda h: _probe(h, config), selected):
                if why is not None:
                    result.unreachable[host] = why
        reachable = [h for h in selected if h not in result.unreachable]

        audit_vars = {
            h: {"roles": roles_by_host[h], "vars": declared_state(inventory, h, roles_by_host[h])}
            for h in reachable
        }
        files = sorted(
            {
                f
                for h in reachable
                for r in roles_by_host[h]
                if wanted is None or r in wanted  # the checks run; the state is all of it
                for f in check_files(r)
            }
        )
        targets = [
            f"{f}::{name}" if wanted and wanted[_role_of(f)] else str(f)
            for f in files
            for name in (sorted(wanted[_role_of(f)]) if wanted and wanted[_role_of(f)] else [""])
        ]
        if not reachable or not files:
            return result
        vars_file, results_file = work / "vars.json", work / "results.json"
        vars_file.write_text(json.dumps(audit_vars))
        specs = ",".join(
            f"ssh://{h}" + ("?sudo=true" if _become(hostvars[h]) else "") for h in reachable
        )
        n = min(len(reachable) * 2, 8) if workers is None else workers  # 0: in one process
        cmd = [
            sys.executable, "-m", "pytest", *targets,
            f"--hosts={specs}", f"--ssh-config={config}",
            "-p", "hearth.audit_plugin", "-p", "no:cacheprovider",
            "-n", str(n), "-q", "--no-header", "-o", "addopts=",
            "--rootdir", str(paths.roles_dir()),
        ]  # fmt: skip
        env = dict(os.environ, HEARTH_AUDIT_VARS=str(vars_file))
        env["HEARTH_AUDIT_RESULTS"] = str(results_file)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        (work / "pytest.log").write_text(done.stdout + done.stderr)
        if not results_file.is_file():
            raise AuditFailedError(
                f"the audit's test run did not complete (pytest exit {done.returncode}):\n"
                f"{(done.stdout + done.stderr)[-2000:]}"
            )
        for raw in json.loads(results_file.read_text()):
            result.results.append(CheckResult(**raw))
        result.results.sort(key=lambda r: (r.host, r.role, r.check))
        return result
    finally:
        if keep_dir is None:
            shutil.rmtree(work, ignore_errors=True)


def declared_state(inventory: Any, host: str, roles: list[str]) -> dict[str, Any]:
    """What the checks compare a host with: the variables its roles declare (inventory over role
    defaults), never an option the spec marks ``no_log``. Nothing else (vault values, connection
    passwords) leaves the inventory, so no secret reaches the audit's files or reports."""
    from hearth.schema import load_schema

    schema = load_schema()
    resolved = inventory.resolved_vars(host, roles)
    keep = {
        name
        for name, spec in schema.options.items()
        if not spec.no_log and (spec.owner in roles or spec.owner is None)
    }
    state = {k: v for k, v in resolved.items() if k in keep}
    state["inventory_hostname"] = host
    state.update(derived_inputs(inventory, host, roles, resolved))
    return dict(json.loads(json.dumps(state, default=str)))


def derived_inputs(
    inventory: Any, host: str, roles: list[str], resolved: dict[str, Any]
) -> dict[str, Any]:
    """What some checks need beyond the host's own variables, computed here so that nothing
    secret leaves the inventory:

    - ``hearth_recorded_gpus``: the GPUs (index, UUID, name) the fact cache recorded for the
      host at the last ``hearth up`` (a GPU that fell off the bus since is missed);
    - ``hearth_model_hosts`` (prometheus): the hosts that declare models, as the role renders
      the alert rules with them;
    - ``front_door_key_fingerprints`` (front_door): name and a fingerprint of the hash of each
      declared API key (:func:`hearth.checklib.key_fingerprint`), never the key or its hash.
    """
    from hearth import paths
    from hearth.checklib import key_fingerprint
    from hearth.frontdoor.config import hash_key
    from hearth.plan import cached_facts

    derived: dict[str, Any] = {}
    facts = cached_facts(host, paths.facts_dir(inventory.path)) or {}
    derived["hearth_recorded_gpus"] = [
        {k: gpu.get(k) for k in ("index", "uuid", "name")}
        for gpu in facts.get("hearth_gpus") or []
        if isinstance(gpu, dict)
    ]
    if "prometheus" in roles:
        derived["hearth_model_hosts"] = [
            h for h in inventory.hosts if inventory.hostvars(h).get("hearth_models")
        ]
    if "front_door" in roles:
        keys = resolved.get("front_door_api_keys") or []
        derived["front_door_key_fingerprints"] = [
            {"name": str(k.get("name")), "fingerprint": key_fingerprint(hash_key(str(k["key"])))}
            for k in keys
            if isinstance(k, dict) and k.get("key")
        ]
    return derived
