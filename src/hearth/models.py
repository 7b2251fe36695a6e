"""Model declarations: ``hearth_models`` and ``hearth_declared_gpus`` in the inventory, typed.

An inventory declares the models each inference host serves (``group_vars/inference/models.yml``)::

    hearth_models:
      - name: llama-3.1-8b            # served model name, store directory
        version: "2024-07-23-awq"     # one directory per version; `current` points at one
        engine: vllm                  # vllm | triton | llamacpp
        format: safetensors           # safetensors | gguf | onnx | tensorrt | python
        catalog: llama-3.1-8b-instruct   # architecture from src/hearth/data/model_catalog.yml
        quantization: awq             # or a GGUF type (Q4_K_M …); dtype: bf16 | fp16 | fp32
        source: {type: huggingface, repo: org/name, revision: <40-hex commit>}
        files:
          - {path: model.safetensors, sha256: <64 hex>, size: 5700000000}
        max_model_len: 8192
        max_num_seqs: 16
        gpus: [0]                     # indices or UUIDs (GPU-…); [] serves on CPU
        gpu_memory_share: 0.45        # vLLM's --gpu-memory-utilization
        engine_args: {enable_prefix_caching: true}
        chat_template: "{% for m in messages %}…"
        triton_config: {max_batch_size: 0, input: […], output: […]}   # Triton models only

and, where no GPU facts are gathered yet, the GPUs of each host::

    hearth_declared_gpus:
      - {index: 0, name: NVIDIA L40S, memory_mib: 46068, bandwidth_gbs: 864}

(``hearth_gpus`` is the name of the facts the ``gpu_facts`` module returns, so declarations use
their own name and facts win where both exist.)

:func:`parse_models` and :func:`parse_gpus` turn those values into dataclasses and raise
:class:`ModelDeclarationError` listing every problem, each naming the model and the key.
"""

from __future__ import annotations

import difflib
import functools
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, BinaryIO, TypeGuard, cast

from hearth import paths, yamlsrc
from hearth.errors import InvalidInputError

__all__ = [
    "ENGINES",
    "ENGINE_FORMATS",
    "FORMATS",
    "SOURCE_TYPES",
    "Architecture",
    "GpuDecl",
    "LoraAdapter",
    "ModelDeclarationError",
    "ModelFile",
    "ModelSource",
    "ModelSpec",
    "architecture_from_gguf",
    "catalog",
    "lab_models",
    "parse_gpus",
    "parse_models",
    "read_gguf",
    "soak_seconds",
]

MODELS_VAR = "hearth_models"
GPUS_VAR = "hearth_declared_gpus"

ENGINES = ("vllm", "triton", "llamacpp")
FORMATS = ("safetensors", "gguf", "onnx", "tensorrt", "python")
ENGINE_FORMATS: dict[str, tuple[str, ...]] = {
    "vllm": ("safetensors", "gguf"),
    "llamacpp": ("gguf",),
    "triton": ("onnx", "tensorrt", "python"),
}
SOURCE_TYPES = ("bundle", "huggingface", "url", "path")
DTYPES = ("auto", "bf16", "fp16", "fp32")
# Quantization methods of safetensors checkpoints, and the GGUF tensor types llama.cpp writes.
# The planner (hearth.plan) knows the bits per weight of each.
WEIGHT_QUANTIZATIONS = ("awq", "gptq", "gptq-int8", "fp8", "int8", "int4")
GGUF_TYPES = (
    "F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_1", "Q5_0", "Q5_K_M", "Q5_K_S", "Q4_1", "Q4_0",
    "Q4_K_M", "Q4_K_S", "Q3_K_L", "Q3_K_M", "Q3_K_S", "Q2_K", "IQ4_XS", "IQ4_NL", "IQ3_XXS",
    "IQ2_XS", "IQ2_XXS",
)  # fmt: skip
KV_CACHE_DTYPES = (
    "auto", "fp16", "bf16", "fp32", "fp8", "fp8_e4m3", "fp8_e5m2",
    "f16", "f32", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl",
)  # fmt: skip
# Engine arguments Hearth renders from the declaration's own keys: set those keys instead.
MANAGED_ARGS: dict[str, str] = {
    "model": "files / source",
    "host": "the engine role",
    "port": "the engine role",
    "served_model_name": "name",
    "alias": "name",
    "tensor_parallel_size": "gpus (one entry per GPU)",
    "gpu_memory_utilization": "gpu_memory_share",
    "max_model_len": "max_model_len",
    "ctx_size": "max_model_len and max_num_seqs",
    "max_num_seqs": "max_num_seqs",
    "parallel": "max_num_seqs",
    "dtype": "dtype",
    "quantization": "quantization",
    "kv_cache_dtype": "kv_cache_dtype",
    "chat_template": "chat_template",
    "lora_modules": "lora_adapters",
    "enable_lora": "lora_adapters",
    "api_key": "the front door (keys live in ansible-vault)",
}

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_HF_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_GPU_UUID = re.compile(r"^(GPU|MIG)-[0-9A-Za-z-]+$")
_ARG_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")

