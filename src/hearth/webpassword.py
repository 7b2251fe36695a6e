"""``hearth tls init``'s ``monitoring_web_password``: with ``monitoring_tls`` on (the default) and
no password declared, a random one written into a new vault file of the inventory,
``group_vars/all/monitoring_web_password.yml``, encrypted as a whole with ansible-vault.

The YAML is encrypted in memory with Ansible's own vault library (the password file's secret, as
``hearth keys`` does in :mod:`hearth.apikeys`) and written through a file that only ever holds
ciphertext, created 0600 and never overwritten: the plain text never touches a disk. The password
is printed nowhere; ``ansible-vault view FILE`` shows it to whoever holds the vault password.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

import yaml

from hearth.errors import InvalidInputError

__all__ = ["FILE", "VAR", "generate", "write_password"]

VAR = "monitoring_web_password"
FILE = Path("group_vars") / "all" / f"{VAR}.yml"
"""Where the password goes, relative to the inventory's directory."""


def generate() -> str:
    """43 URL-safe characters (256 bits): well over the 16 the preflight asks for."""
    return secrets.token_urlsafe(32)


def write_password(inventory: Path, password_file: Path, new: Callable[[], str] = generate) -> Path:
    """Write a random ``monitoring_web_password`` into :data:`FILE` beside ``inventory`` (a file
    or a directory), vault-encrypted with the password in ``password_file``; return the path.
    An existing file is never overwritten (exit 2, naming it)."""
    from hearth.apikeys import _vault

    base = inventory if inventory.is_dir() else inventory.parent
    target = base / FILE
    if target.exists():
        raise InvalidInputError(
            f"{target}: exists, yet the inventory declares no {VAR}: put the password there "
            "yourself (ansible-vault edit), or remove the file and run `hearth tls init` again"
        )
    vault = _vault(password_file)
    text = yaml.safe_dump({VAR: new()}).encode()
    body = vault.encrypt(text, vault.secrets[0][1])
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(body)  # ciphertext only
    return target
