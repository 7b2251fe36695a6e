"""Load an Ansible inventory and validate Hearth's variables in it, without contacting any host.

Two passes, so that every problem is reported at once:

1. **Hearth reads the files** with a line-aware YAML loader (:mod:`hearth.yamlsrc`): the inventory
   file(s), ``group_vars/`` and ``host_vars/`` next to them (the files Ansible's
   ``host_group_vars`` plugin reads).  This catches what Ansible forgives or only warns about:
   YAML duplicate keys, unknown group keys (``varz:``), group_vars for groups that do not exist,
   invalid group names, and checks every Hearth variable against the roles' argument specs
   (:mod:`hearth.schema`), naming FILE:LINE.
2. **Ansible loads the inventory** (``InventoryManager`` + ``VariableManager``) to get the hosts,
   the groups and each host's merged variables — Hearth never re-implements precedence.  On those:
   required role variables (the roles a host gets come from the playbooks, see
   :mod:`hearth.layers`) and hosts sharing one address.

:func:`check_inventory` raises :class:`InventoryInvalid` (exit code 2) listing every problem.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hearth import layers
from hearth import paths as hearth_paths
from hearth.errors import InvalidInputError
from hearth.schema import Schema, is_valid_identifier, load_schema
from hearth.yamlsrc import (
    MISSING,
    Problem,
    VaultValue,
    display_path,
    iter_duplicates,
    line_of,
    load_yaml,
)

if TYPE_CHECKING:
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

__all__ = [
    "MISSING",
    "Inventory",
    "InventoryInvalid",
    "Problem",
    "check_inventory",
    "load_inventory",
    "validate_inventory",
]

YAML_EXTENSIONS = (".yml", ".yaml", ".json")
GROUP_KEYS = ("hosts", "vars", "children")
_SSH_CONNECTIONS = frozenset(
    {
        "ssh",
        "smart",
        "paramiko",
        "paramiko_ssh",
        "ansible.builtin.ssh",
        "ansible.builtin.paramiko_ssh",
    }
)
_MAX_DETAIL = 240
_HOST_NAME = re.compile(r"^[\w.\-:@]+$")
_FALLBACK_INTERNAL_VARS = frozenset(
    {
        "ansible_config_file",
        "ansible_facts",
        "ansible_playbook_python",
        "ansible_version",
        "group_names",
        "groups",
        "inventory_dir",
        "inventory_file",
        "inventory_hostname",
        "inventory_hostname_short",
        "omit",
        "playbook_dir",
    }
)


class InventoryInvalid(InvalidInputError):
    """The inventory has problems; ``problems`` lists every one of them."""

    def __init__(self, problems: Sequence[Problem], path: Path | str | None = None) -> None:
        self.problems = list(problems)
        self.path = Path(path) if path is not None else None
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        where = f"Inventory {display_path(self.path)}" if self.path else "The inventory"
        lines = [f"{where} has {count} {noun}:"]
        lines.extend(f"  {p}" for p in self.problems)
        check = f"hearth check -i {display_path(self.path)}" if self.path else "hearth check"
        lines.append(f"Fix them and run `{check}` again; nothing was changed on any host.")
        super().__init__("\n".join(lines))


def use_hearth_filters() -> None:
    """Hearth's filter plugins (``hearth_question_set``, ``hearth_engine_recipes`` …) for
    templating in this process, as the roles see them in a run (``hearth.runner`` names the same
    directory to ``ansible-playbook``). Without them, a role default that uses one resolves only
    when an ``ansible.cfg`` naming them happens to be in the working directory: ``hearth check``
    run anywhere else refused the canary's default questions."""
    from ansible.plugins.loader import filter_loader

    filter_loader.add_directory(str(hearth_paths.plugins_dir() / "filter"))  # once: it dedups


def _internal_vars() -> frozenset[str]:
    from ansible import constants as C

    found = getattr(C, "INTERNAL_STATIC_VARS", None)
    return frozenset(found) if found else _FALLBACK_INTERNAL_VARS


def _plain(value: Any) -> Any:
    """Ansible's tagged values as plain Python (dict, list, str, int, float, bool, None)."""
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    try:
        if isinstance(value, str):
            return str(value)
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            return float(value)
    except Exception:  # an undecryptable vault value stays what it is
        return value
    return value


def _warning_capture() -> AbstractContextManager[Any]:
    """Collect Ansible's warnings instead of printing them (ansible-core 2.19+)."""
    try:
        from ansible._internal._display_utils import (  # type: ignore[import-not-found,unused-ignore]
            DeferredWarningContext,
        )
    except ImportError:  # pragma: no cover - older ansible-core prints its warnings
        return nullcontext(None)
    return DeferredWarningContext(variables={})  # type: ignore[no-any-return]


