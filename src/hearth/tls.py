"""``hearth tls init``: a per-site certificate authority on the control node, and a certificate
for each front door host with the SAN entries clients use to reach it. Python's ``cryptography``
only (no openssl shell-outs).

Layout (``$HEARTH_HOME/tls/<site>/``, the directory 0700, keys 0600)::

    ca.crt  ca.key                   the site's CA (ECDSA P-256, 10 years); clients trust ca.crt
    hosts/<host>.crt  <host>.key     one per front door host, and per host of the monitoring
                                     layer unless ``monitoring_tls`` is false (ECDSA P-256, 1 year),
                                     SAN: the inventory name, its ansible_host (IP or DNS name)

Re-running issues only what is missing, expired within 30 days, or no longer covers the host's
names. :func:`certificate_problems` is the check the preflight runs on a host's certificate and key
(the key does not match, the certificate has expired or is not yet valid, a SAN does not cover
the host's address or name).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "Issued",
    "certificate_problems",
    "host_files",
    "hosts_to_issue",
    "init_site",
    "issue_host",
    "load_or_create_ca",
    "served_problems",
    "site_dir",
    "site_name",
]

CA_DAYS = 3650
HOST_DAYS = 365
RENEW_BEFORE = dt.timedelta(days=30)
AUDIT_MARGIN = dt.timedelta(days=14)
"""The audit fails a served certificate that expires within this (``hearth tls init`` renews
within 30 days; a site's own certificate is the site's to renew)."""


def site_name(hearth_site: object, inventory_dir: object) -> str:
    """The site a CA belongs to: ``hearth_site``, else the name of the inventory's directory (the
    directory of the file that declares the hosts: Ansible's ``inventory_dir``)."""
    if isinstance(hearth_site, str) and hearth_site:
        return hearth_site
    return Path(str(inventory_dir)).name if inventory_dir else "default"


def site_dir(site: str) -> Path:
    """``$HEARTH_HOME/tls/<site>/``: the CA and host certificates of ``hearth tls init``."""
    from hearth import paths

    return paths.hearth_home() / "tls" / site


def host_files(site: str, host: str) -> tuple[Path, Path]:
    """The certificate and key ``hearth tls init`` issued for ``host`` of ``site``."""
    directory = site_dir(site) / "hosts"
    return directory / f"{host}.crt", directory / f"{host}.key"


def served_problems(
    served_pem: bytes, deployed_pem: bytes, now: dt.datetime | None = None,
    margin: dt.timedelta = AUDIT_MARGIN,
) -> list[str]:  # fmt: skip
    """What is wrong with the certificate a server presents: not the deployed one (the first of
    ``deployed_pem``, a chain possibly), expired or expiring within ``margin``."""
    try:
        served = x509.load_pem_x509_certificate(served_pem)
    except ValueError:
        return ["no certificate was presented (is it serving HTTPS?)"]
    deployed = x509.load_pem_x509_certificate(deployed_pem)
    problems = []
    if served.fingerprint(hashes.SHA256()) != deployed.fingerprint(hashes.SHA256()):
        problems.append(
            f"serves the certificate {served.fingerprint(hashes.SHA256()).hex()[:16]}…, not the "
            f"deployed {deployed.fingerprint(hashes.SHA256()).hex()[:16]}… (restarted since?)"
        )
    moment = now or _now()
    if served.not_valid_after_utc <= moment + margin:
        problems.append(
            f"the served certificate expires {served.not_valid_after_utc:%Y-%m-%d %H:%M} UTC "
            f"(within {margin.days} days)"
        )
    return problems


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)
    path.chmod(mode)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _san_entries(names: Iterable[str]) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return entries


CA = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def load_or_create_ca(directory: Path, site: str) -> CA:
    cert_path, key_path = directory / "ca.crt", directory / "ca.key"
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cert, key
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Hearth site CA {site}")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(key_path, _key_pem(key), 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert, key


@dataclass(frozen=True)
class Issued:
    host: str
    cert: Path
    key: Path
    action: str  # issued, renewed, kept


