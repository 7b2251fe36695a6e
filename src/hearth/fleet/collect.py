"""``hearth collect``: a support bundle, what a vendor's support asks for, from every host.

Per host (over fabric, sudo where Ansible would become): ``nvidia-smi -q`` or why it is absent,
the kernel log's Xid lines, ``dkms status``, package versions and holds, the journals of Hearth's
units, the engine containers' ``docker inspect`` and last logs, the front door's last request
lines, disk and memory. Beside them the audit as JSON, run in-process. Every text passes through
:mod:`hearth.fleet.scrub` before it is written; the archive is ``tar`` + ``zstd``.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hearth.errors import EnvironmentProblem, InvalidInputError, UnreachableError
from hearth.fleet.connect import HostConnection, connections
from hearth.fleet.execute import unreachable_reason
from hearth.fleet.scrub import Scrubber, from_inventory

JOURNAL_LINES = 500
CONTAINER_LOG_LINES = 300
REQUEST_LINES = 200
UNIT_PATTERNS = (
    "hearth*", "prometheus*", "docker.service", "containerd.service", "nvidia*", "dcgm*",
    "chrony*", "unattended-upgrades.service",
)  # fmt: skip
CONTAINER_FILTER = "label=io.hearth.managed-by"
FRONT_DOOR = "hearth-frontdoor"

# name in the bundle → shell script run on the host (read-only; each says why when it has nothing)
PROBES: dict[str, str] = {
    "nvidia-smi.txt": (
        "if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi -q 2>&1; "
        'echo "(nvidia-smi exit $?)"; else echo \'absent: nvidia-smi is not installed on this '
        "host (no NVIDIA driver userspace)'; fi"
    ),
    "xid.txt": (
        "{ journalctl -k -b --no-pager -o short-iso 2>/dev/null || dmesg -T 2>/dev/null; } "
        "| grep -E 'NVRM: (Xid|GPU at|GPU has fallen)' || echo 'no Xid lines in the kernel log'"
    ),
    "dkms.txt": (
        'if command -v dkms >/dev/null 2>&1; then dkms status 2>&1; echo "(dkms exit $?)"; '
        "else echo 'absent: dkms is not installed on this host'; fi; echo; "
        'echo "running kernel: $(uname -r)"; ls /lib/modules 2>/dev/null'
    ),
    "packages.txt": (
        "if command -v dpkg-query >/dev/null 2>&1; then "
        "dpkg-query -W -f '${Package}\\t${Version}\\t${db:Status-Abbrev}\\n'; "
        "else rpm -qa --qf '%{NAME}\\t%{VERSION}-%{RELEASE}\\n' | sort; fi"
    ),
    "holds.txt": (
        "if command -v apt-mark >/dev/null 2>&1; then apt-mark showhold; "
        "else dnf versionlock list 2>&1 || echo 'no versionlock plugin'; fi"
    ),
    "units.txt": (
        "systemctl list-units --all --no-pager --plain " + " ".join(f"'{p}'" for p in UNIT_PATTERNS)
    ),
    "disk.txt": "df -hT -x tmpfs -x devtmpfs -x overlay 2>/dev/null || df -h; echo; df -i /",
    "memory.txt": "free -m; echo; cat /proc/meminfo",
    "os.txt": "uname -a; cat /etc/os-release; uptime",
}
LIST_UNITS = (
    "systemctl list-units --all --no-legend --no-pager --plain "
    + " ".join(f"'{p}'" for p in UNIT_PATTERNS)
    + " | awk '{print $1}' | grep -E '\\.(service|timer)$'"
)
LIST_CONTAINERS = (
    f"command -v docker >/dev/null 2>&1 && docker ps -a --filter {CONTAINER_FILTER} "
    "--format '{{.Names}}'"
)
FRONT_DOOR_LOG = (  # the newest day of the hash-chained request log (frontdoor/reqlog.py)
    "f=$(ls -1 /var/lib/hearth/frontdoor/requests-*.jsonl 2>/dev/null | tail -n 1); "
    f'if [ -n "$f" ]; then tail -n {REQUEST_LINES} "$f"; '
    "else echo 'no front door request log on this host'; fi"
)


@dataclass
class HostBundle:
    host: str
    files: dict[str, str] = field(default_factory=dict)  # name → scrubbed text
    exits: dict[str, int | None] = field(default_factory=dict)
    unreachable: str = ""


@dataclass
class CollectResult:
    archive: Path
    hosts: list[HostBundle]
    size: int = 0
    seconds: float = 0.0

    @property
    def unreachable(self) -> dict[str, str]:
        return {h.host: h.unreachable for h in self.hosts if h.unreachable}

    def raise_for_status(self) -> None:
        if self.unreachable:
            detail = "; ".join(f"{h}: {why}" for h, why in self.unreachable.items())
            raise UnreachableError(
                f"unreachable: {detail} — {self.archive} holds the other hosts' data"
            )


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-@" else "_" for c in name)


def collect_host(settings: HostConnection, scrubber: Scrubber) -> HostBundle:
    """Every probe on one host, each output scrubbed. Never raises for the host's own trouble."""
    bundle = HostBundle(settings.name)
    conn = settings.connection()
    try:
        conn.open()
    except Exception as e:
        bundle.unreachable = unreachable_reason(e)
        return bundle

    def run(command: str) -> tuple[int | None, str]:
        options: dict[str, Any] = {"hide": True, "warn": True, "in_stream": False}
        wrapped = f"sh -c {_quote(command)}"
        result = (
            conn.sudo(wrapped, **options) if settings.needs_become else conn.run(wrapped, **options)
        )
        return int(result.exited), result.stdout + (result.stderr or "")

    def keep(name: str, command: str, docker_inspect: bool = False) -> str:
        rc, text = run(command)
        bundle.exits[name] = rc
        text = scrubber.scrub_docker_inspect(text) if docker_inspect else scrubber.scrub(text)
        bundle.files[name] = text
        return text

    try:
        for name, command in PROBES.items():
            keep(name, command)
        _, units = run(LIST_UNITS)
        for unit in sorted(set(units.split())):
            keep(
                f"journal/{_safe(unit)}.log",
                f"journalctl -u {_quote(unit)} -n {JOURNAL_LINES} --no-pager -o short-iso",
            )
        rc, names = run(LIST_CONTAINERS)
        for name in sorted(set(names.split())) if rc == 0 else []:
            keep(f"containers/{_safe(name)}.inspect.json", f"docker inspect {_quote(name)}", True)
            keep(
                f"containers/{_safe(name)}.log",
                f"docker logs --tail {CONTAINER_LOG_LINES} -t {_quote(name)}",
            )
        if FRONT_DOOR in names.split():
            keep("frontdoor-requests.jsonl", FRONT_DOOR_LOG)
    except Exception as e:  # the session broke halfway
        bundle.unreachable = unreachable_reason(e)
    finally:
        conn.close()
    return bundle


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def _audit_json(inventory: Any, limit: str | None, scrubber: Scrubber) -> str:
    from hearth import audit, report

    try:
        result = audit.run_audit(inventory, limit=limit)
        return scrubber.scrub(report.render(result, "json"))
    except Exception as e:  # the bundle is still worth having without the audit
        return json.dumps({"error": scrubber.scrub(f"{type(e).__name__}: {e}")})


