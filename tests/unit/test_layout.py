"""The shape of the code: one rule in one place, found where the README says.

- The README's "where each rule lives" table names one file per question; each names a function or
  variable that is defined there and nowhere else.
- A role never reads another role's private (``__role_*``) names, and neither do plugins or the
  library: what other roles need is an inventory variable or a documented fact.
- Controller-side plugins import ``hearth`` through one helper (``plugins/plugin_utils``), which
  works from a checkout and from the installed package, with a Python that cannot import ``hearth``
  by itself.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hearth import paths

ROOT = paths.content_root()
README = ROOT / "README.md"
ROLES = paths.roles_dir()
PLUGINS = paths.plugins_dir()
SRC = Path(__file__).resolve().parents[2] / "src" / "hearth"


def _where_table() -> list[tuple[str, str, str]]:
    """(question, file, symbol) rows of the README's table."""
    rows = []
    for line in README.read_text().splitlines():
        match = re.match(r"^\| (where .*\?|does .*\?|what .*\?) \| `([^`]+)` \(`(\w+)`", line)
        if match:
            rows.append((match.group(1), match.group(2), match.group(3)))
    return rows


def _defines(path: Path, symbol: str) -> bool:
    text = path.read_text(errors="replace")
    if path.suffix == ".py":
        return re.search(rf"^def {symbol}\(", text, re.M) is not None
    return re.search(rf"^{symbol}:", text, re.M) is not None


def test_the_readme_says_where_each_rule_lives() -> None:
    rows = _where_table()
    questions = " ".join(q for q, _, _ in rows)
    for wanted in ("driver pinned", "VRAM checked", "bundle verified", "ports decided"):
        assert wanted in questions, f"README layout table: no row for {wanted!r}"
    candidates = [
        *SRC.rglob("*.py"),
        *PLUGINS.rglob("*.py"),
        *(p for p in ROLES.glob("*/defaults/*.yml")),
        *(p for p in ROLES.glob("*/vars/*.yml")),
    ]
    for question, file, symbol in rows:
        path = ROOT / file
        assert path.is_file(), f"README: {question} {file} does not exist"
        assert _defines(path, symbol), f"README: {question} {file} does not define {symbol}"
        elsewhere = [
            str(p.relative_to(ROOT)) for p in candidates if p != path and _defines(p, symbol)
        ]
        assert not elsewhere, f"{question}: {symbol} is also defined in {elsewhere}"


def _role_names() -> list[str]:
    return sorted(p.name for p in ROLES.iterdir() if (p / "tasks").is_dir())


def test_no_role_reads_another_roles_private_names() -> None:
    roles = _role_names()
    # longest first: `__node_exporter_x` belongs to node_exporter, not to a role named `node`
    owner = re.compile(r"__(" + "|".join(sorted(roles, key=len, reverse=True)) + r")_\w+")
    found = []
    for role in roles:
        for path in (ROLES / role).rglob("*"):
            if not path.is_file() or "checks" in path.relative_to(ROLES / role).parts:
                continue
            for match in owner.finditer(path.read_text(errors="replace")):
                if match.group(1) != role:
                    found.append(f"{path.relative_to(ROLES)}: {match.group(0)}")
    for path in [*PLUGINS.rglob("*.py"), *SRC.rglob("*.py")]:
        for match in owner.finditer(path.read_text()):
            found.append(f"{path.name}: {match.group(0)}")
    assert not found, "private names read outside their role:\n" + "\n".join(found)


def test_plugins_import_hearth_through_the_one_helper() -> None:
    controller = [*PLUGINS.glob("filter/*.py"), *PLUGINS.glob("action/*.py")]
    assert controller
    for path in controller:
        text = path.read_text()
        assert not re.search(r"^\s*(import hearth\b|from hearth[. ])", text, re.M), (
            f"{path.name}: imports hearth directly; use plugin_utils/hearth_import.import_hearth"
        )
        inserts = re.findall(r"sys\.path\.insert\(0, (.+)\)", text)
        assert inserts in ([], ["_PLUGIN_UTILS"]), f"{path.name}: its own sys.path search"


