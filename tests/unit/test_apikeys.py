"""`hearth keys add|rotate|revoke|list` on a real ansible-vault file: decrypted and encrypted
again in memory with Ansible's own vault library, only ciphertext ever written, the new key
printed once and never again, policies checked before anything is written; and `hearth keys
usage` / `hearth logs verify`'s pure parts (the fetched text, the head, the usage table)."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
import yaml
from ansible.parsing.vault import VaultLib, VaultSecret

from hearth import apikeys, cli
from hearth.commands import logs
from hearth.frontdoor import reqlog

PASSWORD = b"correct horse battery staple"
EXISTING = "e" * 64


@pytest.fixture(autouse=True)
def _wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # whole table rows


def vault() -> VaultLib:
    return VaultLib([("default", VaultSecret(PASSWORD))])


@pytest.fixture
def keyfile(tmp_path: Path) -> tuple[Path, Path]:
    password = tmp_path / "vault-pass"
    password.write_bytes(PASSWORD + b"\n")
    path = tmp_path / "group_vars" / "frontdoor" / "vault.yml"
    path.parent.mkdir(parents=True)
    text = yaml.safe_dump({"front_door_api_keys": [{"name": "lab", "key": EXISTING}]})
    path.write_bytes(vault().encrypt(text.encode(), VaultSecret(PASSWORD)))
    path.chmod(0o600)
    return path, password


def decrypted(path: Path) -> dict[str, object]:
    data = yaml.safe_load(vault().decrypt(path.read_bytes()))
    assert isinstance(data, dict)
    return data


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        cli.main(args)
    out = capsys.readouterr()
    return int(done.value.code or 0), out.out + out.err


def test_add_prints_the_new_key_once_and_writes_only_ciphertext(
    keyfile: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, password = keyfile
    written: list[bytes] = []
    real_replace = Path.replace

    def spy(self: Path, target: Path) -> Path:  # what the temporary file held when renamed
        written.append(self.read_bytes())
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", spy)
    code, out = run(
        ["keys", "add", "ward7", "-f", str(path), "--vault-password-file", str(password),
         "--models", "chat,smollm2", "--rpm", "60", "--expires", "2027-01-01"],
        capsys,
    )  # fmt: skip
    assert code == 0, out
    new = re.findall(r"\b[0-9a-f]{64}\b", out)
    assert len(new) == 1 and new[0] != EXISTING
    assert written and all(w.startswith(b"$ANSIBLE_VAULT;1.1;AES256") for w in written)
    assert path.read_bytes().startswith(b"$ANSIBLE_VAULT;") and path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["vault.yml"]  # no temporary left
    assert decrypted(path)["front_door_api_keys"] == [
        {"name": "lab", "key": EXISTING},
        {"name": "ward7", "key": new[0], "models": ["chat", "smollm2"], "rpm": 60,
         "expires": "2027-01-01"},
    ]  # fmt: skip
    code, listing = run(["keys", "list", "-f", str(path), "--vault-password-file", str(password)],
                        capsys)  # fmt: skip
    assert code == 0 and "ward7  models=chat,smollm2 rpm=60 expires=2027-01-01" in listing
    assert new[0] not in listing and EXISTING not in listing


def test_rotate_keeps_the_old_key_for_the_overlap_and_revoke_removes(
    keyfile: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path, password = keyfile
    code, out = run(["keys", "rotate", "lab", "-f", str(path), "--vault-password-file",
                     str(password), "--overlap", "24h"], capsys)  # fmt: skip
    assert code == 0, out
    new = re.findall(r"\b[0-9a-f]{64}\b", out)
    assert len(new) == 1 and new[0] != EXISTING
    (entry,) = decrypted(path)["front_door_api_keys"]  # type: ignore[misc]
    assert entry["key"] == new[0] and entry["previous"][0]["key"] == EXISTING
    until = dt.datetime.fromisoformat(entry["previous"][0]["until"].replace("Z", "+00:00"))
    assert dt.timedelta(hours=23) < until - dt.datetime.now(dt.UTC) <= dt.timedelta(hours=24)
    code, out = run(["keys", "revoke", "lab", "-f", str(path), "--vault-password-file",
                     str(password)], capsys)  # fmt: skip
    assert code == 0 and decrypted(path)["front_door_api_keys"] == []


def test_bad_input_is_refused_before_anything_is_written(
    keyfile: tuple[Path, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path, password = keyfile
    before = path.read_bytes()
    code, out = run(["keys", "add", "ward7", "-f", str(path), "--vault-password-file",
                     str(password), "--rpm", "0"], capsys)  # fmt: skip
    assert code == 2 and "rpm: expected a positive integer" in out
    code, out = run(["keys", "add", "ward7", "-f", str(path), "--vault-password-file",
                     str(password), "--max-input-bytes", "-1"], capsys)  # fmt: skip
    assert code == 2 and "max_input_bytes: expected a positive integer" in out
    code, out = run(["keys", "add", "lab", "-f", str(path), "--vault-password-file",
                     str(password)], capsys)  # fmt: skip
    assert code == 2 and "a key named 'lab' exists" in out
    code, out = run(["keys", "rotate", "nobody", "-f", str(path), "--vault-password-file",
                     str(password)], capsys)  # fmt: skip
    assert code == 2 and "no key named 'nobody'" in out
    wrong = tmp_path / "wrong-pass"
    wrong.write_text("not the password\n")
    code, out = run(["keys", "list", "-f", str(path), "--vault-password-file", str(wrong)], capsys)
    assert code == 2 and "cannot be decrypted" in out
    assert path.read_bytes() == before


def test_the_key_file_is_found_under_the_inventory(keyfile: tuple[Path, Path]) -> None:
    path, password = keyfile
    (path.parent.parent.parent / "hosts.yml").write_text("all: {}\n")
    other = path.parent.parent / "all" / "site.yml"
    other.parent.mkdir()
    other.write_text("hearth_site: lab\n")
    assert apikeys.find_key_file(path.parent.parent.parent / "hosts.yml", password) == path


# ---------------------------------------------------------------------- logs verify, usage


def _log(directory: Path, records: list[dict[str, object]]) -> reqlog.RequestLog:
    log = reqlog.RequestLog(directory, clock=lambda: 1_796_000_000.0)
    for record in records:
        log.write(record)
    log.close()
    return log


def _fetched(directory: Path, head: dict[str, object] | None) -> str:
    import base64

    text = "==hearth-log== health\n" + json.dumps({"status": "ok", "request_log": head} if head
                                                   else {}) + "\n"  # fmt: skip
    for path in reqlog.log_files(directory):
        text += f"==hearth-log== file {path.name}\n{base64.b64encode(path.read_bytes()).decode()}\n"
    return text


def test_verify_compares_the_last_line_with_the_front_doors_head(tmp_path: Path) -> None:
    records = [{"key": "ward7", "model": "smollm2", "status": 200, "prompt_tokens": 9,
                "completion_tokens": 3}] * 3  # fmt: skip
    log = _log(tmp_path, records)
    head = {"seq": log.seq, "head": log.head}
    fetched = logs.parse_fetch("gw01", _fetched(tmp_path, head))
    assert logs.verify_host(fetched) == (3, None)
    (path,) = reqlog.log_files(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(
        b"".join([*lines[:2], lines[2].replace(b'"prompt_tokens":9', b'"prompt_tokens":1')])
    )
    _, problem = logs.verify_host(logs.parse_fetch("gw01", _fetched(tmp_path, head)))
    assert problem is not None and problem.startswith(f"{path.name}:3: edited")
    path.write_bytes(b"".join(lines[:2]))  # the last line cut off
    _, problem = logs.verify_host(logs.parse_fetch("gw01", _fetched(tmp_path, head)))
    assert problem is not None and "cut off its end" in problem


def test_usage_sums_requests_and_tokens_per_key_and_model(tmp_path: Path) -> None:
    _log(tmp_path, [
        {"key": "ward7", "model": "smollm2", "status": 200, "prompt_tokens": 9,
         "completion_tokens": 3},
        {"key": "ward7", "model": "smollm2", "status": 429, "prompt_tokens": 0,
         "completion_tokens": 0},
        {"key": "lab", "model": "upper", "status": 200, "prompt_tokens": 2,
         "completion_tokens": 2},
        {"key": "", "model": "", "status": 401},
    ])  # fmt: skip
    fetched = logs.parse_fetch("gw01", _fetched(tmp_path, None))
    rows = [r.as_dict() for r in logs.usage_of([fetched])]
    assert rows == [
        {"key": "lab", "model": "upper", "requests": 1, "ok": 1, "refused": 0,
         "prompt_tokens": 2, "completion_tokens": 2},
        {"key": "ward7", "model": "smollm2", "requests": 2, "ok": 1, "refused": 1,
         "prompt_tokens": 9, "completion_tokens": 3},
    ]  # fmt: skip
    later = dt.datetime.fromtimestamp(1_796_000_001, dt.UTC)
    assert logs.usage_of([fetched], later) == []
    assert logs.parse_since("7d", later) == later - dt.timedelta(days=7)
