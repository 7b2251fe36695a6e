"""Helpers shared by the roles' testinfra checks (``roles/<role>/checks/test_*.py``).

``hearth audit`` runs the checks with pytest from a checkout or from the installed package; both
import this module as ``hearth.checklib``, so one copy of each probe serves every role. The
functions take testinfra's ``host`` (typed ``Any``: testinfra ships no types) and either return
what they found or fail the check with a message saying what was expected and what was found.

The comparison logic (GPUs, front door keys, rule content) is pure and unit-tested against
recorded real outputs (tests/fixtures/nvidia-smi); only the probes touch the host.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

__all__ = [
    "GpuReport",
    "assert_package_pinned_and_held",
    "assert_service_running",
    "docker_inspect",
    "fetch_json",
    "gpu_problems",
    "http_get",
    "key_fingerprint",
    "keys_drift",
    "listeners",
    "models_or_skip",
    "nvidia_device",
    "nvidia_pci_devices",
    "observe",
    "observe_gpus",
    "observe_listeners",
    "observed",
    "pinned_version",
    "present_gpus",
    "rules_digest",
    "rules_drift",
]

# GET from the host itself with its Python (curl may not be installed): prints the status on the
# first line, then the body; status 0 when nothing answered.
_GET = (
    "import base64, ssl, sys, urllib.request, urllib.error\n"
    "context = ssl._create_unverified_context() if sys.argv[3:4] == ['loopback'] else None\n"
    "request = urllib.request.Request(sys.argv[1])\n"
    "if len(sys.argv) > 5:\n"  # basic auth: the user, and the file on the host holding the password
    "    secret = open(sys.argv[5]).read().strip()\n"
    "    token = base64.b64encode((sys.argv[4] + ':' + secret).encode()).decode()\n"
    "    request.add_header('Authorization', 'Basic ' + token)\n"
    "try:\n"
    "    r = urllib.request.urlopen(request, timeout=float(sys.argv[2]), context=context)\n"
    "    print(r.status); sys.stdout.write(r.read().decode('utf-8', 'replace'))\n"
    "except urllib.error.HTTPError as e:\n"
    "    print(e.code)\n"
    "except OSError as e:\n"
    "    print(0); print(e)\n"
)
_SERVED = (
    "import ssl, sys\n"
    "try:\n"
    "    print(ssl.get_server_certificate((sys.argv[1], int(sys.argv[2])), timeout=5))\n"
    "except OSError as e:\n"
    "    print(e, file=sys.stderr)\n"
)
_PCI_PROBE = (
    "for d in /sys/bus/pci/devices/*; do "
    '[ "$(cat $d/vendor 2>/dev/null)" = 0x10de ] && '
    'case "$(cat $d/class 2>/dev/null)" in 0x03*) echo "${d##*/}";; esac; done; true'
)


# ---------------------------------------------------------------------------- evidence
_OBSERVED: list[dict[str, Any]] = []
_UNSET: Any = object()


def observe(name: str, value: Any, declared: Any = _UNSET) -> Any:
    """Record what the running check looked at and found (``value``, as read on the host) next to
    what the inventory declared (``declared``, when there is a declared value to compare with).

    The audit's pytest plugin collects these per check into the report (JSON, JUnit properties,
    HTML tables), whether the check passes or not: evidence, not only a verdict. Values must be
    plain data (str, int, float, bool, lists, dicts) and never a secret. Returns ``value``, so a
    probe can be recorded where it is read: ``found = observe("timezone", host.check_output(...))``.
    A second observation of the same name replaces the first.
    """
    entry: dict[str, Any] = {"name": str(name), "value": _plain(value)}
    if declared is not _UNSET:
        entry["declared"] = _plain(declared)
    _OBSERVED[:] = [e for e in _OBSERVED if e["name"] != entry["name"]]  # the last word counts
    _OBSERVED.append(entry)
    return value


def observed(reset: bool = True) -> list[dict[str, Any]]:
    """The observations recorded since the last reset (by the audit plugin, per check)."""
    found = list(_OBSERVED)
    if reset:
        _OBSERVED.clear()
    return found


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


# ------------------------------------------------------------------------------ probes
def http_get(
    host: Any,
    url: str,
    timeout: float = 10,
    loopback_tls: bool = False,
    auth: tuple[str, str] | None = None,
) -> tuple[int, str]:
    """(status, body) of a GET of ``url`` made on the host; status 0 when nothing answered.
    ``loopback_tls``: an https URL on the host's loopback, whose certificate names no loopback
    address, is not verified (a check of its own compares it with the deployed one). ``auth``:
    basic auth as (user, a file on the host holding the password): no secret on a command line."""
    mode = "loopback" if loopback_tls else "-"
    if auth:
        out = host.run("python3 -c %s %s %s %s %s %s", _GET, url, str(timeout), mode, *auth).stdout
    else:
        out = host.run("python3 -c %s %s %s %s", _GET, url, str(timeout), mode).stdout
    status, _, body = out.partition("\n")
    return int(status or 0), body


# -------------------------------------------------------- monitoring_tls (the web configuration)
WEB_CERT = "/etc/prometheus/web/tls.crt"
WEB_PASSWORD_FILE = "/etc/prometheus/scrape-password"  # noqa: S105 - a path


def web_tls(hearth_vars: Mapping[str, Any]) -> bool:
    """Whether the site's ``monitoring_tls`` is on (HTTPS and basic auth on the exporters; on
    unless the inventory declares it false)."""
    return hearth_vars.get("monitoring_tls", True) is True


def web_get(host: Any, hearth_vars: Mapping[str, Any], port: int, path: str) -> tuple[int, str]:
    """A GET of a Prometheus service on the host's loopback: plain HTTP, or with
    ``monitoring_tls`` HTTPS logged in with Prometheus's password file (where the host has it)."""
    if not web_tls(hearth_vars):
        return http_get(host, f"http://127.0.0.1:{port}{path}")
    auth = None
    if host.file(WEB_PASSWORD_FILE).exists:
        auth = (str(hearth_vars.get("monitoring_web_user") or "hearth"), WEB_PASSWORD_FILE)
    return http_get(host, f"https://127.0.0.1:{port}{path}", loopback_tls=True, auth=auth)


