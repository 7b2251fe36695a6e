"""`hearth tls`: a per-site CA and host certificates made with `cryptography`, checked by a real
TLS handshake (Python's ssl, the CA as the only trust, the host's address as the name), and the
preflight's certificate checks (key mismatch, expiry, SAN, issuer)."""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import threading
from pathlib import Path

import pytest
import yaml

from hearth import cli, lab, paths, tls

COLLECTIONS = paths.collections_dir()  # the real one, before HEARTH_HOME moves to tmp


def test_a_host_certificate_passes_a_real_handshake_against_the_site_ca(tmp_path: Path) -> None:
    issued = tls.init_site(tmp_path, "lab", {"gw01": ["127.0.0.1", "gw01.lab.example"]})
    assert [(i.host, i.action) for i in issued] == [("gw01", "issued")]
    assert (tmp_path / "ca.key").stat().st_mode & 0o777 == 0o600
    assert issued[0].key.stat().st_mode & 0o777 == 0o600
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(issued[0].cert, issued[0].key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with server_context.wrap_socket(conn, server_side=True) as tls_conn:
            tls_conn.sendall(b"hello")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_context = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        client_context.wrap_socket(raw, server_hostname="127.0.0.1") as conn,
    ):
        assert conn.recv(5) == b"hello"
    thread.join(5)
    listener.close()


def test_rerunning_keeps_what_is_valid_and_reissues_what_no_longer_covers(tmp_path: Path) -> None:
    tls.init_site(tmp_path, "lab", {"gw01": ["10.0.0.9"]})
    ca_before = (tmp_path / "ca.crt").read_bytes()
    again = tls.init_site(tmp_path, "lab", {"gw01": ["10.0.0.9"], "gw02": ["10.0.0.10"]})
    assert [(i.host, i.action) for i in again] == [("gw01", "kept"), ("gw02", "issued")]
    moved = tls.init_site(tmp_path, "lab", {"gw01": ["10.0.0.19"]})
    assert [(i.host, i.action) for i in moved] == [("gw01", "renewed")]
    assert (tmp_path / "ca.crt").read_bytes() == ca_before


def test_certificate_problems_name_mismatch_expiry_san_and_issuer(tmp_path: Path) -> None:
    (one,) = tls.init_site(tmp_path / "a", "a", {"gw01": ["10.0.0.9"]})
    (other,) = tls.init_site(tmp_path / "b", "b", {"gw01": ["10.0.0.9"]})
    cert, key = one.cert.read_bytes(), one.key.read_bytes()
    ca = (tmp_path / "a" / "ca.crt").read_bytes()
    assert tls.certificate_problems(cert, key, ["10.0.0.9", "gw01"], ca) == []
    assert tls.certificate_problems(cert, other.key.read_bytes(), ["10.0.0.9"]) == [
        "the key does not match the certificate"
    ]
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=400)
    (expired,) = tls.certificate_problems(cert, key, ["10.0.0.9"], now=later)
    assert expired.startswith("the certificate expires ")
    assert tls.certificate_problems(cert, key, ["10.0.0.10", "gw01.example"]) == [
        "the certificate's SAN does not cover '10.0.0.10'",
        "the certificate's SAN does not cover 'gw01.example'",
    ]
    (foreign,) = tls.certificate_problems(
        other.cert.read_bytes(), other.key.read_bytes(), ["10.0.0.9"], ca
    )
    assert foreign.startswith("the certificate is not issued by the given CA")
    assert tls.certificate_problems(b"junk", key, [])[0].startswith("the certificate is not a PEM")


def test_tls_init_issues_for_every_front_door_host_and_contacts_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The lab's inventory at addresses nothing answers (TEST-NET-1): nothing is contacted."""
    monkeypatch.setenv("HEARTH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "400")
    state = lab.LabState(
        hosts=[lab.LabHost("lab1", "c1", "192.0.2.11"), lab.LabHost("lab2", "c2", "192.0.2.12")],
        private_key="/nonexistent/id_ed25519",
        known_hosts="/nonexistent/known_hosts",
    )
    inventory = lab.write_inventory(state, tmp_path / "inv")
    args = ["tls", "init", "-i", str(inventory), "--vault-password-file",
            str(lab.vault_password_file())]  # fmt: skip
    with pytest.raises(SystemExit) as done:
        cli.main(args)
    out = capsys.readouterr().out
    assert done.value.code == 0, out
    directory = tmp_path / "home" / "tls" / "lab"
    assert "lab1: issued" in out and "lab2" not in out
    cert = (directory / "hosts" / "lab1.crt").read_bytes()
    key = (directory / "hosts" / "lab1.key").read_bytes()
    ca = (directory / "ca.crt").read_bytes()
    assert tls.certificate_problems(cert, key, ["192.0.2.11", "lab1"], ca) == []
    with pytest.raises(SystemExit):
        cli.main(args)
    assert "lab1: kept" in capsys.readouterr().out


def test_check_asks_for_tls_init_then_passes_with_its_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """front_door_tls without the site's own certificate: `hearth check` refuses (exit 2) until
    `hearth tls init` has issued the host's; the lab itself declares plain HTTP."""
    monkeypatch.setenv("HEARTH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "400")
    state = lab.LabState(
        hosts=[lab.LabHost("lab1", "c1", "192.0.2.11")],
        private_key="/nonexistent/id_ed25519",
        known_hosts="/nonexistent/known_hosts",
    )
    paths.hearth_home().mkdir(parents=True)  # `hearth check` syntax-checks: the collections
    paths.collections_dir().symlink_to(COLLECTIONS, target_is_directory=True)
    inventory = lab.write_inventory(state, tmp_path / "inv")
    assert "front_door_tls: false" in (tmp_path / "inv/group_vars/all/lab.yml").read_text()
    (tmp_path / "inv/group_vars/all/site.yml").write_text("front_door_tls: true\n")
    vault = ["--vault-password-file", str(lab.vault_password_file())]

    def run(*args: str) -> tuple[int, str]:
        with pytest.raises(SystemExit) as done:
            cli.main([*args, "-i", str(inventory), *vault])
        out = capsys.readouterr()
        return int(done.value.code or 0), out.out + out.err

    code, said = run("check")
    assert code == 2 and "run `hearth tls init" in said and "host lab1" in said, said
    assert run("tls", "init")[0] == 0
    code, said = run("check")
    assert code == 0, said
    key = tmp_path / "home" / "tls" / "lab" / "hosts" / "lab1.key"
    key.write_bytes(tls._key_pem(tls.ec.generate_private_key(tls.ec.SECP256R1())))
    code, said = run("check")
    assert code == 2 and "the key does not match the certificate" in said, said


def test_the_front_door_role_copies_the_private_key_without_log_or_diff() -> None:
    """Every task of roles/front_door that reads the private key (the site's own or the issued
    file) has no_log and diff: false; the certificate's task shows nothing secret."""
    found = []
    for task_file in (paths.roles_dir() / "front_door" / "tasks").glob("*.yml"):
        for task in yaml.safe_load(task_file.read_text()) or []:
            text = json.dumps(task)
            if "front_door_tls_key" in text or "__front_door_tls_files.key" in text:
                found.append(task["name"])
                assert task.get("no_log") is True, f"{task_file.name}: {task['name']}: no_log"
                assert task.get("diff") is False, f"{task_file.name}: {task['name']}: diff"
    assert found == ["Deploy the front door's private key (HTTPS)"], found
