"""hearth.bench without hosts: arguments, statistics by hand, the knee, the bounds of a level, the
results files and the plots. The sweep itself is proven on the lab
(tests/integration/test_bench.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hearth import bench, benchplot
from hearth.cost import Slo


def test_concurrency_and_duration_arguments() -> None:
    assert bench.parse_concurrency("4,1,2,2") == [1, 2, 4]
    for bad, said in {
        "0,1": "0 is outside 1–512",
        "1,x": "'x' is not a whole number",
        "1,-2": "'-2' is not a whole number",
        "1000": "1000 is outside",
        ",".join(str(i) for i in range(1, 14)): "at most 12 levels",
    }.items():
        with pytest.raises(bench.BenchInputError) as info:
            bench.parse_concurrency(bad)
        assert info.value.message.startswith("--concurrency") and said in info.value.message
    assert bench.parse_duration("30s") == 30 and bench.parse_duration("2m") == 120
    assert bench.parse_duration("45") == 45 and bench.parse_duration("1500ms") == 1.5
    for bad in ("0s", "11m", "ten", "-5s"):
        with pytest.raises(bench.BenchInputError, match="--duration"):
            bench.parse_duration(bad)


def _ok(ttft: float, gaps: list[float], tokens: int) -> bench.RequestResult:
    return bench.RequestResult(True, 200, ttft_s=ttft, itl_s=gaps, output_tokens=tokens)


def test_level_statistics_by_hand() -> None:
    results = [
        _ok(0.1, [0.010, 0.020], 10),
        _ok(0.2, [0.030], 20),
        _ok(0.3, [0.040, 0.050], 30),
        _ok(0.4, [], 40),
        bench.RequestResult(False, 503, "HTTP 503: busy"),
        bench.RequestResult(False, 503, "HTTP 503: busy"),
    ]
    level = bench.summarize(4, results, 2.0)
    assert (level.requests, level.errors, level.output_tokens) == (6, 2, 100)
    assert level.tokens_per_s == 50.0  # 100 tokens / 2 s
    assert level.requests_per_s == 2.0  # 4 answered / 2 s
    # nearest rank: p50 of 4 values is the 2nd, p95 the 4th; of 5 gaps the 3rd and the 5th
    assert (level.ttft_p50_s, level.ttft_p95_s) == (0.2, 0.4)
    assert level.itl_p50_ms == pytest.approx(30.0) and level.itl_p95_ms == pytest.approx(50.0)
    assert level.error_samples == ["HTTP 503: busy"]
    empty = bench.summarize(1, [bench.RequestResult(False, 0, "refused")], 1.0)
    assert empty.ttft_p95_s is None and empty.tokens_per_s == 0


def _level(c: int, ttft95: float, itl95: float, errors: int = 0) -> bench.LevelStats:
    return bench.LevelStats(c, 10, errors, 10.0, 100 * c, 10.0 * c, 1.0, ttft95 / 2, ttft95,
                            itl95 / 2, itl95)  # fmt: skip


def test_the_knee_is_the_highest_level_within_the_slo() -> None:
    slo = Slo(ttft_p95_s=2, itl_p95_ms=100)
    levels = [_level(1, 0.3, 20), _level(2, 0.5, 40), _level(4, 1.9, 99), _level(8, 2.5, 80)]
    assert bench.knee(levels, slo) is levels[2]
    assert not bench.meets(_level(16, 1.0, 150), slo)  # ITL over
    assert not bench.meets(_level(16, 1.0, 50, errors=1), slo)  # an error
    assert bench.knee([_level(1, 3.0, 20)], slo) is None


def test_a_level_is_bounded_by_its_requests() -> None:
    sent: list[int] = []

    def send(n: int) -> bench.RequestResult:
        sent.append(n)
        return _ok(0.01, [0.001], 3)

    level = bench.run_level(send, concurrency=3, duration=3600, max_requests=10)
    assert level.requests == 10 and sorted(sent) == list(range(10))
    assert level.output_tokens == 30 and level.errors == 0


def test_prompt_sets_number_every_request() -> None:
    body = bench.PROMPT_SETS["long"].body("m", 7, max_tokens=16)
    assert body["stream"] is True and body["max_tokens"] == 16 and body["model"] == "m"
    assert body["messages"][0]["content"].startswith("Request 7. Read this shift report")
    assert len(body["messages"][0]["content"]) > 4000
    assert bench.PROMPT_SETS["chat"].body("m", 1)["max_tokens"] == 128


def test_the_key_is_never_in_a_target_repr() -> None:
    target = bench.Target("fd1", "10.0.0.5", 8090, "ward-7", "secret-key-" + "x" * 40)
    assert "secret-key" not in repr(target) and target.url == "http://10.0.0.5:8090"
    assert bench.Target("fd1", "fd00::5", 8090, "k", "s").url == "http://[fd00::5]:8090"


def _document(model: str, date: str, inventory: Path) -> dict[str, Any]:
    return {
        "kind": bench.RESULTS_KIND, "date": date, "model": model, "version": "1",
        "engine": "vllm", "inventory_id": bench.inventory_id(inventory), "hosts": ["gpu01"],
        "gpus": {"gpu01": ["NVIDIA H100 80GB HBM3"]}, "slo": {"ttft_p95_s": 2, "itl_p95_ms": 100},
        "levels": [
            _level(1, 0.2, 20).as_dict(), _level(2, 0.4, 30).as_dict(),
            _level(4, 2.5, 60).as_dict(),
        ],
        "knee": _level(2, 0.4, 30).as_dict(),
    }  # fmt: skip


def test_results_files_and_the_latest_of_each_model(tmp_path: Path) -> None:
    inventory, other = tmp_path / "site" / "hosts.yml", tmp_path / "other" / "hosts.yml"
    out = tmp_path / "bench"
    old = bench.write_results(_document("llama", "2026-01-01T10:00:00Z", inventory), out)
    new = bench.write_results(_document("llama", "2026-02-01T10:00:00Z", inventory), out)
    bench.write_results(_document("qwen", "2026-01-15T10:00:00Z", inventory), out)
    bench.write_results(_document("llama", "2026-03-01T10:00:00Z", other), out)
    (out / "notes.json").write_text("{}")
    assert old.name == "20260101T100000Z-llama.json"
    latest = bench.latest_results(inventory, out)
    assert set(latest) == {"llama", "qwen"} and latest["llama"]["_path"] == str(new)
    assert json.loads(new.read_text())["knee"]["concurrency"] == 2


def test_inventory_hash_follows_the_content(tmp_path: Path) -> None:
    (tmp_path / "group_vars" / "all").mkdir(parents=True)
    (tmp_path / "hosts.yml").write_text("all:\n  hosts:\n    a: {}\n")
    (tmp_path / "group_vars" / "all" / "x.yml").write_text("hearth_site: one\n")
    first = bench.inventory_sha256(tmp_path / "hosts.yml")
    (tmp_path / "group_vars" / "all" / "x.yml").write_text("hearth_site: two\n")
    assert bench.inventory_sha256(tmp_path / "hosts.yml") != first and len(first) == 64


def test_html_plot_is_self_contained_svg(tmp_path: Path) -> None:
    doc = _document("llama", "2026-02-01T10:00:00Z", tmp_path / "hosts.yml")
    page = benchplot.write_plot(tmp_path / "plot.html", [doc]).read_text()
    assert page.startswith("<!doctype html>") and page.count("<svg") == 1
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org", "")
    assert "knee 2" in page and "SLO ttft_p95_s 2" in page and "<polyline" in page


def test_png_plot_is_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    doc = _document("llama", "2026-02-01T10:00:00Z", tmp_path / "hosts.yml")
    data = benchplot.write_plot(tmp_path / "plot.png", [doc, doc]).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    with pytest.raises(Exception, match=r"expected a \.png or \.html"):
        benchplot.write_plot(tmp_path / "plot.jpg", [doc])
