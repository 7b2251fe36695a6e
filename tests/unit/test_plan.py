"""VRAM planning (hearth.plan): the arithmetic, the refusals, `hearth plan`, the Ansible filter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import plugin_module

from hearth import gpu, models, paths, plan
from hearth.models import GpuDecl, parse_models

GIB = 1024**3
MIB = 1024**2
NVSMI = Path(__file__).resolve().parent.parent / "fixtures" / "nvidia-smi"
H100 = GpuDecl(0, 81559, "NVIDIA H100 80GB HBM3", bandwidth_gbs=3350.0)
H100_1 = GpuDecl(1, 81559, "NVIDIA H100 80GB HBM3", uuid="GPU-h100-1", bandwidth_gbs=3350.0)
L40S = GpuDecl(0, 46068, "NVIDIA L40S", bandwidth_gbs=864.0)


def model(**over: Any) -> models.ModelSpec:
    base: dict[str, Any] = {
        "name": "llama-8b",
        "version": "1",
        "engine": "vllm",
        "format": "safetensors",
        "catalog": "llama-3.1-8b-instruct",
        "dtype": "bf16",
        "source": {"type": "url", "url": "https://models.example/llama"},
        "files": [{"path": "model.safetensors", "sha256": "a" * 64}],
        "max_model_len": 8192,
        "max_num_seqs": 16,
        "gpus": [0],
    }
    base.update(over)
    return parse_models([base])[0]


# ---------------------------------------------------------------------------------- arithmetic


@pytest.mark.parametrize(
    ("precision", "bits"),
    [
        ("bf16", 16),
        ("fp32", 32),
        ("fp8", 8),
        ("awq", 4 + 20 / 128),
        ("gptq-int8", 8 + 24 / 128),
        ("Q4_0", 4.5),
        ("q4_1", 5.0),
        ("Q5_0", 5.5),
        ("Q8_0", 8.5),
        ("Q6_K", 6.5625),
        ("Q4_K_M", 4.84),
        ("Q2_K", 3.35),
    ],
)
def test_bits_per_weight(precision: str, bits: float) -> None:
    assert plan.bits_per_weight(precision) == pytest.approx(bits)


def test_every_declarable_quantization_has_bits() -> None:
    for name in (*models.WEIGHT_QUANTIZATIONS, *models.GGUF_TYPES, "bf16", "fp16", "fp32"):
        assert plan.bits_per_weight(name) > 0, name
    with pytest.raises(plan.InvalidInputError, match="unknown precision 'int3'"):
        plan.bits_per_weight("int3")


def test_weights_from_parameters_and_from_file_sizes() -> None:
    assert plan.weights_bytes(model()) == (8030261248 * 2, "params")
    # AWQ keeps the embedding and the (untied) output head in 16 bits: 128256 × 4096 × 2 params.
    embedding = 128256 * 4096 * 2
    awq = plan.weights_bytes(model(quantization="awq", dtype="auto"))
    assert awq is not None
    assert awq[0] == pytest.approx(
        (8030261248 - embedding) * (4 + 20 / 128) / 8 + embedding * 2, abs=1
    )
    assert awq[0] == pytest.approx(
        5.73e9, rel=0.01
    )  # the size of Meta-Llama-3.1-8B-Instruct-AWQ-INT4
    sized = model(
        files=[
            {"path": "a", "sha256": "a" * 64, "size": 4000},
            {"path": "b", "sha256": "b" * 64, "size": 1000},
        ]
    )
    assert plan.weights_bytes(sized) == (5000, "files")
    gguf = model(
        engine="llamacpp",
        format="gguf",
        catalog="smollm2-135m-instruct",
        quantization="Q8_0",
        dtype="auto",
        max_model_len=2048,
    )
    assert plan.weights_bytes(gguf) == (-(-134515008 * 8.5 // 8), "params")
    unknown = model(catalog=None)
    assert plan.weights_bytes(unknown) is None


def test_kv_cache_is_two_layers_heads_dim_bytes_context_and_sequences() -> None:
    m = model()
    assert plan.kv_bytes_per_token(m) == 2 * 32 * 8 * 128 * 2 == 128 * 1024
    assert plan.kv_cache_bytes(m) == 128 * 1024 * 8192 * 16 == 16 * GIB
    assert plan.kv_cache_bytes(model(kv_cache_dtype="fp8")) == 8 * GIB
    assert plan.kv_cache_bytes(model(dtype="fp32")) == 32 * GIB
    # Tensor parallel splits the KV heads; a GPU keeps at least one head (vLLM replicates).
    assert plan.kv_cache_bytes(model(gpus=[0, 1]), per_gpu=True) == 8 * GIB
    eight = model(gpus=list(range(16)), catalog="llama-3.1-70b-instruct")
    assert plan.kv_bytes_per_token(eight, per_gpu=True) == 2 * 80 * 1 * 128 * 2
    assert plan.kv_cache_bytes(model(catalog=None)) is None


def test_overhead_constants() -> None:
    # CUDA context 512 MiB + CUDA graphs 512 MiB + 8192 tokens × 4096 hidden × 16 bytes (512 MiB)
    assert plan.overhead_bytes(model()) == 1536 * MIB
    assert plan.overhead_bytes(model(engine_args={"enforce_eager": True})) == 1024 * MIB
    assert plan.overhead_bytes(model(engine_args={"max_num_batched_tokens": 2048})) == 1152 * MIB
    llama = model(engine="llamacpp", format="gguf", quantization="Q4_K_M", dtype="auto")
    assert plan.overhead_bytes(llama) == (512 + 256) * MIB + 512 * 4096 * 16
    triton = model(engine="triton", format="onnx", catalog=None, dtype="auto", gpus=[0])
    assert plan.overhead_bytes(triton, weights_per_gpu=GIB) == (512 + 1024) * MIB + -(-GIB // 20)


@pytest.mark.parametrize(
    ("name", "bandwidth"),
    [
        ("NVIDIA H100 80GB HBM3", 3350),
        ("NVIDIA H100 PCIe", 2000),
        ("NVIDIA H100 NVL", 3900),
        ("NVIDIA H200", 4800),
        ("NVIDIA GH200 480GB", 4000),
        ("NVIDIA A100-SXM4-80GB", 2039),
        ("NVIDIA A100 80GB PCIe", 1935),
        ("NVIDIA A100-PCIE-40GB", 1555),
        ("NVIDIA L40S", 864),
        ("NVIDIA L4", 300),
        ("Tesla T4", 320),
        ("NVIDIA A10G", 600),
        ("NVIDIA B200", 8000),
        ("NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition", 1792),
        ("NVIDIA GeForce RTX 2080", 448),
        ("Tesla P100-PCIE-12GB", 549),
        ("Tesla P100-PCIE-16GB", 732),
        ("Tesla V100-SXM2-32GB", 900),
        ("Some Future GPU", None),
    ],
)
def test_gpu_bandwidth_table(name: str, bandwidth: float | None) -> None:
    assert plan.gpu_bandwidth_gbs(name) == bandwidth


def test_every_recorded_nvidia_smi_gpu_gets_a_bandwidth() -> None:
    names = []
    for fixture in sorted(NVSMI.glob("*_q-x*.xml")):
        names += [g["name"] for g in gpu.parse_xml(fixture.read_text())["gpus"]]
    for fixture in sorted(NVSMI.glob("*.csv")):
        names += [g["name"] for g in gpu.parse_query_csv(fixture.read_text())["gpus"]]
    missing = [n for n in names if plan.gpu_bandwidth_gbs(n) is None and "GRID" not in n]
    assert len(names) >= 9
    assert not missing, missing


def test_decode_rate_is_bandwidth_over_bytes_per_token() -> None:
    assert plan.decode_tokens_per_s(3350, 8030261248 * 2) == pytest.approx(208.59, abs=0.01)
    assert plan.decode_tokens_per_s(None, 10) is None


# --------------------------------------------------------------------------------------- plans


def test_a_model_that_fits_and_its_figures() -> None:
    result = plan.plan_host("gpu01", [model(gpu_memory_share=0.5)], [H100])
    assert result.ok, result.refusals
    (p,) = result.placements
    assert p.need == plan.Need(weights=8030261248 * 2, kv_cache=16 * GIB, overhead=1536 * MIB)
    assert (p.share, p.share_basis) == (0.5, "declared")
    assert p.budget == int(0.5 * 81559 * MIB)
    assert p.tokens_per_s == pytest.approx(3350e9 / (8030261248 * 2))
    assert p.tokens_per_s_full == pytest.approx(3350e9 / (8030261248 * 2 + 128 * 1024 * 8192))
    assert result.gpus[0].shares == [("llama-8b", 0.5)]


def test_refuses_a_model_that_cannot_fit_the_gpu() -> None:
    result = plan.plan_host(
        "gpu01", [model(catalog="llama-3.1-70b-instruct", max_num_seqs=4)], [H100]
    )
    assert result.refusals == [
        "model llama-8b cannot fit on host gpu01 GPU 0 (NVIDIA H100 80GB HBM3): weights 131.4 GiB "
        "+ KV cache 10.0 GiB + overhead 2.0 GiB = 143.4 GiB per GPU, but the GPU has 79.6 GiB; "
        "lower max_model_len or max_num_seqs, quantize, or add GPUs"
    ]
    with pytest.raises(plan.PlanRefused) as info:
        result.raise_for_refusals()
    assert info.value.exit_code == 2 and "cannot fit" in str(info.value)


def test_tensor_parallel_splits_the_weights_and_the_share_decides() -> None:
    seventy = {"catalog": "llama-3.1-70b-instruct", "max_num_seqs": 4, "gpus": [0, "GPU-h100-1"]}
    refused = plan.plan_host("gpu01", [model(**seventy)], [H100, H100_1])
    (p,) = refused.placements
    assert p.need == plan.Need(weights=70553706496, kv_cache=5 * GIB, overhead=2 * GIB)
    assert (p.share, p.share_basis) == (0.9, "vLLM default")
    assert refused.refusals == [
        "model llama-8b does not fit its share of host gpu01 GPU 0 (NVIDIA H100 80GB HBM3), GPU 1 "
        "(NVIDIA H100 80GB HBM3): weights 65.7 GiB + KV cache 5.0 GiB + overhead 2.0 GiB = "
        "72.7 GiB per GPU, but share 0.90 (vLLM default) gives 71.7 GiB; raise gpu_memory_share "
        "or lower max_model_len or max_num_seqs"
    ]
    fits = plan.plan_host("gpu01", [model(**seventy, gpu_memory_share=0.95)], [H100, H100_1])
    assert fits.ok
    assert fits.placements[0].tokens_per_s == pytest.approx(3350e9 / 70553706496)
    assert [g.total_share for g in fits.gpus] == [0.95, 0.95]


def test_refuses_shares_of_one_gpu_above_one_naming_models_and_gpu() -> None:
    a, b = model(name="llama-8b"), model(name="qwen-7b", catalog="qwen2.5-7b-instruct")
    result = plan.plan_host("gpu01", [a, b], [H100])
    assert result.refusals == [
        "host gpu01 GPU 0 (NVIDIA H100 80GB HBM3): the models' shares add up to 1.80, more than "
        "the whole GPU (llama-8b 0.90 + qwen-7b 0.90); give them gpu_memory_share values that sum "
        "to 1 or less, or move one to another GPU"
    ]
    shared = [
        model(name="llama-8b", gpu_memory_share=0.5),
        model(name="qwen-7b", catalog="qwen2.5-7b-instruct", gpu_memory_share=0.45),
    ]
    assert plan.plan_host("gpu01", shared, [H100]).ok


def test_estimated_shares_for_engines_that_reserve_nothing() -> None:
    llama = model(
        engine="llamacpp",
        format="gguf",
        quantization="Q4_K_M",
        dtype="auto",
        max_model_len=4096,
        max_num_seqs=4,
    )
    result = plan.plan_host("gpu01", [llama], [L40S])
    (p,) = result.placements
    assert p.share_basis == "estimated"
    assert p.need is not None
    assert p.share == pytest.approx(-(-p.need.total * 100 // (46068 * MIB)) / 100)
    assert result.ok


def test_unknown_gpus_and_hosts_without_gpu_information() -> None:
    result = plan.plan_host("gpu01", [model(gpus=[0, 3])], [H100])
    assert result.refusals == [
        "model llama-8b on host gpu01: GPU 3 is not on the host (its GPUs: 0)"
    ]
    none = plan.plan_host("gpu02", [model()], [])
    assert none.refusals == [
        "model llama-8b on host gpu02: the host has no known GPU; gather GPU facts (hearth up "
        "runs gpu_facts) or declare hearth_declared_gpus for it"
    ]
    unsized = plan.plan_host("gpu01", [model(catalog=None)], [H100])
    assert "cannot size its weights" in unsized.refusals[0]


def test_cpu_models_are_listed_not_planned() -> None:
    cpu = model(
        engine="llamacpp",
        format="gguf",
        catalog="smollm2-135m-instruct",
        quantization="Q4_1",
        dtype="auto",
        max_model_len=2048,
        max_num_seqs=2,
        gpus=[],
    )
    result = plan.plan_host("lab1", [cpu], [])
    assert result.ok
    (p,) = result.placements
    assert p.share_basis == "cpu" and p.need is None and p.tokens_per_s is None
    assert p.kv_total == 2 * 30 * 3 * 64 * 2 * 2048 * 2


def test_mixture_of_experts_reads_only_the_active_weights() -> None:
    mixtral = model(
        catalog="mixtral-8x7b-instruct-v0.1",
        max_model_len=4096,
        max_num_seqs=4,
        gpus=[0, 1],
        gpu_memory_share=0.95,
    )
    (p,) = plan.plan_host("gpu01", [mixtral], [H100, H100_1]).placements
    per_gpu = 46702792704  # all the weights sit in VRAM, split over 2 GPUs
    assert p.need is not None and p.need.weights == per_gpu
    active = -(-per_gpu * 12.879921152 // 46.702792704)
    assert p.tokens_per_s == pytest.approx(3350e9 / active, rel=1e-6)


def test_gpu_facts_win_over_declarations() -> None:
    facts = gpu.parse_query_csv(
        (NVSMI / "h100-80gb-hbm3_driver-590.48.01_query-gpu-all-fields.csv").read_text()
    )
    declared = [GpuDecl(0, 40000, "NVIDIA A100-PCIE-40GB")]
    (found,) = plan.gpus_for_host(declared, {"hearth_gpus": facts["gpus"]})
    assert found.source == "facts" and found.name == "NVIDIA H100 80GB HBM3"
    assert found.memory_mib == facts["gpus"][0]["memory_total_mib"] > 80000
    assert found.bandwidth_gbs == 3350
    (declared_only,) = plan.gpus_for_host(declared, None)
    assert (declared_only.source, declared_only.bandwidth_gbs) == ("inventory", 1555)


# ----------------------------------------------------------------------------- inventories

HOSTS = """\
all:
  vars:
    monitoring_tls: false  # plain HTTP, declared: these tests are not about TLS
  children:
    inference:
      hosts:
        gpu01: {ansible_host: 10.0.0.11}
        gpu02: {ansible_host: 10.0.0.12}
