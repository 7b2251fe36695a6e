"""hearth.inventory: load an inventory through Ansible and report every problem at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import InventoryFactory

from hearth.errors import EXIT_INVALID
from hearth.inventory import (
    MISSING,
    Inventory,
    InventoryInvalid,
    Problem,
    check_inventory,
    load_inventory,
    validate_inventory,
)
from hearth.yamlsrc import LineMap, VaultValue, load_yaml_text

INV = "inventories/site"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from tmp_path so that problems show short relative paths (inventories/site/…)."""
    monkeypatch.chdir(tmp_path)


def validate(hosts: Path, roles_dir: Path, playbook: Path) -> list[str]:
    return [str(p) for p in validate_inventory(hosts, roles_dir, playbook)]


def one(messages: list[str], needle: str) -> str:
    found = [m for m in messages if needle in m]
    assert len(found) == 1, f"expected one message with {needle!r}, got:\n" + "\n".join(messages)
    return found[0]


# ------------------------------------------------------------------------- valid inventories


def test_valid_inventory_passes(
    make_inventory: InventoryFactory, roles_dir: Path, playbook: Path
) -> None:
    hosts = make_inventory()
    assert validate(hosts, roles_dir, playbook) == []
    inventory = check_inventory(hosts, roles_dir, playbook)
    assert inventory.hosts == ["gpu01", "gpu02", "mon01"]
    assert inventory.groups["gpu_nodes"] == ["gpu01", "gpu02"]
    assert inventory.groups["monitoring"] == ["mon01"]


def test_operator_variables_are_ignored(
    make_inventory: InventoryFactory, roles_dir: Path, playbook: Path
) -> None:
    hosts = make_inventory(
        {
            "group_vars/monitoring.yml": """\
            my_team: "infra"          # the operator's own variable
            ansible_become: yes       # an Ansible variable Hearth does not declare
            ansible_python_interpreter: /usr/bin/python3
            _common_internal: 3       # internal constants are not inventory keys
            nospec_anything: 1        # a role without an argument spec is not checked
            """
        }
    )
    assert validate(hosts, roles_dir, playbook) == []


def test_templates_pass_type_checks(
    make_inventory: InventoryFactory, roles_dir: Path, playbook: Path
) -> None:
    hosts = make_inventory(
        {
            "group_vars/monitoring.yml": """\
            base_swap: 7
            common_swappiness: "{{ base_swap }}"
            common_manage_swap: "{{ hearth_lab | bool }}"
            """
        }
    )
    assert validate(hosts, roles_dir, playbook) == []


# ------------------------------------------------------------------------- bad inventories


def test_yaml_syntax_error_in_hosts_file(
    make_inventory: InventoryFactory, roles_dir: Path, playbook: Path
) -> None:
    hosts = make_inventory(
        {
            "hosts.yml": """\
            all:
              hosts:
                gpu01: {ansible_host: 10.0.0.1
              vars: {}
            """
        }
    )
    messages = validate(hosts, roles_dir, playbook)
    message = one(messages, "YAML syntax error")
    assert message.startswith(f"{INV}/hosts.yml:4: YAML syntax error")


def test_yaml_syntax_error_in_group_vars(
    make_inventory: InventoryFactory, roles_dir: Path, playbook: Path
) -> None:
    hosts = make_inventory({"group_vars/all.yml": "common_user: alice\ncommon_packages: [htop\n"})
    message = one(validate(hosts, roles_dir, playbook), "YAML syntax error")
    assert message.startswith(f"{INV}/group_vars/all.yml:")


def test_duplicate_host(make_inventory: InventoryFactory, roles_dir: Path, playbook: Path) -> None:
    hosts = make_inventory(
        {
            "hosts.yml": """\
            all:
              children:
                gpu_nodes:
                  hosts:
                    gpu01:
                      ansible_host: 10.0.0.11
                    gpu02:
                      ansible_host: 10.0.0.12
                    gpu01:
                      ansible_host: 10.0.0.13
                monitoring:
                  hosts:
                    mon01:
            """
        }
    )
    message = one(validate(hosts, roles_dir, playbook), "defined twice")
    assert message == (
        f"{INV}/hosts.yml:9: all.children.gpu_nodes.hosts.gpu01: host gpu01 is defined twice "
        "in the same group (first at line 5); YAML silently keeps only the last, remove or merge "
        "one of them"
    )


