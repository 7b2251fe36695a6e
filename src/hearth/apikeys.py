"""``hearth keys add|rotate|revoke|list``: the front door's API keys, edited in their vault file.

The file is a YAML file that defines ``front_door_api_keys`` (usually
``group_vars/frontdoor/vault.yml``), encrypted as a whole with ansible-vault. It is decrypted in
memory with Ansible's own vault library (:class:`ansible.parsing.vault.VaultLib`, the password
file's secret), changed, encrypted again and written in place through a temporary file that only
ever holds ciphertext; the plain text never touches a disk. Comments in the file are not kept
(it is rewritten through a YAML serialiser). A file in plain text (a lab) is edited as it is,
with a warning; a file with per-value ``!vault`` strings is refused (encrypt the whole file).

A new key (64 hex characters, :func:`secrets.token_hex`) is returned once to be printed once;
``list`` shows names and policies, never a key. ``hearth up --tags front_door`` then writes the
hashes to the hosts and the front door reloads them in place (no request dropped).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hearth.errors import InvalidInputError

__all__ = ["KeyFile", "find_key_file", "parse_duration"]

VAR = "front_door_api_keys"
_VAULT_HEADER = b"$ANSIBLE_VAULT;"
_DURATION = re.compile(r"^(\d+)([smhd])$")


def parse_duration(text: str) -> dt.timedelta:
    match = _DURATION.match(text.strip())
    if not match:
        raise InvalidInputError(f"{text!r}: expected a duration such as 24h, 7d, 30m")
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return dt.timedelta(seconds=int(match.group(1)) * seconds)


def _vault(password_file: Path | None) -> Any:
    from ansible.errors import AnsibleError
    from ansible.parsing.dataloader import DataLoader
    from ansible.parsing.vault import VaultLib, get_file_vault_secret

    if password_file is None:
        raise InvalidInputError(
            "the key file is encrypted with ansible-vault: give --vault-password-file"
        )
    try:
        secret = get_file_vault_secret(
            filename=str(password_file), vault_id="default", loader=DataLoader()
        )
        secret.load()
    except AnsibleError as e:
        raise InvalidInputError(f"{password_file}: cannot read the vault password: {e}") from e
    return VaultLib([("default", secret)])


@dataclass
class KeyFile:
    """The key file, decrypted in memory."""

    path: Path
    data: dict[str, Any]
    encrypted: bool
    vault: Any = None
    vault_id: str | None = None

    @classmethod
    def open(cls, path: Path, password_file: Path | None = None) -> KeyFile:
        data, encrypted, vault, vault_id = _read(path, password_file)
        if not isinstance(data.setdefault(VAR, []), list):
            raise InvalidInputError(f"{path}: {VAR}: expected a list of {{name, key}}")
        return cls(path, data, encrypted, vault, vault_id)

    @property
    def keys(self) -> list[dict[str, Any]]:
        keys: list[dict[str, Any]] = self.data[VAR]
        return keys

    def find(self, name: str) -> dict[str, Any]:
        for entry in self.keys:
            if isinstance(entry, dict) and entry.get("name") == name:
                return entry
        known = ", ".join(str(e.get("name")) for e in self.keys if isinstance(e, dict))
        raise InvalidInputError(f"{self.path}: no key named {name!r} (keys: {known or 'none'})")

    def _check(self) -> None:
        from hearth.frontdoor.policy import policy_problems
        from hearth.rules import front_door_key_problems

        problems = front_door_key_problems(self.keys) if self.keys else []
        for entry in self.keys:
            if isinstance(entry, Mapping):
                problems += [f"key {entry.get('name')!r}: {p}" for p in policy_problems(entry)]
        if problems:
            raise InvalidInputError(
                f"{self.path}: not written, the keys would be refused:\n  " + "\n  ".join(problems)
            )

    def save(self) -> None:
        """Write the file back (encrypted again when it was), atomically."""
        self._check()
        text = yaml.safe_dump(self.data, sort_keys=False, default_flow_style=False).encode()
        if self.encrypted:
            secret = self.vault.secrets[0][1]
            body = self.vault.encrypt(text, secret, vault_id=self.vault_id)
        else:
            body = text
        handle, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(body)  # ciphertext only when the file is encrypted
            mode = self.path.stat().st_mode & 0o777 if self.path.exists() else 0o600
            Path(temporary).chmod(mode)
            Path(temporary).replace(self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    # --------------------------------------------------------------------------- operations
    def add(self, name: str, policy: Mapping[str, Any], new_key: Callable[[], str]) -> str:
        if any(isinstance(e, dict) and e.get("name") == name for e in self.keys):
            raise InvalidInputError(
                f"{self.path}: a key named {name!r} exists (rotate it, or revoke it first)"
            )
        key = new_key()
        self.keys.append(
            {"name": name, "key": key, **{k: v for k, v in policy.items() if v is not None}}
        )
        return key

    def rotate(
        self, name: str, overlap: dt.timedelta, new_key: Callable[[], str], now: dt.datetime
    ) -> tuple[str, str]:
        """A new key for ``name``; the old one stays valid for ``overlap``. The new key and the
        end of the overlap (ISO, UTC)."""
        entry = self.find(name)
        until = (now + overlap).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        previous = [
            p
            for p in entry.get("previous") or []
            if isinstance(p, dict) and _still_valid(p.get("until"), now)
        ]
        if overlap.total_seconds() > 0:
            previous.append({"key": entry["key"], "until": until})
        key = new_key()
        entry["key"] = key
        if previous:
            entry["previous"] = previous
        else:
            entry.pop("previous", None)
        return key, until

    def revoke(self, name: str) -> None:
        entry = self.find(name)
        self.keys.remove(entry)

    def listing(self) -> list[dict[str, Any]]:
        """Each key's name, policy and rotation state; never a key."""
        rows = []
        for entry in self.keys:
            if not isinstance(entry, dict):
                continue
            row = {k: v for k, v in entry.items() if k not in ("key", "previous")}
            previous = [p for p in entry.get("previous") or [] if isinstance(p, dict)]
            if previous:
                row["previous_until"] = [str(p.get("until")) for p in previous]
            rows.append(row)
        return rows


