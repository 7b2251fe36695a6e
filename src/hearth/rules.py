"""The refusals that depend only on the inventory: one small function per rule.

Each rule reads one host's variables (with the defaults of the roles it gets) through a
:class:`HostView` and yields :class:`Finding`\\ s.  The same functions run in two places, so the
two can never disagree:

- on the control node, before any host is touched, for every host of the inventory
  (:mod:`hearth.preflight`: ``hearth check``, ``up``, ``audit``, ``plan`` and the first play of
  every playbook), where a finding becomes a ``FILE:LINE: host H: key = value: expected …``;
- in the roles' ``tasks/preflight.yml``, through the ``hearth_preflight`` action plugin
  (``plugins/action/hearth_preflight.py``), with the variables of the running play.

A rule declares the roles it belongs to (it runs on a host that gets one of them) and never
contacts a host.  Rules that need facts (the OS, the GPUs found, Secure Boot) stay in the roles.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from hearth.yamlsrc import MASKED, MISSING

__all__ = [
    "MIN_API_KEY_LENGTH",
    "RULES",
    "Finding",
    "HostView",
    "Rule",
    "front_door_key_problems",
    "rule",
    "run_rules",
]

Level = Literal["error", "warning"]

MIN_API_KEY_LENGTH = 32
"""The shortest front door API key Hearth accepts (``openssl rand -hex 16`` gives 32 characters);
``front_door_min_key_length`` may raise it, never lower it."""

MIN_GRAFANA_PASSWORD = 12
_DIGEST_PINNED = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_VERSION = re.compile(r"^[0-9]+(\.[0-9]+)+$")
_CUDA_VERSION = re.compile(r"^[0-9]+\.[0-9]+$")
_KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Finding:
    """One thing a rule found: ``key`` is a key path (``front_door_api_keys[1].key``)."""

    key: str
    value: object
    expected: str
    level: Level = "error"
    related: tuple[str, ...] = ()
    """Other keys the finding is about (the file to edit may set one of them instead)."""

    def text(self, host: str | None = None) -> str:
        subject = self.key
        if self.value is not MISSING and subject:
            subject += f" = {self.value!r}"
        head = f"host {host}" if host else ""
        return ": ".join(p for p in (head, subject, self.expected) if p)


@dataclass
class HostView:
    """What a rule may read of one host: its variables, its roles and the other hosts.

    ``vars`` are the host's variables with its roles' defaults beneath them, templated;
    ``raw`` gives a value as Ansible holds it (vault-encrypted values still marked as such);
    ``groups`` is the inventory's group -> hosts; ``peer`` gives another host's view (only its
    inventory variables need be there: rules read ``hearth_models`` of peers).
    """

    name: str
    vars: Mapping[str, Any]
    roles: frozenset[str]
    groups: Mapping[str, Sequence[str]] = field(default_factory=dict)
    raw: Callable[[str], Any] | None = None
    peer: Callable[[str], HostView] | None = None

    def get(self, name: str, default: Any = None) -> Any:
        """The variable, or ``default`` when unset, null or a template that could not be resolved
        on the control node (it names a fact, or a variable set elsewhere): unknown here."""
        value = self.vars.get(name, default)
        return default if value is None or _is_template(value) else value

    def peers(self, group: str | None = None) -> Iterator[HostView]:
        names = self.groups.get(group or "all", ()) if self.groups else ()
        for name in names:
            if name == self.name:
                yield self
            elif self.peer is not None:
                yield self.peer(name)

    def vaulted(self, name: str) -> Any:
        return self.raw(name) if self.raw is not None else None


RuleFunc = Callable[[HostView], Iterable[Finding]]


@dataclass(frozen=True)
class Rule:
    name: str
    roles: frozenset[str]
    """The rule runs on a host that gets one of these roles (empty: on every host)."""
    check: RuleFunc
    doc: str

    def applies(self, host: HostView) -> bool:
        return not self.roles or bool(self.roles & host.roles)


RULES: list[Rule] = []


def rule(*roles: str) -> Callable[[RuleFunc], RuleFunc]:
    """Register a rule under its function's name for hosts that get one of ``roles``."""

    def register(func: RuleFunc) -> RuleFunc:
        doc = (func.__doc__ or "").strip().splitlines()[0] if func.__doc__ else ""
        RULES.append(Rule(func.__name__, frozenset(roles), func, doc))
        return func

    return register


def by_name(names: Iterable[str]) -> list[Rule]:
    known = {r.name: r for r in RULES}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise KeyError(f"no Hearth rule named {', '.join(unknown)} (known: {', '.join(known)})")
    return [known[n] for n in names]


def run_rules(host: HostView, rules: Sequence[Rule] | None = None) -> list[Finding]:
    """Every finding of ``rules`` (default: all that apply to the host's roles)."""
    found: list[Finding] = []
    for r in RULES if rules is None else rules:
        if rules is None and not r.applies(host):
            continue
        found.extend(r.check(host))
    return found


# ------------------------------------------------------------------------------------ helpers


_LOCKED = frozenset({"EncryptedString", "AnsibleVaultEncryptedUnicode", "VaultValue"})