_MODEL_KEYS = (
    "name", "version", "engine", "format", "source", "files", "catalog", "architecture",
    "dtype", "quantization", "kv_cache_dtype", "max_model_len", "max_num_seqs", "gpus",
    "gpu_memory_share", "engine_args", "chat_template", "lora_adapters", "description",
    "triton_config", "embeddings", "system_prompt", "system_prompt_policy", "canary_share",
    "canary_soak",
)  # fmt: skip
SYSTEM_PROMPT_POLICIES = ("refuse", "demote")
DEFAULT_CANARY_SOAK = "1h"
_SOAK = re.compile(r"^([1-9][0-9]*)([smhd])$")
_SOAK_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
"""What the front door does with a client's own ``system`` message when the model pins a system
prompt: ``refuse`` it (400), or ``demote`` it to a ``user`` message after the pinned one."""
_SOURCE_KEYS = ("type", "path", "url", "repo", "revision", "endpoint")
_FILE_KEYS = ("path", "sha256", "size", "url")
_GPU_KEYS = ("index", "name", "uuid", "memory_mib", "bandwidth_gbs")
# config.pbtxt keys Hearth writes itself from the declaration (name, backend; instance_group from
# gpus unless given).
_TRITON_MANAGED = {"name": "name", "backend": "format", "platform": "format"}
_TRITON_TYPE = re.compile(
    r"^TYPE_(BOOL|UINT8|UINT16|UINT32|UINT64|INT8|INT16|INT32|INT64|FP16|FP32|FP64|STRING|BF16)$"
)


class ModelDeclarationError(InvalidInputError):
    """The model or GPU declarations have problems; ``problems`` lists every one."""

    def __init__(self, problems: Sequence[str], where: str = MODELS_VAR) -> None:
        self.problems = list(problems)
        noun = "problem" if len(self.problems) == 1 else "problems"
        lines = [f"{where} has {len(self.problems)} {noun}:"]
        lines += [f"  {p}" for p in self.problems]
        lines.append("Fix them in the inventory; nothing was changed on any host.")
        super().__init__("\n".join(lines))


# ------------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class ModelFile:
    path: str
    sha256: str
    size: int | None = None
    url: str | None = None


@dataclass(frozen=True)
class ModelSource:
    type: str
    path: str | None = None
    url: str | None = None
    repo: str | None = None
    revision: str | None = None
    endpoint: str | None = None

    def file_url(self, file: ModelFile) -> str | None:
        """Where one file is downloaded from (``url`` and ``huggingface`` sources)."""
        if file.url:
            return file.url
        if self.type == "url" and self.url:
            return f"{self.url.rstrip('/')}/{file.path}"
        if self.type == "huggingface" and self.repo and self.revision:
            base = (self.endpoint or "https://huggingface.co").rstrip("/")
            return f"{base}/{self.repo}/resolve/{self.revision}/{file.path}"
        return None


@dataclass(frozen=True)
class Architecture:
    """What the planner needs to know about a model's shape (see model_catalog.yml)."""

    params_b: float | None = None
    active_params_b: float | None = None
    num_layers: int | None = None
    num_attention_heads: int | None = None
    num_kv_heads: int | None = None
    head_dim: int | None = None
    hidden_size: int | None = None
    vocab_size: int | None = None
    context_length: int | None = None
    tie_word_embeddings: bool | None = None
    hf_repo: str | None = None

    @property
    def embedding_params(self) -> int | None:
        """Parameters of the input embedding and, unless tied, the output head (vocab × hidden
        each): quantization methods for safetensors keep them in 16 bits."""
        if self.vocab_size is None or self.hidden_size is None:
            return None
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)

    def merged(self, over: Mapping[str, Any]) -> Architecture:
        return replace(self, **{k: v for k, v in over.items() if v is not None})


_ARCH_INT = (
    "num_layers",
    "num_attention_heads",
    "num_kv_heads",
    "head_dim",
    "hidden_size",
    "vocab_size",
    "context_length",
)
_ARCH_FLOAT = ("params_b", "active_params_b")
_ARCH_KEYS = tuple(f.name for f in fields(Architecture))


@dataclass(frozen=True)
class LoraAdapter:
    name: str
    path: str