def _warning_texts(context: Any) -> list[str]:
    if context is None:
        return []
    texts: list[str] = []
    for warning in context.get_warnings():
        event = getattr(warning, "event", None)
        parts: list[str] = []
        while event is not None:
            msg = getattr(event, "msg", None)
            if msg:
                parts.append(str(msg))
            chain = getattr(event, "chain", None)
            event = getattr(chain, "event", None)
        texts.append(" ".join(parts))
    return texts


def _vault_secrets(vault_password_file: Path | None) -> list[tuple[str, Any]]:
    """The vault secrets of this run: ``[("default", secret)]``, or ``[]`` without a password."""
    from ansible import constants as C

    password_file = vault_password_file or (
        Path(C.DEFAULT_VAULT_PASSWORD_FILE) if C.DEFAULT_VAULT_PASSWORD_FILE else None
    )
    if password_file is None:
        return []
    from ansible.errors import AnsibleError
    from ansible.parsing.dataloader import DataLoader
    from ansible.parsing.vault import get_file_vault_secret

    try:
        secret = get_file_vault_secret(
            filename=str(password_file), vault_id="default", loader=DataLoader()
        )
        secret.load()
    except AnsibleError as e:
        problem = Problem(password_file, None, "", MISSING, f"cannot read the vault password: {e}")
        raise InventoryInvalid([problem]) from e
    return [("default", secret)]


def _setup_vault(loader: DataLoader, vault_password_file: Path | None) -> None:
    secrets = _vault_secrets(vault_password_file)
    if not secrets:
        return
    loader.set_vault_secrets(secrets)
    # ansible-core 2.19 decrypts vaulted values lazily, through a process-wide context.
    try:
        from ansible.parsing.vault import VaultSecretsContext
    except ImportError:  # ansible-core < 2.19 decrypts eagerly
        return
    current = VaultSecretsContext.current(optional=True)
    if current is None:
        VaultSecretsContext.initialize(VaultSecretsContext(secrets=list(secrets)))
    else:
        current.secrets.extend(secrets)


def _considered_files(path: Path) -> list[Path]:
    """The files Ansible tries as inventory sources for ``path`` (a file, or a directory)."""
    if path.is_file():
        return [path]
    from ansible.inventory.manager import IGNORED

    found: list[Path] = []
    for entry in sorted(path.iterdir()):
        if IGNORED.search(os.fsencode(entry.name)):
            continue
        if entry.is_dir():
            found.extend(_considered_files(entry))
        elif entry.is_file():
            found.append(entry)
    return found