def test_duplicate_key_in_vars_file(
    make_inventory: InventoryFactory, roles_dir: Path, playbook: Path
) -> None:
    hosts = make_inventory(
        {
            "group_vars/monitoring.yml": """\
            common_swappiness: 1
            common_user: bob
            common_swappiness: 2
            """
        }
    )
    message = one(validate(hosts, roles_dir, playbook), "defined twice")
    assert message.startswith(
        f"{INV}/group_vars/monitoring.yml:3: common_swappiness: defined twice in this file "
        "(first at line 1)"
    )


def test_unknown_hearth_key_with_suggestion(
    make_inventory: InventoryFactory, roles_dir: Path, playbook: Path
) -> None:
    hosts = make_inventory({"group_vars/monitoring.yml": "common_pakages: [htop]\n"})
    message = one(validate(hosts, roles_dir, playbook), "common_pakages")
    assert message.startswith(f"{INV}/group_vars/monitoring.yml:1: common_pakages = ['htop']: ")
    assert "unknown Hearth variable" in message
    assert message.endswith("did you mean common_packages?")


def test_unknown_hearth_prefixed_key(
    make_inventory: InventoryFactory, roles_dir: Path, playbook: Path
) -> None:
    hosts = make_inventory({"group_vars/monitoring.yml": "\nhearth_envirnoment: lab\n"})
    message = one(validate(hosts, roles_dir, playbook), "hearth_envirnoment")
    assert message.startswith(f"{INV}/group_vars/monitoring.yml:2: hearth_envirnoment = 'lab'")
    assert message.endswith("did you mean hearth_environment?")


def test_string_for_int(make_inventory: InventoryFactory, roles_dir: Path, playbook: Path) -> None:
    hosts = make_inventory(
        {"group_vars/monitoring.yml": "common_user: bob\ncommon_swappiness: ten\n"}
    )
    assert validate(hosts, roles_dir, playbook) == [
        f"{INV}/group_vars/monitoring.yml:2: common_swappiness = 'ten': expected an integer"
    ]


def test_quoted_number_for_int_says_remove_quotes(
    make_inventory: InventoryFactory, roles_dir: Path, playbook: Path
) -> None:
    hosts = make_inventory({"group_vars/monitoring.yml": 'common_swappiness: "10"\n'})
    message = one(validate(hosts, roles_dir, playbook), "common_swappiness")
    assert message.endswith("common_swappiness = '10': expected an integer (remove the quotes)")


def test_bool_for_int(make_inventory: InventoryFactory, roles_dir: Path, playbook: Path) -> None:
    hosts = make_inventory({"group_vars/monitoring.yml": "common_swappiness: true\n"})
    message = one(validate(hosts, roles_dir, playbook), "common_swappiness")
    assert message.endswith("common_swappiness = True: expected an integer")


def test_string_false_for_boolean(
    make_inventory: InventoryFactory, roles_dir: Path, playbook: Path
) -> None:
    hosts = make_inventory(
        {"group_vars/monitoring.yml": 'common_manage_swap: "false"\nhearth_lab: "yes"\n'}
    )
    messages = validate(hosts, roles_dir, playbook)
    assert messages == [
        f"{INV}/group_vars/monitoring.yml:1: common_manage_swap = 'false': "
        "expected a boolean (true/false without quotes)",
        f"{INV}/group_vars/monitoring.yml:2: hearth_lab = 'yes': "
        "expected a boolean (true/false without quotes)",
    ]


def test_bad_ip_in_ansible_host(
    make_inventory: InventoryFactory, roles_dir: Path, playbook: Path
) -> None:
    hosts = make_inventory(
        {
            "hosts.yml": """\
            all:
              children:
                gpu_nodes:
                  hosts:
                    gpu01:
                      ansible_host: 10.0.0.300
                    gpu02:
                      ansible_host: "gpu 02.example.com"
            """
        }
    )
    messages = validate(hosts, roles_dir, playbook)
    assert (
        f"{INV}/hosts.yml:6: host gpu01: ansible_host = '10.0.0.300': "
        "expected an IPv4/IPv6 address or a DNS hostname"
    ) in messages
    assert (
        f"{INV}/hosts.yml:8: host gpu02: ansible_host = 'gpu 02.example.com': "
        "expected an IPv4/IPv6 address or a DNS hostname"
    ) in messages