def _read(path: Path, password_file: Path | None) -> tuple[dict[str, Any], bool, Any, str | None]:
    """The file's variables (decrypted in memory), whether it was encrypted, the vault and the
    vault id it was encrypted with."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InvalidInputError(f"{path}: cannot read the key file: {e.strerror}") from e
    encrypted = raw.lstrip().startswith(_VAULT_HEADER)
    vault = None
    text = raw
    if encrypted:
        from ansible.errors import AnsibleError

        vault = _vault(password_file)
        try:
            text = vault.decrypt(raw)
        except AnsibleError as e:
            raise InvalidInputError(
                f"{path}: cannot be decrypted with the vault password given ({e})"
            ) from e
    elif b"!vault" in raw:
        raise InvalidInputError(
            f"{path}: holds per-value !vault strings; `hearth keys` edits a file encrypted "
            "as a whole (ansible-vault encrypt FILE)"
        )
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise InvalidInputError(f"{path}: not YAML: {e}") from e
    if not isinstance(data, dict):
        raise InvalidInputError(f"{path}: expected a mapping of variables")
    header = raw.lstrip().split(b"\n", 1)[0].decode("ascii", "replace").split(";")
    vault_id = header[3].strip() if encrypted and len(header) > 3 else None
    return data, encrypted, vault, vault_id


def _still_valid(until: object, now: dt.datetime) -> bool:
    from hearth.frontdoor.policy import parse_expiry

    try:
        ends = parse_expiry(until.isoformat() if isinstance(until, dt.date) else until)
    except ValueError:
        return False
    return ends is not None and ends > now.timestamp()


def generate_key() -> str:
    return secrets.token_hex(32)


def find_key_file(inventory: Path, password_file: Path | None) -> Path:
    """The one YAML file under the inventory's group_vars/host_vars that defines
    ``front_door_api_keys``; exit 2 when there is none or more than one."""
    base = inventory if inventory.is_dir() else inventory.parent
    found: list[Path] = []
    for folder in ("group_vars", "host_vars"):
        for path in sorted((base / folder).rglob("*")):
            if path.suffix not in (".yml", ".yaml") or not path.is_file():
                continue
            raw = path.read_bytes()
            if raw.lstrip().startswith(_VAULT_HEADER):
                if VAR in _read(path, password_file)[0]:
                    found.append(path)
            elif re.search(rb"^" + VAR.encode() + rb"\s*:", raw, re.MULTILINE):
                found.append(path)
    if len(found) != 1:
        said = ", ".join(str(p) for p in found) or "none"
        raise InvalidInputError(
            f"{inventory}: expected one file that defines {VAR}, found {said}: give --file"
        )
    return found[0]
