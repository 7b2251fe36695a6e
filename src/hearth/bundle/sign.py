"""Signing the manifest with OpenSSH signatures (``ssh-keygen -Y sign`` / ``-Y verify``).

OpenSSH is on every control node already (Ansible needs it), works offline, and its signature
format (SSHSIG) binds a namespace, so a bundle signature can never be replayed as, say, a git
commit signature. ``hearth bundle keygen`` writes an Ed25519 key pair and an ``allowed_signers``
file; the private key stays where it was made (never inside a bundle); sites receive the
``allowed_signers`` file (the public key with its principal) by their own channel.

The same key signs audit reports (``hearth audit --sign``) in their own namespace
(:data:`AUDIT_NAMESPACE`), so a report's signature can never pass for a bundle's, nor the reverse;
the ``allowed_signers`` line that ``keygen`` writes trusts the key for both.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hearth import paths
from hearth.bundle.manifest import BundleInvalid
from hearth.errors import EnvironmentProblem, InvalidInputError

__all__ = [
    "AUDIT_NAMESPACE",
    "NAMESPACE",
    "KeyPair",
    "default_key_dir",
    "default_signers",
    "keygen",
    "sign",
    "verify_signature",
]

NAMESPACE = "hearth-bundle@hearth"
AUDIT_NAMESPACE = "hearth-audit@hearth"
KEY_NAME = "bundle_signing_key"
SIGNERS_NAME = "allowed_signers"
_PRINCIPAL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]*$")


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path
    allowed_signers: Path
    principal: str
    fingerprint: str


def default_key_dir() -> Path:
    return paths.hearth_home() / "bundle-keys"


def default_signers() -> Path:
    """``$HEARTH_BUNDLE_SIGNERS``, else the allowed_signers that ``keygen`` wrote here."""
    override = os.environ.get("HEARTH_BUNDLE_SIGNERS")
    return Path(override) if override else default_key_dir() / SIGNERS_NAME


def default_key() -> Path:
    return default_key_dir() / KEY_NAME


def _ssh_keygen() -> str:
    found = shutil.which("ssh-keygen")
    if found is None:
        raise EnvironmentProblem("ssh-keygen is not installed: apt-get install openssh-client")
    return found


def _run(args: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([_ssh_keygen(), *args], input=stdin, capture_output=True, check=False)


def fingerprint(public_key: Path) -> str:
    done = _run(["-l", "-E", "sha256", "-f", str(public_key)])
    if done.returncode != 0:
        raise InvalidInputError(f"{public_key}: not an SSH public key ({_tail(done)})")
    return done.stdout.decode().split()[1]


def keygen(directory: Path | None = None, principal: str = "hearth-bundle") -> KeyPair:
    """Create an Ed25519 signing key and its allowed_signers file in ``directory`` (0700).

    Refuses to overwrite an existing key: a site that trusts the old public key would reject
    every bundle signed with a new one.
    """
    if not _PRINCIPAL.match(principal):
        raise InvalidInputError(f"principal {principal!r}: letters, digits and ._@+- only")
    directory = directory or default_key_dir()
    private = directory / KEY_NAME
    if private.exists():
        raise InvalidInputError(
            f"{private} exists: a new key would make every site reject bundles signed with it "
            "until they receive the new allowed_signers; move the old key away first"
        )
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    done = _run(["-q", "-t", "ed25519", "-N", "", "-C", principal, "-f", str(private)])
    if done.returncode != 0:
        raise EnvironmentProblem(f"ssh-keygen could not create {private}: {_tail(done)}")
    public = private.with_suffix(".pub")
    key_type, key_data = public.read_text().split()[:2]
    signers = directory / SIGNERS_NAME
    namespaces = f"{NAMESPACE},{AUDIT_NAMESPACE}"
    signers.write_text(f'{principal} namespaces="{namespaces}" {key_type} {key_data}\n')
    return KeyPair(private, public, signers, principal, fingerprint(public))


def sign(document: Path, key: Path, namespace: str = NAMESPACE) -> Path:
    """Write ``document``.sig, an SSHSIG signature of ``document`` by ``key`` in Hearth's
    ``namespace`` (bundles' by default)."""
    if not key.is_file():
        raise InvalidInputError(
            f"signing key {key} not found: create one with `hearth bundle keygen` (or pass --key)"
        )
    signature = document.with_name(document.name + ".sig")
    signature.unlink(missing_ok=True)
    done = _run(["-Y", "sign", "-f", str(key), "-n", namespace, str(document)])
    if done.returncode != 0 or not signature.is_file():
        raise InvalidInputError(f"could not sign {document} with {key}: {_tail(done)}")
    return signature


def verify_signature(
    document: Path, signature: Path, allowed_signers: Path, namespace: str = NAMESPACE
) -> str:
    """The principal whose key made ``signature`` over ``document`` in ``namespace``; raises
    :class:`BundleInvalid` naming what is wrong (no signature, unknown key, altered document)."""
    if not allowed_signers.is_file():
        raise InvalidInputError(
            f"allowed signers file {allowed_signers} not found: pass --signers with the file "
            "the bundle's builder gave you (made by `hearth bundle keygen`)"
        )
    if not signature.is_file():
        raise BundleInvalid(f"{signature}: missing — the manifest is not signed")
    found = _run(["-Y", "find-principals", "-s", str(signature), "-f", str(allowed_signers)])
    principals = found.stdout.decode().split()
    if found.returncode != 0 or not principals:
        raise BundleInvalid(
            f"{signature}: signed by a key that is not in {allowed_signers} (wrong key, or the "
            "signature was replaced)"
        )
    data = document.read_bytes()
    for principal in principals:
        done = _run(
            ["-Y", "verify", "-f", str(allowed_signers), "-I", principal, "-n", namespace,
             "-s", str(signature)],
            stdin=data,
        )  # fmt: skip
        if done.returncode == 0:
            return principal
    raise BundleInvalid(
        f"{document.name}: the signature does not match its content — the manifest was altered "
        f"after it was signed (signer {', '.join(principals)})"
    )


def signing_key(document: Path, signature: Path, namespace: str = NAMESPACE) -> str | None:
    """The fingerprint of the key that made ``signature`` over ``document`` (whether or not that
    key is trusted: ``ssh-keygen -Y check-novalidate``); None when it does not match."""
    done = _run(["-Y", "check-novalidate", "-n", namespace, "-s", str(signature)],
                stdin=document.read_bytes())  # fmt: skip
    found = re.search(r"key (SHA256:\S+)", done.stdout.decode(errors="replace"))
    if done.returncode != 0 or found is None:
        return None
    return found.group(1)


def _tail(done: subprocess.CompletedProcess[bytes]) -> str:
    text = (done.stderr or done.stdout).decode(errors="replace").strip()
    return " | ".join(text.splitlines()[-3:]) or f"rc={done.returncode}"
