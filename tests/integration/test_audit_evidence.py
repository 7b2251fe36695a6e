"""Audit evidence on the lab: the base layer converged, audited with `--sign --save`; one sysctl
changed by hand on lab2 and audited again. `hearth audit diff` names exactly that change,
`hearth audit verify` accepts both reports and refuses a copy with one observed value edited, the
header carries each host's real identity, and the HTML page, opened in headless Chromium, shows
the failed check with the value found next to the declared one. The sysctl is put back at the
end (the lab is shared between modules)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from labkit import container_exec, hearth, write_inventory

from hearth import lab as lab_mod
from hearth.bundle import sign

pytestmark = pytest.mark.lab

HOST, KEY, GOOD, BAD = "lab2", "net.core.somaxconn", "4096", "128"  # a namespaced sysctl


@pytest.fixture(scope="module")
def base(lab: lab_mod.LabState, tmp_path_factory: Any) -> Iterator[Path]:
    """The lab's hosts with no layer groups (only the base layer applies), converged."""
    inventory = write_inventory(lab, tmp_path_factory.mktemp("evidence") / "inventory")
    done = hearth("up", "-i", str(inventory))
    assert done.returncode == 0, f"hearth up:\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    yield inventory


def _check(report: dict[str, Any], host: str, name: str) -> dict[str, Any]:
    found = [c for c in report["hosts"][host]["checks"] if f"{c['role']}/{c['check']}" == name]
    assert len(found) == 1, name
    return found[0]


def _value(check: dict[str, Any], name: str) -> dict[str, Any]:
    return next(o for o in check["observed"] if o["name"] == name)


def _sh(lab: lab_mod.LabState, host: str, script: str) -> str:
    done = container_exec(lab, host, "sh", "-c", script)
    assert done.returncode == 0, f"{host}: {script}: {done.stdout}{done.stderr}"
    return done.stdout.strip()


def test_signed_saved_audits_diff_verify_and_show_the_change(
    lab: lab_mod.LabState, base: Path, tmp_path: Path
) -> None:
    keys = sign.keygen(tmp_path / "keys", principal="lab-auditor")
    home = tmp_path / "home"
    env = {"HEARTH_HOME": str(home)}
    audit = ["audit", "-i", str(base), "--sign", "--save", "--key", str(keys.private)]
    signers = ["--signers", str(keys.allowed_signers)]

    first = hearth(*audit, env=env)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    [before] = sorted((home / "audits").glob("*.json"))
    data = json.loads(before.read_text())
    sysctl = _check(data, HOST, "common/test_sysctl")
    assert sysctl["outcome"] == "passed" and sysctl["description"].startswith("Every declared")
    assert _value(sysctl, KEY) == {"name": KEY, "value": GOOD, "declared": GOOD}
    # the header: each host's identity as the host itself knows it, the inventory, who and where
    identity = data["hosts"][HOST]["identity"]
    assert identity["machine_id"] == _sh(lab, HOST, "cat /etc/machine-id")
    keys_on_host = "for k in /etc/ssh/ssh_host_*_key.pub; do ssh-keygen -lf $k; done"
    fingerprints = _sh(lab, HOST, keys_on_host)
    assert identity["ssh_host_key"].split()[-1] in fingerprints.split()
    assert data["header"]["inventory"]["path"] == str(base.resolve())
    assert len(data["header"]["inventory"]["declared_sha256"]) == 64
    assert data["header"]["operator"] and data["header"]["control_node"]

    _sh(lab, HOST, f"sysctl -qw {KEY}={BAD}")
    try:
        second = hearth(*audit, env=env)
    finally:
        _sh(lab, HOST, f"sysctl -qw {KEY}={GOOD}")
    assert second.returncode == 5, second.stdout[-4000:] + second.stderr[-2000:]
    [after] = sorted(set((home / "audits").glob("*.json")) - {before})
    # read again through a fresh connection while the first audit's master may still be there
    assert json.loads(after.read_text())["hosts"][HOST]["identity"] == identity

    # the diff names exactly that change, by the two files and by --since
    for args in ([str(before), str(after)], ["--since", "1d"]):
        done = hearth("audit", "diff", *args, "--json", env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        changes = json.loads(done.stdout)
        assert list(changes["hosts"]) == [HOST], changes
        assert changes["hosts"][HOST]["values_moved"] == [
            f"common/test_sysctl: {KEY}: {GOOD} → {BAD} (declared {GOOD})"
        ]
        [started] = changes["hosts"][HOST]["started_failing"]
        assert started.startswith("common/test_sysctl (passed → failed)") and BAD in started
        assert not changes["hosts"][HOST]["stopped_failing"] and not changes["hosts"][HOST]["other"]
        assert changes["declared_state_changed"] is False

    for report in (before, after):
        done = hearth("audit", "verify", str(report), *signers, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "signed by lab-auditor" in done.stdout
        assert f"{report.stem}.html matches" in done.stdout

    # a copy with one observed value edited back to the declared one: refused, naming it
    edited = tmp_path / "edited"
    edited.mkdir()
    for f in (after, after.with_name(after.name + ".sig"), after.with_suffix(".html")):
        shutil.copy(f, edited / f.name)
    copy = edited / after.name
    text = copy.read_text()
    copy.write_text(text.replace(f'"value": "{BAD}"', f'"value": "{GOOD}"', 1))
    done = hearth("audit", "verify", str(copy), *signers, env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    said = " ".join((done.stdout + done.stderr).split())
    assert (
        f'hosts.{HOST}.checks.common/test_sysctl.observed[{KEY}].value: signed "{BAD}", '
        f'now "{GOOD}"' in said
    ), said

    # the page, in a real browser: the failed check with the value found and the declared one
    browser = shutil.which("chromium")
    if browser is None:
        pytest.skip("chromium is not installed here (apt-get install chromium; CI has it)")
    page = after.with_suffix(".html")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             f"--user-data-dir={tmp_path / 'profile'}", "--proxy-server=127.0.0.1:9"]  # fmt: skip
    dom = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()], capture_output=True,
                         text=True, timeout=120, check=True).stdout  # fmt: skip
    block = re.search(
        rf'<div class="check check-failed" id="{HOST}--common--test_sysctl">(.*?)</div>\s*'
        r'(?=<div class="check|<h2|<script)', dom, re.S,
    )  # fmt: skip
    assert block, "the failed check on the page"
    assert re.search(rf"<td>{re.escape(KEY)}</td><td[^>]*>{BAD}</td><td[^>]*>{GOOD}</td>",
                     block.group(1)), block.group(1)  # fmt: skip
    assert "Signature: the JSON report is signed" in dom
    shot = tmp_path / "audit.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1200,1400",
                    page.as_uri()], capture_output=True, timeout=120, check=True)  # fmt: skip
    from PIL import Image

    colours = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20) or []
    red = sum(n for n, (r, g, b) in colours if r > 180 and g < 70 and b < 80)
    assert red > 500, "the failed check is drawn (in red) near the top of the page"