class Inventory:
    """An inventory loaded by Ansible: hosts, groups and each host's merged variables."""

    def __init__(
        self,
        path: Path,
        manager: InventoryManager,
        variable_manager: VariableManager,
        loader: DataLoader,
        roles_dir: Path | None = None,
    ) -> None:
        self.path = path
        self._manager = manager
        self._variables = variable_manager
        self._loader = loader
        self._roles_dir = roles_dir
        self.hosts: list[str] = [h.name for h in manager.get_hosts(ignore_restrictions=True)]
        self.groups: dict[str, list[str]] = {
            name: list(members) for name, members in manager.get_groups_dict().items()
        }
        self._all_vars: dict[str, dict[str, Any]] = {}
        self.warnings: list[str] = []
        """Warnings Ansible raised while loading (collected, not printed; ansible-core 2.19+)."""

    @property
    def basedir(self) -> Path:
        """Where ``group_vars/`` and ``host_vars/`` of this inventory live."""
        return self.path if self.path.is_dir() else self.path.parent

    @property
    def roles_dir(self) -> Path:
        return hearth_paths.roles_dir() if self._roles_dir is None else self._roles_dir

    def ansible_inventory(self) -> InventoryManager:
        return self._manager

    def match(self, pattern: str | Sequence[str]) -> list[str]:
        """Names of the inventory hosts an Ansible host pattern selects (``gpu:&prod``, ``all:!x``).

        Uses ``InventoryManager.get_hosts``; a pattern that matches nothing gives ``[]``.
        """
        with _warning_capture() as context:
            found = self._manager.get_hosts(pattern, ignore_restrictions=True)
        self.warnings.extend(_warning_texts(context))
        known = set(self.hosts)
        return [h.name for h in found if h.name in known]

    def variable_manager(self) -> VariableManager:
        return self._variables

    def _ansible_host(self, host: str) -> Any:
        found = self._manager.get_host(host)
        if found is None:
            raise InvalidInputError(f"{display_path(self.path)}: no host {host!r} in the inventory")
        return found

    def _merged(self, host: str) -> dict[str, Any]:
        if host not in self._all_vars:
            found = self._ansible_host(host)
            with _warning_capture() as context:
                self._all_vars[host] = self._variables.get_vars(host=found, include_hostvars=False)
            self.warnings.extend(_warning_texts(context))
        return self._all_vars[host]

    def raw(self, host: str, name: str) -> Any:
        """One variable of the host as Ansible holds it (a vault-encrypted value still marked so:
        ``ansible.parsing.vault.VaultHelper.get_ciphertext`` tells)."""
        return self._merged(host).get(name)

    def hostvars(self, host: str) -> dict[str, Any]:
        """The host's variables as Ansible merges them (inventory, group_vars, host_vars).

        Magic variables (``groups``, ``inventory_hostname``, …) are left out, as
        ``ansible-inventory --list`` does; values are not templated.
        """
        internal = _internal_vars()
        return {k: _plain(v) for k, v in self._merged(host).items() if k not in internal}

    def _role_defaults(self, roles: Sequence[str]) -> dict[str, Any]:
        from ansible.utils.vars import combine_vars

        defaults: dict[str, Any] = {}
        for role in roles:
            defaults_dir = self.roles_dir / role / "defaults"
            if not defaults_dir.is_dir():
                continue
            for found in self._loader.find_vars_files(str(defaults_dir), "main"):
                with _warning_capture() as context:
                    try:
                        data = self._loader.load_from_file(found, trusted_as_template=True)
                    except TypeError:  # pragma: no cover - ansible-core < 2.19: no data tagging
                        data = self._loader.load_from_file(found)
                self.warnings.extend(_warning_texts(context))
                if isinstance(data, Mapping):
                    defaults = combine_vars(defaults, data)
        return defaults

    def resolved_vars(self, host: str, roles: Sequence[str]) -> dict[str, Any]:
        """The host's variables with each role's ``defaults/main.yml`` beneath them, templated.

        The inventory wins over the defaults; a later role's defaults win over an earlier one's.
        A value whose template cannot be resolved without contacting the host (facts, lookups
        that fail) is returned as written.
        """
        from ansible.errors import AnsibleError
        from ansible.template import Templar
        from ansible.utils.vars import combine_vars

        use_hearth_filters()
        merged = combine_vars(self._role_defaults(roles), self._merged(host))
        templar = Templar(loader=self._loader, variables=merged)
        internal = _internal_vars()
        resolved: dict[str, Any] = {}
        with _warning_capture() as context:
            for name, value in merged.items():
                if name in internal:
                    continue
                try:
                    resolved[name] = templar.template(value, fail_on_undefined=False)
                except AnsibleError:
                    resolved[name] = value
        self.warnings.extend(_warning_texts(context))
        return {k: _plain(v) for k, v in resolved.items()}


def load_inventory(
    path: Path | str,
    *,
    roles_dir: Path | None = None,
    vault_password_file: Path | None = None,
) -> Inventory:
    """Load ``path`` (a file or a directory of inventory files) through Ansible.

    Raises :class:`InventoryInvalid` (exit code 2) naming the path when it does not exist or when
    Ansible cannot parse a source in it.  ``roles_dir`` is where :meth:`Inventory.resolved_vars`
    finds role defaults (default: Hearth's ``roles/``).
    """
    path = Path(path)
    if not path.exists():
        raise InventoryInvalid(
            [Problem(path, None, "", MISSING, "inventory not found: no such file or directory")],
            path,
        )
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

    loader = DataLoader()
    _setup_vault(loader, vault_password_file)
    with _warning_capture() as context:
        try:
            manager = InventoryManager(loader=loader, sources=[str(path.absolute())])
        except AnsibleError as e:
            raise InventoryInvalid(
                [Problem(path, None, "", MISSING, f"Ansible cannot parse the inventory: {e}")],
                path,
            ) from e
    warnings = _warning_texts(context)
    processed = {
        os.path.realpath(s) for s in getattr(manager._inventory, "processed_sources", []) if s
    }
    problems: list[Problem] = []
    for candidate in _considered_files(path):
        if os.path.realpath(candidate) in processed:
            continue
        detail = _parse_failure_detail(candidate, [w for w in warnings if "Failed to parse" in w])
        problems.append(
            Problem(candidate, None, "", MISSING, f"Ansible cannot parse this inventory{detail}")
        )
    if problems:
        raise InventoryInvalid(problems, path)
    variable_manager = VariableManager(loader=loader, inventory=manager)
    inventory = Inventory(path, manager, variable_manager, loader, roles_dir)
    inventory.warnings.extend(warnings)
    return inventory


def _parse_failure_detail(candidate: Path, reasons: list[str]) -> str:
    if not reasons:
        return " source"
    plugin = "yaml" if candidate.suffix in YAML_EXTENSIONS else "ini"
    about = [r for r in reasons if str(candidate.absolute()) in r] or reasons
    chosen = [r for r in reasons if f"'{plugin}' plugin" in r] or about
    text = " ".join(chosen[0].split())
    if len(text) > _MAX_DETAIL:
        text = text[: _MAX_DETAIL - 3] + "..."
    return f" ({text})"