def test_port_out_of_range(
    make_inventory: InventoryFactory, roles_dir: Path, playbook: Path
) -> None:
    hosts = make_inventory(
        {
            "hosts.yml": """\
            all:
              children:
                gpu_nodes:
                  vars:
                    ansible_port: 70000
                  hosts:
                    gpu01:
                      ansible_port: 0
            """
        }
    )
    messages = validate(hosts, roles_dir, playbook)
    assert (
        f"{INV}/hosts.yml:5: all.children.gpu_nodes.vars.ansible_port = 70000: "
        "expected an integer from 1 to 65535"
    ) in messages
    assert (
        f"{INV}/hosts.yml:8: host gpu01: ansible_port = 0: expected an integer from 1 to 65535"
    ) in messages


def test_value_not_in_choices(
    make_inventory: InventoryFactory, roles_dir: Path, playbook: Path
) -> None:
    hosts = make_inventory(
        {"group_vars/gpu_nodes.yml": "inference_model: m\ninference_engine: ollama\n"}
    )
    assert validate(hosts, roles_dir, playbook) == [
        f"{INV}/group_vars/gpu_nodes.yml:2: inference_engine = 'ollama': "
        "expected one of: vllm, llama_cpp, triton"
    ]


def test_wrong_element_type_in_list(
    make_inventory: InventoryFactory, roles_dir: Path, playbook: Path
) -> None:
    hosts = make_inventory(
        {
            "group_vars/gpu_nodes.yml": """\
            inference_model: m
            inference_ports:
              - 8000
              - http
            """
        }
    )
    assert validate(hosts, roles_dir, playbook) == [
        f"{INV}/group_vars/gpu_nodes.yml:4: inference_ports[1] = 'http': expected an integer"
    ]


def test_list_given_as_string(
    make_inventory: InventoryFactory, roles_dir: Path, playbook: Path
) -> None:
    hosts = make_inventory({"group_vars/monitoring.yml": "common_packages: htop,jq\n"})
    message = one(validate(hosts, roles_dir, playbook), "common_packages")
    assert message.endswith("expected a list (a YAML sequence, not a comma-separated string)")


def test_unknown_key_in_nested_dict_option(
    make_inventory: InventoryFactory, roles_dir: Path, playbook: Path
) -> None:
    hosts = make_inventory(
        {
            "group_vars/monitoring.yml": """\
            common_limits:
              nofile: 1024
              nprocs: 512
            """
        }
    )
    assert validate(hosts, roles_dir, playbook) == [
        f"{INV}/group_vars/monitoring.yml:3: common_limits.nprocs = 512: unknown key in "
        "common_limits (known keys: nofile, nproc); did you mean nproc?"
    ]


def test_missing_required_key_in_list_of_dicts(
    make_inventory: InventoryFactory, roles_dir: Path, playbook: Path
) -> None:
    hosts = make_inventory(
        {
            "group_vars/gpu_nodes.yml": """\
            inference_model: a
            inference_models:
              - name: a
                sha256: "00"
              - name: b
                revision: v1
            """
        }
    )
    assert validate(hosts, roles_dir, playbook) == [
        f"{INV}/group_vars/gpu_nodes.yml:5: inference_models[1].sha256: required key missing "
        "in inference_models[1] (declared by role inference)"
    ]


def test_missing_required_key_names_host_and_role(
    make_inventory: InventoryFactory, roles_dir: Path, playbook: Path
) -> None:
    hosts = make_inventory(
        {
            "group_vars/gpu_nodes.yml": "inference_engine: vllm\n",
            "host_vars/gpu02.yml": "inference_model: phi-3\n",
        }
    )
    assert validate(hosts, roles_dir, playbook) == [
        "host gpu01: inference_model: required by role inference but not set; "
        f"set it in {INV}/group_vars/all.yml (every host) "
        f"or {INV}/host_vars/gpu01.yml (this host only)"
    ]


