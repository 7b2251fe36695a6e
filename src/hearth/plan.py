"""VRAM planning: will the declared models fit on each host's GPUs, and how fast can they decode?

Pure functions over :mod:`hearth.models` declarations. Used by ``hearth plan``, by the role
preflights (through the ``hearth_vram`` filter plugin, which loads this module on the control node)
and by the bundle. Per model and GPU the estimate is

    weights / tensor_parallel  +  KV cache / tensor_parallel  +  runtime overhead

* **weights**: the declared file sizes when every file has one (exact: what the engine loads),
  else parameters × bits per weight of the precision (:data:`BITS_PER_WEIGHT`).
* **KV cache**: 2 (K and V) × layers × KV heads × head_dim × bytes per element × max_model_len ×
  max_num_seqs — every running sequence can hold a full context. Tensor parallel splits the KV
  heads (a GPU keeps at least one: vLLM replicates heads when there are fewer than GPUs).
* **overhead** (:func:`overhead_bytes`): the CUDA context, the engine's own buffers and the
  activations of one forward pass.

A model's *share* of a GPU is the fraction of its memory it may take: ``gpu_memory_share`` when
declared (vLLM's ``--gpu-memory-utilization``), vLLM's default 0.9 for vLLM (it reserves that much
whatever it needs), else what the estimate needs. The plan refuses — before any host changes — a
model whose need exceeds its share, and GPUs whose shares add up past 1; each refusal names the
host, the GPU and the models.

Decode speed is memory-bound: each generated token reads every weight once (the active ones for a
mixture of experts) plus the sequence's KV cache, so one stream decodes at most
``bandwidth / bytes read per token`` tokens/s. The plan shows it at an empty and at a full context.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hearth import paths
from hearth.errors import InvalidInputError
from hearth.models import (
    GPUS_VAR,
    MODELS_VAR,
    GpuDecl,
    ModelDeclarationError,
    ModelSpec,
    parse_gpus,
    parse_models,
)

__all__ = [
    "BITS_PER_WEIGHT",
    "GPU_BANDWIDTH_GBS",
    "GpuUse",
    "Need",
    "Placement",
    "Plan",
    "PlanRefused",
    "bits_per_weight",
    "decode_tokens_per_s",
    "gpu_bandwidth_gbs",
    "gpus_for_host",
    "kv_bytes_per_token",
    "kv_cache_bytes",
    "overhead_bytes",
    "plan_host",
    "plan_hosts",
    "plan_inventory",
    "weights_bytes",
]

MIB = 1024**2
GIB = 1024**3

# Bits per weight. Unquantized: the dtype's width. AWQ / GPTQ (4-bit, group size 128): 4 bits plus
# an fp16 scale and a 4-bit zero point per group of 128 = 4 + 20/128; GPTQ 8-bit: 8 + 24/128.
# fp8 / int8 (per-tensor or per-channel scales): 8. GGUF: llama.cpp's block layouts
# (ggml-common.h): Q4_0 = 18 bytes per 32 weights = 4.5, Q4_1 20/32 → 5.0, Q5_0 22/32 → 5.5,
# Q5_1 24/32 → 6.0, Q8_0 34/32 → 8.5, Q6_K 210/256 → 6.5625, IQ4_NL 18/32 → 4.5, IQ4_XS 136/256
# → 4.25; the mixtures (_S/_M/_L, Q2_K, IQ2/IQ3) as llama.cpp's tools/quantize/README.md measures
# them on Llama-2-7B (Q4_K_M 4.84, Q5_K_M 5.68, Q3_K_M 3.91, Q2_K 3.35, …).
BITS_PER_WEIGHT: dict[str, float] = {
    "fp32": 32.0, "bf16": 16.0, "fp16": 16.0, "fp8": 8.0, "int8": 8.0,
    "awq": 4.0 + 20 / 128, "gptq": 4.0 + 20 / 128, "int4": 4.0 + 20 / 128,
    "gptq-int8": 8.0 + 24 / 128,
    "F32": 32.0, "F16": 16.0, "BF16": 16.0,
    "Q8_0": 8.5, "Q6_K": 6.5625, "Q5_1": 6.0, "Q5_0": 5.5, "Q5_K_M": 5.68, "Q5_K_S": 5.52,
    "Q4_1": 5.0, "Q4_0": 4.5, "Q4_K_M": 4.84, "Q4_K_S": 4.58,
    "Q3_K_L": 4.27, "Q3_K_M": 3.91, "Q3_K_S": 3.50, "Q2_K": 3.35,
    "IQ4_XS": 4.25, "IQ4_NL": 4.5, "IQ3_XXS": 3.06, "IQ2_XS": 2.31, "IQ2_XXS": 2.06,
}  # fmt: skip

# Bytes per KV-cache element ("auto" follows the weights' dtype; GGUF engines default to f16).
KV_BYTES: dict[str, float] = {
    "fp16": 2, "bf16": 2, "f16": 2, "fp32": 4, "f32": 4,
    "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1,
    "q8_0": 34 / 32, "q5_1": 24 / 32, "q5_0": 22 / 32, "q4_1": 20 / 32, "q4_0": 18 / 32,
    "iq4_nl": 18 / 32,
}  # fmt: skip

# Runtime overhead per GPU (estimates; the sources say where each comes from):
# - the CUDA context with cuBLAS workspaces: 300–600 MiB per process on Ampere/Hopper with CUDA 12
#   (what nvidia-smi shows for a process that has only initialised torch and cuBLAS);
# - vLLM's CUDA graphs: its log line "Graph capturing finished … took 0.3–1 GiB" (none with
#   enforce_eager);
# - activations of one forward pass: tokens in flight × hidden_size × 8 live hidden-sized tensors
#   per token (residual, norm, QKV, the MLP's gate and up projections) × 2 bytes; vLLM profiles
#   max_num_batched_tokens (8192 for its OpenAI server on data-centre GPUs), llama.cpp one
#   micro-batch (--ubatch-size, 512); for 8B models this gives the ~1 GiB vLLM reports as its
#   activation peak;
# - llama.cpp's graph/compute buffers and Triton's backend pools (CUDA memory pool, pinned memory,
#   the ONNX Runtime / TensorRT workspace): fixed allowances;
# - when hidden_size is unknown (non-LLM Triton models): 5 % of the weights.
CUDA_CONTEXT_MIB = 512
VLLM_CUDA_GRAPHS_MIB = 512
LLAMACPP_COMPUTE_MIB = 256
TRITON_BACKEND_MIB = 1024
ACTIVATION_BYTES_PER_HIDDEN = 8 * 2
VLLM_DEFAULT_BATCHED_TOKENS = 8192
LLAMACPP_DEFAULT_UBATCH = 512
TRITON_DEFAULT_TOKENS = 1024
ACTIVATION_FALLBACK_FRACTION = 0.05
VLLM_DEFAULT_SHARE = 0.9  # vLLM's own default for --gpu-memory-utilization
SHARE_EPSILON = 1e-9

# Memory bandwidth (GB/s, decimal) of GPUs by product name as nvidia-smi reports it, from NVIDIA's
# datasheets. First match wins, so the specific variants come before the family.
GPU_BANDWIDTH_GBS: tuple[tuple[str, float], ...] = (
    (r"\bB300\b|\bGB300\b", 8000.0),
    (r"\bB200\b|\bGB200\b|\bB100\b", 8000.0),
    (r"\bGH200\b", 4000.0),
    (r"\bH200\b", 4800.0),
    (r"\bH100\b.*\bNVL\b", 3900.0),
    (r"\bH100\b.*PCIe", 2000.0),
    (r"\bH100\b", 3350.0),
    (r"\bH800\b.*PCIe", 2000.0),
    (r"\bH800\b", 3350.0),
    (r"\bH20\b", 4000.0),
    (r"\bA100\b.*PCIE.*80GB|\bA100\b.*80GB.*PCIe", 1935.0),
    (r"\bA100\b.*80GB|\bA800\b.*80GB", 2039.0),
    (r"\bA100\b|\bA800\b", 1555.0),
    (r"\bA30\b", 933.0),
    (r"\bA40\b", 696.0),
    (r"\bA10G?\b", 600.0),
    (r"\bA16\b|\bA2\b", 200.0),
    (r"\bL40S?\b|\bL20\b", 864.0),
    (r"\bL4\b", 300.0),
    (r"RTX PRO 6000 Blackwell|RTX 5090\b", 1792.0),
    (r"RTX 6000 Ada", 960.0),
    (r"RTX A6000", 768.0),
    (r"RTX 4090\b", 1008.0),
    (r"RTX 3090\b", 936.0),
    (r"RTX 2080 Ti\b", 616.0),
    (r"RTX 2080\b", 448.0),
    (r"\bT4\b", 320.0),
    (r"\bV100\b", 900.0),
    (r"\bP100\b.*12GB", 549.0),
    (r"\bP100\b", 732.0),
    (r"\bP40\b", 346.0),
    (r"\bP4\b", 192.0),
)


class PlanRefused(InvalidInputError):
    """The models do not fit: ``refusals`` names each model, host and GPU (exit code 2)."""

    def __init__(self, refusals: Sequence[str]) -> None:
        self.refusals = list(refusals)
        noun = "refusal" if len(self.refusals) == 1 else "refusals"
        lines = [f"the VRAM plan has {len(self.refusals)} {noun}:"]
        lines += [f"  {r}" for r in self.refusals]
        lines.append("Nothing was changed on any host.")
        super().__init__("\n".join(lines))


# ------------------------------------------------------------------------------- arithmetic


def bits_per_weight(precision: str) -> float:
    """Bits per weight of a dtype, quantization method or GGUF type (case as declared)."""
    found = BITS_PER_WEIGHT.get(precision, BITS_PER_WEIGHT.get(precision.upper()))
    if found is None:
        found = BITS_PER_WEIGHT.get(precision.lower())
    if found is None:
        raise InvalidInputError(
            f"unknown precision {precision!r}: known are {', '.join(BITS_PER_WEIGHT)}"
        )
    return found


def weights_bytes(model: ModelSpec) -> tuple[int, str] | None:
    """All weight bytes and how they were found (``files`` or ``params``); ``None`` if unknown."""
    size = model.files_size
    if size is not None:
        return size, "files"
    params = model.architecture.params_b
    if params is None:
        return None
    total = params * 1e9
    bits = bits_per_weight(model.weight_precision)
    embedding = model.architecture.embedding_params
    if model.format != "gguf" and model.quantization and embedding and embedding < total:
        # AWQ/GPTQ/fp8/int8 checkpoints keep the embedding and the output head in 16 bits.
        return math.ceil((total - embedding) * bits / 8 + embedding * 2), "params"
    return math.ceil(total * bits / 8), "params"


def kv_element_bytes(model: ModelSpec) -> float:
    if model.kv_cache_dtype != "auto":
        return float(KV_BYTES[model.kv_cache_dtype])
    if model.format == "gguf" or model.quantization:
        return 2.0
    return 4.0 if model.dtype == "fp32" else 2.0


def _kv_heads_per_gpu(model: ModelSpec) -> int | None:
    heads = model.architecture.num_kv_heads
    if heads is None:
        return None
    return max(1, math.ceil(heads / model.tensor_parallel_size))


def kv_bytes_per_token(model: ModelSpec, per_gpu: bool = False) -> int | None:
    """KV-cache bytes one token of one sequence takes (on each GPU with ``per_gpu``)."""
    arch = model.architecture
    heads = _kv_heads_per_gpu(model) if per_gpu else arch.num_kv_heads
    if arch.num_layers is None or heads is None or arch.head_dim is None:
        return None
    return math.ceil(2 * arch.num_layers * heads * arch.head_dim * kv_element_bytes(model))


def kv_cache_bytes(model: ModelSpec, per_gpu: bool = False) -> int | None:
    """The KV cache for max_num_seqs sequences of max_model_len tokens; 0 for models with no
    context (Triton models without max_model_len)."""
    if model.max_model_len is None:
        return 0 if model.engine == "triton" else None
    per_token = kv_bytes_per_token(model, per_gpu)
    if per_token is None:
        return 0 if model.engine == "triton" else None
    return per_token * model.max_model_len * (model.max_num_seqs or 1)


def _arg(model: ModelSpec, *names: str) -> Any:
    for key, value in model.engine_args.items():
        if key.replace("-", "_") in names:
            return value
    return None


def overhead_bytes(model: ModelSpec, weights_per_gpu: int = 0) -> int:
    """Runtime overhead on each GPU of the model (see the constants above for the sources)."""
    fixed = CUDA_CONTEXT_MIB * MIB
    if model.engine == "vllm":
        if not _arg(model, "enforce_eager"):
            fixed += VLLM_CUDA_GRAPHS_MIB * MIB
        tokens = _arg(model, "max_num_batched_tokens") or VLLM_DEFAULT_BATCHED_TOKENS
    elif model.engine == "llamacpp":
        fixed += LLAMACPP_COMPUTE_MIB * MIB
        tokens = _arg(model, "ubatch_size", "ub") or LLAMACPP_DEFAULT_UBATCH
    else:
        fixed += TRITON_BACKEND_MIB * MIB
        tokens = TRITON_DEFAULT_TOKENS
    hidden = model.architecture.hidden_size
    if hidden:
        activations = int(tokens) * hidden * ACTIVATION_BYTES_PER_HIDDEN
    else:
        activations = math.ceil(weights_per_gpu * ACTIVATION_FALLBACK_FRACTION)
    return fixed + activations


def gpu_bandwidth_gbs(name: str | None) -> float | None:
    """Memory bandwidth of a GPU by its product name, from :data:`GPU_BANDWIDTH_GBS`."""
    if not name:
        return None
    for pattern, bandwidth in GPU_BANDWIDTH_GBS:
        if re.search(pattern, name, re.IGNORECASE):
            return bandwidth
    return None


def decode_tokens_per_s(bandwidth_gbs: float | None, bytes_per_token: int | None) -> float | None:
    """Memory-bound ceiling of one stream: bandwidth / bytes read per generated token."""
    if not bandwidth_gbs or not bytes_per_token:
        return None
    return bandwidth_gbs * 1e9 / bytes_per_token


# ------------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Need:
    """Bytes one model needs on each of its GPUs."""

    weights: int
    kv_cache: int
    overhead: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.overhead


@dataclass
class Placement:
    """One model on one host: what it needs, where, and how fast it can decode."""

    host: str
    model: ModelSpec
    gpus: list[GpuDecl] = field(default_factory=list)
    need: Need | None = None
    weights_total: int | None = None
    weights_basis: str = ""
    kv_total: int | None = None
    share: float | None = None
    share_basis: str = ""
    tokens_per_s: float | None = None
    tokens_per_s_full: float | None = None
    refused: list[str] = field(default_factory=list)

    @property
    def budget(self) -> int | None:
        if self.share is None or not self.gpus:
            return None
        return int(self.share * min(g.memory_mib for g in self.gpus) * MIB)

    def as_dict(self) -> dict[str, Any]:
        need = self.need
        return {
            "host": self.host,
            "model": self.model.name,
            "version": self.model.version,
            "engine": self.model.engine,
            "gpus": [g.index for g in self.gpus],
            "weights_bytes": self.weights_total,
            "weights_basis": self.weights_basis,
            "kv_cache_bytes": self.kv_total,
            "need_per_gpu_bytes": None if need is None else need.total,
            "weights_per_gpu_bytes": None if need is None else need.weights,
            "kv_cache_per_gpu_bytes": None if need is None else need.kv_cache,
            "overhead_per_gpu_bytes": None if need is None else need.overhead,
            "share": self.share,
            "share_basis": self.share_basis,
            "budget_per_gpu_bytes": self.budget,
            "decode_tokens_per_s": self.tokens_per_s,
            "decode_tokens_per_s_full_context": self.tokens_per_s_full,
            "refused": list(self.refused),
        }


@dataclass
class GpuUse:
    host: str
    gpu: GpuDecl
    shares: list[tuple[str, float]] = field(default_factory=list)

    @property
    def total_share(self) -> float:
        return sum(s for _, s in self.shares)

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "index": self.gpu.index,
            "name": self.gpu.name,
            "uuid": self.gpu.uuid,
            "memory_mib": self.gpu.memory_mib,
            "bandwidth_gbs": self.gpu.bandwidth_gbs,
            "source": self.gpu.source,
            "shares": dict(self.shares),
            "total_share": round(self.total_share, 4),
        }


@dataclass
class Plan:
    placements: list[Placement] = field(default_factory=list)
    gpus: list[GpuUse] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.refusals

    def extend(self, other: Plan) -> None:
        self.placements += other.placements
        self.gpus += other.gpus
        self.refusals += other.refusals

    def raise_for_refusals(self) -> None:
        if self.refusals:
            raise PlanRefused(self.refusals)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "refusals": list(self.refusals),
            "models": [p.as_dict() for p in self.placements],
            "gpus": [g.as_dict() for g in self.gpus],
        }


def gpus_for_host(
    declared: Sequence[GpuDecl], facts: Mapping[str, Any] | None = None
) -> list[GpuDecl]:
    """The host's GPUs: from ``gpu_facts`` facts where present (memory, name, UUID as measured),
    else as declared. The bandwidth is the declared one, else the table's for the name."""
    by_index = {g.index: g for g in declared}
    found: list[GpuDecl] = []
    if facts:
        from hearth.gpu import gpus_from_facts

        for i, gpu in enumerate(gpus_from_facts(facts)):
            index = gpu.index if gpu.index is not None else i
            decl = by_index.get(index)
            memory = gpu.memory_total_mib or (decl.memory_mib if decl else None)
            if not memory:
                continue
            bandwidth = decl.bandwidth_gbs if decl and decl.bandwidth_gbs else None
            found.append(
                GpuDecl(
                    index=index,
                    memory_mib=memory,
                    name=gpu.name or (decl.name if decl else None),
                    uuid=gpu.uuid or (decl.uuid if decl else None),
                    bandwidth_gbs=bandwidth or gpu_bandwidth_gbs(gpu.name),
                    source="facts",
                )
            )
    if not found:
        found = [
            GpuDecl(
                index=g.index,
                memory_mib=g.memory_mib,
                name=g.name,
                uuid=g.uuid,
                bandwidth_gbs=g.bandwidth_gbs or gpu_bandwidth_gbs(g.name),
                source="inventory",
            )
            for g in declared
        ]
    return sorted(found, key=lambda g: g.index)


