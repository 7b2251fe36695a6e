"""Plots of ``hearth bench`` results: throughput and latency against concurrency.

Two panels per model: aggregate output tokens/s (left axis) and p95 TTFT (right axis) against
concurrency, with the SLO's TTFT limit and the knee marked.

- ``.html``: one self-contained page with inline SVG (no script, no network), written here
  without any plotting library.
- ``.png``: drawn with matplotlib (the optional ``plot`` extra: ``pip install 'hearth[plot]'``);
  without it, the error says so and points at ``.html``.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hearth.errors import EnvironmentProblem, InvalidInputError

__all__ = ["render_html", "svg_for", "write_plot"]

_W, _H = 640, 320
_PAD_L, _PAD_R, _PAD_T, _PAD_B = 64, 64, 40, 48
_TOKENS_COLOUR = "#1f77b4"
_TTFT_COLOUR = "#d62728"


def _levels(document: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [level for level in document.get("levels", []) if level.get("requests")]


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    import math

    exp = 10.0 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exp:
            return float(step * exp)
    return float(10 * exp)


def svg_for(document: Mapping[str, Any]) -> str:
    """One model's sweep as an SVG chart (tokens/s and p95 TTFT against concurrency)."""
    levels = _levels(document)
    xs = [float(level["concurrency"]) for level in levels]
    tokens = [float(level["tokens_per_s"]) for level in levels]
    ttft = [float(level["ttft_p95_s"] or 0) for level in levels]
    limit = float(document.get("slo", {}).get("ttft_p95_s") or 0)
    x_max = max(xs, default=1.0)
    t_max = _nice_max(max(tokens, default=1.0))
    l_max = _nice_max(max([*ttft, limit], default=1.0))
    plot_w, plot_h = _W - _PAD_L - _PAD_R, _H - _PAD_T - _PAD_B

    def px(x: float) -> float:
        return _PAD_L + (x / x_max) * plot_w if x_max else _PAD_L

    def py(y: float, top: float) -> float:
        return _PAD_T + plot_h - (y / top) * plot_h

    title = html.escape(f"{document.get('model')} {document.get('version', '')} "
                        f"({document.get('engine', '')}) — {document.get('date', '')}")  # fmt: skip
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
        f'viewBox="0 0 {_W} {_H}" font-family="sans-serif" font-size="11">',
        f'<text x="{_W / 2}" y="18" text-anchor="middle" font-size="13">{title}</text>',
        f'<rect x="{_PAD_L}" y="{_PAD_T}" width="{plot_w}" height="{plot_h}" fill="none" '
        'stroke="#999"/>',
    ]
    for i in range(5):
        frac = i / 4
        y = _PAD_T + plot_h - frac * plot_h
        parts.append(f'<line x1="{_PAD_L}" x2="{_PAD_L + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
                     'stroke="#eee"/>')  # fmt: skip
        parts.append(f'<text x="{_PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end" '
                     f'fill="{_TOKENS_COLOUR}">{t_max * frac:g}</text>')  # fmt: skip
        parts.append(f'<text x="{_PAD_L + plot_w + 6}" y="{y + 4:.1f}" '
                     f'fill="{_TTFT_COLOUR}">{l_max * frac:.2g}</text>')  # fmt: skip
    for x in xs:
        parts.append(f'<text x="{px(x):.1f}" y="{_PAD_T + plot_h + 16}" '
                     f'text-anchor="middle">{x:g}</text>')  # fmt: skip
    parts += [
        f'<text x="{_PAD_L + plot_w / 2}" y="{_H - 8}" text-anchor="middle">concurrent requests'
        "</text>",
        f'<text x="14" y="{_PAD_T + plot_h / 2}" fill="{_TOKENS_COLOUR}" '
        f'transform="rotate(-90 14 {_PAD_T + plot_h / 2})" text-anchor="middle">'
        "output tokens/s</text>",
        f'<text x="{_W - 10}" y="{_PAD_T + plot_h / 2}" fill="{_TTFT_COLOUR}" '
        f'transform="rotate(90 {_W - 10} {_PAD_T + plot_h / 2})" text-anchor="middle">'
        "p95 time to first token (s)</text>",
    ]
    if limit:
        y = py(limit, l_max)
        parts.append(f'<line x1="{_PAD_L}" x2="{_PAD_L + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke="{_TTFT_COLOUR}" stroke-dasharray="4 3"/>')  # fmt: skip
        parts.append(f'<text x="{_PAD_L + 4}" y="{y - 4:.1f}" fill="{_TTFT_COLOUR}">'
                     f"SLO ttft_p95_s {limit:g}</text>")  # fmt: skip
    for values, top, colour in ((tokens, t_max, _TOKENS_COLOUR), (ttft, l_max, _TTFT_COLOUR)):
        points = " ".join(f"{px(x):.1f},{py(v, top):.1f}" for x, v in zip(xs, values, strict=True))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" '
                     'stroke-width="2"/>')  # fmt: skip
        for x, v in zip(xs, values, strict=True):
            parts.append(f'<circle cx="{px(x):.1f}" cy="{py(v, top):.1f}" r="3" fill="{colour}"/>')
    the_knee = document.get("knee")
    if the_knee:
        x = px(float(the_knee["concurrency"]))
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_PAD_T}" y2="{_PAD_T + plot_h}" '
                     'stroke="#2ca02c" stroke-dasharray="2 2"/>')  # fmt: skip
        parts.append(f'<text x="{x + 4:.1f}" y="{_PAD_T + 12}" fill="#2ca02c">knee '
                     f"{the_knee['concurrency']}</text>")  # fmt: skip
    parts.append("</svg>")
    return "\n".join(parts)