# --------------------------------------------------------------------------- pass 1: the files


@dataclass
class _Seen:
    file: Path
    line: int | None


@dataclass
class _Scan:
    schema: Schema
    problems: list[Problem] = field(default_factory=list)
    hosts: dict[str, list[_Seen]] = field(default_factory=dict)
    groups: dict[str, _Seen] = field(default_factory=dict)

    def add(self, problem: Problem) -> None:
        self.problems.append(problem)


def _duplicate_problems(data: object, file: Path) -> Iterator[Problem]:
    for prefix, _mapping, dup in iter_duplicates(data):
        key_path = f"{prefix}.{dup.key}" if prefix else str(dup.key)
        parent = prefix.rsplit(".", 1)[-1] if prefix else ""
        if parent == "hosts":
            what = f"host {dup.key} is defined twice in the same group"
        elif parent == "children":
            what = f"group {dup.key} is defined twice under the same parent"
        else:
            what = "key defined twice"
        yield Problem(
            file,
            dup.line,
            key_path,
            MISSING,
            f"{what} (first at line {dup.first_line}); YAML silently keeps only the last, "
            "remove or merge one of them",
        )


def _vars_duplicate_problems(data: object, file: Path) -> Iterator[Problem]:
    for prefix, _mapping, dup in iter_duplicates(data):
        key_path = f"{prefix}.{dup.key}" if prefix else str(dup.key)
        yield Problem(
            file,
            dup.line,
            key_path,
            MISSING,
            f"defined twice in this file (first at line {dup.first_line}); YAML silently keeps "
            "only the last, remove one",
        )


def _expand_host_pattern(pattern: str) -> list[str]:
    from ansible.parsing.utils.addresses import parse_address
    from ansible.plugins.inventory import detect_range, expand_hostname_range

    try:
        host, _port = parse_address(pattern, allow_ranges=True)
    except Exception:
        host = pattern
    if detect_range(host):
        try:
            return list(expand_hostname_range(host))
        except Exception:
            return [host]
    return [host]


def _scan_hosts(scan: _Scan, file: Path, group_path: str, hosts: Any) -> None:
    key_path = f"{group_path}.hosts"
    if hosts is None:
        return
    if isinstance(hosts, str):
        hosts = {hosts: None}
    if isinstance(hosts, list):
        scan.add(
            Problem(
                file,
                line_of(hosts, 0) or getattr(hosts, "line", None),
                key_path,
                hosts,
                "expected a mapping of host names (gpu01: or gpu01: {ansible_host: …}), not a list",
            )
        )
        return
    if not isinstance(hosts, Mapping):
        scan.add(Problem(file, None, key_path, hosts, "expected a mapping of host names"))
        return
    for pattern, host_vars in hosts.items():
        line = line_of(hosts, pattern)
        if not isinstance(pattern, str):
            scan.add(
                Problem(
                    file,
                    line,
                    f"{key_path}.{pattern}",
                    pattern,
                    "expected a host name as a string (quote numbers: '10.0.0.5')",
                )
            )
            continue
        names = _expand_host_pattern(pattern)
        for name in names:
            if not name or not _HOST_NAME.match(name):
                scan.add(
                    Problem(
                        file,
                        line,
                        f"{key_path}.{pattern}",
                        MISSING,
                        f"invalid host name {name!r}: use letters, digits, '.', '-' and '_' "
                        "(Ansible host patterns cannot address it)",
                    )
                )
                continue
            scan.hosts.setdefault(name, []).append(_Seen(file, line))
        if host_vars is None:
            continue
        if not isinstance(host_vars, Mapping):
            scan.add(
                Problem(
                    file,
                    line,
                    f"{key_path}.{pattern}",
                    host_vars,
                    "expected the host's variables as a mapping (or nothing)",
                )
            )
            continue
        host_label = pattern if len(names) == 1 else f"{pattern} ({len(names)} hosts)"
        scan.problems.extend(scan.schema.validate_vars(host_vars, file, host=host_label))


