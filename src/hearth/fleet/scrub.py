"""Scrub secrets from what ``hearth collect`` brings back from hosts.

Two nets, both applied to every text that enters a support bundle:

1. **The inventory's own secrets, literally**: every value Ansible decrypts from a vault, and every
   value of an option the roles' argument specs mark ``no_log`` (API keys, webhook URLs, SMTP and
   Grafana passwords, connection passwords) — each also URL-encoded.
2. **Shapes of secrets**, whatever their origin: ``Authorization`` headers and bearer tokens,
   credentials in URLs, token-like query parameters, webhook URLs, ``password=``/``token:``/
   ``api_key`` pairs, private key blocks; in ``docker inspect`` output every environment
   variable's value.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

MARK = "«scrubbed»"
MIN_SECRET = 6  # shorter values (true, lab, 8080) would scrub ordinary words
SECRET_WORDS = r"(?:password|passwd|secret|token|api[_-]?key|apikey|private[_-]?key|credential)"  # noqa: S105
CONNECTION_SECRETS = (
    "ansible_password", "ansible_ssh_pass", "ansible_ssh_password", "ansible_become_password",
    "ansible_become_pass", "ansible_sudo_pass",
)  # fmt: skip

PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?-----END [A-Z0-9 ]*PRIVATE KEY-----", re.S
        ),
        f"-----PRIVATE KEY {MARK}-----",
    ),
    (
        re.compile(
            r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)(?:(bearer|basic|token)\s+)?[^\s\"',}]+"
        ),
        rf"\1\2 {MARK}",
    ),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{6,}"), rf"\1 {MARK}"),
    (re.compile(r"(?i)(://[^/\s:@\"']+:)[^@\s/\"']+@"), rf"\1{MARK}@"),
    (
        re.compile(
            r"(?i)(https?://[^\s\"'/]*(?:hooks?\.slack\.com|webhook|hooks?)[^\s\"'/]*/)[^\s\"'<>]+"
        ),
        rf"\1{MARK}",
    ),
    (
        re.compile(
            r"(?i)(https?://[^\s\"']*/(?:hooks?|webhooks?|services|api/webhooks)/)[^\s\"'<>]+"
        ),
        rf"\1{MARK}",
    ),
    (
        re.compile(
            rf"(?i)([?&;][\w.-]*(?:{SECRET_WORDS}|key|sig|signature|auth)[\w.-]*=)[^&\s\"'<>]+"
        ),
        rf"\1{MARK}",
    ),
    (
        re.compile(
            rf"(?i)\b([\w.-]*{SECRET_WORDS}[\w.-]*[\"']?\s*[:=]\s*[\"']?)(?!\d+\b)(?!{MARK})[^\s\"',}}]+"
        ),
        rf"\1{MARK}",
    ),
    (re.compile(r"(?i)(--[\w-]*" + SECRET_WORDS + r"[\w-]*[= ]\s*)[^\s\"',]+"), rf"\1{MARK}"),
)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)
    elif value is not None and not isinstance(value, bool | int | float):
        yield str(value)


def is_vaulted(value: Any) -> bool:
    """Whether Ansible read ``value`` from a vault (inline ``!vault`` or an encrypted file)."""
    try:
        from ansible.parsing.vault import VaultHelper
    except ImportError:  # pragma: no cover - ansible-core < 2.19
        return type(value).__name__ == "AnsibleVaultEncryptedUnicode"
    try:
        return VaultHelper.get_ciphertext(value, with_tags=False) is not None
    except Exception:  # pragma: no cover - an odd value type
        return False


def _vaulted_strings(value: Any, inherited: bool = False) -> Iterator[str]:
    vaulted = inherited or is_vaulted(value)
    if isinstance(value, Mapping):
        for item in value.values():
            yield from _vaulted_strings(item, vaulted)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _vaulted_strings(item, vaulted)
    elif vaulted and value is not None:
        yield str(value)


def _no_log_strings(value: Any, spec: Any) -> Iterator[str]:
    if spec is None:
        return
    if spec.no_log:
        yield from _strings(value)
        return
    if not spec.options:
        return
    items = value if isinstance(value, list | tuple) else [value]
    for item in items:
        if isinstance(item, Mapping):
            for key, sub in spec.options.items():
                if key in item:
                    yield from _no_log_strings(item[key], sub)


@dataclass
class Scrubber:
    secrets: set[str] = field(default_factory=set)

    def add(self, values: Iterable[str]) -> None:
        for value in values:
            value = value.strip()
            if len(value) >= MIN_SECRET:
                self.secrets.add(value)
                self.secrets.add(urllib.parse.quote(value, safe=""))
                self.secrets.add(json.dumps(value)[1:-1])

    def scrub(self, text: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, MARK)
        for pattern, replacement in PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def scrub_docker_inspect(self, text: str) -> str:
        """``docker inspect`` JSON with every environment variable's value replaced."""
        try:
            data = json.loads(text)
        except ValueError:
            return self.scrub(text)
        for item in data if isinstance(data, list) else [data]:
            config = item.get("Config") if isinstance(item, dict) else None
            if isinstance(config, dict) and isinstance(config.get("Env"), list):
                config["Env"] = [f"{str(e).partition('=')[0]}={MARK}" for e in config["Env"]]
        return self.scrub(json.dumps(data, indent=2))


def from_inventory(inventory: Any, hosts: Iterable[str]) -> Scrubber:
    """A scrubber that knows the inventory's secrets: vaulted values, ``no_log`` options of the
    roles' specs, connection passwords."""
    from hearth.schema import load_schema

    schema = load_schema()
    scrubber = Scrubber()
    manager = inventory.ansible_inventory()
    variables = inventory.variable_manager()
    for host in hosts:
        raw = variables.get_vars(host=manager.get_host(host), include_hostvars=False)
        scrubber.add(_vaulted_strings(raw))
        plain = inventory.hostvars(host)
        for name, value in plain.items():
            if name in CONNECTION_SECRETS:
                scrubber.add(_strings(value))
            else:
                scrubber.add(_no_log_strings(value, schema.options.get(name)))
    return scrubber