"""
MODELS = """\
hearth_models:
  - name: llama-8b
    version: "2024-07-23"
    engine: vllm
    format: safetensors
    catalog: llama-3.1-8b-instruct
    quantization: awq
    source:
      type: huggingface
      repo: org/llama
      revision: 0123456789abcdef0123456789abcdef01234567
    files:
      - {{path: model.safetensors, sha256: "{sha_a}", size: 5000000000}}
    max_model_len: 8192
    max_num_seqs: 16
    gpu_memory_share: 0.5
  - name: qwen-7b
    version: "1"
    engine: vllm
    format: safetensors
    catalog: qwen2.5-7b-instruct
    dtype: bf16
    source: {{type: url, url: "https://models.example/qwen"}}
    files:
      - {{path: model.safetensors, sha256: "{sha_b}"}}
    max_model_len: 16384
    max_num_seqs: 8
    gpu_memory_share: 0.45
""".format(sha_a="a" * 64, sha_b="b" * 64)


GPUS = "hearth_declared_gpus:\n  - {{index: 0, name: {name}, memory_mib: {memory}}}\n"


VLLM_IMAGE = f"inference_engine_vllm_image: registry.example/vllm/vllm-openai@sha256:{'a' * 64}\n"


def write_inventory(root: Path, models_yml: str = MODELS) -> Path:
    files = {
        "hosts.yml": HOSTS,
        "group_vars/inference/models.yml": models_yml,
        "group_vars/inference/engines.yml": VLLM_IMAGE,
        "host_vars/gpu01.yml": GPUS.format(name="NVIDIA H100 80GB HBM3", memory=81559),
        "host_vars/gpu02.yml": GPUS.format(name="NVIDIA L40S", memory=46068),
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root / "hosts.yml"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HEARTH_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_plan_inventory_reads_models_through_ansible(tmp_path: Path, home: Path) -> None:
    result = plan.plan_inventory(write_inventory(tmp_path / "inv"))
    assert [(p.host, p.model.name) for p in result.placements] == [
        ("gpu01", "llama-8b"),
        ("gpu01", "qwen-7b"),
        ("gpu02", "llama-8b"),
        ("gpu02", "qwen-7b"),
    ]
    assert result.placements[0].weights_basis == "files"
    assert result.refusals == [
        "model qwen-7b does not fit its share of host gpu02 GPU 0 (NVIDIA L40S): weights 14.2 GiB "
        "+ KV cache 7.0 GiB + overhead 1.4 GiB = 22.6 GiB per GPU, but share 0.45 (declared) "
        "gives 20.2 GiB; raise gpu_memory_share or lower max_model_len or max_num_seqs"
    ]
    only = plan.plan_inventory(tmp_path / "inv" / "hosts.yml", limit="gpu01")
    assert only.ok and {p.host for p in only.placements} == {"gpu01"}


def test_cached_gpu_facts_replace_declared_gpus(tmp_path: Path, home: Path) -> None:
    facts = gpu.parse_query_csv(
        (NVSMI / "h100-80gb-hbm3_driver-590.48.01_query-gpu-all-fields.csv").read_text()
    )
    inventory = write_inventory(tmp_path / "inv")
    # facts cached by an earlier run against ANOTHER inventory with a gpu02 must not count
    other = paths.facts_dir(tmp_path / "other" / "hosts.yml")
    other.mkdir(parents=True)
    (other / "gpu02").write_text(json.dumps({"hearth_gpus": facts["gpus"]}))
    assert not plan.plan_inventory(inventory).ok
    cache = paths.facts_dir(inventory)  # this inventory's own fact cache (hearth.runner's)
    cache.mkdir(parents=True)
    (cache / "gpu02").write_text(json.dumps({"hearth_gpus": facts["gpus"]}))
    result = plan.plan_inventory(inventory)
    assert result.ok  # gpu02 really has an H100, not the declared L40S
    assert [g.gpu.source for g in result.gpus] == ["inventory", "facts"]
    declared = plan.plan_inventory(tmp_path / "inv" / "hosts.yml", use_facts=False)
    assert not declared.ok


def test_plan_inventory_reports_declaration_problems_once_with_hosts(
    tmp_path: Path, home: Path
) -> None:
    broken = MODELS.replace("    max_num_seqs: 16\n", "").replace("instruct\n", "instruc\n", 1)
    with pytest.raises(models.ModelDeclarationError) as info:
        plan.plan_inventory(write_inventory(tmp_path / "inv", broken))
    assert info.value.problems == [
        "model 'llama-8b' (hearth_models[0]): catalog: no architecture 'llama-3.1-8b-instruc' in "
        "the model catalog; did you mean llama-3.1-8b-instruct? (known: gemma-2-9b-it, "
        "llama-3.1-70b-instruct, llama-3.1-8b-instruct, llama-3.2-1b-instruct, "
        "llama-3.2-3b-instruct, mistral-7b-instruct-v0.3, mixtral-8x7b-instruct-v0.1, "
        "qwen2.5-0.5b-instruct, qwen2.5-72b-instruct, qwen2.5-7b-instruct, smollm2-135m-instruct) "
        "(hosts: gpu01, gpu02)",
        "model 'llama-8b' (hearth_models[0]): max_num_seqs: required for vllm: how many requests "
        "run at once (each gets max_model_len of KV cache) (hosts: gpu01, gpu02)",
    ]


def test_the_inventory_check_knows_the_model_variables(tmp_path: Path) -> None:
    from hearth.inventory import validate_inventory

    path = write_inventory(tmp_path / "inv", MODELS.replace("engine: vllm\n", "engine: vlm\n", 1))
    problems = [str(p) for p in validate_inventory(path)]
    assert len(problems) == 1, problems
    assert "hearth_models[0].engine" in problems[0] and "expected one of" in problems[0]


def _hearth(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hearth", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def test_hearth_plan_command(tmp_path: Path, home: Path) -> None:
    env = {**os.environ, "HEARTH_HOME": str(home), "COLUMNS": "200"}
    inventory = write_inventory(tmp_path / "inv")
    run = _hearth("plan", "-i", str(inventory), env=env)
    assert run.returncode == 2, run.stderr
    assert "qwen-7b@1" in run.stdout and "refused" in run.stdout and "670→552" in run.stdout
    assert "model qwen-7b does not fit its share of host gpu02 GPU 0 (NVIDIA L40S)" in run.stderr
    ok = _hearth("plan", "-i", str(inventory), "--limit", "gpu01", "--json", env=env)
    assert ok.returncode == 0, ok.stderr
    data = json.loads(ok.stdout)
    assert data["ok"] is True and [m["model"] for m in data["models"]] == ["llama-8b", "qwen-7b"]
    assert data["gpus"][0]["total_share"] == 0.95
    typo = write_inventory(
        tmp_path / "typo",
        MODELS.replace(
            "gpu_memory_share: 0.5\n",
            "gpu_memory_share: 0.5\n    engine_args: {enable_prefix_cachin: true}\n",
        ),
    )
    bad = _hearth("plan", "-i", str(typo), env=env)
    assert bad.returncode == 2
    assert "--enable-prefix-cachin; did you mean --enable-prefix-caching?" in bad.stderr


# ------------------------------------------------------------------------------ the filter


def _filters() -> dict[str, Any]:
    filters: dict[str, Any] = plugin_module("filter", "hearth_vram").FilterModule().filters()
    return filters


def test_filter_plugin_gives_the_same_plan() -> None:
    import yaml

    f = _filters()
    declared = yaml.safe_load(MODELS)["hearth_models"]
    gpus = [{"index": 0, "name": "NVIDIA L40S", "memory_mib": 46068}]
    result = f["hearth_vram_plan"](declared, gpus, None, "gpu02")
    assert result["ok"] is False
    assert result["refusals"][0].startswith("model qwen-7b does not fit its share of host gpu02")
    same = plan.plan_from_vars("gpu02", {"hearth_models": declared, "hearth_declared_gpus": gpus})
    assert result == same.as_dict()
    assert f["hearth_vram_kv_cache_bytes"](declared[0]) == 16 * GIB
    assert f["hearth_vram_weights_bytes"](declared[0]) == 5000000000
    bad = dict(declared[0], engine="tgi")
    refused = f["hearth_vram_plan"]([bad], gpus, None, "gpu02")
    assert refused["ok"] is False
    assert refused["refusals"] == [
        "gpu02: model 'llama-8b' (hearth_models[0]): engine: expected one of vllm, triton, "
        "llamacpp, got 'tgi'"
    ]


def test_filter_renders_engine_commands_and_changes() -> None:
    from ansible.errors import AnsibleFilterError

    f = _filters()
    decl = {
        "name": "smollm2",
        "version": "1",
        "engine": "llamacpp",
        "format": "gguf",
        "catalog": "smollm2-135m-instruct",
        "quantization": "Q4_1",
        "source": {"type": "path", "path": "/srv/m"},
        "files": [{"path": "m.gguf", "sha256": "c" * 64}],
        "max_model_len": 1024,
        "max_num_seqs": 1,
        "gpus": [],
    }
    assert f["hearth_engine_command"](decl)[:4] == [
        "--model",
        "/models/smollm2/current/m.gguf",
        "--alias",
        "smollm2",
    ]
    with pytest.raises(AnsibleFilterError, match="has no option --thread"):
        f["hearth_engine_command"](dict(decl, engine_args={"thread": 2}))
    first = f["hearth_model_change"](decl)
    assert first["changes"] == ["weights", "engine_args"] and first["from_version"] is None
    line = json.dumps(first)
    previous = f["hearth_changelog_last"](line + "\n", "smollm2")
    assert f["hearth_model_change"](decl, previous, "1")["changes"] == []


# ------------------------------------------------------------------------ rollout: beside or drain


def test_vllm_reserving_most_of_the_gpu_rolls_out_drain_first() -> None:
    # vLLM takes 0.90 of the GPU by default: a second instance (the candidate) cannot fit
    how = plan.rollout_how("gpu01", [model()], [H100], "llama-8b")
    assert how.how == "drain", how
    assert "does not fit beside the live one" in how.why and "H100" in how.why


def test_a_small_model_with_room_for_two_starts_beside() -> None:
    small = model(gpu_memory_share=0.45)
    how = plan.rollout_how("gpu01", [small], [H100], "llama-8b")
    assert how == plan.RolloutHow(
        "beside", "llama-8b's new version fits beside the live one on gpu01's GPUs"
    )
    # the other models on the GPU count: beside a smaller one, the two instances do not fit
    other = model(name="qwen", gpu_memory_share=0.45, max_model_len=2048, max_num_seqs=4)
    crowded = plan.rollout_how("gpu01", [small, other], [H100], "llama-8b")
    assert crowded.how == "drain" and "add up to 1.35" in crowded.why, crowded


def test_cpu_models_start_beside_and_a_declared_strategy_wins() -> None:
    cpu = model(engine="llamacpp", format="gguf", catalog="smollm2-135m-instruct",
                quantization="Q4_1", dtype="auto", max_model_len=2048, gpus=[])  # fmt: skip
    assert plan.rollout_how("lab1", [cpu], [], "llama-8b").how == "beside"
    forced = plan.rollout_how("lab1", [cpu], [], "llama-8b", "drain")
    assert forced == plan.RolloutHow("drain", "inference_engine_rollout_strategy is drain")
    assert plan.rollout_how("gpu01", [model()], [H100], "llama-8b", "beside").how == "beside"


def test_rollout_how_refuses_unknown_strategies_and_models() -> None:
    with pytest.raises(plan.InvalidInputError, match="expected one of auto, beside, drain"):
        plan.rollout_how("gpu01", [model()], [H100], "llama-8b", "sideways")
    with pytest.raises(plan.InvalidInputError, match="'qwen' is not declared on host gpu01"):
        plan.rollout_how("gpu01", [model()], [H100], "qwen")


def test_filter_gives_the_same_rollout_decision() -> None:
    import yaml
    from ansible.errors import AnsibleFilterError

    f = _filters()
    declared = yaml.safe_load(MODELS)["hearth_models"]
    gpus = [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_mib": 81559}]
    name = declared[0]["name"]
    found = f["hearth_rollout_how"](declared, gpus, None, "gpu02", name)
    same = plan.rollout_how_from_vars(
        "gpu02", {"hearth_models": declared, "hearth_declared_gpus": gpus}, None, name
    )
    assert found == same.as_dict() and found["how"] in ("beside", "drain")
    with pytest.raises(AnsibleFilterError, match="expected one of auto, beside, drain"):
        f["hearth_rollout_how"](declared, gpus, None, "gpu02", name, "sideways")


ONE_VLLM = """\
hearth_models:
  - name: llama-8b
    version: "2"
    engine: vllm
    format: safetensors
    catalog: llama-3.1-8b-instruct
    dtype: bf16
    source: {{type: url, url: "https://models.example/llama"}}
    files:
      - {{path: model.safetensors, sha256: "{sha}"}}
    max_model_len: 8192
    max_num_seqs: 16
