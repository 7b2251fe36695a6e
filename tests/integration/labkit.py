"""Helpers for the lab integration tests: the real CLI, commands inside hosts, inventories."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from hearth import lab as lab_mod
from hearth.errors import HearthError

HEARTH = [sys.executable, "-m", "hearth"]

# The test session's labs. HEARTH_LAB_ID (default 7) is the session lab that most tests share;
# each test that needs a lab of its own (a cold host, an air-gapped network) uses the next id,
# its offset here, so HEARTH_LAB_ID=N holds labs N to N + 3. Lab 0 (the operator's) is never one
# of them and ids never wrap round (hearth.lab.lab_id_block): a block past the last id is refused.
EXTRA_LABS = {"foundation": 1, "gpu-layer": 2, "airgap": 3}
DEFAULT_LAB_ID = 7
# The owner label of every host the tests create (hearth.lab.up(owner=…)): a lab with hosts of
# anyone else (the operator's lab, a lab made with `hearth lab up`) is never reused nor removed.
TEST_OWNER = "hearth-tests"


def session_lab_id() -> int:
    """The session lab's id, checked with the extra labs' block (never 0, never wrapping)."""
    raw = os.environ.get("HEARTH_LAB_ID", str(DEFAULT_LAB_ID))
    try:
        os.environ["HEARTH_LAB_ID"] = raw
        base = lab_mod.lab_id()
        lab_mod.lab_id_block(base, 1 + max(EXTRA_LABS.values()))
    except HearthError as exc:
        pytest.fail(str(exc), pytrace=False)
    return base


def extra_lab_id(purpose: str) -> int:
    """The id of the lab of ``purpose`` (a key of :data:`EXTRA_LABS`)."""
    return session_lab_id() + EXTRA_LABS[purpose]


@dataclass
class OwnedLab:
    id: int
    found_running: bool  # the tests' own hosts were there already (kept with HEARTH_KEEP_LAB=1)


@contextmanager
def owned_lab(purpose: str | None = None, cold: bool = False) -> Iterator[OwnedLab]:
    """HEARTH_LAB_ID switched to the lab of ``purpose`` (None: the session lab) for the block and
    restored after. Before anything is created, a lab with hosts the tests did not create is
    refused: the test fails naming the id and what to do, and that lab is left as it is. ``cold``
    removes the tests' own hosts kept from an earlier run first. At the end, the lab is removed
    if the block created it, unless HEARTH_KEEP_LAB=1; hosts it found running stay."""
    wanted = session_lab_id() if purpose is None else extra_lab_id(purpose)
    previous = os.environ.get("HEARTH_LAB_ID")
    os.environ["HEARTH_LAB_ID"] = str(wanted)
    claimed: OwnedLab | None = None
    try:
        try:
            claimed = OwnedLab(wanted, lab_mod.claim(TEST_OWNER))
        except HearthError as exc:
            pytest.fail(str(exc), pytrace=False)
        if cold and claimed.found_running:
            lab_mod.down()
            claimed.found_running = False
        yield claimed
    finally:
        if (
            claimed is not None
            and not claimed.found_running
            and os.environ.get("HEARTH_KEEP_LAB") != "1"
        ):
            lab_mod.down()
        if previous is None:
            os.environ.pop("HEARTH_LAB_ID", None)
        else:
            os.environ["HEARTH_LAB_ID"] = previous


def hearth(
    *args: str, check: bool = False, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real ``hearth`` CLI in a subprocess (COLUMNS wide enough for whole lines)."""
    full_env = dict(os.environ, COLUMNS="200", NO_COLOR="1", **(env or {}))
    return subprocess.run(
        [*HEARTH, *args], capture_output=True, text=True, check=check, env=full_env
    )


def container_exec(
    state: lab_mod.LabState, host: str, *cmd: str
) -> subprocess.CompletedProcess[str]:
    """Run a command inside a lab host through Docker (the tests' view of the truth, not SSH)."""
    container = next(h.container for h in state.hosts if h.name == host)
    return subprocess.run(
        ["docker", "exec", container, *cmd], capture_output=True, text=True, check=False
    )


