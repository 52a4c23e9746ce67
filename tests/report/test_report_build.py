"""The report of a synthetic results folder written by medtransfer.experiments' runner (a table-driven cell)."""

from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from medtransfer.cli import main
from medtransfer.experiments import parse_grid, register_cell_kind, run_grid
from medtransfer.report.build import ReportOptions, build_report, create_report
from medtransfer.report.results import load_results

PNG = b"\x89PNG\r\n\x1a\n"
# per-case offsets shared by every cell: they cancel in paired differences and in "gap closed"
OFFSETS = [0.05, -0.05, 0.02, -0.02, 0.04, -0.04, 0.01, -0.01, 0.03, -0.03, 0.0, 0.0]
# full - first_k:2 per case when both have the same level: mixed signs, mean +0.00125 (no real difference)
NOISE = [0.03, -0.02, 0.01, -0.01, 0.02, -0.03, 0.015, -0.005, 0.01, -0.01, 0.02, -0.015]


def table_cell(config: dict, run_dir: Path, *, resume: bool) -> dict:
    """A cell function of the runner's protocol whose per-case metrics follow config['table'] exactly."""
    table = config["table"]
    strategy, source = config["strategy"], config["source"]["name"]
    level = table["levels"].get(f"{source}|{strategy}", table["levels"].get(strategy))
    if "per_label" in table and strategy not in ("baseline", "oracle"):
        level += table.get("per_label", 0.0) * config["budget"]["n_labelled"]
    noise = table.get("noise", {}).get(strategy, [0.0] * len(OFFSETS))
    per_case = []
    for i, (offset, extra) in enumerate(zip(OFFSETS[: table["n_cases"]], noise, strict=False)):
        dice = level + offset + extra
        row = {"case": f"case{i:02d}", "dice": dice, "iou": dice / (2 - dice)}
        row["lesion_detection_rate"] = math.nan if i == 0 else (1.0 if i % 2 == 0 else 0.5)
        per_case.append(row)
    if table.get("history"):
        _write_history(run_dir, level)
    if table.get("env"):
        from medtransfer.train.run_env import environment
        from medtransfer.utils import write_json_atomic

        write_json_atomic(run_dir / "env.json", environment("cpu", int(config["seed"])))
    if table.get("predictions"):
        _write_predictions(run_dir)
    return {"metrics": {"dice": float(np.mean([r["dice"] for r in per_case]))}, "per_case": per_case}


register_cell_kind("report_table", table_cell, sections=("table",))  # its `table:` section is a known key


