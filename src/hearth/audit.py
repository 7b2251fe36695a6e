"""Audit hosts with testinfra: each role's checks, on the hosts the playbooks give that role.

The checks live beside their role (``roles/<role>/checks/test_*.py``) and compare each host with
the declared state (the inventory over the role defaults, resolved by Ansible), so drift shows as a
failed check saying what was expected and what was found. Hosts are checked in parallel
(pytest-xdist) over SSH connections that are reused (ControlMaster), from an ssh config written
from the inventory's connection variables the way Ansible's ssh plugin reads them
(:func:`connection_for`): jump hosts, ports, users, keys, become with a vaulted sudo password; a
setting it cannot honour is refused (exit 2) before any host is contacted.

Why not testinfra's ``ansible://`` backend: ``benchmarks/audit_backends.py`` on the lab (3 hosts,
33 base-layer checks, a busy 2-core machine, 2026-11-28) measured the pool at 25-27 s, the
``ansible://`` backend 2.7-3.5x slower (it re-reads the inventory in every worker and reuses no
connection) and ``--force-ansible`` 13.6x slower.
"""

from __future__ import annotations

import getpass
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
from hearth.errors import AuditCrashedError, AuditFailedError, InvalidInputError

OUTCOMES = ("passed", "failed", "error", "skipped", "unreachable")


@dataclass(frozen=True)
class CheckResult:
    host: str
    role: str
    check: str
    outcome: str  # one of OUTCOMES
    message: str = ""
    duration: float = 0.0
    description: str = ""  # what the check proves, in words (its docstring)
    observed: list[dict[str, Any]] = field(default_factory=list)  # [{name, value, declared?}]


@dataclass
class AuditResult:
    results: list[CheckResult] = field(default_factory=list)
    roles: dict[str, list[str]] = field(default_factory=dict)  # host → roles audited
    unreachable: dict[str, str] = field(default_factory=dict)  # host → reason
    header: dict[str, Any] = field(default_factory=dict)  # hearth.evidence.header.header()

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


# ------------------------------------------------------------------------------- connection
# How Ansible's ssh connection plugin reads the inventory (ansible-core 2.19, ssh.py): every
# variable below is honoured; any other connection setting is refused (exit 2) rather than dropped.
_HOST_VARS = ("ansible_host", "ansible_ssh_host")
_PORT_VARS = ("ansible_port", "ansible_ssh_port")
_USER_VARS = ("ansible_user", "ansible_ssh_user")
_KEY_VARS = ("ansible_ssh_private_key_file", "ansible_private_key_file")
_TIMEOUT_VARS = ("ansible_ssh_timeout", "ansible_timeout")
_HOST_KEY_VARS = ("ansible_ssh_host_key_checking", "ansible_host_key_checking")
_ARGS_VARS = ("ansible_ssh_args", "ansible_ssh_common_args", "ansible_ssh_extra_args")
_BECOME_PASSWORD_VARS = ("ansible_become_password", "ansible_become_pass", "ansible_sudo_pass")
_SSH_CONNECTIONS = ("ssh", "smart", "ansible.builtin.ssh")
# Read by Ansible's ssh plugin, but about moving files or retrying, never about where or as whom
# to connect: the audit (which only runs commands) has nothing to honour in them.
_IRRELEVANT = {
    "ansible_ssh_pipelining", "ansible_pipelining", "ansible_ssh_transfer_method",
    "ansible_scp_extra_args", "ansible_sftp_extra_args", "ansible_sftp_batch_mode",
    "ansible_ssh_retries", "ansible_ssh_use_tty", "ansible_control_path",
    "ansible_control_path_dir", "ansible_ssh_control_persist", "ansible_python_interpreter",
    "ansible_ssh_executable",
}  # fmt: skip
_KNOWN = {
    *_HOST_VARS, *_PORT_VARS, *_USER_VARS, *_KEY_VARS, *_TIMEOUT_VARS, *_HOST_KEY_VARS,
    *_ARGS_VARS, *_BECOME_PASSWORD_VARS, *_IRRELEVANT, "ansible_connection", "ansible_become",
    "ansible_become_user", "ansible_become_method", "ansible_become_exe", "ansible_become_flags",
}  # fmt: skip
_PASSWORD_VARS = ("ansible_password", "ansible_ssh_pass", "ansible_ssh_password")
_DEFAULT_BECOME_FLAGS = "-H -S -n"
# ssh's one-letter options and the ssh_config keyword each one sets (ssh(1)).
_FLAG_WITH_VALUE = {"-J": "ProxyJump", "-i": "IdentityFile", "-p": "Port", "-l": "User"}
_FLAG_ALONE = {
    "-4": ("AddressFamily", "inet"), "-6": ("AddressFamily", "inet6"),
    "-A": ("ForwardAgent", "yes"), "-a": ("ForwardAgent", "no"), "-C": ("Compression", "yes"),
    "-q": ("LogLevel", "QUIET"), "-T": ("RequestTTY", "no"), "-x": ("ForwardX11", "no"),
}  # fmt: skip
# ssh_config keywords whose value is the rest of the line (a command), never quoted.
_COMMAND_KEYWORDS = {"proxycommand", "localcommand", "remotecommand", "knownhostscommand"}