def served_certificate(host: Any, address: str, port: int) -> str:
    """The PEM certificate a TLS server on the host presents ("" when none)."""
    return str(host.run("python3 -c %s %s %s", _SERVED, address, str(port)).stdout)


def assert_web_tls(host: Any, hearth_vars: Mapping[str, Any], port: int, path: str) -> None:
    """With ``monitoring_tls``: the service on ``port`` serves the certificate deployed in
    /etc/prometheus/web (not expiring within 14 days), refuses a request without credentials
    (401) and gives plain HTTP no page."""
    from hearth.tls import served_problems

    if not web_tls(hearth_vars):
        pytest.skip("monitoring_tls is false: plain HTTP without authentication")
    deployed = host.file(WEB_CERT)
    assert deployed.is_file, f"{WEB_CERT}: expected the deployed certificate, found nothing"
    served = served_certificate(host, "127.0.0.1", port)
    problems = served_problems(served.encode(), deployed.content_string.encode())
    observe(f"port {port} certificate", "; ".join(problems) or "the deployed one")
    assert not problems, f"port {port}: " + "; ".join(problems)
    url = f"https://127.0.0.1:{port}{path}"
    status, _ = http_get(host, url, loopback_tls=True)
    observe(f"{url} without credentials", status, 401)
    assert status == 401, f"{url} without credentials: expected 401, found {status}"
    status, _ = http_get(host, f"http://127.0.0.1:{port}{path}")
    observe(f"http://127.0.0.1:{port}{path}", status, "no page (400 or nothing)")
    assert status in (0, 400), f"http://127.0.0.1:{port}{path}: expected no page, found {status}"


def fetch_json(host: Any, url: str, what: str) -> Any:
    """The JSON answer of ``url`` (fetched on the host); fails the check naming ``what``."""
    status, body = http_get(host, url)
    assert status == 200, f"{what} ({url}): expected an answer, found status {status} {body[:200]}"
    return json.loads(body)


def pinned_version(host: Any, declared: str, role_vars: Path, key: str) -> str:
    """The version a role installs: the inventory's, else the role's pin for this OS release
    (``vars/<Distribution>-<major>.yml``); "" when neither says."""
    if declared:
        return declared
    info = host.system_info
    name = f"{str(info.distribution).capitalize()}-{str(info.release).split('.')[0]}.yml"
    if (role_vars / name).is_file():
        return str(yaml.safe_load((role_vars / name).read_text()).get(key) or "")
    return ""


def assert_package_pinned_and_held(host: Any, name: str, wanted: str) -> None:
    """The package is installed at ``wanted`` (when a version is declared) and held; records the
    version and the dpkg selection found."""
    package = host.package(name)
    installed = package.is_installed
    observe(f"{name} version", package.version if installed else "not installed", wanted or None)
    assert installed, f"{name}: expected installed, found absent"
    if wanted:
        assert package.version == wanted, (
            f"{name}: expected version {wanted}, found {package.version}"
        )
    selection = observe(
        f"{name} selection",
        host.check_output("dpkg --get-selections %s", name).split()[-1],
        "hold",
    )
    assert selection == "hold", f"{name}: expected held at its version, found '{selection}'"


