"""hearth.schema: argument specs -> a schema of Hearth's variables, and validation against it."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import write_tree

from hearth import paths
from hearth.errors import InvalidInputError
from hearth.schema import (
    Schema,
    global_spec_path,
    is_valid_host,
    load_schema,
    parse_argument_specs,
)
from hearth.yamlsrc import load_yaml_text

SPEC = Path("spec.yml")


def schema_from(options_yaml: str, owner: str = "demo") -> Schema:
    data = yaml.safe_load(textwrap.dedent(options_yaml))
    options, required = parse_argument_specs(
        {"argument_specs": {"main": {"options": data}}}, SPEC, owner
    )
    return Schema(options=options, prefixes=(owner,), required={owner: required})


def messages(schema: Schema, text: str) -> list[str]:
    doc = load_yaml_text(textwrap.dedent(text), Path("vars.yml"))
    assert doc.ok, doc.problems
    return [str(p) for p in schema.validate_vars(doc.data, Path("vars.yml"))]


def test_load_schema_reads_roles_and_global_spec(roles_dir: Path) -> None:
    schema = load_schema(roles_dir)
    assert schema.prefixes == ("common", "inference")  # nospec has no argument spec
    assert set(schema.role_dirs) == {"common", "inference", "nospec"}
    assert schema.required == {"common": [], "inference": ["inference_model"]}
    assert schema.options["common_swappiness"].type == "int"
    assert schema.options["common_swappiness"].owner == "common"
    assert schema.options["inference_models"].options is not None
    assert schema.options["ansible_port"].min == 1
    assert schema.options["ansible_port"].max == 65535
    assert schema.options["ansible_host"].format == "host"
    assert schema.options["hearth_environment"].choices == ("production", "staging", "lab")
    assert schema.options["hearth_lab"].type == "bool"
    assert schema.owns("common_anything") and schema.owns("hearth_x")
    assert not schema.owns("nospec_x") and not schema.owns("ansible_become")


def test_global_spec_is_shipped_as_package_data() -> None:
    assert global_spec_path() == paths.data_dir() / "inventory_spec.yml"
    data = yaml.safe_load(global_spec_path().read_text())
    options = data["argument_specs"]["main"]["options"]
    assert sorted(options) == [
        "ansible_host",
        "ansible_port",
        "ansible_user",
        "hearth_allowed_listeners",
        "hearth_backup_before_changes",
        "hearth_backup_keep",
        "hearth_cloud_prices",
        "hearth_costs",
        "hearth_declared_gpus",
        "hearth_environment",
        "hearth_lab",
        "hearth_model_aliases",
        "hearth_models",
        "hearth_operator",
        "hearth_scrape_token",
        "hearth_site",
        "hearth_slo",
        "monitoring_tls",  # site-wide: node_exporter, prometheus, alertmanager, grafana, backup
        "monitoring_web_password",
        "monitoring_web_user",
    ]


def test_spec_in_meta_main_and_other_entry_points(tmp_path: Path) -> None:
    write_tree(
        tmp_path / "roles",
        {
            "gpu/meta/main.yml": """\
            galaxy_info: {author: hearth}
            argument_specs:
              preflight:
                options:
                  gpu_min_vram_gb: {type: int, required: true}
              main:
                options:
                  gpu_driver: {type: str, required: true}
            """
        },
    )
    schema = load_schema(tmp_path / "roles")
    assert schema.prefixes == ("gpu",)
    assert schema.required == {"gpu": ["gpu_driver"]}  # only main's required count
    assert "gpu_min_vram_gb" in schema.options


def test_broken_spec_names_the_file(tmp_path: Path) -> None:
    write_tree(
        tmp_path / "roles",
        {"bad/meta/argument_specs.yml": "argument_specs:\n  main:\n    options:\n      x: [1]\n"},
    )
    with pytest.raises(InvalidInputError) as caught:
        load_schema(tmp_path / "roles")
    message = str(caught.value)
    assert (
        "bad/meta/argument_specs.yml: argument spec main.options.x: expected a mapping" in message
    )


def test_spec_yaml_error_names_the_file(tmp_path: Path) -> None:
    write_tree(tmp_path / "roles", {"bad/meta/argument_specs.yml": "argument_specs: [\n"})
    with pytest.raises(InvalidInputError, match=r"argument_specs\.yml: the argument spec is not"):
        load_schema(tmp_path / "roles")


def test_key_paths_for_nested_dicts_and_lists() -> None:
    schema = schema_from(
        """\
        demo_models:
          type: list
          elements: dict
          options:
            name: {type: str, required: true}
            sha256: {type: str}
            limits:
              type: dict
              options:
                vram_gb: {type: float, min: 1}
        """
    )
    assert messages(
        schema,
        """\
        demo_models:
          - name: a
          - name: b
          - name: c
            sha256: 123
            limits:
              vram_gb: 0.5
        """,
    ) == [
        "vars.yml:5: demo_models[2].sha256 = 123: expected a string (put the value in quotes)",
        "vars.yml:7: demo_models[2].limits.vram_gb = 0.5: expected a number of at least 1",
    ]


def test_values_without_lines_still_name_the_key() -> None:
    schema = schema_from("demo_port: {type: int, min: 1, max: 10}\n")
    problems = schema.validate_vars({"demo_port": 11}, None, host="h1")
    assert [str(p) for p in problems] == [
        "host h1: demo_port = 11: expected an integer from 1 to 10"
    ]


@pytest.mark.parametrize(
    ("spec_type", "good", "bad", "expected"),
    [
        ("str", "x", 1.1, "expected a string (put the value in quotes)"),
        ("path", "/srv", ["/srv"], "expected a path (a string)"),
        ("int", 3, 3.5, "expected an integer"),
        ("int", 3, False, "expected an integer"),
        ("float", 3, "3.5", "expected a number (remove the quotes)"),
        ("bool", True, "no", "expected a boolean (true/false without quotes)"),
        ("bool", False, 0, "expected a boolean (true/false without quotes)"),
        ("list", [1], {"a": 1}, "expected a list"),
        ("dict", {"a": 1}, [1], "expected a mapping"),
    ],
)
def test_types(spec_type: str, good: Any, bad: Any, expected: str) -> None:
    schema = schema_from(f"demo_value: {{type: {spec_type}}}\n")
    assert schema.validate_vars({"demo_value": good}, None) == []
    (problem,) = schema.validate_vars({"demo_value": bad}, None)
    assert problem.expected == expected
    assert problem.key == "demo_value"
    assert problem.value == bad


def test_raw_and_unchecked_types_accept_anything() -> None:
    schema = schema_from("demo_raw: {type: raw}\ndemo_bits: {type: bits}\n")
    assert schema.validate_vars({"demo_raw": [1, {"x": None}], "demo_bits": "1Mb"}, None) == []


def test_choices_do_not_confuse_booleans_and_integers() -> None:
    schema = schema_from("demo_level: {type: raw, choices: [0, 1, 2]}\n")
    assert schema.validate_vars({"demo_level": 1}, None) == []
    (problem,) = schema.validate_vars({"demo_level": True}, None)
    assert problem.expected == "expected one of: 0, 1, 2"


def test_list_choices_apply_to_each_element() -> None:
    schema = schema_from("demo_engines: {type: list, elements: str, choices: [vllm, triton]}\n")
    assert messages(schema, "demo_engines: [vllm, ollama]\n") == [
        "vars.yml:1: demo_engines[1] = 'ollama': expected one of: vllm, triton"
    ]


def test_required_null_and_invalid_names() -> None:
    schema = schema_from("demo_model: {type: str, required: true}\ndemo_opt: {type: str}\n")
    assert messages(schema, "demo_model:\ndemo_opt:\n1abc: x\n") == [
        "vars.yml:1: demo_model = None: expected a string, got null (this key is required)",
        "vars.yml:3: 1abc: not a valid variable name (letters, digits and _ only, "
        "not starting with a digit)",
    ]


def test_unknown_variable_without_close_match() -> None:
    schema = schema_from("demo_model: {type: str}\n")
    assert messages(schema, "demo_zzzzzzzzzzzzzz: 1\n") == [
        "vars.yml:1: demo_zzzzzzzzzzzzzz = 1: unknown Hearth variable (no role's argument spec "
        "declares it); declare it in the role's meta/argument_specs.yml or remove it"
    ]


@pytest.mark.parametrize(
    "value",
    ["10.0.0.1", "::1", "fe80::1", "gpu01", "gpu-01.example.com", "gpu01.example.com.", "a" * 63],
)
def test_valid_hosts(value: str) -> None:
    assert is_valid_host(value)


@pytest.mark.parametrize(
    "value",
    ["10.0.0.300", "10.0.0", "", " gpu01", "gpu_01", "-gpu", "gpu..x", "a" * 64, "gpu 01", "1.2"],
)
def test_invalid_hosts(value: str) -> None:
    assert not is_valid_host(value)


REAL_SPEC = Path(__file__).resolve().parents[2] / "roles" / "common" / "meta" / "argument_specs.yml"


@pytest.mark.skipif(not REAL_SPEC.is_file(), reason="roles/common has no argument spec yet")
def test_real_roles_load() -> None:
    roles = REAL_SPEC.parents[2]
    schema = load_schema(roles)
    assert "common" in schema.prefixes
    assert any(spec.owner == "common" for spec in schema.options.values())
    for name, spec in schema.options.items():
        if spec.owner is None:
            continue
        assert name.startswith(f"{spec.owner}_") or name.startswith("hearth_"), (
            f"{spec.source}: option {name} does not carry the role prefix {spec.owner}_"
        )
