"""The audit's HTML report in a real browser: headless Chromium (Debian's `chromium`, installed by
scripts/bootstrap.sh) loads the page offline, and its DOM, a screenshot and a PDF print are
checked for the summary and a failed check's observed and declared values."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_audit_evidence import _result

from hearth import report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
RED = (0xCF, 0x22, 0x2E)  # the template's colour of a failed check


@pytest.fixture
def chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: scripts/bootstrap.sh installs it")
        pytest.skip("chromium is not installed here (apt-get install chromium; CI has it)")
    return CHROMIUM


def _run(browser: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--no-first-run", "--disable-extensions", f"--user-data-dir={tmp_path / 'profile'}",
           # offline: any request that left the file would fail, and so would the check below
           "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>", *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def page(tmp_path: Path) -> Path:
    path = tmp_path / "audit.html"
    path.write_text(report.html_from_dict(report.to_dict(_result())))
    return path


def test_the_browser_shows_the_summary_and_the_failed_checks_values(
    chromium: str, page: Path, tmp_path: Path
) -> None:
    done = _run(chromium, tmp_path, "--dump-dom", page.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert "Hearth audit: " in dom and ">FAILED</span>" in dom
    summary = re.search(r'<table id="summary-hosts">(.*?)</table>', dom, re.S)
    assert summary and 'href="#lab1"' in summary.group(1) and "m" * 32 in summary.group(1)
    failed = re.search(
        r'<div class="check check-failed" id="lab1--common--test_sysctl">(.*?)</div>\s*<div',
        dom, re.S,
    )  # fmt: skip
    assert failed, "the failed check's block"
    block = failed.group(1)
    assert "Every declared kernel setting" in block and "expected 10, found 60" in block
    assert re.search(r"<td>vm.swappiness</td><td[^>]*>60</td><td[^>]*>10</td>", block)


def test_a_screenshot_shows_the_failed_check_in_red_and_the_page_prints(
    chromium: str, page: Path, tmp_path: Path
) -> None:
    from PIL import Image

    shot = tmp_path / "audit.png"
    done = _run(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1200,1600",
                "--hide-scrollbars", page.as_uri())  # fmt: skip
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 1600)
    colours = image.getcolors(maxcolors=1 << 20) or []
    red = sum(
        n for n, rgb in colours if all(abs(a - b) < 24 for a, b in zip(rgb, RED, strict=True))
    )
    assert red > 500, f"expected the failed check drawn in red, found {red} red pixels"
    dark = sum(n for n, rgb in colours if max(rgb) < 80)
    assert dark > 2000, "expected text on the page"

    pdf = tmp_path / "audit.pdf"
    done = _run(chromium, tmp_path, f"--print-to-pdf={pdf}", "--no-pdf-header-footer",
                page.as_uri())  # fmt: skip
    assert done.returncode == 0 and pdf.is_file(), done.stderr[-2000:]
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-") and len(re.findall(rb"/Type\s*/Page[^s]", data)) >= 1