def _is_template(value: object) -> bool:
    """A template the control node could not resolve, or a vaulted value it could not decrypt
    (no vault password given): unknown here, so not judged."""
    if type(value).__name__ in _LOCKED:
        return True
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _resolved_or(value: Any, stand_in: str) -> Any:
    """``value`` with every unresolved template string replaced by ``stand_in``."""
    if isinstance(value, Mapping):
        return {k: _resolved_or(v, stand_in) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolved_or(v, stand_in) for v in value]
    return stand_in if _is_template(value) else value


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _is_ip(value: object) -> bool:
    try:
        ipaddress.ip_address(str(value))
    except ValueError:
        return False
    return True


def _is_url(value: object, schemes: tuple[str, ...] = ("http", "https")) -> bool:
    if not isinstance(value, str) or any(c.isspace() for c in value):
        return False
    parsed = urlparse(value)
    try:
        parsed.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return False
    return parsed.scheme in schemes and bool(parsed.hostname)


def _positive(host: HostView, *names: str) -> Iterator[Finding]:
    for name in names:
        value = host.get(name)
        number = _int(value)
        if value is not None and (number is None or number <= 0):
            yield Finding(name, value, "expected a positive integer")


def _models(host: HostView) -> list[Any]:
    """The host's declared models (hearth.models.ModelSpec); [] when they do not parse (the
    schema and the model checks say why)."""
    from hearth.errors import HearthError
    from hearth.models import parse_models

    declared = host.get("hearth_models") or []
    try:
        return list(parse_models(declared))
    except (HearthError, TypeError, ValueError, AttributeError, KeyError):
        return []


# ---------------------------------------------------------------------------------- ports

_ZERO_MEANS_DEFAULT = frozenset({"prometheus_frontdoor_port"})


def _role_of(name: str, roles: Iterable[str]) -> str | None:
    return next((r for r in sorted(roles, key=len, reverse=True) if name.startswith(f"{r}_")), None)


@rule()
def ports_in_range(host: HostView) -> Iterator[Finding]:
    """Every port of the host's roles (``<role>_port``, ``<role>_*_port``, engine ports) is a TCP
    port, 1-65535."""
    for name in sorted(host.vars):
        if not (name.endswith("_port") and _role_of(name, host.roles)):
            continue
        value = host.vars[name]
        if value is None or (value == 0 and name in _ZERO_MEANS_DEFAULT):
            continue
        number = _int(value)
        if number is None or not 0 < number < 65536:
            yield Finding(name, value, "expected a TCP port from 1 to 65535")
    if "inference_engine" in host.roles:
        overrides = host.get("inference_engine_ports") or {}
        if isinstance(overrides, Mapping):
            for model, value in overrides.items():
                number = _int(value)
                if number is None or not 0 < number < 65536:
                    yield Finding(
                        f"inference_engine_ports.{model}", value, "expected a TCP port, 1-65535"
                    )


def service_ports(host: HostView) -> list[tuple[str, int, str]]:
    """(variable, port, service) of every Hearth service the host runs, engines excluded."""
    wanted = [
        ("node_exporter", "node_exporter_port", "node_exporter"),
        ("front_door", "front_door_port", "the front door"),
        ("prometheus", "prometheus_port", "Prometheus"),
        ("alertmanager", "alertmanager_port", "Alertmanager"),
    ]
    if host.get("dcgm_exporter_enabled", True):
        wanted.append(("dcgm_exporter", "dcgm_exporter_port", "the DCGM exporter"))
    if host.get("grafana_image"):
        wanted.append(("grafana", "grafana_port", "Grafana"))
    found: list[tuple[str, int, str]] = []
    for role, name, service in wanted:
        number = _int(host.get(name)) if role in host.roles else None
        if number is not None and 0 < number < 65536:
            found.append((name, number, service))
    return found


@rule()
def ports_unique(host: HostView) -> Iterator[Finding]:
    """No two Hearth services on one host (exporters, front door, monitoring, every engine, their
    default ports included) on one port; every ``inference_engine_ports`` entry names a model."""
    taken: dict[int, str] = {}
    owners: dict[int, str] = {}
    for name, port, service in service_ports(host):
        if port in taken:
            yield Finding(
                name,
                port,
                f"{service} and {taken[port]} would both listen on port {port}",
                related=(owners[port],),
            )
        else:
            taken[port] = f"{service} ({name})"
            owners[port] = name
    if "inference_engine" not in host.roles:
        return
    from hearth import engines

    overrides = host.get("inference_engine_ports") or {}
    if not isinstance(overrides, Mapping) or any(_int(v) is None for v in overrides.values()):
        return  # ports_in_range says what is wrong
    for problem in engines.port_problems(
        _models(host), {str(k): int(v) for k, v in overrides.items()}, taken
    ):
        yield Finding("inference_engine_ports", MISSING, problem)


# ------------------------------------------------------------------------------ front door


