"""Audit reports: a terminal table, JSON, JUnit XML and a self-contained HTML page."""

from __future__ import annotations

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


def to_dict(result: AuditResult) -> dict[str, Any]:
    return {
        "hearth_version": __version__,
        "generated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "ok": result.ok,
        "summary": summary(result),
        "hosts": {
            host: {
                "roles": roles,
                "unreachable": result.unreachable.get(host),
                "checks": [
                    {k: getattr(r, k) for k in ("role", "check", "outcome", "message", "duration")}
                    for r in result.results
                    if r.host == host
                ],
            }
            for host, roles in result.roles.items()
        },
    }


def to_json(result: AuditResult) -> str:
    return json.dumps(to_dict(result), indent=2)


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


def to_html(result: AuditResult) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(paths.templates_dir() / "reports")),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
    )
    return env.get_template("audit.html.j2").render(report=to_dict(result))


def render(result: AuditResult, fmt: str) -> str:
    renderers = {"json": to_json, "junit": to_junit, "html": to_html}
    if fmt == "table":
        from io import StringIO

        buffer = StringIO()
        print_table(result, Console(file=buffer, width=160, color_system=None))
        return buffer.getvalue()
    if fmt not in renderers:
        raise InvalidInputError(f"--format {fmt}: expected one of table, json, junit, html")
    return renderers[fmt](result)
