# -*- coding: utf-8 -*-
# Copyright: Hearth contributors
# Apache-2.0
"""Parse ``nvidia-smi`` output into plain dicts (shared by the ``gpu_facts`` module and Hearth).

Shipped to managed hosts as ``ansible.module_utils.hearth_gpu``: standard library only, and
syntax that runs on Python 3.6.  Every function is total on the outputs recorded under
``tests/fixtures/nvidia-smi``: a missing element or an ``N/A`` value becomes ``None``, never an
exception.  Only text that is not XML at all makes ``parse_xml`` raise ``ValueError``.
"""

from __future__ import absolute_import, division, print_function

import csv
import re
import xml.etree.ElementTree as ET

# Fields asked of ``nvidia-smi --query-gpu`` in CSV mode.  ``compute_cap`` needs driver >= 510;
# the module drops any field an older driver rejects ("is not a valid field to query") and retries.
QUERY_FIELDS = (
    "index",
    "name",
    "uuid",
    "pci.bus_id",
    "driver_version",
    "count",
    "memory.total",
    "memory.used",
    "memory.free",
    "compute_cap",
    "persistence_mode",
    "ecc.mode.current",
    "ecc.errors.uncorrected.volatile.total",
    "ecc.errors.uncorrected.aggregate.total",
    "mig.mode.current",
    "temperature.gpu",
    "power.draw",
    "power.limit",
    "utilization.gpu",
    "retired_pages.pending",
    "remapped_rows.pending",
)

# Compute capability by product name, for outputs that do not carry it (no ``-q -x`` schema up to
# v13 has it; ``--query-gpu=compute_cap`` needs driver >= 510).  Checked in order: the first
# pattern that matches wins, so more specific names come first.
CAPABILITY_TABLE = (
    (r"RTX PRO \d+ Blackwell|RTX 50[5-9]0\b", "12.0"),
    (r"\bGB300\b|\bB300\b", "10.3"),
    (r"\bGB200\b|\bB200\b|\bB100\b", "10.0"),
    (r"\bGH200\b|\bH200\b|\bH100\b|\bH800\b|\bH20\b", "9.0"),
    (r"\bL40S\b|\bL40\b|\bL4\b|\bL20\b|RTX [2-6]000 (SFF )?Ada|RTX 40[5-9]0\b", "8.9"),
    (r"\bA100\b|\bA800\b|\bA30\b", "8.0"),
    (r"\bA10G?\b|\bA40\b|\bA16\b|\bA2\b|RTX A\d{4}|RTX 30[5-9]0\b", "8.6"),
    (r"\bT4\b|Quadro RTX|TITAN RTX|RTX 20[5-9]0\b|GTX 16[5-6]0\b", "7.5"),
    (r"\bV100\b|TITAN V\b", "7.0"),
    (r"\bP100\b", "6.0"),
    (r"\bP40\b|\bP4\b|GTX 10[5-8]0\b|TITAN Xp\b", "6.1"),
)

_NA = (
    "",
    "n/a",
    "[n/a]",
    "na",
    "not supported",
    "[not supported]",
    "unknown error",
    "[unknown error]",
    "requested functionality has been deprecated",
    "[requested functionality has been deprecated]",
    "insufficient permissions",
    "[insufficient permissions]",
    "none",
)
_NUM_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*[A-Za-z%/()]*\s*$")
_UNIT_RE = re.compile(r"\s*\[[^\]]*\]\s*$")


# --------------------------------------------------------------------------- value helpers


def _clean(value):
    """Strip a raw value; ``None`` for the markers nvidia-smi uses for "no value"."""
    if value is None:
        return None
    text = " ".join(str(value).split())
    if text.lower() in _NA:
        return None
    return text


def _number(value):
    """``"81559 MiB"`` -> 81559, ``"24.84 W"`` -> 24.84, ``"N/A"`` -> None."""
    text = _clean(value)
    if text is None:
        return None
    match = _NUM_RE.match(text)
    if not match:
        return None
    raw = match.group(1)
    if "." in raw:
        return float(raw)
    return int(raw)