@dataclass(frozen=True)
class Connection:
    """How the audit reaches one host, as Ansible would: ssh_config options (the first value of a
    keyword wins, as in ssh) and privilege escalation. The become password is kept in memory
    only (see :func:`run_audit`)."""

    host: str
    options: tuple[tuple[str, str], ...]
    become: bool = False
    become_user: str = "root"
    become_password: str | None = field(default=None, repr=False)

    def option(self, keyword: str) -> str | None:
        return next((v for k, v in self.options if k.lower() == keyword.lower()), None)

    def spec(self) -> str:
        """The testinfra host spec: ``ssh://<inventory name>`` (its ssh_config block), with sudo."""
        if not self.become:
            return f"ssh://{self.host}"
        query = "?sudo=true"
        if self.become_user != "root":
            query += f"&sudo_user={self.become_user}"
        return f"ssh://{self.host}{query}"


def _refuse(host: str, var: str, why: str) -> InvalidInputError:
    return InvalidInputError(f"{host}: {var}: {why}; nothing was contacted")


def _first(hostvars: dict[str, Any], names: tuple[str, ...]) -> Any:
    return next((hostvars[n] for n in names if hostvars.get(n) not in (None, "")), None)


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on", "y", "t")


def ssh_args_options(host: str, var: str, text: str) -> list[tuple[str, str]]:
    """ssh_config options from an ssh command line fragment (``-o K=V``, ``-J jump``, …); a flag
    the audit cannot express is refused, naming the host and the variable."""
    try:
        args = shlex.split(text)
    except ValueError as exc:
        raise _refuse(host, var, f"cannot be split like a shell command line ({exc})") from exc
    options: list[tuple[str, str]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        flag, attached = arg[:2], arg[2:]
        if flag == "-o" or flag in _FLAG_WITH_VALUE:
            if attached:
                value = attached
            elif i + 1 < len(args):
                i += 1
                value = args[i]
            else:
                raise _refuse(host, var, f"{arg} needs a value")
            if flag == "-o":
                keyword, _, rest = value.strip().partition("=")
                if " " in keyword.strip() or "\t" in keyword.strip():
                    keyword, _, rest = value.strip().partition(" ")
                if not keyword.strip() or not rest.strip():
                    raise _refuse(host, var, f"-o {value!r} is not keyword=value")
                options.append((keyword.strip(), rest.strip()))
            else:
                options.append((_FLAG_WITH_VALUE[flag], value))
        elif arg in _FLAG_ALONE:
            options.append(_FLAG_ALONE[arg])
        else:
            raise _refuse(
                host, var, f"the ssh option {arg!r} cannot be honoured by the audit (it reads -o, "
                "-J, -i, -p, -l, -4, -6, -A, -a, -C, -q, -T, -x)",
            )  # fmt: skip
        i += 1
    return options


def known_checks() -> dict[str, set[str]]:
    """Every role that has checks → the names of its checks (``test_*`` functions)."""
    found: dict[str, set[str]] = {}
    for f in sorted(paths.roles_dir().glob("*/checks/test_*.py")):
        names = {
            line.split("(", 1)[0].removeprefix("def ").strip()
            for line in f.read_text().splitlines()
            if line.startswith("def test_")
        }
        found.setdefault(_role_of(f), set()).update(names)
    return found


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


def connection_for(host: str, hostvars: dict[str, Any]) -> Connection:
    """The connection Ansible's ssh plugin would open to ``host``, from its (templated)
    variables, as ssh_config options in the order Ansible puts them on ssh's command line (ssh
    keeps the first value of each keyword). Settings the audit cannot honour raise
    :class:`InvalidInputError` (exit 2) naming the host and the variable."""
    connection = str(hostvars.get("ansible_connection") or "ssh")
    if connection not in _SSH_CONNECTIONS:
        raise _refuse(
            host, "ansible_connection",
            f"{connection!r}: the audit connects over ssh only (like Ansible's ssh plugin)",
        )  # fmt: skip
    for name in _PASSWORD_VARS:
        if hostvars.get(name) not in (None, ""):
            raise _refuse(
                host, name, "password logins cannot be honoured by the audit (it runs ssh in "
                "batch mode); give the host a key (ansible_ssh_private_key_file) or use an agent",
            )  # fmt: skip
    executable = hostvars.get("ansible_ssh_executable")
    if executable not in (None, "", "ssh"):
        raise _refuse(host, "ansible_ssh_executable", f"{executable!r}: the audit runs ssh")
    method = str(hostvars.get("ansible_become_method") or "sudo")
    if method not in ("sudo", "ansible.builtin.sudo"):
        raise _refuse(host, "ansible_become_method", f"{method!r}: the audit becomes with sudo")
    exe = hostvars.get("ansible_become_exe")
    if exe not in (None, "", "sudo"):
        raise _refuse(host, "ansible_become_exe", f"{exe!r}: the audit runs sudo")
    flags = hostvars.get("ansible_become_flags")
    if flags not in (None, "") and str(flags).split() != _DEFAULT_BECOME_FLAGS.split():
        raise _refuse(
            host, "ansible_become_flags",
            f"{flags!r}: the audit runs sudo with Ansible's default flags "
            f"({_DEFAULT_BECOME_FLAGS})",
        )  # fmt: skip
    unknown = sorted(
        k for k in hostvars
        if k.startswith(("ansible_ssh_", "ansible_become", "ansible_sudo", "ansible_connection"))
        and k not in _KNOWN and hostvars[k] not in (None, "")
    )  # fmt: skip
    if unknown:
        raise _refuse(host, unknown[0], "a connection setting the audit cannot honour")

    options: list[tuple[str, str]] = [("HostName", str(_first(hostvars, _HOST_VARS) or host))]
    if hostvars.get("ansible_ssh_args"):
        options += ssh_args_options(host, "ansible_ssh_args", str(hostvars["ansible_ssh_args"]))
    checking = _first(hostvars, _HOST_KEY_VARS)
    if checking is not None and not _as_bool(checking):
        options.append(("StrictHostKeyChecking", "no"))
    port = _first(hostvars, _PORT_VARS)
    if port is not None:
        options.append(("Port", str(port)))
    key = _first(hostvars, _KEY_VARS)
    if key is not None:
        options.append(("IdentityFile", str(key)))
    user = _first(hostvars, _USER_VARS)
    if user is not None:
        options.append(("User", str(user)))
    timeout = _first(hostvars, _TIMEOUT_VARS)
    options.append(("ConnectTimeout", str(timeout or 10)))
    for var in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
        if hostvars.get(var):
            options += ssh_args_options(host, var, str(hostvars[var]))
    options += [("BatchMode", "yes"), ("ServerAliveInterval", "15")]
    options += [("ControlMaster", "auto"), ("ControlPersist", "120s")]

    # Hearth's plays say `become: true`; ansible_become in the inventory overrides it.
    become = _as_bool(hostvars.get("ansible_become", True))
    become_user = str(hostvars.get("ansible_become_user") or "root")
    remote_user = next((v for k, v in options if k.lower() == "user"), None) or getpass.getuser()
    password = _first(hostvars, _BECOME_PASSWORD_VARS)
    if password is not None and "{{" in str(password):
        raise _refuse(
            host, next(n for n in _BECOME_PASSWORD_VARS if hostvars.get(n) is not None),
            "its template could not be resolved from the inventory",
        )  # fmt: skip
    return Connection(
        host=host,
        options=tuple(options),
        become=become and remote_user != become_user,
        become_user=become_user,
        become_password=None if password is None else str(password),
    )


def _config_value(keyword: str, value: str) -> str:
    if keyword.lower() in _COMMAND_KEYWORDS or not any(c.isspace() for c in value):
        return value
    return '"' + value.replace('"', '\\"') + '"'


def write_ssh_config(
    connections: dict[str, Connection] | dict[str, dict[str, Any]], directory: Path
) -> Path:
    """An ssh_config with one ``Host <inventory name>`` block per host, then the operator's own
    ssh configuration (as Ansible's ssh would read it: ~/.ssh/config, /etc/ssh/ssh_config)."""
    control = Path(tempfile.gettempdir()) / "hearth-audit-cp"
    control.mkdir(mode=0o700, exist_ok=True)
    lines = []
    for host, conn in connections.items():
        if not isinstance(conn, Connection):
            conn = connection_for(host, conn)
        lines.append(f"Host {host}")
        seen: set[str] = set()
        for keyword, value in (*conn.options, ("ControlPath", str(control / "%C"))):
            if keyword.lower() in seen and keyword.lower() != "identityfile":
                continue  # ssh keeps the first value: write only that one
            seen.add(keyword.lower())
            lines.append(f"    {keyword} {_config_value(keyword, value)}")
    lines += ["Match all", "    Include ~/.ssh/config /etc/ssh/ssh_config"]
    config = directory / "ssh_config"
    config.write_text("\n".join(lines) + "\n")
    return config


def _probe(host: str, config: Path) -> tuple[str, str | None, dict[str, str]]:
    """Can the host be reached, and who is it: its machine-id and the fingerprint of the SSH host
    key it presented, read from ssh's own log of this connection, made without a shared master
    (never through an earlier audit's master: the key exchange happens here), so evidence cannot
    be moved between hosts. (Tried in the lab: with ``ControlMaster=yes`` the probe timed out,
    the persisting master keeping ssh's output open; the checks' connections make their own.)"""
    cmd = ["ssh", "-v", "-o", "ControlMaster=no", "-o", "ControlPath=none", "-F", str(config),
           host, "cat /etc/machine-id 2>/dev/null || true"]  # fmt: skip
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=40, check=False)
    except subprocess.TimeoutExpired:
        return host, "SSH timed out", {}
    log = done.stderr.splitlines()
    key = next((ln.split("Server host key:", 1)[1].strip() for ln in log
                if "Server host key:" in ln), "")  # fmt: skip
    identity = {"machine_id": done.stdout.strip(), "ssh_host_key": key}
    if done.returncode == 0:
        return host, None, identity
    lines = [ln for ln in log if ln.strip() and not ln.startswith(("debug", "OpenSSH_"))]
    return host, (lines[-1] if lines else f"ssh exited {done.returncode}"), {}


