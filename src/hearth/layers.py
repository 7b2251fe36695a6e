"""Which roles each host gets, read from the playbooks (``playbooks/site.yml`` and its imports).

The playbooks are the single statement of "this group gets these roles": the audit and the
required-variable check ask :func:`roles_for_hosts` rather than keeping a second mapping.  Play
``hosts:`` patterns are resolved by Ansible itself (``InventoryManager.get_hosts``), so
``gpu_nodes:&production``, ``all:!lab`` and friends mean what they mean to ``ansible-playbook``.

Only the ``roles:`` of plays are followed; ``include_role``/``import_role`` tasks, role
``dependencies`` and ``when:`` conditions on roles are not evaluated.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hearth import paths
from hearth.errors import InvalidInputError
from hearth.yamlsrc import YamlDoc, display_path, load_yaml

if TYPE_CHECKING:
    from hearth.inventory import Inventory

__all__ = [
    "default_playbook",
    "iter_plays",
    "role_name",
    "roles_for_group_names",
    "roles_for_hosts",
    "used_groups",
]

_IMPORT_KEYS = ("import_playbook", "ansible.builtin.import_playbook")
_COLLECTION_PLAYBOOK = re.compile(r"^[A-Za-z_]\w*\.[A-Za-z_]\w*\.[\w.]+$")


def default_playbook() -> Path:
    return paths.playbooks_dir() / "site.yml"


def role_name(entry: object) -> str | None:
    """The role a ``roles:`` item names: ``common``, ``{role: common}``, ``{name: common}``.

    A path (``../roles/common``) gives its last component.
    """
    name: object = entry
    if isinstance(entry, Mapping):
        name = entry.get("role", entry.get("name"))
    if not isinstance(name, str) or not name.strip():
        return None
    return name.strip().rstrip("/").rsplit("/", 1)[-1]


def _playbook_error(path: Path, what: str) -> InvalidInputError:
    return InvalidInputError(f"{display_path(path)}: {what}")


# A role's preflight asks for the host's roles once per host it looks at, in every task that
# runs a rule: each parse of site.yml and its imports (about 8 ms) was paid again each time. A
# file is parsed again when its size or modification time changes.
_PARSED: dict[Path, tuple[tuple[int, int], YamlDoc]] = {}


def _load_playbook(path: Path) -> YamlDoc:
    resolved = path.resolve()
    stat = resolved.stat()
    stamp = (stat.st_mtime_ns, stat.st_size)
    cached = _PARSED.get(resolved)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    doc = load_yaml(path)
    _PARSED[resolved] = (stamp, doc)
    return doc


def iter_plays(playbook: Path) -> list[tuple[Path, Mapping[str, Any]]]:
    """Every play of ``playbook`` in order, following ``import_playbook`` (relative paths)."""
    plays: list[tuple[Path, Mapping[str, Any]]] = []
    _collect(playbook, plays, ())
    return plays


def _collect(
    playbook: Path, plays: list[tuple[Path, Mapping[str, Any]]], stack: tuple[Path, ...]
) -> None:
    resolved = playbook.resolve()
    if resolved in stack:
        chain = " -> ".join(display_path(p) for p in (*stack, resolved))
        raise _playbook_error(playbook, f"import_playbook loop: {chain}")
    if not playbook.is_file():
        raise _playbook_error(playbook, "playbook not found")
    doc = _load_playbook(playbook)
    if doc.problems:
        raise InvalidInputError("\n".join(str(p) for p in doc.problems))
    data = doc.data
    if data is None:
        return
    if not isinstance(data, list):
        raise _playbook_error(playbook, "a playbook must be a list of plays")
    for index, entry in enumerate(data):
        if not isinstance(entry, Mapping):
            raise _playbook_error(playbook, f"play #{index + 1} is not a mapping")
        target = next((entry[k] for k in _IMPORT_KEYS if k in entry), None)
        if target is None:
            plays.append((playbook, entry))
            continue
        if not isinstance(target, str) or "{{" in target:
            raise _playbook_error(
                playbook, f"import_playbook {target!r}: only literal file names are supported"
            )
        child = playbook.parent / target
        if not child.exists() and _COLLECTION_PLAYBOOK.match(target):
            continue  # a collection's playbook (ns.coll.name): it has no Hearth roles
        if not child.is_file():
            raise _playbook_error(playbook, f"import_playbook {target!r}: no such file {child}")
        _collect(child, plays, (*stack, resolved))


def _hosts_pattern(playbook: Path, play: Mapping[str, Any]) -> str | list[str]:
    pattern = play.get("hosts")
    if isinstance(pattern, list) and all(isinstance(p, str) for p in pattern):
        patterns = [str(p) for p in pattern]
    elif isinstance(pattern, str):
        patterns = [pattern]
    else:
        name = play.get("name", "?")
        raise _playbook_error(playbook, f"play {name!r} has no usable hosts: pattern")
    rendered = [_render(playbook, play, p) for p in patterns]
    return rendered if isinstance(pattern, list) else rendered[0]


def _render(playbook: Path, play: Mapping[str, Any], pattern: str) -> str:
    if "{{" not in pattern and "{%" not in pattern:
        return pattern
    from ansible.errors import AnsibleError
    from ansible.template import Templar, trust_as_template

    try:
        return str(Templar().template(trust_as_template(pattern)))
    except AnsibleError as e:
        name = play.get("name", "?")
        raise _playbook_error(
            playbook, f"play {name!r}: cannot resolve hosts pattern {pattern!r}: {e}"
        ) from e


def roles_for_hosts(inventory: Inventory, playbook: Path | None = None) -> dict[str, list[str]]:
    """Host -> the roles the playbooks apply to it, in play order, each once.

    Every inventory host is a key (hosts that no play reaches get ``[]``).  ``playbook`` defaults
    to ``playbooks/site.yml``; a missing or unparsable playbook raises :class:`InvalidInputError`.
    """
    playbook = default_playbook() if playbook is None else playbook
    result: dict[str, list[str]] = {host: [] for host in inventory.hosts}
    for source, play in iter_plays(playbook):
        roles = play.get("roles")
        if not roles:
            continue
        if not isinstance(roles, list):
            raise _playbook_error(source, f"play {play.get('name', '?')!r}: roles: must be a list")
        names = [n for n in (role_name(r) for r in roles) if n]
        pattern = _hosts_pattern(source, play)
        for host in inventory.match(pattern):
            assigned = result.setdefault(host, [])
            for name in names:
                if name not in assigned:
                    assigned.append(name)
    return result


def _pattern_tokens(pattern: str | list[str]) -> list[str]:
    patterns = [pattern] if isinstance(pattern, str) else pattern
    return [t.strip() for p in patterns for t in re.split(r"[:,]", p) if t.strip()]


def used_groups(playbooks_dir: Path | None = None) -> set[str]:
    """Every name the plays of the playbooks under ``playbooks_dir`` (default: Hearth's
    ``playbooks/``) target (``inference``, ``gpu_nodes``, ``all`` …), from their ``hosts:``."""
    directory = paths.playbooks_dir() if playbooks_dir is None else playbooks_dir
    names: set[str] = set()
    for book in sorted(directory.rglob("*.yml")):
        try:
            for source, play in iter_plays(book):
                pattern = _hosts_pattern(source, play)
                names.update(t.lstrip("&!") for t in _pattern_tokens(pattern))
        except InvalidInputError:
            continue  # not a playbook (a vars file beside them); its syntax is checked elsewhere
    return names


def _matches(pattern: str | list[str], host: str, groups: set[str]) -> bool:
    """Whether a simple pattern (``a:b``, ``a:&b``, ``a:!b``; no wildcards) selects the host."""

    def has(token: str) -> bool:
        return token in ("all", "*") or token == host or token in groups

    tokens = _pattern_tokens(pattern)
    plain = [t for t in tokens if t[0] not in "&!"]
    both = [t[1:] for t in tokens if t.startswith("&")]
    but = [t[1:] for t in tokens if t.startswith("!")]
    return any(has(t) for t in plain) and all(has(t) for t in both) and not any(has(t) for t in but)


def roles_for_group_names(
    host: str, group_names: Sequence[str], playbook: Path | None = None
) -> list[str]:
    """The roles the playbooks apply to a host that is in ``group_names``, without an inventory.

    For a role's preflight, which knows only the running host's groups; patterns are matched as
    unions, ``&`` intersections and ``!`` exclusions of group names (what Hearth's playbooks use).
    """
    playbook = default_playbook() if playbook is None else playbook
    groups = set(group_names)
    assigned: list[str] = []
    for source, play in iter_plays(playbook):
        roles = play.get("roles")
        if not isinstance(roles, list) or not _matches(_hosts_pattern(source, play), host, groups):
            continue
        for name in (role_name(r) for r in roles):
            if name and name not in assigned:
                assigned.append(name)
    return assigned
