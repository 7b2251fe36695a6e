"""Line-aware YAML loading for the files Hearth validates, and the ``Problem`` they report.

PyYAML silently keeps the last of two equal keys and forgets where anything came from.  The loader
here is a ``yaml.SafeLoader`` whose mappings (:class:`LineMap`) and sequences (:class:`LineList`)
remember the line of every key and item, and whose mappings record duplicate keys instead of
dropping them, so a validator can say ``group_vars/all.yml:7`` and ``defined twice``.

Ansible's own tags are understood: ``!vault`` values become :class:`VaultValue` (opaque: the
scanner never decrypts), ``!unsafe`` values are plain strings.  A whole file encrypted with
``ansible-vault`` is reported as ``encrypted`` and not parsed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import yaml

__all__ = [
    "MASKED",
    "MISSING",
    "Duplicate",
    "LineList",
    "LineMap",
    "Problem",
    "VaultValue",
    "YamlDoc",
    "display_path",
    "iter_duplicates",
    "line_of",
    "load_yaml",
    "load_yaml_text",
]


class _Sentinel:
    def __init__(self, name: str, text: str) -> None:
        self._name = name
        self._text = text

    def __repr__(self) -> str:
        return self._text

    def __reduce__(self) -> str:  # pickles as the module-level singleton
        return self._name


MISSING: Final = _Sentinel("MISSING", "<missing>")
"""``Problem.value`` when there is no value to show (a missing key, a duplicate, a bad file)."""

MASKED: Final = _Sentinel("MASKED", "'***'")
"""``Problem.value`` standing in for a secret (``no_log: true``): the secret is never stored."""

_MAX_REPR = 80


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies under it, else as given."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def _short_repr(value: object) -> str:
    text = repr(value)
    if len(text) > _MAX_REPR:
        text = text[: _MAX_REPR - 3] + "..."
    return text


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an inventory, in the operator's terms.

    ``key`` is a key path (``common_sysctl.vm.swappiness``, ``models[2].sha256``,
    ``all.children.gpu_nodes.varz``) or ``""`` for a whole-file problem; ``value`` is the offending
    value, :data:`MISSING` when there is none and :data:`MASKED` for a secret; ``expected`` is the
    full explanation (``expected an integer``, ``unknown Hearth variable; did you mean …?``).
    """

    file: Path | None
    line: int | None
    key: str
    value: object
    expected: str
    host: str | None = None

    def location(self) -> str:
        parts: list[str] = []
        if self.file is not None:
            where = display_path(self.file)
            if self.line is not None:
                where += f":{self.line}"
            parts.append(where)
        if self.host is not None:
            parts.append(f"host {self.host}")
        return ": ".join(parts)

    def __str__(self) -> str:
        head = self.location()
        subject = self.key
        if self.value is not MISSING and subject:
            subject += f" = {_short_repr(self.value)}"
        pieces = [p for p in (head, subject, self.expected) if p]
        return ": ".join(pieces)

    def sort_key(self) -> tuple[int, str, int]:
        if self.file is None:
            return (1, "", 0)
        return (0, str(self.file), self.line or 0)


@dataclass(frozen=True)
class VaultValue:
    """A ``!vault`` value: ciphertext only, never decrypted by the scanner."""

    ciphertext: str

    def __repr__(self) -> str:
        return "<vault-encrypted>"


@dataclass(frozen=True)
class Duplicate:
    key: object
    line: int
    first_line: int


class LineMap(dict[Any, Any]):
    """A mapping that knows its own line, the line of each key and the keys given twice."""

    line: int | None
    key_lines: dict[Any, int]
    duplicates: list[Duplicate]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.line = None
        self.key_lines = {}
        self.duplicates = []


class LineList(list[Any]):
    """A sequence that knows its own line and the line of each item."""

    line: int | None
    item_lines: list[int]

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.line = None
        self.item_lines = []


def line_of(container: object, key: object) -> int | None:
    """The line of ``key`` in a :class:`LineMap` (or of an index in a :class:`LineList`)."""
    if isinstance(container, LineMap):
        return container.key_lines.get(key, container.line)
    if isinstance(container, LineList) and isinstance(key, int):
        if 0 <= key < len(container.item_lines):
            return container.item_lines[key]
        return container.line
    return None


_MERGE_TAG = "tag:yaml.org,2002:merge"


