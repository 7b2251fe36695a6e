"""Model declarations (hearth.models), engine commands against the engines' recorded real options
(hearth.engines), the store's changelog records, and the model_verify module."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import plugin_module

from hearth import engines, models, paths
from hearth.errors import InvalidInputError
from hearth.models import ModelDeclarationError, parse_gpus, parse_models

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "engines"
SHA_A = "a" * 64
SHA_B = "b" * 64
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def vllm_model(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "llama-3.1-8b",
        "version": "2024-07-23",
        "engine": "vllm",
        "format": "safetensors",
        "catalog": "llama-3.1-8b-instruct",
        "dtype": "bf16",
        "source": {
            "type": "huggingface",
            "repo": "meta-llama/Llama-3.1-8B-Instruct",
            "revision": COMMIT,
        },
        "files": [
            {"path": "model-00001-of-00002.safetensors", "sha256": SHA_A, "size": 4976698672},
            {
                "path": "model-00002-of-00002.safetensors",
                "sha256": SHA_B.upper(),
                "size": 1168138808,
            },
        ],
        "max_model_len": 8192,
        "max_num_seqs": 16,
        "gpus": [0],
    }
    base.update(over)
    return base


def gguf_model(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "smollm2",
        "version": "0.1.2-q4_1",
        "engine": "llamacpp",
        "format": "gguf",
        "catalog": "smollm2-135m-instruct",
        "quantization": "q4_1",
        "source": {"type": "path", "path": "/srv/models/smollm2"},
        "files": [{"path": "SmolLM2-135M-Instruct.Q4_1.gguf", "sha256": SHA_A, "size": 98362432}],
        "max_model_len": 2048,
        "max_num_seqs": 2,
        "gpus": [],
    }
    base.update(over)
    return base


def problems_of(raw: Any) -> list[str]:
    with pytest.raises(ModelDeclarationError) as info:
        parse_models(raw)
    assert info.value.exit_code == 2
    return info.value.problems


# ------------------------------------------------------------------------------ declarations


def test_a_full_declaration_parses_with_the_catalog_architecture() -> None:
    (model,) = parse_models([vllm_model(engine_args={"enable_prefix_caching": True})])
    assert model.name == "llama-3.1-8b"
    assert model.source.file_url(model.files[0]) == (
        f"https://huggingface.co/meta-llama/Llama-3.1-8B-Instruct/resolve/{COMMIT}/"
        "model-00001-of-00002.safetensors"
    )
    assert model.files[1].sha256 == SHA_B  # normalised to lower case
    assert model.files_size == 4976698672 + 1168138808
    arch = model.architecture
    assert (arch.num_layers, arch.num_kv_heads, arch.head_dim, arch.hidden_size) == (
        32,
        8,
        128,
        4096,
    )
    assert arch.params_b == pytest.approx(8.030261248)
    assert arch.embedding_params == 128256 * 4096 * 2  # untied: embedding + output head
    assert model.tensor_parallel_size == 1
    assert model.weight_precision == "bf16"
    assert model.engine_args == {"enable_prefix_caching": True}


def test_inline_architecture_overrides_the_catalog_and_gguf_types_are_normalised() -> None:
    (model,) = parse_models([gguf_model(architecture={"num_kv_heads": 9, "params_b": 0.2})])
    assert model.quantization == "Q4_1"
    assert model.architecture.num_kv_heads == 9
    assert model.architecture.num_layers == 30  # the rest from the catalog
    assert model.architecture.params_b == 0.2
    assert model.on_cpu and model.gpus == ()


def test_each_problem_names_the_model_and_the_key() -> None:
    bad = vllm_model(
        max_model_length=4096,
        version=2,
        dtype="bfloat",
        gpu_memory_share=1.5,
        gpus=[0, "gpu-1", 0],
        engine_args={"tensor_parallel_size": 2},
    )
    del bad["max_model_len"]
    bad["files"][0]["sha256"] = "abc"
    problems = problems_of([bad])
    text = "\n".join(problems)
    prefix = "model 'llama-3.1-8b' (hearth_models[0])"
    assert all(p.startswith(prefix) for p in problems), problems
    assert "max_model_length: unknown key; did you mean max_model_len?" in text
    assert "max_model_len: required for vllm" in text
    assert "version: expected a string: put the version in quotes ('2')" in text
    assert "dtype: expected one of auto, bf16, fp16, fp32, got 'bfloat'" in text
    assert "gpu_memory_share: expected a fraction" in text
    assert "gpus[1]: expected an index (0, 1, …) or a UUID (GPU-…), got 'gpu-1'" in text
    assert "gpus[2]: GPU 0 is listed twice" in text
    assert "engine_args.tensor_parallel_size: set by Hearth from the declaration: use gpus" in text
    assert "files[0].sha256: expected 64 hex digits (sha256), got 'abc'" in text
    assert len(problems) == 9


@pytest.mark.parametrize(
    ("over", "expected"),
    [
        (
            {"engine": "llamacpp"},
            "format: llamacpp does not serve safetensors models (it serves gguf)",
        ),
        ({"engine": "tgi"}, "engine: expected one of vllm, triton, llamacpp, got 'tgi'"),
        ({"catalog": "llama-3.1-8b-instruc"}, "did you mean llama-3.1-8b-instruct?"),
        ({"quantization": "Q4_K_M"}, "(GGUF types go with format: gguf)"),
        (
            {"source": {"type": "huggingface", "repo": "a/b", "revision": "main"}},
            "source.revision: expected a 40-hex commit id (pin the revision, not a branch), "
            "got 'main'",
        ),
        ({"source": {"type": "path", "path": "relative/dir"}}, "a path source must be absolute"),
        ({"source": {"type": "bundle", "path": "../x"}}, "relative to the bundle's root"),
        ({"source": {"type": "url"}}, "source.url: required (or a url on each file"),
        (
            {"files": [{"path": "../etc/passwd", "sha256": SHA_A}]},
            "expected a relative path without '..'",
        ),
        ({"files": []}, "files: expected a non-empty list"),
        (
            {"max_model_len": 200000},
            "max_model_len: 200000 exceeds the model's context length (131072 tokens)",
        ),
        (
            {"gpus": [0, 1, 2]},
            "gpus: vLLM splits the 32 attention heads evenly: 3 GPUs do not divide them",
        ),
        ({"version": "current"}, "(not 'current')"),
        (
            {"lora_adapters": [{"name": "sql"}]},
            "lora_adapters[0]: expected {name: ADAPTER, path: DIRECTORY}",
        ),
        ({"gpus": [], "gpu_memory_share": 0.5}, "gpu_memory_share: set, but gpus is []"),
    ],
)
def test_invalid_declarations(over: dict[str, Any], expected: str) -> None:
    assert any(expected in p for p in problems_of([vllm_model(**over)])), expected


def test_gguf_quantization_must_be_a_real_gguf_type() -> None:
    problems = problems_of([gguf_model(quantization="q4_km")])
    assert "is not a GGUF type llama.cpp writes; did you mean Q4_K_M?" in problems[0]


def test_duplicate_names_and_a_non_list() -> None:
    problems = problems_of([vllm_model(), vllm_model(version="2")])
    assert problems == [
        "model 'llama-3.1-8b' (hearth_models[1]): name: declared twice (first at "
        "hearth_models[0]); one name per model"
    ]
    assert problems_of({"name": "x"}) == ["hearth_models: expected a list of model declarations"]
    assert parse_models(None) == []


def test_gpu_declarations() -> None:
    gpus = parse_gpus(
        [
            {"index": 0, "name": "NVIDIA L40S", "memory_mib": 46068},
            {"index": 1, "memory_mib": 46068, "bandwidth_gbs": 864, "uuid": "GPU-1a2b"},
        ]
    )
    assert [(g.index, g.memory_mib, g.bandwidth_gbs) for g in gpus] == [
        (0, 46068, None),
        (1, 46068, 864.0),
    ]
    assert gpus[0].label == "GPU 0 (NVIDIA L40S)"
    with pytest.raises(ModelDeclarationError) as info:
        parse_gpus(
            [{"index": 0, "memory_mib": "46068"}, {"index": 0, "memory_mib": 1, "memory_mb": 2}]
        )
    assert info.value.problems == [
        "hearth_declared_gpus[0]: memory_mib: required: the GPU's memory in MiB (nvidia-smi's "
        "memory.total), got '46068'",
        "hearth_declared_gpus[1]: memory_mb: unknown key; did you mean memory_mib?",
    ]


# ---------------------------------------------------------------------------------- GGUF


def _gguf_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def write_gguf(path: Path) -> None:
    """A minimal real-format GGUF v3 header: 6 metadata keys, an array, 2 tensors."""
    kvs = [
        ("general.architecture", 8, _gguf_string("llama")),
        ("llama.block_count", 4, struct.pack("<I", 2)),
        ("llama.embedding_length", 4, struct.pack("<I", 64)),
        ("llama.attention.head_count", 4, struct.pack("<I", 4)),
        ("llama.attention.head_count_kv", 4, struct.pack("<I", 2)),
        ("llama.context_length", 4, struct.pack("<I", 512)),
        (
            "tokenizer.ggml.tokens",
            9,
            struct.pack("<IQ", 8, 2) + _gguf_string("a") + _gguf_string("b"),
        ),
    ]
    out = b"GGUF" + struct.pack("<IQQ", 3, 2, len(kvs))
    for key, kind, value in kvs:
        out += _gguf_string(key) + struct.pack("<I", kind) + value
    for name, dims in (("token_embd.weight", (64, 2)), ("blk.0.attn_q.weight", (64, 64))):
        out += _gguf_string(name) + struct.pack("<I", len(dims))
        out += b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", 1, 0)
    path.write_bytes(out)


def test_gguf_header_gives_the_architecture(tmp_path: Path) -> None:
    path = tmp_path / "tiny.gguf"
    write_gguf(path)
    meta = models.read_gguf(path)
    assert meta["tensor.parameters"] == 64 * 2 + 64 * 64
    assert meta["tokenizer.ggml.tokens"] == {"array_of": 8, "length": 2}
    arch = models.architecture_from_gguf(meta)
    assert (arch.num_layers, arch.num_attention_heads, arch.num_kv_heads, arch.head_dim) == (
        2,
        4,
        2,
        16,
    )
    assert (arch.hidden_size, arch.context_length, arch.vocab_size) == (64, 512, 2)
    (tmp_path / "bad.gguf").write_bytes(b"NOPE")
    with pytest.raises(InvalidInputError, match="not a GGUF file"):
        models.read_gguf(tmp_path / "bad.gguf")
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(InvalidInputError, match="cannot read the GGUF header"):
        models.read_gguf(path)


def test_catalog_matches_the_real_smollm2_file_when_cached() -> None:
    entry = models.lab_models()["smollm2-135m-instruct-q4_1"]
    path = paths.cache_dir() / "models" / "smollm2-135m-instruct-q4_1" / entry["file"]
    if not path.is_file():
        pytest.skip("run `hearth models fetch-lab` to check the catalog against the real file")
    found = models.architecture_from_gguf(models.read_gguf(path))
    declared = models.catalog()["smollm2-135m-instruct"]
    for key in (
        "params_b",
        "num_layers",
        "num_attention_heads",
        "num_kv_heads",
        "head_dim",
        "hidden_size",
        "vocab_size",
        "context_length",
    ):
        assert getattr(found, key) == getattr(declared, key), key


# -------------------------------------------------------------------------- engine options


@pytest.mark.parametrize(
    ("fixture", "shipped"),
    [
        ("vllm-0.32.0-serve-options.txt", "vllm/serve-options.txt"),
        ("llama-server-0.7.0-help.txt", "llamacpp/llama-server-help.txt"),
        ("tritonserver-2.51.0-help.txt", "triton/tritonserver-help.txt"),
    ],
)
def test_shipped_option_lists_are_the_recorded_ones(fixture: str, shipped: str) -> None:
    recorded = (FIXTURES / fixture).read_text()
    assert (paths.templates_dir() / "images" / shipped).read_text() == recorded


def test_the_shared_vllm_recording_is_the_one_copied() -> None:
    shared = Path("/work/shared/fixtures/engines/vllm-0.32.0-serve-options.txt")
    if not shared.is_file():
        pytest.skip("the shared fixtures are not on this machine")
    assert shared.read_text() == (FIXTURES / "vllm-0.32.0-serve-options.txt").read_text()


def test_recorded_options_parse() -> None:
    vllm = engines.engine_options("vllm")
    assert len(vllm.names) == 317
    for name in (
        "--max-model-len",
        "--max-num-seqs",
        "--tensor-parallel-size",
        "--served-model-name",
        "--gpu-memory-utilization",
        "--chat-template",
        "--enable-lora",
        "--lora-modules",
    ):
        assert name in vllm.names
    assert vllm.choices["--dtype"] == ("auto", "bfloat16", "float", "float16", "float32", "half")
    llama = engines.engine_options("llamacpp")
    for name in (
        "--ctx-size",
        "-c",
        "--parallel",
        "-np",
        "--metrics",
        "--threads",
        "-t",
        "--n-gpu-layers",
        "--no-kv-unified",
        "--chat-template-file",
        "--alias",
    ):
        assert name in llama.names, name
    assert "--ctx-size N" not in llama.names and "N" not in llama.names
    assert llama.choices["--split-mode"] == ("none", "layer", "row", "tensor")
    triton = engines.engine_options("triton")
    assert len(triton.names) == 87
    assert triton.kinds["--http-port"] == "integer" and triton.kinds["--allow-metrics"] == "boolean"
    assert "--backend-config" in triton.names and "--model-load-gpu-limit" in triton.names


def test_vllm_command_uses_real_argument_names() -> None:
    (model,) = parse_models(
        [
            vllm_model(
                quantization="awq",
                kv_cache_dtype="fp8",
                gpus=[0, 1],
                gpu_memory_share=0.45,
                chat_template="{{ messages }}",
                lora_adapters=[{"name": "sql", "path": "/models/sql-lora/current"}],
                engine_args={
                    "enable_prefix_caching": True,
                    "max-num-batched-tokens": 4096,
                    "enforce_eager": False,
                    "compilation_config": {"level": 3},
                },
            )
        ]
    )
    argv = engines.render_command(model)
    assert argv == [
        "--model", "/models/llama-3.1-8b/current",
        "--served-model-name", "llama-3.1-8b",
        "--host", "0.0.0.0",
        "--port", "8000",
        "--max-model-len", "8192",
        "--max-num-seqs", "16",
        "--dtype", "bfloat16",
        "--quantization", "awq",
        "--kv-cache-dtype", "fp8",
        "--tensor-parallel-size", "2",
        "--gpu-memory-utilization", "0.45",
        "--chat-template", "/models/llama-3.1-8b/current/chat_template.jinja",
        "--enable-lora",
        "--lora-modules", "sql=/models/sql-lora/current",
        "--enable-prefix-caching",
        "--max-num-batched-tokens", "4096",
        "--compilation-config", '{"level":3}',
    ]  # fmt: skip
    options = engines.engine_options("vllm")
    flags = [a for a in argv if a.startswith("--")]
    assert all(flag in options.names for flag in flags)


def test_unknown_engine_argument_names_model_argument_and_suggestions() -> None:
    (model,) = parse_models([vllm_model(engine_args={"enable_prefix_cachin": True})])
    with pytest.raises(engines.EngineArgumentError) as info:
        engines.render_command(model)
    assert info.value.exit_code == 2
    assert info.value.problems == [
        "model llama-3.1-8b: engine_args.enable_prefix_cachin: vllm 0.32.0 has no option "
        "--enable-prefix-cachin; did you mean --enable-prefix-caching?"
    ]
    with pytest.raises(engines.EngineArgumentError) as again:
        engines.check_engine_args([model])
    assert again.value.problems == info.value.problems


def test_values_outside_the_recorded_choices_are_refused() -> None:
    (model,) = parse_models([vllm_model(engine_args={"performance_mode": "fastest"})])
    with pytest.raises(
        engines.EngineArgumentError,
        match=r"'fastest' is not one of vllm 0\.32\.0's choices: balanced, interactivity, through",
    ):
        engines.render_command(model)
    (llama,) = parse_models([gguf_model(kv_cache_dtype="fp8")])
    with pytest.raises(engines.EngineArgumentError) as info:
        engines.render_command(llama)
    allowed = "f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1"
    assert info.value.problems == [
        f"model smollm2: Hearth's --cache-type-k: --cache-type-k 'fp8' is not one of llamacpp "
        f"0.7.0's choices: {allowed}",
        f"model smollm2: Hearth's --cache-type-v: --cache-type-v 'fp8' is not one of llamacpp "
        f"0.7.0's choices: {allowed}",
    ]


def test_a_renamed_engine_option_breaks_the_rendering(monkeypatch: pytest.MonkeyPatch) -> None:
    """If vLLM dropped --max-num-seqs, Hearth's own rendering must fail, naming it."""
    real = engines.engine_options("vllm")
    fake = dataclasses.replace(real, names=real.names - {"--max-num-seqs"})
    monkeypatch.setattr(engines, "engine_options", lambda engine: fake)
    (model,) = parse_models([vllm_model()])
    with pytest.raises(engines.EngineArgumentError) as info:
        engines.render_command(model)
    assert info.value.problems == [
        "model llama-3.1-8b: Hearth's --max-num-seqs: vllm 0.32.0 has no option --max-num-seqs; "
        "did you mean --max-num-active-seqs?"
    ]


