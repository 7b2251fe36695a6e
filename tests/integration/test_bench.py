"""`hearth bench` and `hearth plan --cost` for real, on the inference lab of test_inference.py.

The same converged setup (the ``site`` fixture: SmolLM2-135M on llama.cpp in lab1, the front door
with a vault-encrypted API key), no second one. Then:

1. a real sweep through the front door (1, 2, 4 concurrent, a few seconds each): a results file
   with the figures, the host, model, version, engine, GPU and inventory hash; the front door's own
   metrics counted every request under the inventory's key; the key is in no output or file;
2. the plot is a real PNG (signature, IHDR size), the .html one an SVG page;
3. `hearth plan --cost` reads the results: the cost per million tokens at the knee is the host's
   monthly cost over the measured knee throughput;
4. refusals before anything is sent: a target that is not the inventory's front door, a model it
   does not serve, a concurrency level of 0, costs with a zero price.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
import yaml
from labkit import hearth
from test_inference import API_KEY, HOST, Site, request
from test_inference import site as site  # the converged inference lab (module-scoped fixture)

pytestmark = pytest.mark.lab
SHARES = "inference"  # test_inference.py's converged site, converged once for both

COSTS = {
    "purchase_price": 36000,
    "amortisation_months": 36,
    "power_watts": 500,
    "price_per_kwh": 0.2,
    "monthly_ops": 100,
    "utilisation": 0.25,
}
# The lab's CPU (2 cores, shared with other labs: one measured run saw a 13 s first token at a
# load average of 21) is no GPU: a forgiving target, so that a knee exists for `plan --cost`.
SLO = {"ttft_p95_s": 60, "itl_p95_ms": 20000}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench-home")


@pytest.fixture(scope="module")
def costed(site: Site) -> Site:
    """The site's inventory with the lab host's costs and the latency target declared."""
    host_vars = site.directory / "host_vars"
    host_vars.mkdir(exist_ok=True)
    (host_vars / f"{HOST}.yml").write_text(yaml.safe_dump({"hearth_costs": COSTS}))
    (site.directory / "group_vars" / "all" / "slo.yml").write_text(
        yaml.safe_dump({"hearth_slo": SLO})
    )
    return site


def _hearth(home: Path, *args: str) -> Any:
    return hearth(*args, env={"HEARTH_HOME": str(home)})


def _metric(site: Site, name: str, *labels: str) -> float:
    _, text = request(f"{site.front_door}/metrics", key=None)
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in str(text).splitlines()
        if line.startswith(name + "{") and all(label in line for label in labels)
    )


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_sweep_through_the_front_door(costed: Site, home: Path, tmp_path: Path) -> None:
    site = costed
    counted = ('model="smollm2"', 'status="200"', 'key="lab-test"')
    before = _metric(site, "hearth_frontdoor_requests_total", *counted)
    plot = tmp_path / "bench.png"
    done = _hearth(
        home, "bench", "-i", str(site.inventory), "--vault-password-file",
        str(site.vault_password), "--model", "smollm2", "--concurrency", "1,2,4",
        "--duration", "4s", "--max-tokens", "24", "--request-timeout", "90", "--plot", str(plot),
    )  # fmt: skip
    print(done.stdout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    files = sorted((home / "bench").glob("*-smollm2.json"))
    assert len(files) == 1, files
    text = files[0].read_text()
    assert API_KEY not in text and API_KEY not in done.stdout + done.stderr
    result = json.loads(text)
    assert (result["model"], result["version"], result["engine"]) == ("smollm2", "v1", "llamacpp")
    assert result["hosts"] == [HOST] and result["gpus"] == {HOST: ["cpu"]}
    assert result["front_door"]["host"] == HOST and result["front_door"]["key_name"] == "lab-test"
    assert len(result["inventory_sha256"]) == 64 and result["slo"] == SLO
    levels = result["levels"]
    assert [lv["concurrency"] for lv in levels] == [1, 2, 4][: len(levels)] and levels
    for level in levels:
        assert level["requests"] >= level["concurrency"] and level["errors"] == 0, level
        assert level["output_tokens"] > 0 and level["tokens_per_s"] > 0
        assert 0 < level["ttft_p50_s"] <= level["ttft_p95_s"]
        assert level["itl_p50_ms"] is not None and level["itl_p50_ms"] <= level["itl_p95_ms"]
    if result["knee"] is not None:
        assert result["knee"]["concurrency"] in [lv["concurrency"] for lv in levels]
    sent = sum(lv["requests"] for lv in levels) + 1  # and the warm-up
    after = _metric(site, "hearth_frontdoor_requests_total", *counted)
    assert after - before >= sent, f"the front door counted {after - before}, bench sent {sent}"

    width, height = _png_size(plot)
    assert width >= 300 and height >= 200 and plot.stat().st_size > 5000
    for level in levels:
        print(
            f"bench c={level['concurrency']}: {level['tokens_per_s']:.1f} tok/s, "
            f"{level['requests_per_s']:.2f} req/s, TTFT p50/p95 {level['ttft_p50_s']:.3f}/"
            f"{level['ttft_p95_s']:.3f} s, ITL p50/p95 {level['itl_p50_ms']:.1f}/"
            f"{level['itl_p95_ms']:.1f} ms, {level['requests']} requests"
        )


def test_html_plot_and_plan_cost_read_the_results(costed: Site, home: Path) -> None:
    site = costed
    files = sorted((home / "bench").glob("*-smollm2.json"))
    assert files, "the sweep test wrote no results"
    result = json.loads(files[-1].read_text())
    done = _hearth(
        home, "plan", "--cost", "-i", str(site.inventory), "--vault-password-file",
        str(site.vault_password), "--format", "json",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout)
    (row,) = report["hosts"]
    assert row["host"] == HOST and row["models"] == ["smollm2", "upper"]
    monthly = 36000 / 36 + 500 / 1000 * 730 * 0.2 + 100  # 1000 + 73 + 100
    assert row["monthly"]["total"] == pytest.approx(monthly)
    if result["knee"] is None:  # read, and said so: no capacity within the SLO to cost
        assert row["tokens_per_s_at_knee"] is None and row["basis"] == "none"
        assert "smollm2: no level of the bench met the SLO" in row["notes"]
        return
    rate = result["knee"]["tokens_per_s"]
    assert row["basis"] == f"bench {result['date']}" and row["estimate"] is False
    assert row["tokens_per_s_at_knee"] == pytest.approx(rate)
    assert row["usd_per_million_at_knee"] == pytest.approx(monthly / (rate * 730 * 3600 / 1e6))
    assert row["usd_per_million_at_utilisation"] == pytest.approx(
        row["usd_per_million_at_knee"] / 0.25
    )
    gpt4o = next(b for b in row["break_even"] if b["cloud"] == "gpt-4o")
    assert gpt4o["million_tokens_per_month"] == pytest.approx(monthly / 4.40)
    table = _hearth(
        home, "plan", "--cost", "-i", str(site.inventory), "--vault-password-file",
        str(site.vault_password),
    )  # fmt: skip
    assert table.returncode == 0 and "(inventory)" in table.stdout, table.stdout + table.stderr
    print(table.stdout)


def test_refused_before_anything_is_sent(costed: Site, home: Path, tmp_path: Path) -> None:
    site = costed
    base = ["bench", "-i", str(site.inventory), "--vault-password-file", str(site.vault_password)]
    before = _metric(site, "hearth_frontdoor_requests_total", 'key="lab-test"')
    cases = {
        "--front-door": ("--front-door", "192.0.2.10", "not a front door of"),
        "--model": ("--model", "gpt-4", "--model gpt-4: not declared"),
        "--concurrency": ("--concurrency", "0,1", "--concurrency '0,1': 0 is outside"),
    }
    for option, value, said in cases.values():
        done = _hearth(home, *base, option, value, "--duration", "2s")
        assert done.returncode == 2, (option, done.stdout, done.stderr)
        assert said in " ".join(done.stderr.split()), done.stderr
    assert _metric(site, "hearth_frontdoor_requests_total", 'key="lab-test"') == before

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "hosts.yml").write_text(site.inventory.read_text())
    (bad / "group_vars").symlink_to(site.directory / "group_vars")
    (bad / "host_vars").mkdir()
    (bad / "host_vars" / f"{HOST}.yml").write_text(
        yaml.safe_dump({"hearth_costs": {**COSTS, "price_per_kwh": 0}})
    )
    done = _hearth(home, "plan", "--cost", "-i", str(bad / "hosts.yml"),
                   "--vault-password-file", str(site.vault_password))  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "hearth_costs.price_per_kwh" in " ".join(done.stderr.split()), done.stderr
