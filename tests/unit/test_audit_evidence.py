"""Audit evidence without hosts: what checks observe reaches the reports (JSON, JUnit, HTML), the
header says who/where/when/against what, saved reports are compared, signed, verified and grouped
by the site's controls. The lab proof is tests/integration/test_audit_evidence.py."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from hearth import audit, paths, report
from hearth.evidence import REPORT_FORMAT
from hearth.evidence.header import checks_digest, declared_digest, header

ROOT = Path(__file__).resolve().parents[2]


def _result(
    swappiness: str = "60", outcome: str = "failed", host: str = "lab1"
) -> audit.AuditResult:
    held = {"name": "prometheus selection", "value": "hold", "declared": "hold"}
    return audit.AuditResult(
        results=[
            audit.CheckResult(
                host, "common", "test_sysctl", outcome,
                "" if outcome == "passed" else "kernel settings drifted: {'vm.swappiness': "
                f"'expected 10, found {swappiness}'}}", 0.2,
                "Every declared kernel setting has its value now.",
                [{"name": "vm.swappiness", "value": swappiness, "declared": "10"}],
            ),
            audit.CheckResult(host, "prometheus", "test_package_pinned_and_held", "passed", "",
                              0.1, "Prometheus' package is held.", [held]),
            audit.CheckResult(host, "common", "test_time_sync", "skipped", "not declared", 0.0),
        ],
        roles={host: ["common", "prometheus"]},
        header={"id": "20261128T040000Z-abcdef", "inventory": {"path": "/site/inv",
                "declared_sha256": "0" * 64}, "started": "2026-11-28T04:00:00+00:00",
                "finished": "2026-11-28T04:00:30+00:00", "operator": "auditor",
                "control_node": "ctl", "hearth": {"version": "0.1.0", "commit": "abc",
                "checks_sha256": "1" * 64},
                "hosts": {host: {"machine_id": "m" * 32, "ssh_host_key": "ED25519 SHA256:x"}}},
    )  # fmt: skip


# --------------------------------------------------------------------------- evidence recorded
def test_the_plugin_records_descriptions_and_observations_passed_or_not(tmp_path: Path) -> None:
    """The audit's pytest plugin on real checks run on this machine (testinfra's local backend):
    each result carries the docstring and every value the check observed, failed or passed."""
    checks = tmp_path / "roles" / "demo" / "checks"
    checks.mkdir(parents=True)
    (checks / "test_demo.py").write_text(
        "from hearth.checklib import observe\n\n\n"
        "def test_passes(host, hearth_vars):\n"
        '    """The kernel is Linux, as declared."""\n'
        "    found = observe('kernel', host.check_output('uname -s'), hearth_vars['kernel'])\n"
        "    assert found == hearth_vars['kernel']\n\n\n"
        "def test_fails(host, hearth_vars):\n"
        f"    host.file('{tmp_path / 'vars.json'}').sha256sum\n"
        "    observe('answer', 41, 42)\n"
        "    assert 41 == 42, 'answer: expected 42, found 41'\n"
    )
    (tmp_path / "vars.json").write_text(
        json.dumps({"": {"roles": ["demo"], "vars": {"kernel": "Linux"}}})
    )
    results = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(checks), "--hosts=local://",
         "-p", "hearth.audit_plugin", "-p", "no:cacheprovider", "-n", "1", "-q",
         "-o", "addopts=", "--rootdir", str(tmp_path)],
        capture_output=True, text=True, check=False,
        env={**os.environ, "HEARTH_AUDIT_RESULTS": str(results),
             "HEARTH_AUDIT_VARS": str(tmp_path / "vars.json")},
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    found = {r["check"]: r for r in json.loads(results.read_text())}
    assert found["test_passes"]["outcome"] == "passed"
    assert found["test_passes"]["description"] == "The kernel is Linux, as declared."
    assert found["test_passes"]["observed"] == [
        {"name": "kernel", "value": "Linux", "declared": "Linux"}
    ]
    assert found["test_fails"]["outcome"] == "failed"
    assert found["test_fails"]["description"] == "Fails."  # no docstring: a sentence, no name
    digest = hashlib.sha256((tmp_path / "vars.json").read_bytes()).hexdigest()
    assert found["test_fails"]["observed"] == [
        {"name": f"{tmp_path / 'vars.json'} sha256", "value": digest},  # any sha256 a check reads
        {"name": "answer", "value": 41, "declared": 42},
    ]


def test_every_check_says_what_it_proves() -> None:
    """Every check has a docstring: the report's description of it."""
    import ast

    for role in sorted(audit.known_checks()):
        for f in audit.check_files(role):
            for node in ast.parse(f.read_text()).body:
                if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                    assert ast.get_docstring(node), f"{role}/{node.name} has no docstring"


