"""TLS and basic auth for Prometheus, Alertmanager and node_exporter (``monitoring_tls``).

Each of them reads the exporter-toolkit's web configuration (``--web.config.file``)::

    tls_server_config: {cert_file: …, key_file: …}   the host's certificate from the site's CA
    basic_auth_users: {<user>: <bcrypt hash>}        the password itself never reaches the host

The hash is bcrypt with a salt derived from the host's name, the user and the password, so the
same inputs give the same file on every run (a second converge changes nothing) and a new
password gives a new salt. Prometheus, the one client, gets the plain password in a file of its
own (``password_file``) and the site's CA to check every target's certificate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

__all__ = [
    "BCRYPT_COST",
    "MIN_PASSWORD_LENGTH",
    "TLS_JOBS",
    "WebFiles",
    "bcrypt_hash",
    "client_settings",
    "password_verifies",
    "web_config",
]

BCRYPT_COST = 10
"""exporter-toolkit checks the hash on each request (and caches a success): 10 keeps a scrape
cheap while staying bcrypt's usual cost."""
MIN_PASSWORD_LENGTH = 16
TLS_JOBS = ("prometheus", "alertmanager", "node")
"""The scrape jobs whose targets serve the web configuration (the engines, the DCGM exporter and
the front door keep their own)."""

_BCRYPT_ALPHABET = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


class WebFiles:
    """Where the web configuration lives on a host (node_exporter's tasks/web.yml writes them)."""

    directory = "/etc/prometheus/web"
    cert = "/etc/prometheus/web/tls.crt"
    key = "/etc/prometheus/web/tls.key"
    ca = "/etc/prometheus/web/ca.crt"
    config = "/etc/prometheus/web/web.yml"
    password = "/etc/prometheus/scrape-password"  # noqa: S105 - a path (the monitoring hosts)


def _salt(seed: str, user: str, password: str) -> bytes:
    """bcrypt's 22-character salt (16 bytes in bcrypt's base64), from the inputs only."""
    digest = hashlib.sha256(b"\0".join(s.encode() for s in ("hearth-web", seed, user, password)))
    bits = int.from_bytes(digest.digest()[:16], "big") << 4  # 128 bits in 22 six-bit digits
    chars = [_BCRYPT_ALPHABET[(bits >> (6 * i)) & 63] for i in reversed(range(22))]
    return f"$2b${BCRYPT_COST:02d}${''.join(chars)}".encode()


def bcrypt_hash(password: str, seed: str, user: str = "hearth") -> str:
    """The bcrypt hash of ``password`` with a salt derived from ``seed`` (the host), ``user`` and
    the password: the same inputs always give the same hash."""
    import bcrypt

    if not password:
        raise ValueError("monitoring_web_password is empty")
    return bcrypt.hashpw(password.encode(), _salt(seed, user, password)).decode()


def password_verifies(password: str, hashed: str) -> bool:
    import bcrypt

    try:
        return bool(bcrypt.checkpw(password.encode(), hashed.encode()))
    except ValueError:
        return False


def web_config(
    password: str, seed: str, user: str = "hearth", files: type[WebFiles] = WebFiles
) -> dict[str, Any]:
    """The exporter-toolkit web configuration of one host, as data."""
    return {
        "tls_server_config": {"cert_file": files.cert, "key_file": files.key},
        "basic_auth_users": {user: bcrypt_hash(password, seed, user)},
    }


def client_settings(
    user: str, server_name: str | None = None, files: type[WebFiles] = WebFiles
) -> dict[str, Any]:
    """What Prometheus adds to a scrape job (or an Alertmanager entry) whose targets serve the web
    configuration: HTTPS checked against the site's CA, basic auth from its password file."""
    tls: dict[str, Any] = {"ca_file": files.ca}
    if server_name:
        tls["server_name"] = server_name
    return {
        "scheme": "https",
        "tls_config": tls,
        "basic_auth": {"username": user, "password_file": files.password},
    }


def with_client_settings(
    config: Mapping[str, Any], user: str, server_name: str | None = None
) -> dict[str, Any]:
    return {**dict(config), **client_settings(user, server_name)}
