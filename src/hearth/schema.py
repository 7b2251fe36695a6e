"""The schema of Hearth's variables, derived from the roles' ``meta/argument_specs.yml``.

Every role declares its public variables in Ansible's role argument spec format; inventory-level
keys (``ansible_host``, ``hearth_environment``, …) are declared in the same format in
``hearth/data/inventory_spec.yml``, which may also use two Hearth-only fields: ``format: host``
and ``min``/``max`` (``min_exclusive: true`` refuses the minimum itself).  :func:`load_schema`
reads them all; :meth:`Schema.validate_vars` checks a mapping of variables (a ``group_vars``
file, a group's ``vars:``) and returns :class:`Problem`\\ s whose ``key`` is a path such as
``common_sysctl.vm.swappiness`` or ``models[2].sha256``.

A variable is Hearth's when its name starts with ``hearth_`` or with ``<role>_`` for a role that
has an argument spec; an undeclared Hearth variable is an error (with a "did you mean"), any
other variable (``ansible_*`` not declared, the operator's own) is left alone.  Top-level
``required`` options are not checked here: whether a key is set is a question about a host's
merged variables (see :mod:`hearth.inventory`).
"""

from __future__ import annotations

import difflib
import ipaddress
import keyword
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hearth import paths, yamlsrc
from hearth.errors import InvalidInputError
from hearth.yamlsrc import MASKED, MISSING, LineList, LineMap, Problem, VaultValue, line_of

__all__ = [
    "OptionSpec",
    "Problem",
    "Schema",
    "global_spec_path",
    "is_valid_host",
    "is_valid_identifier",
    "load_schema",
    "parse_argument_specs",
]

KNOWN_TYPES = frozenset({"str", "int", "float", "bool", "list", "dict", "path", "raw"})
"""Types checked strictly; Ansible's others (bits, bytes, json, jsonarg, sid) are not checked."""

_TYPE_WORDS = {
    "str": "a string",
    "path": "a path (a string)",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean (true/false without quotes)",
    "list": "a list",
    "dict": "a mapping",
}

_BOOL_WORDS = frozenset({"true", "false", "yes", "no", "on", "off", "y", "n"})
_SECRET_NAME = re.compile(r"pass(word|wd|phrase)?|secret|token|api_?key|private_?key", re.I)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def global_spec_path() -> Path:
    return paths.data_dir() / "inventory_spec.yml"


def is_valid_identifier(name: object) -> bool:
    """A name Ansible accepts for a variable or group: letters, digits, ``_``, no leading digit."""
    return isinstance(name, str) and bool(_IDENTIFIER.match(name)) and not keyword.iskeyword(name)


def is_valid_host(value: str) -> bool:
    """An IPv4/IPv6 address or a DNS hostname (RFC 1123; the last label is not all digits)."""
    candidate = value.strip()
    if candidate != value or not candidate:
        return False
    try:
        ipaddress.ip_address(candidate.strip("[]") if candidate.startswith("[") else candidate)
    except ValueError:
        pass
    else:
        return True
    name = candidate[:-1] if candidate.endswith(".") else candidate
    if not name or len(name) > 253:
        return False
    labels = name.split(".")
    if not all(_HOST_LABEL.match(label) for label in labels):
        return False
    # "10.0.0.300" is a mistyped address, not a host name: a top-level label is never numeric.
    return not labels[-1].isdigit()