def test_json_report_has_the_header_the_verdict_and_observed_values() -> None:
    data = json.loads(report.to_json(_result()))
    assert data["format"] == REPORT_FORMAT
    assert data["header"]["operator"] == "auditor"
    assert data["hosts"]["lab1"]["identity"]["machine_id"] == "m" * 32
    sysctl = data["hosts"]["lab1"]["checks"][0]
    assert sysctl["description"].startswith("Every declared kernel setting")
    assert sysctl["observed"] == [{"name": "vm.swappiness", "value": "60", "declared": "10"}]
    skipped = data["hosts"]["lab1"]["checks"][2]
    assert skipped["description"] == "Time sync."  # never the bare function name


def test_junit_carries_observed_and_declared_values_as_properties() -> None:
    root = ET.fromstring(report.to_junit(_result()).split("\n", 1)[1])
    case = root.find(".//testcase[@name='test_sysctl']")
    assert case is not None
    props = {p.get("name"): p.get("value") for p in case.findall("properties/property")}
    assert props["observed: vm.swappiness"] == "60"
    assert props["declared: vm.swappiness"] == "10"
    assert props["description"].startswith("Every declared kernel setting")


def test_header_names_hearth_the_inventory_and_its_declared_state(tmp_path: Path) -> None:
    class Inv:
        path = tmp_path / "hosts.yml"

    declared = {"lab1": {"roles": ["common"], "vars": {"common_timezone": "UTC"}}}
    got = header(Inv(), declared, {"lab1": {"machine_id": "x", "ssh_host_key": "k"}})
    assert got["inventory"]["path"] == str((tmp_path / "hosts.yml").resolve())
    assert got["inventory"]["declared_sha256"] == declared_digest(declared)
    assert declared_digest(declared) != declared_digest(
        {"lab1": {"roles": ["common"], "vars": {"common_timezone": "Europe/Paris"}}}
    )
    assert got["hearth"]["checks_sha256"] == checks_digest() and len(checks_digest()) == 64
    assert got["operator"] and got["control_node"] and got["hosts"]["lab1"]["machine_id"] == "x"
    assert got["id"].startswith(got["started"][:4])


# ------------------------------------------------------------------------------ save and diff
def _hearth(args: list[str]) -> tuple[int, str]:
    from click.testing import CliRunner

    from hearth import cli

    done = CliRunner().invoke(cli.cli, args)
    code = done.exit_code
    if done.exception is not None and not isinstance(done.exception, SystemExit):
        from hearth.errors import HearthError

        assert isinstance(done.exception, HearthError), done.exception
        return done.exception.exit_code, done.exception.message
    return code, done.output


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HEARTH_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _write(path: Path, result: audit.AuditResult) -> Path:
    path.write_text(report.to_json(result))
    return path