def _gib(value: float) -> str:
    return f"{value / GIB:.1f} GiB"


def _resolve_gpus(
    host: str, model: ModelSpec, gpus: Sequence[GpuDecl]
) -> tuple[list[GpuDecl], list[str]]:
    chosen: list[GpuDecl] = []
    problems: list[str] = []
    have = ", ".join(f"{g.index}" + (f" ({g.uuid})" if g.uuid else "") for g in gpus) or "none"
    for ref in model.gpus:
        match = [g for g in gpus if (g.index == ref if isinstance(ref, int) else g.uuid == ref)]
        if match:
            chosen.append(match[0])
        else:
            problems.append(
                f"model {model.name} on host {host}: GPU {ref} is not on the host "
                f"(its GPUs: {have})"
            )
    return chosen, problems


def _place(host: str, model: ModelSpec, gpus: Sequence[GpuDecl]) -> Placement:
    placement = Placement(host=host, model=model)
    found = weights_bytes(model)
    if found is not None:
        placement.weights_total, placement.weights_basis = found
    placement.kv_total = kv_cache_bytes(model)
    if model.on_cpu:
        placement.share_basis = "cpu"
        return placement
    if not gpus:
        placement.refused.append(
            f"model {model.name} on host {host}: the host has no known GPU; gather GPU facts "
            f"(hearth up runs gpu_facts) or declare {GPUS_VAR} for it"
        )
        return placement
    chosen, problems = _resolve_gpus(host, model, gpus)
    placement.gpus = chosen
    placement.refused += problems
    if problems:
        return placement
    if found is None:
        placement.refused.append(
            f"model {model.name} on host {host}: cannot size its weights: declare each file's "
            "size, or architecture.params_b (or a catalog entry)"
        )
        return placement
    kv = kv_cache_bytes(model, per_gpu=True)
    if kv is None:
        placement.refused.append(
            f"model {model.name} on host {host}: cannot size its KV cache: set catalog, or "
            "architecture.num_layers, num_kv_heads and head_dim"
        )
        return placement
    tp = model.tensor_parallel_size
    weights = math.ceil(found[0] / tp)
    need = Need(weights=weights, kv_cache=kv, overhead=overhead_bytes(model, weights))
    placement.need = need
    smallest = min(g.memory_mib for g in chosen) * MIB
    if model.gpu_memory_share is not None:
        placement.share, placement.share_basis = model.gpu_memory_share, "declared"
    elif model.engine == "vllm":
        placement.share, placement.share_basis = VLLM_DEFAULT_SHARE, "vLLM default"
    else:
        placement.share = min(1.0, math.ceil(need.total / smallest * 100) / 100)
        placement.share_basis = "estimated"
    where = ", ".join(f"{g.label}" for g in chosen)
    breakdown = (
        f"weights {_gib(need.weights)} + KV cache {_gib(need.kv_cache)} + overhead "
        f"{_gib(need.overhead)} = {_gib(need.total)} per GPU"
    )
    if need.total > smallest:
        placement.refused.append(
            f"model {model.name} cannot fit on host {host} {where}: {breakdown}, but the GPU has "
            f"{_gib(smallest)}; lower max_model_len or max_num_seqs, quantize, or add GPUs"
        )
    elif need.total > placement.share * smallest:
        placement.refused.append(
            f"model {model.name} does not fit its share of host {host} {where}: {breakdown}, but "
            f"share {placement.share:.2f} ({placement.share_basis}) gives "
            f"{_gib(placement.share * smallest)}; raise gpu_memory_share or lower max_model_len "
            "or max_num_seqs"
        )
    bandwidth = min((g.bandwidth_gbs for g in chosen if g.bandwidth_gbs), default=None)
    if bandwidth is not None:
        total_params = model.architecture.params_b
        active = model.architecture.active_params_b
        read = (
            weights if not (active and total_params) else math.ceil(weights * active / total_params)
        )
        per_token = kv_bytes_per_token(model, per_gpu=True) or 0
        placement.tokens_per_s = decode_tokens_per_s(bandwidth, read)
        full = read + per_token * (model.max_model_len or 0)
        placement.tokens_per_s_full = decode_tokens_per_s(bandwidth, full)
    return placement