def _is_template(value: object) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _suggest(name: str, candidates: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


@dataclass(frozen=True, eq=False)
class OptionSpec:
    """One option of an argument spec (the keys Hearth understands)."""

    name: str
    type: str = "str"
    required: bool = False
    default: Any = None
    choices: tuple[Any, ...] | None = None
    elements: str | None = None
    options: Mapping[str, OptionSpec] | None = None
    no_log: bool = False
    format: str | None = None
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    description: str = ""
    owner: str | None = None
    source: Path | None = None

    def describe_owner(self) -> str:
        return f"role {self.owner}" if self.owner else "the inventory spec"


def _spec_error(source: Path, where: str, what: str) -> InvalidInputError:
    return InvalidInputError(
        f"{source}: argument spec {where}: {what}; fix the spec (Ansible role argument spec format)"
    )


def _number(source: Path, where: str, raw: object) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise _spec_error(source, where, f"expected a number, got {raw!r}")
    return raw


def _parse_option(
    name: str, raw: object, source: Path, owner: str | None, where: str
) -> OptionSpec:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise _spec_error(source, where, f"expected a mapping, got {type(raw).__name__}")
    opt_type = raw.get("type", "str")
    if not isinstance(opt_type, str):
        raise _spec_error(source, where, f"type must be a string, got {opt_type!r}")
    elements = raw.get("elements")
    if elements is not None and not isinstance(elements, str):
        raise _spec_error(source, where, f"elements must be a string, got {elements!r}")
    choices = raw.get("choices")
    if choices is not None and not isinstance(choices, list):
        raise _spec_error(source, where, f"choices must be a list, got {choices!r}")
    fmt = raw.get("format")
    if fmt is not None and fmt != "host":
        raise _spec_error(source, where, f"unknown Hearth format {fmt!r} (known: host)")
    sub = raw.get("options")
    sub_options = (
        _parse_options(sub, source, owner, f"{where}.options") if sub is not None else None
    )
    description = raw.get("description", "")
    if isinstance(description, list):
        description = " ".join(str(d) for d in description)
    return OptionSpec(
        name=name,
        type=opt_type,
        required=bool(raw.get("required", False)),
        default=raw.get("default"),
        choices=tuple(choices) if choices is not None else None,
        elements=elements,
        options=sub_options,
        no_log=bool(raw.get("no_log", False)),
        format=fmt,
        min=_number(source, f"{where}.min", raw.get("min")),
        max=_number(source, f"{where}.max", raw.get("max")),
        min_exclusive=bool(raw.get("min_exclusive", False)),
        description=str(description),
        owner=owner,
        source=source,
    )


def _parse_options(
    raw: object, source: Path, owner: str | None, where: str
) -> dict[str, OptionSpec]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise _spec_error(source, where, f"expected a mapping of options, got {raw!r}")
    return {
        str(name): _parse_option(str(name), value, source, owner, f"{where}.{name}")
        for name, value in raw.items()
    }


def parse_argument_specs(
    data: object, source: Path, owner: str | None
) -> tuple[dict[str, OptionSpec], list[str]]:
    """Options of every entry point (``main`` first) and the required option names of ``main``.

    ``data`` is the loaded file: a mapping with an ``argument_specs`` key (``meta/main.yml`` may
    hold other keys too).
    """
    if data is None:
        return {}, []
    if not isinstance(data, Mapping):
        raise _spec_error(source, "file", "expected a mapping with an argument_specs key")
    specs = data.get("argument_specs") or {}
    if not isinstance(specs, Mapping):
        raise _spec_error(source, "argument_specs", "expected a mapping of entry points")
    options: dict[str, OptionSpec] = {}
    required: list[str] = []
    entry_points = sorted(specs, key=lambda ep: (ep != "main", str(ep)))
    for entry in entry_points:
        body = specs[entry] or {}
        if not isinstance(body, Mapping):
            raise _spec_error(source, str(entry), "expected a mapping with options")
        parsed = _parse_options(body.get("options"), source, owner, f"{entry}.options")
        for name, spec in parsed.items():
            options.setdefault(name, spec)
            if entry == "main" and spec.required:
                required.append(name)
    return options, required


def _load_spec_file(path: Path) -> object:
    try:
        text = path.read_text(encoding="utf-8")
        return yamlsrc.safe_load(text)
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"{path}: cannot read the argument spec: {e}") from e
    except yaml.YAMLError as e:
        raise InvalidInputError(f"{path}: the argument spec is not valid YAML: {e}") from e


def role_spec_file(role_dir: Path) -> Path | None:
    """Where a role keeps its argument spec, the way Ansible looks for it."""
    for name in ("argument_specs.yml", "argument_specs.yaml", "argument_specs"):
        candidate = role_dir / "meta" / name
        if candidate.is_file():
            return candidate
    for name in ("main.yml", "main.yaml", "main"):
        candidate = role_dir / "meta" / name
        if candidate.is_file():
            data = _load_spec_file(candidate)
            if isinstance(data, Mapping) and "argument_specs" in data:
                return candidate
            return None
    return None


