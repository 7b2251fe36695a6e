"""Offline bundles: build, sign, verify, and what ``hearth up --bundle`` passes to the roles.

- :func:`build_bundle` collects, from the inventory's declared state, every package (with its
  dependencies, resolved inside a clean container of the target OS), image, model file, wheel and
  the pinned collections into a directory with a signed manifest; incremental.
- :func:`verify_bundle` checks the signature and every file, naming each missing, altered or
  extra file.
- :func:`keygen` makes the OpenSSH signing key and the ``allowed_signers`` file sites trust.

See docs/airgap.md.
"""

from __future__ import annotations

from hearth.bundle.collect import BuildResult, build_bundle
from hearth.bundle.declare import Plan, plan_for_inventory
from hearth.bundle.manifest import BundleInvalid, Entry, Finding, Manifest
from hearth.bundle.offline import VerifyResult, check_coverage, extravars, verify_bundle
from hearth.bundle.sign import KeyPair, default_key, default_signers, keygen

__all__ = [
    "BuildResult",
    "BundleInvalid",
    "Entry",
    "Finding",
    "KeyPair",
    "Manifest",
    "Plan",
    "VerifyResult",
    "build_bundle",
    "check_coverage",
    "default_key",
    "default_signers",
    "extravars",
    "keygen",
    "plan_for_inventory",
    "verify_bundle",
]
