"""``medtransfer demo --quick`` end to end: benchmark, grid, report; learning far above chance; resumable."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medtransfer.cli import main
from medtransfer.data.io import load_nifti


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.mark.slow
def test_demo_quick_learns_and_reports(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    html = (out / "report" / "report.html").read_text()
    markdown = (out / "report" / "report.md").read_text()
    assert "<img" in html
    assert "significant" in markdown  # the headline names the winner and says whether the win is significant
    assert "won" in markdown
    summaries = [json.loads(p.read_text()) for p in (out / "results" / "demo").rglob("summary.json")]
    cells = [s for s in summaries if "cell_id" in s]
    assert len(cells) >= 2 * 4 * 2  # targets x strategies x budgets (quick: one seed) + references
    assert all(s["status"] == "done" for s in cells)
    full = [s for s in cells if s["axes"]["strategy"] == "full" and s["axes"]["target"] == "brain"]
    for summary in full:
        run_dir = out / "results" / "demo" / summary["cell_id"]
        reference = next((run_dir / "reference").glob("*.nii.gz"))
        ref = load_nifti(reference).array > 0
        chance = _dice(np.ones_like(ref), ref)  # predicting "brain" everywhere
        assert summary["result"]["metrics"]["dice"] > chance + 0.2
    printed = capsys.readouterr().out
    assert "report:" in printed

    assert main(["demo", "--quick", "--out", str(out)]) == 0  # a rerun reuses every finished cell
    assert "'ran': 0" in capsys.readouterr().out


@pytest.mark.slow
def test_lesion_demo_quick_runs_every_arm_and_reports_lesion_precision(tmp_path, capsys):
    out = tmp_path / "lesions"
    assert main(["demo", "--lesions", "--quick", "--out", str(out)]) == 0
    markdown = (out / "report" / "report.md").read_text()
    assert "lesion F1" in markdown
    summaries = [json.loads(p.read_text()) for p in (out / "results" / "demo_lesions").rglob("summary.json")]
    cells = {s["axes"]["strategy"]: s for s in summaries if "cell_id" in s}
    assert set(cells) == {"baseline", "scratch", "full", "first_k:1", "last_k:1"}
    assert all(s["status"] == "done" for s in cells.values())
    # the baseline is the brain-extraction source as is: it marks brain (here after a few steps: large regions), which
    # overlaps lesions without matching one (IoU >= 0.1), so lesion precision and F1 say what the Dice says (a scan
    # without a predicted component has no precision: null, as the metrics report it)
    cases = cells["baseline"]["result"]["per_case"]
    assert cases
    assert all((c["lesion_precision"] or 0.0) < 0.2 for c in cases)
    assert all((c["lesion_f1"] or 0.0) < 0.3 for c in cases)
    assert cells["baseline"]["result"]["metrics"]["dice"] < 0.2
    assert (out / "results" / "demo_lesions" / "_sources").is_dir()
    assert "report:" in capsys.readouterr().out

    assert main(["demo", "--lesions", "--quick", "--out", str(out)]) == 0  # a rerun reuses every finished cell
    assert "'ran': 0" in capsys.readouterr().out