def front_door_key_problems(keys: object, min_length: int = MIN_API_KEY_LENGTH) -> list[str]:
    """What is wrong with the front door's API keys, each key named by its name (or position),
    never shown."""
    import hashlib

    if not isinstance(keys, list) or not keys:
        return [
            "front_door_api_keys is empty: declare at least one {name, key} in ansible-vault "
            "(a key: openssl rand -hex 32); the front door refuses to run without keys"
        ]
    problems: list[str] = []
    names: dict[str, str] = {}
    digests: dict[str, str] = {}
    for index, raw in enumerate(keys):
        entry = raw if isinstance(raw, Mapping) else {}
        label = f"front_door_api_keys[{index}]"
        name = entry.get("name")
        if not isinstance(name, str) or not _KEY_NAME.match(name):
            problems.append(f"{label}: name: expected letters, digits, '.', '_' or '-'")
        else:
            label = f"key {name!r}"
            if name in names:
                problems.append(f"{label}: the name is used twice ({names[name]})")
            names.setdefault(name, f"front_door_api_keys[{index}]")
        key = entry.get("key")
        if not isinstance(key, str) or not key:
            problems.append(f"{label}: key: required (a string, in ansible-vault)")
            continue
        if _is_template(key):
            continue  # resolved on the host (a variable the control node does not know)
        if len(key) < int(min_length):
            problems.append(
                f"{label}: shorter than {int(min_length)} characters: generate one with "
                "`openssl rand -hex 32`"
            )
        if key != key.strip() or any(c.isspace() for c in key):
            problems.append(f"{label}: contains white space (clients could not send it)")
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        if digest in digests:
            problems.append(f"{label}: the same key as {digests[digest]}")
        digests.setdefault(digest, label)
    return problems


def _is_vaulted(value: object) -> bool:
    """``value`` was in ansible-vault: encrypted alone (``encrypt_string``), or read from a file
    encrypted as a whole (``ansible-vault encrypt FILE``, what ``hearth tls init`` writes)."""
    try:
        from ansible.parsing.vault import VaultHelper
    except ImportError:  # pragma: no cover - ansible-core < 2.19
        return type(value).__name__ == "AnsibleVaultEncryptedUnicode"
    if VaultHelper.get_ciphertext(value, with_tags=False) is not None or (
        type(value).__name__ == "AnsibleVaultEncryptedUnicode"
    ):
        return True
    return _from_vaulted_file(value)


def _from_vaulted_file(value: object) -> bool:
    """ansible-core 2.19 tags each value with the file it came from (``Origin``); a whole-file
    vault decrypts to plain values, so the file itself tells."""
    try:
        from ansible._internal._datatag._tags import Origin
    except ImportError:  # pragma: no cover - no data tagging
        return False
    origin = Origin.get_tag(value)
    if origin is None or not origin.path:
        return False
    try:
        with Path(origin.path).open("rb") as stream:
            return stream.read(len(_VAULT_HEADER)) == _VAULT_HEADER
    except OSError:
        return False


_VAULT_HEADER = b"$ANSIBLE_VAULT;"


def _plain_in_production(host: HostView, key: str) -> Iterator[Finding]:
    """``key`` in plain text on a production host: it belongs in ansible-vault."""
    if host.get("hearth_environment") == "production" and not _is_vaulted(host.vaulted(key)):
        yield Finding(
            key, MASKED,
            "in plain text, but hearth_environment is production: encrypt it "
            "(ansible-vault encrypt_string, or ansible-vault encrypt the whole file)",
        )  # fmt: skip


@rule("front_door")
def front_door_keys(host: HostView) -> Iterator[Finding]:
    """At least one API key, each named, distinct, at least 32 characters (or
    ``front_door_min_key_length``), and in ansible-vault when ``hearth_environment`` is
    production."""
    minimum = _int(host.get("front_door_min_key_length", MIN_API_KEY_LENGTH))
    if minimum is None or minimum < MIN_API_KEY_LENGTH:
        yield Finding(
            "front_door_min_key_length",
            host.get("front_door_min_key_length"),
            f"expected at least {MIN_API_KEY_LENGTH} (Hearth's minimum key length)",
        )
        minimum = MIN_API_KEY_LENGTH
    keys = host.get("front_door_api_keys") or []
    for problem in front_door_key_problems(keys, minimum):
        yield Finding("front_door_api_keys", MISSING, problem)
    if host.get("hearth_environment") != "production" or not isinstance(keys, list):
        return
    raw = host.vaulted("front_door_api_keys")
    raw_keys = raw if isinstance(raw, list) and len(raw) == len(keys) else [None] * len(keys)
    for index, (entry, raw_entry) in enumerate(zip(keys, raw_keys, strict=True)):
        raw_key = raw_entry.get("key") if isinstance(raw_entry, Mapping) else None
        if isinstance(entry, Mapping) and entry.get("key") and not _is_vaulted(raw_key):
            label = entry.get("name") or f"#{index}"
            yield Finding(
                f"front_door_api_keys[{index}].key",
                MASKED,
                f"key {label!r} is in plain text, but hearth_environment is production: encrypt "
                "it (ansible-vault encrypt_string, or ansible-vault encrypt the whole file)",
            )


@rule("front_door")
def front_door_settings(host: HostView) -> Iterator[Finding]:
    """The front door binds to an IP address; its timeouts, body limit and prompt retention (days)
    are positive."""
    address = host.get("front_door_bind_address", "0.0.0.0")  # noqa: S104 - the default
    if not _is_ip(address):
        yield Finding("front_door_bind_address", address, "expected an IP address")
    yield from _positive(
        host, "front_door_connect_timeout", "front_door_read_timeout", "front_door_max_body_bytes",
        "front_door_prompt_retention_days",
    )  # fmt: skip