@dataclass(frozen=True)
class ModelSpec:
    name: str
    version: str
    engine: str
    format: str
    source: ModelSource
    files: tuple[ModelFile, ...]
    architecture: Architecture = field(default_factory=Architecture)
    catalog: str | None = None
    dtype: str = "auto"
    quantization: str | None = None
    kv_cache_dtype: str = "auto"
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    gpus: tuple[int | str, ...] = (0,)
    gpu_memory_share: float | None = None
    engine_args: Mapping[str, Any] = field(default_factory=dict)
    chat_template: str | None = None
    lora_adapters: tuple[LoraAdapter, ...] = ()
    description: str | None = None
    triton_config: Mapping[str, Any] = field(default_factory=dict)
    embeddings: bool = False
    """Serves /v1/embeddings (the front door refuses embeddings of other models with a 400)."""
    system_prompt: str | None = None
    """Pinned by the front door: prepended to every chat request; clients cannot replace it."""
    system_prompt_policy: str = "refuse"
    """A client's own ``system`` message: ``refuse`` (400) or ``demote`` (made a user message)."""
    canary_share: int | None = None
    """A new version's rollout stops at a traffic share: this percentage (1-99) of the model's
    requests goes to it, the rest to the version before, until `hearth models promote|abort`."""
    canary_soak: str = DEFAULT_CANARY_SOAK
    """How long a canary share runs before `hearth models promote` accepts it (without --now)."""

    @property
    def tensor_parallel_size(self) -> int:
        return max(1, len(self.gpus))

    @property
    def on_cpu(self) -> bool:
        return not self.gpus

    @property
    def weight_precision(self) -> str:
        """The precision the weights are stored in: the quantization, else the dtype."""
        if self.quantization:
            return self.quantization
        return "bf16" if self.dtype == "auto" else self.dtype

    @property
    def files_size(self) -> int | None:
        """Bytes of the weight files when every file declares its size, else ``None``."""
        sizes = [f.size for f in self.files]
        if not sizes or any(s is None for s in sizes):
            return None
        return sum(cast("int", s) for s in sizes)


@dataclass(frozen=True)
class GpuDecl:
    """One GPU of a host as the planner sees it (declared, or from ``gpu_facts``)."""

    index: int
    memory_mib: int
    name: str | None = None
    uuid: str | None = None
    bandwidth_gbs: float | None = None
    source: str = "inventory"

    @property
    def label(self) -> str:
        return f"GPU {self.index} ({self.name})" if self.name else f"GPU {self.index}"


# ---------------------------------------------------------------------------------- catalog


@functools.cache
def _catalog_data() -> dict[str, Any]:
    path = paths.data_dir() / "model_catalog.yml"
    data = yamlsrc.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise InvalidInputError(f"{path}: expected a mapping")
    return data


def catalog() -> dict[str, Architecture]:
    """The architectures in ``model_catalog.yml``, by name."""
    raw = _catalog_data().get("architectures") or {}
    return {name: Architecture(**body) for name, body in raw.items()}


def lab_models() -> dict[str, dict[str, Any]]:
    """The lab's small real models (package, member, sha256), by name."""
    raw = _catalog_data().get("lab") or {}
    return {str(k): dict(v) for k, v in raw.items()}


# ---------------------------------------------------------------------------------- parsing


def _suggest(word: str, candidates: Iterable[str]) -> str:
    found = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {found[0]}?" if found else ""


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _Collector:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, where: str, key: str, message: str) -> None:
        self.problems.append(f"{where}: {key}: {message}")


def _label(index: int, raw: object) -> str:
    name = raw.get("name") if isinstance(raw, Mapping) else None
    return f"model {name!r} ({MODELS_VAR}[{index}])" if name else f"{MODELS_VAR}[{index}]"


def _unknown_keys(
    c: _Collector, where: str, prefix: str, raw: Mapping[Any, Any], known: Sequence[str]
) -> None:
    for key in raw:
        if key not in known:
            c.add(where, f"{prefix}{key}", f"unknown key{_suggest(str(key), known)}")


def _positive_int(c: _Collector, where: str, key: str, value: object) -> int | None:
    if value is None:
        return None
    if not _is_int(value) or value <= 0:
        c.add(where, key, f"expected a positive integer, got {value!r}")
        return None
    return value


def _parse_source(c: _Collector, where: str, raw: object) -> ModelSource | None:
    if not isinstance(raw, Mapping):
        c.add(where, "source", f"expected a mapping with type: {' | '.join(SOURCE_TYPES)}")
        return None
    _unknown_keys(c, where, "source.", raw, _SOURCE_KEYS)
    kind = raw.get("type")
    if kind not in SOURCE_TYPES:
        c.add(where, "source.type", f"expected one of {', '.join(SOURCE_TYPES)}, got {kind!r}")
        return None
    source = ModelSource(
        type=str(kind),
        **{k: str(raw[k]) for k in _SOURCE_KEYS[1:] if raw.get(k) is not None},
    )
    if kind in ("bundle", "path") and not source.path:
        c.add(where, "source.path", f"required for a {kind} source")
    if kind == "path" and source.path and not source.path.startswith("/"):
        c.add(
            where, "source.path", "a path source must be absolute (a directory on the control node)"
        )
    if (
        kind == "bundle"
        and source.path
        and (source.path.startswith("/") or ".." in source.path.split("/"))
    ):
        c.add(where, "source.path", "a bundle path is relative to the bundle's root, without '..'")
    if kind == "url" and source.url and not re.match(r"^https?://", source.url):
        c.add(where, "source.url", f"expected an http(s) URL, got {source.url!r}")
    if kind == "huggingface":
        if not source.repo or not _HF_REPO.match(source.repo):
            c.add(where, "source.repo", f"expected ORG/NAME, got {source.repo!r}")
        if not source.revision or not _COMMIT.match(source.revision):
            c.add(
                where,
                "source.revision",
                f"expected a 40-hex commit id (pin the revision, not a branch), got "
                f"{source.revision!r}",
            )
    return source