def _int(value):
    number = _number(value)
    if number is None:
        return None
    return int(number)


def _float(value):
    number = _number(value)
    if number is None:
        return None
    return float(number)


def _bool(value):
    """Enabled/Disabled, Yes/No, On/Off, Active/Not Active -> bool; anything else -> None."""
    text = _clean(value)
    if text is None:
        return None
    low = text.lower()
    if low in ("enabled", "yes", "on", "true", "active", "1"):
        return True
    if low in ("disabled", "no", "off", "false", "not active", "0"):
        return False
    return None


def _first(*values):
    for value in values:
        if value is not None:
            return value
    return None


def capability_from_name(name):
    """Compute capability for a well-known product name, or ``None``."""
    if not name:
        return None
    for pattern, capability in CAPABILITY_TABLE:
        if re.search(pattern, name, re.IGNORECASE):
            return capability
    return None


def _normalise_capability(value):
    text = _clean(value)
    if text is None:
        return None
    match = re.match(r"^(\d+)\.(\d+)$", text)
    if not match:
        return None
    return "%d.%d" % (int(match.group(1)), int(match.group(2)))


def _with_capability(gpu, reported):
    capability = _normalise_capability(reported)
    if capability is not None:
        gpu["compute_capability"] = capability
        gpu["compute_capability_source"] = "nvidia-smi"
        return gpu
    capability = capability_from_name(gpu.get("name"))
    gpu["compute_capability"] = capability
    gpu["compute_capability_source"] = "table" if capability is not None else None
    return gpu


def pci_sysfs_address(bus_id):
    """``00000000:01:00.0`` or ``0000:04:00.0`` -> ``0000:01:00.0`` (as under /sys/bus/pci)."""
    text = _clean(bus_id)
    if text is None:
        return None
    match = re.match(r"^([0-9A-Fa-f]+):([0-9A-Fa-f]{2}):([0-9A-Fa-f]{2})\.([0-7])$", text)
    if not match:
        return None
    domain = int(match.group(1), 16)
    return "%04x:%s:%s.%s" % (
        domain,
        match.group(2).lower(),
        match.group(3).lower(),
        match.group(4),
    )


def _empty_gpu():
    return {
        "index": None,
        "name": None,
        "uuid": None,
        "pci_bus_id": None,
        "pci_address": None,
        "memory_total_mib": None,
        "memory_used_mib": None,
        "memory_free_mib": None,
        "driver_version": None,
        "cuda_version": None,
        "compute_capability": None,
        "compute_capability_source": None,
        "persistence_mode": None,
        "ecc_enabled": None,
        "ecc_errors_uncorrected": None,
        "ecc_errors_uncorrected_volatile": None,
        "ecc_errors_uncorrected_aggregate": None,
        "mig_mode": None,
        "mig_devices": [],
        "temperature_c": None,
        "power_draw_w": None,
        "power_limit_w": None,
        "utilization_gpu_pct": None,
        "retired_pages_pending": None,
        "remapped_rows_pending": None,
        "virtualization_mode": None,
    }


# --------------------------------------------------------------------------- XML (-q -x)


def _text(node, path):
    """Text of ``node/path`` (ElementTree path), cleaned; ``None`` if absent or N/A."""
    if node is None:
        return None
    child = node.find(path)
    if child is None:
        return None
    return _clean(child.text)


def _uncorrected_sum(block):
    """Uncorrected ECC count from one ``ecc_errors/volatile`` or ``/aggregate`` element.

    Schema <= v11 (Pascal/Volta era): ``double_bit/total``.  Newer schemas: the sum of the
    ``*_uncorrectable*`` counters (``sram_uncorrectable``, ``dram_uncorrectable``, and on
    v13 ``sram_uncorrectable_parity``/``_secded``).  ``None`` when every counter is N/A.
    """
    if block is None:
        return None
    double_bit = block.find("double_bit")
    if double_bit is not None:
        return _int(_text(double_bit, "total"))
    total = None
    for child in list(block):
        if "uncorrectable" not in child.tag:
            continue
        value = _int(child.text)
        if value is not None:
            total = (total or 0) + value
    return total


