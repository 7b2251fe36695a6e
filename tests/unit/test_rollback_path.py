"""`hearth models rollback`: which path a rollback takes (fast, or the full gated one) and why,
from each host's state as the probe reads it (no host is contacted here; the probe itself runs
against a real store directory)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hearth import models
from hearth.commands.models import (
    _PROBE,
    HostModel,
    deployed_model,
    fast_rollback_problems,
    overrides_for,
    rollback_path,
    served,
)

FILES = {
    "v1": [{"path": "m.gguf", "sha256": "1" * 64}],
    "v2": [{"path": "m.gguf", "sha256": "2" * 64}],
}
IMAGE = "hearth-llamacpp:b1"


def declaration(version: str, **over: Any) -> dict[str, Any]:
    model = {
        "name": "smollm2",
        "version": version,
        "engine": "llamacpp",
        "format": "gguf",
        "source": {"type": "path", "path": "/models"},
        "files": FILES[version],
        "max_model_len": 2048,
        "max_num_seqs": 2,
        "gpus": [],
        "engine_args": {"threads": 1},
    }
    return {**model, **over}


def prints(version: str, **over: Any) -> dict[str, Any]:
    return dict(models.fingerprints(models.parse_models([declaration(version, **over)])[0]))


def promoted(frm: str, to: str, event: str = "promoted") -> dict[str, Any]:
    return {"event": event, "model": "smollm2", "from_version": frm, "to_version": to}


def host(name: str = "lab1", **change: Any) -> HostModel:
    """A host serving v2 that keeps v1 as a rollback wants it: v1 served here (v2's promotion
    replaced it), its engine kept with the live image, its files as verified."""
    state = HostModel(
        host=name,
        declared=declaration("v2"),
        versions={
            "v1": {"files": FILES["v1"], "fingerprints": prints("v1")},
            "v2": {"files": FILES["v2"], "fingerprints": prints("v2")},
        },
        containers=[
            {"name": "hearth-engine-smollm2", "state": "running", "version": "v2", "image": IMAGE},
            {
                "name": "hearth-engine-smollm2--v1",
                "state": "exited",
                "version": "v1",
                "image": IMAGE,
            },
        ],
        events=[promoted("v1", "v2")],
        verified={"v1": "", "v2": ""},
    )
    for key, value in change.items():
        setattr(state, key, value)
    return state


def decide(*states: HostModel, full: bool = False) -> Any:
    deployed = deployed_model(states, overrides_for(states, "smollm2", "v1"))
    return rollback_path(states, "v1", deployed, full)


def test_a_version_that_served_with_its_kept_engine_and_files_goes_the_fast_way() -> None:
    assert decide(host("lab1"), host("lab2")) == decide(host()) == type(decide(host()))(True, [])


def test_full_is_asked_for() -> None:
    found = decide(host(), full=True)
    assert not found.fast and found.why == ["--full asks for the full gated path"]


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"containers": [{"name": "hearth-engine-smollm2", "state": "running", "version": "v2",
                          "image": IMAGE}]},
         "lab2: no kept container of v1 (hearth-engine-smollm2--v1 was removed or pruned)"),
        ({"verified": {"v1": "m.gguf was written since it was verified"}},
         "lab2: the files of v1 are not the verified ones: m.gguf was written since it was "
         "verified"),
        ({"verified": {}},
         "lab2: the files of v1 are not the verified ones: no record of its verified files"),
        ({"events": [promoted("v2", "v1", "refused")]}, "lab2: v1 never served here"),
        ({"events": []}, "lab2: v1 never served here"),
    ],
)  # fmt: skip
def test_anything_the_fast_path_cannot_trust_takes_the_full_path(
    change: dict[str, Any], why: str
) -> None:
    found = decide(host("lab1"), host("lab2", **change))
    assert not found.fast
    assert len(found.why) == 1 and found.why[0].startswith(why), found.why


def test_a_different_engine_image_takes_the_full_path() -> None:
    other = host("lab2")
    other.containers[1] = {**other.containers[1], "image": "sha256:0123abcd"}
    found = decide(host("lab1"), other)
    assert found.why == [
        "lab2: the kept container of v1 has the image 'sha256:0123abcd', the live engine "
        f"'{IMAGE}' (a different engine image)"
    ]


def test_engine_arguments_changed_since_the_version_served_take_the_full_path() -> None:
    state = host()
    state.versions["v1"]["fingerprints"] = prints("v1", engine_args={"threads": 4})
    assert decide(state).why == [
        "lab1: v1 served with other engine args than the inventory would run it with now"
    ]


TEMPLATE_V1 = "{% for m in messages %}<|v1|>{{ m.content }}{% endfor %}"
TEMPLATE_V2 = "{% for m in messages %}<|v2|>{{ m.content }}{% endfor %}"


def test_a_version_no_longer_declared_goes_back_with_its_own_chat_template() -> None:
    """v1 served with its own chat template, the inventory now declares v2 with another: the
    manifest of v1 records its template, so the rollback runs v1 with it (the fast path; before,
    the override dropped it and the fingerprints differed)."""
    state = host(declared=declaration("v2", chat_template=TEMPLATE_V2))
    state.versions["v1"] = {
        "files": FILES["v1"],
        "fingerprints": prints("v1", chat_template=TEMPLATE_V1),
        "chat_template": TEMPLATE_V1,
    }
    override = overrides_for([state], "smollm2", "v1")
    assert override["smollm2"]["chat_template"] == TEMPLATE_V1
    assert decide(state).fast, decide(state).why
    # a version that served with no template goes back with none
    plain = host(declared=declaration("v2", chat_template=TEMPLATE_V2))
    plain.versions["v1"] = {**plain.versions["v1"], "chat_template": None}
    assert overrides_for([plain], "smollm2", "v1")["smollm2"]["chat_template"] is None
    assert decide(plain).fast, decide(plain).why


def test_a_manifest_that_records_no_chat_template_takes_the_full_path() -> None:
    """A manifest written before it recorded the template: the rollback cannot know it, and the
    full path (which writes the version as declared) is taken, saying why."""
    state = host(declared=declaration("v2", chat_template=TEMPLATE_V2))
    state.versions["v1"]["fingerprints"] = prints("v1", chat_template=TEMPLATE_V1)
    assert decide(state).why == [
        "lab1: v1 served with other chat template than the inventory would run it with now"
    ]


def test_no_live_engine_and_no_manifest_are_named() -> None:
    state = host()
    state.containers = state.containers[1:]
    del state.versions["v1"]
    why = fast_rollback_problems(state, "v1", declaration("v1"))
    assert why[:2] == ["no running live engine to switch from", "v1 is not in the model store"]


def test_served_reads_the_outcomes_of_this_host() -> None:
    state = host()
    assert served(state, "v1") and served(state, "v2")
    assert not served(state, "v3")
    state.events = [promoted("v2", "v3", "refused")]
    assert served(state, "v2") and not served(state, "v3")
    state.events = [promoted("v3", "v1", "rolled back")]
    assert served(state, "v1") and served(state, "v3")


@pytest.mark.skipif(shutil.which("docker") is None, reason="the probe asks docker ps")
def test_the_probe_reads_the_record_of_the_verified_files(tmp_path: Path) -> None:
    """The probe (run on each host) compares each kept file with model_verify's record: the
    same sha256 and not written since (device, inode, size, mtime, ctime); nothing is hashed."""
    store, verified = tmp_path / "models", tmp_path / "verified"
    version = store / "unit-probe" / "v1"
    version.mkdir(parents=True)
    weights = version / "m.gguf"
    weights.write_bytes(b"weights")
    digest = hashlib.sha256(b"weights").hexdigest()
    manifest = {"files": [{"path": "m.gguf", "sha256": digest}]}
    (version / "hearth-model.json").write_text(json.dumps(manifest))
    (verified / "unit-probe").mkdir(parents=True)

    def record() -> None:
        st = weights.stat()
        stat = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        files = {"m.gguf": {"sha256": digest, "stat": stat}}
        (verified / "unit-probe" / "v1.json").write_text(
            json.dumps({"root": os.path.realpath(version), "files": files})
        )

    def probe() -> str:
        argv = [sys.executable, "-c", _PROBE, "unit-probe", str(store), str(verified)]
        done = subprocess.run(argv, capture_output=True, text=True, check=True)
        return str(json.loads(done.stdout)["verified"]["v1"])

    assert probe() == "no record of its verified files"
    record()
    assert probe() == ""
    weights.write_bytes(b"weights")  # the same bytes, written again: not the verified file
    assert probe() == "m.gguf was written since it was verified"
    record()
    manifest["files"][0]["sha256"] = "0" * 64
    (version / "hearth-model.json").write_text(json.dumps(manifest))
    assert probe() == "m.gguf was not verified with its sha256"