def _parse_files(
    c: _Collector, where: str, raw: object, source: ModelSource | None
) -> list[ModelFile]:
    if not isinstance(raw, list) or not raw:
        c.add(where, "files", "expected a non-empty list of {path, sha256, size}")
        return []
    files: list[ModelFile] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        key = f"files[{i}]"
        if not isinstance(item, Mapping):
            c.add(where, key, "expected a mapping {path, sha256, size}")
            continue
        _unknown_keys(c, where, f"{key}.", item, _FILE_KEYS)
        path, sha = item.get("path"), item.get("sha256")
        ok = True
        if not isinstance(path, str) or not path:
            c.add(where, f"{key}.path", "required: the file's path inside the version directory")
            ok = False
        elif path.startswith("/") or ".." in path.split("/") or path in ("current", "."):
            c.add(where, f"{key}.path", f"expected a relative path without '..', got {path!r}")
            ok = False
        elif path in seen:
            c.add(where, f"{key}.path", f"{path} is listed twice")
            ok = False
        if not isinstance(sha, str) or not _SHA256.match(sha):
            c.add(where, f"{key}.sha256", f"expected 64 hex digits (sha256), got {sha!r}")
            ok = False
        size = _positive_int(c, where, f"{key}.size", item.get("size"))
        url = item.get("url")
        if url is not None and (not isinstance(url, str) or not re.match(r"^https?://", url)):
            c.add(where, f"{key}.url", f"expected an http(s) URL, got {url!r}")
            ok = False
        if ok:
            seen.add(cast("str", path))
            files.append(ModelFile(str(path), str(sha).lower(), size, url))
    if source is not None and source.type == "url" and not source.url:
        missing = [f.path for f in files if not f.url]
        if missing:
            c.add(where, "source.url", f"required (or a url on each file; missing for {missing})")
    return files


def _parse_architecture(
    c: _Collector, where: str, raw: object, catalog_name: object
) -> tuple[Architecture, str | None]:
    base = Architecture()
    name: str | None = None
    if catalog_name is not None:
        known = catalog()
        if not isinstance(catalog_name, str) or catalog_name not in known:
            c.add(
                where,
                "catalog",
                f"no architecture {catalog_name!r} in the model catalog"
                f"{_suggest(str(catalog_name), known)} (known: {', '.join(sorted(known))})",
            )
        else:
            base, name = known[catalog_name], catalog_name
    if raw is None:
        return base, name
    if not isinstance(raw, Mapping):
        c.add(where, "architecture", "expected a mapping (params_b, num_layers, num_kv_heads, …)")
        return base, name
    _unknown_keys(c, where, "architecture.", raw, _ARCH_KEYS)
    over: dict[str, Any] = {}
    for key in _ARCH_INT:
        if key in raw:
            over[key] = _positive_int(c, where, f"architecture.{key}", raw[key])
    for key in _ARCH_FLOAT:
        if key in raw:
            value = raw[key]
            if not _is_number(value) or value <= 0:
                c.add(where, f"architecture.{key}", f"expected a positive number, got {value!r}")
            else:
                over[key] = float(value)
    if isinstance(raw.get("hf_repo"), str):
        over["hf_repo"] = raw["hf_repo"]
    if "tie_word_embeddings" in raw:
        if not isinstance(raw["tie_word_embeddings"], bool):
            c.add(where, "architecture.tie_word_embeddings", "expected true or false")
        else:
            over["tie_word_embeddings"] = raw["tie_word_embeddings"]
    return base.merged(over), name


def _parse_gpus_ref(c: _Collector, where: str, raw: object) -> tuple[int | str, ...]:
    if raw is None:
        return (0,)
    if not isinstance(raw, list):
        c.add(where, "gpus", "expected a list of GPU indices or UUIDs ([] serves on CPU)")
        return ()
    out: list[int | str] = []
    for i, item in enumerate(raw):
        if _is_int(item) and item >= 0:
            out.append(item)
        elif isinstance(item, str) and item.isdigit():
            out.append(int(item))
        elif isinstance(item, str) and _GPU_UUID.match(item):
            out.append(item)
        else:
            c.add(
                where, f"gpus[{i}]", f"expected an index (0, 1, …) or a UUID (GPU-…), got {item!r}"
            )
            continue
        if out[-1] in out[:-1]:
            c.add(where, f"gpus[{i}]", f"GPU {out[-1]} is listed twice")
            out.pop()
    return tuple(out)


def _norm_arg(name: str) -> str:
    return name.replace("-", "_").lstrip("_")


def _parse_engine_args(c: _Collector, where: str, raw: object) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        c.add(where, "engine_args", "expected a mapping of engine argument names to values")
        return {}
    args: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not _ARG_NAME.match(key.lstrip("-")):
            c.add(
                where, f"engine_args.{key}", "expected an argument name (letters, digits, - and _)"
            )
            continue
        norm = _norm_arg(key)
        if norm in MANAGED_ARGS:
            c.add(
                where,
                f"engine_args.{key}",
                f"set by Hearth from the declaration: use {MANAGED_ARGS[norm]} instead",
            )
            continue
        args[key.lstrip("-")] = value
    return args


