"""Signed reports: ``hearth audit --sign`` signs the JSON report with the bundles' OpenSSH
signing key (:mod:`hearth.bundle.sign`, in the audit's own namespace) and renders the HTML page
with the signature's status; ``hearth audit verify`` checks the signature against an
``allowed_signers`` file and that the HTML page is the rendering of that JSON.

An edited report is refused naming what changed: the HTML page carries the JSON it was rendered
from, and a saved report keeps its own copy; when one of those copies is the signed original, the
fields that differ from it are named (``hosts.lab1.common/test_sysctl.observed[vm.swappiness]``).
"""

from __future__ import annotations

import base64
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hearth.bundle import sign
from hearth.errors import InvalidInputError
from hearth.evidence import store

__all__ = [
    "NAMESPACE",
    "Verified",
    "changed_fields",
    "embedded_json",
    "sign_report",
    "signature_info",
    "verify_report",
    "write_html",
]  # fmt: skip

NAMESPACE = sign.AUDIT_NAMESPACE
_EMBEDDED = re.compile(r'<script [^>]*id="hearth-report"[^>]*>([A-Za-z0-9+/=\s]*)</script>')


@dataclass(frozen=True)
class Verified:
    report: Path
    principal: str
    key: str
    html: str  # what became of the HTML page: "matches", or why it was not compared


def signature_path(report: Path) -> Path:
    return report.with_name(report.name + ".sig")


def html_path(report: Path) -> Path:
    return report.with_suffix(".html")


def signature_info(report: Path) -> dict[str, Any] | None:
    """What the HTML page says of the signature: the key that made it (None when unsigned)."""
    sig = signature_path(report)
    if not sig.is_file():
        return None
    key = sign.signing_key(report, sig, NAMESPACE)
    return {"namespace": NAMESPACE, "key": key or "none: the signature does not match",
            "report": report.name}  # fmt: skip


def sign_report(report: Path, key: Path) -> dict[str, Any]:
    """Write ``report``.sig (the bundles' OpenSSH signature, in the audit namespace)."""
    sign.sign(report, key, NAMESPACE)
    info = signature_info(report)
    assert info is not None
    return info


def write_html(report: Path, data: dict[str, Any]) -> Path:
    """The HTML page beside the JSON report (``REPORT.html``), with its signature status."""
    from hearth.report import html_from_dict

    page = html_path(report)
    page.write_text(html_from_dict(data, signature_info(report)))
    return page


def embedded_json(page: str) -> str | None:
    """The JSON report an HTML page was rendered from (as written, byte for byte)."""
    found = _EMBEDDED.search(page)
    if found is None:
        return None
    try:
        return base64.b64decode(found.group(1)).decode()
    except (ValueError, UnicodeDecodeError):
        return None


def _label(item: Any, index: int) -> str:
    if isinstance(item, dict) and "check" in item and "role" in item:
        return f"{item['role']}/{item['check']}"
    if isinstance(item, dict) and "name" in item:
        return f"[{item['name']}]"
    return f"[{index}]"


def changed_fields(before: Any, after: Any, where: str = "") -> list[str]:
    """The fields that differ between two reports, by path, with both values."""
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for key in list(before) + [k for k in after if k not in before]:
            sub = f"{where}.{key}" if where else str(key)
            if key not in after:
                out.append(f"{sub}: removed")
            elif key not in before:
                out.append(f"{sub}: added")
            else:
                out += changed_fields(before[key], after[key], sub)
        return out
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        out = []
        for i, (x, y) in enumerate(zip(before, after, strict=True)):
            label = _label(x, i)
            sub = f"{where}{label}" if label.startswith("[") else f"{where}.{label}"
            out += changed_fields(x, y, sub)
        return out
    if before != after:
        return [f"{where}: signed {json.dumps(before)}, now {json.dumps(after)}"]
    return []


def _signed_original(report: Path, sig: Path) -> tuple[str, dict[str, Any]] | None:
    """A copy of the report that the signature does match: the one inside its HTML page, or
    the saved one of the same id; (where it was found, its data)."""
    candidates: list[tuple[str, str]] = []
    if html_path(report).is_file():
        text = embedded_json(html_path(report).read_text())
        if text is not None:
            candidates.append((str(html_path(report)), text))
    try:
        ident = str(json.loads(report.read_text())["header"]["id"])
        kept = store.audits_dir() / f"{ident}.json"
        if kept.is_file() and kept.resolve() != report.resolve():
            candidates.append((str(kept), kept.read_text()))
    except (KeyError, TypeError, ValueError):
        pass
    for where, text in candidates:
        with tempfile.TemporaryDirectory(prefix="hearth-verify-") as tmp:
            copy = Path(tmp) / "report.json"
            copy.write_text(text)
            if sign.signing_key(copy, sig, NAMESPACE) is not None:
                return where, json.loads(text)
    return None


def verify_report(report: Path, signers: Path, html: Path | None = None) -> Verified:
    """Check ``report``'s signature against ``signers`` and that its HTML page (``html``, by
    default beside it) renders it. Refuses (exit 2): a file that is not a report, an unsigned
    report, a key ``signers`` does not trust, an edited report (naming what changed where a
    signed copy tells), an HTML page that is not the rendering of the report."""
    from hearth.report import html_from_dict

    data = store.load(report)
    sig = signature_path(report)
    if not sig.is_file():
        raise InvalidInputError(
            f"{sig}: missing — {report.name} is not signed (sign with `hearth audit --sign`)"
        )
    if not signers.is_file():
        raise InvalidInputError(
            f"allowed signers file {signers} not found: pass --signers with the file that the "
            "report's author gave you (written by `hearth bundle keygen`)"
        )
    key = sign.signing_key(report, sig, NAMESPACE)
    if key is None:
        original = _signed_original(report, sig)
        if original is None:
            raise InvalidInputError(
                f"{report}: the signature does not match its content — the report was edited "
                "after it was signed (no signed copy at hand to name what changed)"
            )
        where, signed = original
        changes = changed_fields(signed, data)
        raise InvalidInputError(
            f"{report}: edited after it was signed; compared with the signed copy in {where}, "
            f"changed: " + "; ".join(changes[:20])
        )
    try:
        principal = sign.verify_signature(report, sig, signers, NAMESPACE)
    except InvalidInputError as exc:
        raise InvalidInputError(
            f"{sig}: signed by key {key}, which {signers} does not trust for audit reports "
            f"(namespace {NAMESPACE}); nothing in this report is vouched for ({exc})"
        ) from exc
    page = html or html_path(report)
    if not page.is_file():
        return Verified(report, principal, key, f"no HTML page at {page}: not compared")
    expected = html_from_dict(data, signature_info(report)).splitlines()
    found = page.read_text().splitlines()
    if found != expected:
        line = next(
            (i for i, (x, y) in enumerate(zip(found, expected, strict=False)) if x != y),
            min(len(found), len(expected)),
        )
        shown = found[line].strip()[:160] if line < len(found) else "(end of file)"
        wanted = expected[line].strip()[:160] if line < len(expected) else "(end of file)"
        raise InvalidInputError(
            f"{page}: is not the rendering of {report.name}: line {line + 1} reads {shown!r}, "
            f"the report renders {wanted!r}"
        )
    return Verified(report, principal, key, f"{page.name} matches")