def plan_host(host: str, models: Sequence[ModelSpec], gpus: Sequence[GpuDecl]) -> Plan:
    """Place every model of one host on its GPUs and check the shares of each GPU."""
    plan = Plan()
    uses = {g.index: GpuUse(host=host, gpu=g) for g in gpus}
    for model in models:
        placement = _place(host, model, gpus)
        plan.placements.append(placement)
        plan.refusals += placement.refused
        if placement.share is not None:
            for gpu in placement.gpus:
                uses[gpu.index].shares.append((model.name, placement.share))
    for use in uses.values():
        if use.total_share > 1 + SHARE_EPSILON:
            parts = " + ".join(f"{name} {share:.2f}" for name, share in use.shares)
            plan.refusals.append(
                f"host {host} {use.gpu.label}: the models' shares add up to "
                f"{use.total_share:.2f}, more than the whole GPU ({parts}); give them "
                "gpu_memory_share values that sum to 1 or less, or move one to another GPU"
            )
    plan.gpus = list(uses.values())
    return plan


ROLLOUT_STRATEGIES = ("auto", "beside", "drain")


@dataclass(frozen=True)
class RolloutHow:
    """How a changed engine of one model is rolled out on one host: ``beside`` (the new version
    starts next to the live one and is gated before any request reaches it) or ``drain`` (the
    host's share of the model is drained at the front door first, then the live engine is
    stopped and kept, and the new version starts in its place); ``why`` says what decided it."""

    how: str
    why: str

    def as_dict(self) -> dict[str, str]:
        return {"how": self.how, "why": self.why}