def _write_history(run_dir: Path, level: float) -> None:
    lines = [
        {"epoch": e, "train_loss": 1.0 / (e + 1), "lr": 1e-3, "val_dice": level * (1 - 0.5**e), "seconds": 0.1}
        for e in range(4)
    ]
    (run_dir / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


def _write_predictions(run_dir: Path) -> None:
    from medtransfer.data.io import save_nifti

    grid = np.indices((12, 12, 6))
    ref = ((grid[0] - 6) ** 2 + (grid[1] - 6) ** 2 <= 9).astype(np.uint8)
    pred = np.roll(ref, 1, axis=0)
    for name, array in (("reference", ref), ("predictions", pred)):
        save_nifti(run_dir / name / "case00.nii.gz", array, np.eye(4))
    save_nifti(run_dir / "images" / "case00_0000.nii.gz", ref * 100.0 + grid[2], np.eye(4), dtype=np.float32)


def make_results(root: Path, axes: dict, **table) -> Path:
    """Run a grid of ``table_cell`` cells with the real runner; returns the grid's folder."""
    table.setdefault("n_cases", len(OFFSETS))
    raw = {"name": "synthetic", "defaults": {"kind": "report_table", "table": table}, "axes": axes}
    run = run_grid(parse_grid(raw, "synthetic.yaml"), cell_fn=table_cell, results_root=root, progress=False)
    assert run.ok
    return root / "synthetic"


def build(results: Path, out: Path, **options):
    files = build_report(results, out, ReportOptions(**options))
    return files, files.html.read_text(encoding="utf-8"), files.markdown.read_text(encoding="utf-8")


def table_cells(html: str, first_cell: str) -> list[str]:
    """The cells of the first HTML table row whose cells start with ``first_cell``."""
    for row in re.findall(r"<tr>(.*?)</tr>", html):
        cells = [re.sub(r"<.*?>", "", c) for c in re.findall(r"<td>(.*?)</td>", row)]
        if cells and cells[: len(first_cell.split("|"))] == first_cell.split("|"):
            return cells
    raise AssertionError(f"no row starting with {first_cell}")


# --- a clear winner ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clear_win(tmp_path_factory):
    root = tmp_path_factory.mktemp("clear")
    levels = {"full": 0.8, "first_k:2": 0.6, "scratch": 0.4}
    results = make_results(root, {"target": "brain", "strategy": list(levels), "budget": [3]}, levels=levels)
    return build(results, root / "report")


def test_headline_names_the_significant_winner(clear_win):
    _, html, markdown = clear_win
    headline = re.search(r'<div class="headline">(.*?)</div>', html, re.S).group(1)
    assert "<strong>full</strong> has the highest mean Dice (0.800 vs 0.600 for first_k:2" in headline
    assert "n = 12 paired cases" in headline
    # every pair differs with the same sign in all 12 cases: exact p = 2 / 2**12; Holm over 3 pairs: x3, x2, x1
    p_exact = sps.wilcoxon(np.full(12, 0.2) + np.arange(12) * 1e-3).pvalue
    assert p_exact == pytest.approx(2 / 4096)
    assert f"Wilcoxon p ≤ {3 * p_exact:.2g}" in headline
    assert "<strong>the win is significant</strong>" in headline
    assert "**full** has the highest mean Dice" in markdown


def test_paired_test_table(clear_win):
    _, html, _ = clear_win
    cells = table_cells(html, "full|first_k:2") if "full|first_k:2" in html else table_cells(html, "first_k:2|full")
    assert cells[2] == "12"
    assert abs(float(cells[3])) == pytest.approx(0.2, abs=1e-3)
    assert float(cells[5]) == pytest.approx(3 * 2 / 4096, rel=1e-2)  # sign test: also 2 / 2**12, Holm x3


def test_zoetmulder_table_hand_computed_means(clear_win):
    _, html, _ = clear_win
    cells = table_cells(html, "none (from scratch)|-|full")
    mean_offsets = np.mean(OFFSETS)  # 0
    dice = 0.8 + np.array(OFFSETS)
    assert cells[3].startswith(f"{0.8 + mean_offsets:.3f} [")
    assert cells[4].startswith(f"{np.mean(dice / (2 - dice)):.3f} [")
    assert len(cells) == 5  # no detection rate here: it appears only beside precision and F1, in the lesion table
    lesions = table_cells(html.split("Lesion-wise metrics, label budget")[1], "none (from scratch)|-|full")
    detection = [1.0 if i % 2 == 0 else 0.5 for i in range(1, 12)]  # case 0 has no lesion (NaN)
    assert lesions[3].startswith(f"{np.mean(detection):.3f} [")
    assert lesions[4:6] == ["—", "—"]  # precision and F1 were not recorded by this cell function
    low, high = (float(v) for v in re.search(r"\[(.*), (.*)\]", cells[3]).groups())
    assert low < 0.8 < high


def test_html_is_self_contained_and_images_decode(clear_win):
    files, html, _ = clear_win
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:", html)
    assert not re.search(r"https?:|ftp:|//[a-z0-9]", text, re.I)
    for forbidden in ("<link", "<script", "@import", "url("):
        assert forbidden not in text
    for attr in re.findall(r'(?:src|href)="([^"]*)"', text):
        assert attr == "data:" or attr.startswith("#")
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert len(sources) == len(files.figures) >= 1
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1], validate=True).startswith(PNG)


def test_markdown_links_png_files(clear_win):
    files, _, markdown = clear_win
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert sorted(links) == sorted(f"figures/{p.name}" for p in files.figures)
    for link in links:
        assert (files.markdown.parent / link).read_bytes().startswith(PNG)
    assert "| none (from scratch) | - | full |" in markdown


def test_absent_sections_are_noted_not_errors(clear_win):
    _, html, markdown = clear_win
    for note in ("no source-&gt;target domain pairs", "baseline", "history.jsonl", "predictions/"):
        assert note in html
    assert "_Omitted: the grid has no source->target domain pairs._" in markdown
    assert "Provenance" in html


# --- no significant difference ----------------------------------------------------------------------------


def test_headline_says_no_significant_difference(tmp_path):
    levels = {"full": 0.7, "first_k:2": 0.7}
    axes = {"target": "brain", "strategy": list(levels), "budget": [3]}
    results = make_results(tmp_path, axes, levels=levels, noise={"full": NOISE})
    report = create_report(load_results(results), ReportOptions())
    line = report.headline[0]
    p = sps.wilcoxon(NOISE).pvalue  # full - first_k:2 per case; one pair: Holm leaves it as is
    assert p > 0.05
    assert "**full** has the highest mean Dice (0.701 vs 0.700" in line
    assert "**the difference is not significant** against first_k:2" in line
    assert f"Wilcoxon p = {p:.2g}" in line
    # never the whole sentence: what would decide follows (the Wilcoxon's power, resampling the differences NOISE)
    from medtransfer.report.equivalence import wilcoxon_power, wilcoxon_sample_size

    needed = wilcoxon_sample_size(NOISE)
    assert wilcoxon_power(NOISE, needed) >= 0.8 > wilcoxon_power(NOISE, needed - 1)
    assert f"the data do not single out a winner yet. **Undecided**: about {needed - 12} more paired cases" in line
    assert f"(n ≈ {needed} in all) would detect the observed difference of +0.001 Dice against first_k:2" in line