@dataclass
class Schema:
    """Every declared Hearth variable, which roles own which prefix, and what each role requires."""

    options: dict[str, OptionSpec] = field(default_factory=dict)
    role_dirs: dict[str, Path] = field(default_factory=dict)
    """Every role found in the roles dir (with or without a spec)."""
    prefixes: tuple[str, ...] = ()
    """Role names whose ``<role>_`` variables are checked (roles with an argument spec)."""
    required: dict[str, list[str]] = field(default_factory=dict)
    """Role name -> the options its ``main`` entry point marks ``required: true``."""

    def owns(self, name: str) -> bool:
        """True when ``name`` is a Hearth variable (declared, ``hearth_*`` or ``<role>_*``)."""
        if name in self.options or name.startswith("hearth_"):
            return True
        return any(name.startswith(f"{prefix}_") for prefix in self.prefixes)

    def suggest(self, name: str) -> str | None:
        return _suggest(name, self.options)

    def validate_vars(
        self,
        variables: Mapping[Any, Any],
        file: Path | None,
        host: str | None = None,
        prefix: str = "",
    ) -> list[Problem]:
        """Check a mapping of variables; ``prefix`` is prepended to key paths (``all.vars``)."""
        problems: list[Problem] = []
        for name, value in variables.items():
            line = line_of(variables, name)
            path = f"{prefix}.{name}" if prefix else str(name)
            if not is_valid_identifier(name):
                problems.append(
                    Problem(
                        file,
                        line,
                        path,
                        MISSING,
                        "not a valid variable name (letters, digits and _ only, "
                        "not starting with a digit)",
                        host,
                    )
                )
                continue
            spec = self.options.get(name)
            if spec is not None:
                problems.extend(
                    _check_value(spec, value, path, variables, name, file, host, spec.no_log)
                )
            elif self.owns(name):
                suggestion = self.suggest(name)
                hint = (
                    f"; did you mean {suggestion}?"
                    if suggestion
                    else "; declare it in the role's meta/argument_specs.yml or remove it"
                )
                shown = MASKED if _SECRET_NAME.search(name) else value
                problems.append(
                    Problem(
                        file,
                        line,
                        path,
                        shown,
                        f"unknown Hearth variable (no role's argument spec declares it){hint}",
                        host,
                    )
                )
        return problems


def _type_problem(spec_type: str, value: object, nullable_hint: str = "") -> str | None:
    """``None`` when ``value`` has the type, else the explanation."""
    if _is_template(value) or isinstance(value, VaultValue):
        return None
    ok: bool
    if spec_type in ("str", "path"):
        ok = isinstance(value, str)
    elif spec_type == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif spec_type == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif spec_type == "bool":
        ok = isinstance(value, bool)
    elif spec_type == "list":
        ok = isinstance(value, list)
    elif spec_type == "dict":
        ok = isinstance(value, Mapping)
    else:
        ok = True
    if ok:
        return None
    words = f"expected {_TYPE_WORDS[spec_type]}"
    if value is None:
        return f"{words}, got null{nullable_hint}"
    if spec_type in ("int", "float") and isinstance(value, str):
        try:
            float(value)
        except ValueError:
            pass
        else:
            return f"{words} (remove the quotes)"
    if spec_type == "bool" and isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
        return words
    if spec_type in ("str", "path") and isinstance(value, bool | int | float):
        return f"{words} (put the value in quotes)"
    if spec_type == "list" and isinstance(value, str):
        return f"{words} (a YAML sequence, not a comma-separated string)"
    return words


def _in_choices(value: object, choices: Sequence[Any]) -> bool:
    for choice in choices:
        if isinstance(choice, bool) != isinstance(value, bool):
            continue
        if value == choice:
            return True
    return False


def _bounds_words(spec: OptionSpec) -> str:
    def fmt(n: float | None) -> str:
        return str(int(n)) if isinstance(n, float) and n.is_integer() else str(n)

    if spec.min is not None and spec.min_exclusive:
        above = f"greater than {fmt(spec.min)}"
        return above if spec.max is None else f"{above} and at most {fmt(spec.max)}"
    if spec.min is not None and spec.max is not None:
        return f"from {fmt(spec.min)} to {fmt(spec.max)}"
    if spec.min is not None:
        return f"of at least {fmt(spec.min)}"
    return f"of at most {fmt(spec.max)}"


def _check_scalar_rules(spec: OptionSpec, value: object, element: bool = False) -> str | None:
    """Choices, bounds and format of a value that already has the right type."""
    if _is_template(value) or isinstance(value, VaultValue) or value is None:
        return None
    if spec.choices is not None and not _in_choices(value, spec.choices):
        listed = ", ".join(str(c) for c in spec.choices)
        return f"expected one of: {listed}"
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if is_number and (spec.min is not None or spec.max is not None):
        number = float(value)  # type: ignore[arg-type]
        too_low = spec.min is not None and (
            number <= spec.min if spec.min_exclusive else number < spec.min
        )
        too_high = spec.max is not None and number > spec.max
        if too_low or too_high:
            kind = "an integer" if spec.type == "int" or element else "a number"
            return f"expected {kind} {_bounds_words(spec)}"
    if spec.format == "host" and isinstance(value, str) and not is_valid_host(value):
        return "expected an IPv4/IPv6 address or a DNS hostname"
    return None