def _scan_group(
    scan: _Scan, file: Path, name: object, body: Any, key_path: str, line: int | None
) -> None:
    if not isinstance(name, str):
        scan.add(Problem(file, line, key_path, name, "expected a group name as a string"))
        return
    scan.groups.setdefault(name, _Seen(file, line))
    if not is_valid_identifier(name):
        fixed = re.sub(r"\W", "_", name)
        if fixed[:1].isdigit():
            fixed = f"_{fixed}"
        scan.add(
            Problem(
                file,
                line,
                key_path,
                MISSING,
                f"invalid group name {name!r}: Ansible wants letters, digits and _ (a valid "
                f"Python identifier), warns and may rename it; call it {fixed}",
            )
        )
    if body is None:
        return
    if not isinstance(body, Mapping):
        scan.add(
            Problem(
                file,
                line,
                key_path,
                body,
                "expected a group: a mapping with hosts, vars or children (Ansible skips it)",
            )
        )
        return
    for key in body:
        if key in GROUP_KEYS:
            continue
        suggestion = _close(str(key), GROUP_KEYS)
        hint = f"; did you mean {suggestion}?" if suggestion else ""
        scan.add(
            Problem(
                file,
                line_of(body, key),
                f"{key_path}.{key}",
                MISSING,
                f"unknown key in group {name}: a group may only have hosts, vars and children "
                f"(Ansible ignores it){hint}",
            )
        )
    _scan_hosts(scan, file, key_path, body.get("hosts"))
    group_vars = body.get("vars")
    if isinstance(group_vars, Mapping):
        scan.problems.extend(scan.schema.validate_vars(group_vars, file, prefix=f"{key_path}.vars"))
    elif group_vars is not None:
        scan.add(
            Problem(
                file,
                line_of(body, "vars"),
                f"{key_path}.vars",
                group_vars,
                "expected a mapping of variables",
            )
        )
    children = body.get("children")
    if isinstance(children, str):
        children = {children: None}
    if isinstance(children, Mapping):
        for child, child_body in children.items():
            _scan_group(
                scan,
                file,
                child,
                child_body,
                f"{key_path}.children.{child}",
                line_of(children, child),
            )
    elif children is not None:
        scan.add(
            Problem(
                file,
                line_of(body, "children"),
                f"{key_path}.children",
                children,
                "expected a mapping of child groups (name: or name: {hosts: …})",
            )
        )


def _close(word: str, candidates: Sequence[str]) -> str | None:
    import difflib

    found = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return found[0] if found else None


def _scan_inventory_file(scan: _Scan, file: Path) -> None:
    if file.suffix not in YAML_EXTENSIONS:
        return  # INI and scripts: Ansible parses them, the vars files are still scanned
    doc = load_yaml(file)
    scan.problems.extend(doc.problems)
    if doc.problems or doc.encrypted:
        return
    data = doc.data
    if data is None:
        scan.add(Problem(file, None, "", MISSING, "empty inventory file (expected all: …)"))
        return
    if not isinstance(data, Mapping):
        scan.add(
            Problem(
                file,
                1,
                "",
                MISSING,
                "an inventory must be a mapping of groups (all: {children: …})",
            )
        )
        return
    if "plugin" in data:
        return  # an inventory plugin's configuration, not a list of hosts
    scan.problems.extend(_duplicate_problems(data, file))
    for group, body in data.items():
        _scan_group(scan, file, group, body, str(group), line_of(data, group))


def _entity_name(entry: Path) -> str:
    if entry.is_file() and entry.suffix in YAML_EXTENSIONS:
        return entry.stem
    return entry.name


def _dir_vars_files(directory: Path) -> list[Path]:
    """Files Ansible reads from a ``group_vars/<name>/`` directory (DataLoader rules)."""
    found: list[Path] = []
    for entry in sorted(directory.iterdir()):
        if entry.name.startswith(".") or entry.name.endswith("~"):
            continue
        if entry.is_dir() and not entry.suffix:
            found.extend(_dir_vars_files(entry))
        elif entry.is_file() and (not entry.suffix or entry.suffix in YAML_EXTENSIONS):
            found.append(entry)
    return found


def _vars_files(directory: Path, name: str) -> list[Path]:
    """What Ansible's ``find_vars_files(directory, name)`` returns: the first of name, name.yml…"""
    for ext in ("", *YAML_EXTENSIONS):
        candidate = directory / f"{name}{ext}"
        if candidate.exists():
            return _dir_vars_files(candidate) if candidate.is_dir() else [candidate]
    return []


def _scan_vars_file(scan: _Scan, file: Path, host: str | None) -> None:
    doc = load_yaml(file)
    scan.problems.extend(doc.problems)
    if doc.problems or doc.encrypted or doc.data is None:
        return
    if not isinstance(doc.data, Mapping):
        scan.add(Problem(file, 1, "", MISSING, "expected a mapping of variables (name: value)"))
        return
    scan.problems.extend(_vars_duplicate_problems(doc.data, file))
    scan.problems.extend(scan.schema.validate_vars(doc.data, file, host=host))