# --- domain shift: heatmaps, gap closed, win counts; convergence, overlays, provenance ----------------------


@pytest.fixture(scope="module")
def shift(tmp_path_factory):
    root = tmp_path_factory.mktemp("shift")
    levels = {"baseline": 0.3, "oracle": 0.9, "full": 0.75, "first_k:2": 0.6}
    axes = {"target": "brain", "strategy": list(levels), "budget": [1, 3], "seed": [0, 1], "domains": ["a", "b"]}
    options = {"history": True, "env": True, "predictions": True, "n_cases": 4}
    results = make_results(root, axes, levels=levels, per_label=0.01, **options)
    return build(results, root / "report", max_overlays=2)


def test_gap_closed_hand_computed(shift):
    _, html, _ = shift
    # (fine-tuned - baseline) / (oracle - baseline); per-case offsets cancel; n1 adds 0.01, n3 adds 0.03
    assert table_cells(html, "brain|full")[2:] == [f"{(0.76 - 0.3) / 0.6:.2f}", f"{(0.78 - 0.3) / 0.6:.2f}"]
    assert table_cells(html, "brain|first_k:2")[2:] == [f"{(0.61 - 0.3) / 0.6:.2f}", f"{(0.63 - 0.3) / 0.6:.2f}"]


def test_win_counts_over_domain_pairs(shift):
    _, html, markdown = shift
    assert "Win counts over domain pairs, brain, n1" in html
    full = table_cells(html, "full|2 / 2")
    assert full[2] == "2-0 (p=0.5)"  # first_k:2 column: two pairs won, sign test 2 * 0.5**2
    assert "| first_k:2 | 0 / 2 | — | 0-2 (p=0.5) |" in markdown


def test_shift_figures_and_winner(shift):
    files, html, _ = shift
    names = sorted(p.stem for p in files.figures)
    assert names[:4] == ["budget_brain", "convergence_brain_n1", "convergence_brain_n3", "heatmap_brain_n1"]
    assert sum(n.startswith("overlay_") for n in names) == 2
    assert "<strong>brain, n3</strong>: <strong>full</strong> has the highest mean Dice (0.780 vs 0.630" in html


def test_provenance_from_env_files(shift):
    import torch

    from medtransfer.train.run_env import cpu_model, git_commit

    _, html, _ = shift
    assert table_cells(html, "finished cells") == ["finished cells", "32"]
    assert table_cells(html, "run folders with env.json") == ["run folders with env.json", "32"]
    assert table_cells(html, "torch")[1] == torch.__version__
    assert table_cells(html, "seeds")[1] == "0, 1"
    assert table_cells(html, "git_commit")[1] == str(git_commit())
    if cpu_model() is not None:
        assert table_cells(html, "cpu_model")[1] == cpu_model()


def test_png_overlays_folder_is_embedded_as_is(tmp_path):
    from medtransfer.report.overlays import OverlaySource, collect_overlays
    from medtransfer.report.plots import overlay

    png = overlay(np.zeros((8, 8)), np.eye(8, dtype=bool), np.eye(8, dtype=bool), "x")
    (tmp_path / "run" / "overlays").mkdir(parents=True)
    (tmp_path / "run" / "overlays" / "slice.png").write_bytes(png)
    (tmp_path / "run" / "overlays" / "broken.png").write_bytes(b"not a png")  # sorted first: skipped
    figures = collect_overlays([OverlaySource("cell", tmp_path / "run")])
    assert [f.png for f in figures] == [png]


# --- command line -----------------------------------------------------------------------------------------


def test_cli_writes_report(tmp_path, capsys):
    results = make_results(tmp_path, {"target": "ms", "strategy": "full"}, levels={"full": 0.5}, n_cases=2)
    assert main(["report", str(results), "--out", str(tmp_path / "out")]) == 0
    assert "report.html" in capsys.readouterr().out
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "only one strategy (full) has results here" in html
    assert (tmp_path / "out" / "report.md").is_file()