def test_diff_names_the_check_that_started_failing_and_the_value_that_moved(
    tmp_path: Path,
) -> None:
    good = _write(tmp_path / "a.json", _result("10", "passed"))
    bad = _write(tmp_path / "b.json", _result("60", "failed"))
    code, out = _hearth(["audit", "diff", str(good), str(bad), "--json"])
    assert code == 0, out
    changes = json.loads(out)["hosts"]
    assert list(changes) == ["lab1"]
    assert len(changes["lab1"]["started_failing"]) == 1
    assert changes["lab1"]["started_failing"][0].startswith("common/test_sysctl (passed → failed)")
    assert changes["lab1"]["values_moved"] == [
        "common/test_sysctl: vm.swappiness: 10 → 60 (declared 10)"
    ]
    assert not changes["lab1"]["stopped_failing"] and not changes["lab1"]["other"]
    code, out = _hearth(["audit", "diff", str(bad), str(good)])
    assert "stopped failing: common/test_sysctl (failed → passed)" in out


def test_diff_refuses_two_inventories_and_files_that_are_not_reports(tmp_path: Path) -> None:
    one = _write(tmp_path / "a.json", _result())
    other = _result()
    other.header["inventory"] = {"path": "/elsewhere/inv", "declared_sha256": "2" * 64}
    two = _write(tmp_path / "b.json", other)
    code, out = _hearth(["audit", "diff", str(one), str(two)])
    assert code == 2 and "different inventories (/site/inv and /elsewhere/inv)" in out
    junk = tmp_path / "junit.xml"
    junk.write_text(report.to_junit(_result()))
    code, out = _hearth(["audit", "diff", str(one), str(junk)])
    assert code == 2 and f"{junk}: not a Hearth audit report" in out
    (tmp_path / "other.json").write_text('{"hosts": {}}')
    code, out = _hearth(["audit", "diff", str(one), str(tmp_path / "other.json")])
    assert code == 2 and "not a Hearth audit report (expected format" in out


def test_saved_reports_are_pruned_after_the_retention_and_diffed_since(
    home: Path, tmp_path: Path
) -> None:
    import datetime as dt

    from hearth.evidence import store
    from hearth.evidence.diff import diff

    now = dt.datetime.now(dt.UTC)
    for days, swappiness in ((500, "1"), (20, "10"), (1, "60")):
        r = _result(swappiness, "passed" if swappiness != "60" else "failed")
        when = (now - dt.timedelta(days=days)).isoformat(timespec="seconds")
        r.header = {**r.header, "started": when, "id": f"r{days}"}
        path = store.save_path(report.to_dict(r))
        path.write_text(report.to_json(r))
    assert [p.name for p, _ in store.saved()] == ["r500.json", "r20.json", "r1.json"]
    assert [p.name for p in store.prune(400)] == ["r500.json"]
    assert [p.name for p, _ in store.saved()] == ["r20.json", "r1.json"]
    code, out = _hearth(["audit", "diff", "--since", "30d", "--json"])
    assert code == 0, out
    assert json.loads(out)["hosts"]["lab1"]["values_moved"][0].endswith("10 → 60 (declared 10)")
    code, out = _hearth(["audit", "diff", "--since", "2d"])
    assert code == 2 and "1 saved report(s)" in out
    code, out = _hearth(["audit", "diff", "--since", "a month"])
    assert code == 2 and "--since 'a month'" in out
    assert diff(store.saved()[0][1], store.saved()[0][1]).lines()[-1].startswith("no change")


# ------------------------------------------------------------------------------ sign and verify
needs_ssh_keygen = pytest.mark.skipif(
    shutil.which("ssh-keygen") is None, reason="ssh-keygen (openssh-client) absent"
)


@pytest.fixture
def keys(tmp_path: Path) -> Any:
    from hearth.bundle import sign

    return sign.keygen(tmp_path / "keys", principal="site-auditor")


