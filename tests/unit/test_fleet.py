"""Fleet commands without hosts: connection settings as Ansible resolves them (and the ones
refused), exec's exit codes against a closed port, the scrubber against planted secrets, and
backup archives: checksums, manifest, identity, retention, refusals before any host."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from hearth import lab as lab_mod
from hearth.errors import InvalidInputError
from hearth.fleet import backup, connect, execute, scrub
from hearth.inventory import load_inventory

PLANTED = "planted-SECRET-" + hashlib.sha256(b"fleet").hexdigest()[:24]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends


def write_inv(tmp: Path, hosts: dict[str, dict[str, Any]], all_vars: dict[str, Any]) -> Path:
    (tmp / "group_vars" / "all").mkdir(parents=True, exist_ok=True)
    plain = {"monitoring_tls": False}  # plain HTTP, declared: these tests are not about TLS
    (tmp / "group_vars" / "all" / "site.yml").write_text(yaml.safe_dump(plain | all_vars))
    (tmp / "hosts.yml").write_text(
        yaml.safe_dump({"all": {"children": {"fleet": {"hosts": hosts}}}})
    )
    return tmp / "hosts.yml"


# ---------------------------------------------------------------------------- connection
def test_connection_settings_as_ansible_resolves_them(tmp_path: Path) -> None:
    inv = write_inv(
        tmp_path,
        {"a": {"ansible_host": "10.0.0.5", "ansible_port": "{{ 2200 + 22 }}"}, "b": {}},
        {
            "ansible_user": "deploy",
            "ansible_ssh_private_key_file": "~/.ssh/site_key",
            "ansible_ssh_common_args": (
                "-o UserKnownHostsFile=/tmp/kh -o StrictHostKeyChecking=accept-new "
                "-o ProxyJump=jump@bastion.example:2222 -o ControlMaster=auto"
            ),
        },
    )
    hosts = {h.name: h for h in connect.connections(load_inventory(inv))}
    a = hosts["a"]
    assert (a.address, a.port, a.user) == ("10.0.0.5", 2222, "deploy")
    assert a.key_file == str(Path("~/.ssh/site_key").expanduser())
    assert a.jumps == (connect.Jump("bastion.example", 2222, "jump"),)
    assert (a.known_hosts, a.strict_host_keys) == ("/tmp/kh", "accept-new")
    assert (hosts["b"].address, hosts["b"].port) == ("b", 22)  # inventory name, default port


def test_jump_chain_and_dash_j() -> None:
    found = connect.host_connection("h", {"ansible_ssh_extra_args": "-J first,ops@[fd00::1]:2200"})
    assert found.jumps == (connect.Jump("first"), connect.Jump("fd00::1", 2200, "ops"))


@pytest.mark.parametrize(
    ("variables", "culprit"),
    [
        ({"ansible_connection": "docker"}, "ansible_connection"),
        ({"ansible_ssh_common_args": "-o ProxyCommand='nc %h %p'"}, "ansible_ssh_common_args"),
        ({"ansible_ssh_extra_args": "-F /etc/other_config"}, "ansible_ssh_extra_args"),
        ({"ansible_ssh_common_args": "-o StrictHostKeyChecking=maybe"}, "ansible_ssh_common_args"),
        ({"ansible_port": "ssh"}, "ansible_port"),
    ],
)
def test_settings_fabric_cannot_honour_are_refused(variables: dict[str, Any], culprit: str) -> None:
    with pytest.raises(connect.ConnectionUnsupported) as refused:
        connect.host_connection("gpu07", variables)
    assert refused.value.exit_code == 2
    assert "host gpu07" in refused.value.message and culprit in refused.value.message


def test_become_method_other_than_sudo_is_refused_only_with_become() -> None:
    variables = {"ansible_become_method": "su"}
    connect.host_connection("h", variables)  # not asked to become: nothing to honour
    with pytest.raises(connect.ConnectionUnsupported, match="ansible_become_method"):
        connect.host_connection("h", variables, become=True)


def test_limit_matching_nothing_is_refused(tmp_path: Path) -> None:
    inv = load_inventory(write_inv(tmp_path, {"a": {}}, {}))
    with pytest.raises(InvalidInputError, match="--limit 'nope' matches no host"):
        connect.connections(inv, "nope")


# ---------------------------------------------------------------------------------- exec
def test_empty_command_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="no command given"):
        execute.command_text(["  "])
    assert execute.command_text(["uptime;", "df", "-h"]) == "uptime; df -h"


def test_unreachable_host_is_reported_and_exits_4() -> None:
    host = connect.host_connection(
        "dark", {"ansible_host": "127.0.0.1", "ansible_port": _closed_port(),
                 "ansible_ssh_common_args": "-o ConnectTimeout=3"},
    )  # fmt: skip
    result = execute.run_command([host], "true")
    (out,) = result.outputs
    assert out.status == "unreachable" and out.reason, out
    assert "1 unreachable" in result.summary() and "dark" in result.summary()
    with pytest.raises(Exception) as raised:
        result.raise_for_status()
    assert getattr(raised.value, "exit_code", None) == 4


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import sys

    return subprocess.run(
        [sys.executable, "-m", "hearth", *args], capture_output=True, text=True, check=False,
        env=dict(os.environ, COLUMNS="200", NO_COLOR="1", **(env or {})),
    )  # fmt: skip


def test_cli_exec_bad_input_exits_2_naming_the_culprit(tmp_path: Path) -> None:
    inv = write_inv(tmp_path, {"a": {"ansible_host": "127.0.0.1"}}, {})
    empty = _cli("exec", "-i", str(inv), "--")
    assert empty.returncode == 2 and "no command given" in empty.stderr, empty.stderr
    nomatch = _cli("exec", "-i", str(inv), "--limit", "web", "--", "true")
    assert nomatch.returncode == 2 and "'web' matches no host" in nomatch.stderr, nomatch.stderr


# --------------------------------------------------------------------------------- scrub
def test_scrubber_removes_every_planted_secret(tmp_path: Path) -> None:
    password = tmp_path / "vault-password"
    password.write_text("unit vault password\n")
    vaulted = lab_mod.vault_encrypt(PLANTED, password)
    inv_dir = tmp_path / "inv"
    write_inv(inv_dir, {"a": {}}, {})
    (inv_dir / "group_vars" / "all" / "vault.yml").write_text(
        "site_secret_thing: " + vaulted.replace("\n", "\n  ") + "\n"
        "canary_api_key: canary-key-0123456789\n"
    )
    inv = load_inventory(inv_dir / "hosts.yml", vault_password_file=password)
    scrubber = scrub.from_inventory(inv, inv.hosts)
    texts = [
        f"Nov 28 hearth-canary[12]: using {PLANTED} for the run",
        f"GET /v1/models HTTP/1.1\r\nAuthorization: Bearer {PLANTED}-hdr\r\n",
        "calling https://hooks.slack.com/services/T000/B000/fake-planted-slackpath12345",
        "posting to http://10.0.0.3:9999/hook?token=tok-abcdef123456&x=1",
        'config {"api_key": "sk-live-abcdef123456", "password": "pw-abcdef123456"}',
        "db at postgres://grafana:pw-inurl-123456@db:5432/grafana",
        "auth with canary-key-0123456789 and --api-key flagkey-123456",
    ]
    out = "\n".join(scrubber.scrub(t) for t in texts)
    for planted in (
        PLANTED, "slackpath12345", "tok-abcdef123456", "sk-live-abcdef123456",
        "pw-abcdef123456", "pw-inurl-123456", "canary-key-0123456789", "flagkey-123456",
    ):  # fmt: skip
        assert planted not in out, (planted, out)
    assert "GET /v1/models" in out and "completion" not in out  # ordinary text stays
    assert scrubber.scrub('"completion_tokens": 12') == '"completion_tokens": 12'
    inspect = json.dumps([{"Name": "/e", "Config": {"Env": [f"HF_TOKEN={PLANTED}", "PATH=/bin"]}}])
    cleaned = scrubber.scrub_docker_inspect(inspect)
    assert PLANTED not in cleaned and "/bin" not in cleaned and "HF_TOKEN=" in cleaned


# -------------------------------------------------------------------------------- backup
def _host_tarball(path: Path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _staged(tmp: Path) -> Path:
    staging = tmp / "staging"
    staging.mkdir()
    manifest = {"name": "m", "version": "v1", "files": [{"path": "m.gguf", "sha256": "ab" * 32}]}
    _host_tarball(staging / "lab1.tar.gz", {
        "models/changelog.jsonl": b'{"model": "m"}\n',
        "models/m/v1/hearth-model.json": json.dumps(manifest).encode(),
    })  # fmt: skip
    _host_tarball(staging / "lab3.tar.gz", {"canary/results.csv": b"time,model\n1,m\n"})
    return staging


@pytest.fixture
def inv(tmp_path: Path) -> Any:
    return load_inventory(
        write_inv(tmp_path / "inv", {"lab1": {}, "lab3": {}}, {"hearth_site": "s1"})
    )


def test_archive_round_trip_and_model_references(tmp_path: Path, inv: Any) -> None:
    ident = backup.identity(inv)
    archive, count = backup.build_archive(
        _staged(tmp_path), tmp_path / "out", ident, ["lab1", "lab3"], False
    )
    assert count == 3 and archive.name.startswith(f"hearth-backup-s1-{ident.id[:8]}-")
    verified = backup.verify_archive(archive, tmp_path / "tree")
    backup.check_identity(verified, ident)
    assert verified.hosts == ["lab1", "lab3"]
    assert (tmp_path / "tree/hosts/lab3/canary/results.csv").read_text() == "time,model\n1,m\n"
    refs = verified.manifest["hosts"]["lab1"]["models"]
    assert refs == [{"model": "m", "version": "v1", "path": "m.gguf", "sha256": "ab" * 32,
                     "size": None}]  # fmt: skip


def test_tampered_archive_is_refused_naming_it(tmp_path: Path, inv: Any) -> None:
    ident = backup.identity(inv)
    archive, _ = backup.build_archive(_staged(tmp_path), tmp_path / "out", ident, ["lab1"], False)
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    with pytest.raises(backup.BackupInvalid, match="checksum does not match") as refused:
        backup.verify_archive(archive, tmp_path / "tree")
    assert refused.value.exit_code == 2 and archive.name in refused.value.message
    archive.with_name(archive.name + ".sha256").unlink()
    with pytest.raises(backup.BackupInvalid, match=r"checksum file .* is missing"):
        backup.verify_archive(archive, tmp_path / "tree2")


def test_file_altered_with_a_recomputed_checksum_is_named(tmp_path: Path, inv: Any) -> None:
    ident = backup.identity(inv)
    archive, _ = backup.build_archive(_staged(tmp_path), tmp_path / "out", ident, ["lab1"], False)
    # rebuild the tar with the original manifest and the forged file, and a matching .sha256
    raw = io.BytesIO(subprocess.run(["zstd", "-dc", str(archive)], capture_output=True,
                                    check=True).stdout)  # fmt: skip
    forged = io.BytesIO()
    with tarfile.open(fileobj=raw) as src, tarfile.open(fileobj=forged, mode="w") as dst:
        for member in src:
            body = src.extractfile(member)
            data = body.read() if body else b""
            if member.name.endswith("changelog.jsonl"):
                data = b'{"model": "forged"}\n'
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    packed = subprocess.run(["zstd", "-q", "-c"], input=forged.getvalue(), capture_output=True,
                            check=True).stdout  # fmt: skip
    archive.write_bytes(packed)
    archive.with_name(archive.name + ".sha256").write_text(
        f"{hashlib.sha256(packed).hexdigest()}  {archive.name}\n"
    )
    with pytest.raises(backup.BackupInvalid) as refused:
        backup.verify_archive(archive, tmp_path / "tree3")
    assert "hosts/lab1/models/changelog.jsonl: sha256" in refused.value.message


def test_archive_of_another_inventory_is_refused(tmp_path: Path, inv: Any) -> None:
    other = load_inventory(write_inv(tmp_path / "other", {"lab1": {}}, {"hearth_site": "s2"}))
    archive, _ = backup.build_archive(
        _staged(tmp_path), tmp_path / "out", backup.identity(other), ["lab1"], False
    )
    verified = backup.verify_archive(archive, tmp_path / "tree")
    with pytest.raises(backup.BackupInvalid, match="belongs to another inventory") as refused:
        backup.check_identity(verified, backup.identity(inv))
    assert "'s2'" in refused.value.message and refused.value.exit_code == 2


def test_retention_keeps_the_newest_of_this_inventory_only(tmp_path: Path, inv: Any) -> None:
    ident = backup.identity(inv)
    out = tmp_path / "out"
    out.mkdir()
    names = [f"hearth-backup-{ident.slug}-2026010{i}T000000Z.tar.zst" for i in range(1, 5)]
    foreign = out / "hearth-backup-other-12345678-20250101T000000Z.tar.zst"
    for name in names:
        (out / name).write_bytes(b"x")
        (out / (name + ".sha256")).write_text("x")
    foreign.write_bytes(b"x")
    removed = backup.apply_retention(out, ident, 2)
    assert [p.name for p in removed] == names[:2]
    assert sorted(p.name for p in out.glob("*.tar.zst")) == sorted([*names[2:], foreign.name])
    assert not (out / (names[0] + ".sha256")).exists()


def test_cli_restore_refuses_before_contacting_any_host(tmp_path: Path, inv: Any) -> None:
    home = tmp_path / "home"
    archive, _ = backup.build_archive(
        _staged(tmp_path), tmp_path / "out", backup.identity(inv), ["lab1"], False
    )
    archive.write_bytes(archive.read_bytes() + b"tampered")
    env = {"HEARTH_HOME": str(home)}
    done = _cli("restore", "-i", str(inv.path), "--from", str(archive), env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert archive.name in done.stderr and "checksum does not match" in done.stderr
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())
    keep = _cli("backup", "-i", str(inv.path), "--keep", "0", env=env)
    assert keep.returncode == 2 and "--keep 0" in keep.stderr


# ------------------------------------------------------------------- restore of Prometheus
def _block(root: Path, ulid: str, sources: list[str] | None = None, level: int = 1) -> None:
    """A Prometheus block directory as the TSDB writes it (meta.json, version 1)."""
    (root / ulid / "chunks").mkdir(parents=True)
    meta = {
        "ulid": ulid, "minTime": 0, "maxTime": 7200000, "version": 1,
        "stats": {"numSamples": 10, "numSeries": 1, "numChunks": 1},
        "compaction": {"level": level, "sources": sources or [ulid]},
    }  # fmt: skip
    (root / ulid / "meta.json").write_text(json.dumps(meta))


def test_missing_blocks_are_those_the_host_lacks_even_after_compaction(tmp_path: Path) -> None:
    saved, host = tmp_path / "saved", tmp_path / "host"
    _block(saved, "01A")
    _block(saved, "01B")
    _block(saved, "01C", ["01X", "01Y"], level=2)  # the backup's own compacted block
    (saved / "snapshots").mkdir()  # not a block
    host.mkdir()
    assert backup.missing_blocks(saved, backup.tsdb_block_ids(host)) == ["01A", "01B", "01C"]
    # restored, then merged by Prometheus' compaction into one block of a new ULID
    _block(host, "01M", ["01A", "01B", "01X", "01Y"], level=2)
    (host / "wal").mkdir()
    (host / "01Z.tmp-for-deletion").mkdir()  # no meta.json: skipped
    assert backup.tsdb_block_ids(host) == ["01A", "01B", "01M", "01X", "01Y"]
    assert backup.missing_blocks(saved, backup.tsdb_block_ids(host)) == []
    # a block the host never had, and one merged only in part
    _block(saved, "01D")
    _block(saved, "01E", ["01X", "01W"], level=2)
    assert backup.missing_blocks(saved, backup.tsdb_block_ids(host)) == ["01D", "01E"]


def test_the_hosts_block_walk_is_the_packages(tmp_path: Path) -> None:
    """roles/backup runs the same walk with the host's python3 (no Hearth there): both agree."""
    _block(tmp_path, "01A")
    _block(tmp_path, "01M", ["01B", "01C"], level=2)
    (tmp_path / "01Q").mkdir()
    (tmp_path / "01Q" / "meta.json").write_text("{not json")
    roles = Path(__file__).resolve().parents[2] / "roles"
    script = yaml.safe_load((roles / "backup" / "vars" / "main.yml").read_text())[
        "_backup_tsdb_known_script"
    ]
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                          text=True, check=True)  # fmt: skip
    assert json.loads(done.stdout) == backup.tsdb_block_ids(tmp_path) == ["01A", "01B", "01C",
                                                                          "01M"]  # fmt: skip
    assert json.loads(subprocess.run([sys.executable, "-c", script, str(tmp_path / "none")],
                      capture_output=True, text=True, check=True).stdout) == []  # fmt: skip