def test_cli_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    assert "no finished cell" in capsys.readouterr().err
    results = make_results(tmp_path, {"target": "ms", "strategy": "full"}, levels={"full": 0.5}, n_cases=2)
    assert main(["report", str(results), "--out", str(tmp_path / "out"), "--metric", "dise"]) == 2
    assert "did you mean 'dice'" in capsys.readouterr().err.lower()
    assert main(["report", str(results), "--out", str(tmp_path / "out"), "--margin", "0"]) == 2
    assert capsys.readouterr().err == (
        "error: --margin: the equivalence margin must be > 0 (in the metric's units, e.g. 0.01 Dice), got 0.0\n"
    )
    assert not (tmp_path / "out").exists()


def test_cli_says_which_cells_it_read_skipped_and_failed(tmp_path, capsys):
    axes = {"target": "ms", "strategy": ["full", "first_k:2"], "seed": [0, 1]}
    results = make_results(tmp_path, axes, levels={"full": 0.5, "first_k:2": 0.6}, n_cases=2)
    truncated = results / "ms/none__full/nall/seed1/summary.json"
    truncated.write_text(truncated.read_text()[:100])
    failed = results / "ms/none__first_k-2/nall/seed1"
    (failed / "summary.json").unlink()
    (failed / "error.json").write_text(json.dumps({"type": "RuntimeError", "message": "diverged"}))
    assert main(["report", str(results), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "cells: 2 read, 1 skipped, 1 failed" in out
    assert f"  skipped ms/none__full/nall/seed1: {truncated} is not valid JSON (truncated?)" in out
    assert "  failed ms/none__first_k-2/nall/seed1: RuntimeError: diverged" in out
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert (
        "not included: 1 skipped (unfinished, unreadable or no longer in the grid), "
        "1 failed (ms/none__first_k-2/nall/seed1)" in html
    )


def test_null_metrics_are_strict_json_and_read_back_as_nan(tmp_path):
    """table_cell's lesion_detection_rate of case00 is NaN: null in summary.json, NaN again in the report's rows."""
    results = make_results(tmp_path, {"target": "ms", "strategy": "full"}, levels={"full": 0.5}, n_cases=2)
    text = (results / "ms/none__full/nall/seed0/summary.json").read_text()
    summary = json.loads(text, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
    assert summary["result"]["per_case"][0]["lesion_detection_rate"] is None
    rows = load_results(results).rows
    assert math.isnan(rows[0]["lesion_detection_rate"])
    assert rows[1]["lesion_detection_rate"] == 0.5


def test_signed_error_metric_is_refused_with_a_reason():
    from types import SimpleNamespace

    from medtransfer.errors import ConfigError
    from medtransfer.report.build import _metric

    results = SimpleNamespace(metrics=["lesion_count_error", "dice"], root="R")
    with pytest.raises(ConfigError, match="signed error"):
        _metric(results, "lesion_count_error")
    assert _metric(SimpleNamespace(metrics=["lesion_count_error", "hd95"], root="R"), None) == "hd95"


def test_colliding_figure_names_are_made_unique():
    from medtransfer.report.build import _slug, unique_figure_names
    from medtransfer.report.document import Figure, Report, Section

    assert _slug("budget", "t/1") == _slug("budget", "t 1")  # the collision the renaming resolves
    one = Section("A", figures=(Figure(_slug("budget", "t/1"), b"1"), Figure(_slug("budget", "t 1"), b"2")))
    two = Section("B", figures=(Figure("budget_T-1", b"3"),))
    report = unique_figure_names(Report("r", (), (one, two)))
    assert [f.name for f in report.figures] == ["budget_t-1", "budget_t-1-2", "budget_T-1-3"]
    assert [f.png for f in report.figures] == [b"1", b"2", b"3"]


def test_long_overlay_names_keep_a_hash_of_the_whole_name(tmp_path):
    from medtransfer.report.overlays import OverlaySource, _name

    a = _name(OverlaySource("x" * 100 + "full_finetune_discriminative_lr", tmp_path), "case0")
    b = _name(OverlaySource("x" * 100 + "full_finetune_other", tmp_path), "case0")
    assert a != b
    assert len(a) == len(b) == len("overlay_") + 80
    assert _name(OverlaySource("grid_cell", tmp_path), "c1") == "overlay_grid_cell_c1"


def test_report_with_slug_collisions_is_written(tmp_path):
    from medtransfer.report.build import write_report
    from medtransfer.report.document import Figure, Report, Section

    section = Section("A", figures=(Figure("budget_t-1", b"png1"), Figure("budget_t-1", b"png2")))
    files = write_report(Report("r", ("h",), (section,)), tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out" / "figures").iterdir()) == ["budget_t-1-2.png", "budget_t-1.png"]
    assert "figures/budget_t-1-2.png" in (tmp_path / "out" / "report.md").read_text()
    assert files is not None