""".format(sha="a" * 64)


def test_a_rollout_that_drains_every_replica_is_refused_from_the_inventory(
    tmp_path: Path, home: Path
) -> None:
    from hearth.commands.models import downtime_problems
    from hearth.inventory import check_inventory

    path = write_inventory(tmp_path / "inv", ONE_VLLM)
    (tmp_path / "inv" / "host_vars" / "gpu02.yml").write_text(
        GPUS.format(name="NVIDIA H100 80GB HBM3", memory=81559)
    )
    inv = check_inventory(path)
    # vLLM reserves 0.90 of the GPU: each host rolls out drain-first, one at a time is fine
    assert downtime_problems(inv, "llama-8b", None, 1) == []
    both = downtime_problems(inv, "llama-8b", None, 2)
    assert len(both) == 1 and both[0].startswith(
        "model llama-8b: its rollout drains gpu01, gpu02 (batch gpu01, gpu02) and leaves it with "
        "no serving replica (gpu01: llama-8b's new version does not fit beside the live one"
    ), both
    assert downtime_problems(inv, "llama-8b", None, "100%") == both
    # hosts outside --limit keep serving
    assert downtime_problems(inv, "llama-8b", "gpu01", 2) == []
    # declared beside (both fit, says the operator): nothing is drained (another directory:
    # Ansible caches what it read of group_vars for the process)
    beside = write_inventory(tmp_path / "beside", ONE_VLLM)
    (tmp_path / "beside" / "group_vars" / "inference" / "rollout.yml").write_text(
        "inference_engine_rollout_strategy: beside\n"
    )
    assert downtime_problems(check_inventory(beside), "llama-8b", None, 2) == []


def test_models_rollout_needing_downtime_exits_2_before_any_host(
    tmp_path: Path, home: Path
) -> None:
    env = {**os.environ, "HEARTH_HOME": str(home), "COLUMNS": "200"}
    path = write_inventory(tmp_path / "inv", ONE_VLLM)
    (tmp_path / "inv" / "hosts.yml").write_text(HOSTS.replace("10.0.0.12", "192.0.2.12"))
    (tmp_path / "inv" / "host_vars" / "gpu02.yml").write_text(
        GPUS.format(name="NVIDIA H100 80GB HBM3", memory=81559)
    )
    for command in (["rollout", "llama-8b", "3"], ["rollback", "llama-8b"]):
        run = _hearth("models", *command, "-i", str(path), "--batch", "2", env=env)
        said = " ".join(run.stderr.split())
        assert run.returncode == 2, run.stdout + run.stderr
        assert f"hearth models {command[0]} refused, nothing was changed" in said, said
        assert "leaves it with no serving replica" in said and "--allow-downtime" in said
        assert "gpu01" in said and "unreachable" not in said.lower()
    bad = _hearth("models", "rollout", "llama-8b", "3", "-i", str(path), "--batch", "0", env=env)
    assert bad.returncode == 2 and "--batch '0'" in bad.stderr


def test_local_model_files_are_checked_on_the_control_node(tmp_path: Path) -> None:
    """model_store's preflight: the control node's path of every file copied from it (a path
    source, a bundle source under the bundle's root; a URL source is not the control node's),
    then Ansible's own `file` test rejects the ones that are there."""
    from ansible.plugins.test.files import TestModule

    is_file = TestModule().tests()["file"]
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "a.gguf").write_text("weights")
    (tmp_path / "bundle" / "models" / "b").mkdir(parents=True)
    models = [
        {"name": "a", "source": {"type": "path", "path": str(tmp_path / "m")},
         "files": [{"path": "a.gguf"}, {"path": "template.jinja"}]},
        {"name": "b", "source": {"type": "bundle", "path": "models/b"},
         "files": [{"path": "b.gguf"}]},
        {"name": "c", "source": {"type": "url", "url": "https://e.invalid/c.gguf"},
         "files": [{"path": "c.gguf"}]},
    ]  # fmt: skip
    found = _filters()["hearth_model_local_files"](models, str(tmp_path / "bundle"))
    assert found == [
        f"{tmp_path}/m/a.gguf",
        f"{tmp_path}/m/template.jinja",
        f"{tmp_path}/bundle/models/b/b.gguf",
    ]
    assert [p for p in found if not is_file(p)] == found[1:]