@rule("front_door")
def front_door_tls(host: HostView) -> Iterator[Finding]:
    """``front_door_tls`` (on unless the inventory declares it false): a certificate and key (the
    site's own, ``front_door_tls_cert`` and ``front_door_tls_key`` in ansible-vault, else those of
    ``hearth tls init``) that match, are valid now and whose SAN covers the host's address. Left
    at its default with no certificate at all, one finding says the three ways on."""
    from hearth import tls

    enabled = host.get("front_door_tls", True)
    if not isinstance(enabled, bool):
        yield Finding("front_door_tls", enabled, "expected true (HTTPS) or false (plain HTTP)")
        return
    if not enabled:
        return
    cert, key = host.get("front_door_tls_cert") or "", host.get("front_door_tls_key") or ""
    if not cert and not key and host.vaulted("front_door_tls") is None:  # left at its default
        _, cert_path, key_path = _issued_files(host)
        if not cert_path.is_file() or not key_path.is_file():
            yield Finding(
                "", MISSING,
                "front_door_tls is on by default (the front door serves HTTPS only), but there "
                f"is no certificate for {host.name} in {cert_path.parent} and no "
                "front_door_tls_cert/front_door_tls_key: run `hearth tls init -i INVENTORY "
                "--vault-password-file FILE` (it issues the site's CA and the host's "
                "certificate), or give front_door_tls_cert and front_door_tls_key (in "
                "ansible-vault), or declare front_door_tls: false for plain HTTP",
            )  # fmt: skip
            return
    if bool(cert) != bool(key):
        missing = "front_door_tls_key" if cert else "front_door_tls_cert"
        yield Finding(
            missing, MISSING,
            "required with the other one (both: the site's own certificate and key; neither: "
            "the ones `hearth tls init` issues)",
        )  # fmt: skip
        return
    if cert:
        if not isinstance(cert, str) or not isinstance(key, str):
            yield Finding("front_door_tls_cert", MISSING, "expected PEM text (cert and key)")
            return
        where, cert_pem, key_pem = "front_door_tls_cert", cert.encode(), key.encode()
        yield from _plain_in_production(host, "front_door_tls_key")
    else:
        yield from site_certificate_findings(
            host, "front_door_tls", "front_door_tls_cert",
            "or declare the site's own front_door_tls_cert and front_door_tls_key, or "
            "front_door_tls: false for plain HTTP",
        )  # fmt: skip
        return
    names = [str(host.get("ansible_host") or host.name)]
    for problem in tls.certificate_problems(cert_pem, key_pem, names):
        yield Finding(
            "front_door_tls_cert", MISSING, f"{where}: {problem}", related=("front_door_tls",)
        )


def _issued_files(host: HostView) -> tuple[str, Path, Path]:
    """The host's site and the certificate and key ``hearth tls init`` issued (or would) for it."""
    from hearth import tls

    site = tls.site_name(host.get("hearth_site"), host.vars.get("inventory_dir"))
    cert_path, key_path = tls.host_files(site, host.name)
    return site, cert_path, key_path


def site_certificate_findings(
    host: HostView, switch: str, cert_key: str, otherwise: str
) -> Iterator[Finding]:
    """The host's certificate and key of ``hearth tls init`` (``$HEARTH_HOME/tls/<site>/hosts/``):
    present, matching, valid now, issued by the site's CA, their SAN covering the host's address.
    ``switch`` is the variable that asks for them, ``cert_key`` the key findings are named by."""
    from hearth import tls

    site, cert_path, key_path = _issued_files(host)
    if not cert_path.is_file() or not key_path.is_file():
        yield Finding(
            switch, True,
            f"no certificate for {host.name} in {cert_path.parent}: run `hearth tls init -i "
            f"INVENTORY` ({otherwise})",
        )  # fmt: skip
        return
    ca_path = tls.site_dir(site) / "ca.crt"
    ca_pem = ca_path.read_bytes() if ca_path.is_file() else None
    names = [str(host.get("ansible_host") or host.name)]
    for problem in tls.certificate_problems(
        cert_path.read_bytes(), key_path.read_bytes(), names, ca_pem=ca_pem
    ):
        yield Finding(cert_key, MISSING, f"{cert_path}: {problem}", related=(switch,))


@rule("front_door")
def front_door_routes(host: HostView) -> Iterator[Finding]:
    """Some host of ``front_door_inference_group`` declares a model: else nothing to route."""
    group = str(host.get("front_door_inference_group") or "inference")
    if not host.groups:
        return
    if any(peer.get("hearth_models") for peer in host.peers(group)):
        return
    yield Finding(
        "front_door_inference_group",
        group,
        f"no host of the group {group} declares a model (hearth_models): the front door would "
        "have nothing to route to",
    )


def _key_entries(host: HostView) -> list[tuple[str, Mapping[str, Any]]]:
    """(label, entry) of each declared API key: ``key 'NAME'`` or its position."""
    keys = host.get("front_door_api_keys") or []
    found = []
    for index, entry in enumerate(keys if isinstance(keys, list) else []):
        if isinstance(entry, Mapping):
            name = entry.get("name")
            label = f"key {name!r}" if isinstance(name, str) and name else f"#{index}"
            found.append((label, entry))
    return found


def _routed_models(host: HostView) -> set[str]:
    """The models the front door routes: those declared on its inference group's hosts."""
    group = str(host.get("front_door_inference_group") or "inference")
    names: set[str] = set()
    for peer in host.peers(group):
        for model in peer.get("hearth_models") or []:
            if isinstance(model, Mapping) and model.get("name"):
                names.add(str(model["name"]))
    return names


