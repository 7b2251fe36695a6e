"""The inventory's connection settings, as Ansible resolves them, turned into fabric connections.

Hosts and variables come from :mod:`hearth.inventory` (ansible-core's ``InventoryManager`` +
``VariableManager``, templated), so ``ansible_host``, ``ansible_port``, ``ansible_user``, the key
and a ``ProxyJump`` in ``ansible_ssh_common_args`` mean what they mean to ``ansible-playbook``.
A setting fabric cannot honour (another connection plugin, a ``ProxyCommand``, an ssh option
with no paramiko equivalent, a become method other than sudo) is refused with exit 2 naming the
host and the variable, before any host is contacted.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hearth.errors import InvalidInputError

SSH_CONNECTIONS = frozenset(
    {"ssh", "smart", "paramiko", "paramiko_ssh", "ansible.builtin.ssh",
     "ansible.builtin.paramiko_ssh"}
)  # fmt: skip
SSH_ARG_VARIABLES = ("ansible_ssh_common_args", "ansible_ssh_extra_args", "ansible_ssh_args")
# ssh -o options that only tune OpenSSH's own connection handling: nothing to honour in paramiko.
IGNORED_OPTIONS = frozenset(
    {"controlmaster", "controlpersist", "controlpath", "serveraliveinterval",
     "serveralivecountmax", "batchmode", "compression", "loglevel", "identitiesonly",
     "preferredauthentications", "forwardagent", "tcpkeepalive", "gssapiauthentication",
     "kbdinteractiveauthentication", "passwordauthentication", "pubkeyauthentication",
     "addkeystoagent", "hashknownhosts", "checkhostip", "visualhostkey"}
)  # fmt: skip
DEFAULT_CONNECT_TIMEOUT = 20


class ConnectionUnsupported(InvalidInputError):
    """A connection setting of the inventory that fabric cannot honour."""


@dataclass(frozen=True)
class Jump:
    host: str
    port: int = 22
    user: str | None = None


@dataclass(frozen=True)
class HostConnection:
    """How to reach one inventory host (no secret in ``repr``)."""

    name: str
    address: str
    port: int = 22
    user: str | None = None
    key_file: str | None = None
    jumps: tuple[Jump, ...] = ()
    known_hosts: str | None = None
    strict_host_keys: str = "yes"  # yes | accept-new | no
    connect_timeout: int = DEFAULT_CONNECT_TIMEOUT
    become_user: str = "root"
    password: str | None = field(default=None, repr=False)
    become_password: str | None = field(default=None, repr=False)

    @property
    def needs_become(self) -> bool:
        """Whether reading root-only files needs sudo (Ansible connects as a non-root user)."""
        return (self.user or "root") != "root"

    def connection(self) -> Any:
        """A fabric ``Connection`` for the host (not yet open)."""
        return _fabric_connection(self, self.address, self.port, self.user, self.jumps)


def _first(merged: dict[str, Any], *names: str) -> tuple[str, Any]:
    for name in names:
        value = merged.get(name)
        if value is not None and value != "":
            return name, value
    return names[0], None


def _refuse(host: str, variable: str, why: str) -> ConnectionUnsupported:
    return ConnectionUnsupported(
        f"host {host}: {variable}: {why}; hearth exec/collect cannot honour it (nothing was run "
        "on any host)"
    )


def _parse_jump(host: str, variable: str, text: str) -> tuple[Jump, ...]:
    jumps: list[Jump] = []
    for hop in text.split(","):
        hop = hop.strip()
        if not hop or hop.lower() == "none":
            continue
        if hop.startswith("ssh://"):
            hop = hop[len("ssh://") :]
        user, _, rest = hop.rpartition("@")
        address, port = rest, 22
        if rest.startswith("["):  # [v6]:port
            address, _, tail = rest[1:].partition("]")
            if tail.startswith(":"):
                port = _port(host, variable, tail[1:])
        elif rest.count(":") == 1:
            address, _, raw = rest.partition(":")
            port = _port(host, variable, raw)
        if not address:
            raise _refuse(host, variable, f"cannot read the jump host {hop!r}")
        jumps.append(Jump(address, port, user or None))
    return tuple(jumps)


def _port(host: str, variable: str, raw: Any) -> int:
    try:
        port = int(str(raw))
    except ValueError:
        raise _refuse(host, variable, f"port {raw!r} is not a number") from None
    if not 0 < port < 65536:
        raise _refuse(host, variable, f"port {port} is out of range")
    return port


def _ssh_args(host: str, merged: dict[str, Any]) -> dict[str, Any]:
    """The ssh options of ``ansible_ssh_*_args`` that matter, each checked."""
    found: dict[str, Any] = {}
    for variable in SSH_ARG_VARIABLES:
        raw = merged.get(variable)
        if not raw:
            continue
        try:
            args = shlex.split(str(raw))
        except ValueError as e:
            raise _refuse(host, variable, f"cannot split {raw!r}: {e}") from e
        i = 0
        while i < len(args):
            arg = args[i]
            value: str | None = None
            if arg in ("-o", "-J", "-i", "-p", "-l"):
                if i + 1 >= len(args):
                    raise _refuse(host, variable, f"{arg} without a value")
                value, i = args[i + 1], i + 2
            elif arg[:2] in ("-o", "-J", "-i", "-p", "-l") and len(arg) > 2:
                value, arg, i = arg[2:], arg[:2], i + 1
            else:
                raise _refuse(host, variable, f"ssh argument {arg!r} is not supported")
            if arg == "-J":
                found["proxyjump"] = (variable, value)
            elif arg == "-i":
                found["identityfile"] = (variable, value)
            elif arg == "-p":
                found["port"] = (variable, value)
            elif arg == "-l":
                found["user"] = (variable, value)
            else:
                key, sep, option = value.partition("=")
                if not sep:
                    key, _, option = value.partition(" ")
                key, option = key.strip().lower(), option.strip()
                if key in IGNORED_OPTIONS:
                    continue
                if key in ("proxyjump", "stricthostkeychecking", "userknownhostsfile",
                           "connecttimeout", "identityfile", "port", "user"):  # fmt: skip
                    found[key] = (variable, option)
                else:
                    raise _refuse(
                        host, variable, f"ssh option {key} ({value!r}) has no equivalent in fabric"
                    )
    return found


def host_connection(name: str, merged: dict[str, Any], *, become: bool = False) -> HostConnection:
    """Connection settings of host ``name`` from its templated variables (Ansible's names and
    precedence: ``ansible_host`` over ``ansible_ssh_host``, and so on)."""
    variable, connection = _first(merged, "ansible_connection")
    if connection is not None and str(connection) not in SSH_CONNECTIONS:
        raise _refuse(name, variable, f"connection {connection!r} is not SSH")
    args = _ssh_args(name, merged)
    _, address = _first(merged, "ansible_host", "ansible_ssh_host")
    port_var, port = _first(merged, "ansible_port", "ansible_ssh_port")
    if port is None and "port" in args:
        port_var, port = args["port"]
    _, user = _first(merged, "ansible_user", "ansible_ssh_user")
    if user is None and "user" in args:
        user = args["user"][1]
    _, key = _first(merged, "ansible_ssh_private_key_file", "ansible_private_key_file")
    if key is None and "identityfile" in args:
        key = args["identityfile"][1]
    _, password = _first(merged, "ansible_password", "ansible_ssh_pass", "ansible_ssh_password")
    strict = "yes"
    if os.environ.get("ANSIBLE_HOST_KEY_CHECKING", "").lower() in ("false", "no", "0"):
        strict = "no"
    known_hosts = None
    if "stricthostkeychecking" in args:
        variable, value = args["stricthostkeychecking"]
        value = value.lower()
        if value in ("no", "off", "false"):
            strict = "no"
        elif value in ("accept-new",):
            strict = "accept-new"
        elif value in ("yes", "ask", "on", "true"):
            strict = "yes"
        else:
            raise _refuse(name, variable, f"StrictHostKeyChecking={value} is unknown")
    if "userknownhostsfile" in args:
        known_hosts = args["userknownhostsfile"][1].split()[0]
    timeout = DEFAULT_CONNECT_TIMEOUT
    if "connecttimeout" in args:
        timeout = _port(name, args["connecttimeout"][0], args["connecttimeout"][1])
    jumps: tuple[Jump, ...] = ()
    if "proxyjump" in args:
        variable, value = args["proxyjump"]
        jumps = _parse_jump(name, variable, value)
    become_user, become_password = "root", None
    if become:
        method_var, method = _first(merged, "ansible_become_method")
        if method is not None and str(method) != "sudo":
            raise _refuse(name, method_var, f"become method {method!r} (only sudo is supported)")
        _, become_user = _first(merged, "ansible_become_user")
        _, become_password = _first(
            merged, "ansible_become_password", "ansible_become_pass", "ansible_sudo_pass"
        )
    return HostConnection(
        name=name,
        address=str(address or name),
        port=_port(name, port_var, port) if port is not None else 22,
        user=str(user) if user is not None else None,
        key_file=str(Path(str(key)).expanduser()) if key else None,
        jumps=jumps,
        known_hosts=str(Path(known_hosts).expanduser()) if known_hosts else None,
        strict_host_keys=strict,
        connect_timeout=timeout,
        become_user=str(become_user or "root"),
        password=str(password) if password is not None else None,
        become_password=str(become_password) if become_password is not None else None,
    )


def select_hosts(inventory: Any, limit: str | None) -> list[str]:
    """The inventory's hosts, or those ``--limit`` selects (Ansible pattern); exit 2 when the
    pattern matches no host."""
    if not limit:
        return list(inventory.hosts)
    chosen: list[str] = list(inventory.match(limit))
    if not chosen:
        raise InvalidInputError(
            f"--limit {limit!r} matches no host of {inventory.path} (hosts: "
            f"{', '.join(inventory.hosts) or 'none'}); nothing was run"
        )
    return chosen


def connections(
    inventory: Any, limit: str | None = None, *, become: bool = False
) -> list[HostConnection]:
    """Every selected host's connection settings, all checked before any host is contacted."""
    return [
        host_connection(h, inventory.resolved_vars(h, []), become=become)
        for h in select_hosts(inventory, limit)
    ]