def _import_with_bare_python(plugins: Path, module: str) -> str:
    """Run the helper with a Python that has no site-packages (hearth not importable)."""
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(plugins / 'plugin_utils')!r})\n"
        "from hearth_import import import_hearth\n"
        f"hearth = import_hearth({module!r})\n"
        f"print(hearth.__file__, sys.modules['hearth.{module}'].__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-S", "-I", "-c", code], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_helper_finds_hearth_in_a_checkout() -> None:
    out = _import_with_bare_python(PLUGINS, "errors")
    assert out == f"{SRC / '__init__.py'} hearth.errors"


def test_the_helper_finds_hearth_installed(tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    shutil.copytree(SRC, site / "hearth", ignore=shutil.ignore_patterns("__pycache__"))
    utils = site / "hearth" / "_content" / "plugins" / "plugin_utils"
    shutil.copytree(PLUGINS / "plugin_utils", utils)
    out = _import_with_bare_python(utils.parent, "errors")
    assert out == f"{site / 'hearth' / '__init__.py'} hearth.errors"


def test_the_helper_names_what_to_install(tmp_path: Path) -> None:
    pytest.importorskip("ansible")
    plugins = tmp_path / "plugins"
    shutil.copytree(PLUGINS / "plugin_utils", plugins / "plugin_utils")
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(plugins / 'plugin_utils')!r})\n"
        "sys.modules['hearth'] = None\n"  # hearth cannot be imported at all
        "from hearth_import import import_hearth\n"
        "import_hearth('monitoring')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode != 0
    assert "install Hearth in the Python that runs ansible-playbook" in done.stderr


# How each runtime dependency is used: the module it is imported as, or, for pytest plugins that
# `hearth audit` loads by running pytest, the option of theirs the audit passes.
DEPENDENCY_USE = {
    "ansible-core": r"^\s*(from|import) ansible\b",
    "ansible-runner": r"^\s*(from|import) ansible_runner\b",
    "jinja2": r"^\s*(from|import) jinja2\b",
    "pyyaml": r"^\s*(from|import) yaml\b",
    "docker": r"^\s*(from|import) docker\b",
    "fabric": r"^\s*(from|import) fabric\b",  # hearth exec / collect (src/hearth/fleet)
    "pytest": r"^\s*(from|import) pytest\b",
    "pytest-testinfra": r'"--hosts=',  # testinfra's option (src/hearth/audit.py)
    "pytest-xdist": r'"-n", str\(',  # xdist's workers (src/hearth/audit.py)
    "click": r"^\s*(from|import) click\b",
    "rich": r"^\s*(from|import) rich\b",
    "bcrypt": r"^\s*(from|import) bcrypt\b",  # monitoring_tls (hearth.monitoring.webauth)
    "mitogen": r'find_spec\("ansible_mitogen"\)',  # the default strategy (hearth.runner)
}


def test_every_runtime_dependency_is_used() -> None:
    """A dependency nothing uses is still installed everywhere and carried, with everything it
    pulls in, as wheels in every offline bundle: remove it, or use it where it belongs."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [re.split(r"[<>=!~ \[]", d, maxsplit=1)[0].lower() for d in project["dependencies"]]
    unknown = sorted(set(names) - set(DEPENDENCY_USE))
    assert not unknown, f"add how these dependencies are used to DEPENDENCY_USE: {unknown}"
    sources = "\n".join(p.read_text() for p in [*SRC.rglob("*.py"), *PLUGINS.rglob("*.py")])
    unused = [n for n in names if not re.search(DEPENDENCY_USE[n], sources, re.M)]
    assert not unused, f"runtime dependencies nothing uses: {unused}"