def _parse_quantization(c: _Collector, where: str, fmt: object, raw: object) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        c.add(where, "quantization", f"expected a string, got {raw!r}")
        return None
    upper, lower = raw.upper(), raw.lower()
    if fmt == "gguf":
        if upper not in GGUF_TYPES:
            c.add(
                where,
                "quantization",
                f"{raw!r} is not a GGUF type llama.cpp writes"
                f"{_suggest(upper, GGUF_TYPES)} (known: {', '.join(GGUF_TYPES)})",
            )
            return None
        return upper
    if lower not in WEIGHT_QUANTIZATIONS:
        hint = " (GGUF types go with format: gguf)" if upper in GGUF_TYPES else ""
        c.add(
            where,
            "quantization",
            f"expected one of {', '.join(WEIGHT_QUANTIZATIONS)}, got "
            f"{raw!r}{hint}{_suggest(lower, WEIGHT_QUANTIZATIONS)}",
        )
        return None
    return lower


def _parse_lora(c: _Collector, where: str, engine: object, raw: object) -> tuple[LoraAdapter, ...]:
    if raw is None or raw == []:
        return ()
    if engine != "vllm":
        c.add(where, "lora_adapters", "LoRA adapters are served by vllm only")
        return ()
    if not isinstance(raw, list):
        c.add(where, "lora_adapters", "expected a list of {name, path}")
        return ()
    out: list[LoraAdapter] = []
    for i, item in enumerate(raw):
        if (
            not isinstance(item, Mapping)
            or not isinstance(item.get("name"), str)
            or not isinstance(item.get("path"), str)
        ):
            c.add(where, f"lora_adapters[{i}]", "expected {name: ADAPTER, path: DIRECTORY}")
            continue
        out.append(LoraAdapter(item["name"], item["path"]))
    return tuple(out)


def _parse_tensors(c: _Collector, where: str, key: str, raw: object) -> None:
    if not isinstance(raw, list):
        c.add(where, key, "expected a list of {name, data_type, dims}")
        return
    for i, item in enumerate(raw):
        at = f"{key}[{i}]"
        if not isinstance(item, Mapping):
            c.add(where, at, "expected a mapping {name, data_type, dims}")
            continue
        if not isinstance(item.get("name"), str) or not item.get("name"):
            c.add(where, f"{at}.name", "required: the tensor's name")
        if not isinstance(item.get("data_type"), str) or not _TRITON_TYPE.match(item["data_type"]):
            c.add(
                where,
                f"{at}.data_type",
                f"expected TYPE_FP32, TYPE_STRING, …, got {item.get('data_type')!r}",
            )
        dims = item.get("dims")
        if not isinstance(dims, list) or not all(_is_int(d) and (d > 0 or d == -1) for d in dims):
            c.add(where, f"{at}.dims", f"expected a list of sizes (-1: variable), got {dims!r}")


def _parse_triton_config(c: _Collector, where: str, engine: object, raw: object) -> dict[str, Any]:
    if raw is None or raw == {}:
        return {}
    if engine != "triton":
        c.add(where, "triton_config", "set for a model that Triton does not serve")
        return {}
    if not isinstance(raw, Mapping):
        c.add(where, "triton_config", "expected a mapping (config.pbtxt as YAML: input, output, …)")
        return {}
    for key, use in _TRITON_MANAGED.items():
        if key in raw:
            c.add(where, f"triton_config.{key}", f"set by Hearth from the declaration's {use}")
    batch = raw.get("max_batch_size", 0)
    if not _is_int(batch) or batch < 0:
        c.add(where, "triton_config.max_batch_size", f"expected 0 or more, got {batch!r}")
    for key in ("input", "output"):
        if key in raw:
            _parse_tensors(c, where, f"triton_config.{key}", raw[key])
    return {str(k): v for k, v in raw.items()}


def soak_seconds(text: str) -> int:
    """The seconds of a canary soak (``30m``, ``2h``, ``1d``); ValueError for anything else."""
    match = _SOAK.match(str(text))
    if match is None:
        raise ValueError(f"expected a duration like 30m, 2h or 1d, got {text!r}")
    return int(match.group(1)) * _SOAK_UNITS[match.group(2)]


def _parse_canary(c: _Collector, where: str, raw: Mapping[str, Any]) -> tuple[int | None, str]:
    """``canary_share`` (an integer percentage, 1-99) and ``canary_soak`` (a duration)."""
    share = raw.get("canary_share")
    if share is not None and (not _is_int(share) or not 1 <= share <= 99):
        c.add(
            where,
            "canary_share",
            "expected an integer percentage from 1 to 99 (the share of the model's requests the "
            f"new version gets while both serve), got {share!r}",
        )
        share = None
    soak = raw.get("canary_soak", DEFAULT_CANARY_SOAK)
    try:
        soak_seconds(soak)
    except ValueError as e:
        c.add(where, "canary_soak", f"{e} (how long the canary share runs before promotion)")
        soak = DEFAULT_CANARY_SOAK
    if "canary_soak" in raw and raw.get("canary_share") is None:
        c.add(where, "canary_soak", "set, but no canary_share: a soak needs a canary share")
    return share, str(soak)