# libyaml's parser where PyYAML has it (about 9x faster on Hearth's files: every role preflight
# that runs a rule reads the playbooks and specs again in its own worker process); the
# constructors below are the same either way.
if TYPE_CHECKING:
    _SafeLoader = yaml.SafeLoader
else:
    _SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` with libyaml's parser where available."""
    return yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a SafeLoader


class LineLoader(_SafeLoader):
    """SafeLoader building :class:`LineMap` / :class:`LineList` with line numbers (1-based)."""


def _construct_map(loader: LineLoader, node: yaml.MappingNode) -> Iterator[LineMap]:
    data = LineMap()
    data.line = node.start_mark.line + 1
    yield data
    own = sum(1 for key_node, _ in node.value if key_node.tag != _MERGE_TAG)
    loader.flatten_mapping(node)
    merged = len(node.value) - own
    own_lines: dict[Any, int] = {}
    for index, (key_node, value_node) in enumerate(node.value):
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError as e:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                "found an unhashable key",
                key_node.start_mark,
            ) from e
        value = loader.construct_object(value_node, deep=True)
        line = key_node.start_mark.line + 1
        if index >= merged:
            if key in own_lines:
                data.duplicates.append(Duplicate(key, line, own_lines[key]))
            own_lines[key] = line
        data[key] = value
        data.key_lines[key] = line


def _construct_seq(loader: LineLoader, node: yaml.SequenceNode) -> Iterator[LineList]:
    data = LineList()
    data.line = node.start_mark.line + 1
    yield data
    for item in node.value:
        data.append(loader.construct_object(item, deep=True))
        data.item_lines.append(item.start_mark.line + 1)


def _construct_vault(loader: LineLoader, node: yaml.Node) -> VaultValue:
    return VaultValue(str(loader.construct_scalar(node)))  # type: ignore[arg-type]


def _construct_unsafe(loader: LineLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    return None  # pragma: no cover - yaml has no other node kinds


LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)
LineLoader.add_constructor("!vault", _construct_vault)
LineLoader.add_constructor("!vault-encrypted", _construct_vault)
LineLoader.add_constructor("!unsafe", _construct_unsafe)


@dataclass
class YamlDoc:
    """A loaded file: ``data`` (``None`` when empty, unreadable or encrypted) and its problems."""

    path: Path
    data: Any = None
    problems: list[Problem] = field(default_factory=list)
    encrypted: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems


def _syntax_problem(path: Path, error: yaml.YAMLError) -> Problem:
    line: int | None = None
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        if mark is not None:
            line = mark.line + 1
        words = " ".join(w for w in (error.context, error.problem) if w)
    else:
        words = str(error)
    return Problem(
        path,
        line,
        "",
        MISSING,
        f"YAML syntax error: {words or 'cannot parse'}; fix the file so it parses",
    )


def load_yaml_text(text: str, path: Path) -> YamlDoc:
    """Parse ``text`` (the contents of ``path``) into a :class:`YamlDoc`."""
    doc = YamlDoc(path)
    if text.lstrip().startswith("$ANSIBLE_VAULT"):
        doc.encrypted = True
        return doc
    try:
        doc.data = yaml.load(text, Loader=LineLoader)  # noqa: S506 - LineLoader is a SafeLoader
    except yaml.YAMLError as e:
        doc.problems.append(_syntax_problem(path, e))
    return doc


def load_yaml(path: Path) -> YamlDoc:
    """Read and parse ``path``; unreadable files and syntax errors become problems, not raises."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return YamlDoc(path, problems=[Problem(path, None, "", MISSING, "not UTF-8 text")])
    except OSError as e:
        reason = e.strerror or str(e)
        return YamlDoc(path, problems=[Problem(path, None, "", MISSING, f"cannot read: {reason}")])
    return load_yaml_text(text, path)


def _join(prefix: str, key: object) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def iter_duplicates(data: object, prefix: str = "") -> Iterator[tuple[str, LineMap, Duplicate]]:
    """Every duplicate key under ``data``: (key path of the mapping, the mapping, the duplicate)."""
    if isinstance(data, LineMap):
        for dup in data.duplicates:
            yield prefix, data, dup
        for key, value in data.items():
            yield from iter_duplicates(value, _join(prefix, key))
    elif isinstance(data, list):
        for index, item in enumerate(data):
            yield from iter_duplicates(item, f"{prefix}[{index}]")