def rollout_how(
    host: str,
    models: Sequence[ModelSpec],
    gpus: Sequence[GpuDecl],
    model: str,
    strategy: str = "auto",
) -> RolloutHow:
    """Whether ``model``'s new version can start beside its live engine on ``host``.

    ``strategy`` (``inference_engine_rollout_strategy``) forces ``beside`` or ``drain``; with
    ``auto`` the planner decides: the host's plan with a second instance of the model (its
    candidate) must fit the declared GPUs, as the plan of the models alone does. A model on the
    CPU always starts beside (its memory is the host's, not a GPU's). Raises
    :class:`~hearth.errors.InvalidInputError` for an unknown strategy or model."""
    if strategy not in ROLLOUT_STRATEGIES:
        raise InvalidInputError(
            f"inference_engine_rollout_strategy {strategy!r}: expected one of "
            + ", ".join(ROLLOUT_STRATEGIES)
        )
    found = [m for m in models if m.name == model]
    if not found:
        raise InvalidInputError(f"model {model!r} is not declared on host {host}")
    if strategy != "auto":
        return RolloutHow(strategy, f"inference_engine_rollout_strategy is {strategy}")
    spec = found[0]
    if spec.on_cpu:
        return RolloutHow("beside", f"model {model} runs on the CPU of {host}")
    alone = plan_host(host, models, gpus)
    if not alone.ok:
        return RolloutHow("drain", f"the plan of {host} is refused already: {alone.refusals[0]}")
    candidate = dataclasses.replace(spec, name=f"{spec.name} (its candidate)")
    both = plan_host(host, [*models, candidate], gpus)
    if both.ok:
        return RolloutHow(
            "beside", f"{model}'s new version fits beside the live one on {host}'s GPUs"
        )
    return RolloutHow(
        "drain", f"{model}'s new version does not fit beside the live one: {both.refusals[0]}"
    )