@needs_ssh_keygen
def test_signed_report_verifies_and_an_edited_one_is_refused_naming_the_change(
    tmp_path: Path, keys: Any, home: Path
) -> None:
    from hearth.commands.audit import keep

    out = tmp_path / "out" / "audit.json"
    written = keep(_result(), None, output=out, sign=True, key=keys.private, save=False,
                   retention_days=None)  # fmt: skip
    assert written == [out, out.with_name("audit.json.sig"), out.with_suffix(".html")]
    assert "Signature: the JSON report is signed" in out.with_suffix(".html").read_text()
    code, text = _hearth(["audit", "verify", str(out), "--signers", str(keys.allowed_signers)])
    assert code == 0 and "signed by site-auditor" in text and "audit.html matches" in text

    # one observed value edited, the signature kept: refused, the change named
    data = json.loads(out.read_text())
    data["hosts"]["lab1"]["checks"][0]["observed"][0]["value"] = "10"
    out.write_text(report.dumps(data))
    code, text = _hearth(["audit", "verify", str(out), "--signers", str(keys.allowed_signers)])
    assert code == 2, text
    assert "edited after it was signed" in text
    assert "hosts.lab1.checks.common/test_sysctl.observed[vm.swappiness].value: signed " in text
    assert '"60", now "10"' in text


@needs_ssh_keygen
def test_verify_refuses_an_untrusted_key_an_unsigned_report_and_an_edited_page(
    tmp_path: Path, keys: Any, home: Path
) -> None:
    from hearth.bundle import sign
    from hearth.commands.audit import keep

    out = tmp_path / "audit.json"
    keep(_result(), None, output=out, sign=True, key=keys.private, save=False,
         retention_days=None)  # fmt: skip
    stranger = sign.keygen(tmp_path / "stranger", principal="someone-else")
    code, text = _hearth(["audit", "verify", str(out), "--signers", str(stranger.allowed_signers)])
    assert code == 2 and f"signed by key {keys.fingerprint}" in text and "does not trust" in text

    page = out.with_suffix(".html")
    page.write_text(page.read_text().replace("found 60", "found 10"))
    code, text = _hearth(["audit", "verify", str(out), "--signers", str(keys.allowed_signers)])
    assert code == 2 and "audit.html: is not the rendering of audit.json" in text

    plain = tmp_path / "plain.json"
    plain.write_text(report.to_json(_result()))
    code, text = _hearth(["audit", "verify", str(plain), "--signers", str(keys.allowed_signers)])
    assert code == 2 and "plain.json.sig: missing" in text
    # a bundle signature is no report signature (namespaces), even by the same key
    sign.sign(plain, keys.private)  # bundle namespace
    code, text = _hearth(["audit", "verify", str(plain), "--signers", str(keys.allowed_signers)])
    assert code == 2 and "signature does not match" in text


@needs_ssh_keygen
def test_save_keeps_the_signed_set_under_hearth_home(tmp_path: Path, keys: Any, home: Path) -> None:
    from hearth.commands.audit import keep

    written = keep(_result(), None, output=None, sign=True, key=keys.private, save=True,
                   retention_days=30)  # fmt: skip
    assert written[0] == home / "audits" / "20261128T040000Z-abcdef.json"
    assert all(p.is_file() for p in written[:3])
    code, text = _hearth(["audit", "verify", str(written[0]), "--signers",
                          str(keys.allowed_signers)])  # fmt: skip
    assert code == 0, text


def test_sign_without_a_file_is_refused_before_any_host(tmp_path: Path) -> None:
    code, text = _hearth(["audit", "-i", str(tmp_path / "nowhere.yml"), "--sign"])
    assert code == 2 and "--sign: signs the JSON report, which needs a file" in text
    code, text = _hearth(["audit", "-i", "x", "--sign", "-o", str(tmp_path / "r.html")])
    assert code == 2 and "name it *.json" in text


# ------------------------------------------------------------------------------------ controls
def test_controls_group_the_report_and_the_sample_names_only_real_checks(tmp_path: Path) -> None:
    from hearth.evidence import controls

    sample = controls.load(ROOT / "inventories" / "sample" / "hosts.yml")
    assert sample is not None and len(sample.controls) >= 5
    (tmp_path / "hosts.yml").write_text("all: {}\n")
    (tmp_path / "audit_controls.yml").write_text(
        "controls:\n  A.8.9:\n    title: Configuration management\n"
        "    checks: [common/test_sysctl, prometheus]\n  LOG-1: [common/test_time_sync]\n"
    )
    mine = controls.load(tmp_path / "hosts.yml")
    assert mine is not None
    data = report.to_dict(_result(), mine)
    grouped = {c["id"]: c for c in data["controls"]}
    assert grouped["A.8.9"]["failed"] == 1 and grouped["A.8.9"]["passed"] == 1
    assert grouped["A.8.9"]["failing"] == ["lab1: common/test_sysctl"]
    assert grouped["LOG-1"] == {**grouped["LOG-1"], "passed": 0, "failed": 0, "skipped": 1}
    page = report.html_from_dict(data)
    assert 'id="summary-controls"' in page and "Configuration management" in page


