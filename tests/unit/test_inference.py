"""The inference layer without hosts: engine ports, container specs, warm-up requests, Triton
configurations, the front door's routes and keys, the filters the roles use, the front door's
image recipe and the lab's inference inventory."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from conftest import plugin_module

from hearth import engines, images, lab, models, paths
from hearth.errors import InvalidInputError

SHA = "a" * 64


def _load_plugin(name: str) -> ModuleType:
    return plugin_module("filter", name)


inference_filters = _load_plugin("hearth_inference")
frontdoor_filters = _load_plugin("hearth_frontdoor")


def llama(name: str = "smollm2", **over: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": name,
        "version": "v1",
        "engine": "llamacpp",
        "format": "gguf",
        "catalog": "smollm2-135m-instruct",
        "quantization": "Q4_1",
        "source": {"type": "path", "path": "/srv/models"},
        "files": [{"path": "m.gguf", "sha256": SHA, "size": 98362432}],
        "max_model_len": 2048,
        "max_num_seqs": 2,
        "gpus": [],
    }
    raw.update(over)
    return raw


def triton(name: str = "upper", **over: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": name,
        "version": "1.0.0",
        "engine": "triton",
        "format": "python",
        "source": {"type": "path", "path": "/srv/models"},
        "files": [{"path": "model.py", "sha256": SHA}],
        "gpus": [],
        "triton_config": {
            "max_batch_size": 0,
            "input": [{"name": "TEXT", "data_type": "TYPE_STRING", "dims": [-1]}],
            "output": [{"name": "UPPER", "data_type": "TYPE_STRING", "dims": [-1]}],
        },
    }
    raw.update(over)
    return raw


def vllm(name: str = "llama", **over: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": name,
        "version": "2024-07-23",
        "engine": "vllm",
        "format": "safetensors",
        "catalog": "llama-3.2-1b-instruct",
        "source": {"type": "path", "path": "/srv/models"},
        "files": [{"path": "model.safetensors", "sha256": SHA}],
        "max_model_len": 4096,
        "max_num_seqs": 4,
        "gpus": [0, "GPU-8f3a5b7c-0000-1111-2222-333344445555"],
        "gpu_memory_share": 0.5,
    }
    raw.update(over)
    return raw


def parse(*raw: dict[str, Any]) -> list[models.ModelSpec]:
    return models.parse_models(list(raw))


# --------------------------------------------------------------------------------- ports
def test_monitoring_reads_the_engines_ports() -> None:
    from hearth.monitoring import InventoryHost, engine_endpoints

    declared = [llama("a"), llama("b"), triton("t"), triton("u"), vllm("v")]
    ports = engines.host_ports(parse(*declared))
    assert ports == {"a": 8080, "b": 8090, "t": 8000, "u": 8010, "v": 8000}
    watched = engine_endpoints(InventoryHost("h", "10.0.0.1", models=tuple(declared)))
    assert {e.model: e.port for e in watched} == ports, "monitoring scrapes where engines listen"
    assert engines.host_ports(parse(*declared), {"v": 8100})["v"] == 8100


def test_overridden_engine_ports_are_scraped_where_the_engines_listen() -> None:
    """inference_engine_ports decide where each engine is published (the container spec the role
    runs); Prometheus, reading the same inventory, scrapes exactly there under the right model's
    labels. (It once kept its own copy, prometheus_engine_ports, and with overridden ports scraped
    the wrong engine under the right label.)"""
    monitoring_filters = _load_plugin("hearth_monitoring")
    declared = [llama("smollm2"), vllm("llama", gpus=[0]), vllm("qwen", gpus=[1]), triton("t")]
    overrides = {"llama": 8010, "qwen": 8000, "smollm2": 9080, "t": 8100}  # vLLM ports swapped
    groups = {"all": ["gpu01"], "inference": ["gpu01"]}
    hostvars = {
        "gpu01": {"ansible_host": "10.0.0.11", "hearth_models": declared,
                  "inference_engine_ports": overrides},
    }  # fmt: skip
    hosts = monitoring_filters.hearth_monitoring_hosts(groups, hostvars)
    config = monitoring_filters.hearth_prometheus_config(
        hosts, scrape_interval="15s", evaluation_interval="15s", rule_files=[]
    )
    scraped = {
        static["labels"]["hearth_model"]: static["targets"]
        for job in config["scrape_configs"]
        if job["job_name"].startswith("engine-")
        for static in job["static_configs"]
    }
    # as the inference_engine role places them (tasks/configure.yml, tasks/model.yml)
    ports = inference_filters.hearth_engine_ports(declared, overrides)
    published = {}
    for model in declared:
        container = inference_filters.hearth_engine_container(
            model, image="img@sha256:" + SHA, port=ports[model["name"]], store_dir="/srv"
        )
        published[model["name"]] = [f"10.0.0.11:{container['metrics_port']}"]
    assert published == {
        "smollm2": ["10.0.0.11:9080"], "llama": ["10.0.0.11:8010"],
        "qwen": ["10.0.0.11:8000"], "t": ["10.0.0.11:8102"],
    }  # fmt: skip
    assert scraped == published


def test_port_collisions_are_named() -> None:
    declared = parse(triton("t"), vllm("v"), llama("a"))
    problems = engines.port_problems(declared, {}, {8080: "the front door"})
    assert problems == [
        "model v (vllm) and model t (triton) both need port 8000: set "
        "inference_engine_ports.v to a free port",
        "model a (llamacpp) and the front door both need port 8080: set "
        "inference_engine_ports.a to a free port",
    ]
    assert engines.port_problems(declared, {"v": 8100, "a": 8081}, {8080: "x"}) == []
    assert engines.port_problems(declared, {"nope": 9000})[0] == (
        "inference_engine_ports.nope: no model 'nope' is declared here"
    )
    # Triton holds three ports: HTTP, gRPC, metrics
    assert engines.port_problems(parse(triton("t")), {}, {8002: "node_exporter"}) != []
    # a rollout starts the new version beside the live one, on the port + 5
    assert engines.port_problems(parse(llama("a"), llama("b")), {"b": 8085}) == [
        "model b (llamacpp) and model a (llamacpp) both need port 8085: set "
        "inference_engine_ports.b to a free port",
    ]
    assert engines.port_problems(parse(llama("a")), {}, {8085: "node_exporter"}) == [
        "model a (llamacpp) and node_exporter both need port 8085 (rollout slot): set "
        "inference_engine_ports.a to a free port",
    ]


def test_the_candidate_slot_has_its_own_name_port_and_label() -> None:
    (model,) = parse(llama("smollm2"))
    live = engines.container_spec(model, image="i", port=8080, store_dir="/s")
    candidate = engines.container_spec(
        model, image="i", port=8080, store_dir="/s", slot="candidate"
    )
    assert (live["name"], live["port"]) == ("hearth-engine-smollm2", 8080)
    assert (candidate["name"], candidate["port"]) == ("hearth-engine-smollm2--next", 8085)
    assert candidate["published_ports"] == ["127.0.0.1:8085:8080"]
    assert candidate["labels"]["io.hearth.slot"] == "candidate"
    assert "io.hearth.slot" not in live["labels"]
    assert candidate["mounts"] == live["mounts"] and candidate["command"] == live["command"]
    assert engines.kept_container_name("smollm2", "v1+rc/2") == "hearth-engine-smollm2--v1_rc_2"


# ------------------------------------------------------------------------------ containers
def test_llamacpp_container_spec() -> None:
    (model,) = parse(llama(engine_args={"threads": 2}))
    spec = engines.container_spec(
        model,
        image="hearth-llamacpp:abc",
        port=8080,
        store_dir="/var/lib/hearth/models",
        env={"CUDA_HOME": "/usr/lib/cuda", "LD_LIBRARY_PATH": "/usr/lib/cuda/lib64"},
        image_env=["PATH=/usr/bin", "LLAMA_ARG_PORT=8080"],
        group_id=998,
    )
    assert spec["name"] == "hearth-engine-smollm2"
    assert spec["command"][:4] == [
        "--model",
        "/models/smollm2/current/m.gguf",
        "--alias",
        "smollm2",
    ]
    assert "--metrics" in spec["command"] and spec["command"][-2:] == ["--threads", "2"]
    assert spec["published_ports"] == ["127.0.0.1:8080:8080"]
    assert spec["mounts"] == [
        {
            "type": "bind",
            "source": "/var/lib/hearth/models/smollm2/v1",
            "target": "/models/smollm2/current",
            "read_only": True,
        }
    ]
    assert spec["env"] == {"CUDA_HOME": "/usr/lib/cuda", "LD_LIBRARY_PATH": "/usr/lib/cuda/lib64"}
    assert spec["groups"] == ["998"] and spec["read_only"] and spec["tmpfs"] == ["/tmp"]
    assert spec["labels"]["io.hearth.version"] == "v1"
    assert spec["device_requests"] == [] and spec["health_path"] == "/health"
    assert spec["healthcheck"]["test"][-1] == "http://127.0.0.1:8080/health"
    assert spec["warmup"]["path"] == "/v1/chat/completions"
    assert spec["warmup"]["body"]["model"] == "smollm2"


def test_triton_container_spec_and_generated_config() -> None:
    (model,) = parse(triton())
    spec = engines.container_spec(
        model,
        image="hearth-triton:abc",
        port=8010,
        store_dir="/srv/store",
        bind_address="10.0.0.5",
        env={"LD_LIBRARY_PATH": "/usr/lib/cuda/lib64"},
        image_env=["LD_LIBRARY_PATH=/opt/tritonserver/lib:/usr/lib/x86_64-linux-gnu"],
    )
    assert spec["published_ports"] == [
        "10.0.0.5:8010:8000",
        "10.0.0.5:8011:8001",
        "10.0.0.5:8012:8002",
    ]
    assert [(m["source"], m["target"]) for m in spec["mounts"]] == [
        ("/var/lib/hearth/triton/upper", "/models/triton-repository/upper"),
        ("/srv/store/upper/1.0.0", "/models/triton-repository/upper/1"),
    ]
    # the image's libraries stay first; CUDA's are added after them
    assert spec["env"]["LD_LIBRARY_PATH"] == (
        "/opt/tritonserver/lib:/usr/lib/x86_64-linux-gnu:/usr/lib/cuda/lib64"
    )
    assert spec["metrics_port"] == 8012 and spec["shm_size"] == "256m"
    assert "--load-model" in spec["command"] and "upper" in spec["command"]
    assert spec["warmup"] == {
        "method": "POST",
        "path": "/v2/models/upper/infer",
        "body": {
            "inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": ["Hello"]}]
        },
    }
    config = engines.triton_config_text(model)
    assert config.splitlines()[:3] == ['name: "upper"', 'backend: "python"', "max_batch_size: 0"]
    assert "kind: KIND_CPU" in config and "data_type: TYPE_STRING" in config
    assert engines.text_io(model) == ("TEXT", "UPPER")


def test_triton_warmup_shapes_batched_numeric_inputs() -> None:
    config = {
        "max_batch_size": 8,
        "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [2, 3]}],
        "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [1]}],
    }
    (model,) = parse(triton(triton_config=config))
    warmup = engines.warmup_request(model)
    assert warmup["body"]["inputs"] == [
        {"name": "X", "datatype": "FP32", "shape": [1, 2, 3], "data": [0] * 6}
    ]
    assert engines.text_io(model) is None
    (bare,) = parse(triton(triton_config={}))
    assert engines.warmup_request(bare) == {
        "method": "GET",
        "path": "/v2/models/upper/ready",
        "body": None,
    }


def test_vllm_gets_gpus_by_index_and_uuid_only_where_a_device_exists() -> None:
    (model,) = parse(vllm())
    common = {"image": "r/vllm@sha256:" + SHA, "port": 8000, "store_dir": "/s"}
    with_gpu = engines.container_spec(model, gpu_device=True, **common)
    assert with_gpu["device_requests"] == [
        {
            "driver": "nvidia",
            "device_ids": ["0", "GPU-8f3a5b7c-0000-1111-2222-333344445555"],
            "capabilities": [["gpu"]],
        }
    ]
    assert not with_gpu["read_only"] and with_gpu["tmpfs"] == []
    assert "--tensor-parallel-size" in with_gpu["command"]
    assert engines.container_spec(model, gpu_device=False, **common)["device_requests"] == []


def test_lora_adapter_of_another_declared_model_is_mounted_read_only() -> None:
    adapter = vllm("sql-lora", gpus=[0], lora_adapters=None, gpu_memory_share=None, version="a1")
    base = vllm(lora_adapters=[{"name": "sql", "path": "/models/sql-lora/current"}])
    declared = parse(base, adapter)
    spec = engines.container_spec(
        declared[0], image="i", port=8000, store_dir="/s", declared=declared
    )
    assert {"type": "bind", "source": "/s/sql-lora/a1", "target": "/models/sql-lora/current",
            "read_only": True} in spec["mounts"]  # fmt: skip


def test_triton_config_declaration_is_checked() -> None:
    with pytest.raises(models.ModelDeclarationError) as refused:
        parse(
            triton(
                triton_config={
                    "name": "x",
                    "input": [{"name": "T", "data_type": "STRING", "dims": [0]}],
                }
            ),
            llama(triton_config={"max_batch_size": 1}),
        )
    problems = "\n".join(refused.value.problems)
    assert "triton_config.name: set by Hearth from the declaration's name" in problems
    assert "triton_config.input[0].data_type: expected TYPE_FP32, TYPE_STRING" in problems
    assert "triton_config.input[0].dims: expected a list of sizes (-1: variable)" in problems
    assert "model 'smollm2' (hearth_models[1]): triton_config: set for a model that Triton" in (
        problems
    )


def test_triton_config_only_changes_triton_fingerprints() -> None:
    (plain,) = parse(llama())
    assert "triton_config" not in json.dumps(models.fingerprints(plain))
    (one,), (two,) = parse(triton()), parse(triton(triton_config={"max_batch_size": 0}))
    assert models.fingerprints(one)["engine_args"] != models.fingerprints(two)["engine_args"]


# --------------------------------------------------------------------------- front door
def test_front_door_routes_every_model_to_every_host_serving_it() -> None:
    hosts = [
        engines.ServingHost("gpu01", "10.0.0.1", tuple(parse(llama(), triton()))),
        engines.ServingHost("gpu02", "fd00::2", tuple(parse(llama())), ports={"smollm2": 8081}),
    ]
    routes = engines.frontdoor_routes(hosts, local="gpu01")
    assert routes == {
        "smollm2": {
            "engine": "llamacpp",
            "version": "v1",
            "api": "openai",
            "backends": ["http://127.0.0.1:8080", "http://[fd00::2]:8081"],
            "hosts": ["gpu01", "gpu02"],
        },
        "upper": {
            "engine": "triton",
            "version": "1.0.0",
            "api": "kserve",
            "backends": ["http://127.0.0.1:8000"],
            "hosts": ["gpu01"],
            "text": {"input": "TEXT", "output": "UPPER"},
        },
    }
    from hearth.frontdoor.config import parse_config

    config = parse_config({"models": routes})
    assert config.models["smollm2"].backends[1] == "http://[fd00::2]:8081"
    elsewhere = engines.frontdoor_routes(hosts, local="frontdoor01")
    assert elsewhere["smollm2"]["backends"][0] == "http://10.0.0.1:8080"
    clash = [*hosts, engines.ServingHost("gpu03", "10.0.0.3", tuple(parse(llama(version="v2"))))]
    with pytest.raises(InvalidInputError, match="gpu03 declares llamacpp v2, gpu01 declares"):
        engines.frontdoor_routes(clash, local="gpu01")


def test_keys_filter_writes_only_hashes_and_problems_never_show_a_key() -> None:
    key = "k" * 40
    assert frontdoor_filters.hearth_frontdoor_keys([{"name": "ward7", "key": key}]) == {
        "keys": [{"name": "ward7", "sha256": hashlib.sha256(key.encode()).hexdigest()}]
    }
    short, spaced = "s3cret-short", "with space " + "x" * 40
    problems = frontdoor_filters.hearth_frontdoor_key_problems(
        [
            {"name": "a", "key": short},
            {"name": "a", "key": key},
            {"name": "b!", "key": key},
            {"name": "c", "key": spaced},
            {"name": "d"},
        ],
        32,
    )
    assert problems == [
        "key 'a': shorter than 32 characters: generate one with `openssl rand -hex 32`",
        "key 'a': the name is used twice (front_door_api_keys[0])",
        "front_door_api_keys[2]: name: expected letters, digits, '.', '_' or '-'",
        "front_door_api_keys[2]: the same key as key 'a'",
        "key 'c': contains white space (clients could not send it)",
        "key 'd': key: required (a string, in ansible-vault)",
    ]
    assert not any(secret in " ".join(problems) for secret in (short, key, spaced))
    assert "front_door_api_keys is empty" in frontdoor_filters.hearth_frontdoor_key_problems([])[0]


def test_front_door_uid_matches_its_image() -> None:
    recipe = images.load_recipe("frontdoor")
    role_vars = yaml.safe_load((paths.roles_dir() / "front_door" / "vars" / "main.yml").read_text())
    assert role_vars["_front_door_uid"] == recipe["user"]["uid"] == 10003
    check = (paths.roles_dir() / "front_door" / "checks" / "test_front_door.py").read_text()
    assert f"UID = {recipe['user']['uid']}" in check


def test_front_door_image_recipe_pins_pure_python_wheels() -> None:
    recipe = images.load_recipe("frontdoor")
    wheels = recipe["python"]["wheels"]
    names = {w["name"] for w in wheels}
    assert {"starlette", "httpx", "uvicorn", "prometheus_client", "anyio", "h11"} <= names
    assert all(len(w["sha256"]) == 64 for w in wheels)
    requirements = (images.recipe_dir("frontdoor") / "requirements.txt").read_text()
    for wheel in wheels:
        assert f"{wheel['name']}=={wheel['version']} --hash=sha256:{wheel['sha256']}" in (
            requirements
        ), f"requirements.txt and recipe.yml disagree on {wheel['name']}"


def test_front_door_tag_changes_with_its_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = images.image_tag("frontdoor")
    files = dict(images._hearth_package_files("frontdoor"))
    assert "hearth/frontdoor/app.py" in files and "hearth/__init__.py" in files
    original = images._hearth_package_files

    def edited(package: str) -> list[tuple[str, Path]]:
        changed = tmp_path / "app.py"
        changed.write_text(files["hearth/frontdoor/app.py"].read_text() + "\n# edited\n")
        return [(r, changed if r.endswith("/app.py") else p) for r, p in original(package)]

    monkeypatch.setattr(images, "_hearth_package_files", edited)
    assert images.image_tag("frontdoor") != tag


# ------------------------------------------------------------------------- filter plugins
def test_filters_the_roles_use() -> None:
    declared = [llama(), triton()]
    assert inference_filters.hearth_engine_ports(declared, {}) == {"smollm2": 8080, "upper": 8000}
    assert inference_filters.hearth_engine_recipes([*declared, llama("b")]) == [
        "llamacpp",
        "triton",
    ]
    assert inference_filters.hearth_engine_image(vllm(), "r@sha256:" + SHA) == "r@sha256:" + SHA
    assert inference_filters.hearth_engine_image(llama()) == images.image_tag("llamacpp")
    assert inference_filters.hearth_image_tag("frontdoor") == images.image_tag("frontdoor")
    spec = inference_filters.hearth_engine_container(
        llama(), declared=declared, image="i", port=8080, store_dir="/s", group_id="998"
    )
    assert spec["groups"] == ["998"] and spec["name"] == "hearth-engine-smollm2"
    env = '# managed\nCUDA_HOME=/usr/lib/cuda\nLD_LIBRARY_PATH="/usr/lib/cuda/lib64"\n\n'
    assert inference_filters.hearth_env_file(env) == {
        "CUDA_HOME": "/usr/lib/cuda",
        "LD_LIBRARY_PATH": "/usr/lib/cuda/lib64",
    }
    containers = [
        {"Names": ["/hearth-engine-smollm2"], "Labels": {"io.hearth.model": "smollm2"}},
        {"Names": ["/hearth-engine-old"], "Labels": {"io.hearth.model": "old"}},
    ]
    assert inference_filters.hearth_stale_engines(containers, declared) == [
        {"container": "hearth-engine-old", "model": "old"}
    ]
    assert inference_filters.hearth_engine_port_problems(
        [triton(), vllm()], {}, {"9100": "node_exporter"}
    )[0].startswith("model llama (vllm) and model upper (triton) both need port 8000")


# ---------------------------------------------------------------------------- the lab
def test_lab_inventory_serves_smollm2_behind_the_front_door(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEARTH_HOME", str(tmp_path / "home"))
    fetched = images.FetchedModel(
        "smollm2-135m-instruct-q4_1", tmp_path / "m" / "SmolLM2.gguf", SHA, 98362432
    )
    monkeypatch.setattr(images, "fetch_lab_models", lambda name, say=None: iter([fetched]))
    state = lab.LabState(
        hosts=[lab.LabHost("lab1", "c1", "10.0.0.11"), lab.LabHost("lab2", "c2", "10.0.0.12")],
        private_key="/k",
        known_hosts="/kh",
    )
    hosts = yaml.safe_load(lab.write_inventory(state, tmp_path / "inv").read_text())
    children = hosts["all"]["children"]
    assert children["inference"] == children["frontdoor"] == {"hosts": {"lab1": {}}}
    gv = tmp_path / "inv" / "group_vars"
    (model,) = yaml.safe_load((gv / "inference" / "models.yml").read_text())["hearth_models"]
    assert model["files"] == [{"path": "SmolLM2.gguf", "sha256": SHA, "size": 98362432}]
    assert model["source"] == {"type": "path", "path": str(tmp_path / "m")}
    parse(model)
    vault = (gv / "frontdoor" / "vault.yml").read_text()
    key = lab.api_key_file().read_text().strip()
    assert len(key) == 64 and key not in vault and "$ANSIBLE_VAULT;1.1;AES256" in vault
    assert lab.api_key_file().stat().st_mode & 0o777 == 0o600
    assert lab.vault_password_file().stat().st_mode & 0o777 == 0o600

    from ansible.parsing.vault import VaultLib, VaultSecret

    data = yaml.load(vault, Loader=_VaultLoader)
    password = lab.vault_password_file().read_text().strip().encode()
    secret = VaultLib([("default", VaultSecret(password))]).decrypt(
        data["front_door_api_keys"][0]["key"]
    )
    assert secret.decode() == key
    scrape = yaml.safe_load((gv / "monitoring" / "frontdoor.yml").read_text())
    assert scrape == {"prometheus_frontdoor_port": lab.LAB_FRONT_DOOR_PORT}


class _VaultLoader(yaml.SafeLoader):
    pass


_VaultLoader.add_constructor("!vault", lambda loader, node: loader.construct_scalar(node))


ROUTES = {
    "smollm2": {
        "engine": "llamacpp",
        "version": "v1",
        "api": "openai",
        "backends": ["http://127.0.0.1:8080", "http://10.0.0.12:8080"],
        "hosts": ["lab1", "lab2"],
    }
}


def test_a_rollout_switch_moves_one_hosts_backend_and_back() -> None:
    there = engines.swap_backend({"models": {}}, ROUTES, "smollm2", "lab2", 8080, 8085, "v2")
    assert there["from"] == "http://10.0.0.12:8080" and there["to"] == "http://10.0.0.12:8085"
    assert there["routing"] == {
        "models": {
            "smollm2": {
                "backends": ["http://127.0.0.1:8080", "http://10.0.0.12:8085"],
                "reason": "v2",
            }
        }
    }
    back = engines.swap_backend(there["routing"], ROUTES, "smollm2", "lab2", 8085, 8080)
    assert back["routing"] == {"models": {}}, "a finished rollout leaves no override"
    # another host's override in force is kept as it is (lab1 drained by an upgrade)
    drained = {"models": {"smollm2": {"backends": ["http://10.0.0.12:8080"], "reason": "drain"}}}
    moved = engines.swap_backend(drained, ROUTES, "smollm2", "lab2", 8080, 8085)
    assert moved["routing"]["models"]["smollm2"]["backends"] == ["http://10.0.0.12:8085"]
    with pytest.raises(InvalidInputError, match="does not route model 'smollm2' to lab3"):
        engines.swap_backend({}, ROUTES, "smollm2", "lab3", 8080, 8085)


def test_a_switch_keeps_an_override_that_drained_every_backend() -> None:
    drained = {"models": {"smollm2": {"backends": [], "reason": "downtime allowed"}}}
    moved = engines.swap_backend(drained, ROUTES, "smollm2", "lab2", 8080, 8085)
    assert moved["routing"]["models"]["smollm2"]["backends"] == ["http://10.0.0.12:8085"]


def test_the_front_door_ca_a_client_checks_against(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hearth_frontdoor_ca (Prometheus's and the canary's roles): nothing without HTTPS, the
    site's own chain when declared, else the site's CA of `hearth tls init` once it exists."""
    from hearth import tls

    monkeypatch.setenv("HEARTH_HOME", str(tmp_path))
    ca = frontdoor_filters.hearth_frontdoor_ca
    assert ca(False, "OWN PEM", "east", "/inv/east") == ""
    assert ca(True, "OWN PEM", "east", "/inv/east") == "OWN PEM"
    assert ca(True, "", "east", "/inv/east") == ""  # not issued: the system's CAs
    site = tls.site_dir("east")
    site.mkdir(parents=True)
    (site / "ca.crt").write_text("SITE PEM\n")
    assert ca(True, "", "east", "/inv/other") == "SITE PEM\n"
    assert ca(True, "", "", "/inv/east") == "SITE PEM\n"  # the site: the inventory's directory