def _aliases(host: HostView) -> Mapping[str, Any]:
    aliases = host.get("hearth_model_aliases") or {}
    return aliases if isinstance(aliases, Mapping) else {}


@rule("front_door")
def front_door_key_models(host: HostView) -> Iterator[Finding]:
    """Each key's ``models`` names models the front door routes (or their aliases)."""
    if not host.groups:
        return
    known = _routed_models(host) | {str(a) for a in _aliases(host)}
    for label, entry in _key_entries(host):
        models = entry.get("models")
        if models is None:
            continue
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
            yield Finding("front_door_api_keys", MISSING, f"{label}: models: expected a list of "
                          "model names")  # fmt: skip
            continue
        for model in models:
            if model not in known and not _is_template(model):
                yield Finding(
                    "front_door_api_keys",
                    MISSING,
                    f"{label}: models: {model!r} is not a model the front door routes (known: "
                    f"{', '.join(sorted(known)) or 'none'})",
                )


@rule("front_door")
def front_door_key_limits(host: HostView) -> Iterator[Finding]:
    """Each key's ``rpm``, ``tpm``, ``max_concurrent`` and ``tokens_per_day`` is a positive
    integer."""
    from hearth.frontdoor.policy import COUNTS

    for label, entry in _key_entries(host):
        for name in COUNTS:
            value = entry.get(name)
            if value is None or _is_template(value):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                yield Finding(
                    "front_door_api_keys",
                    MISSING,
                    f"{label}: {name} = {value!r}: expected a positive integer (leave it out for "
                    "no limit)",
                )


@rule("front_door")
def front_door_key_expiry(host: HostView) -> Iterator[Finding]:
    """Each key's ``expires`` (and a rotated value's ``until``) is a date or an ISO time."""
    import datetime as dt

    from hearth.frontdoor.policy import parse_expiry

    def problem(value: object) -> str | None:
        if value is None or _is_template(value):
            return None
        try:
            parse_expiry(value.isoformat() if isinstance(value, dt.date) else value)
        except ValueError as e:
            return str(e)
        return None

    for label, entry in _key_entries(host):
        said = problem(entry.get("expires"))
        if said:
            yield Finding("front_door_api_keys", MISSING, f"{label}: expires: {said}")
        for index, old in enumerate(entry.get("previous") or []):
            said = problem(old.get("until") if isinstance(old, Mapping) else "?")
            if said:
                yield Finding(
                    "front_door_api_keys", MISSING, f"{label}: previous[{index}].until: {said}"
                )


@rule("front_door")
def model_aliases(host: HostView) -> Iterator[Finding]:
    """Each alias of ``hearth_model_aliases`` names a model the front door routes, and none
    shadows a model's own name."""
    if not host.groups:
        return
    raw = host.get("hearth_model_aliases")
    if raw is not None and not isinstance(raw, Mapping):
        yield Finding("hearth_model_aliases", raw, "expected a mapping {alias: model}")
        return
    routed = _routed_models(host)
    for alias, target in _aliases(host).items():
        if alias in routed:
            yield Finding(
                f"hearth_model_aliases.{alias}", target,
                f"the alias {alias!r} is the name of a model: it would shadow that model",
            )  # fmt: skip
        elif target not in routed and not _is_template(target):
            yield Finding(
                f"hearth_model_aliases.{alias}", target,
                f"no model {target!r} is routed (models: {', '.join(sorted(routed)) or 'none'})",
            )  # fmt: skip


# ----------------------------------------------------------------------------------- engines


@rule("inference_engine")
def engine_settings(host: HostView) -> Iterator[Finding]:
    """The engines bind to an IP address; the health timeout and delay are positive. Engines
    on loopback (the default) are reached by the front door of their own host only: a host
    whose models a front door elsewhere routes to, or that no front door relays to Prometheus,
    must publish them on an address of the service network (docs/inference.md)."""
    address = host.get("inference_engine_bind_address", "127.0.0.1")
    if not _is_ip(address):
        yield Finding(
            "inference_engine_bind_address",
            address,
            "expected an IP address (127.0.0.1 for this host only, 0.0.0.0 for every interface)",
        )
    elif ipaddress.ip_address(str(address)).is_loopback and _models(host):
        doors = list(host.groups.get("frontdoor", ())) if host.groups else []
        watched = bool(host.groups.get("monitoring")) if host.groups else False
        if doors and host.name not in doors:
            yield Finding(
                "inference_engine_bind_address",
                address,
                f"the engines listen on loopback only, but the front door on {', '.join(doors)} "
                "reaches them over the network: set the host's address on the service network "
                "(the audit's listener check then expects the engines there)",
            )
        elif watched and host.name not in doors:
            yield Finding(
                "inference_engine_bind_address",
                address,
                "the engines listen on loopback only and no front door on this host relays "
                "their metrics to Prometheus: run the front door here, or set the host's address "
                "on the service network",
            )
    yield from _positive(host, "inference_engine_health_timeout", "inference_engine_health_delay")


