"""``hearth audit``'s evidence: ``--sign`` / ``--save`` after a run, and the ``verify`` and
``diff`` subcommands (:mod:`hearth.evidence` does the work; this module parses and prints)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from hearth.errors import InvalidInputError
from hearth.report import make_console

__all__ = ["diff_command", "keep", "refuse_bad_options", "verify_command"]


def refuse_bad_options(sign: bool, save: bool, output: Path | None) -> None:
    """Options that cannot work together are refused before any host is contacted."""
    if sign and not save and output is None:
        raise InvalidInputError(
            "--sign: signs the JSON report, which needs a file: give --output REPORT.json or --save"
        )
    if sign and output is not None and output.suffix != ".json":
        raise InvalidInputError(
            f"--sign --output {output}: the signed report is JSON: name it *.json (its HTML "
            "page is written beside it)"
        )


def _write_set(path: Path, text: str, data: dict[str, Any], key: Path | None) -> list[Path]:
    """The JSON report, its signature (with a key) and its HTML page, side by side."""
    from hearth.evidence import signing

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    written = [path]
    if key is not None:
        signing.sign_report(path, key)
        written.append(signing.signature_path(path))
    written.append(signing.write_html(path, data))
    return written


def keep(
    result: Any,
    controls: Any,
    *,
    output: Path | None,
    sign: bool,
    key: Path | None,
    save: bool,
    retention_days: int | None,
) -> list[Path]:
    """After the run: the signed report set at ``output`` and/or in the audit store (pruned)."""
    from hearth import report
    from hearth.bundle.sign import default_key
    from hearth.evidence import store

    data = report.to_dict(result, controls)
    text = report.dumps(data)
    signing_key = (key or default_key()) if sign else None
    written: list[Path] = []
    if output is not None and sign:
        written += _write_set(output, text, data, signing_key)
    if save:
        days = store.retention_days(retention_days)
        written += _write_set(store.save_path(data), text, data, signing_key)
        for gone in store.prune(days):
            written.append(Path(f"{gone} (removed: older than {days} days)"))
    return written


@click.command("verify")
@click.argument("report_file", metavar="REPORT.json", type=click.Path(path_type=Path))
@click.option(
    "--signers",
    type=click.Path(dir_okay=False, path_type=Path),
    help="allowed_signers file trusted for audit reports [default: $HEARTH_BUNDLE_SIGNERS, else "
    "the one `hearth bundle keygen` wrote].",
)
@click.option(
    "--html",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The HTML page to compare with the report [default: REPORT.html beside it].",
)
def verify_command(report_file: Path, signers: Path | None, html: Path | None) -> None:
    """Check a report's signature, and that its HTML page is the rendering of it. An edited
    report is refused (exit 2), naming what changed."""
    from hearth.bundle.sign import default_signers
    from hearth.evidence.signing import verify_report

    done = verify_report(report_file, signers or default_signers(), html)
    make_console().print(
        f"[green]✓[/] {report_file}: signed by {done.principal} (key {done.key}); {done.html}"
    )


@click.command("diff")
@click.argument("reports", nargs=-1, metavar="[A.json B.json]", type=click.Path(path_type=Path))
@click.option("--since", metavar="AGE", help="Saved reports: the oldest within AGE (30d, 12h, 2w) "
              "against the newest.")  # fmt: skip
@click.option(
    "-i", "--inventory", type=click.Path(path_type=Path),
    help="With --since: that inventory's saved reports [default: the newest report's].",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the changes as JSON.")
def diff_command(
    reports: tuple[Path, ...], since: str | None, inventory: Path | None, as_json: bool
) -> None:
    """What changed between two audits, per host: checks that started or stopped failing,
    observed values that moved, hosts whose identity changed."""
    import datetime as dt

    from hearth.evidence import store
    from hearth.evidence.diff import diff

    if since is not None and reports:
        raise InvalidInputError("hearth audit diff: give two reports or --since, not both")
    if since is not None:
        age = store.parse_age(since)
        kept = store.saved()
        if inventory is not None:
            want = str(inventory.resolve())
            kept = [(p, d) for p, d in kept if d["header"]["inventory"].get("path") == want]
        elif kept:
            newest = kept[-1][1]["header"]["inventory"].get("path")
            kept = [(p, d) for p, d in kept if d["header"]["inventory"].get("path") == newest]
        limit = dt.datetime.now(dt.UTC) - age
        recent = [(p, d) for p, d in kept if store.started(d) >= limit]
        if len(recent) < 2:
            raise InvalidInputError(
                f"--since {since}: {len(recent)} saved report(s) of that inventory in "
                f"{store.audits_dir()} within {since}; a diff needs two (`hearth audit --save`)"
            )
        before, after = recent[0][1], recent[-1][1]
    elif len(reports) == 2:
        before, after = store.load(reports[0]), store.load(reports[1])
    else:
        raise InvalidInputError(
            "hearth audit diff: expected two reports (A.json B.json) or --since"
        )
    changes = diff(before, after)
    if as_json:
        click.echo(json.dumps(changes.as_dict(), indent=2))
    else:
        make_console().print("\n".join(changes.lines()), markup=False, highlight=False)