def test_missing_required_key_suggests_group_vars_all_dir(
    make_inventory: InventoryFactory, roles_dir: Path, playbook: Path
) -> None:
    hosts = make_inventory(
        {
            "group_vars/all.yml": None,
            "group_vars/all/base.yml": "common_user: alice\n",
            "group_vars/gpu_nodes.yml": "inference_engine: vllm\n",
        }
    )
    messages = validate(hosts, roles_dir, playbook)
    assert len(messages) == 2
    assert messages[0] == (
        "host gpu01: inference_model: required by role inference but not set; "
        f"set it in {INV}/group_vars/all/inference.yml (every host) "
        f"or {INV}/host_vars/gpu01.yml (this host only)"
    )
    assert messages[1].startswith("host gpu02: inference_model: required by role inference")


def test_required_key_only_checked_for_hosts_that_get_the_role(
    make_inventory: InventoryFactory, roles_dir: Path, tmp_path: Path
) -> None:
    only_base = tmp_path / "base-only.yml"
    only_base.write_text("- hosts: all\n  roles: [common]\n- hosts: gpu_nodes\n  tasks: []\n")
    hosts = make_inventory({"group_vars/gpu_nodes.yml": "inference_engine: vllm\n"})
    assert validate(hosts, roles_dir, only_base) == []


def test_unknown_group_key_in_hosts_file(
    make_inventory: InventoryFactory, roles_dir: Path, playbook: Path
) -> None:
    hosts = make_inventory(
        {
            "hosts.yml": """\
            all:
              children:
                gpu_nodes:
                  host:
                    gpu01:
                  varz:
                    common_swappiness: 3
            """
        }
    )
    messages = validate(hosts, roles_dir, playbook)
    assert messages == [
        f"{INV}/hosts.yml:4: all.children.gpu_nodes.host: unknown key in group gpu_nodes: "
        "a group may only have hosts, vars and children (Ansible ignores it); did you mean hosts?",
        f"{INV}/hosts.yml:6: all.children.gpu_nodes.varz: unknown key in group gpu_nodes: "
        "a group may only have hosts, vars and children (Ansible ignores it); did you mean vars?",
    ]


def test_hosts_given_as_list(
    make_inventory: InventoryFactory, roles_dir: Path, playbook: Path
) -> None:
    hosts = make_inventory({"hosts.yml": "all:\n  hosts:\n    - gpu01\n    - gpu02\n"})
    messages = validate(hosts, roles_dir, playbook)
    message = one(messages, "all.hosts")
    assert message.startswith(f"{INV}/hosts.yml:3: all.hosts = ['gpu01', 'gpu02']: ")
    assert "expected a mapping of host names" in message


def test_group_vars_for_missing_group(
    make_inventory: InventoryFactory, roles_dir: Path, playbook: Path
) -> None:
    hosts = make_inventory({"group_vars/gpu_node.yml": "inference_model: m\n"})
    assert validate(hosts, roles_dir, playbook) == [
        f"{INV}/group_vars/gpu_node.yml: no group named 'gpu_node' in the inventory, so Ansible "
        "never reads this group_vars file; did you mean gpu_nodes?"
    ]


def test_host_vars_for_missing_host(
    make_inventory: InventoryFactory, roles_dir: Path, playbook: Path
) -> None:
    hosts = make_inventory({"host_vars/gpu09/main.yml": "inference_model: m\n"})
    message = one(validate(hosts, roles_dir, playbook), "gpu09")
    assert message.startswith(
        f"{INV}/host_vars/gpu09: no host named 'gpu09' in the inventory, so Ansible never reads "
        "this host_vars directory"
    )


def test_host_vars_directory_is_validated(
    make_inventory: InventoryFactory, roles_dir: Path, playbook: Path
) -> None:
    hosts = make_inventory({"host_vars/gpu01/tuning.yml": "common_swappiness: high\n"})
    assert validate(hosts, roles_dir, playbook) == [
        f"{INV}/host_vars/gpu01/tuning.yml:1: host gpu01: common_swappiness = 'high': "
        "expected an integer"
    ]