def test_llamacpp_command() -> None:
    (model,) = parse_models(
        [gguf_model(kv_cache_dtype="q8_0", engine_args={"threads": 2, "t": 4, "flash_attn": "on"})]
    )
    argv = engines.render_command(model)
    assert argv == [
        "--model", "/models/smollm2/current/SmolLM2-135M-Instruct.Q4_1.gguf",
        "--alias", "smollm2",
        "--host", "0.0.0.0",
        "--port", "8080",
        "--ctx-size", "4096",
        "--parallel", "2",
        "--metrics",
        "--n-gpu-layers", "0",
        "--cache-type-k", "q8_0",
        "--cache-type-v", "q8_0",
        "--threads", "2",
        "-t", "4",
        "--flash-attn", "on",
    ]  # fmt: skip
    (on_gpu,) = parse_models([gguf_model(gpus=[1], engine_args={"split_mode": "rows"})])
    with pytest.raises(engines.EngineArgumentError, match="--split-mode 'rows' is not one of"):
        engines.render_command(on_gpu)


def test_triton_command_and_value_kinds() -> None:
    decl = {
        "name": "resnet",
        "version": "1",
        "engine": "triton",
        "format": "onnx",
        "source": {"type": "bundle", "path": "models/resnet"},
        "files": [{"path": "model.onnx", "sha256": SHA_A}],
    }
    (model,) = parse_models([decl])
    assert engines.render_command(model) == [
        "--model-repository", "/models/triton-repository",
        "--http-port", "8000",
        "--grpc-port", "8001",
        "--metrics-port", "8002",
        "--allow-metrics", "true",
        "--model-control-mode", "explicit",
        "--load-model", "resnet",
        "--strict-readiness", "true",
    ]  # fmt: skip
    (bad,) = parse_models([{**decl, "engine_args": {"exit_timeout_secs": "soon", "log_info": 3}}])
    with pytest.raises(engines.EngineArgumentError) as info:
        engines.render_command(bad)
    assert info.value.problems == [
        "model resnet: engine_args.exit_timeout_secs: --exit-timeout-secs takes an integer, "
        "got 'soon'",
        "model resnet: engine_args.log_info: --log-info takes true or false, got 3",
    ]


