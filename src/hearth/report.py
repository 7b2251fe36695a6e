"""Audit reports: a terminal table, JSON, JUnit XML and a self-contained HTML page."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import xml.etree.ElementTree as ET
from collections import Counter
from typing import IO, Any

import jinja2
from rich.console import Console
from rich.table import Table

from hearth import __version__, paths
from hearth.audit import AuditResult
from hearth.errors import InvalidInputError

NON_TTY_WIDTH = 200


def make_console(*, stderr: bool = False, file: IO[str] | None = None) -> Console:
    """A console for the CLI. On a terminal, the terminal's width; elsewhere (a pipe, a CI log)
    ``$COLUMNS`` or 200 columns, not Rich's 80, so tables keep every column readable."""
    console = Console(stderr=stderr, file=file, highlight=False)
    if console.is_terminal:
        return console
    raw = os.environ.get("COLUMNS", "")
    width = int(raw) if raw.isdigit() and int(raw) > 0 else NON_TTY_WIDTH
    return Console(stderr=stderr, file=file, highlight=False, width=width)


STYLE = {"passed": "green", "failed": "bold red", "error": "bold red", "skipped": "dim"}


def summary(result: AuditResult) -> dict[str, int]:
    counts = Counter(r.outcome for r in result.results)
    return {
        "hosts": len(result.roles),
        "checks": len(result.results),
        "passed": counts["passed"],
        "failed": counts["failed"],
        "error": counts["error"],
        "skipped": counts["skipped"],
        "unreachable": len(result.unreachable),
    }


def print_table(result: AuditResult, console: Console) -> None:
    table = Table(title="Audit", title_justify="left")
    for column in ("host", "role", "check", "result"):
        table.add_column(column, no_wrap=True)  # names are never cut; the detail folds
    table.add_column("detail", overflow="fold", ratio=1)
    for r in result.results:
        table.add_row(
            r.host, r.role, r.check, f"[{STYLE.get(r.outcome, '')}]{r.outcome}[/]", r.message
        )
    for host, why in result.unreachable.items():
        table.add_row(host, "-", "-", "[bold magenta]unreachable[/]", why)
    console.print(table)
    s = summary(result)
    verdict = "[green]PASSED[/]" if result.ok else "[bold red]FAILED[/]"
    console.print(
        f"{verdict}: {s['hosts']} host(s), {s['checks']} check(s): {s['passed']} passed, "
        f"{s['failed']} failed, {s['error']} errors, {s['skipped']} skipped, "
        f"{s['unreachable']} unreachable"
    )


def _check_dict(r: Any) -> dict[str, Any]:
    return {
        "role": r.role,
        "check": r.check,
        "description": r.description or _sentence(r.check),
        "outcome": r.outcome,
        "message": r.message,
        "duration": r.duration,
        "observed": list(r.observed),
    }


def _sentence(check: str) -> str:
    name = check.removeprefix("test_").replace("_", " ").strip()
    return name[:1].upper() + name[1:] + "."


def to_dict(result: AuditResult, controls: Any = None) -> dict[str, Any]:
    """The report as data: the header (who, where, when, against what; hosts' identities), the
    verdict, and per host every check with its description, outcome and observed values. With
    ``controls`` (:class:`hearth.evidence.controls.Controls`), the checks grouped by the site's
    controls too."""
    from hearth.evidence import REPORT_FORMAT

    header = dict(result.header)
    generated = header.get("finished") or dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    identities = header.get("hosts") or {}
    data: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "hearth_version": __version__,
        "generated": generated,
        "header": header,
        "ok": result.ok,
        "summary": summary(result),
        "hosts": {
            host: {
                "roles": roles,
                "identity": identities.get(host),
                "unreachable": result.unreachable.get(host),
                "checks": [_check_dict(r) for r in result.results if r.host == host],
            }
            for host, roles in result.roles.items()
        },
    }
    if controls is not None:
        data["controls"] = controls.group(data)
    return data


def to_json(result: AuditResult, controls: Any = None) -> str:
    return dumps(to_dict(result, controls))