def test_file_shadowed_by_directory(
    make_inventory: InventoryFactory, roles_dir: Path, playbook: Path
) -> None:
    hosts = make_inventory(
        {
            "group_vars/monitoring/a.yml": "common_user: x\n",
            "group_vars/monitoring.yml": "common_user: y\n",
        }
    )
    message = one(validate(hosts, roles_dir, playbook), "monitoring.yml")
    assert message.startswith(
        f"{INV}/group_vars/monitoring.yml: Ansible ignores this file because "
        f"{INV}/group_vars/monitoring/ exists"
    )


def test_two_hosts_with_the_same_address(
    make_inventory: InventoryFactory, roles_dir: Path, playbook: Path
) -> None:
    hosts = make_inventory(
        {
            "hosts.yml": """\
            all:
              children:
                gpu_nodes:
                  hosts:
                    gpu01:
                      ansible_host: 10.0.0.11
                    gpu02:
                      ansible_host: 10.0.0.11
                    gpu03:
                      ansible_host: 10.0.0.11
                      ansible_port: 2222
            """
        }
    )
    assert validate(hosts, roles_dir, playbook) == [
        f"{INV}/hosts.yml:7: ansible_host = '10.0.0.11': hosts gpu01 and gpu02 both connect to "
        "10.0.0.11 port 22; give each host its own ansible_host (or ansible_port)"
    ]


def test_invalid_group_and_host_names(
    make_inventory: InventoryFactory, roles_dir: Path, playbook: Path
) -> None:
    hosts = make_inventory(
        {
            "hosts.yml": """\
            all:
              children:
                gpu-nodes:
                  hosts:
                    "gpu 01":
                gpu_nodes:
                  hosts:
                    gpu01:
            """,
            "group_vars/gpu_nodes.yml": "inference_model: m\n",
        }
    )
    messages = validate(hosts, roles_dir, playbook)
    assert (
        f"{INV}/hosts.yml:3: all.children.gpu-nodes: invalid group name 'gpu-nodes': Ansible "
        "wants letters, digits and _ (a valid Python identifier), warns and may rename it; "
        "call it gpu_nodes"
    ) in messages
    message = one(messages, "invalid host name")
    assert message.startswith(f"{INV}/hosts.yml:5: all.children.gpu-nodes.hosts.gpu 01: ")


def test_null_value_for_option_with_default(
    make_inventory: InventoryFactory, roles_dir: Path, playbook: Path
) -> None:
    hosts = make_inventory({"group_vars/monitoring.yml": "common_swappiness:\n"})
    assert validate(hosts, roles_dir, playbook) == [
        f"{INV}/group_vars/monitoring.yml:1: common_swappiness = None: expected an integer, "
        "got null (remove the key to use the role default)"
    ]


def test_secret_values_are_masked(
    make_inventory: InventoryFactory, roles_dir: Path, playbook: Path
) -> None:
    hosts = make_inventory(
        {"group_vars/monitoring.yml": "common_admin_password: 123456\ncommon_api_token: s3cr3t\n"}
    )
    messages = validate(hosts, roles_dir, playbook)
    assert messages[0] == (
        f"{INV}/group_vars/monitoring.yml:1: common_admin_password = '***': "
        "expected a string (put the value in quotes)"
    )
    assert messages[1].startswith(
        f"{INV}/group_vars/monitoring.yml:2: common_api_token = '***': unknown Hearth variable"
    )
    assert "123456" not in "\n".join(messages)
    assert "s3cr3t" not in "\n".join(messages)


def test_vault_values_are_not_inspected(
    make_inventory: InventoryFactory, roles_dir: Path, playbook: Path
) -> None:
    hosts = make_inventory(
        {
            "group_vars/monitoring.yml": """\
            common_admin_password: !vault |
              $ANSIBLE_VAULT;1.1;AES256
              3131
            """
        }
    )
    assert validate(hosts, roles_dir, playbook) == []