def test_triton_model_config_is_protobuf_text() -> None:
    decl = {
        "name": "upper",
        "version": "1",
        "engine": "triton",
        "format": "python",
        "source": {"type": "path", "path": "/srv/upper"},
        "files": [{"path": "model.py", "sha256": SHA_A}],
        "gpus": ["GPU-aa", "GPU-bb"],
    }
    (model,) = parse_models([decl])
    config = engines.triton_model_config(
        model,
        {
            "max_batch_size": 0,
            "input": [{"name": "TEXT", "data_type": "TYPE_STRING", "dims": [-1]}],
        },
    )
    assert config == (
        'name: "upper"\n'
        'backend: "python"\n'
        "max_batch_size: 0\n"
        "input [\n"
        "  {\n"
        '    name: "TEXT"\n'
        "    data_type: TYPE_STRING\n"
        "    dims: [ -1 ]\n"
        "  }\n"
        "]\n"
        "instance_group [\n"
        "  {\n"
        "    kind: KIND_GPU\n"
        "    count: 1\n"
        "    gpus: [ 0, 1 ]\n"
        "  }\n"
        "]\n"
    )


# ------------------------------------------------------------------------------ changelog


def test_change_records_say_what_changed() -> None:
    (first,) = parse_models([gguf_model()])
    record = models.change_record(first, None)
    assert record["changes"] == ["weights", "engine_args"]
    assert (record["from_version"], record["to_version"]) == (None, "0.1.2-q4_1")
    assert models.change_record(first, record)["changes"] == []

    (args,) = parse_models([gguf_model(engine_args={"threads": 4})])
    assert models.change_record(args, record)["changes"] == ["engine_args"]
    (template,) = parse_models([gguf_model(chat_template="{{ x }}")])
    assert models.change_record(template, record)["changes"] == ["chat_template"]
    weights = gguf_model(version="0.2.0")
    weights["files"][0]["sha256"] = SHA_B
    (new,) = parse_models([weights])
    moved = models.change_record(new, record, current_version="0.1.2-q4_1")
    assert moved["changes"] == ["weights"]
    assert (moved["from_version"], moved["to_version"]) == ("0.1.2-q4_1", "0.2.0")
    (same_files,) = parse_models([gguf_model(version="0.1.3")])
    assert models.change_record(same_files, record)["changes"] == ["version"]


