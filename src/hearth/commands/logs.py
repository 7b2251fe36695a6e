"""``hearth logs verify`` and ``hearth keys usage``: the front door's request logs, fetched from
every front door host over SSH (:mod:`hearth.fleet`) and read here.

What is read on a host (sudo where Ansible would become; read-only): ``/health`` of its front door
(the chain's head: ``seq`` and hash of the last line written), then every
``requests-YYYY-MM-DD.jsonl`` in ``front_door_state_dir``, base64-encoded so that the bytes
checked are the bytes on the disk. The chain is verified in-process
(:func:`hearth.frontdoor.reqlog.verify_chain`); the head catches a last line edited or lines cut
off the end, which no later line would reveal.

Prompt files (``prompts-YYYY-MM-DD.jsonl``, only where a site logs prompts) never leave the
host: the script prints, per line, its ``seq`` and sha256 (computed there, by the same steps as
:func:`hearth.frontdoor.reqlog.digest_lines`), and :func:`hearth.frontdoor.reqlog.verify_prompts`
compares them with the ``prompt_sha256`` the chained request lines hold.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import shlex
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from hearth.errors import InvalidInputError
from hearth.frontdoor import reqlog

__all__ = [
    "HostLog",
    "UsageRow",
    "fetch_logs",
    "parse_fetch",
    "parse_since",
    "usage",
    "verify_host",
]

DEFAULT_STATE_DIR = "/var/lib/hearth/frontdoor"
_MARK = "==hearth-log== "
# Run on the host over its prompt files: per file a mark, then "LINE SEQ SHA256" per line (SEQ
# "-" when the line does not parse). Only digests are printed: no prompt leaves the host.
_PROMPT_DIGESTS = f"""
import hashlib, json, os, sys
for path in sys.argv[1:]:
    if not os.path.isfile(path):
        continue
    print({_MARK!r} + "prompts " + os.path.basename(path))
    with open(path, "rb") as f:
        lines = f.read().split(b"\\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for number, raw in enumerate(lines, 1):
        try:
            seq = str(int(json.loads(raw)["seq"]))
        except Exception:
            seq = "-"
        print(number, seq, hashlib.sha256(raw).hexdigest())
"""


@dataclass
class HostLog:
    """One front door host's request log as fetched: files (name, bytes) oldest first, the head
    its front door reported (``None`` when it did not answer), and why a fetch failed."""

    host: str
    files: list[tuple[str, bytes]] = field(default_factory=list)
    head: dict[str, Any] | None = None
    error: str = ""
    prompts: list[tuple[str, list[tuple[int, int | None, str]]]] = field(default_factory=list)
    """Each kept prompt file's name and its lines' (number, seq, sha256), computed on the host."""


def fetch_script(state_dir: str, port: int, address: str = "127.0.0.1", tls: bool = False) -> str:
    """The read-only shell script that prints the front door's head and each log file. Over
    HTTPS (``tls``) the loopback answer's certificate is not verified (no SAN names loopback;
    the audit compares the served certificate with the deployed one)."""
    host = f"[{address}]" if ":" in address else address
    url = f"{'https' if tls else 'http'}://{host}:{int(port)}/health"
    context = "ssl._create_unverified_context()" if tls else "None"
    health = (
        "import ssl,urllib.request;"
        f"print(urllib.request.urlopen({url!r},timeout=5,context={context}).read().decode())"
    )
    directory = shlex.quote(state_dir)
    return (
        f"echo '{_MARK}health'; python3 -c {shlex.quote(health)} 2>/dev/null || echo '{{}}'; "
        f'for f in {directory}/requests-*.jsonl; do [ -f "$f" ] || continue; '
        f'echo "{_MARK}file $(basename "$f")"; base64 -w0 "$f"; echo; done; '
        f"python3 -c {shlex.quote(_PROMPT_DIGESTS)} {directory}/prompts-*.jsonl"
    )


def parse_fetch(host: str, text: str) -> HostLog:
    """What :func:`fetch_script` printed, as a :class:`HostLog`."""
    found = HostLog(host)
    section: list[str] = []
    kind = ""
    name = ""

    def close() -> None:
        body = "".join(section).strip()
        if kind == "health":
            try:
                health = json.loads(body or "{}")
            except ValueError:
                health = {}
            head = health.get("request_log") if isinstance(health, dict) else None
            found.head = head if isinstance(head, dict) else None
        elif kind == "file":
            try:
                found.files.append((name, base64.b64decode(body, validate=True)))
            except (binascii.Error, ValueError):
                found.error = f"{name}: could not be read back (not base64)"
        elif kind == "prompts":
            digests: list[tuple[int, int | None, str]] = []
            for row in section:
                parts = row.split()
                if len(parts) == 3 and parts[0].isdigit():
                    seq = int(parts[1]) if parts[1].isdigit() else None
                    digests.append((int(parts[0]), seq, parts[2]))
            found.prompts.append((name, digests))

    for line in text.splitlines():
        if line.startswith(_MARK):
            close()
            section = []
            kind, _, name = line[len(_MARK) :].partition(" ")
            continue
        section.append(line)
    close()
    found.files.sort()
    found.prompts.sort()
    return found


def verify_host(log: HostLog) -> tuple[int, str | None]:
    """Lines that hold and the first problem (``None``: the chain holds, up to the head, and
    every kept prompt record is the one its request line records)."""
    checked, problem = _verify_chain(log)
    if problem is not None or not log.prompts:
        return checked, problem
    problems = reqlog.verify_prompts(log.files, log.prompts)
    if not problems:
        return checked, None
    more = f" (and {len(problems) - 1} more prompt-file problem(s))" if len(problems) > 1 else ""
    return checked, problems[0].text() + more


def _verify_chain(log: HostLog) -> tuple[int, str | None]:
    if log.error:
        return 0, log.error
    checked, broken = reqlog.verify_chain(log.files)
    if broken is not None:
        return checked, broken.text()
    if log.head is None:
        return checked, None
    seq, head = int(log.head.get("seq", 0)), str(log.head.get("head", ""))
    if seq == 0:
        return checked, None
    for name, content in log.files:
        for number, raw in enumerate(content.splitlines(), start=1):
            try:
                record_seq = int(json.loads(raw)["seq"])
            except (ValueError, KeyError, TypeError):
                continue
            if record_seq == seq:
                if reqlog.line_hash(raw) != head:
                    return checked, (
                        f"{name}:{number}: edited: the front door's last line (seq {seq}) had "
                        "another hash"
                    )
                return checked, None
    return checked, (
        f"the front door wrote line seq {seq}, which is not in the log: lines cut off its end"
    )


def fetch_logs(
    inventory: Any, limit: str | None = None, timeout: float = 60
) -> tuple[list[HostLog], list[str]]:
    """Every front door host's request log (and the hosts that could not be read, with why).
    Connection settings are checked for every host before any is contacted."""
    from concurrent.futures import ThreadPoolExecutor

    from hearth.bench import front_doors
    from hearth.fleet.connect import connections
    from hearth.fleet.execute import run_on

    doors = set(front_doors(inventory))
    if not doors:
        raise InvalidInputError(
            f"{inventory.path}: no host gets the front_door role: there is no request log to read"
        )
    hosts = [h for h in connections(inventory, limit, become=True) if h.name in doors]
    if not hosts:
        raise InvalidInputError(f"--limit {limit!r} selects no front door host")

    def one(settings: Any) -> tuple[HostLog | None, str]:
        variables = inventory.resolved_vars(settings.name, [])
        state = str(variables.get("front_door_state_dir") or DEFAULT_STATE_DIR)
        port = int(variables.get("front_door_port") or 8090)
        bind = str(variables.get("front_door_bind_address") or "0.0.0.0")  # noqa: S104
        address = "127.0.0.1" if bind in ("0.0.0.0", "::") else bind  # noqa: S104
        script = fetch_script(state, port, address, variables.get("front_door_tls", True) is True)
        out = run_on(settings, script, become=True, timeout=timeout)
        if out.status != "ok":
            why = out.reason or (out.stderr or "").strip()[:200] or f"exit {out.rc}"
            return None, f"{settings.name}: {out.status}: {why}"
        return parse_fetch(settings.name, out.stdout), ""

    with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
        results = list(pool.map(one, hosts))
    logs = [log for log, _ in results if log is not None]
    failed = [why for _, why in results if why]
    return logs, failed


# ------------------------------------------------------------------------------------- usage


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """``7d``, ``12h``, ``30m`` back from now, or a date / ISO time (UTC)."""
    moment = now or dt.datetime.now(dt.UTC)
    units = {"d": 86400, "h": 3600, "m": 60}
    if text and text[-1] in units and text[:-1].isdigit():
        return moment - dt.timedelta(seconds=int(text[:-1]) * units[text[-1]])
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise InvalidInputError(
            f"--since {text!r}: expected 7d, 12h, 30m, a date (YYYY-MM-DD) or an ISO time"
        ) from e
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class UsageRow:
    key: str
    model: str
    requests: int
    ok: int
    refused: int
    prompt_tokens: int
    completion_tokens: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key, "model": self.model, "requests": self.requests, "ok": self.ok,
            "refused": self.refused, "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }  # fmt: skip


def _records(logs: Iterable[HostLog]) -> Iterator[dict[str, Any]]:
    for log in logs:
        yield from reqlog.iter_records(content for _, content in log.files)


def usage(records: Iterable[dict[str, Any]], since: dt.datetime | None = None) -> list[UsageRow]:
    """Requests and tokens per key name and model (requests with a key only: a 401 has none),
    from ``since`` on."""
    table: dict[tuple[str, str], list[int]] = {}
    for record in records:
        key = str(record.get("key") or "")
        if not key:
            continue
        if since is not None:
            try:
                when = dt.datetime.fromisoformat(str(record.get("time", "")).replace("Z", "+00:00"))
            except ValueError:
                continue
            if when < since:
                continue
        model = str(record.get("model") or "")
        row = table.setdefault((key, model), [0, 0, 0, 0, 0])
        status = int(record.get("status") or 0)
        row[0] += 1
        row[1] += 200 <= status < 300
        row[2] += status in (401, 403, 429)
        row[3] += int(record.get("prompt_tokens") or 0)
        row[4] += int(record.get("completion_tokens") or 0)
    return [UsageRow(k, m, *v) for (k, m), v in sorted(table.items())]


def usage_of(logs: Sequence[HostLog], since: dt.datetime | None = None) -> list[UsageRow]:
    return usage(_records(logs), since)
