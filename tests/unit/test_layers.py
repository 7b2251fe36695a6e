"""hearth.layers: which roles each host gets, read from the playbooks."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import InventoryFactory, write_tree

from hearth import layers
from hearth.errors import InvalidInputError
from hearth.inventory import load_inventory
from hearth.layers import iter_plays, role_name, roles_for_hosts


def test_roles_follow_imports_in_play_order(
    make_inventory: InventoryFactory, playbook: Path
) -> None:
    inventory = load_inventory(make_inventory())
    assert roles_for_hosts(inventory, playbook) == {
        "gpu01": ["common", "inference"],
        "gpu02": ["common", "inference"],
        "mon01": ["common"],
    }


def test_patterns_are_resolved_by_ansible(make_inventory: InventoryFactory, tmp_path: Path) -> None:
    write_tree(
        tmp_path / "pb",
        {
            "site.yml": """\
            - hosts: "gpu_nodes:!gpu02"
              roles: [{name: nvidia}]
            - hosts: [monitoring, gpu02]
              roles:
                - role: ../roles/prometheus
                  tags: [monitoring]
            - hosts: "all:&monitoring"
              roles: [node_exporter]
            - hosts: "{{ 'gpu' ~ '_nodes' }}"
              roles: [inference]
            - hosts: all
              tasks:
                - ansible.builtin.debug: {msg: no roles, ignored}
            - hosts: localhost
              roles: [controller_only]
            """
        },
    )
    inventory = load_inventory(make_inventory())
    assert roles_for_hosts(inventory, tmp_path / "pb" / "site.yml") == {
        "gpu01": ["nvidia", "inference"],
        "gpu02": ["prometheus", "inference"],
        "mon01": ["prometheus", "node_exporter"],
    }


def test_nested_imports_are_relative_to_the_importing_file(
    make_inventory: InventoryFactory, tmp_path: Path
) -> None:
    write_tree(
        tmp_path / "pb",
        {
            "site.yml": "- import_playbook: layers/all.yml\n",
            "layers/all.yml": "- import_playbook: deeper/gpu.yml\n",
            "layers/deeper/gpu.yml": "- hosts: gpu_nodes\n  roles: [nvidia, nvidia]\n",
        },
    )
    inventory = load_inventory(make_inventory())
    result = roles_for_hosts(inventory, tmp_path / "pb" / "site.yml")
    assert result == {"gpu01": ["nvidia"], "gpu02": ["nvidia"], "mon01": []}
    plays = iter_plays(tmp_path / "pb" / "site.yml")
    assert [p.name for p, _ in plays] == ["gpu.yml"]


def test_missing_import_names_both_files(make_inventory: InventoryFactory, tmp_path: Path) -> None:
    write_tree(tmp_path / "pb", {"site.yml": "- import_playbook: layers/gone.yml\n"})
    inventory = load_inventory(make_inventory())
    with pytest.raises(InvalidInputError, match=r"site\.yml: import_playbook 'layers/gone\.yml'"):
        roles_for_hosts(inventory, tmp_path / "pb" / "site.yml")


def test_import_loop_is_refused(make_inventory: InventoryFactory, tmp_path: Path) -> None:
    write_tree(
        tmp_path / "pb",
        {"a.yml": "- import_playbook: b.yml\n", "b.yml": "- import_playbook: a.yml\n"},
    )
    inventory = load_inventory(make_inventory())
    with pytest.raises(InvalidInputError, match="import_playbook loop"):
        roles_for_hosts(inventory, tmp_path / "pb" / "a.yml")


def test_missing_playbook(make_inventory: InventoryFactory, tmp_path: Path) -> None:
    inventory = load_inventory(make_inventory())
    with pytest.raises(InvalidInputError, match="playbook not found"):
        roles_for_hosts(inventory, tmp_path / "nope.yml")


def test_playbook_syntax_error(make_inventory: InventoryFactory, tmp_path: Path) -> None:
    (tmp_path / "site.yml").write_text("- hosts: all\n  roles: [common\n")
    inventory = load_inventory(make_inventory())
    with pytest.raises(InvalidInputError, match=r"site\.yml:\d+: YAML syntax error"):
        roles_for_hosts(inventory, tmp_path / "site.yml")


def test_empty_playbook_gives_no_roles(make_inventory: InventoryFactory, tmp_path: Path) -> None:
    (tmp_path / "site.yml").write_text("")
    inventory = load_inventory(make_inventory())
    assert roles_for_hosts(inventory, tmp_path / "site.yml") == {
        "gpu01": [],
        "gpu02": [],
        "mon01": [],
    }


def test_default_playbook_is_site_yml_under_the_content_root(
    make_inventory: InventoryFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = tmp_path / "content"
    write_tree(content, {"playbooks/site.yml": "- hosts: monitoring\n  roles: [grafana]\n"})
    monkeypatch.setenv("HEARTH_CONTENT_ROOT", str(content))
    inventory = load_inventory(make_inventory())
    assert roles_for_hosts(inventory)["mon01"] == ["grafana"]


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("common", "common"),
        ({"role": "inference", "tags": ["x"]}, "inference"),
        ({"name": "nvidia"}, "nvidia"),
        ("../roles/monitoring/", "monitoring"),
        ({"tags": ["x"]}, None),
        (3, None),
    ],
)
def test_role_name(entry: object, expected: str | None) -> None:
    assert role_name(entry) == expected


def test_a_playbook_is_parsed_once_until_it_changes(tmp_path: Path) -> None:
    """Each rule a role's preflight runs asks for the host's roles; the playbooks are parsed
    once per process and again only when a file changes."""
    book = tmp_path / "site.yml"
    book.write_text("- hosts: gpu_nodes\n  roles: [nvidia_driver]\n")
    assert layers.roles_for_group_names("h", ["gpu_nodes"], book) == ["nvidia_driver"]
    first = layers._PARSED[book.resolve()]
    assert layers.roles_for_group_names("h", ["gpu_nodes"], book) == ["nvidia_driver"]
    assert layers._PARSED[book.resolve()] is first  # not parsed again
    book.write_text("- hosts: gpu_nodes\n  roles: [nvidia_driver, cuda]\n")
    assert layers.roles_for_group_names("h", ["gpu_nodes"], book) == ["nvidia_driver", "cuda"]