def connections(inventory: Any, hosts: list[str]) -> dict[str, Connection]:
    """Each host's connection from its templated variables (so ``{{ vault_… }}`` resolves)."""
    return {h: connection_for(h, inventory.resolved_vars(h, [])) for h in hosts}


def run_audit(
    inventory: Any,
    limit: str | None = None,
    workers: int | None = None,
    keep_dir: Path | None = None,
    backend: str = "ssh",
    checks: list[str] | None = None,
) -> AuditResult:
    """Run every applicable role check on every host of ``inventory`` (a loaded Inventory).

    ``backend`` is how testinfra reaches the hosts: ``ssh`` (Hearth's pool: one ssh_config written
    from each host's :func:`connection_for`, connections reused through ControlMaster) or, for
    ``benchmarks/audit_backends.py`` only, testinfra's own ``ansible`` backend (the inventory read
    by testinfra) and ``ansible-force`` (every command through Ansible's command module).
    ``checks`` narrows the run to some roles (``prometheus``) or checks
    (``prometheus/test_rules_loaded``) of those roles.
    """
    from hearth.layers import roles_for_hosts

    roles_by_host = roles_for_hosts(inventory)
    wanted = _wanted_checks(checks)
    selected = list(roles_by_host)
    if limit:
        matched = {h.name for h in inventory.ansible_inventory().get_hosts(limit)}
        if not matched:
            raise InvalidInputError(f"--limit {limit!r} matches no host in {inventory.path}")
        selected = [h for h in selected if h in matched]
    from hearth.evidence.header import header

    result = AuditResult(roles={h: roles_by_host[h] for h in selected})
    result.header = header(inventory, {}, {})
    if not selected:
        return result

    conns = connections(inventory, selected)  # refuses what it cannot honour: no host contacted
    work = keep_dir or Path(tempfile.mkdtemp(prefix="hearth-audit-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        config = write_ssh_config(conns, work)
        identities: dict[str, dict[str, str]] = {}
        with ThreadPoolExecutor(max_workers=min(16, len(selected))) as pool:
            for host, why, identity in pool.map(lambda h: _probe(h, config), selected):
                if why is not None:
                    result.unreachable[host] = why
                else:
                    identities[host] = identity
        reachable = [h for h in selected if h not in result.unreachable]

        audit_vars = {
            h: {"roles": roles_by_host[h], "vars": declared_state(inventory, h, roles_by_host[h])}
            for h in reachable
        }
        result.header = header(inventory, audit_vars, identities, result.header["started"])
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
        if backend == "ssh":
            connect = [f"--hosts={','.join(conns[h].spec() for h in reachable)}",
                       f"--ssh-config={config}"]  # fmt: skip
        elif backend in ("ansible", "ansible-force"):
            connect = [f"--hosts={','.join(f'ansible://{h}' for h in reachable)}",
                       f"--ansible-inventory={inventory.path}"]  # fmt: skip
            connect += ["--force-ansible"] if backend == "ansible-force" else []
        else:
            raise InvalidInputError(f"audit backend {backend!r}: expected ssh or ansible")
        n = default_workers(len(reachable)) if workers is None else workers  # 0: one process
        cmd = [
            sys.executable, "-m", "pytest", *targets, *connect,
            "-p", "hearth.audit_plugin", "-p", "no:cacheprovider",
            "-n", str(n), "-q", "--no-header", "-o", "addopts=",
            "--rootdir", str(paths.roles_dir()),
        ]  # fmt: skip
        env = dict(os.environ, HEARTH_AUDIT_VARS=str(vars_file))
        env["HEARTH_AUDIT_RESULTS"] = str(results_file)
        passwords: dict[str, str] = {}
        for h in reachable:
            secret = conns[h].become_password
            if conns[h].become and secret is not None:
                passwords[h] = secret
        if passwords:  # in the environment of the audit's own processes only, never in a file
            env[BECOME_ENV] = json.dumps(passwords)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        output = done.stdout + done.stderr
        for secret in passwords.values():
            output = output.replace(secret, "********")
        (work / "pytest.log").write_text(output)
        raws = json.loads(results_file.read_text()) if results_file.is_file() else []
        crashes = [r for r in raws if r["outcome"] == "crash"]
        if crashes:
            raise AuditCrashedError(
                "the audit itself crashed: check module(s) could not be loaded; no verdict on "
                "any host:\n" + "\n".join(f"{c['check']}: {c['message']}" for c in crashes)
            )
        if done.returncode not in (0, 1) or not results_file.is_file():
            raise AuditCrashedError(
                f"the audit itself crashed (pytest exit {done.returncode}: "
                f"{_PYTEST_EXITS.get(done.returncode, 'unknown')}); no verdict on any host:\n"
                f"{output[-2000:]}"
            )
        for raw in raws:
            result.results.append(CheckResult(**raw))
        result.results.sort(key=lambda r: (r.host, r.role, r.check))
        result.header["finished"] = _now()
        return result
    finally:
        if keep_dir is None:
            shutil.rmtree(work, ignore_errors=True)


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


BECOME_ENV = "HEARTH_AUDIT_BECOME"
_PYTEST_EXITS = {
    2: "interrupted, e.g. a check module failed to import",
    3: "pytest internal error",
    4: "pytest usage error",
    5: "no checks were collected",
}


def default_workers(hosts: int) -> int:
    """Parallel pytest workers when ``--workers`` is not given: two per host reached, at most 8."""
    return max(1, min(hosts * 2, 8))


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
      declared API key (:func:`hearth.checklib.key_fingerprint`), never the key or its hash (a
      rotated key's previous value too, while its overlap lasts);
    - ``hearth_listeners_declared``: every socket the host may listen on beyond loopback, from
      the variables of all its roles (:func:`hearth.listeners.declared_listeners`), for the
      common role's listener check.
    """
    from hearth import paths
    from hearth.checklib import key_fingerprint
    from hearth.frontdoor.policy import keys_file_entries
    from hearth.listeners import declared_listeners
    from hearth.plan import cached_facts

    derived: dict[str, Any] = {}
    facts = cached_facts(host, paths.facts_dir(inventory.path)) or {}
    derived["hearth_recorded_gpus"] = [
        {k: gpu.get(k) for k in ("index", "uuid", "name")}
        for gpu in facts.get("hearth_gpus") or []
        if isinstance(gpu, dict)
    ]
    derived["hearth_listeners_declared"] = [
        d.as_dict() for d in declared_listeners(resolved, roles)
    ]
    if "prometheus" in roles:
        derived["hearth_model_hosts"] = [
            h for h in inventory.hosts if inventory.hostvars(h).get("hearth_models")
        ]
    if "front_door" in roles:
        keys = resolved.get("front_door_api_keys") or []
        try:
            derived["front_door_key_fingerprints"] = [
                {"name": str(e["name"]), "fingerprint": key_fingerprint(str(e["sha256"]))}
                for e in keys_file_entries(
                    [k for k in keys if isinstance(k, dict) and k.get("key")]
                )
            ]
        except Exception as exc:  # an undecryptable vault value (AnsibleVaultError) and the like
            raise InvalidInputError(
                f"{host}: front_door_api_keys cannot be read ({exc}): the audit compares the "
                "front door's keys file with them; give --vault-password-file"
            ) from exc
    return derived
