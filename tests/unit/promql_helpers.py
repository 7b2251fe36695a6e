"""PromQL helpers of the monitoring tests: every expression of a dashboard, a Grafana expression as
plain PromQL (for ``promtool``), and the metric names an expression selects (checked against the
metrics the engines and exporters really serve)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any


def dashboard_exprs(board: Mapping[str, Any]) -> list[str]:
    """Every PromQL expression of a dashboard: panel targets (rows' panels too) and variables."""
    found: list[str] = []

    def walk(panels: Iterable[Mapping[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets") or []:
                if target.get("expr"):
                    found.append(str(target["expr"]))
            walk(panel.get("panels") or [])

    walk(board.get("panels") or [])
    for variable in (board.get("templating") or {}).get("list") or []:
        query = variable.get("query")
        text = query.get("query") if isinstance(query, Mapping) else query
        if variable.get("type") == "query" and isinstance(text, str):
            found.append(text)
    return found


_GRAFANA_VARS = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
}
_LABEL_VALUES = re.compile(r"^label_values\((?:(?P<selector>.+),\s*)?(?P<label>\w+)\)$")


def promql_for_check(expr: str) -> str:
    """A Grafana expression as plain PromQL: ``$__rate_interval`` and friends become durations,
    other ``$var`` become ``.*`` (they only ever stand in label regexes here), and a
    ``label_values(selector, label)`` variable query becomes its selector."""
    match = _LABEL_VALUES.match(expr.strip())
    if match:
        return match.group("selector") or "up"
    for name, value in _GRAFANA_VARS.items():
        expr = expr.replace(name, value)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
     "offset", "bool", "inf", "nan", "atan2", "start", "end"}
)  # fmt: skip
_CLAUSE = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE
)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (``{__name__=…}`` selectors aside)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _CLAUSE.sub(" ", text)
    names: set[str] = set()
    for match in re.finditer(r"(?<![\w:.])([A-Za-z_:][\w:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


# ------------------------------------------------------------------------- canary on demand