def test_last_record_skips_other_models_and_garbage() -> None:
    lines = [
        json.dumps({"model": "smollm2", "to_version": "1"}),
        "not json",
        json.dumps({"model": "other", "to_version": "9"}),
        json.dumps({"model": "smollm2", "to_version": "2"}),
        "",
    ]
    assert models.last_record(lines, "smollm2") == {"model": "smollm2", "to_version": "2"}
    assert models.last_record(lines, "absent") is None


# ---------------------------------------------------------------------------- model_verify


def _load_module() -> Any:
    return plugin_module("modules", "model_verify")


def test_model_verify_functions(tmp_path: Path) -> None:
    module = _load_module()
    (tmp_path / "a.bin").write_bytes(b"alpha")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.bin").write_bytes(b"beta")
    good_a = hashlib.sha256(b"alpha").hexdigest()
    good_b = hashlib.sha256(b"beta").hexdigest()
    files = [
        {"path": "a.bin", "sha256": good_a.upper(), "size": 5},
        {"path": "sub/b.bin", "sha256": good_a, "size": None},
        {"path": "c.bin", "sha256": good_a},
    ]
    verified, missing, mismatches, _ = module.verify(str(tmp_path), files)
    assert verified == ["a.bin"]
    assert missing == ["c.bin"]
    assert mismatches == [
        {"path": "sub/b.bin", "expected": good_a, "found": good_b, "size": 4, "expected_size": None}
    ]
    message = module.describe("m 1", str(tmp_path), missing, mismatches)
    assert message == (
        f"model m 1: file sub/b.bin: expected sha256 {good_a}, found {good_b}; file c.bin: "
        f"missing (in {tmp_path})"
    )
    _, _, sized, _ = module.verify(str(tmp_path), [{"path": "a.bin", "sha256": good_a, "size": 6}])
    assert sized[0]["found"] == good_a and sized[0]["expected_size"] == 6