def dumps(data: dict[str, Any]) -> str:
    """The JSON text of a report, as it is written, signed and verified."""
    return json.dumps(data, indent=2, sort_keys=False) + "\n"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def to_junit(result: AuditResult) -> str:
    suites = ET.Element("testsuites", name="hearth audit")
    for host, _roles in result.roles.items():
        checks = [r for r in result.results if r.host == host]
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=host,
            tests=str(len(checks) + (1 if host in result.unreachable else 0)),
            failures=str(sum(r.outcome == "failed" for r in checks)),
            errors=str(sum(r.outcome == "error" for r in checks) + (host in result.unreachable)),
            skipped=str(sum(r.outcome == "skipped" for r in checks)),
            time=f"{sum(r.duration for r in checks):.3f}",
        )
        if host in result.unreachable:
            case = ET.SubElement(
                suite, "testcase", classname=f"{host}.connection", name="reachable"
            )
            ET.SubElement(case, "error", message=result.unreachable[host])
        for r in checks:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"{host}.{r.role}",
                name=r.check,
                time=f"{r.duration:.3f}",
            )
            props = ET.SubElement(case, "properties")
            ET.SubElement(props, "property", name="description",
                          value=r.description or _sentence(r.check))  # fmt: skip
            for item in r.observed:
                ET.SubElement(props, "property", name=f"observed: {item['name']}",
                              value=_text(item["value"]))  # fmt: skip
                if "declared" in item:
                    ET.SubElement(props, "property", name=f"declared: {item['name']}",
                                  value=_text(item["declared"]))  # fmt: skip
            if r.outcome in ("failed", "error"):
                ET.SubElement(
                    case, "failure" if r.outcome == "failed" else "error", message=r.message
                )
            elif r.outcome == "skipped":
                ET.SubElement(case, "skipped", message=r.message)
    ET.indent(suites)
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
    )


def html_from_dict(data: dict[str, Any], signature: dict[str, Any] | None = None) -> str:
    """The HTML page of a report (its JSON data) and its signature status: a pure function of
    the two, so ``hearth audit verify`` renders it again and compares."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(paths.templates_dir() / "reports")),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters["text"] = _text
    env.tests["differing"] = differs
    embedded = base64.b64encode(dumps(data).encode()).decode()  # the JSON, byte for byte
    return env.get_template("audit.html.j2").render(
        report=data, signature=signature, view=html_view(data), embedded=embedded
    )


def differs(item: dict[str, Any]) -> bool:
    """An observed value that is not the declared one (scalars only: a declared "hold" for a list
    of packages is a rule, not a value to compare)."""
    if item.get("declared") is None or isinstance(item["value"], dict | list):
        return False
    return _text(item["value"]) != _text(item["declared"])


def html_view(data: dict[str, Any]) -> dict[str, Any]:
    """What the page shows beyond the data: per host its counts and its checks, failures first."""
    order = {"failed": 0, "error": 0, "skipped": 2, "passed": 3}
    hosts: dict[str, dict[str, Any]] = {}
    for host, entry in data["hosts"].items():
        checks = sorted(entry["checks"], key=lambda c: order.get(c["outcome"], 1))
        counts = Counter(c["outcome"] for c in checks)
        bad = counts["failed"] + counts["error"] + (1 if entry.get("unreachable") else 0)
        hosts[host] = {"checks": checks, "counts": dict(counts), "bad": bad}
    return {"hosts": dict(sorted(hosts.items(), key=lambda kv: (-kv[1]["bad"], kv[0])))}


def to_html(result: AuditResult, controls: Any = None) -> str:
    return html_from_dict(to_dict(result, controls))


def render(result: AuditResult, fmt: str, controls: Any = None) -> str:
    if fmt == "json":
        return to_json(result, controls)
    if fmt == "html":
        return to_html(result, controls)
    renderers = {"junit": to_junit}
    if fmt == "table":
        from io import StringIO

        buffer = StringIO()
        print_table(result, Console(file=buffer, width=160, color_system=None))
        return buffer.getvalue()
    if fmt not in renderers:
        raise InvalidInputError(f"--format {fmt}: expected one of table, json, junit, html")
    return renderers[fmt](result)
