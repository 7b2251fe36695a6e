"""Fixtures for tests against the real lab: systemd hosts as containers, reached over SSH.

One lab of 3 hosts serves the whole session (``HEARTH_LAB_ID``, default 7; never 0, the operator's
own lab); the tests that need a lab of their own use the next ids (``labkit.EXTRA_LABS``).
scripts/test.sh runs the two groups of modules below side by side, the second on the next block
of ids. A lab
with hosts the tests did not create is never reused nor removed: the test fails naming it. The
session lab is removed at the end unless ``HEARTH_KEEP_LAB=1`` or it was found running.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from labkit import (
    DEFAULT_LAB_ID,
    EXTRA_LABS,
    TEST_OWNER,
    Converged,
    owned_lab,
    write_inventory,
)

os.environ.setdefault("HEARTH_LAB_ID", str(DEFAULT_LAB_ID))

from hearth import lab as lab_mod

# Two groups of modules, each with a session lab of its own: scripts/test.sh runs them side by
# side, one pytest per group (HEARTH_TEST_GROUP=lab-a|lab-b), the second on the block of lab ids
# after the first group's (HEARTH_LAB_ID + LAB_BLOCK). Without HEARTH_TEST_GROUP, one pytest runs
# both groups, one after the other, on one session lab. Within a group, modules run in this
# order: those that share a converged configuration of the session lab (``SHARES``) run one after
# the other, so that it is converged once for all of them. Modules not named here join lab-a.
GROUPS = {
    "lab-a": (
        "test_lab_ownership", "test_foundation", "test_gpu_layer",  # labs of their own
        "test_audit_connect", "test_audit_evidence", "test_audit_truth",
        "test_inference", "test_bench",  # SHARES = "inference"
        "test_monitoring", "test_fleet",  # SHARES = "monitoring"
        "test_model_store", "test_gateway",
    ),
    "lab-b": (
        "test_images", "test_airgap",  # labs of their own (labkit.EXTRA_LABS)
        "test_rollout", "test_upgrade",
    ),
}  # fmt: skip
LAB_BLOCK = 1 + max(EXTRA_LABS.values())


def _group(item: pytest.Item) -> tuple[str, int]:
    name = item.path.stem
    for index, (group, modules) in enumerate(GROUPS.items()):
        if name in modules:
            return group, index * 100 + modules.index(name)
    return "lab-a", 99


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wanted = os.environ.get("HEARTH_TEST_GROUP", "")
    if wanted and wanted not in GROUPS:
        raise pytest.UsageError(f"HEARTH_TEST_GROUP={wanted!r}: expected one of {list(GROUPS)}")
    for item in items:
        if "integration" in str(item.path):
            item.add_marker(pytest.mark.lab)
    if wanted:
        other = [item for item in items if _group(item)[0] != wanted]
        if other:
            config.hook.pytest_deselected(items=other)
            items[:] = [item for item in items if _group(item)[0] == wanted]
    items.sort(key=lambda item: _group(item)[1])  # stable: a module's tests keep their order


@pytest.fixture(scope="session")
def lab_configuration() -> Iterator[Converged]:
    """The session lab's converged configuration, shared by the modules that name it."""
    held = Converged()
    yield held
    held.release()


@pytest.fixture(scope="module", autouse=True)
def _one_configuration_at_a_time(
    request: pytest.FixtureRequest, lab_configuration: Converged
) -> None:
    """Before a module that does not share the configuration the lab holds, release it."""
    held = lab_configuration
    if held.key is not None and getattr(request.module, "SHARES", None) != held.key:
        held.release()


@pytest.fixture(scope="session")
def lab() -> Iterator[lab_mod.LabState]:
    """Three running lab hosts (created if needed) for the whole test session; refused (every
    test that needs it fails, naming the lab) when that lab has hosts the tests did not create."""
    with owned_lab() as owned:
        yield lab_mod.up(
            3,
            inventory_dir=Path(os.environ.get("HEARTH_TEST_TMP", "/tmp"))
            / f"hearth-lab-{owned.id}-inv",
            owner=TEST_OWNER,
        )


@pytest.fixture(scope="session")
def engine_images() -> dict[str, Any]:
    """Hearth's locally built images (llama.cpp, Triton, the front door), built or loaded from
    the cache once per session, side by side (debootstrap mostly waits on the network)."""
    import shutil
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    from hearth import images

    docker = shutil.which("docker") is not None and (
        subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0
    )
    if not docker or os.geteuid() != 0:
        pytest.skip("needs a Docker engine and root (debootstrap)")
    with ThreadPoolExecutor(len(images.RECIPES)) as pool:
        built = list(pool.map(images.ensure_image, images.RECIPES))
    for image in built:
        print(f"\nimage {image.tag}: {image.how} in {image.seconds:.1f} s ({image.size_mb:.0f} MB)")
    return dict(zip(images.RECIPES, built, strict=True))


@pytest.fixture
def lab_inventory(lab: lab_mod.LabState, tmp_path: Path) -> Path:
    """The lab's hosts in one group, with no layer groups: only the base layer applies."""
    return write_inventory(lab, tmp_path / "inventory")