@rule("inference_engine")
def canary_rollout(host: HostView) -> Iterator[Finding]:
    """A model with a canary share rolls out beside its live engine (both versions serve)."""
    models = _models(host)
    if not any(m.canary_share for m in models):
        return
    from hearth.errors import HearthError
    from hearth.models import parse_gpus
    from hearth.plan import rollout_how

    strategy = str(host.get("inference_engine_rollout_strategy") or "auto")
    try:
        gpus = parse_gpus(host.get("hearth_declared_gpus") or [])
    except (HearthError, TypeError, ValueError):
        gpus = []
    for index, model in enumerate(models):
        if not model.canary_share:
            continue
        if strategy == "auto" and not gpus and not model.on_cpu:
            continue  # the GPUs are known from facts only: the role decides with them
        try:
            how = rollout_how(host.name, models, gpus, model.name, strategy)
        except HearthError:
            continue  # an unknown strategy: the role's argument spec names it
        if how.how == "drain":
            yield Finding(
                f"hearth_models[{index}].canary_share",
                model.canary_share,
                f"model {model.name}: a canary share needs the new version running beside the "
                f"old one, but its rollout on {host.name} is drain-first ({how.why}); remove "
                "canary_share, or make both versions fit (inference_engine_rollout_strategy: "
                "beside, or fewer GPUs per model)",
                related=("inference_engine_rollout_strategy",),
            )


def _pinned(host: HostView, image_var: str, archive_var: str, sha_var: str) -> Iterator[Finding]:
    image = host.get(image_var) or ""
    if image and not _DIGEST_PINNED.match(str(image)):
        yield Finding(
            image_var, image, "expected an image pinned by digest (NAME:TAG@sha256:<64 hex>)"
        )
    if host.get(archive_var) and not _SHA256.match(str(host.get(sha_var) or "")):
        yield Finding(
            sha_var,
            host.get(sha_var) or MISSING,
            f"{archive_var} is set: expected its sha256 (64 hex digits)",
        )


@rule("inference_engine")
def engine_images(host: HostView) -> Iterator[Finding]:
    """A host that runs vLLM models has ``inference_engine_vllm_image`` pinned by digest."""
    vllm = [m.name for m in _models(host) if m.engine == "vllm"]
    if not vllm:
        return
    image = host.get("inference_engine_vllm_image") or ""
    if not _DIGEST_PINNED.match(str(image)):
        yield Finding(
            "inference_engine_vllm_image",
            image or MISSING,
            f"{', '.join(vllm)} run on vLLM: expected the site's mirror of the vLLM image pinned "
            "by digest (registry/vllm/vllm-openai@sha256:<64 hex>)",
        )


# -------------------------------------------------------------------------------- monitoring


@rule("grafana")
def grafana_settings(host: HostView) -> Iterator[Finding]:
    """Grafana's image is pinned by digest, its archive has a sha256, the admin password has at
    least 12 characters."""
    if not host.get("grafana_image"):
        return
    yield from _pinned(
        host, "grafana_image", "grafana_image_archive", "grafana_image_archive_sha256"
    )
    password = host.get("grafana_admin_password") or ""
    if len(str(password)) < MIN_GRAFANA_PASSWORD:
        yield Finding(
            "grafana_admin_password",
            MASKED,
            f"expected at least {MIN_GRAFANA_PASSWORD} characters (kept in ansible-vault)",
        )


@rule("dcgm_exporter")
def dcgm_exporter_image(host: HostView) -> Iterator[Finding]:
    """A DCGM exporter image, when set, is pinned by digest, and its archive has a sha256."""
    if host.get("dcgm_exporter_enabled", True):
        yield from _pinned(
            host,
            "dcgm_exporter_image",
            "dcgm_exporter_image_archive",
            "dcgm_exporter_image_archive_sha256",
        )


def _url_problem(value: object) -> str | None:
    return None if _is_url(value) else "expected an http(s) URL (scheme://host[:port]/…)"


@rule("alertmanager")
def alertmanager_receivers(host: HostView) -> Iterator[Finding]:
    """Receivers are named and typed; Slack and webhook URLs are URLs; an e-mail receiver has
    ``alertmanager_smtp`` (smarthost, from)."""
    from hearth.monitoring import MonitoringError, alertmanager_config

    stand_in = "https://resolved-on-the-host.invalid/"  # a template the control node cannot fill
    receivers = _resolved_or(host.get("alertmanager_receivers") or [], stand_in)
    smtp = _resolved_or(host.get("alertmanager_smtp") or {}, stand_in)
    try:
        alertmanager_config(receivers, smtp=smtp)
    except MonitoringError as exc:
        for problem in str(exc).split("; "):
            yield Finding("alertmanager_receivers", MISSING, problem.strip())
    except (TypeError, AttributeError, ValueError) as exc:
        yield Finding("alertmanager_receivers", MISSING, f"cannot be read: {exc}")
        return
    if not isinstance(receivers, list):
        return
    for index, entry in enumerate(receivers):
        if not isinstance(entry, Mapping):
            continue
        field_name = {"slack": "api_url", "webhook": "url"}.get(str(entry.get("type")))
        if field_name is None or field_name not in entry:
            continue
        url = entry.get(field_name)
        if isinstance(url, str) and url.startswith(("http://", "https://")) and not _is_url(url):
            yield Finding(
                f"alertmanager_receivers[{index}].{field_name}",
                MASKED,
                f"receiver {entry.get('name')!r}: {_url_problem(url)}",
            )


