"""Tests never touch a lab they did not create (issue 9: after scripts/lab-demo.sh, scripts/test.sh
tore down the demo's lab).

A lab is started as an operator starts one (`hearth lab up`, on the id of the foundation tests'
own lab); then the session fixture (a pytest of its own with HEARTH_LAB_ID on that lab), the
extra labs' fixture (``labkit.owned_lab``) and ``hearth.lab.up(owner=…)`` each refuse it, naming
the id and what to do, and the operator's host is still running, the same container, untouched.
HEARTH_LAB_ID=0 (the operator's own lab) is refused before Docker is asked anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from labkit import TEST_OWNER, hearth, owned_lab

from hearth import lab as lab_mod

pytestmark = pytest.mark.lab

HERE = Path(__file__).resolve()


def test_session_lab_hosts_are_the_tests_own(lab: lab_mod.LabState) -> None:
    """The session lab's hosts carry the tests' owner label (what lets a later session with
    HEARTH_KEEP_LAB=1 reuse them, and nothing else). Also the probe the refusal test runs."""
    for host in lab.hosts:
        labels = _inspect(host.container)["Config"]["Labels"]
        assert labels.get(lab_mod.owner_label()) == TEST_OWNER, labels


def _inspect(container: str) -> dict[str, Any]:
    done = subprocess.run(
        ["docker", "inspect", container], capture_output=True, text=True, check=True
    )
    found: dict[str, Any] = json.loads(done.stdout)[0]
    return found


def _session_fixture_on(lab_id: int) -> subprocess.CompletedProcess[str]:
    """The session ``lab`` fixture of tests/integration/conftest.py, in a pytest of its own."""
    env = dict(os.environ, HEARTH_LAB_ID=str(lab_id))
    env.pop("HEARTH_KEEP_LAB", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         f"{HERE}::test_session_lab_hosts_are_the_tests_own"],
        capture_output=True, text=True, env=env, check=False, cwd=HERE.parents[2],
    )  # fmt: skip


def test_a_lab_the_tests_did_not_create_is_refused_and_left_running(tmp_path: Path) -> None:
    with owned_lab("foundation") as owned:  # free now; this test plays the operator on it
        started = hearth("lab", "up", "--hosts", "1", "--inventory-dir", str(tmp_path / "op"))
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        container = lab_mod.container_name(1)
        before = _inspect(container)
        assert before["Config"]["Labels"][lab_mod.owner_label()] == lab_mod.OPERATOR
        said = (
            f"lab {owned.id} (HEARTH_LAB_ID={owned.id}) has hosts that {TEST_OWNER} did not "
            f"create: {container} (running)"
        )

        session = _session_fixture_on(owned.id)
        assert session.returncode != 0, session.stdout[-3000:]
        assert said in session.stdout, session.stdout[-3000:]
        assert f"HEARTH_LAB_ID={owned.id} hearth lab down" in session.stdout

        refused = pytest.raises(pytest.fail.Exception, match=r"did not create")
        with refused, owned_lab("foundation"):
            pytest.fail("an extra lab's fixture reused a lab the tests did not create")
        with pytest.raises(lab_mod.LabInUseError, match=r"did not create"):
            lab_mod.up(1, inventory_dir=tmp_path / "tests", owner=TEST_OWNER)

        after = _inspect(container)
        assert after["Id"] == before["Id"], "the operator's host was replaced"
        assert after["State"] == before["State"], "the operator's host was stopped or restarted"
        assert after["State"]["Running"] is True
        status = hearth("lab", "status")
        assert "lab1" in status.stdout and "running" in status.stdout, status.stdout


def test_lab_zero_is_never_a_test_lab() -> None:
    session = _session_fixture_on(0)
    assert session.returncode != 0
    assert "HEARTH_LAB_ID=0 is the operator's own lab" in session.stdout, session.stdout[-3000:]
