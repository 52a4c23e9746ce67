"""The report opens in a real headless browser (Debian's ``chromium``) without errors and its images load."""

from __future__ import annotations

import base64
import re
import shutil
import struct
import subprocess

import pytest
from test_report_build import make_results

from medtransfer.report.build import ReportOptions, build_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Appended to a copy of the page: after the load event, record on <body> how many images decoded (naturalWidth > 0),
# their widths, and how many error events (script errors or failed resources) fired.
PROBE = """<script>
window.__errors = 0;
window.addEventListener("error", function () { window.__errors += 1; }, true);
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var loaded = images.filter(function (img) { return img.complete && img.naturalWidth > 0; });
  document.body.setAttribute("data-images", String(images.length));
  document.body.setAttribute("data-loaded", String(loaded.length));
  document.body.setAttribute("data-widths", images.map(function (img) { return img.naturalWidth; }).join(","));
  document.body.setAttribute("data-errors", String(window.__errors));
  document.body.setAttribute("data-probe", "done");
});
</script>"""


def png_width(src: str) -> int:
    data = base64.b64decode(src.split(",", 1)[1])
    return struct.unpack(">I", data[16:20])[0]  # IHDR width follows the 8-byte signature and 8-byte chunk header


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(tmp_path):
    levels = {"full": 0.8, "first_k:2": 0.6}
    axes = {"target": "brain", "strategy": list(levels), "budget": [1, 3]}
    results = make_results(tmp_path, axes, levels=levels, n_cases=6, history=True, predictions=True)
    files = build_report(results, tmp_path / "report", ReportOptions(max_overlays=2))
    html = files.html.read_text(encoding="utf-8")
    widths = [png_width(src) for src in re.findall(r'<img src="([^"]+)"', html)]
    assert len(widths) >= 4  # budget curves, convergence x2, overlays
    page = tmp_path / "probe.html"
    page.write_text(html.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", done.stdout)
    assert body is not None, done.stdout[:500]
    attrs = dict(re.findall(r'data-([a-z]+)="([^"]*)"', body.group(1)))
    assert attrs.get("probe") == "done", attrs
    assert attrs["errors"] == "0"
    assert int(attrs["images"]) == len(widths)
    assert attrs["loaded"] == attrs["images"]
    assert [int(w) for w in attrs["widths"].split(",")] == widths
    assert "has the highest mean Dice" in done.stdout