def write_inventory(
    state: lab_mod.LabState,
    directory: Path,
    group_vars: dict[str, Any] | None = None,
    groups: dict[str, list[str]] | None = None,
) -> Path:
    """An inventory over the lab's hosts: its connection settings plus the given vars/groups."""
    directory.mkdir(parents=True, exist_ok=True)
    lab_inv = Path(state.inventory).parent
    gv = directory / "group_vars" / "all"
    gv.mkdir(parents=True, exist_ok=True)
    shutil.copy(lab_inv / "group_vars" / "all" / "lab.yml", gv / "lab.yml")
    if group_vars:
        (gv / "site.yml").write_text(yaml.safe_dump(group_vars, sort_keys=False))
    children: dict[str, Any] = {
        "lab": {"hosts": {h.name: {"ansible_host": h.address} for h in state.hosts}}
    }
    for group, members in (groups or {}).items():
        children[group] = {"hosts": {m: {} for m in members}}
    (directory / "hosts.yml").write_text(
        yaml.safe_dump({"all": {"children": children}}, sort_keys=False)
    )
    return directory / "hosts.yml"


def vault_front_door_key(directory: Path, key: str, name: str = "lab-test") -> Path:
    """An inventory's vault password file (beside ``directory``) and its front door API key,
    vault-encrypted in group_vars/frontdoor/vault.yml; returns the password file."""
    vault = directory.parent / "vault-password"
    vault.write_text(f"{directory.parent.name} lab vault password\n")
    vault.chmod(0o600)
    front = directory / "group_vars" / "frontdoor"
    front.mkdir(parents=True, exist_ok=True)
    encrypted = lab_mod.vault_encrypt(key, vault)
    (front / "vault.yml").write_text(
        f"front_door_api_keys:\n  - name: {name}\n    key: "
        + encrypted.replace("\n", "\n    ")
        + "\n"
    )
    return vault


def files_holding(
    roots: Iterable[Path],
    secrets: Iterable[str],
    since: float,
    skip: Callable[[Path], bool] | None = None,
) -> list[str]:
    """The files under ``roots`` changed at or after ``since`` that hold any of ``secrets``,
    except those ``skip`` says the test wrote itself. /tmp is shared with the test groups that run
    side by side (and with other runs on the machine): a directory or file that vanishes while
    this walks or reads it was theirs, and is passed over, not an error."""
    needles = [secret.encode() for secret in secrets]
    found = []
    for root in roots:
        for top, _, names in os.walk(root):  # onerror=None: a vanished directory is passed over
            for name in names:
                path = Path(top) / name
                try:
                    fresh = path.is_file() and path.stat().st_mtime >= since
                except OSError:
                    continue
                if fresh and not (skip and skip(path)) and _holds_any(path, needles):
                    found.append(str(path))
    return found


def _holds_any(path: Path, needles: list[bytes], block: int = 1 << 23) -> bool:
    """Whether the file holds one of ``needles``, read in blocks (/tmp may hold large files)."""
    keep = max(len(needle) for needle in needles)
    tail = b""
    try:
        with path.open("rb") as stream:
            for chunk in iter(lambda: stream.read(block), b""):
                if any(needle in tail + chunk for needle in needles):
                    return True
                tail = chunk[-keep:]
    except FileNotFoundError:  # removed between the walk and the read
        return False
    return False


T = TypeVar("T")


class Converged:
    """The session lab holds one converged configuration at a time, named by a key: the modules
    that declare the same key in ``SHARES`` (and run one after the other, see ``ORDER``) get the
    configuration converged once, by the first of them, and kept for the next; a module with
    another key, or none, releases it first (its clean-up runs: engines removed, ports freed)."""

    def __init__(self) -> None:
        self.key: str | None = None
        self.value: Any = None
        self._stack = contextlib.ExitStack()

    def get(self, key: str, make: Callable[[], contextlib.AbstractContextManager[T]]) -> T:
        """The configuration ``key``, converged by ``make`` (a context manager: set up, yield,
        clean up) unless it is the one the lab holds now."""
        if self.key != key:
            self.release()
            self.value = self._stack.enter_context(make())
            self.key = key
        return self.value  # type: ignore[no-any-return]

    def release(self) -> None:
        """Clean up the configuration the lab holds (if any)."""
        stack, self._stack, self.key, self.value = self._stack, contextlib.ExitStack(), None, None
        stack.close()