def test_model_verify_hashes_only_files_written_since_they_matched(tmp_path: Path) -> None:
    module = _load_module()
    weights = tmp_path / "w.gguf"
    weights.write_bytes(b"weights-" * 1000)
    good = hashlib.sha256(weights.read_bytes()).hexdigest()
    files = [{"path": "w.gguf", "sha256": good}]
    record: dict[str, Any] = {}
    assert module.verify(str(tmp_path), files, record)[::3] == (["w.gguf"], ["w.gguf"])
    # unchanged since: not hashed again
    assert module.verify(str(tmp_path), files, record)[::3] == (["w.gguf"], [])
    # one byte flipped, size and modification time put back (issue 10's repair case): its change
    # time moved, so it is hashed and found
    stat = weights.stat()
    data = bytearray(weights.read_bytes())
    data[100] ^= 0x01
    time.sleep(0.01)
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    verified, _, mismatches, hashed = module.verify(str(tmp_path), files, record)
    assert (verified, hashed) == ([], ["w.gguf"]) and mismatches[0]["found"] != good
    assert record == {}  # a mismatch is never trusted next time
    # the module keeps the record in a file, for the directory it verified only
    rc, result = _ansible_module({"path": str(tmp_path), "files": [
        {"path": "w.gguf", "sha256": hashlib.sha256(bytes(data)).hexdigest()}],
        "record": str(tmp_path / "rec" / "w.json")})  # fmt: skip
    assert rc == 0 and result["hashed"] == ["w.gguf"], result
    assert oct((tmp_path / "rec" / "w.json").stat().st_mode & 0o777) == "0o600"
    rc, again = _ansible_module({"path": str(tmp_path), "files": [
        {"path": "w.gguf", "sha256": hashlib.sha256(bytes(data)).hexdigest()}],
        "record": str(tmp_path / "rec" / "w.json")})  # fmt: skip
    assert rc == 0 and again["hashed"] == [] and again["ok"] is True, again