def _parse_model(c: _Collector, index: int, raw: object) -> ModelSpec | None:
    where = _label(index, raw)
    if not isinstance(raw, Mapping):
        c.add(where, "", "expected a mapping (name, version, engine, format, source, files, …)")
        return None
    before = len(c.problems)
    _unknown_keys(c, where, "", raw, _MODEL_KEYS)
    name, version, engine, fmt = (raw.get(k) for k in ("name", "version", "engine", "format"))
    if not isinstance(name, str) or not _NAME.match(name):
        c.add(where, "name", f"expected lower-case letters, digits, '.', '_' or '-', got {name!r}")
    if isinstance(version, int | float) and not isinstance(version, bool):
        c.add(where, "version", f"expected a string: put the version in quotes ('{version}')")
    elif not isinstance(version, str) or not _VERSION.match(version) or version == "current":
        c.add(
            where,
            "version",
            f"expected letters, digits, '.', '_', '+' or '-' (not 'current'), got {version!r}",
        )
    if engine not in ENGINES:
        c.add(
            where,
            "engine",
            f"expected one of {', '.join(ENGINES)}, got {engine!r}{_suggest(str(engine), ENGINES)}",
        )
    if fmt not in FORMATS:
        c.add(where, "format", f"expected one of {', '.join(FORMATS)}, got {fmt!r}")
    elif engine in ENGINE_FORMATS and fmt not in ENGINE_FORMATS[str(engine)]:
        c.add(
            where,
            "format",
            f"{engine} does not serve {fmt} models "
            f"(it serves {', '.join(ENGINE_FORMATS[str(engine)])})",
        )
    source = _parse_source(c, where, raw.get("source"))
    files = _parse_files(c, where, raw.get("files"), source)
    arch, catalog_name = _parse_architecture(c, where, raw.get("architecture"), raw.get("catalog"))
    dtype = raw.get("dtype", "auto")
    if dtype not in DTYPES:
        c.add(where, "dtype", f"expected one of {', '.join(DTYPES)}, got {dtype!r}")
    quantization = _parse_quantization(c, where, fmt, raw.get("quantization"))
    kv_dtype = raw.get("kv_cache_dtype", "auto")
    if kv_dtype not in KV_CACHE_DTYPES:
        c.add(
            where,
            "kv_cache_dtype",
            f"expected one of {', '.join(KV_CACHE_DTYPES)}, got {kv_dtype!r}",
        )
    max_len = _positive_int(c, where, "max_model_len", raw.get("max_model_len"))
    max_seqs = _positive_int(c, where, "max_num_seqs", raw.get("max_num_seqs"))
    if engine in ("vllm", "llamacpp"):
        if "max_model_len" not in raw:
            c.add(
                where,
                "max_model_len",
                f"required for {engine}: the longest context a request "
                "may use (tokens), which sizes the KV cache",
            )
        if "max_num_seqs" not in raw:
            c.add(
                where,
                "max_num_seqs",
                f"required for {engine}: how many requests run at once "
                "(each gets max_model_len of KV cache)",
            )
    if max_len and arch.context_length and max_len > arch.context_length:
        c.add(
            where,
            "max_model_len",
            f"{max_len} exceeds the model's context length ({arch.context_length} tokens)",
        )
    gpus = _parse_gpus_ref(c, where, raw.get("gpus"))
    share = raw.get("gpu_memory_share")
    if share is not None and (not _is_number(share) or not 0 < share <= 1):
        c.add(
            where,
            "gpu_memory_share",
            f"expected a fraction of the GPU's memory, 0 < x <= 1, got {share!r}",
        )
        share = None
    if share is not None and not gpus:
        c.add(where, "gpu_memory_share", "set, but gpus is [] (the model runs on CPU)")
    if (
        engine == "vllm"
        and len(gpus) > 1
        and arch.num_attention_heads
        and arch.num_attention_heads % len(gpus)
    ):
        c.add(
            where,
            "gpus",
            f"vLLM splits the {arch.num_attention_heads} attention heads evenly: "
            f"{len(gpus)} GPUs do not divide them",
        )
    engine_args = _parse_engine_args(c, where, raw.get("engine_args"))
    template = raw.get("chat_template")
    if template is not None and not isinstance(template, str):
        c.add(where, "chat_template", "expected the Jinja chat template as a string")
    lora = _parse_lora(c, where, engine, raw.get("lora_adapters"))
    triton_config = _parse_triton_config(c, where, engine, raw.get("triton_config"))
    pinned = raw.get("system_prompt")
    if pinned is not None and (not isinstance(pinned, str) or not pinned.strip()):
        c.add(where, "system_prompt", "expected the pinned system prompt as a non-empty string")
    policy = raw.get("system_prompt_policy", "refuse")
    if policy not in SYSTEM_PROMPT_POLICIES:
        c.add(
            where,
            "system_prompt_policy",
            f"expected one of {', '.join(SYSTEM_PROMPT_POLICIES)} (what the front door does with "
            f"a client's own system message), got {policy!r}",
        )
    elif "system_prompt_policy" in raw and pinned is None:
        c.add(where, "system_prompt_policy", "set, but no system_prompt is pinned")
    if pinned is not None and engine == "triton":
        c.add(
            where,
            "system_prompt",
            "not for Triton models (the front door pins it on the OpenAI chat API only)",
        )
    canary_share, canary_soak = _parse_canary(c, where, raw)
    if len(c.problems) > before or source is None:
        return None
    return ModelSpec(
        name=str(name),
        version=str(version),
        engine=str(engine),
        format=str(fmt),
        source=source,
        files=tuple(files),
        architecture=arch,
        catalog=catalog_name,
        dtype=str(dtype),
        quantization=quantization,
        kv_cache_dtype=str(kv_dtype),
        max_model_len=max_len,
        max_num_seqs=max_seqs,
        gpus=gpus,
        gpu_memory_share=None if share is None else float(share),
        engine_args=engine_args,
        chat_template=template,
        lora_adapters=lora,
        description=str(raw["description"]) if raw.get("description") is not None else None,
        triton_config=triton_config,
        embeddings=raw.get("embeddings") is True,
        system_prompt=pinned if isinstance(pinned, str) else None,
        system_prompt_policy=str(policy),
        canary_share=canary_share,
        canary_soak=canary_soak,
    )