def _scan_vars_dirs(scan: _Scan, basedir: Path, groups: set[str], hosts: set[str]) -> None:
    for kind, known, noun in (("group_vars", groups, "group"), ("host_vars", hosts, "host")):
        directory = basedir / kind
        if not directory.is_dir():
            continue
        entries = [
            e
            for e in sorted(directory.iterdir())
            if not e.name.startswith(".") and not e.name.endswith("~")
        ]
        read: set[Path] = set()
        for entry in entries:
            name = _entity_name(entry)
            if name not in known:
                suggestion = _close(name, sorted(known))
                hint = f"; did you mean {suggestion}?" if suggestion else ""
                scan.add(
                    Problem(
                        entry,
                        None,
                        "",
                        MISSING,
                        f"no {noun} named {name!r} in the inventory, so Ansible never reads "
                        f"this {kind} {'directory' if entry.is_dir() else 'file'}{hint}",
                    )
                )
                continue
            files = _vars_files(directory, name)
            if entry.is_file() and entry not in files:
                shadow = directory / name
                scan.add(
                    Problem(
                        entry,
                        None,
                        "",
                        MISSING,
                        f"Ansible ignores this file because {display_path(shadow)}"
                        f"{'/' if shadow.is_dir() else ''} exists for {noun} {name}; merge them",
                    )
                )
                continue
            for file in files:
                if file in read:
                    continue
                read.add(file)
                _scan_vars_file(scan, file, name if kind == "host_vars" else None)


# --------------------------------------------------------------------------- pass 2: Ansible


def _where_to_set(inventory: Inventory, host: str, role: str) -> str:
    base = inventory.basedir
    group_vars = base / "group_vars"
    if (group_vars / "all").is_dir() or not any(
        (group_vars / f"all{ext}").is_file() for ext in YAML_EXTENSIONS
    ):
        for_all = group_vars / "all" / f"{role}.yml"
    else:
        for_all = next(
            group_vars / f"all{ext}"
            for ext in YAML_EXTENSIONS
            if (group_vars / f"all{ext}").is_file()
        )
    host_vars = base / "host_vars"
    existing = _vars_files(host_vars, host) if host_vars.is_dir() else []
    for_host = existing[0] if existing else host_vars / f"{host}.yml"
    return (
        f"set it in {display_path(for_all)} (every host) "
        f"or {display_path(for_host)} (this host only)"
    )


def _required_problems(
    inventory: Inventory, schema: Schema, assignments: Mapping[str, Sequence[str]]
) -> list[Problem]:
    problems: list[Problem] = []
    for host in inventory.hosts:
        roles = assignments.get(host, [])
        if not roles:
            continue
        merged = inventory.hostvars(host)
        for role in roles:
            for key in schema.required.get(role, []):
                if merged.get(key) is not None:
                    continue
                advice = _where_to_set(inventory, host, role)
                problems.append(
                    Problem(
                        None,
                        None,
                        key,
                        MISSING,
                        f"required by role {role} but not set; {advice}",
                        host,
                    )
                )
    return problems


def canonical_address(text: str) -> str:
    """An address as one spelling: ``2001:0db8:0:0:0:0:0:11`` and ``[2001:db8::11]`` are
    ``2001:db8::11``; a host name is lower-cased without its final dot."""
    candidate = text.strip().lower()
    if candidate.startswith("[") and candidate.endswith("]"):
        candidate = candidate[1:-1]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return candidate.rstrip(".")


def _address_problems(inventory: Inventory, scan: _Scan) -> list[Problem]:
    seen: dict[tuple[str, str], str] = {}
    problems: list[Problem] = []
    for host in inventory.hosts:
        merged = inventory.hostvars(host)
        connection = merged.get("ansible_connection")
        if connection is not None and str(connection) not in _SSH_CONNECTIONS:
            continue
        address = canonical_address(str(merged.get("ansible_host") or host))
        port = str(merged.get("ansible_port") or merged.get("ansible_ssh_port") or 22)
        first = seen.setdefault((address, port), host)
        if first == host:
            continue
        where = scan.hosts.get(host, [])
        problems.append(
            Problem(
                where[0].file if where else None,
                where[0].line if where else None,
                "ansible_host",
                address,
                f"hosts {first} and {host} both connect to {address} port {port}; "
                "give each host its own ansible_host (or ansible_port)",
            )
        )
    return problems


def _name_clash_problems(scan: _Scan) -> list[Problem]:
    problems: list[Problem] = []
    for name, seen in scan.hosts.items():
        if name in scan.groups:
            problems.append(
                Problem(
                    seen[0].file,
                    seen[0].line,
                    name,
                    MISSING,
                    f"{name} is both a host and a group; Ansible patterns cannot tell them apart, "
                    "rename one",
                )
            )
    return problems


def _unique(problems: Sequence[Problem]) -> list[Problem]:
    seen: set[str] = set()
    unique: list[Problem] = []
    for problem in sorted(problems, key=Problem.sort_key):
        text = str(problem)
        if text in seen:
            continue
        seen.add(text)
        unique.append(problem)
    return unique