def rollout_how_from_vars(
    host: str,
    variables: Mapping[str, Any],
    facts: Mapping[str, Any] | None,
    model: str,
    strategy: str = "auto",
) -> RolloutHow:
    """:func:`rollout_how` from a host's variables and GPU facts (as :func:`plan_from_vars`)."""
    models = parse_models(variables.get(MODELS_VAR))
    declared = parse_gpus(variables.get(GPUS_VAR))
    return rollout_how(host, models, gpus_for_host(declared, facts), model, strategy)


def plan_hosts(
    hosts: Mapping[str, tuple[Sequence[ModelSpec], Sequence[GpuDecl]]],
) -> Plan:
    """The plan of several hosts: ``{host: (models, gpus)}``."""
    plan = Plan()
    for host in sorted(hosts):
        models, gpus = hosts[host]
        plan.extend(plan_host(host, models, gpus))
    return plan


def plan_from_vars(
    host: str, variables: Mapping[str, Any], facts: Mapping[str, Any] | None = None
) -> Plan:
    """The plan of one host from its variables (``hearth_models``, ``hearth_declared_gpus``) and
    its GPU facts; raises :class:`ModelDeclarationError` for bad declarations."""
    models = parse_models(variables.get(MODELS_VAR))
    declared = parse_gpus(variables.get(GPUS_VAR))
    return plan_host(host, models, gpus_for_host(declared, facts))