def assert_service_running(host: Any, name: str) -> None:
    """The systemd unit runs and starts at boot; records both states."""
    service = host.service(name)
    observe(f"{name} running", service.is_running, True)
    observe(f"{name} enabled", service.is_enabled, True)
    assert service.is_running, f"{name}: expected running, found stopped"
    assert service.is_enabled, f"{name}: expected enabled at boot, found disabled"


def listeners(host: Any, port: int | str) -> list[str]:
    """The TCP sockets listening on ``port`` on the host (``address:port``, as ``ss`` prints
    them), sorted; [] when none (or ``ss`` is missing)."""
    out = host.run("ss -Htln sport = :%s", str(port)).stdout
    return sorted({line.split()[3] for line in out.splitlines() if len(line.split()) >= 4})


def observe_listeners(host: Any, port: int | str) -> list[str]:
    """Record (and return) the listening sockets on ``port``."""
    found = listeners(host, port)
    observe(f"listening on port {port}", found)
    return found


def docker_inspect(host: Any, name: str) -> dict[str, Any] | None:
    """``docker inspect`` of the container ``name`` on the host, None when there is none."""
    found = host.run("docker inspect --type container %s", name)
    if found.rc != 0:
        return None
    data: list[dict[str, Any]] = json.loads(found.stdout)
    return data[0]


def models_or_skip(hearth_vars: Mapping[str, Any]) -> list[Any]:
    """The host's declared models (``hearth_models``); skips the check when there are none."""
    from hearth.models import parse_models

    models = parse_models(hearth_vars.get("hearth_models") or [])
    if not models:
        pytest.skip("no hearth_models declared for this host")
    return models


def nvidia_pci_devices(host: Any) -> list[str]:
    """PCI addresses of the host's NVIDIA display-class devices (vendor 0x10de, class 0x03…)."""
    return list(host.run(_PCI_PROBE).stdout.split())


def nvidia_device(host: Any) -> str | None:
    """A description of the host's NVIDIA device(s), or None when it has none."""
    found = nvidia_pci_devices(host)
    if found:
        return f"NVIDIA PCI device(s) {', '.join(found)}"
    return "/proc/driver/nvidia" if host.file("/proc/driver/nvidia").exists else None


# -------------------------------------------------------------------------------- GPUs
@dataclass(frozen=True)
class GpuReport:
    """What the host shows: the GPUs nvidia-smi lists (as the ``gpu_facts`` module parses them)
    and, when nvidia-smi cannot list them, why."""

    gpus: list[dict[str, Any]] = field(default_factory=list)
    pci_devices: int = 0
    problem: str | None = None  # nvidia-smi failing (or missing) on a host with a device


def present_gpus(host: Any) -> GpuReport:
    """The GPUs the host has now, read the way ``gpu_facts`` reads them: ``nvidia-smi -q -x``
    parsed by the module's own parser; without nvidia-smi, the PCI bus decides presence."""
    from hearth.gpu import classify_error, parse_xml

    pci = len(nvidia_pci_devices(host))
    smi = host.run("command -v nvidia-smi")
    if smi.rc != 0:
        if pci:
            return GpuReport([], pci, f"{pci} NVIDIA PCI device(s) but nvidia-smi is missing")
        return GpuReport([], 0, None)
    done = host.run("nvidia-smi -q -x")
    if done.rc != 0:
        if not pci and not host.file("/proc/driver/nvidia").exists:
            return GpuReport([], 0, None)  # installed, no device: absent, as gpu_facts says
        error = classify_error(done.stdout + "\n" + done.stderr, done.rc)
        return GpuReport([], pci, f"nvidia-smi failed ({error['code']}): {error['message']}")
    try:
        parsed = parse_xml(done.stdout)
    except ValueError as exc:
        return GpuReport([], pci, f"nvidia-smi -q -x could not be parsed: {exc}")
    return GpuReport(list(parsed["gpus"]), pci, None)


def observe_gpus(report: GpuReport, declared: Sequence[Mapping[str, Any]]) -> None:
    """Record the GPUs found (UUIDs as nvidia-smi lists them, the NVIDIA PCI device count)."""
    observe("GPU UUIDs", sorted(str(g.get("uuid")) for g in report.gpus),
            sorted(str(g.get("uuid")) for g in declared if g.get("uuid")) or None)  # fmt: skip
    observe("GPU count", len(report.gpus), len(declared) if declared else None)
    observe("NVIDIA PCI devices", report.pci_devices)
    if report.problem:
        observe("nvidia-smi", report.problem)


def _gpu_label(gpu: Mapping[str, Any]) -> str:
    uuid = gpu.get("uuid")
    return f"GPU {gpu.get('index')}" + (f" ({uuid})" if uuid else "")