def test_inventory_path_that_does_not_exist(roles_dir: Path, playbook: Path) -> None:
    missing = Path("inventories/nowhere/hosts.yml")
    assert validate(missing, roles_dir, playbook) == [
        "inventories/nowhere/hosts.yml: inventory not found: no such file or directory"
    ]
    with pytest.raises(InventoryInvalid) as caught:
        load_inventory(missing)
    assert caught.value.exit_code == EXIT_INVALID
    assert "inventories/nowhere/hosts.yml: inventory not found" in str(caught.value)


def test_ansible_cannot_parse_ini_inventory(tmp_path: Path) -> None:
    source = tmp_path / "inventories" / "broken" / "hosts"
    source.parent.mkdir(parents=True)
    source.write_text("[gpu_nodes\ngpu01\n")
    with pytest.raises(InventoryInvalid) as caught:
        load_inventory(source)
    (problem,) = caught.value.problems
    assert problem.file == source
    assert str(problem).startswith(
        "inventories/broken/hosts: Ansible cannot parse this inventory (Failed to parse "
        "inventory with 'ini' plugin."
    )


def test_all_problems_are_listed_at_once(
    make_inventory: InventoryFactory, roles_dir: Path, playbook: Path
) -> None:
    hosts = make_inventory(
        {
            "group_vars/monitoring.yml": """\
            common_swappiness: ten
            common_manage_swap: "no"
            """,
            "group_vars/nosuchgroup.yml": "common_user: x\n",
        }
    )
    problems = validate_inventory(hosts, roles_dir, playbook)
    assert len(problems) == 3
    with pytest.raises(InventoryInvalid) as caught:
        check_inventory(hosts, roles_dir, playbook)
    error = caught.value
    assert error.exit_code == EXIT_INVALID
    assert error.problems == problems
    lines = str(error).splitlines()
    assert lines[0] == f"Inventory {INV}/hosts.yml has 3 problems:"
    assert (
        lines[1]
        == f"  {INV}/group_vars/monitoring.yml:1: common_swappiness = 'ten': expected an integer"
    )
    assert lines[2].startswith(f"  {INV}/group_vars/monitoring.yml:2: common_manage_swap = 'no'")
    assert lines[3].startswith(f"  {INV}/group_vars/nosuchgroup.yml: no group named")
    assert lines[4] == (
        f"Fix them and run `hearth check -i {INV}/hosts.yml` again; "
        "nothing was changed on any host."
    )


def test_inventory_directory(tmp_path: Path, roles_dir: Path, playbook: Path) -> None:
    root = tmp_path / "inventories" / "multi"
    (root / "group_vars").mkdir(parents=True)
    (root / "01-gpu.yml").write_text("gpu_nodes:\n  hosts:\n    gpu01:\n")
    (root / "02-mon.ini").write_text("[monitoring]\nmon01 ansible_host=10.0.0.9\n")
    (root / "group_vars" / "gpu_nodes.yml").write_text("inference_model: m\n")
    (root / "group_vars" / "monitoring.yml").write_text("common_swappiness: [1]\n")
    messages = validate(root, roles_dir, playbook)
    assert messages == [
        "inventories/multi/group_vars/monitoring.yml:1: common_swappiness = [1]: "
        "expected an integer"
    ]
    inventory = load_inventory(root)
    assert inventory.hosts == ["gpu01", "mon01"]


# ------------------------------------------------------------------------- the loaded inventory


def test_hostvars_are_merged_by_ansible(make_inventory: InventoryFactory) -> None:
    hosts = make_inventory({"host_vars/gpu02.yml": "common_swappiness: 1\n"})
    inventory = load_inventory(hosts)
    gpu01 = inventory.hostvars("gpu01")
    assert gpu01["common_swappiness"] == 5  # gpu_nodes group vars
    assert gpu01["common_user"] == "alice"  # group_vars/all.yml
    assert gpu01["ansible_host"] == "10.0.0.11"
    assert "groups" not in gpu01 and "inventory_hostname" not in gpu01
    assert inventory.hostvars("gpu02")["common_swappiness"] == 1  # host_vars wins
    assert "common_swappiness" not in inventory.hostvars("mon01")
    assert type(gpu01["common_user"]) is str


