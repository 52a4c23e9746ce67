"""Lesion-wise metrics from the grid cell's scorer through the runner's files into the report's tables."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from medtransfer.cli import main
from medtransfer.errors import ConfigError
from medtransfer.experiments import parse_grid, run_grid
from medtransfer.experiments.evaluate_cell import score, summarize_rows
from medtransfer.report.build import ReportOptions, create_report
from medtransfer.report.html import render_html
from medtransfer.report.results import load_results
from medtransfer.report.tables import lesion_tables, lesion_volume_tables, zoetmulder_tables

SHAPE = (16, 16, 8)
N_CASES = 4


def _reference(case: int) -> np.ndarray:
    """Two lesions of 8 voxels each, at places that move with the case."""
    ref = np.zeros(SHAPE, dtype=np.int64)
    ref[2 + case : 4 + case, 2:4, 1:3] = 1
    ref[10:12, 10 + case % 2 : 12 + case % 2, 4:6] = 1
    return ref


def _prediction(strategy: str, case: int) -> np.ndarray:
    ref = _reference(case)
    if strategy == "baseline":  # the brain-extraction source: one mask over (nearly) everything
        pred = np.zeros_like(ref)
        pred[1:15, 1:15, :] = 1
        return pred
    pred = ref.copy()
    if strategy == "full" and case == 0:
        pred[15, 15, 7] = 1  # one false positive far away
    if strategy == "scratch":
        pred[10:12, :, :] = 0  # misses the second lesion everywhere
    return pred


def lesion_cell(config: dict, run_dir, *, resume: bool) -> dict:
    """A cell of the runner's protocol that scores hand-made predictions with the grid cell's scorer."""
    rows = [
        {"case": f"case{i}", **score(_prediction(config["strategy"], i), _reference(i), (1.0, 1.0, 1.0), 1, {}, True)}
        for i in range(N_CASES)
    ]
    return {"metrics": summarize_rows(rows), "per_case": rows}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("lesions")
    axes = {"target": "stroke", "source": "mri_seg", "strategy": ["baseline", "full", "scratch"], "budget": [3]}
    raw = {"name": "lesions", "defaults": {"kind": "dummy"}, "axes": axes}
    assert run_grid(parse_grid(raw, "lesions.yaml"), cell_fn=lesion_cell, results_root=root, progress=False).ok
    return root / "lesions"


def _reject_constant(name: str):
    raise AssertionError(f"non-strict JSON constant {name}")


def test_cell_summaries_are_strict_json_with_the_lesion_metrics(results):
    summaries = {}
    for path in results.rglob("summary.json"):
        summary = json.loads(path.read_text(), parse_constant=_reject_constant)
        summaries[summary["axes"]["strategy"]] = summary["result"]
    baseline = summaries["baseline"]["metrics"]
    assert (baseline["lesion_detection_rate"], baseline["lesion_precision"], baseline["lesion_f1"]) == (0, 0, 0)
    assert "lesion_detected_dice" not in baseline  # undefined without a detected lesion: left out, not NaN
    full = summaries["full"]["metrics"]
    assert full["lesion_precision"] == pytest.approx(8 / 9)  # 8 lesions found by 9 predicted components
    assert full["lesion_fp_per_case"] == pytest.approx(1 / 4)
    assert summaries["baseline"]["per_case"][0]["lesion_detected_dice"] is None


def _table(results, strategy: str) -> dict[str, str]:
    (table,) = lesion_tables(load_results(results).rows)
    row = next(r for r in table.rows if r[2] == strategy)
    return dict(zip(table.header, row, strict=True))


def test_lesion_table_shows_the_painting_baseline_at_precision_zero(results):
    baseline = _table(results, "baseline")
    assert baseline["lesion recall (detection rate)"] == "0.000"
    assert baseline["lesion precision"] == "0.000"
    assert baseline["lesion F1"] == "0.000"
    assert baseline["false-positive lesions per scan"] == "1.00"
    assert baseline["Dice of detected lesions"] == "—"
    assert baseline["lesion count error"] == "-1.00"  # one component for two lesions
    assert baseline["lesion volume error (mm³)"] == str(14 * 14 * 8 - 16)


def test_lesion_table_hand_computed_means(results):
    full = _table(results, "full")
    assert full["lesion recall (detection rate)"] == "1.000"
    assert full["lesion precision"].startswith(f"{np.mean([2 / 3, 1, 1, 1]):.3f} [")
    assert full["lesion F1"].startswith(f"{np.mean([0.8, 1, 1, 1]):.3f} [")
    assert full["false-positive lesions per scan"].startswith("0.25 [")
    assert full["Dice of detected lesions"] == "1.000"
    scratch = _table(results, "scratch")
    assert scratch["lesion recall (detection rate)"] == "0.500"
    assert scratch["lesion precision"] == "1.000"
    assert scratch["lesion F1"] == f"{2 / 3:.3f}"
    assert scratch["lesion volume error (mm³)"] == "-8"


def test_lesion_table_states_the_overlap_rule_and_columns_in_order(results):
    (table,) = lesion_tables(load_results(results).rows)
    assert table.header[3:6] == ("lesion recall (detection rate)", "lesion precision", "lesion F1")
    assert "IoU >= 0.1, 26-connected" in table.note
    assert table.caption == "Lesion-wise metrics, label budget n3, target stroke"


def test_zoetmulder_table_shows_lesion_f1_not_the_detection_rate():
    base = {"source": "mri_seg", "strategy": "full", "budget": "n3", "seed": 0}
    rows = [
        {**base, "target": "brain", "case": "b0", "dice": 0.9, "iou": 0.8},
        {**base, "target": "stroke", "case": "s0", "dice": 0.5, "iou": 0.4, "lesion_detection_rate": 1.0},
        {**base, "target": "stroke", "case": "s1", "dice": 0.3, "iou": 0.2, "lesion_f1": 0.5},
    ]
    (table,) = zoetmulder_tables(rows)
    assert table.header[3:] == ("brain: Dice", "brain: IoU", "stroke: Dice", "stroke: IoU", "stroke: lesion F1")
    assert table.rows[0][3:] == ("0.900", "0.800", "0.400 [0.300, 0.500]", "0.300 [0.200, 0.400]", "0.500")


def test_a_recorded_detection_rate_alone_still_gets_precision_and_f1_columns():
    rows = [{"target": "ms", "source": "none", "strategy": "full", "budget": "n1", "lesion_detection_rate": 0.5}]
    (table,) = lesion_tables(rows)
    assert table.rows[0][3:6] == ("0.500", "—", "—")
    assert "(rule not recorded)" in table.note


def test_every_rendered_detection_rate_has_precision_and_f1_beside_it(results):
    page = render_html(create_report(load_results(results), ReportOptions()))
    headers = [re.findall(r"<th>(.*?)</th>", row) for row in re.findall(r"<tr>(.*?)</tr>", page, re.S)]
    shown = [h for h in headers if any("detection rate" in cell for cell in h)]
    assert shown  # the lesion table is there
    for header in shown:
        at = next(i for i, cell in enumerate(header) if "detection rate" in cell)
        assert header[at + 1 : at + 3] == ["lesion precision", "lesion F1"]


def test_lesion_f1_decides_the_paired_tests(results):
    report = create_report(load_results(results), ReportOptions(metric="lesion_f1"))
    # full: per-case F1 0.8 (the far false positive), 1, 1, 1; scratch: 2/3 in every case; the baseline never wins
    assert report.headline[0].startswith("**stroke, n3**: **full** has the highest mean lesion F1 (0.950 vs 0.667")
    assert "n = 4 paired cases" in report.headline[0]
    default = create_report(load_results(results), ReportOptions())
    assert "highest mean Dice" in default.headline[0]


def test_a_detection_rate_cannot_decide_the_winner(results, tmp_path, capsys):
    with pytest.raises(ConfigError, match="alone rewards painting everything"):
        create_report(load_results(results), ReportOptions(metric="lesion_detection_rate"))
    argv = ["report", str(results), "--out", str(tmp_path / "out"), "--metric", "lesion_detection_rate"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: --metric: lesion_detection_rate alone rewards painting everything")
    assert "use lesion_f1" in err
    assert not (tmp_path / "out").exists()


def test_lesion_recall_by_volume_table_from_the_grid_files(results):
    """Every reference lesion of the fixture has 8 voxels of 1 mm³: one bin, counts summed over the 4 cases."""
    (table,) = lesion_volume_tables(load_results(results).rows)
    assert table.caption == "Lesion recall by volume, label budget n3, target stroke"
    assert table.header == ("source task", "source domain", "strategy", "< 0.03 ml")
    cells = {row[2]: row[3] for row in table.rows}
    assert cells == {"baseline": "0/8 (0.00)", "full": "8/8 (1.00)", "scratch": "4/8 (0.50)"}
    assert "IoU >= 0.1, 26-connected" in table.note


def _bin_row(strategy: str, **counts) -> dict:
    row = {"target": "stroke", "budget": "nall", "source": "none", "strategy": strategy, "seed": 0}
    for name, (n_ref, tp) in counts.items():
        row[f"lesion_n_ref_{name}"], row[f"lesion_tp_{name}"] = n_ref, tp
    return row


def test_lesion_recall_by_volume_pools_counts_and_drops_empty_bins():
    rows = [
        _bin_row("scratch", **{"lt0.03ml": (0, 0), "0.1-1ml": (3, 0), "ge10ml": (1, 1)}),
        _bin_row("scratch", **{"lt0.03ml": (0, 0), "0.1-1ml": (1, 1), "ge10ml": (0, 0)}),
        _bin_row("full", **{"lt0.03ml": (0, 0), "0.1-1ml": (4, 2), "ge10ml": (1, 1)}),
    ]
    (table,) = lesion_volume_tables(rows)
    assert table.header[3:] == ("0.1-1 ml", ">= 10 ml")  # no reference lesion under 0.03 ml: no column
    cells = {row[2]: row[3:] for row in table.rows}
    assert cells["scratch"] == ("1/4 (0.25)", "1/1 (1.00)")
    assert cells["full"] == ("2/4 (0.50)", "1/1 (1.00)")
    assert lesion_volume_tables([{k: v for k, v in rows[0].items() if "_n_ref_" not in k}]) == []
    old = {k: v for k, v in rows[1].items() if not k.startswith(("lesion_n_ref_", "lesion_tp_"))}
    (mixed,) = lesion_volume_tables([rows[0], old])  # a row of older results is left out, and the note says so
    assert mixed.rows[0][3:] == ("0/3 (0.00)", "1/1 (1.00)")
    assert mixed.note.endswith("; 1 per-case rows without the counts (older results) are left out")


def test_lesion_tallies_are_not_metrics_that_decide(results):
    """Per-case counts and volumes (lesion_tp, lesion_n_ref_<bin>, ...) are tallies, not scores to compare on."""
    loaded = load_results(results)
    assert "lesion_f1" in loaded.metrics
    assert loaded.has_column("lesion_tp_lt0.03ml")
    assert loaded.has_column("lesion_n_ref")
    tallies = [m for m in loaded.metrics if m.startswith(("lesion_tp", "lesion_n_", "lesion_volume_", "lesion_fn"))]
    assert tallies == ["lesion_volume_error"]  # an error per case is a score; the counts and volumes are not
    with pytest.raises(ConfigError, match="unknown metric 'lesion_tp_lt0.03ml'"):
        create_report(loaded, ReportOptions(metric="lesion_tp_lt0.03ml"))


def test_the_report_page_holds_the_recall_by_volume_table(results):
    page = render_html(create_report(load_results(results), ReportOptions()))
    section = page[page.index("Lesion recall by volume") :]
    assert "<th>&lt; 0.03 ml</th>" in section
    assert "8/8 (1.00)" in section
    assert "4/8 (0.50)" in section