def _mig_devices(gpu_node):
    devices = []
    container = gpu_node.find("mig_devices")
    if container is None:
        return devices
    for node in container.findall("mig_device"):
        devices.append(
            {
                "index": _int(_text(node, "index")),
                "gpu_instance_id": _int(_text(node, "gpu_instance_id")),
                "compute_instance_id": _int(_text(node, "compute_instance_id")),
                "multiprocessor_count": _int(
                    _text(node, "device_attributes/shared/multiprocessor_count")
                ),
                "memory_total_mib": _int(_text(node, "fb_memory_usage/total")),
                "memory_used_mib": _int(_text(node, "fb_memory_usage/used")),
                "memory_free_mib": _int(_text(node, "fb_memory_usage/free")),
            }
        )
    return devices


def _power_value(gpu_node, names):
    """First numeric value among ``names`` in the GPU's power section.

    ``power_readings`` up to schema v11, ``gpu_power_readings`` from v12 on (v13 splits
    ``power_draw`` into ``average_power_draw``/``instant_power_draw``).
    """
    for section in ("gpu_power_readings", "power_readings"):
        node = gpu_node.find(section)
        if node is None:
            continue
        for name in names:
            value = _float(_text(node, name))
            if value is not None:
                return value
    return None


def _gpu_from_xml(node, position, driver_version, cuda_version):
    gpu = _empty_gpu()
    gpu["index"] = position
    gpu["name"] = _text(node, "product_name")
    gpu["uuid"] = _text(node, "uuid")
    gpu["pci_bus_id"] = _first(_text(node, "pci/pci_bus_id"), _clean(node.get("id")))
    gpu["pci_address"] = pci_sysfs_address(gpu["pci_bus_id"])
    gpu["memory_total_mib"] = _int(_text(node, "fb_memory_usage/total"))
    gpu["memory_used_mib"] = _int(_text(node, "fb_memory_usage/used"))
    gpu["memory_free_mib"] = _int(_text(node, "fb_memory_usage/free"))
    gpu["driver_version"] = driver_version
    gpu["cuda_version"] = cuda_version
    gpu["persistence_mode"] = _bool(_text(node, "persistence_mode"))
    gpu["ecc_enabled"] = _bool(_text(node, "ecc_mode/current_ecc"))
    volatile = _uncorrected_sum(node.find("ecc_errors/volatile"))
    aggregate = _uncorrected_sum(node.find("ecc_errors/aggregate"))
    gpu["ecc_errors_uncorrected_volatile"] = volatile
    gpu["ecc_errors_uncorrected_aggregate"] = aggregate
    gpu["ecc_errors_uncorrected"] = _first(aggregate, volatile)
    gpu["mig_mode"] = _bool(_text(node, "mig_mode/current_mig"))
    gpu["mig_devices"] = _mig_devices(node)
    gpu["temperature_c"] = _int(_text(node, "temperature/gpu_temp"))
    gpu["power_draw_w"] = _power_value(
        node, ("power_draw", "average_power_draw", "instant_power_draw")
    )
    gpu["power_limit_w"] = _power_value(
        node, ("current_power_limit", "power_limit", "enforced_power_limit")
    )
    gpu["utilization_gpu_pct"] = _number(_text(node, "utilization/gpu_util"))
    gpu["retired_pages_pending"] = _first(
        _bool(_text(node, "retired_pages/pending_retirement")),
        _bool(_text(node, "retired_pages/pending_blacklist")),
    )
    gpu["remapped_rows_pending"] = _bool(_text(node, "remapped_rows/remapped_row_pending"))
    raw_virt = node.find("gpu_virtualization_mode/virtualization_mode")
    gpu["virtualization_mode"] = None
    if raw_virt is not None and raw_virt.text is not None:
        virt = " ".join(raw_virt.text.split())
        # "None" is a real answer here (bare metal), unlike N/A.
        gpu["virtualization_mode"] = virt if virt and virt.lower() != "n/a" else None
    reported = _first(_text(node, "compute_cap"), _text(node, "cuda_compute_capability"))
    return _with_capability(gpu, reported)


