"""Fixtures that write temporary inventories, role trees with argument specs, and playbooks."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

COMMON_SPEC = """\
argument_specs:
  main:
    short_description: Base system
    options:
      common_packages:
        type: list
        elements: str
        default: []
        description: Extra packages.
      common_swappiness:
        type: int
        default: 10
        description: vm.swappiness.
      common_user:
        type: str
        default: hearth
        description: Service user.
      common_data_dir:
        type: path
        default: "/var/lib/{{ common_user }}"
        description: Data directory.
      common_manage_swap:
        type: bool
        default: true
        description: Turn swap off.
      common_sysctl:
        type: dict
        default: {}
        description: Extra sysctl settings.
      common_limits:
        type: dict
        default: {nofile: 65536}
        description: ulimits of the service user.
        options:
          nofile:
            type: int
          nproc:
            type: int
      common_admin_password:
        type: str
        no_log: true
        default: ""
        description: Console password.
"""

COMMON_DEFAULTS = """\
common_packages: []
common_swappiness: 10
common_user: hearth
common_data_dir: "/var/lib/{{ common_user }}"
common_manage_swap: true
common_sysctl: {}
common_limits: {nofile: 65536}
common_admin_password: ""
"""

INFERENCE_SPEC = """\
argument_specs:
  main:
    short_description: Inference engine
    options:
      inference_engine:
        type: str
        choices: [vllm, llama_cpp, triton]
        default: vllm
      inference_model:
        type: str
        required: true
        description: Model to serve.
      inference_ports:
        type: list
        elements: int
        default: [8000]
      inference_models:
        type: list
        elements: dict
        default: []
        options:
          name:
            type: str
            required: true
          sha256:
            type: str
            required: true
          revision:
            type: str
"""

INFERENCE_DEFAULTS = """\
inference_engine: vllm
inference_ports: [8000]
inference_models: []
"""

VALID_HOSTS = """\
all:
  vars:
    hearth_site: lab-a
  children:
    gpu_nodes:
      hosts:
        gpu01:
          ansible_host: 10.0.0.11
        gpu02:
          ansible_host: 10.0.0.12
          ansible_port: 2222
      vars:
        common_swappiness: 5
    monitoring:
      hosts:
        mon01:
          ansible_host: mon01.example.com
"""

VALID_GROUP_VARS_ALL = """\
hearth_environment: staging
hearth_lab: false
common_packages:
  - htop
  - jq
common_user: alice
operator_contact: ops@example.com
"""

VALID_GROUP_VARS_GPU = """\
inference_model: smollm2-135m
inference_engine: llama_cpp
inference_models:
  - name: smollm2-135m
    sha256: "0123abcd"
    revision: main
"""

SITE_PLAYBOOK = """\
- name: Preflight
  hosts: localhost
  gather_facts: false
  tasks: []
- ansible.builtin.import_playbook: layers/base.yml
- ansible.builtin.import_playbook: layers/inference.yml
"""

BASE_PLAYBOOK = """\
- name: Base
  hosts: all
  roles:
    - common
"""

INFERENCE_PLAYBOOK = """\
- name: Inference
  hosts: gpu_nodes
  roles:
    - role: common
    - role: inference
"""


def load_source(path: Path, name: str) -> ModuleType:
    """A Python file that is not on the import path (a plugin, a role's checks) loaded as the
    module ``name`` (registered, so that its dataclasses and pickles find it)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def plugin_module(kind: str, name: str) -> ModuleType:
    """One of Hearth's Ansible plugin files (``plugins/<kind>/<name>.py``) loaded as a module of
    its own, for its functions' unit tests."""
    from hearth import paths

    return load_source(paths.plugins_dir() / kind / f"{name}.py", f"hearth_test_{kind}_{name}")


def write_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text), encoding="utf-8")


@pytest.fixture
def roles_dir(tmp_path: Path) -> Path:
    """Two roles, common and inference, with argument specs and defaults."""
    root = tmp_path / "roles"
    write_tree(
        root,
        {
            "common/meta/argument_specs.yml": COMMON_SPEC,
            "common/defaults/main.yml": COMMON_DEFAULTS,
            "inference/meta/argument_specs.yml": INFERENCE_SPEC,
            "inference/defaults/main.yml": INFERENCE_DEFAULTS,
            "nospec/tasks/main.yml": "- ansible.builtin.debug: {msg: hi}\n",
        },
    )
    return root


@pytest.fixture
def playbook(tmp_path: Path) -> Path:
    """site.yml importing a base layer (all: common) and an inference layer (gpu_nodes)."""
    root = tmp_path / "playbooks"
    write_tree(
        root,
        {
            "site.yml": SITE_PLAYBOOK,
            "layers/base.yml": BASE_PLAYBOOK,
            "layers/inference.yml": INFERENCE_PLAYBOOK,
        },
    )
    return root / "site.yml"


InventoryFactory = Callable[..., Path]


@pytest.fixture
def make_inventory(tmp_path: Path) -> InventoryFactory:
    """Write a valid inventory, with ``overrides`` replacing or adding files (None deletes).

    Returns the path of ``hosts.yml``.
    """

    def make(overrides: dict[str, str | None] | None = None, name: str = "site") -> Path:
        root = tmp_path / "inventories" / name
        files: dict[str, str | None] = {
            "hosts.yml": VALID_HOSTS,
            "group_vars/all.yml": VALID_GROUP_VARS_ALL,
            "group_vars/gpu_nodes.yml": VALID_GROUP_VARS_GPU,
        }
        files.update(overrides or {})
        write_tree(root, {k: v for k, v in files.items() if v is not None})
        return root / "hosts.yml"

    return make


@pytest.fixture
def sample_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A copy of ``inventories/sample`` made ready as its monitoring.yml tells an operator:
    ``hearth tls init`` run (the site CA and host certificates in a fresh ``HEARTH_HOME``, the
    monitoring password written vault-encrypted into the copy). Returns the copy's hosts.yml and
    the vault password file. ``tls init`` runs in its own process: Ansible's group_vars finder
    caches each directory's files per process, and the password file is new."""
    import os
    import shutil
    import subprocess
    import sys

    from hearth import paths

    home = tmp_path / "home"
    home.mkdir()
    (home / "collections").symlink_to(paths.collections_dir())  # the installed ones
    monkeypatch.setenv("HEARTH_HOME", str(home))
    site = tmp_path / "sample"
    shutil.copytree(paths.content_root() / "inventories" / "sample", site)
    password = tmp_path / "vault-password"
    password.write_text("sample-vault-pass\n")
    hosts = site / "hosts.yml"
    init = subprocess.run(
        [sys.executable, "-m", "hearth", "tls", "init", "-i", str(hosts),
         "--vault-password-file", str(password)],
        capture_output=True, text=True, env=dict(os.environ), check=False,
    )  # fmt: skip
    assert init.returncode == 0, init.stdout + init.stderr
    return hosts, password