def render_html(documents: Sequence[Mapping[str, Any]]) -> str:
    """A self-contained page: one chart and one table per model."""
    body = []
    for doc in documents:
        rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in (
                level["concurrency"], f"{level['tokens_per_s']:.1f}",
                f"{level['requests_per_s']:.2f}", _fmt(level["ttft_p50_s"], "{:.3f}"),
                _fmt(level["ttft_p95_s"], "{:.3f}"), _fmt(level["itl_p50_ms"], "{:.1f}"),
                _fmt(level["itl_p95_ms"], "{:.1f}"), level["errors"],
            )) + "</tr>"
            for level in doc.get("levels", [])
        )  # fmt: skip
        body.append(
            f"<section>{svg_for(doc)}<table><tr><th>concurrency</th><th>tok/s</th><th>req/s</th>"
            "<th>TTFT p50 (s)</th><th>TTFT p95 (s)</th><th>ITL p50 (ms)</th><th>ITL p95 (ms)</th>"
            f"<th>errors</th></tr>{rows}</table></section>"
        )
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8"><title>hearth bench</title>'
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
        "margin:1em 0 3em}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}</style>"
        "</head><body><h1>hearth bench</h1>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _fmt(value: Any, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def write_plot(path: Path, documents: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``documents`` (results of one sweep each) as ``.html`` or ``.png``."""
    suffix = path.suffix.lower()
    if suffix not in (".html", ".htm", ".png"):
        raise InvalidInputError(f"--plot {path}: expected a .png or .html file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix in (".html", ".htm"):
        path.write_text(render_html(documents), encoding="utf-8")
        return path
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError as e:
        raise EnvironmentProblem(
            f"--plot {path}: a PNG needs matplotlib (pip install 'hearth[plot]'); "
            "or ask for an .html plot, which needs nothing"
        ) from e
    figure, axes = pyplot.subplots(
        len(documents), 1, figsize=(7, 3.6 * len(documents)), squeeze=False
    )
    for row, doc in zip(axes, documents, strict=True):
        left = row[0]
        levels = _levels(doc)
        xs = [level["concurrency"] for level in levels]
        left.plot(xs, [level["tokens_per_s"] for level in levels], "o-", color=_TOKENS_COLOUR)
        left.set_xlabel("concurrent requests")
        left.set_ylabel("output tokens/s", color=_TOKENS_COLOUR)
        left.set_xticks(xs)
        right = left.twinx()
        right.plot(xs, [level["ttft_p95_s"] or 0 for level in levels], "s-", color=_TTFT_COLOUR)
        right.set_ylabel("p95 TTFT (s)", color=_TTFT_COLOUR)
        limit = doc.get("slo", {}).get("ttft_p95_s")
        if limit:
            right.axhline(limit, color=_TTFT_COLOUR, linestyle="--", linewidth=1)
        if doc.get("knee"):
            left.axvline(doc["knee"]["concurrency"], color="#2ca02c", linestyle=":")
        left.set_title(f"{doc.get('model')} {doc.get('version', '')} ({doc.get('engine', '')})")
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)
    pyplot.close(figure)
    return path