def _vault_id(ciphertext: str) -> str:
    header = ciphertext.lstrip().split("\n", 1)[0].split(";")
    return header[3].strip() if len(header) > 3 and header[3].strip() else "default"


def _iter_vault_values(data: object, prefix: str = "") -> Iterator[tuple[str, int | None, str]]:
    if isinstance(data, Mapping):
        for key, value in data.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, VaultValue):
                yield path, line_of(data, key), value.ciphertext
            else:
                yield from _iter_vault_values(value, path)
    elif isinstance(data, list):
        for index, value in enumerate(data):
            path = f"{prefix}[{index}]"
            if isinstance(value, VaultValue):
                yield path, line_of(data, index), value.ciphertext
            else:
                yield from _iter_vault_values(value, path)


def _vault_problems(files: Sequence[Path], secrets: list[tuple[str, Any]]) -> list[Problem]:
    """Every vault-encrypted file or value that cannot be decrypted, named with its vault id."""
    from ansible.errors import AnsibleError
    from ansible.parsing.vault import VaultLib

    vault = VaultLib(secrets)

    def problem(file: Path, line: int | None, key: str, ciphertext: str) -> Problem | None:
        vault_id = _vault_id(ciphertext)
        try:
            vault.decrypt(ciphertext.strip())
        except AnsibleError:
            return Problem(
                file,
                line,
                key,
                MISSING,
                f"cannot be decrypted (vault id {vault_id!r}) with the vault password given: "
                "a wrong password, or a file of another vault id",
            )
        return None

    if not secrets:
        return []  # without a password nothing is decrypted: the values are not judged
    problems: list[Problem] = []
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if text.lstrip().startswith("$ANSIBLE_VAULT"):
            found = problem(file, None, "", text)
            if found:
                problems.append(found)
            continue
        if file.suffix not in YAML_EXTENSIONS or "!vault" not in text:
            continue
        doc = load_yaml(file)
        for key, line, ciphertext in _iter_vault_values(doc.data):
            found = problem(file, line, key, ciphertext)
            if found:
                problems.append(found)
    return problems


def _vars_dir_files(basedir: Path) -> list[Path]:
    found: list[Path] = []
    for kind in ("group_vars", "host_vars"):
        directory = basedir / kind
        if directory.is_dir():
            found.extend(
                p
                for p in sorted(directory.rglob("*"))
                if p.is_file() and not any(part.startswith(".") for part in p.parts[-2:])
            )
    return found


def _empty_problems(inventory: Inventory) -> list[Problem]:
    if inventory.hosts:
        return []
    return [
        Problem(
            inventory.path,
            None,
            "",
            MISSING,
            "the inventory declares no host: nothing to do (expected all: {children: "
            "{<group>: {hosts: {<name>: {ansible_host: …}}}}})",
        )
    ]


def _level_vars(
    inventory: Inventory, kind: str, name: str, inline: Mapping[str, Any]
) -> dict[str, tuple[Path | None, int | None]]:
    """Variables set at one group's or host's own level: inline and in group_vars/host_vars."""
    found: dict[str, tuple[Path | None, int | None]] = {str(k): (None, None) for k in inline}
    directory = inventory.basedir / kind
    if directory.is_dir():
        for file in _vars_files(directory, name):
            data = load_yaml(file).data
            if isinstance(data, Mapping):
                for key in data:
                    found[str(key)] = (file, line_of(data, key))
    return found


_ROLES_OF_HEARTH_VARS = {
    "hearth_models": ("model_store", "inference_engine"),
    "hearth_declared_gpus": ("model_store", "inference_engine", "nvidia_driver"),
}


def _unapplied(name: str, schema: Schema, roles: Sequence[str]) -> bool:
    """Whether ``name`` is a Hearth variable that no role of the host reads."""
    readers = _ROLES_OF_HEARTH_VARS.get(name)
    if readers is not None:
        return not set(readers) & set(roles)
    owner = next(
        (p for p in sorted(schema.prefixes, key=len, reverse=True) if name.startswith(f"{p}_")),
        None,
    )
    return owner is not None and owner not in roles


