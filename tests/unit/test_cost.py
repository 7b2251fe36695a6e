"""Cost and sizing arithmetic (hearth.cost) with hand-computed numbers, and the bad input that
`hearth plan --cost`, `hearth plan --size` and the inventory check refuse (exit 2, naming the
key)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_plan import write_inventory

from hearth import cost, plan
from hearth.schema import load_schema

COSTS = {
    "purchase_price": 36000,
    "amortisation_months": 36,
    "power_watts": 500,
    "price_per_kwh": 0.2,
    "monthly_ops": 100,
    "utilisation": 0.25,
}


def test_amortisation_power_and_ops_make_the_month() -> None:
    month = cost.monthly_cost(cost.parse_costs(COSTS))
    assert month.capital == 1000  # 36,000 / 36
    assert month.power == pytest.approx(73.0)  # 0.5 kW × 730 h × 0.20
    assert month.ops == 100
    assert month.total == pytest.approx(1173.0)
    rented = cost.parse_costs({"monthly_rent": 2000, "power_watts": 1000, "price_per_kwh": 0.1})
    assert cost.monthly_cost(rented).total == pytest.approx(2073.0)  # 2,000 + 1 kW × 730 h × 0.10
    assert rented.utilisation == 1.0 and rented.monthly_ops == 0


def test_cost_per_million_at_the_knee_and_at_the_utilisation() -> None:
    # 1,000 tok/s for a month of 730 h = 2,628,000 s → 2,628 M tokens
    assert cost.million_tokens_per_month(1000) == pytest.approx(2628.0)
    assert cost.cost_per_million(1173, 1000) == pytest.approx(1173 / 2628)  # 0.4463
    assert cost.cost_per_million(1173, 1000, 0.25) == pytest.approx(1173 / 657)  # 1.7854
    assert cost.cost_per_million(1173, 0) == float("inf")


def test_break_even_volume_and_the_utilisation_it_takes() -> None:
    gpt4o = cost.CloudPrice("gpt-4o", 4.40)
    even = cost.break_even(1173, gpt4o, 1000)
    assert even.million_tokens_per_month == pytest.approx(266.5909, abs=1e-4)  # 1,173 / 4.40
    assert even.utilisation == pytest.approx(266.5909 / 2628, abs=1e-6)  # 10.1 %
    cheap = cost.break_even(1173, cost.CloudPrice("yi-lightning", 0.14), 1000)
    assert cheap.million_tokens_per_month == pytest.approx(8378.571, abs=1e-3)
    assert cheap.utilisation is not None and cheap.utilisation > 1  # never, on this host
    assert cost.break_even(1173, gpt4o, None).utilisation is None


def test_the_default_cloud_prices_are_dated_and_sourced() -> None:
    prices = {p.name: p for p in cost.default_cloud_prices()}
    assert prices["gpt-4o"].usd_per_million == 4.40
    assert prices["o1-mini"].usd_per_million == 0.26
    assert prices["yi-lightning"].usd_per_million == 0.14
    assert all(p.date and p.source for p in prices.values())
    assert cost.parse_cloud_prices([]) == list(cost.default_cloud_prices())
    own = cost.parse_cloud_prices([{"name": "ours", "usd_per_million": 1.5}])
    assert own == [cost.CloudPrice("ours", 1.5)]


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"price_per_kwh": 0}, "hearth_costs.price_per_kwh = 0: expected a number greater than 0"),
        ({"purchase_price": -5}, "hearth_costs.purchase_price = -5: expected a number greater"),
        ({"power_watts": 0}, "hearth_costs.power_watts = 0: expected a number greater than 0"),
        ({"amortisation_months": 0}, "hearth_costs.amortisation_months = 0: expected a number"),
        ({"utilisation": 0}, "hearth_costs.utilisation = 0: expected a share of the month"),
        ({"utilisation": 30}, "hearth_costs.utilisation = 30: expected a share of the month"),
        ({"monthly_ops": -1}, "hearth_costs.monthly_ops = -1: expected 0 or more"),
        ({"monthly_rent": 100}, "both purchase_price and monthly_rent"),
        ({"amortisation_months": None}, "hearth_costs.amortisation_months = None: expected"),
        ({"power_wats": 5}, "hearth_costs.power_wats: unknown key"),
    ],
)
def test_bad_costs_are_refused_naming_the_key(change: dict[str, object], said: str) -> None:
    with pytest.raises(cost.CostInputError) as info:
        cost.parse_costs({**COSTS, **change})
    assert said in info.value.message
    assert info.value.exit_code == 2


def test_bad_cloud_prices_are_refused() -> None:
    with pytest.raises(cost.CostInputError, match=r"hearth_cloud_prices\[0\].usd_per_million"):
        cost.parse_cloud_prices([{"name": "free", "usd_per_million": 0}])


def test_slo_from_the_inventory_or_the_command_line_and_its_units() -> None:
    assert cost.parse_slo(None) == cost.Slo(2.0, 100.0)
    assert cost.parse_slo({"ttft_p95_s": 1.5}) == cost.Slo(1.5, 100.0)
    assert cost.parse_slo("ttft_p95_s=3, itl_p95_ms=50", "--slo") == cost.Slo(3.0, 50.0)
    wrong = {
        "ttft_p95_s=2000": "ttft_p95_s = 2000: expected seconds between 0 and 600; is it in the "
        "wrong unit?",
        "itl_p95_ms=0.1": "itl_p95_ms = 0.1: expected milliseconds between 1 and 60000",
        "ttft_p95_ms=2000": "--slo.ttft_p95_ms: unknown key (the time to first token is "
        "ttft_p95_s, in seconds)",
        "ttft_p95_s=2s": "--slo.ttft_p95_s = '2s': expected a number of seconds",
        "ttft_p95_s=0": "ttft_p95_s = 0: expected seconds between 0 and 600",
    }
    for text, said in wrong.items():
        with pytest.raises(cost.CostInputError) as info:
            cost.parse_slo(text, "--slo")
        assert said in info.value.message, info.value.message


def test_the_inventory_check_refuses_the_same_keys() -> None:
    schema = load_schema()
    bad = {
        "hearth_costs": {**COSTS, "price_per_kwh": 0, "utilisation": 1.5},
        "hearth_slo": {"ttft_p95_ms": 2000, "itl_p95_ms": 0.5},
        "hearth_cloud_prices": [{"name": "x", "usd_per_million": -1}],
    }
    problems = {p.key: p.expected for p in schema.validate_vars(bad, None)}
    assert problems["hearth_costs.price_per_kwh"] == "expected a number greater than 0"
    assert problems["hearth_costs.utilisation"] == "expected a number greater than 0 and at most 1"
    assert "did you mean ttft_p95_s?" in problems["hearth_slo.ttft_p95_ms"]
    assert problems["hearth_slo.itl_p95_ms"] == "expected a number from 1 to 60000"
    assert problems["hearth_cloud_prices[0].usd_per_million"] == "expected a number greater than 0"
    assert not schema.validate_vars({"hearth_costs": COSTS, "hearth_slo": {"ttft_p95_s": 2}}, None)


# ------------------------------------------------------------------------------------ roofline


def test_roofline_capacity_by_hand() -> None:
    # 1 GB of weights, 100 kB of KV per token, 1,000 tokens of context, 100 GB/s, 100 ms a step:
    # the step has 0.1 s × 100 GB/s = 10 GB to read: 1 GB of weights + 90 sequences × 100 MB
    batch, rate = cost.roofline_capacity(1e9, 1e5, 1000, 100, 100, 256)
    assert batch == 90 and rate == pytest.approx(900.0)  # 90 tokens every 0.1 s
    batch, rate = cost.roofline_capacity(1e9, 1e5, 1000, 100, 100, 64)  # max_num_seqs 64
    assert batch == 64 and rate == pytest.approx(64 / 0.074)  # (1 + 6.4) GB / 100 GB/s
    assert cost.roofline_capacity(2e10, 1e5, 1000, 100, 100, 64) == (0, 0.0)  # 0.2 s a step


def test_the_gpu_catalog_agrees_with_the_planner() -> None:
    gpus, server = cost.gpu_catalog()
    assert server.max_gpus == 8 and len(gpus) >= 8
    for gpu in gpus:
        assert plan.gpu_bandwidth_gbs(gpu.name) == gpu.bandwidth_gbs, gpu.name
        assert gpu.price_usd > 0 and gpu.power_watts > 0 and gpu.memory_mib > 10000


# -------------------------------------------------------------------------------------- sizing

DEPARTMENT = cost.Demand(users=50, tokens_per_user_day=2000)  # 100,000 tokens a day over 8 h


def _one(model: str, quantization: str, gpu_name: str, tp: int = 1) -> cost.SizingOption:
    gpus, server = cost.gpu_catalog()
    gpu = next(g for g in gpus if g.name == gpu_name)
    return cost.size_one(model, quantization, DEPARTMENT, cost.DEFAULT_SLO, gpu, tp, 1, server)


def test_demand_by_hand() -> None:
    assert DEPARTMENT.tokens_per_day == 100_000
    assert DEPARTMENT.peak_tokens_per_s == pytest.approx(100_000 / 28_800)  # 3.47 tok/s
    assert DEPARTMENT.million_tokens_per_month == pytest.approx(0.1 * 365 / 12)  # 3.04 M


@pytest.mark.parametrize(
    ("quantization", "fits", "refused", "weights_gib"),
    [
        # int4: 8B on one L4; 70B (≈ 37 GB) does not fit one L4's 22.5 GiB
        ("int4", ("llama-3.1-8b-instruct", "NVIDIA L4"),
         ("llama-3.1-70b-instruct", "NVIDIA L4"), 5.33),
        # int8: 8B on one L4; 70B (≈ 72 GB) does not fit one L40S's 45 GiB
        ("int8", ("llama-3.1-8b-instruct", "NVIDIA L4"),
         ("llama-3.1-70b-instruct", "NVIDIA L40S"), 8.45),
        # fp16: 8B (16.06 GB) on one L4; 70B (141 GB) does not fit one H200's 140 GiB × 0.9
        ("fp16", ("llama-3.1-8b-instruct", "NVIDIA L4"),
         ("llama-3.1-70b-instruct", "NVIDIA H200"), 14.96),
    ],
)  # fmt: skip
def test_sizing_per_quantization_fits_and_does_not(
    quantization: str, fits: tuple[str, str], refused: tuple[str, str], weights_gib: float
) -> None:
    ok = _one(fits[0], quantization, fits[1])
    assert ok.fits, ok.reason
    # the need holds the weights (hand: int4 = (8.03e9 − 1.05e9 embedding) × 4.156 / 8 + 1.05e9
    # × 2 bytes = 5.33 GiB; int8 = 6.98e9 + 2.10e9 = 8.45 GiB; fp16 = 8.03e9 × 2 = 14.96 GiB)
    assert ok.need_per_gpu_gib > weights_gib
    assert ok.need_per_gpu_gib < weights_gib + 2.5  # + overhead and the KV cache of a few users
    assert ok.purchase_usd == 2500 + 8000 and ok.usd_per_million_at_demand > 0
    no = _one(refused[0], quantization, refused[1])
    assert not no.fits and "GiB per GPU" in no.reason, no.reason


def test_size_lists_the_cheapest_first_and_says_what_does_not_fit() -> None:
    fitting, _ = cost.size("llama-3.1-70b-instruct", "int4", DEPARTMENT, gpus=["L4", "H100"])
    assert fitting and [o.purchase_usd for o in fitting] == sorted(o.purchase_usd for o in fitting)
    assert all(o.fits and o.gpus >= 2 for o in fitting if o.gpu == "NVIDIA L4")
    assert {o.gpu for o in fitting} >= {"NVIDIA L4", "NVIDIA H100 80GB HBM3"}
    nothing, why = cost.size("llama-3.1-70b-instruct", "fp16", DEPARTMENT, gpus=["L4"])
    assert len(nothing) == 1 and nothing[0].gpus == 8  # 141 GB over 8 L4s (17.6 GB each)
    with pytest.raises(cost.CostInputError, match="--model 'gpt-4': not in the model catalog"):
        cost.size("gpt-4", "int4", DEPARTMENT)
    with pytest.raises(cost.CostInputError, match="--gpu B300"):
        cost.size("llama-3.1-8b-instruct", "int4", DEPARTMENT, gpus=["B300"])
    assert why == []
    campus = cost.Demand(users=10_000, tokens_per_user_day=100_000)  # 34,722 tok/s at peak
    none, refused = cost.size("llama-3.1-70b-instruct", "fp16", campus, gpus=["L4"])
    assert none == [] and [o.gpu for o in refused] == ["NVIDIA L4"] and refused[0].reason


# ------------------------------------------------------------------------------------ the CLI


def _hearth(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HEARTH_HOME": str(home), "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "hearth", *args], capture_output=True, text=True, env=env,
        check=False,
    )  # fmt: skip


def test_plan_cost_without_bench_results_is_a_roofline_estimate(tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path / "inv")
    (tmp_path / "inv" / "group_vars" / "all").mkdir(parents=True)
    (tmp_path / "inv" / "group_vars" / "all" / "costs.yml").write_text(
        yaml.safe_dump({"hearth_costs": COSTS})
    )
    done = _hearth("plan", "--cost", "-i", str(inventory), "--format", "json", home=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    hosts = {h["host"]: h for h in report["hosts"]}
    assert set(hosts) == {"gpu01", "gpu02"}
    h100 = hosts["gpu01"]
    assert h100["basis"] == "roofline estimate" and h100["estimate"] is True
    assert h100["monthly"]["total"] == pytest.approx(1173.0)
    assert h100["usd_per_million_at_knee"] == pytest.approx(
        1173 / (h100["tokens_per_s_at_knee"] * 2.628)
    )
    total = report["inventory"]
    assert total["monthly"]["total"] == pytest.approx(2346.0)
    gpt4o = next(b for b in total["break_even"] if b["cloud"] == "gpt-4o")
    assert gpt4o["million_tokens_per_month"] == pytest.approx(2346 / 4.40)
    table = _hearth("plan", "--cost", "-i", str(inventory), home=tmp_path)
    assert table.returncode == 0 and "roofline estimate" in table.stdout, table.stderr

    (tmp_path / "inv" / "group_vars" / "all" / "costs.yml").write_text(
        yaml.safe_dump({"hearth_costs": {**COSTS, "utilisation": 1.5}})
    )
    bad = _hearth("plan", "--cost", "-i", str(inventory), home=tmp_path)
    assert bad.returncode == 2
    assert "hearth_costs.utilisation = 1.5: expected a number greater than 0 and at most 1" in (
        " ".join(bad.stderr.split())
    )


def test_plan_size_command(tmp_path: Path) -> None:
    args = ["plan", "--size", "--model", "llama-3.1-8b-instruct", "--users", "50",
            "--tokens-per-user-day", "2000"]  # fmt: skip
    done = _hearth(*args, "--format", "json", home=tmp_path)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["estimate"] is True and data["options"][0]["estimate"] is True
    table = _hearth(*args, home=tmp_path)
    assert "ESTIMATE" in table.stdout
    bad = _hearth(*args, "--slo", "ttft_p95_s=2000", home=tmp_path)
    assert bad.returncode == 2 and "--slo.ttft_p95_s = 2000" in bad.stderr
    unknown = _hearth("plan", "--size", "--model", "gpt-4", "--users", "5",
                      "--tokens-per-user-day", "10", home=tmp_path)  # fmt: skip
    assert unknown.returncode == 2 and "--model 'gpt-4'" in unknown.stderr
