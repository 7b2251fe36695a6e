"""Typed access to the nvidia-smi parser that ships with the ``gpu_facts`` Ansible module.

The parser lives in ``plugins/module_utils/hearth_gpu.py`` (it must be importable on managed hosts
as ``ansible.module_utils.hearth_gpu``); this module loads that same file with importlib, so the
Python side and the Ansible side can never disagree.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, cast

from hearth import paths

MODULE_UTILS_NAME = "hearth_gpu"


def module_utils_path() -> Path:
    return paths.plugins_dir() / "module_utils" / f"{MODULE_UTILS_NAME}.py"


@functools.cache
def _parser() -> ModuleType:
    path = module_utils_path()
    spec = importlib.util.spec_from_file_location(f"hearth._module_utils.{MODULE_UTILS_NAME}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the nvidia-smi parser from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_xml(text: str) -> dict[str, Any]:
    """Parse ``nvidia-smi -q -x``; raises ``ValueError`` when the text is not that XML."""
    return cast("dict[str, Any]", _parser().parse_xml(text))


def parse_query_csv(text: str, fields: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse ``nvidia-smi --query-gpu=... --format=csv[,noheader][,nounits]``."""
    return cast("dict[str, Any]", _parser().parse_query_csv(text, fields))


def classify_error(text: str, rc: int | None) -> dict[str, Any]:
    """Map failed nvidia-smi output to ``{"code", "message", "rc", "detail"}``."""
    return cast("dict[str, Any]", _parser().classify_error(text, rc))


def capability_from_name(name: str) -> str | None:
    """Compute capability of a well-known GPU product name, from the parser's table."""
    return cast("str | None", _parser().capability_from_name(name))


def query_fields() -> tuple[str, ...]:
    """The ``--query-gpu`` fields the module asks for in CSV mode."""
    return tuple(_parser().QUERY_FIELDS)


@dataclass(frozen=True)
class MigDevice:
    index: int | None
    gpu_instance_id: int | None
    compute_instance_id: int | None
    multiprocessor_count: int | None
    memory_total_mib: int | None


@dataclass(frozen=True)
class Gpu:
    index: int | None
    name: str | None
    uuid: str | None
    pci_bus_id: str | None
    memory_total_mib: int | None
    memory_used_mib: int | None
    memory_free_mib: int | None
    driver_version: str | None
    cuda_version: str | None
    compute_capability: str | None
    compute_capability_source: str | None
    persistence_mode: bool | None
    ecc_enabled: bool | None
    ecc_errors_uncorrected: int | None
    mig_mode: bool | None
    mig_devices: tuple[MigDevice, ...] | None
    temperature_c: int | None
    power_draw_w: float | None
    power_limit_w: float | None
    utilization_gpu_pct: float | None
    retired_pages_pending: bool | None
    remapped_rows_pending: bool | None
    virtualization_mode: str | None

    @property
    def capability_tuple(self) -> tuple[int, int] | None:
        """``"9.0"`` -> ``(9, 0)``, for comparisons such as ``>= (8, 0)``."""
        if self.compute_capability is None:
            return None
        major, _, minor = self.compute_capability.partition(".")
        return int(major), int(minor or 0)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _opt_bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _mig(raw: Mapping[str, Any]) -> MigDevice:
    return MigDevice(
        index=_opt_int(raw.get("index")),
        gpu_instance_id=_opt_int(raw.get("gpu_instance_id")),
        compute_instance_id=_opt_int(raw.get("compute_instance_id")),
        multiprocessor_count=_opt_int(raw.get("multiprocessor_count")),
        memory_total_mib=_opt_int(raw.get("memory_total_mib")),
    )


def gpu_from_dict(raw: Mapping[str, Any]) -> Gpu:
    migs = raw.get("mig_devices")
    return Gpu(
        index=_opt_int(raw.get("index")),
        name=_opt_str(raw.get("name")),
        uuid=_opt_str(raw.get("uuid")),
        pci_bus_id=_opt_str(raw.get("pci_bus_id")),
        memory_total_mib=_opt_int(raw.get("memory_total_mib")),
        memory_used_mib=_opt_int(raw.get("memory_used_mib")),
        memory_free_mib=_opt_int(raw.get("memory_free_mib")),
        driver_version=_opt_str(raw.get("driver_version")),
        cuda_version=_opt_str(raw.get("cuda_version")),
        compute_capability=_opt_str(raw.get("compute_capability")),
        compute_capability_source=_opt_str(raw.get("compute_capability_source")),
        persistence_mode=_opt_bool(raw.get("persistence_mode")),
        ecc_enabled=_opt_bool(raw.get("ecc_enabled")),
        ecc_errors_uncorrected=_opt_int(raw.get("ecc_errors_uncorrected")),
        mig_mode=_opt_bool(raw.get("mig_mode")),
        mig_devices=None if migs is None else tuple(_mig(m) for m in migs),
        temperature_c=_opt_int(raw.get("temperature_c")),
        power_draw_w=_opt_float(raw.get("power_draw_w")),
        power_limit_w=_opt_float(raw.get("power_limit_w")),
        utilization_gpu_pct=_opt_float(raw.get("utilization_gpu_pct")),
        retired_pages_pending=_opt_bool(raw.get("retired_pages_pending")),
        remapped_rows_pending=_opt_bool(raw.get("remapped_rows_pending")),
        virtualization_mode=_opt_str(raw.get("virtualization_mode")),
    )


def gpus_from_facts(facts: Mapping[str, Any]) -> list[Gpu]:
    """GPUs from a parser result (``gpus``), module facts (``hearth_gpus``) or a module result
    (``ansible_facts.hearth_gpus``)."""
    nested = facts.get("ansible_facts")
    if isinstance(nested, Mapping):
        facts = nested
    raw = facts.get("hearth_gpus", facts.get("gpus")) or []
    return [gpu_from_dict(item) for item in raw]