def _add(tar: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
    tar.addfile(info, io.BytesIO(data))


def write_archive(path: Path, files: dict[str, str]) -> int:
    """``files`` (name → text) as a ``.tar.zst`` at ``path``; its size in bytes."""
    if shutil.which("zstd") is None:
        raise EnvironmentProblem("zstd is not installed on the control node (apt install zstd)")
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, text in files.items():
            _add(tar, name, text)
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as out:
        subprocess.run(["zstd", "-q", "-T0", "-c"], input=buffer.getvalue(), stdout=out, check=True)
    partial.chmod(0o600)
    partial.replace(path)
    return path.stat().st_size


def collect(
    inventory: Any,
    output: Path,
    *,
    limit: str | None = None,
    forks: int = 25,
    audit: bool = True,
    say: Callable[[str], None] = lambda _: None,
) -> CollectResult:
    """The support bundle of the selected hosts of ``inventory`` (loaded and validated)."""
    if not output.name.endswith((".tar.zst", ".tzst")):
        raise InvalidInputError(f"-o {output}: the bundle is a zstd tarball; name it *.tar.zst")
    began = time.monotonic()
    hosts = connections(inventory, limit)
    scrubber = from_inventory(inventory, inventory.hosts)
    say(f"collecting from {len(hosts)} host(s)")
    with ThreadPoolExecutor(max_workers=max(1, min(forks, len(hosts)))) as pool:
        bundles = list(pool.map(lambda h: collect_host(h, scrubber), hosts))
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    root = f"hearth-collect-{stamp}"
    files: dict[str, str] = {}
    for bundle in bundles:
        for name, text in bundle.files.items():
            files[f"{root}/{_safe(bundle.host)}/{name}"] = text
    if audit:
        say("running the audit")
        files[f"{root}/audit.json"] = _audit_json(inventory, limit, scrubber)
    summary = {
        "created": stamp,
        "inventory": str(inventory.path),
        "hosts": {
            b.host: {"unreachable": b.unreachable or None, "exits": b.exits} for b in bundles
        },
    }
    files[f"{root}/summary.json"] = scrubber.scrub(json.dumps(summary, indent=2))
    result = CollectResult(output, bundles)
    result.size = write_archive(output, files)
    result.seconds = time.monotonic() - began
    return result