def _check_value(
    spec: OptionSpec,
    value: object,
    path: str,
    container: object,
    key: object,
    file: Path | None,
    host: str | None,
    secret: bool,
) -> list[Problem]:
    line = line_of(container, key)
    shown: object = MASKED if secret else value

    def problem(expected: str) -> Problem:
        return Problem(file, line, path, shown, expected, host)

    if value is None:
        if spec.type == "raw" or (not spec.required and spec.default is None):
            return []
        hint = (
            " (this key is required)"
            if spec.required
            else " (remove the key to use the role default)"
        )
        words = _TYPE_WORDS.get(spec.type, "a value")
        return [problem(f"expected {words}, got null{hint}")]

    if spec.type in _TYPE_WORDS:
        type_error = _type_problem(spec.type, value)
        if type_error:
            return [problem(type_error)]

    problems: list[Problem] = []
    if spec.type == "list" and isinstance(value, list):
        problems.extend(_check_list(spec, value, path, file, host, secret))
    elif spec.type == "dict" and isinstance(value, Mapping) and spec.options is not None:
        problems.extend(_check_suboptions(spec, spec.options, value, path, file, host, secret))
    else:
        rule_error = _check_scalar_rules(spec, value)
        if rule_error:
            problems.append(problem(rule_error))
    return problems


def _check_list(
    spec: OptionSpec,
    items: list[Any],
    path: str,
    file: Path | None,
    host: str | None,
    secret: bool,
) -> list[Problem]:
    problems: list[Problem] = []
    element_type = spec.elements
    for index, item in enumerate(items):
        item_path = f"{path}[{index}]"
        line = line_of(items, index) if isinstance(items, LineList) else None
        shown: object = MASKED if secret else item
        if element_type in _TYPE_WORDS:
            type_error = _type_problem(element_type, item)
            if item is None:
                type_error = f"expected {_TYPE_WORDS[element_type]}, got null"
            if type_error:
                problems.append(Problem(file, line, item_path, shown, type_error, host))
                continue
        if element_type == "dict" and isinstance(item, Mapping) and spec.options is not None:
            problems.extend(
                _check_suboptions(spec, spec.options, item, item_path, file, host, secret)
            )
            continue
        rule_error = _check_scalar_rules(spec, item, element=element_type == "int")
        if rule_error:
            problems.append(Problem(file, line, item_path, shown, rule_error, host))
    return problems


def _check_suboptions(
    parent: OptionSpec,
    options: Mapping[str, OptionSpec],
    value: Mapping[Any, Any],
    path: str,
    file: Path | None,
    host: str | None,
    secret: bool,
) -> list[Problem]:
    problems: list[Problem] = []
    for key, sub_value in value.items():
        sub_path = f"{path}.{key}"
        sub_spec = options.get(key) if isinstance(key, str) else None
        if sub_spec is None:
            known = ", ".join(sorted(options)) or "none"
            suggestion = _suggest(str(key), options)
            hint = f"; did you mean {suggestion}?" if suggestion else ""
            shown: object = MASKED if secret else sub_value
            problems.append(
                Problem(
                    file,
                    line_of(value, key),
                    sub_path,
                    shown,
                    f"unknown key in {path} (known keys: {known}){hint}",
                    host,
                )
            )
            continue
        problems.extend(
            _check_value(
                sub_spec, sub_value, sub_path, value, key, file, host, secret or sub_spec.no_log
            )
        )
    for name, sub_spec in options.items():
        if sub_spec.required and name not in value:
            line = value.line if isinstance(value, LineMap) else None
            problems.append(
                Problem(
                    file,
                    line,
                    f"{path}.{name}",
                    MISSING,
                    f"required key missing in {path} (declared by {parent.describe_owner()})",
                    host,
                )
            )
    return problems


def load_schema(roles_dir: Path | None = None, global_spec: Path | None = None) -> Schema:
    """Read the global inventory spec and the argument spec of every role under ``roles_dir``.

    Raises :class:`InvalidInputError` naming the file when a spec cannot be read or is malformed.
    """
    roles_dir = paths.roles_dir() if roles_dir is None else roles_dir
    global_spec = global_spec_path() if global_spec is None else global_spec
    schema = Schema()
    options, _ = parse_argument_specs(_load_spec_file(global_spec), global_spec, None)
    schema.options.update(options)
    prefixes: list[str] = []
    if roles_dir.is_dir():
        for role_dir in sorted(p for p in roles_dir.iterdir() if p.is_dir()):
            if role_dir.name.startswith("."):
                continue
            schema.role_dirs[role_dir.name] = role_dir
            spec_file = role_spec_file(role_dir)
            if spec_file is None:
                continue
            role_options, required = parse_argument_specs(
                _load_spec_file(spec_file), spec_file, role_dir.name
            )
            prefixes.append(role_dir.name)
            schema.required[role_dir.name] = required
            for name, spec in role_options.items():
                schema.options.setdefault(name, spec)
    schema.prefixes = tuple(prefixes)
    return schema