def parse_models(raw: object) -> list[ModelSpec]:
    """``hearth_models`` as :class:`ModelSpec` objects; raise listing every problem."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ModelDeclarationError([f"{MODELS_VAR}: expected a list of model declarations"])
    c = _Collector()
    models: list[ModelSpec] = []
    names: dict[str, int] = {}
    for index, item in enumerate(raw):
        model = _parse_model(c, index, item)
        name = item.get("name") if isinstance(item, Mapping) else None
        if isinstance(name, str):
            if name in names:
                c.add(
                    _label(index, item),
                    "name",
                    f"declared twice (first at {MODELS_VAR}[{names[name]}]); one name per model",
                )
            names.setdefault(name, index)
        if model is not None:
            models.append(model)
    if c.problems:
        raise ModelDeclarationError(c.problems)
    return models


def parse_gpus(raw: object) -> list[GpuDecl]:
    """``hearth_declared_gpus`` as :class:`GpuDecl` objects; raise listing every problem."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ModelDeclarationError([f"{GPUS_VAR}: expected a list of GPUs"], GPUS_VAR)
    c = _Collector()
    gpus: list[GpuDecl] = []
    for i, item in enumerate(raw):
        where = f"{GPUS_VAR}[{i}]"
        if not isinstance(item, Mapping):
            c.add(where, "", "expected a mapping {index, name, memory_mib, bandwidth_gbs}")
            continue
        _unknown_keys(c, where, "", item, _GPU_KEYS)
        index = item.get("index", i)
        if not _is_int(index) or index < 0:
            c.add(where, "index", f"expected a GPU index (0, 1, …), got {index!r}")
        memory = item.get("memory_mib")
        if not _is_int(memory) or memory <= 0:
            c.add(
                where,
                "memory_mib",
                f"required: the GPU's memory in MiB (nvidia-smi's memory.total), got {memory!r}",
            )
        bandwidth = item.get("bandwidth_gbs")
        if bandwidth is not None and (not _is_number(bandwidth) or bandwidth <= 0):
            c.add(where, "bandwidth_gbs", f"expected GB/s as a positive number, got {bandwidth!r}")
        uuid = item.get("uuid")
        if uuid is not None and (not isinstance(uuid, str) or not _GPU_UUID.match(uuid)):
            c.add(where, "uuid", f"expected GPU-…, got {uuid!r}")
        if any(g.index == index for g in gpus):
            c.add(where, "index", f"GPU {index} is declared twice")
        if c.problems or not _is_int(index) or not _is_int(memory):
            continue
        gpus.append(
            GpuDecl(
                index=index,
                memory_mib=memory,
                name=str(item["name"]) if item.get("name") is not None else None,
                uuid=uuid,
                bandwidth_gbs=None if bandwidth is None else float(bandwidth),
            )
        )
    if c.problems:
        raise ModelDeclarationError(c.problems, GPUS_VAR)
    return gpus


# ------------------------------------------------------------------------------------- GGUF

_GGUF_SCALARS: dict[int, str] = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
    12: "<d",
}  # fmt: skip