def test_resolved_vars_template_role_defaults_with_inventory_values(
    make_inventory: InventoryFactory, roles_dir: Path
) -> None:
    inventory = load_inventory(make_inventory(), roles_dir=roles_dir)
    resolved = inventory.resolved_vars("gpu01", ["common", "inference"])
    assert resolved["common_data_dir"] == "/var/lib/alice"  # default templated with override
    assert resolved["common_user"] == "alice"  # the inventory wins over the default
    assert resolved["common_swappiness"] == 5
    assert resolved["inference_engine"] == "llama_cpp"
    assert resolved["inference_ports"] == [8000]  # from the role defaults
    assert type(resolved["common_data_dir"]) is str
    only_common = inventory.resolved_vars("mon01", ["common"])
    assert "inference_ports" not in only_common
    assert only_common["common_swappiness"] == 10


def test_resolved_vars_keep_unresolvable_templates(
    make_inventory: InventoryFactory, roles_dir: Path
) -> None:
    (roles_dir / "common" / "defaults" / "main.yml").write_text(
        'common_user: hearth\ncommon_mem: "{{ ansible_facts.memtotal_mb }}"\n'
    )
    inventory = load_inventory(make_inventory(), roles_dir=roles_dir)
    resolved = inventory.resolved_vars("gpu01", ["common"])
    assert resolved["common_mem"] == "{{ ansible_facts.memtotal_mb }}"


def test_unknown_host(make_inventory: InventoryFactory) -> None:
    inventory = load_inventory(make_inventory())
    with pytest.raises(Exception, match="no host 'gpu99'"):
        inventory.hostvars("gpu99")


def test_inventory_exposes_ansible_objects(make_inventory: InventoryFactory) -> None:
    inventory = load_inventory(make_inventory())
    assert isinstance(inventory, Inventory)
    manager = inventory.ansible_inventory()
    assert [h.name for h in manager.get_hosts("gpu_nodes")] == ["gpu01", "gpu02"]
    assert inventory.match("all:!gpu02") == ["gpu01", "mon01"]
    assert inventory.match("nothing_here") == []


# ------------------------------------------------------------------------- Problem and yamlsrc


def test_problem_str() -> None:
    problem = Problem(
        Path("inventories/x/group_vars/all.yml"),
        7,
        "common_swappiness",
        "ten",
        "expected an integer",
    )
    assert str(problem) == (
        "inventories/x/group_vars/all.yml:7: common_swappiness = 'ten': expected an integer"
    )
    assert str(Problem(None, None, "k", MISSING, "required", host="h1")) == "host h1: k: required"


def test_yaml_loader_records_lines_duplicates_and_merges() -> None:
    doc = load_yaml_text(
        "base: &b\n  a: 1\n  b: 2\nchild:\n  <<: *b\n  b: 3\nx: 1\nx: 2\nv: !vault |\n  $AN\n",
        Path("f.yml"),
    )
    data = doc.data
    assert isinstance(data, LineMap)
    assert data.key_lines["child"] == 4
    assert data["child"] == {"a": 1, "b": 3}
    assert data["child"].duplicates == []  # overriding a merged key is not a duplicate
    assert [(d.key, d.line, d.first_line) for d in data.duplicates] == [("x", 8, 7)]
    assert isinstance(data["v"], VaultValue)


def test_vault_encrypted_vars_file_needs_the_password(
    make_inventory: InventoryFactory, roles_dir: Path, playbook: Path, tmp_path: Path
) -> None:
    from ansible.parsing.vault import VaultLib, VaultSecret

    secret = VaultSecret(b"pw")
    ciphertext = VaultLib([("default", secret)]).encrypt("common_user: vaulted\n", secret)
    hosts = make_inventory({"group_vars/monitoring.yml": ciphertext.decode()})
    messages = validate(hosts, roles_dir, playbook)
    assert messages == [
        f"{INV}/hosts.yml: Ansible cannot load the host variables: "
        "A vault password must be specified to decrypt data."
    ]
    password = tmp_path / "vault-pass"
    password.write_text("pw\n")
    inventory = check_inventory(hosts, roles_dir, playbook, vault_password_file=password)
    assert inventory.hostvars("mon01")["common_user"] == "vaulted"