def parse_xml(text):
    """Parse ``nvidia-smi -q -x``.  Raises ``ValueError`` only when the text is not that XML."""
    if not text or "<nvidia_smi_log" not in text:
        raise ValueError("not nvidia-smi -q -x output (no <nvidia_smi_log> element)")
    try:
        # Input is the local nvidia-smi's own output (or a recorded copy of it).
        root = ET.fromstring(text.strip().encode("utf-8"))  # noqa: S314
    except ET.ParseError as exc:
        raise ValueError("nvidia-smi XML does not parse: %s" % exc) from exc
    if root.tag != "nvidia_smi_log":
        raise ValueError("unexpected XML root element <%s>" % root.tag)
    driver_version = _text(root, "driver_version")
    cuda_version = _text(root, "cuda_version")
    gpus = [
        _gpu_from_xml(node, position, driver_version, cuda_version)
        for position, node in enumerate(root.findall("gpu"))
    ]
    return {
        "format": "xml",
        "driver_version": driver_version,
        "cuda_version": cuda_version,
        "attached_gpus": _first(_int(_text(root, "attached_gpus")), len(gpus)),
        "gpus": gpus,
    }


# --------------------------------------------------------------------------- CSV (--query-gpu)

_KNOWN_FIELDS = frozenset(QUERY_FIELDS) | frozenset(("gpu_name", "gpu_uuid", "gpu_bus_id"))


def _field_name(header_cell):
    """``memory.total [MiB]`` -> ``memory.total``."""
    return _UNIT_RE.sub("", header_cell.strip()).strip()


def _split_rows(text):
    lines = [line for line in text.splitlines() if line.strip()]
    return [[cell.strip() for cell in row] for row in csv.reader(lines, skipinitialspace=True)]


def _gpu_from_csv(record):
    def get(*names):
        for name in names:
            value = _clean(record.get(name))
            if value is not None:
                return value
        return None

    gpu = _empty_gpu()
    gpu["index"] = _int(get("index"))
    gpu["name"] = get("name", "gpu_name")
    gpu["uuid"] = get("uuid", "gpu_uuid")
    gpu["pci_bus_id"] = get("pci.bus_id", "gpu_bus_id")
    gpu["pci_address"] = pci_sysfs_address(gpu["pci_bus_id"])
    gpu["memory_total_mib"] = _int(get("memory.total"))
    gpu["memory_used_mib"] = _int(get("memory.used"))
    gpu["memory_free_mib"] = _int(get("memory.free"))
    gpu["driver_version"] = get("driver_version")
    gpu["persistence_mode"] = _bool(get("persistence_mode"))
    gpu["ecc_enabled"] = _bool(get("ecc.mode.current"))
    volatile = _int(get("ecc.errors.uncorrected.volatile.total"))
    aggregate = _int(get("ecc.errors.uncorrected.aggregate.total"))
    gpu["ecc_errors_uncorrected_volatile"] = volatile
    gpu["ecc_errors_uncorrected_aggregate"] = aggregate
    gpu["ecc_errors_uncorrected"] = _first(aggregate, volatile)
    gpu["mig_mode"] = _bool(get("mig.mode.current"))
    # --query-gpu cannot list MIG instances: unknown (None) when MIG is on.
    gpu["mig_devices"] = None if gpu["mig_mode"] else []
    gpu["temperature_c"] = _int(get("temperature.gpu"))
    gpu["power_draw_w"] = _float(get("power.draw", "power.draw.average", "power.draw.instant"))
    gpu["power_limit_w"] = _float(get("power.limit", "enforced.power.limit"))
    gpu["utilization_gpu_pct"] = _number(get("utilization.gpu"))
    gpu["retired_pages_pending"] = _bool(get("retired_pages.pending"))
    gpu["remapped_rows_pending"] = _bool(get("remapped_rows.pending"))
    return _with_capability(gpu, get("compute_cap"))