def issue_host(
    directory: Path,
    ca: CA,
    host: str,
    names: Sequence[str],
) -> Issued:
    """The host's certificate, issued when missing, due or no longer covering ``names``."""
    cert_path = directory / "hosts" / f"{host}.crt"
    key_path = directory / "hosts" / f"{host}.key"
    if cert_path.exists() and key_path.exists():
        problems = certificate_problems(
            cert_path.read_bytes(), key_path.read_bytes(), names, ca_pem=None,
            renew_before=RENEW_BEFORE,
        )  # fmt: skip
        if not problems:
            return Issued(host, cert_path, key_path, "kept")
    action = "renewed" if cert_path.exists() else "issued"
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=HOST_DAYS))
        .add_extension(x509.SubjectAlternativeName(_san_entries([host, *names])), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(key_path, _key_pem(key), 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return Issued(host, cert_path, key_path, action)


MONITORING_ROLES = frozenset({"node_exporter", "prometheus", "alertmanager"})
"""The roles that serve the web configuration of ``monitoring_tls``."""


def hosts_to_issue(
    roles: Mapping[str, Sequence[str]], hostvars: Mapping[str, Mapping[str, object]]
) -> dict[str, list[str]]:
    """Host -> its address, for every host that needs a certificate of the site: the front door
    hosts, and the hosts of the monitoring layer unless their ``monitoring_tls`` is false."""
    wanted: dict[str, list[str]] = {}
    for host, host_roles in roles.items():
        variables = hostvars.get(host, {})
        on = variables.get("monitoring_tls", True) is True  # on unless declared false
        monitored = on and MONITORING_ROLES & set(host_roles)
        if "front_door" in host_roles or monitored:
            wanted[host] = [str(variables.get("ansible_host") or host)]
    return wanted


def init_site(directory: Path, site: str, hosts: Mapping[str, Sequence[str]]) -> list[Issued]:
    """The CA (created once) and a certificate for each of ``hosts`` (name -> its addresses)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory.chmod(0o700)
    ca = load_or_create_ca(directory, site)
    return [issue_host(directory, ca, host, names) for host, names in sorted(hosts.items())]


def certificate_problems(
    cert_pem: bytes,
    key_pem: bytes,
    names: Sequence[str],
    ca_pem: bytes | None = None,
    now: dt.datetime | None = None,
    renew_before: dt.timedelta = dt.timedelta(0),
) -> list[str]:
    """What is wrong with a host's certificate and key (empty: nothing): not PEM, the key does
    not match, expired (or within ``renew_before`` of it) or not yet valid, a name in ``names``
    the SAN does not cover, not signed by the CA in ``ca_pem``."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as e:
        return [f"the certificate is not a PEM certificate ({e})"]
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as e:
        return [f"the key is not an unencrypted PEM private key ({e})"]
    problems: list[str] = []
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.PEM, public) != cert.public_key(
    ).public_bytes(serialization.Encoding.PEM, public):  # fmt: skip
        problems.append("the key does not match the certificate")
    moment = now or _now()
    if cert.not_valid_after_utc <= moment + renew_before:
        problems.append(f"the certificate expires {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    if cert.not_valid_before_utc > moment:
        problems.append(
            f"the certificate is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = {d.lower() for d in san.get_values_for_type(x509.DNSName)}
        ips = set(san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns, ips = set(), set()
    for name in names:
        try:
            covered = ipaddress.ip_address(name) in ips
        except ValueError:
            covered = name.lower() in dns or any(
                d.startswith("*.") and name.lower().partition(".")[2] == d[2:] for d in dns
            )
        if not covered:
            problems.append(f"the certificate's SAN does not cover {name!r}")
    if ca_pem is not None:
        ca = x509.load_pem_x509_certificate(ca_pem)
        try:
            cert.verify_directly_issued_by(ca)
        except Exception as e:  # InvalidSignature, a key of another type: not issued by it
            problems.append(f"the certificate is not issued by the given CA ({type(e).__name__})")
    return problems