def _policy(settings: HostConnection) -> Any:
    from paramiko import (  # type: ignore[import-untyped,unused-ignore]
        AutoAddPolicy,
        RejectPolicy,
        WarningPolicy,
    )

    if settings.strict_host_keys == "yes":
        return RejectPolicy()
    if settings.strict_host_keys == "accept-new":
        return AutoAddPolicy()  # a known host whose key changed is still refused by paramiko
    return WarningPolicy()


def _fabric_connection(
    settings: HostConnection, address: str, port: int, user: str | None, jumps: tuple[Jump, ...]
) -> Any:
    from fabric import Config, Connection

    gateway = None
    if jumps:
        *before, last = jumps
        gateway = _fabric_connection(settings, last.host, last.port, last.user, tuple(before))
    connect_kwargs: dict[str, Any] = {"banner_timeout": settings.connect_timeout}
    if settings.key_file:
        connect_kwargs["key_filename"] = [settings.key_file]
    if settings.password is not None:
        connect_kwargs["password"] = settings.password
    overrides: dict[str, Any] = {"load_ssh_configs": False}
    if settings.become_password is not None:
        overrides["sudo"] = {"password": settings.become_password}
    config = Config(overrides=overrides)
    conn = Connection(
        address,
        user=user,
        port=port,
        config=config,
        gateway=gateway,
        connect_timeout=settings.connect_timeout,
        connect_kwargs=connect_kwargs,
    )
    client = conn.client
    client.set_missing_host_key_policy(_policy(settings))
    if settings.strict_host_keys != "no":
        known = settings.known_hosts or str(Path("~/.ssh/known_hosts").expanduser())
        if Path(known).is_file():
            client.load_host_keys(known)
    return conn
