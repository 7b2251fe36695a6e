"""What may listen where: the sockets a host is declared to open, and the ones it really has.

The audit's ``common/test_only_declared_listeners`` reads every TCP and UDP socket listening on
the host (``ss -Hltnup``, :func:`parse_ss`) and compares those not on loopback with what the
inventory declares for that host (:func:`declared_listeners`): SSH, the exporters, Prometheus,
Alertmanager, Grafana, the front door and each engine's published ports, from the same variables
the roles read, plus the site's own extras in ``hearth_allowed_listeners``. A listener nobody
declared is named with its address, protocol and process (:func:`unexpected`), so the operator
can stop it, bind it to 127.0.0.1, or declare it.

A published container port shows as Docker's ``docker-proxy`` (or as the container's own
process): either belongs to the port's declaration, which is matched by protocol, port and
address alone. Pure functions: no host is contacted here (the check runs ``ss``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "ALLOWED_VAR",
    "SS_COMMAND",
    "Declared",
    "Listener",
    "declared_listeners",
    "failure_message",
    "parse_ss",
    "unexpected",
]

ALLOWED_VAR = "hearth_allowed_listeners"
SS_COMMAND = "ss -Hltnup"
_ANY = ("", "0.0.0.0", "::", "*")  # noqa: S104 - recognising "every interface", not binding
_COMM_MAX = 15  # the kernel's process name (comm) is cut to 15 characters, as ss shows it
_USERS = re.compile(r'\("([^"]*)",pid=(\d+)')
# Sockets every DHCP-configured host holds (the client waits for the server's answers there).
DHCP_CLIENT = (
    ("udp", 68, "DHCP client (IPv4)"),
    ("udp", 546, "DHCP client (IPv6)"),
)


@dataclass(frozen=True)
class Listener:
    """One listening socket as ``ss`` shows it: protocol, local address (no brackets, no
    ``%interface``; ``*`` for every address), port, and the first process holding it."""

    proto: str
    address: str
    port: int
    process: str = ""
    pid: int | None = None
    interface: str = ""

    @property
    def where(self) -> str:
        address = f"[{self.address}]" if ":" in self.address else self.address
        scope = f"%{self.interface}" if self.interface else ""
        return f"{address}{scope}:{self.port}"

    @property
    def loopback(self) -> bool:
        return _is_loopback(self.address)

    def describe(self) -> str:
        who = self.process or "unknown process"
        pid = f" (pid {self.pid})" if self.pid is not None else ""
        return f"{self.where} {self.proto} {who}{pid}"


@dataclass(frozen=True)
class Declared:
    """A socket the inventory allows: protocol, port, address (``""`` or an any-address: every
    address), process (``""``: whichever), and why (the variable that declares it)."""

    proto: str
    port: int
    address: str = ""
    process: str = ""
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address == "localhost"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def _normal(address: str) -> str:
    address = address.strip().strip("[]")
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address


def parse_ss(text: str) -> list[Listener]:
    """Listening sockets from ``ss -Hltnup`` (or ``-ltnup``: a header line is skipped).

    Columns: Netid State Recv-Q Send-Q Local Peer [users:(("name",pid=N,fd=M),...)]. A line
    that is not a socket (a header, an empty line) is skipped; a socket whose port is ``*`` (an
    unbound UDP socket) listens on nothing and is skipped too."""
    found: list[Listener] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 6 or parts[0] not in ("tcp", "udp"):
            continue
        local = parts[4]
        host, _, port = local.rpartition(":")
        if not port.isdigit():
            continue
        host, _, interface = host.partition("%")
        address = host.strip("[]")
        address = "*" if address in ("*", "") else _normal(address)
        users = _USERS.search(" ".join(parts[6:]))
        found.append(
            Listener(
                proto=parts[0],
                address=address,
                port=int(port),
                process=users.group(1) if users else "",
                pid=int(users.group(2)) if users else None,
                interface=interface,
            )
        )
    return sorted(set(found), key=lambda s: (s.port, s.proto, s.address))


def _matches(listener: Listener, declared: Declared) -> bool:
    if (listener.proto, listener.port) != (declared.proto, declared.port):
        return False
    if declared.address not in _ANY and listener.address != _normal(declared.address):
        return False  # a wider bind (every address) than the declared one is not it either
    if declared.process and listener.process:
        return listener.process[:_COMM_MAX] == declared.process[:_COMM_MAX]
    return True


def unexpected(found: Iterable[Listener], declared: Sequence[Declared]) -> list[Listener]:
    """The listeners not on loopback that no declaration allows, in port order."""
    return [s for s in found if not s.loopback and not any(_matches(s, d) for d in declared)]


def failure_message(host: str, bad: Sequence[Listener], declared: Sequence[Declared]) -> str:
    """What the audit says of the unexpected listeners: each one, and what to do."""
    lines = []
    for s in bad:
        same_port = [d for d in declared if (d.proto, d.port) == (s.proto, s.port)]
        hint = ""
        if same_port:
            wanted = ", ".join(sorted({d.address or "*" for d in same_port}))
            owner = ", ".join(sorted({d.reason for d in same_port if d.reason}))
            hint = f" (declared on {wanted} only: {owner})"
            if any(d.process for d in same_port):
                hint = (
                    f" (declared for process {', '.join(sorted({d.process for d in same_port}))} "
                    f"on {wanted}: {owner})"
                )
        lines.append(s.describe() + hint)
    return (
        f"{host}: expected only the listeners the inventory declares, found {len(bad)} more: "
        + "; ".join(lines)
        + ". Stop each, bind it to 127.0.0.1, or declare it in "
        f"{ALLOWED_VAR} ({{port, proto, process, reason}}) for this host"
    )


def _port(value: Any) -> int | None:
    try:
        port = int(value)
    except (TypeError, ValueError):
        return None
    return port if 0 < port < 65536 else None


def _add(out: list[Declared], proto: str, port: Any, address: Any, reason: str) -> None:
    number = _port(port)
    if number is not None:
        out.append(Declared(proto, number, str(address or ""), "", reason))


def declared_listeners(variables: Mapping[str, Any], roles: Sequence[str]) -> list[Declared]:
    """Every socket the host may listen on beyond loopback, from its resolved variables (the
    inventory over the defaults of ``roles``, the roles the playbooks give the host) - the same
    variables the roles bind with - and ``hearth_allowed_listeners``."""
    v = variables
    out: list[Declared] = []
    ssh = v.get("ansible_port") or v.get("ansible_ssh_port") or 22
    _add(out, "tcp", ssh, "", "SSH (ansible_port)")
    if ssh != 22:
        _add(out, "tcp", 22, "", "SSH")
    for proto, port, why in DHCP_CLIENT:
        _add(out, proto, port, "", why)
    if "node_exporter" in roles:
        _add(out, "tcp", v.get("node_exporter_port", 9100), v.get("node_exporter_listen_address"),
             "node_exporter (node_exporter_port)")  # fmt: skip
    if "prometheus" in roles:
        _add(out, "tcp", v.get("prometheus_port", 9090), v.get("prometheus_listen_address"),
             "Prometheus (prometheus_port)")  # fmt: skip
    if "alertmanager" in roles:
        _add(out, "tcp", v.get("alertmanager_port", 9093), v.get("alertmanager_listen_address"),
             "Alertmanager (alertmanager_port)")  # fmt: skip
    if "grafana" in roles and v.get("grafana_image"):
        _add(out, "tcp", v.get("grafana_port", 3000), "", "Grafana (grafana_port)")
    if "dcgm_exporter" in roles and v.get("dcgm_exporter_enabled", True):
        _add(out, "tcp", v.get("dcgm_exporter_port", 9400), "",
             "DCGM exporter (dcgm_exporter_port)")  # fmt: skip
    if "front_door" in roles:
        _add(out, "tcp", v.get("front_door_port", 8090), v.get("front_door_bind_address"),
             "the front door (front_door_port)")  # fmt: skip
    if "inference_engine" in roles:
        out += _engine_listeners(v)
    for entry in v.get(ALLOWED_VAR) or []:
        if isinstance(entry, Mapping) and _port(entry.get("port")) is not None:
            out.append(
                Declared(
                    str(entry.get("proto") or "tcp"),
                    int(entry["port"]),
                    str(entry.get("address") or ""),
                    str(entry.get("process") or ""),
                    f"{ALLOWED_VAR}: {entry.get('reason') or ''}".rstrip(": "),
                )
            )
    return out


def _engine_listeners(v: Mapping[str, Any]) -> list[Declared]:
    """Each engine's published ports (Triton: HTTP, gRPC, metrics), in its live slot and in its
    candidate slot (a rollout's new version runs there until it is switched)."""
    from hearth.engines import PORT_SPAN, candidate_port, host_ports
    from hearth.errors import HearthError
    from hearth.models import parse_models

    try:
        models = parse_models(v.get("hearth_models") or [])
        ports = host_ports(models, v.get("inference_engine_ports") or {})
    except (HearthError, ValueError, TypeError):
        return []  # an invalid declaration is refused by `hearth check`, never audited
    bind = v.get("inference_engine_bind_address", "127.0.0.1")  # the role's default
    out: list[Declared] = []
    for model in models:
        if model.name not in ports:
            continue
        live = ports[model.name]
        for base, slot in ((live, ""), (candidate_port(live), " candidate")):
            for offset in range(PORT_SPAN[model.engine]):
                _add(out, "tcp", base + offset, bind,
                     f"engine of {model.name}{slot} (hearth_models)")  # fmt: skip
    return out