def _untagged(value: Any) -> Any:
    """A value of ansible-core 2.19's cache as plain data: its tagged values (``{"__ansible_type":
    "_AnsibleTaggedStr", "value": …, "tags": […]}``, which keep a value's origin and trust) as
    the values themselves."""
    if isinstance(value, dict):
        if "__ansible_type" in value and "value" in value:
            return _untagged(value["value"])
        return {k: _untagged(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_untagged(v) for v in value]
    return value


def cached_facts(host: str, facts_dir: Path | None = None) -> dict[str, Any] | None:
    """The host's facts from Hearth's fact cache (Ansible's jsonfile cache), if any.

    ansible-core 2.19 names the file ``s<schema>_<host>`` and wraps the facts as a JSON string
    under ``__payload__``; earlier releases write the facts as they are to ``<host>``. The newest
    file wins."""
    from hearth import paths

    directory = facts_dir or paths.facts_dir()
    if not directory.is_dir():
        return None
    candidates = [
        p for p in directory.glob(f"s*_{host}") if re.fullmatch(r"s\d+_", p.name[: -len(host)])
    ]
    if (directory / host).is_file():
        candidates.append(directory / host)
    for path in sorted(candidates, key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and set(data) == {"__payload__"}:
                data = _untagged(json.loads(data["__payload__"]))
        except (OSError, ValueError, TypeError):
            continue
        if isinstance(data, dict):
            return data
    return None


def plan_inventory(
    inventory: Path,
    *,
    vault_password_file: Path | None = None,
    use_facts: bool = True,
    limit: str | None = None,
) -> Plan:
    """Validate the inventory and plan every host that declares ``hearth_models``.

    Raises :class:`~hearth.inventory.InventoryInvalid` or :class:`ModelDeclarationError` (listing
    every problem, with the hosts it concerns) before any planning; returns the plan, refusals
    included (call :meth:`Plan.raise_for_refusals`)."""
    from hearth.inventory import check_inventory

    inv = check_inventory(inventory, vault_password_file=vault_password_file)
    return plan_loaded(inv, use_facts=use_facts, limit=limit)


def plan_loaded(inv: Any, *, use_facts: bool = True, limit: str | None = None) -> Plan:
    """Plan every host of an already loaded (and validated) inventory that declares models."""
    hosts = inv.match(limit) if limit else inv.hosts
    problems: dict[str, list[str]] = {}
    plan = Plan()
    for host in hosts:
        variables = inv.resolved_vars(host, ["model_store"])
        if not variables.get(MODELS_VAR):
            continue
        try:
            facts = cached_facts(host, paths.facts_dir(inv.path)) if use_facts else None
            plan.extend(plan_from_vars(host, variables, facts))
        except ModelDeclarationError as e:
            for problem in e.problems:
                problems.setdefault(problem, []).append(host)
    if problems:
        raise ModelDeclarationError([f"{p} (hosts: {', '.join(h)})" for p, h in problems.items()])
    return plan


def summarize(plan: Plan) -> Iterable[str]:
    """One line per placement, for logs and the filter plugin's messages."""
    for p in plan.placements:
        need = "cpu" if p.model.on_cpu else (_gib(p.need.total) if p.need else "?")
        yield f"{p.host}: {p.model.name} ({p.model.engine}) needs {need} per GPU"


def _fmt_gib(value: int | None) -> str:
    return "-" if value is None else f"{value / GIB:.2f}"


def _fmt_rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


_SHARE_MARK = {"declared": "", "vLLM default": "*", "estimated": "~", "cpu": ""}


def tables(plan: Plan) -> list[Any]:
    """The plan as rich tables: one row per model, then one per GPU."""
    from rich.table import Table

    models = Table(
        title="VRAM plan (GiB per GPU)",
        title_justify="left",
        caption="share: declared, * vLLM's default 0.90, ~ estimated need; "
        "tok/s: one stream's memory-bound ceiling, empty → full context",
        caption_justify="left",
    )
    left = ("host", "model", "engine", "GPUs", "status")
    for column in ("host", "model", "engine", "GPUs", "weights", "KV", "overhead", "need",
                   "share", "tok/s", "status"):  # fmt: skip
        models.add_column(
            column, justify="left" if column in left else "right", no_wrap=column != "model"
        )
    for p in plan.placements:
        need = p.need
        gpus = "cpu" if p.model.on_cpu else ",".join(str(g) for g in p.model.gpus)
        rate = "-"
        if p.tokens_per_s is not None:
            rate = f"{_fmt_rate(p.tokens_per_s)}→{_fmt_rate(p.tokens_per_s_full)}"
        share = "-" if p.share is None else f"{p.share:.2f}{_SHARE_MARK.get(p.share_basis, '')}"
        status = "[bold red]refused[/]" if p.refused else "[green]fits[/]"
        if p.model.on_cpu:
            status = "[cyan]cpu[/]"
        models.add_row(
            p.host,
            f"{p.model.name}@{p.model.version}",
            p.model.engine,
            gpus,
            _fmt_gib(need.weights if need else p.weights_total),
            _fmt_gib(need.kv_cache if need else p.kv_total),
            _fmt_gib(need.overhead if need else None),
            _fmt_gib(need.total if need else None),
            share,
            rate,
            status,
        )
    gpus_table = Table(title="GPUs", title_justify="left")
    right = ("GiB", "GB/s", "total")
    for column in ("host", "GPU", "name", "GiB", "GB/s", "source", "shares", "total"):
        gpus_table.add_column(column, justify="right" if column in right else "left")
    for use in plan.gpus:
        total = use.total_share
        style = "bold red" if total > 1 + SHARE_EPSILON else ""
        gpus_table.add_row(
            use.host,
            str(use.gpu.index),
            use.gpu.name or "-",
            f"{use.gpu.memory_mib / 1024:.1f}",
            "-" if use.gpu.bandwidth_gbs is None else f"{use.gpu.bandwidth_gbs:,.0f}",
            use.gpu.source,
            ", ".join(f"{n} {s:.2f}" for n, s in use.shares) or "-",
            f"{total:.2f}",
            style=style,
        )
    return [models, gpus_table]
