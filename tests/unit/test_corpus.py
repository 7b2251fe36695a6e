"""The corpus of bad inventories (tests/corpus/<case>/), each written as an operator would.

Every case goes through `hearth check` and must leave with its exit code (2), naming what
``expect.yml`` lists (file, key, host, the rule's words). Cases marked ``up: true`` also go
through `hearth up`: exit 2 (never 4), the same culprit named, and no ansible-runner run started
(no run directory under a fresh HEARTH_HOME; ``home: DIR`` copies the case's DIR into it
first, e.g. certificates of `hearth tls init`). The hosts are on loopback with a closed port
(127.0.0.1:1, ::1 port 1), so a contacted host would show as unreachable (exit 4), not as 2.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from hearth import cli, paths

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
CASES = sorted(p.name for p in CORPUS.iterdir() if (p / "expect.yml").is_file())
UP_CASES = [c for c in CASES if yaml.safe_load((CORPUS / c / "expect.yml").read_text()).get("up")]


def _expect(case: str) -> dict[str, Any]:
    data = yaml.safe_load((CORPUS / case / "expect.yml").read_text())
    assert isinstance(data, dict)
    return data


def _hearth(
    args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str]:
    monkeypatch.chdir(CORPUS.parent.parent)  # paths in messages are shown relative to the cwd
    with pytest.raises(SystemExit) as done:
        cli.main(args)
    out = capsys.readouterr()
    code = done.value.code
    return (code if isinstance(code, int) else 1), out.out + out.err


def _args(case: str, command: str) -> list[str]:
    expect = _expect(case)
    if expect.get("home"):  # what `hearth tls init` left in HEARTH_HOME (certificates)
        shutil.copytree(CORPUS / case / expect["home"], paths.hearth_home(), dirs_exist_ok=True)
    args = [command, "-i", str(CORPUS / case / "hosts.yml")]
    if expect.get("vault_password_file"):
        args += ["--vault-password-file", str(CORPUS / case / expect["vault_password_file"])]
    return args


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("HEARTH_HOME", str(home))
    monkeypatch.setenv("COLUMNS", "400")
    return home


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 60
    assert len(UP_CASES) >= 30


@pytest.mark.parametrize("case", CASES)
def test_check_refuses(
    case: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    expect = _expect(case)
    code, output = _hearth(_args(case, "check"), capsys, monkeypatch)
    assert code == expect["exit"], output
    flat = " ".join(output.split())
    for needle in expect["contains"]:
        assert " ".join(str(needle).split()) in flat, f"{needle!r} not in:\n{output}"
    assert "nothing was changed" in output.lower()


@pytest.mark.parametrize("case", UP_CASES)
def test_up_refuses_before_any_host(
    case: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    _home: Path,
) -> None:
    expect = _expect(case)
    code, output = _hearth(_args(case, "up"), capsys, monkeypatch)
    assert code == 2, output  # never 4: no host was contacted
    flat = " ".join(output.split())
    for needle in expect["contains"]:
        assert " ".join(str(needle).split()) in flat, f"{needle!r} not in:\n{output}"
    assert "hearth up" not in output  # the banner printed just before a run starts
    assert not paths.runs_dir().exists(), "an ansible-runner run directory was created"
    assert not paths.collections_dir().exists(), "collections were installed"