def _read(stream: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize(fmt)
    data = stream.read(size)
    if len(data) != size:
        raise ValueError("truncated GGUF header")
    return struct.unpack(fmt, data)[0]


def _read_str(stream: BinaryIO) -> str:
    length = _read(stream, "<Q")
    if length > 1 << 24:
        raise ValueError("implausible GGUF string length")
    return stream.read(length).decode("utf-8", errors="replace")


def _read_value(stream: BinaryIO, kind: int) -> Any:
    if kind in _GGUF_SCALARS:
        return _read(stream, _GGUF_SCALARS[kind])
    if kind == 8:
        return _read_str(stream)
    if kind == 9:
        item_kind, count = _read(stream, "<I"), _read(stream, "<Q")
        if item_kind in _GGUF_SCALARS:
            fmt = _GGUF_SCALARS[item_kind]
            stream.seek(struct.calcsize(fmt) * count, 1)
        else:
            for _ in range(count):
                _read_value(stream, item_kind)
        return {"array_of": item_kind, "length": count}
    raise ValueError(f"unknown GGUF value type {kind}")


def read_gguf(path: Path) -> dict[str, Any]:
    """The metadata of a GGUF file (arrays as their length) plus ``tensor.count`` and
    ``tensor.parameters`` (the sum of every tensor's elements). Reads the header only."""
    with path.open("rb") as stream:
        if stream.read(4) != b"GGUF":
            raise InvalidInputError(f"{path}: not a GGUF file (no GGUF magic)")
        try:
            version = _read(stream, "<I")
            tensors, kv_count = _read(stream, "<Q"), _read(stream, "<Q")
            meta: dict[str, Any] = {"gguf.version": version, "tensor.count": tensors}
            for _ in range(kv_count):
                key = _read_str(stream)
                meta[key] = _read_value(stream, _read(stream, "<I"))
            params = 0
            for _ in range(tensors):
                _read_str(stream)
                dims = [_read(stream, "<Q") for _ in range(_read(stream, "<I"))]
                _read(stream, "<I")  # tensor type
                _read(stream, "<Q")  # offset
                count = 1
                for d in dims:
                    count *= d
                params += count
        except (ValueError, struct.error) as e:
            raise InvalidInputError(f"{path}: cannot read the GGUF header: {e}") from e
    meta["tensor.parameters"] = params
    return meta


def architecture_from_gguf(meta: Mapping[str, Any]) -> Architecture:
    """The planner's view of a model from its GGUF metadata (:func:`read_gguf`)."""
    arch = str(meta.get("general.architecture", "llama"))

    def get(key: str) -> int | None:
        value = meta.get(f"{arch}.{key}")
        return int(value) if isinstance(value, int) and not isinstance(value, bool) else None

    heads, hidden = get("attention.head_count"), get("embedding_length")
    head_dim = get("attention.key_length") or (hidden // heads if hidden and heads else None)
    vocab = meta.get("tokenizer.ggml.tokens")
    return Architecture(
        params_b=int(meta.get("tensor.parameters", 0)) / 1e9 or None,
        num_layers=get("block_count"),
        num_attention_heads=heads,
        num_kv_heads=get("attention.head_count_kv") or heads,
        head_dim=head_dim,
        hidden_size=hidden,
        vocab_size=int(vocab["length"]) if isinstance(vocab, Mapping) else None,
        context_length=get("context_length"),
    )


# ------------------------------------------------------------------------- store changelog

CHANGE_KINDS = ("weights", "engine_args", "chat_template")


def _digest(data: object) -> str:
    import hashlib
    import json

    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def fingerprints(model: ModelSpec) -> dict[str, str | None]:
    """What a changelog record compares: the weights (every file's path and sha256), the engine
    arguments (everything that shapes the engine's command) and the chat template."""
    runtime = {
        "engine": model.engine,
        "dtype": model.dtype,
        "quantization": model.quantization,
        "kv_cache_dtype": model.kv_cache_dtype,
        "max_model_len": model.max_model_len,
        "max_num_seqs": model.max_num_seqs,
        "gpus": list(model.gpus),
        "gpu_memory_share": model.gpu_memory_share,
        "engine_args": dict(model.engine_args),
        "lora_adapters": [(a.name, a.path) for a in model.lora_adapters],
    }
    if model.triton_config:  # only where set, so other models' fingerprints stay as they were
        runtime["triton_config"] = dict(model.triton_config)
    return {
        "weights": _digest(sorted((f.path, f.sha256) for f in model.files)),
        "engine_args": _digest(runtime),
        "chat_template": None if model.chat_template is None else _digest(model.chat_template),
    }


def last_record(lines: Iterable[str], name: str) -> dict[str, Any] | None:
    """The last changelog record (JSON lines) of model ``name``; unreadable lines are skipped."""
    import json

    found: dict[str, Any] | None = None
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        # a rollout's outcome (promoted, refused, rolled back) is an event, not a deployed state
        if isinstance(record, dict) and record.get("model") == name and not record.get("event"):
            found = record
    return found


def change_record(
    model: ModelSpec, previous: Mapping[str, Any] | None, current_version: str | None = None
) -> dict[str, Any]:
    """The changelog record for deploying ``model`` after ``previous`` (the model's last record).

    ``changes`` lists what differs (weights, engine_args, chat_template, or ``version`` when only
    the pointer moves); empty when nothing changed, so no record is due. ``from_version`` is the
    version ``current`` pointed at (``current_version``), else the last record's."""
    prints = fingerprints(model)
    before = dict((previous or {}).get("fingerprints") or {})
    from_version = current_version or (previous or {}).get("to_version")
    if previous is None:
        changed = [k for k in CHANGE_KINDS if prints[k] is not None]
    else:
        changed = [k for k in CHANGE_KINDS if prints[k] != before.get(k)]
    if not changed and from_version != model.version:
        changed = ["version"]
    return {
        "model": model.name,
        "from_version": from_version,
        "to_version": model.version,
        "changes": changed,
        "fingerprints": prints,
    }