def parse_query_csv(text, fields=None):
    """Parse ``nvidia-smi --query-gpu=FIELDS --format=csv[,noheader][,nounits]``.

    With a header line the field names come from it (units in brackets dropped); with
    ``noheader`` pass the ``fields`` that were queried.  When both are there, the header wins.
    """
    rows = _split_rows(text or "")
    wanted = [name.strip() for name in (fields or ()) if name.strip()]
    header = None
    if rows:
        first = [_field_name(cell) for cell in rows[0]]
        looks_like_header = (
            "name" in first
            or "uuid" in first
            or "index" in first
            or (bool(wanted) and first == wanted)
        )
        if looks_like_header or not wanted:
            header = first
            rows = rows[1:]
    if header is None:
        header = wanted
    if header and not set(header) & _KNOWN_FIELDS:
        raise ValueError(
            "not nvidia-smi --query-gpu CSV output (no known field in %r)" % (header[:3],)
        )
    gpus = []
    for position, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(
                "CSV row %d has %d values for %d fields" % (position + 1, len(row), len(header))
            )
        gpu = _gpu_from_csv(dict((name, row[i]) for i, name in enumerate(header)))
        if gpu["index"] is None:
            gpu["index"] = position
        gpus.append(gpu)
    driver_version = _first(*[gpu["driver_version"] for gpu in gpus]) if gpus else None
    count = None
    if rows and "count" in header:
        count = _int(rows[0][header.index("count")])
    return {
        "format": "csv",
        "driver_version": driver_version,
        "cuda_version": None,
        "attached_gpus": _first(count, len(gpus)),
        "gpus": gpus,
    }


# --------------------------------------------------------------------------- errors

ERROR_MESSAGES = {
    "no_driver": (
        "nvidia-smi cannot talk to the NVIDIA kernel driver: the module is not loaded. "
        "Check `lsmod | grep nvidia` and `dmesg | grep -i nvidia`; if Secure Boot is on, the "
        "unsigned module was refused (enrol the MOK key or sign the module); if the kernel was "
        "upgraded, check that DKMS built the module for it (`dkms status`)."
    ),
    "driver_library_mismatch": (
        "NVML driver/library version mismatch: the userspace NVIDIA libraries were upgraded "
        "while the old kernel module is still loaded. Reboot (or unload and reload the nvidia "
        "modules when no process uses the GPU), and hold the driver packages so unattended "
        "upgrades cannot do this again."
    ),
    "not_installed": (
        "nvidia-smi is not installed (command not found): install the NVIDIA driver utilities."
    ),
    "unknown": "nvidia-smi failed",
}

_ERROR_PATTERNS = (
    ("driver_library_mismatch", re.compile(r"Driver/library version mismatch", re.I)),
    (
        "no_driver",
        re.compile(
            r"couldn't communicate with the NVIDIA driver|NVIDIA driver is not loaded", re.I
        ),
    ),
    (
        "not_installed",
        re.compile(
            r"nvidia-smi: (command )?not found|No such file or directory|"
            r"command not found|is not recognized as an internal or external command",
            re.I,
        ),
    ),
)
_RC_CODES = {9: "no_driver", 18: "driver_library_mismatch", 127: "not_installed"}


def classify_error(text, rc):
    """Map a failed nvidia-smi run (its output and exit status) to a code and operator message.

    Returns ``{"code", "message", "rc", "detail"}``; ``detail`` is the first output line.
    """
    output = text or ""
    code = None
    for candidate, pattern in _ERROR_PATTERNS:
        if pattern.search(output):
            code = candidate
            break
    if code is None and rc is not None:
        code = _RC_CODES.get(rc)
    if code is None:
        code = "unknown"
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    detail = lines[0] if lines else None
    message = ERROR_MESSAGES[code]
    if code == "driver_library_mismatch":
        match = re.search(r"NVML library version:\s*(\S+)", output)
        if match:
            message = "%s (NVML library version: %s)" % (message, match.group(1))
    if code == "unknown":
        message = "nvidia-smi failed (rc=%s): %s" % (rc, detail or "no output")
    return {"code": code, "message": message, "rc": rc, "detail": detail}


def looks_like_error(text):
    """True when ``text`` is one of the known nvidia-smi failure messages."""
    return classify_error(text, None)["code"] != "unknown"