@rule("node_exporter", "prometheus", "alertmanager", "grafana")
def monitoring_tls(host: HostView) -> Iterator[Finding]:
    """``monitoring_tls`` (on unless the inventory declares it false): a basic-auth password
    (``monitoring_web_password``, at least 16 characters, in ansible-vault in production) and the
    host's certificate of ``hearth tls init`` (present, matching its key, valid, from the site's
    CA, covering the host's address). Left at its default with neither there, one finding says
    the three ways on."""
    from hearth.monitoring.webauth import MIN_PASSWORD_LENGTH

    enabled = host.get("monitoring_tls", True)
    if not isinstance(enabled, bool):
        yield Finding("monitoring_tls", enabled, "expected true (HTTPS and basic auth) or false")
        return
    if not enabled:
        return
    password = host.get("monitoring_web_password") or ""
    _, cert_path, key_path = _issued_files(host)
    issued = cert_path.is_file() and key_path.is_file()
    if host.get("monitoring_tls") is None and not password and not issued:
        yield Finding(
            "", MISSING,
            "monitoring_tls is on by default (HTTPS and basic auth on Prometheus, Alertmanager "
            "and node_exporter), "
            f"but there is no certificate for {host.name} in {cert_path.parent} and no "
            f"monitoring_web_password: {_monitoring_tls_remedy()}",
        )  # fmt: skip
        return
    if not password:
        yield Finding(
            "monitoring_web_password", MISSING,
            "required with monitoring_tls: the basic-auth password of Prometheus, Alertmanager "
            f"and node_exporter: {_monitoring_tls_remedy()}",
            related=("monitoring_tls",),
        )  # fmt: skip
    elif not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        yield Finding(
            "monitoring_web_password", MASKED,
            f"expected at least {MIN_PASSWORD_LENGTH} characters (kept in ansible-vault)",
        )  # fmt: skip
    else:
        yield from _plain_in_production(host, "monitoring_web_password")
    user = host.get("monitoring_web_user", "hearth")
    if not isinstance(user, str) or not _KEY_NAME.match(user):
        yield Finding("monitoring_web_user", user, "expected a user name (letters, digits, . _ -)")
    yield from site_certificate_findings(
        host, "monitoring_tls", "monitoring_tls",
        "or monitoring_tls: false for plain HTTP without authentication",
    )  # fmt: skip


def _monitoring_tls_remedy() -> str:
    """The three ways on when monitoring_tls lacks its certificate or password."""
    return (
        "run `hearth tls init -i INVENTORY --vault-password-file FILE` (it issues the "
        "certificates and writes a random monitoring_web_password into an ansible-vault file "
        "of the inventory), or add monitoring_web_password (16+ characters) to ansible-vault "
        "and run `hearth tls init -i INVENTORY`, or declare monitoring_tls: false (plain "
        "HTTP without authentication)"
    )


_LOOPBACK = ("127.0.0.1", "::1", "localhost")


@rule("prometheus")
def prometheus_settings(host: HostView) -> Iterator[Finding]:
    """The admin API (snapshots for ``hearth backup``, series deletion) has no authentication:
    ``prometheus_admin_api`` only with ``prometheus_listen_address`` on loopback."""
    if host.get("prometheus_admin_api") is True:
        listen = host.get("prometheus_listen_address", "0.0.0.0")  # noqa: S104 - the role default
        if str(listen) not in _LOOPBACK:
            yield Finding(
                "prometheus_listen_address",
                listen,
                "prometheus_admin_api is true, and the admin API has no authentication: set "
                "prometheus_listen_address to 127.0.0.1, or leave prometheus_admin_api false",
                related=("prometheus_admin_api",),
            )


def _declared_models(host: HostView) -> set[str]:
    names: set[str] = set()
    for peer in host.peers():
        if "inference_engine" not in peer.roles and "model_store" not in peer.roles:
            continue
        for model in peer.get("hearth_models") or []:
            if isinstance(model, Mapping) and model.get("name"):
                names.add(str(model["name"]))
    return names


@rule("canary")
def canary_settings(host: HostView) -> Iterator[Finding]:
    """At least one question, a positive timeout, at least 3 baseline runs, an http(s) front door
    URL when one is set."""
    for name, minimum in (
        ("canary_min_questions", 1),
        ("canary_timeout", 1),
        ("canary_baseline_runs", 3),
    ):
        value = host.get(name)
        number = _int(value)
        if value is not None and (number is None or number < minimum):
            yield Finding(name, value, f"expected an integer of at least {minimum}")
    url = host.get("canary_frontdoor_url") or ""
    if url and not _is_url(url):
        yield Finding("canary_frontdoor_url", url, "expected an http(s) URL")