def gpu_problems(
    declared: Sequence[Mapping[str, Any]],
    recorded: Sequence[Mapping[str, Any]],
    present: Sequence[Mapping[str, Any]],
    models: Sequence[Any] = (),
) -> list[str]:
    """Why the host's GPUs fall short of what it should have, one sentence each; [] when none.

    ``declared`` is ``hearth_declared_gpus``, ``recorded`` the GPUs the fact cache recorded at
    the last ``hearth up`` (``hearth_gpus``), ``present`` what nvidia-smi lists now, ``models``
    the declared models (:class:`hearth.models.ModelSpec`), whose ``gpus`` name GPUs by index or
    UUID.
    """
    problems: list[str] = []
    now_uuids = {str(g["uuid"]) for g in present if g.get("uuid")}
    now_indices = {int(g["index"]) for g in present if g.get("index") is not None}
    found = f"found {len(present)}" + (f" ({', '.join(sorted(now_uuids))})" if now_uuids else "")
    for source, gpus in (("declared (hearth_declared_gpus)", declared),
                         ("recorded in the facts of the last hearth up", recorded)):  # fmt: skip
        if len(present) < len(gpus):
            problems.append(f"GPUs: expected {len(gpus)} as {source}, {found}")
        gone = [_gpu_label(g) for g in gpus if g.get("uuid") and str(g["uuid"]) not in now_uuids]
        if gone and len(present) >= len(gpus):
            problems.append(f"GPUs {source} but gone: {', '.join(gone)}; {found}")
        elif gone:
            problems[-1] += f"; missing {', '.join(gone)}"
    for model in models:
        missing = [
            str(ref)
            for ref in getattr(model, "gpus", ())
            if (isinstance(ref, int) and ref not in now_indices)
            or (isinstance(ref, str) and ref not in now_uuids)
        ]
        if missing:
            problems.append(
                f"model {model.name}: names GPU {', '.join(missing)}, not on the host ({found})"
            )
    return problems


# ---------------------------------------------------------------------- front door keys
def key_fingerprint(sha256_hex: str) -> str:
    """A short fingerprint of a stored key hash, safe to pass around and to compare: a hash of
    the hash, so neither a key nor the hash the front door checks ever leaves the inventory or
    the host. The audit's reports never print it either."""
    digest = hashlib.sha256(b"hearth-audit-key\0" + sha256_hex.strip().lower().encode())
    return digest.hexdigest()[:16]


def keys_drift(declared: Sequence[Mapping[str, str]], found: Sequence[Mapping[str, Any]]) -> str:
    """Empty when the host's key entries are exactly the declared ones, else a sentence with the
    counts and the extra/missing entries by position and name (never a hash).

    ``declared``: ``[{name, fingerprint}]`` (the audit's input); ``found``: the entries of the
    host's keys.json (``{name, sha256}``)."""
    want = [(str(d["name"]), str(d["fingerprint"])) for d in declared]
    have = [(str(e.get("name")), key_fingerprint(str(e.get("sha256", "")))) for e in found]
    observe("key hash entries", len(have), len(want))
    observe("key names", [n for n, _ in have], [n for n, _ in want])
    extra = [f"entry {i + 1} (name {name!r})" for i, (name, fp) in enumerate(have)
             if (name, fp) not in want]  # fmt: skip
    missing = [f"key {name!r}" for name, fp in want if (name, fp) not in have]
    if not extra and not missing and len(have) == len(want):
        return ""
    said = f"expected exactly the {len(want)} declared key(s), found {len(have)} entries"
    if extra:
        said += f"; not declared: {', '.join(extra)}"
    if missing:
        said += f"; missing or with another hash: {', '.join(missing)}"
    if not extra and not missing:
        said += "; an entry appears twice"
    return said


# --------------------------------------------------------------------------- rule files
def rules_digest(data: Any) -> str:
    """sha256 of rule-file content as data (canonical JSON): the same for the rules Hearth
    renders and for the file on the host unless a rule was changed, whatever the formatting."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def rules_drift(wanted: Mapping[str, Any], found: Mapping[str, Any]) -> list[str]:
    """Which alerts differ between two rule files (``groups:`` data): added, missing, or a
    field (expr, for, labels, annotations) changed."""

    def index(data: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
        return {
            str(r.get("alert") or r.get("record")): r
            for g in data.get("groups") or []
            for r in g.get("rules") or []
        }

    want, have = index(wanted), index(found)
    drift = [f"{name}: missing" for name in sorted(set(want) - set(have))]
    drift += [f"{name}: not Hearth's" for name in sorted(set(have) - set(want))]
    for name in sorted(set(want) & set(have)):
        fields = sorted(k for k in set(want[name]) | set(have[name])
                        if want[name].get(k) != have[name].get(k))  # fmt: skip
        if fields:
            drift.append(f"{name}: {', '.join(fields)} changed")
    if not drift and rules_digest(wanted) != rules_digest(found):
        drift.append("groups differ (names, intervals or order)")
    return drift
