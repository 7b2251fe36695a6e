"""Everything Hearth refuses before any host is touched, in one place.

Used by ``hearth check``, ``hearth up``, ``hearth audit`` and ``hearth plan`` on the control node,
and by the ``hearth_inventory_check`` action plugin at the start of every playbook, so plain
``ansible-playbook`` refuses the same things:

1. the inventory itself (:func:`hearth.inventory.check_inventory`): files Ansible cannot parse
   or vault files it cannot decrypt (named, with their vault id), every variable against the
   roles' argument specs (file, line, key, value, what is expected), required variables, an
   inventory without hosts, hosts sharing one address (compared as addresses), hosts whose
   Hearth settings sit in groups no playbook uses;
2. the rules of :mod:`hearth.rules` on every host, with the defaults of the roles it gets:
   ports, the front door's keys, images pinned by digest, receivers, canary question sets,
   driver and CUDA pins and their compatibility with the declared GPUs (one function per rule,
   the same the roles' preflight tasks run);
3. the declared models: every engine argument is one the engine really has;
4. the VRAM plan: every declared model fits, no GPU is shared past 100 %.

Each step runs only when the one before it passed: a later check on a broken inventory would
only repeat the first error in other words.  Warnings (an unknown GPU model) never refuse: they
are returned for the CLI to print.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hearth import rules as rules_mod
from hearth.errors import InvalidInputError
from hearth.inventory import Inventory, InventoryInvalid, check_inventory
from hearth.yamlsrc import Problem, line_of, load_yaml

__all__ = ["Checked", "check", "host_views", "preflight", "problems"]

_YAML = (".yml", ".yaml", ".json")


@dataclass
class Checked:
    """An inventory that passed, with the warnings to show the operator."""

    inventory: Inventory
    warnings: list[str] = field(default_factory=list)


def _first_key(path: str) -> str:
    for sep in (".", "["):
        path = path.split(sep, 1)[0]
    return path


class _Locator:
    """Where a host's variable is set: the file and line the operator should edit."""

    def __init__(self, inventory: Inventory) -> None:
        self._inventory = inventory
        self._cache: dict[Path, Any] = {}

    def _data(self, file: Path) -> Any:
        if file not in self._cache:
            self._cache[file] = load_yaml(file).data if file.suffix in _YAML else None
        return self._cache[file]

    def _files(self, kind: str, name: str) -> list[Path]:
        from hearth.inventory import _vars_files

        directory = self._inventory.basedir / kind
        return _vars_files(directory, name) if directory.is_dir() else []

    def _inline(self, host: str, groups: list[str], key: str) -> tuple[Path, int | None] | None:
        path = self._inventory.path
        files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
        for file in files:
            found = _find_inline(self._data(file), host, set(groups), key)
            if found is not None:
                return file, found
        return None

    def locate(self, host: str, key: str) -> tuple[Path | None, int | None]:
        name = _first_key(key)
        found_host = self._inventory.ansible_inventory().get_host(host)
        groups = [g.name for g in found_host.get_groups()] if found_host else []
        order = [("host_vars", host)] + [("group_vars", g) for g in reversed(groups)]
        for kind, entity in order:
            for file in self._files(kind, entity):
                data = self._data(file)
                if isinstance(data, Mapping) and name in data:
                    return file, line_of(data, name)
        inline = self._inline(host, groups, name)
        if inline is not None:
            return inline
        return None, None


def _find_inline(data: Any, host: str, groups: set[str], key: str) -> int | None:
    """The line of ``key`` in the inventory file's ``hosts: {host: {…}}`` or a group's ``vars:``."""
    if not isinstance(data, Mapping):
        return None
    for group, body in data.items():
        if not isinstance(body, Mapping):
            continue
        hosts = body.get("hosts")
        entry = hosts.get(host) if isinstance(hosts, Mapping) else None
        if isinstance(entry, Mapping) and key in entry:
            return line_of(entry, key)
        variables = body.get("vars")
        if group in groups and isinstance(variables, Mapping) and key in variables:
            return line_of(variables, key)
        children = body.get("children")
        if isinstance(children, Mapping):
            found = _find_inline(children, host, groups, key)
            if found is not None:
                return found
    return None


def host_views(
    inventory: Inventory, assignments: Mapping[str, list[str]]
) -> dict[str, rules_mod.HostView]:
    """A :class:`hearth.rules.HostView` of every host: its variables over its roles' defaults."""
    views: dict[str, rules_mod.HostView] = {}

    def peer(name: str) -> rules_mod.HostView:
        return views[name]

    def raw_of(host: str) -> Callable[[str], Any]:
        return lambda name: inventory.raw(host, name)

    groups = {**inventory.groups, "all": list(inventory.hosts)}
    for host in inventory.hosts:
        roles = assignments.get(host, [])
        views[host] = rules_mod.HostView(
            name=host,
            vars=inventory.resolved_vars(host, roles),
            roles=frozenset(roles),
            groups=groups,
            raw=raw_of(host),
            peer=peer,
        )
    return views


def _rule_problems(inventory: Inventory) -> tuple[list[Problem], list[str]]:
    from hearth import layers

    assignments = layers.roles_for_hosts(inventory)
    locator = _Locator(inventory)
    problems: list[Problem] = []
    warnings: list[str] = []
    for host, view in host_views(inventory, assignments).items():
        for finding in rules_mod.run_rules(view):
            if finding.level == "warning":
                warnings.append(f"host {host}: {finding.expected}")
                continue
            file, line = locator.locate(host, finding.key)
            for other in finding.related:
                if file is None:
                    file, line = locator.locate(host, other)
            expected = finding.expected
            if file is None and finding.key:
                expected += " (the role's default: set it in the inventory)"
            problems.append(Problem(file, line, finding.key, finding.value, expected, host))
    seen: set[str] = set()
    unique = []
    for problem in sorted(problems, key=Problem.sort_key):
        if str(problem) not in seen:
            seen.add(str(problem))
            unique.append(problem)
    return unique, sorted(set(warnings))


def check(inventory: Path | str, vault_password_file: Path | None = None) -> Checked:
    """Steps 1 and 2: the inventory and every rule; raise :class:`InventoryInvalid` listing all."""
    inv = check_inventory(inventory, vault_password_file=vault_password_file)
    problems, warnings = _rule_problems(inv)
    if problems:
        raise InventoryInvalid(problems, inventory)
    from hearth.evidence import controls

    controls.load(inventory)  # audit_controls.yml names only checks Hearth has
    return Checked(inv, warnings)


def preflight(
    inventory: Path | str,
    vault_password_file: Path | None = None,
    *,
    use_facts: bool = True,
    warn: Callable[[str], None] | None = None,
) -> Inventory:
    """Load and check ``inventory``; raise an :class:`InvalidInputError` (exit 2) on any refusal.

    ``warn`` receives each warning (an unknown GPU model …) before the later steps run.
    """
    from hearth import engines, plan

    checked = check(inventory, vault_password_file)
    for warning in checked.warnings:
        if warn is not None:
            warn(warning)
    inv = checked.inventory
    placements = plan.plan_loaded(inv, use_facts=use_facts)
    engines.check_engine_args([p.model for p in placements.placements])
    placements.raise_for_refusals()
    return inv


def problems(inventory: Path | str, vault_password_file: Path | None = None) -> list[str]:
    """The same checks as :func:`preflight`, as lines of text (empty when all pass)."""
    try:
        preflight(inventory, vault_password_file)
    except InventoryInvalid as exc:
        return [str(p) for p in exc.problems]
    except InvalidInputError as exc:
        return [exc.message]
    return []