@rule("canary")
def canary_questions(host: HostView) -> Iterator[Finding]:
    """Question sets are for declared models; every golden question has a check; ids, checks
    and regexes are valid."""
    from hearth.canary import validate_config

    sets = host.get("canary_question_sets") or {}
    if not isinstance(sets, Mapping):
        return
    if host.groups:
        declared = _declared_models(host)
        for name in sorted(set(map(str, sets)) - declared):
            known = ", ".join(sorted(declared)) or "none"
            yield Finding(
                f"canary_question_sets.{name}",
                MISSING,
                f"no host declares a model named {name!r} in hearth_models (declared: {known})",
            )
    default = host.get("canary_questions") or []
    for label, questions in [("canary_questions", default)] + [
        (f"canary_question_sets.{k}", v) for k, v in sets.items()
    ]:
        if not isinstance(questions, list):
            yield Finding(label, MISSING, "expected a list of questions")
            continue
        for index, question in enumerate(questions):
            if not isinstance(question, Mapping):
                continue
            if question.get("kind", "golden") == "golden" and not question.get("checks"):
                yield Finding(
                    f"{label}[{index}].checks",
                    MISSING,
                    f"golden question {question.get('id')!r} has no check: it could never fail "
                    "(add checks, or kind: injection)",
                )
        config = {"models": [{"model": label, "url": "-", "questions": questions}]}
        for problem in validate_config(config):
            yield Finding(label, MISSING, problem.replace(f"model {label!r}: ", ""))


# --------------------------------------------------------------------------------- base, GPU


@rule("common")
def common_limits(host: HostView) -> Iterator[Finding]:
    """``common_limit_memlock`` is a number of KiB or ``unlimited``."""
    value = host.get("common_limit_memlock")
    if value is not None and value != "unlimited" and not re.match(r"^[0-9]+$", str(value)):
        yield Finding("common_limit_memlock", value, "expected a number of KiB or 'unlimited'")


@rule("container_runtime")
def container_runtime_settings(host: HostView) -> Iterator[Finding]:
    """A toolkit mirror has its URL; the toolkit version is exact (1.17.8)."""
    if host.get("container_runtime_toolkit_source") == "mirror" and not host.get(
        "container_runtime_mirror_url"
    ):
        yield Finding(
            "container_runtime_mirror_url",
            MISSING,
            "container_runtime_toolkit_source is mirror: expected the mirror's URL",
        )
    version = host.get("container_runtime_toolkit_version")
    if version is not None and not _VERSION.match(str(version)):
        yield Finding(
            "container_runtime_toolkit_version", version, "expected a version such as 1.17.8"
        )


@rule("cuda")
def cuda_pins(host: HostView) -> Iterator[Finding]:
    """CUDA is a release (12.4), has packages, an absolute home, and NVIDIA's toolkit comes from
    the repository the driver role adds."""
    version = host.get("cuda_version")
    if version is not None and not _CUDA_VERSION.match(str(version)):
        yield Finding("cuda_version", version, "expected a release such as 12.4")
    if "cuda_packages" in host.vars and not host.get("cuda_packages"):
        yield Finding("cuda_packages", host.get("cuda_packages"), "expected at least one package")
    home = host.get("cuda_home")
    if home is not None and not str(home).startswith("/"):
        yield Finding("cuda_home", home, "expected an absolute path")
    source = host.get("cuda_source", "distribution")
    driver_source = host.get("nvidia_driver_source", "distribution")
    if source != "distribution" and "nvidia_driver" in host.roles and driver_source != source:
        yield Finding(
            "cuda_source",
            source,
            f"NVIDIA's toolkit packages come from the repository the nvidia_driver role adds: "
            f"set nvidia_driver_source: {source} as well (it is {driver_source!r})",
        )


@rule("nvidia_driver")
def driver_pins(host: HostView) -> Iterator[Finding]:
    """The driver is an exact version of the declared branch; a mirror has its URL."""
    version = host.get("nvidia_driver_version")
    branch = host.get("nvidia_driver_branch")
    if version is not None:
        text = str(version)
        if not _VERSION.match(text):
            yield Finding(
                "nvidia_driver_version", version, "expected an exact version such as 550.127.08"
            )
        elif branch is not None and text.split(".")[0] != str(branch):
            yield Finding(
                "nvidia_driver_version",
                version,
                f"not a version of the declared nvidia_driver_branch {branch} "
                f"(expected {branch}.xx.yy, or change the branch)",
            )
    if host.get("nvidia_driver_source") == "mirror" and not host.get("nvidia_driver_mirror_url"):
        yield Finding(
            "nvidia_driver_mirror_url", MISSING, "nvidia_driver_source is mirror: expected its URL"
        )


@rule("nvidia_driver", "cuda")
def gpu_compat(host: HostView) -> Iterator[Finding]:
    """Driver, CUDA and the declared GPU models fit together (errors); an unknown GPU model or a
    limit of the combination is a warning."""
    from hearth import compat

    variables = dict(host.vars)
    if "nvidia_driver" not in host.roles:
        variables.pop("nvidia_driver_gpu_models", None)
    if "cuda" not in host.roles:
        variables.pop("cuda_version", None)
    if not _VERSION.match(str(variables.get("nvidia_driver_version") or "")):
        return  # driver_pins says what is wrong
    for finding in compat.check_vars(variables):
        key = (
            "nvidia_driver_gpu_models"
            if finding.code.startswith("gpu")
            else ("cuda_version" if finding.code.startswith("cuda") else "nvidia_driver_version")
        )
        yield Finding(key, MISSING, finding.message, finding.level)


@rule("model_store")
def model_store_settings(host: HostView) -> Iterator[Finding]:
    """``model_store_keep_versions`` is 0 or more."""
    value = host.get("model_store_keep_versions")
    number = _int(value)
    if value is not None and (number is None or number < 0):
        yield Finding("model_store_keep_versions", value, "expected 0 or more")