def test_a_staging_directory_verified_for_its_final_place_needs_no_hash_there(
    tmp_path: Path,
) -> None:
    """record_root: the model store verifies a new version in its staging directory, then renames
    it into place; the record is the final directory's, so a later check there (a fast rollback)
    hashes nothing, and a file written since is hashed again."""
    staging, final = tmp_path / ".incoming" / "v1", tmp_path / "v1"
    staging.mkdir(parents=True)
    (staging / "w.gguf").write_bytes(b"weights")
    files = [{"path": "w.gguf", "sha256": hashlib.sha256(b"weights").hexdigest()}]
    record = str(tmp_path / "rec" / "v1.json")
    args = {"path": str(staging), "files": files, "record": record, "record_root": str(final)}
    rc, first = _ansible_module(args)
    assert rc == 0 and first["hashed"] == ["w.gguf"], first
    staging.rename(final)
    rc, there = _ansible_module({"path": str(final), "files": files, "record": record})
    assert rc == 0 and there["ok"] is True and there["hashed"] == [], there
    (final / "w.gguf").write_bytes(b"weights")
    rc, again = _ansible_module({"path": str(final), "files": files, "record": record})
    assert rc == 0 and again["hashed"] == ["w.gguf"], again


def _ansible_module(args: dict[str, Any], check: bool = False) -> tuple[int, dict[str, Any]]:
    env = {
        **os.environ,
        "ANSIBLE_LIBRARY": str(paths.plugins_dir() / "modules"),
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_STDOUT_CALLBACK": "json",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
        "ANSIBLE_INTERPRETER_PYTHON": sys.executable,
    }
    cmd = [
        str(Path(sys.executable).parent / "ansible"),
        "localhost",
        "-c",
        "local",
        "-m",
        "model_verify",
        "-a",
        json.dumps(args),
    ]
    if check:
        cmd.append("--check")
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    data = json.loads(run.stdout)
    result: dict[str, Any] = data["plays"][0]["tasks"][0]["hosts"]["localhost"]
    return run.returncode, result