@pytest.mark.parametrize(
    ("checks", "says"),
    [
        ("[common/test_sysctls]", "role common has no check 'test_sysctls'"),
        ("[kubernetes]", "no role 'kubernetes' has checks"),
    ],
)
def test_a_controls_file_naming_an_unknown_check_is_refused_naming_it(
    tmp_path: Path, checks: str, says: str
) -> None:
    from hearth.errors import InvalidInputError
    from hearth.evidence import controls

    (tmp_path / "audit_controls.yml").write_text(f"controls:\n  C-7:\n    checks: {checks}\n")
    with pytest.raises(InvalidInputError) as err:
        controls.load(tmp_path)
    assert err.value.exit_code == 2
    assert f"{tmp_path / 'audit_controls.yml'}: controls.C-7:" in err.value.message
    assert says in err.value.message


def test_html_is_self_contained_printable_and_shows_failures_first() -> None:
    import re

    page = report.html_from_dict(report.to_dict(_result()))
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # no external asset
    assert "<link" not in page and "@import" not in page and "@media print" in page
    failed = page.index("FAILED</span> — Every declared kernel setting")
    passed = page.index("PASSED</span> — Prometheus")
    assert failed < passed
    row = re.search(r'<tr class="differs"><td>vm.swappiness</td><td class="mono found">60</td>'
                    r'<td class="mono">10</td></tr>', page)  # fmt: skip
    assert row, "the failed check's observed and declared values"
    assert "Signature: not signed" in page
    assert paths.templates_dir().joinpath("reports", "audit.html.j2").is_file()


# ---------------------------------------------------------------------- shared probes record
def test_shared_probes_record_gpu_uuids_key_counts_and_listeners() -> None:
    import socket

    import testinfra

    from hearth import checklib, gpu

    fixture = ROOT / "tests" / "fixtures" / "nvidia-smi"
    gpus = gpu.parse_xml((fixture / "2x-geforce-rtx-2080_driver-590.44.01_q-x.xml").read_text())
    uuids = sorted(str(g["uuid"]) for g in gpus["gpus"])
    checklib.observed()
    checklib.observe_gpus(checklib.GpuReport(list(gpus["gpus"]), 2), [{"uuid": uuids[0]}])
    found = {o["name"]: o for o in checklib.observed()}
    assert found["GPU UUIDs"] == {"name": "GPU UUIDs", "value": uuids, "declared": uuids[:1]}
    assert found["GPU count"]["value"] == 2 and found["NVIDIA PCI devices"]["value"] == 2

    declared = [{"name": "ops", "fingerprint": checklib.key_fingerprint("a" * 64)}]
    checklib.keys_drift(declared, [{"name": "ops", "sha256": "a" * 64},
                                   {"name": "rogue", "sha256": "b" * 64}])  # fmt: skip
    found = {o["name"]: o for o in checklib.observed()}
    assert found["key hash entries"] == {"name": "key hash entries", "value": 2, "declared": 1}
    assert "a" * 64 not in json.dumps(found) and "b" * 64 not in json.dumps(found)

    if shutil.which("ss") is None:
        pytest.skip("ss (iproute2) is not installed here")
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        assert checklib.observe_listeners(testinfra.get_host("local://"), port) == [
            f"127.0.0.1:{port}"
        ]
    assert checklib.observed() == [
        {"name": f"listening on port {port}", "value": [f"127.0.0.1:{port}"]}
    ]
