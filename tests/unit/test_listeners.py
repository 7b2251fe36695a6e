"""hearth.listeners: what may listen where (the inventory) against what does (`ss -Hltnup`).

The `ss` outputs are recorded on converged lab hosts (tests/fixtures/ss): lab1 serving SmolLM2
behind the front door, lab3 monitoring; the comparison is the one the audit's
common/test_only_declared_listeners makes on a host."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from hearth import paths
from hearth.errors import EXIT_INVALID
from hearth.inventory import InventoryInvalid, check_inventory
from hearth.listeners import (
    Declared,
    Listener,
    declared_listeners,
    failure_message,
    parse_ss,
    unexpected,
)
from hearth.schema import load_schema
from hearth.yamlsrc import load_yaml_text

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "ss"
MODEL: dict[str, Any] = {
    "name": "smollm2", "version": "0.1.2-q4_1", "engine": "llamacpp", "format": "gguf",
    "source": {"type": "path", "path": "/srv/models/smollm2"},
    "files": [{"path": "m.gguf", "sha256": "a" * 64, "size": 1}],
    "max_model_len": 2048, "max_num_seqs": 2, "gpus": [],
}  # fmt: skip
LAB1_ROLES = ["common", "node_exporter", "container_runtime", "model_store", "inference_engine",
              "front_door"]  # fmt: skip
LAB3_ROLES = ["common", "node_exporter", "prometheus", "alertmanager", "grafana", "canary"]


def _ss(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_parse_reads_every_socket_with_its_process() -> None:
    found = parse_ss(_ss("lab1-inference.txt"))
    sshd = [s for s in found if s.port == 22]
    assert {(s.proto, s.address, s.process) for s in sshd} == {
        ("tcp", "0.0.0.0", "sshd"),
        ("tcp", "::", "sshd"),
    }
    assert all(s.pid is not None for s in sshd)
    # Docker's embedded DNS in the lab host's namespace: loopback, and no process ss can name
    dns = [s for s in found if s.address == "127.0.0.11"]
    assert dns and all(s.loopback and s.process == "" for s in dns)
    assert [s.where for s in sshd if s.address == "::"] == ["[::]:22"]


def test_parse_handles_headers_interfaces_and_unbound_sockets() -> None:
    text = textwrap.dedent("""\
        Netid State  Recv-Q Send-Q Local Address:Port Peer Address:Port Process
        udp   UNCONN 0  0  127.0.0.53%lo:53   0.0.0.0:*  users:(("systemd-resolve",pid=5,fd=12))
        udp   UNCONN 0      0            0.0.0.0%eth0:68 0.0.0.0:* users:(("dhclient",pid=7,fd=6))
        udp   UNCONN 0      0                  *:*     *:*
        tcp   LISTEN 0      4096               *:9100  *:*  users:(("prometheus-node",pid=9,fd=3))
        tcp   LISTEN 0      4096   [::ffff:127.0.0.1]:7000 [::]:*
        """)  # fmt: skip
    found = {s.where: s for s in parse_ss(text)}
    assert set(found) == {"127.0.0.53%lo:53", "0.0.0.0%eth0:68", "*:9100", "[::ffff:7f00:1]:7000"}
    assert found["127.0.0.53%lo:53"].loopback and found["[::ffff:7f00:1]:7000"].loopback
    assert found["*:9100"].process == "prometheus-node" and not found["*:9100"].loopback


def test_converged_lab_hosts_listen_only_where_declared() -> None:
    # recorded when engines published on every address (inference_engine_bind_address was
    # 0.0.0.0 by default then): declared so here
    lab1 = {"hearth_models": [MODEL], "front_door_port": 8090,
            "inference_engine_bind_address": "0.0.0.0"}  # fmt: skip
    for fixture, variables, roles in (
        ("lab1-inference.txt", lab1, LAB1_ROLES),
        ("lab3-monitoring.txt", {}, LAB3_ROLES),
    ):
        found = parse_ss(_ss(fixture))
        declared = declared_listeners(_defaults(roles) | variables, roles)
        assert unexpected(found, declared) == [], fixture


def test_an_unexpected_listener_is_named_with_what_to_do() -> None:
    text = _ss("lab1-inference.txt") + (
        'tcp LISTEN 0 5 0.0.0.0:8765 0.0.0.0:* users:(("python3",pid=4242,fd=3))\n'
    )
    variables = {"hearth_models": [MODEL], "inference_engine_bind_address": "0.0.0.0"}
    declared = declared_listeners(_defaults(LAB1_ROLES) | variables, LAB1_ROLES)
    bad = unexpected(parse_ss(text), declared)
    assert bad == [Listener("tcp", "0.0.0.0", 8765, "python3", 4242)]
    message = failure_message("lab1", bad, declared)
    assert message.startswith("lab1: expected only the listeners the inventory declares, found 1")
    assert "0.0.0.0:8765 tcp python3 (pid 4242)" in message
    assert "bind it to 127.0.0.1, or declare it in hearth_allowed_listeners" in message


def test_an_engine_published_wider_than_its_bind_address_is_unexpected() -> None:
    """Declared on 127.0.0.1, a docker-proxy on every address for the engine's port is not the
    declared one: named, saying where it is declared."""
    text = 'tcp LISTEN 0 4096 0.0.0.0:8080 0.0.0.0:* users:(("docker-proxy",pid=77,fd=4))\n'
    variables = _defaults(LAB1_ROLES) | {
        "hearth_models": [MODEL], "inference_engine_bind_address": "127.0.0.1",
    }  # fmt: skip
    declared = declared_listeners(variables, LAB1_ROLES)
    bad = unexpected(parse_ss(text), declared)
    assert [s.port for s in bad] == [8080]
    assert "(declared on 127.0.0.1 only: engine of smollm2 (hearth_models))" in failure_message(
        "lab1", bad, declared
    )
    loop = 'tcp LISTEN 0 4096 127.0.0.1:8080 0.0.0.0:* users:(("docker-proxy",pid=77,fd=4))\n'
    assert unexpected(parse_ss(loop), declared) == []


def test_declared_extras_match_port_protocol_address_and_process() -> None:
    extras = [
        {"port": 9999, "proto": "tcp", "process": "python3", "reason": "a webhook"},
        {"port": 5353, "proto": "udp", "address": "10.0.0.5", "reason": "mDNS"},
    ]
    declared = declared_listeners({"hearth_allowed_listeners": extras}, ["common"])
    line = '{p} UNCONN 0 0 {a}:{n} 0.0.0.0:* users:(("{c}",pid=1,fd=3))\n'
    ok = line.format(p="tcp", a="0.0.0.0", n=9999, c="python3") + line.format(
        p="udp", a="10.0.0.5", n=5353, c="avahi-daemon"
    )
    assert unexpected(parse_ss(ok), declared) == []
    wrong = [
        line.format(p="tcp", a="0.0.0.0", n=9999, c="nc"),  # another process on the port
        line.format(p="udp", a="0.0.0.0", n=9999, c="python3"),  # another protocol
        line.format(p="udp", a="0.0.0.0", n=5353, c="avahi-daemon"),  # every address
    ]
    for text in wrong:
        assert len(unexpected(parse_ss(text), declared)) == 1, text
    said = failure_message("h", unexpected(parse_ss(wrong[0]), declared), declared)
    assert "0.0.0.0:9999 tcp nc (pid 1) (declared for process python3 on *" in said, said


def test_ssh_on_a_declared_port_and_triton_ports_in_both_slots() -> None:
    triton = dict(MODEL, name="tri", engine="triton", format="python")
    roles = ["common", "inference_engine"]
    declared = declared_listeners({"ansible_port": 2222, "hearth_models": [triton]}, roles)
    ports = {(d.port, d.reason) for d in declared}
    assert (2222, "SSH (ansible_port)") in ports
    engine = sorted(d.port for d in declared if "engine of tri" in d.reason)
    assert engine == [8000, 8001, 8002, 8005, 8006, 8007]


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ({"port": 0, "reason": "x"}, "hearth_allowed_listeners[0].port = 0"),
        ({"port": 70000, "reason": "x"}, "hearth_allowed_listeners[0].port = 70000"),
        ({"port": 9999, "proto": "sctp", "reason": "x"}, "hearth_allowed_listeners[0].proto"),
        ({"port": 9999}, "hearth_allowed_listeners[0].reason"),
        ({"port": 9999, "reason": "x", "address": "10.0.0.300"},
         "hearth_allowed_listeners[0].address"),
        ({"port": 9999, "reason": "x", "prot": "tcp"}, "did you mean proto?"),
    ],
)  # fmt: skip
def test_bad_allowed_listeners_are_refused_naming_the_key(entry: dict[str, Any], says: str) -> None:
    doc = load_yaml_text(yaml.safe_dump({"hearth_allowed_listeners": [entry]}), Path("vars.yml"))
    problems = [str(p) for p in load_schema().validate_vars(doc.data, Path("vars.yml"))]
    assert len(problems) == 1 and says in problems[0], problems


def test_a_bad_allowed_listener_stops_the_inventory_check_with_exit_2(tmp_path: Path) -> None:
    site = tmp_path / "site"
    shutil.copytree(paths.content_root() / "inventories" / "sample", site)
    (site / "group_vars" / "all" / "listeners.yml").write_text(
        "hearth_allowed_listeners:\n  - {port: 9999, proto: tcp}\n"
    )
    with pytest.raises(InventoryInvalid) as caught:
        check_inventory(site / "hosts.yml")
    assert caught.value.exit_code == EXIT_INVALID
    assert "hearth_allowed_listeners[0].reason" in str(caught.value), str(caught.value)


def _defaults(roles: list[str]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for role in roles:
        path = paths.roles_dir() / role / "defaults" / "main.yml"
        if path.is_file():
            merged.update(yaml.safe_load(path.read_text()) or {})
    return merged


def test_engines_are_declared_on_loopback_by_default() -> None:
    """The inference_engine role's default binds engines to loopback: the recorded lab1, whose
    engine published on every address, then has it as an unexpected listener."""
    declared = declared_listeners(_defaults(LAB1_ROLES) | {"hearth_models": [MODEL]}, LAB1_ROLES)
    assert {d.address for d in declared if "engine of" in d.reason} == {"127.0.0.1"}
    bad = unexpected(parse_ss(_ss("lab1-inference.txt")), declared)
    assert [(s.where, s.process) for s in bad] == [("0.0.0.0:8080", "docker-proxy")]


def test_declared_dicts_round_trip_through_the_audit_vars() -> None:
    declared = declared_listeners({"hearth_models": [MODEL]}, ["common", "inference_engine"])
    assert [Declared(**d.as_dict()) for d in declared] == declared
