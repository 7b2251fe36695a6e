"""Lab ids: the id range and its subnets, the tests' block of labs (never 0, never wrapping), and
the refusal of a lab whose hosts someone else created (issue 9: the tests tore down the demo's
lab 0)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hearth import lab
from hearth.errors import InvalidInputError


def test_every_lab_id_has_its_own_two_subnets_inside_172_29(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[str, tuple[int, bool]] = {}
    for lab_id in range(lab.MAX_LAB_ID + 1):
        monkeypatch.setenv("HEARTH_LAB_ID", str(lab_id))
        for airgapped in (False, True):
            net = ipaddress.ip_network(lab.subnet(airgapped))
            assert net.subnet_of(ipaddress.ip_network("172.29.0.0/16")), net
            assert str(net) not in seen, (lab_id, airgapped, seen.get(str(net)))
            seen[str(net)] = (lab_id, airgapped)
            last = ipaddress.ip_address(lab.host_address(lab.MAX_HOSTS - 1, airgapped))
            assert last in net and last != net.broadcast_address
    assert lab.subnet(True) == "172.29.255.0/24"  # the last id takes the last subnet
    monkeypatch.setenv("HEARTH_LAB_ID", "27")
    assert (lab.container_name(1), lab.network_name(False)) == ("hearth-lab-27-1", "hearth-lab-27")
    assert lab.owner_label() == "io.hearth.lab-27.owner"
    for wrong in ("28", "-1", "x", ""):
        monkeypatch.setenv("HEARTH_LAB_ID", wrong)
        with pytest.raises(InvalidInputError, match=f"HEARTH_LAB_ID={wrong!r}: .* 0 to 27"):
            lab.lab_id()


def test_the_tests_labs_are_a_block_that_never_holds_0_and_never_wraps() -> None:
    assert lab.lab_id_block(7, 4) == [7, 8, 9, 10]  # the default: session lab 7, extras 8-10
    assert lab.lab_id_block(3, 4) == [3, 4, 5, 6]
    assert lab.lab_id_block(24, 4) == [24, 25, 26, 27]
    for base in range(lab.MAX_LAB_ID + 1):
        try:
            block = lab.lab_id_block(base, 4)
        except InvalidInputError:
            continue
        assert 0 not in block and block == sorted(block) and block[-1] <= lab.MAX_LAB_ID
    with pytest.raises(InvalidInputError, match=r"HEARTH_LAB_ID=0 is the operator's own lab"):
        lab.lab_id_block(0, 4)
    with pytest.raises(
        InvalidInputError, match=r"HEARTH_LAB_ID=25: the tests use 4 labs .*25 to 28.* 1 to 24"
    ):
        lab.lab_id_block(25, 4)


# A stand-in for the Docker SDK's client, listing containers with their labels: only what
# hearth.lab.claim reads, and a record of anything that would change a host.
@dataclass
class _Container:
    name: str
    status: str
    labels: dict[str, str]
    touched: list[str] = field(default_factory=list)

    def remove(self, **_: Any) -> None:
        self.touched.append(f"remove {self.name}")

    def start(self) -> None:
        self.touched.append(f"start {self.name}")


@dataclass
class _Containers:
    found: list[_Container]

    def list(self, all: bool, filters: dict[str, str]) -> list[_Container]:
        assert all, "stopped hosts are someone's lab too"
        return [c for c in self.found if filters["label"] in c.labels]


@dataclass
class _Client:
    containers: _Containers


def _host(name: str, status: str, owner: str | None) -> _Container:
    labels = {lab.label(): "1", f"{lab.label()}.host": name}
    if owner is not None:
        labels[lab.owner_label()] = owner
    return _Container(f"hearth-lab-4-{name[-1]}", status, labels)


def test_a_lab_with_someone_elses_hosts_is_refused_and_left_alone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HEARTH_LAB_ID", "4")
    hosts = [
        _host("lab1", "running", lab.OPERATOR),
        _host("lab2", "exited", None),  # made before hosts carried an owner
        _host("lab3", "running", "hearth-tests"),
    ]
    monkeypatch.setattr(lab, "docker_client", lambda: _Client(_Containers(hosts)))
    monkeypatch.setattr(lab, "ensure_image", lambda *a, **k: pytest.fail("image touched"))
    with pytest.raises(lab.LabInUseError) as refused:
        lab.up(3, inventory_dir=tmp_path, owner="hearth-tests")
    message = str(refused.value)
    assert refused.value.exit_code == 2
    assert message.startswith("lab 4 (HEARTH_LAB_ID=4) has hosts that hearth-tests did not create:")
    assert "hearth-lab-4-1 (running), hearth-lab-4-2 (exited)." in message
    assert "hearth-lab-4-3" not in message  # the tests' own host is not someone else's
    assert "HEARTH_LAB_ID=4 hearth lab down" in message
    assert [t for h in hosts for t in h.touched] == []


def test_the_tests_reuse_only_their_own_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEARTH_LAB_ID", "4")
    mine = [_host("lab1", "running", "hearth-tests"), _host("lab2", "running", "hearth-tests")]
    monkeypatch.setattr(lab, "docker_client", lambda: _Client(_Containers(mine)))
    assert lab.claim("hearth-tests") is True  # kept from an earlier run: theirs to reuse
    monkeypatch.setattr(lab, "docker_client", lambda: _Client(_Containers([])))
    assert lab.claim("hearth-tests") is False  # a free lab
    assert lab.foreign_hosts(
        [("c1", "running", {lab.owner_label(): "hearth-tests"}), ("c2", "created", {})],
        "hearth-tests",
    ) == ["c2 (created)"]


def test_the_two_test_groups_hold_disjoint_blocks_of_lab_ids() -> None:
    """scripts/test.sh runs the second group of lab tests on HEARTH_LAB_ID + 4: a block as long
    as the first group's (its session lab and labkit.EXTRA_LABS), so they never share a lab."""
    import ast
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    labkit = ast.parse((root / "tests" / "integration" / "labkit.py").read_text())
    extra = next(
        ast.literal_eval(node.value)
        for node in labkit.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "EXTRA_LABS" for t in node.targets)
    )
    script = (root / "scripts" / "test.sh").read_text()
    offsets = re.findall(r'group lab-b "\$\(\(base \+ (\d+)\)\)"', script)
    assert offsets == [str(1 + max(extra.values()))], offsets


def test_lab_inventory_drops_what_an_earlier_lab_up_wrote_and_keeps_the_rest(
    tmp_path: Path,
) -> None:
    """A file an earlier `hearth lab up` wrote (its header) that this one does not write is
    removed: another Hearth version's variables would make `hearth check` refuse the lab's own
    inventory. A file the operator added is kept."""
    header = "# Written by `hearth lab up`; rewritten on every run. Do not edit.\n"
    stale = tmp_path / "group_vars" / "all" / "vault.yml"
    stale.parent.mkdir(parents=True)
    stale.write_text(header + "hearth_scrape_token: gone\n")
    mine = tmp_path / "group_vars" / "all" / "site.yml"
    mine.write_text("hearth_site: mine\n")
    written = lab.write_inventory(lab.LabState(), tmp_path)
    assert written == tmp_path / "hosts.yml" and written.read_text().startswith(header)
    assert not stale.exists()
    assert mine.read_text() == "hearth_site: mine\n"
    assert (tmp_path / "group_vars" / "all" / "lab.yml").read_text().startswith(header)
