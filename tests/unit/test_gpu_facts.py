"""The nvidia-smi parser and the ``gpu_facts`` module, against recorded real nvidia-smi outputs.

Fixtures: ``tests/fixtures/nvidia-smi`` (provenance in its ``SOURCES.md``).
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from hearth import gpu, paths

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "nvidia-smi"

XML_A100_MIG = "a100-sxm4-80gb-mig-enabled_driver-535.54.03_q-x.xml"
XML_T4 = "tesla-t4_driver-515.105.01_q-x.xml"
XML_RTX_PRO = "rtx-pro-6000-blackwell-maxq_driver-590.44.01_q-x.xml"
XML_2080 = "2x-geforce-rtx-2080_driver-590.44.01_q-x.xml"
XML_GRID_P4 = "grid-p4-1q-vgpu-guest-windows_driver-513.46_q-x.xml"
XML_P100_V8 = "2x-tesla-p100-pcie-12gb_driver-375.66_q-x_schema-v8.xml"
CSV_H100 = "h100-80gb-hbm3_driver-590.48.01_query-gpu-all-fields.csv"
CSV_H100_MIG = "h100-80gb-hbm3-mig-enabled_driver-590.48.01_query-gpu-all-fields.csv"
CSV_L40S = "l40s_driver-595.80_query-gpu-all-fields.csv"
CSV_P100_NOUNITS = "tesla-p100-pcie-16gb_query-gpu_csv-nounits.csv"
ERR_NO_DRIVER = "error_no-driver_couldnt-communicate.txt"
ERR_MISMATCH_550 = "error_nvml-driver-library-mismatch_driver-550.txt"
ERR_MISMATCH_LEGACY = "error_nvml-driver-library-mismatch_legacy-one-line.txt"

ALL_XML = [XML_A100_MIG, XML_T4, XML_RTX_PRO, XML_2080, XML_GRID_P4, XML_P100_V8]
ALL_CSV = [CSV_H100, CSV_H100_MIG, CSV_L40S, CSV_P100_NOUNITS]
ALL_ERRORS = [ERR_NO_DRIVER, ERR_MISMATCH_550, ERR_MISMATCH_LEGACY]

GPU_KEYS = {
    "index", "name", "uuid", "pci_bus_id", "pci_address", "memory_total_mib", "memory_used_mib",
    "memory_free_mib", "driver_version", "cuda_version", "compute_capability",
    "compute_capability_source", "persistence_mode", "ecc_enabled", "ecc_errors_uncorrected",
    "ecc_errors_uncorrected_volatile", "ecc_errors_uncorrected_aggregate", "mig_mode",
    "mig_devices", "temperature_c", "power_draw_w", "power_limit_w", "utilization_gpu_pct",
    "retired_pages_pending", "remapped_rows_pending", "virtualization_mode",
}  # fmt: skip


def read(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def xml(name: str) -> dict[str, Any]:
    return gpu.parse_xml(read(name))


def csv(name: str) -> dict[str, Any]:
    return gpu.parse_query_csv(read(name))


# ------------------------------------------------------------------------------------- fixtures


def test_fixtures_are_present_and_documented() -> None:
    sources = read("SOURCES.md")
    for name in ALL_XML + ALL_CSV + ALL_ERRORS:
        assert (FIXTURES / name).is_file(), name
        assert f"`{name}`" in sources, f"{name} has no entry in SOURCES.md"


# ------------------------------------------------------------------------------------- XML


def test_xml_a100_mig_enabled() -> None:
    parsed = xml(XML_A100_MIG)
    assert parsed["driver_version"] == "535.54.03"
    assert parsed["cuda_version"] == "12.2"
    # Trimmed upstream: attached_gpus says 4, only the first <gpu> block is in the file.
    assert parsed["attached_gpus"] == 4
    assert len(parsed["gpus"]) == 1
    a100 = parsed["gpus"][0]
    assert a100["index"] == 0
    assert a100["name"] == "NVIDIA A100-SXM4-80GB"
    assert a100["uuid"] == "GPU-513536b6-7d19-9063-b049-1e69664bb298"
    assert a100["pci_bus_id"] == "00000000:01:00.0"
    assert a100["pci_address"] == "0000:01:00.0"
    assert (a100["memory_total_mib"], a100["memory_used_mib"], a100["memory_free_mib"]) == (
        81920,
        50,
        80999,
    )
    assert a100["driver_version"] == "535.54.03"
    assert a100["cuda_version"] == "12.2"
    assert a100["compute_capability"] == "8.0"
    assert a100["compute_capability_source"] == "table"
    assert a100["persistence_mode"] is False
    assert a100["ecc_enabled"] is True
    assert a100["ecc_errors_uncorrected"] == 0
    assert a100["ecc_errors_uncorrected_volatile"] == 0
    assert a100["mig_mode"] is True
    assert a100["temperature_c"] == 27
    assert a100["power_draw_w"] == pytest.approx(67.03)
    assert a100["power_limit_w"] == pytest.approx(500.0)
    assert a100["utilization_gpu_pct"] is None  # N/A while MIG is on
    assert a100["retired_pages_pending"] is None
    assert a100["remapped_rows_pending"] is None  # <remapped_rows>N/A</remapped_rows>
    assert a100["virtualization_mode"] == "None"


def test_xml_a100_mig_devices() -> None:
    migs = xml(XML_A100_MIG)["gpus"][0]["mig_devices"]
    assert [m["index"] for m in migs] == [0, 1, 2, 3]
    assert [m["gpu_instance_id"] for m in migs] == [3, 4, 5, 6]
    assert {m["compute_instance_id"] for m in migs} == {0}
    assert {m["memory_total_mib"] for m in migs} == {19968}
    assert {m["memory_used_mib"] for m in migs} == {12}
    assert {m["memory_free_mib"] for m in migs} == {19955}
    assert {m["multiprocessor_count"] for m in migs} == {14}


def test_xml_tesla_t4_passthrough_vm() -> None:
    parsed = xml(XML_T4)
    assert (parsed["driver_version"], parsed["cuda_version"]) == ("515.105.01", "11.7")
    (t4,) = parsed["gpus"]
    assert t4["name"] == "Tesla T4"
    assert t4["uuid"] == "GPU-d37e67a5-91dd-3774-a5cb-99096249601a"
    assert t4["pci_bus_id"] == "00000000:00:1E.0"
    assert t4["pci_address"] == "0000:00:1e.0"
    assert (t4["memory_total_mib"], t4["memory_used_mib"], t4["memory_free_mib"]) == (
        15360,
        1032,
        13939,
    )
    assert (t4["compute_capability"], t4["compute_capability_source"]) == ("7.5", "table")
    assert t4["virtualization_mode"] == "Pass-Through"
    assert t4["ecc_enabled"] is True
    assert t4["ecc_errors_uncorrected"] == 0
    assert t4["retired_pages_pending"] is False
    assert t4["remapped_rows_pending"] is None
    assert t4["mig_mode"] is None
    assert t4["mig_devices"] == []
    assert t4["persistence_mode"] is False
    assert t4["temperature_c"] == 40
    # Older schema: <power_readings><power_limit>, not <gpu_power_readings><current_power_limit>.
    assert t4["power_draw_w"] == pytest.approx(26.78)
    assert t4["power_limit_w"] == pytest.approx(70.0)
    assert t4["utilization_gpu_pct"] == 0


def test_xml_rtx_pro_6000_blackwell_v13_schema() -> None:
    parsed = xml(XML_RTX_PRO)
    assert (parsed["driver_version"], parsed["cuda_version"]) == ("590.44.01", "13.1")
    (pro,) = parsed["gpus"]
    assert pro["name"] == "NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition"
    assert pro["uuid"] == "GPU-12345678-aaaa-bbbb-cccc-0123456789ab"
    assert pro["pci_bus_id"] == "00000000:61:00.0"
    assert pro["memory_total_mib"] == 97887
    assert pro["memory_used_mib"] == 65720
    assert pro["memory_free_mib"] == 31531
    assert (pro["compute_capability"], pro["compute_capability_source"]) == ("12.0", "table")
    assert pro["ecc_enabled"] is False
    assert pro["ecc_errors_uncorrected"] is None  # every counter N/A with ECC off
    assert pro["persistence_mode"] is True
    assert pro["mig_mode"] is None
    assert pro["mig_devices"] == []  # <mig_devices>None</mig_devices>
    assert pro["remapped_rows_pending"] is False  # v13 carries the full remapped_rows block
    # v13 has no <power_draw>: average (3.97 W) wins over instant (3.99 W).
    assert pro["power_draw_w"] == pytest.approx(3.97)
    assert pro["power_limit_w"] == pytest.approx(300.0)
    assert pro["temperature_c"] == 24


def test_xml_dual_rtx_2080_consumer() -> None:
    parsed = xml(XML_2080)
    assert parsed["attached_gpus"] == 2
    first, second = parsed["gpus"]
    assert [first["index"], second["index"]] == [0, 1]
    assert first["name"] == second["name"] == "NVIDIA GeForce RTX 2080"
    # Anonymised upstream: both GPUs carry the same placeholder UUID.
    assert first["uuid"] == second["uuid"] == "GPU-12345678-aaaa-bbbb-cccc-0123456789ab"
    assert [first["pci_bus_id"], second["pci_bus_id"]] == ["00000000:01:00.0", "00000000:02:00.0"]
    assert first["memory_total_mib"] == second["memory_total_mib"] == 8192
    assert first["compute_capability"] == "7.5"
    assert first["ecc_enabled"] is None  # GeForce: no ECC
    assert first["ecc_errors_uncorrected"] is None
    # average_power_draw is N/A on these: the instant reading is used.
    assert first["power_draw_w"] == pytest.approx(1.00)
    assert second["power_draw_w"] == pytest.approx(1.62)
    assert first["power_limit_w"] == pytest.approx(215.0)


def test_xml_grid_p4_vgpu_guest() -> None:
    parsed = xml(XML_GRID_P4)
    assert (parsed["driver_version"], parsed["cuda_version"]) == ("513.46", "11.6")
    (vgpu,) = parsed["gpus"]
    assert vgpu["name"] == "GRID P4-1Q"
    assert vgpu["uuid"] == "GPU-1b1ea7c7-1c4b-ed49-1c72-26c65f2dd207"
    assert vgpu["virtualization_mode"] == "VGPU"
    assert (vgpu["memory_total_mib"], vgpu["memory_used_mib"]) == (1024, 807)
    assert vgpu["persistence_mode"] is None
    assert vgpu["ecc_enabled"] is None
    assert vgpu["ecc_errors_uncorrected"] is None
    assert vgpu["power_draw_w"] is None
    assert vgpu["power_limit_w"] is None
    assert vgpu["temperature_c"] == 0  # what a vGPU guest reports
    assert (vgpu["compute_capability"], vgpu["compute_capability_source"]) == ("6.1", "table")


def test_xml_p100_schema_v8() -> None:
    parsed = xml(XML_P100_V8)
    assert parsed["driver_version"] == "375.66"
    assert parsed["cuda_version"] is None  # schema v8 has no <cuda_version>
    first, second = parsed["gpus"]
    assert first["uuid"] == "GPU-28604e81-21ec-cc48-6759-bf2648b22e16"
    assert second["uuid"] == "GPU-46915a82-3fd2-8e11-ae26-a80b607c04f3"
    assert first["name"] == "Tesla P100-PCIE-12GB"
    assert second["name"] == "Tesla P100-PCIE-12GB_2"  # hand-edited upstream
    # Four-digit PCI domain in this schema; the sysfs form is the same.
    assert [first["pci_bus_id"], second["pci_bus_id"]] == ["0000:04:00.0", "0000:82:00.0"]
    assert second["pci_address"] == "0000:82:00.0"
    assert (first["memory_total_mib"], first["memory_used_mib"], first["memory_free_mib"]) == (
        11567,
        11400,
        167,
    )
    assert second["memory_total_mib"] == 12290
    assert first["ecc_enabled"] is True
    assert first["ecc_errors_uncorrected"] == 0  # from <double_bit><total>
    assert first["mig_mode"] is None  # no MIG elements before schema v10
    assert first["utilization_gpu_pct"] == pytest.approx(33.4)
    assert second["utilization_gpu_pct"] == pytest.approx(10.3)
    assert first["power_limit_w"] == pytest.approx(250.0)
    assert first["retired_pages_pending"] is False
    assert [g["compute_capability"] for g in parsed["gpus"]] == ["6.0", "6.0"]


@pytest.mark.parametrize("name", ALL_XML)
def test_xml_every_fixture_has_full_shape(name: str) -> None:
    parsed = xml(name)
    assert parsed["gpus"], name
    for item in parsed["gpus"]:
        assert set(item) == GPU_KEYS
        assert item["uuid"].startswith("GPU-")
        assert isinstance(item["memory_total_mib"], int)
        # No -q -x schema up to v13 carries the compute capability.
        assert item["compute_capability_source"] == "table"


@pytest.mark.parametrize("name", ALL_XML)
def test_xml_missing_elements_become_none(name: str) -> None:
    text = read(name)
    for tag in (
        "fb_memory_usage",
        "ecc_errors",
        "ecc_mode",
        "mig_mode",
        "mig_devices",
        "temperature",
        "power_readings",
        "gpu_power_readings",
        "pci",
        "uuid",
        "product_name",
        "cuda_version",
    ):
        text = re.sub(rf"<{tag}>.*?</{tag}>", "", text, flags=re.S)
    parsed = gpu.parse_xml(text)
    assert parsed["cuda_version"] is None
    for item in parsed["gpus"]:
        assert item["memory_total_mib"] is None
        assert item["uuid"] is None
        assert item["name"] is None
        assert item["compute_capability"] is None
        assert item["compute_capability_source"] is None
        assert item["ecc_enabled"] is None
        assert item["mig_devices"] == []
        assert item["pci_bus_id"] is not None  # falls back to <gpu id="...">


def test_xml_bare_gpu_element() -> None:
    parsed = gpu.parse_xml("<nvidia_smi_log><gpu/></nvidia_smi_log>")
    assert parsed["attached_gpus"] == 1
    (item,) = parsed["gpus"]
    assert set(item) == GPU_KEYS
    assert item["index"] == 0
    assert item["name"] is None


@pytest.mark.parametrize("name", [*ALL_ERRORS, CSV_H100])
def test_xml_rejects_other_output(name: str) -> None:
    with pytest.raises(ValueError, match="nvidia_smi_log"):
        gpu.parse_xml(read(name))


def test_xml_rejects_truncated_document() -> None:
    text = read(XML_T4)
    with pytest.raises(ValueError, match="does not parse"):
        gpu.parse_xml(text[: len(text) // 2])


# ------------------------------------------------------------------------------------- CSV


def test_csv_h100() -> None:
    parsed = csv(CSV_H100)
    assert parsed["driver_version"] == "590.48.01"
    assert parsed["cuda_version"] is None  # --query-gpu has no CUDA version field
    assert parsed["attached_gpus"] == 1
    (h100,) = parsed["gpus"]
    assert h100["name"] == "NVIDIA H100 80GB HBM3"
    assert h100["uuid"] == "GPU-00000000-0000-0000-0000-000000000000"  # masked upstream
    assert h100["pci_bus_id"] == "00000000:00:09.0"
    assert (h100["memory_total_mib"], h100["memory_used_mib"], h100["memory_free_mib"]) == (
        81559,
        0,
        81081,
    )
    assert (h100["compute_capability"], h100["compute_capability_source"]) == ("9.0", "nvidia-smi")
    assert h100["persistence_mode"] is True
    assert h100["ecc_enabled"] is True
    assert h100["ecc_errors_uncorrected"] == 0
    assert h100["mig_mode"] is False
    assert h100["mig_devices"] == []
    assert h100["temperature_c"] == 41
    assert h100["power_draw_w"] == pytest.approx(69.85)
    assert h100["power_limit_w"] == pytest.approx(700.0)
    assert h100["utilization_gpu_pct"] == 0
    assert h100["retired_pages_pending"] is None  # [N/A] on Hopper (row remapping instead)
    assert h100["remapped_rows_pending"] is False


def test_csv_h100_mig_enabled() -> None:
    (h100,) = csv(CSV_H100_MIG)["gpus"]
    assert h100["mig_mode"] is True
    assert h100["mig_devices"] is None  # --query-gpu cannot list MIG instances
    assert h100["utilization_gpu_pct"] is None
    assert h100["memory_used_mib"] == 59
    assert h100["memory_free_mib"] == 81022
    assert h100["remapped_rows_pending"] is None
    assert h100["power_draw_w"] == pytest.approx(71.15)
    assert h100["compute_capability"] == "9.0"


def test_csv_l40s() -> None:
    parsed = csv(CSV_L40S)
    assert parsed["driver_version"] == "595.80"
    (l40s,) = parsed["gpus"]
    assert l40s["name"] == "NVIDIA L40S"
    assert l40s["pci_bus_id"] == "00000000:01:00.0"
    assert (l40s["memory_total_mib"], l40s["memory_free_mib"]) == (46068, 45460)
    assert (l40s["compute_capability"], l40s["compute_capability_source"]) == ("8.9", "nvidia-smi")
    assert l40s["persistence_mode"] is False
    assert l40s["mig_mode"] is None  # [N/A]: no MIG on Ada
    assert l40s["utilization_gpu_pct"] == 100
    assert l40s["power_draw_w"] == pytest.approx(144.97)
    assert l40s["power_limit_w"] == pytest.approx(350.0)
    assert l40s["temperature_c"] == 63


def test_csv_p100_nounits_subset_of_fields() -> None:
    parsed = csv(CSV_P100_NOUNITS)
    assert parsed["driver_version"] is None  # not queried
    (p100,) = parsed["gpus"]
    assert p100["name"] == "Tesla P100-PCIE-16GB"
    assert p100["uuid"] == "GPU-ef1b2c9b-38d8-2090-2bd1-f567a3eb42a6"
    assert p100["memory_total_mib"] is None  # not queried (only reserved/used/free)
    assert (p100["memory_used_mib"], p100["memory_free_mib"]) == (0, 16280)
    assert p100["temperature_c"] == 37
    assert p100["power_draw_w"] == pytest.approx(28.16)
    assert p100["index"] == 0  # from the row position
    assert (p100["compute_capability"], p100["compute_capability_source"]) == ("6.0", "table")


def test_csv_noheader_with_fields() -> None:
    header, row = read(CSV_H100).splitlines()[:2]
    fields = [re.sub(r"\s*\[.*\]$", "", cell.strip()) for cell in header.split(",")]
    parsed = gpu.parse_query_csv(row + "\n", fields)
    assert parsed["gpus"][0]["memory_total_mib"] == 81559
    assert parsed["gpus"][0]["compute_capability"] == "9.0"
    assert parsed == csv(CSV_H100)


def test_csv_noheader_nounits_module_query() -> None:
    """The exact shape the module gets back in CSV mode (header kept, nounits)."""
    fields = gpu.query_fields()
    header = ", ".join(f"{f} [MiB]" if f.startswith("memory.") else f for f in fields)
    values = {
        "index": "3",
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": "GPU-1",
        "pci.bus_id": "00000000:1B:00.0",
        "driver_version": "550.54.15",
        "count": "8",
        "memory.total": "81559",
        "memory.used": "1",
        "memory.free": "81080",
        "compute_cap": "9.0",
        "persistence_mode": "Enabled",
        "ecc.mode.current": "Enabled",
        "ecc.errors.uncorrected.volatile.total": "0",
        "ecc.errors.uncorrected.aggregate.total": "2",
        "mig.mode.current": "Disabled",
        "temperature.gpu": "33",
        "power.draw": "[N/A]",
        "power.limit": "700.00",
        "utilization.gpu": "[Not Supported]",
        "retired_pages.pending": "[N/A]",
        "remapped_rows.pending": "Yes",
    }
    row = ", ".join(values[f] for f in fields)
    parsed = gpu.parse_query_csv(f"{header}\n{row}\n")
    (item,) = parsed["gpus"]
    assert parsed["attached_gpus"] == 8
    assert item["index"] == 3
    assert item["ecc_errors_uncorrected"] == 2  # aggregate wins over volatile
    assert item["ecc_errors_uncorrected_volatile"] == 0
    assert item["power_draw_w"] is None
    assert item["utilization_gpu_pct"] is None
    assert item["remapped_rows_pending"] is True
    assert item["pci_address"] == "0000:1b:00.0"


def test_csv_without_header_or_fields_is_rejected() -> None:
    row = read(CSV_H100).splitlines()[1]
    with pytest.raises(ValueError, match="no known field"):
        gpu.parse_query_csv(row)


@pytest.mark.parametrize("name", ALL_ERRORS)
def test_csv_rejects_error_output(name: str) -> None:
    with pytest.raises(ValueError):
        gpu.parse_query_csv(read(name))


def test_csv_empty_output_has_no_gpus() -> None:
    assert gpu.parse_query_csv("")["gpus"] == []


@pytest.mark.parametrize("name", [CSV_H100, CSV_L40S])
def test_query_fields_are_valid_on_recorded_drivers(name: str) -> None:
    """Every field the module asks for is in the header a real 590/595 driver printed."""
    header = {re.sub(r"\s*\[.*\]$", "", c.strip()) for c in read(name).splitlines()[0].split(",")}
    assert "compute_cap" in gpu.query_fields()
    assert set(gpu.query_fields()) <= header


# ------------------------------------------------------------------------------------- errors


def test_classify_no_driver() -> None:
    error = gpu.classify_error(read(ERR_NO_DRIVER), 9)
    assert error["code"] == "no_driver"
    assert error["rc"] == 9
    assert "lsmod | grep nvidia" in error["message"]
    assert "Secure Boot" in error["message"]
    assert "DKMS" in error["message"]
    assert error["detail"].startswith("NVIDIA-SMI has failed because it couldn't communicate")


@pytest.mark.parametrize("name", [ERR_MISMATCH_550, ERR_MISMATCH_LEGACY])
def test_classify_driver_library_mismatch(name: str) -> None:
    error = gpu.classify_error(read(name), 18)
    assert error["code"] == "driver_library_mismatch"
    assert "Reboot" in error["message"]
    assert "hold the driver packages" in error["message"]
    assert error["detail"] == "Failed to initialize NVML: Driver/library version mismatch"


def test_classify_mismatch_reports_library_version() -> None:
    assert "550.144" in gpu.classify_error(read(ERR_MISMATCH_550), None)["message"]
    assert (
        "NVML library version" not in gpu.classify_error(read(ERR_MISMATCH_LEGACY), None)["message"]
    )


@pytest.mark.parametrize(
    ("text", "rc"),
    [
        ("/bin/sh: 1: nvidia-smi: not found", 127),
        ("bash: nvidia-smi: command not found", 127),
        ("[Errno 2] No such file or directory: b'nvidia-smi'", 2),
        ("", 127),
    ],
)
def test_classify_not_installed(text: str, rc: int) -> None:
    assert gpu.classify_error(text, rc)["code"] == "not_installed"


def test_classify_unknown_keeps_the_output() -> None:
    error = gpu.classify_error("No devices were found\n", 6)
    assert error["code"] == "unknown"
    assert "No devices were found" in error["message"]
    assert "rc=6" in error["message"]


def test_classify_falls_back_to_exit_status() -> None:
    assert gpu.classify_error("", 9)["code"] == "no_driver"
    assert gpu.classify_error("", 18)["code"] == "driver_library_mismatch"
    assert gpu.classify_error("", None)["code"] == "unknown"


# ------------------------------------------------------------------------------------- table


@pytest.mark.parametrize(
    ("name", "capability"),
    [
        ("Tesla P100-PCIE-16GB", "6.0"),
        ("Tesla T4", "7.5"),
        ("Tesla V100-SXM2-32GB", "7.0"),
        ("NVIDIA GeForce RTX 2080 Ti", "7.5"),
        ("NVIDIA A100-SXM4-80GB", "8.0"),
        ("NVIDIA A100 80GB PCIe", "8.0"),
        ("NVIDIA A10", "8.6"),
        ("NVIDIA A10G", "8.6"),
        ("NVIDIA L4", "8.9"),
        ("NVIDIA L40S", "8.9"),
        ("NVIDIA H100 80GB HBM3", "9.0"),
        ("NVIDIA H200", "9.0"),
        ("NVIDIA B200", "10.0"),
        ("NVIDIA RTX PRO 6000 Blackwell Server Edition", "12.0"),
        ("Quadro RTX 4000", "7.5"),
        ("NVIDIA RTX 5000 Ada Generation", "8.9"),
        ("NVIDIA GeForce RTX 5090", "12.0"),
        ("NVIDIA Graphics Device", None),
        ("", None),
    ],
)
def test_capability_table(name: str, capability: str | None) -> None:
    assert gpu.capability_from_name(name) == capability


# ------------------------------------------------------------------------------------- wrapper


def test_gpus_from_facts_typed() -> None:
    gpus = gpu.gpus_from_facts(xml(XML_A100_MIG))
    (a100,) = gpus
    assert isinstance(a100, gpu.Gpu)
    assert a100.uuid == "GPU-513536b6-7d19-9063-b049-1e69664bb298"
    assert a100.memory_total_mib == 81920
    assert a100.compute_capability == "8.0"
    assert a100.capability_tuple == (8, 0)
    assert a100.mig_mode is True
    assert a100.mig_devices is not None
    assert [m.gpu_instance_id for m in a100.mig_devices] == [3, 4, 5, 6]
    with pytest.raises(dataclasses.FrozenInstanceError):
        a100.name = "x"  # type: ignore[misc]


def test_gpus_from_facts_accepts_module_shapes() -> None:
    parsed = csv(CSV_H100_MIG)
    facts = {"hearth_gpus": parsed["gpus"]}
    assert gpu.gpus_from_facts(facts) == gpu.gpus_from_facts({"ansible_facts": facts})
    (h100,) = gpu.gpus_from_facts(facts)
    assert h100.mig_devices is None
    assert h100.capability_tuple == (9, 0)
    assert gpu.gpus_from_facts({}) == []


def test_wrapper_loads_the_shipped_parser() -> None:
    assert gpu.module_utils_path() == paths.plugins_dir() / "module_utils" / "hearth_gpu.py"
    assert gpu.module_utils_path().is_file()


@pytest.mark.parametrize(
    "relpath", ["module_utils/hearth_gpu.py", "modules/gpu_facts.py"], ids=["utils", "module"]
)
def test_remote_code_parses_as_python36(relpath: str) -> None:
    source = (paths.plugins_dir() / relpath).read_text(encoding="utf-8")
    ast.parse(source, feature_version=(3, 6))
    assert "import hearth" not in source  # runs on managed hosts, stdlib + ansible only


def test_module_documentation_is_valid_yaml() -> None:
    tree = ast.parse((paths.plugins_dir() / "modules" / "gpu_facts.py").read_text("utf-8"))
    docs = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    documentation = yaml.safe_load(docs["DOCUMENTATION"])
    assert documentation["module"] == "gpu_facts"
    assert set(documentation["options"]) == {
        "nvidia_smi_path",
        "format",
        "fixture",
        "fail_on_error",
    }
    assert documentation["options"]["format"]["choices"] == ["xml", "csv"]
    assert isinstance(yaml.safe_load(docs["EXAMPLES"]), list)
    returned = yaml.safe_load(docs["RETURN"])["ansible_facts"]["contains"]
    assert "hearth_gpu_status" in returned
    assert "hearth_gpu_pci_devices" in returned


def test_ansible_doc_renders_the_module() -> None:
    plugins = paths.plugins_dir()
    env = dict(os.environ, ANSIBLE_MODULE_UTILS=str(plugins / "module_utils"))
    ansible_doc = Path(sys.executable).parent / "ansible-doc"
    cmd = [str(ansible_doc), "--json", "-M", str(plugins / "modules"), "gpu_facts"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=True)
    doc = json.loads(proc.stdout)["gpu_facts"]
    assert doc["doc"]["options"]["format"]["default"] == "xml"
    assert doc["doc"]["options"]["fail_on_error"]["default"] is False
    assert "hearth_gpu_present" in doc["return"]["ansible_facts"]["contains"]


# ------------------------------------------------------------------------------------- Ansible

ANSIBLE = Path(sys.executable).parent / "ansible"


def run_module(tmp_path: Path, args: str = "") -> tuple[int, str, dict[str, Any]]:
    """Run ``gpu_facts`` on localhost through the real ``ansible`` CLI.

    Returns the exit status, the status word the callback printed (SUCCESS, FAILED!, ...) and
    the module result.
    """
    plugins = paths.plugins_dir()
    env = dict(os.environ)
    env.update(
        ANSIBLE_MODULE_UTILS=str(plugins / "module_utils"),
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        # ansible-core >= 2.19 no longer ships the json callback (it moved to ansible.posix);
        # minimal prints "host | STATUS => {json}" and is always there.
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.minimal",
        ANSIBLE_HOME=str(tmp_path / "ansible-home"),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_DEPRECATION_WARNINGS="0",
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
    )
    cmd = [str(ANSIBLE), "-i", "localhost,", "-c", "local", "-M", str(plugins / "modules")]
    cmd += ["localhost", "-m", "gpu_facts"]
    if args:
        cmd += ["-a", args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    match = re.search(r"^localhost \| ([A-Z!]+) => ", proc.stdout, re.M)
    assert match, f"no result in output:\n{proc.stdout}\n{proc.stderr}"
    result, _ = json.JSONDecoder().raw_decode(proc.stdout[match.end() :])
    return proc.returncode, match.group(1), result


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gpu_facts")


def test_module_with_xml_fixture(module_tmp: Path) -> None:
    rc, status, result = run_module(module_tmp, f"fixture={FIXTURES / XML_A100_MIG}")
    assert (rc, status) == (0, "SUCCESS")
    assert result["changed"] is False
    facts = result["ansible_facts"]
    assert facts["hearth_gpu_status"] == "ok"
    assert facts["hearth_gpu_present"] is True
    assert facts["hearth_gpu_count"] == 1
    assert facts["hearth_gpu_driver_version"] == "535.54.03"
    assert facts["hearth_gpu_cuda_version"] == "12.2"
    assert "NVIDIA A100-SXM4-80GB" in facts["hearth_gpu_message"]
    (a100,) = gpu.gpus_from_facts(result)
    assert a100.uuid == "GPU-513536b6-7d19-9063-b049-1e69664bb298"
    assert a100.memory_total_mib == 81920
    assert a100.mig_mode is True
    assert a100.mig_devices is not None
    assert len(a100.mig_devices) == 4
    assert a100.compute_capability == "8.0"


def test_module_with_csv_fixture(module_tmp: Path) -> None:
    rc, status, result = run_module(module_tmp, f"fixture={FIXTURES / CSV_L40S}")
    assert (rc, status) == (0, "SUCCESS")
    facts = result["ansible_facts"]
    assert facts["hearth_gpu_status"] == "ok"
    assert facts["hearth_gpu_driver_version"] == "595.80"
    (l40s,) = facts["hearth_gpus"]
    assert l40s["name"] == "NVIDIA L40S"
    assert l40s["compute_capability"] == "8.9"
    assert l40s["compute_capability_source"] == "nvidia-smi"


def test_module_error_fixture_reports_without_failing(module_tmp: Path) -> None:
    rc, status, result = run_module(module_tmp, f"fixture={FIXTURES / ERR_MISMATCH_550}")
    assert (rc, status) == (0, "SUCCESS")
    facts = result["ansible_facts"]
    assert facts["hearth_gpu_status"] == "driver_library_mismatch"
    assert facts["hearth_gpu_present"] is True
    assert facts["hearth_gpus"] == []
    assert "550.144" in facts["hearth_gpu_message"]


def test_module_error_fixture_fails_on_request(module_tmp: Path) -> None:
    rc, status, result = run_module(
        module_tmp, f"fixture={FIXTURES / ERR_NO_DRIVER} fail_on_error=true"
    )
    assert rc != 0
    assert status == "FAILED!"
    assert "lsmod | grep nvidia" in result["msg"]
    assert result["ansible_facts"]["hearth_gpu_status"] == "no_driver"


def _host_has_nvidia() -> bool:
    if shutil.which("nvidia-smi") or Path("/proc/driver/nvidia").exists():
        return True
    for vendor in Path("/sys/bus/pci/devices").glob("*/vendor"):
        if vendor.read_text().strip().lower() == "0x10de":
            return True
    return False


@pytest.mark.skipif(_host_has_nvidia(), reason="this host has an NVIDIA device or nvidia-smi")
def test_module_on_host_without_gpu(module_tmp: Path) -> None:
    rc, status, result = run_module(module_tmp)
    assert (rc, status) == (0, "SUCCESS")
    assert result["changed"] is False
    facts = result["ansible_facts"]
    assert facts["hearth_gpu_present"] is False
    assert facts["hearth_gpu_status"] == "absent"
    assert facts["hearth_gpus"] == []
    assert facts["hearth_gpu_count"] == 0
    assert facts["hearth_gpu_pci_devices"] == 0


@pytest.mark.skipif(_host_has_nvidia(), reason="this host has an NVIDIA device or nvidia-smi")
def test_module_absent_is_not_an_error_even_with_fail_on_error(module_tmp: Path) -> None:
    rc, status, result = run_module(module_tmp, "fail_on_error=true format=csv")
    assert (rc, status) == (0, "SUCCESS")
    assert result["ansible_facts"]["hearth_gpu_status"] == "absent"


def fake_nvidia_smi(tmp_path: Path, body: str) -> Path:
    """A stand-in ``nvidia-smi`` that logs its arguments and runs ``body`` (sh)."""
    script = tmp_path / "nvidia-smi"
    log = tmp_path / "calls.log"
    script.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\n{body}\n', encoding="utf-8")
    script.chmod(0o755)
    return script


def calls(tmp_path: Path) -> list[str]:
    return (tmp_path / "calls.log").read_text(encoding="utf-8").splitlines()


def test_module_runs_nvidia_smi_xml(tmp_path: Path) -> None:
    smi = fake_nvidia_smi(tmp_path, f'cat "{FIXTURES / XML_P100_V8}"')
    rc, status, result = run_module(tmp_path, f"nvidia_smi_path={smi}")
    assert (rc, status) == (0, "SUCCESS")
    assert calls(tmp_path) == ["-q -x"]
    facts = result["ansible_facts"]
    assert facts["hearth_gpu_status"] == "ok"
    assert facts["hearth_gpu_present"] is True
    assert facts["hearth_gpu_count"] == 2
    assert facts["hearth_gpu_driver_version"] == "375.66"
    assert facts["hearth_gpu_cuda_version"] is None
    assert [g["uuid"] for g in facts["hearth_gpus"]] == [
        "GPU-28604e81-21ec-cc48-6759-bf2648b22e16",
        "GPU-46915a82-3fd2-8e11-ae26-a80b607c04f3",
    ]


def test_module_csv_drops_fields_an_old_driver_rejects(tmp_path: Path) -> None:
    # Drivers before 510 answer this (exit 2, on stdout) when asked for compute_cap.
    body = (
        'case "$1" in *compute_cap*)\n'
        "  echo 'Field \"compute_cap\" is not a valid field to query.'; echo; exit 2;;\n"
        "esac\n"
        f'cat "{FIXTURES / CSV_P100_NOUNITS}"'
    )
    smi = fake_nvidia_smi(tmp_path, body)
    rc, status, result = run_module(tmp_path, f"nvidia_smi_path={smi} format=csv")
    assert (rc, status) == (0, "SUCCESS")
    first, second = calls(tmp_path)
    assert "compute_cap" in first
    assert "compute_cap" not in second
    assert second.endswith("--format=csv,nounits")
    assert second.split()[0] == "--query-gpu=" + ",".join(
        f for f in gpu.query_fields() if f != "compute_cap"
    )
    (p100,) = result["ansible_facts"]["hearth_gpus"]
    assert p100["uuid"] == "GPU-ef1b2c9b-38d8-2090-2bd1-f567a3eb42a6"
    assert (p100["compute_capability"], p100["compute_capability_source"]) == ("6.0", "table")


def test_module_unparsable_output_is_parse_error(tmp_path: Path) -> None:
    smi = fake_nvidia_smi(tmp_path, "echo 'Segmentation fault'")
    rc, status, result = run_module(tmp_path, f"nvidia_smi_path={smi}")
    assert (rc, status) == (0, "SUCCESS")
    facts = result["ansible_facts"]
    assert facts["hearth_gpu_status"] == "parse_error"
    assert facts["hearth_gpu_present"] is True


@pytest.mark.skipif(_host_has_nvidia(), reason="this host has an NVIDIA device or nvidia-smi")
def test_module_failing_nvidia_smi_without_device_is_absence(tmp_path: Path) -> None:
    """Driver utilities on a host with no NVIDIA PCI device (e.g. a GPU-less VM): absent."""
    smi = fake_nvidia_smi(tmp_path, f'cat "{FIXTURES / ERR_NO_DRIVER}"; exit 9')
    rc, status, result = run_module(tmp_path, f"nvidia_smi_path={smi} fail_on_error=true")
    assert (rc, status) == (0, "SUCCESS")
    assert calls(tmp_path) == ["-q -x"]
    facts = result["ansible_facts"]
    assert facts["hearth_gpu_status"] == "absent"
    assert facts["hearth_gpu_present"] is False