def test_model_verify_module_runs_under_ansible(tmp_path: Path) -> None:
    (tmp_path / "w.gguf").write_bytes(b"weights")
    good = hashlib.sha256(b"weights").hexdigest()
    files = [{"path": "w.gguf", "sha256": good, "size": 7}]
    rc, result = _ansible_module({"path": str(tmp_path), "files": files, "name": "smollm2 1"})
    assert rc == 0 and result["ok"] is True and result["changed"] is False
    assert result["verified"] == ["w.gguf"]

    bad = copy.deepcopy(files)
    bad[0]["sha256"] = SHA_A
    rc, result = _ansible_module(
        {"path": str(tmp_path), "files": bad, "name": "smollm2 2"}, check=True
    )
    assert rc == 2 and result["failed"] is True
    assert result["msg"] == (
        f"model smollm2 2: file w.gguf: expected sha256 {SHA_A}, found {good} (in {tmp_path})"
    )
    rc, result = _ansible_module(
        {"path": str(tmp_path / "absent"), "files": files, "fail_on_mismatch": False}
    )
    assert rc == 0 and result["ok"] is False and result["missing"] == ["w.gguf"]


def test_a_pinned_system_prompt_and_its_policy_parse_and_bad_ones_are_named() -> None:
    (model,) = parse_models([gguf_model(system_prompt="Be brief.", system_prompt_policy="demote")])
    assert (model.system_prompt, model.system_prompt_policy) == ("Be brief.", "demote")
    (plain,) = parse_models([gguf_model()])
    assert plain.system_prompt is None
    said = problems_of([gguf_model(system_prompt="Be brief.", system_prompt_policy="ignore")])
    assert said == [
        "model 'smollm2' (hearth_models[0]): system_prompt_policy: expected one of refuse, "
        "demote (what the front door does with a client's own system message), got 'ignore'"
    ]
    assert problems_of([gguf_model(system_prompt="  ")]) == [
        "model 'smollm2' (hearth_models[0]): system_prompt: expected the pinned system prompt as a "
        "non-empty string"
    ]
    assert problems_of([gguf_model(system_prompt_policy="demote")]) == [
        "model 'smollm2' (hearth_models[0]): system_prompt_policy: set, but no system_prompt "
        "is pinned"
    ]
