"""Audit evidence without hosts: what checks observe reaches the reports (JSON, JUnit, HTML), the
header says who/where/when/against what, saved reports are compared, signed, verified and grouped
by the site's controls. The lab proof is tests/integration/test_audit_evidence.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from hearth import audit, report
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
    assert found["test_fails"]["observed"] == [{"name": "answer", "value": 41, "declared": 42}]


def test_checks_of_the_roles_hearth_owns_here_say_what_they_prove() -> None:
    """Every check of the roles whose checks record evidence has a docstring (the report's
    description of it)."""
    import ast

    for role in ("common", "nvidia_driver", "node_exporter", "prometheus"):
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