def _unused_group_problems(
    inventory: Inventory,
    scan: _Scan,
    used: set[str],
    assignments: Mapping[str, Sequence[str]],
) -> list[Problem]:
    """Hosts with Hearth variables whose groups no playbook uses: their settings are never
    applied (a misspelled ``inferense`` group means its models are never served)."""
    problems: list[Problem] = []
    targets = sorted(used - {"all", "ungrouped", "localhost"})
    for host in inventory.hosts:
        found = inventory.ansible_inventory().get_host(host)
        if found is None:
            continue
        groups = {g.name: g for g in found.get_groups()} if found else {}
        names = set(groups) - {"all", "ungrouped"}
        if not names or names & used or host in used:
            continue
        roles = assignments.get(host, [])
        levels: list[tuple[str, dict[str, tuple[Path | None, int | None]]]] = [
            (f"host {host}", _level_vars(inventory, "host_vars", host, found.vars))
        ]
        for name in sorted(names):
            levels.append(
                (f"group {name}", _level_vars(inventory, "group_vars", name, groups[name].vars))
            )
        for _, variables in levels:
            hearth = sorted(k for k in variables if _unapplied(k, scan.schema, roles))
            if not hearth:
                continue
            key = hearth[0]
            file, line = variables[key]
            if file is None:
                where = scan.hosts.get(host, [])
                file, line = (where[0].file, where[0].line) if where else (None, None)
            unused = ", ".join(sorted(names))
            guesses = [g for g in (_close(n, targets) for n in sorted(names)) if g]
            hint = (
                f"did you mean {guesses[0]}?"
                if guesses
                else f"the playbooks use: {', '.join(targets)}"
            )
            problems.append(
                Problem(
                    file,
                    line,
                    key,
                    MISSING,
                    f"host {host} is only in group(s) {unused}, which no playbook uses, so "
                    f"{', '.join(hearth)} {'is' if len(hearth) == 1 else 'are'} never applied "
                    f"(the host gets only: {', '.join(roles) or 'no role'}); {hint}",
                    host,
                )
            )
            break
    return problems


def _validate(
    path: Path | str,
    roles_dir: Path | None,
    playbook: Path | None,
    vault_password_file: Path | None = None,
) -> tuple[list[Problem], Inventory | None]:
    path = Path(path)
    if not path.exists():
        return (
            [Problem(path, None, "", MISSING, "inventory not found: no such file or directory")],
            None,
        )
    schema = load_schema(roles_dir)
    scan = _Scan(schema)
    inventory_files = _considered_files(path)
    for file in inventory_files:
        _scan_inventory_file(scan, file)

    basedir = path if path.is_dir() else path.parent
    vault_problems = _vault_problems(
        [*inventory_files, *_vars_dir_files(basedir)], _vault_secrets(vault_password_file)
    )
    if vault_problems:
        return _unique([*scan.problems, *vault_problems]), None

    inventory: Inventory | None = None
    try:
        inventory = load_inventory(
            path, roles_dir=roles_dir, vault_password_file=vault_password_file
        )
    except InventoryInvalid as e:
        # Parse failures of YAML files are already reported, with a line, by the scan.
        scanned = {p.file for p in scan.problems}
        scan.problems.extend(p for p in e.problems if p.file not in scanned)

    groups = set(scan.groups) | {"all", "ungrouped"}
    hosts = set(scan.hosts)
    if inventory is not None:
        groups |= set(inventory.groups)
        hosts |= set(inventory.hosts)
    _scan_vars_dirs(scan, basedir, groups, hosts)
    scan.problems.extend(_name_clash_problems(scan))

    if inventory is not None:
        from ansible.errors import AnsibleError

        try:
            if not scan.problems:  # a typo in the groups explains an empty inventory better
                scan.problems.extend(_empty_problems(inventory))
            scan.problems.extend(_address_problems(inventory, scan))
            playbook_path = playbook if playbook is not None else layers.default_playbook()
            if playbook is not None or playbook_path.is_file():
                assignments = layers.roles_for_hosts(inventory, playbook_path)
                scan.problems.extend(_required_problems(inventory, schema, assignments))
                used = layers.used_groups(None if playbook is None else playbook_path.parent)
                scan.problems.extend(_unused_group_problems(inventory, scan, used, assignments))
        except AnsibleError as e:
            scan.add(
                Problem(path, None, "", MISSING, f"Ansible cannot load the host variables: {e}")
            )
    return _unique(scan.problems), inventory


def validate_inventory(
    path: Path | str,
    roles_dir: Path | None = None,
    playbook: Path | None = None,
    *,
    vault_password_file: Path | None = None,
) -> list[Problem]:
    """Every problem of the inventory at ``path`` (an empty list when it is valid).

    ``roles_dir`` defaults to Hearth's ``roles/``; ``playbook`` (which roles each host gets, for
    the required-variable check) to ``playbooks/site.yml`` — skipped when that file does not exist.
    Raises :class:`InvalidInputError` only for a broken argument spec or playbook (Hearth content).
    """
    problems, _ = _validate(path, roles_dir, playbook, vault_password_file)
    return problems


def check_inventory(
    path: Path | str,
    roles_dir: Path | None = None,
    playbook: Path | None = None,
    *,
    vault_password_file: Path | None = None,
) -> Inventory:
    """Validate the inventory and return it loaded; raise :class:`InventoryInvalid` listing all."""
    problems, inventory = _validate(path, roles_dir, playbook, vault_password_file)
    if problems or inventory is None:
        raise InventoryInvalid(problems, path)
    return inventory
