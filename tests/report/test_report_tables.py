"""Report building blocks on tiny in-memory rows: ordering, source names, tables, verdicts, rendering."""

from __future__ import annotations

import numpy as np
import pytest

from medtransfer.report.comparisons import compare_all, compare_setting, overall_sentence
from medtransfer.report.document import Figure, Report, Section, Table
from medtransfer.report.grouping import add_arms, budget_order, unit_scores
from medtransfer.report.html import render_html, text
from medtransfer.report.markdown import render_markdown
from medtransfer.report.tables import gap_closed_table, split_source, win_count_table, zoetmulder_tables


def rows(spec: dict[tuple, list[float]], **extra) -> list[dict]:
    """``{(target, source, strategy, budget): [dice per case]}`` -> per-case rows with arms."""
    out = []
    for (target, source, strategy, budget), values in spec.items():
        for i, value in enumerate(values):
            row = {"target": target, "source": source, "strategy": strategy, "budget": budget, "seed": 0}
            out.append({**row, "case": f"c{i}", "dice": value, **extra})
    return add_arms(out)


def test_budget_order_by_amount_of_labels():
    labels = ["nall", "n10", "n2", "n1_k6", "n1", "n1_k24", "odd"]
    assert sorted(labels, key=budget_order) == ["n1_k24", "n1_k6", "n1", "n2", "n10", "nall", "odd"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("mri_seg", ("segmentation", "MRI")),
        ("natural-cls", ("classification", "natural")),
        ("mri_ssl", ("self-supervised", "MRI")),
        ("none", ("none (from scratch)", "-")),
        ("med3d", ("med3d", "-")),
    ],
)
def test_split_source(name, expected):
    assert split_source(name) == expected


def test_arms_carry_the_source_only_when_sources_vary():
    one = add_arms([{"source": "none", "strategy": "full"}, {"source": "none", "strategy": "scratch"}])
    assert [r["arm"] for r in one] == ["full", "scratch"]
    two = [{"source": "mri_seg", "strategy": "full"}, {"source": "none", "strategy": "scratch"}]
    assert [r["arm"] for r in add_arms(two)] == ["mri_seg / full", "none / scratch"]
    # the references do not count: one contending source left
    refs = add_arms([{"source": "mri_seg", "strategy": "full"}, {"source": "none", "strategy": "oracle"}])
    assert [r["arm"] for r in refs] == ["full", "oracle"]


def test_unit_scores_average_seeds_per_case():
    data = [
        {"arm": "full", "domain_pair": None, "case": "c0", "seed": 0, "dice": 0.6},
        {"arm": "full", "domain_pair": None, "case": "c0", "seed": 1, "dice": 0.8},
        {"arm": "full", "domain_pair": None, "case": "c1", "seed": 0, "dice": float("nan")},
    ]
    scores = unit_scores(data, "dice")["full"]
    assert scores[None, "c0"] == pytest.approx(0.7)
    assert np.isnan(scores[None, "c1"])


def test_zoetmulder_table_rows_and_missing_targets():
    data = rows(
        {
            ("brain", "mri_seg", "full", "n3"): [0.9, 0.7],
            ("brain", "none", "scratch", "n3"): [0.5, 0.3],
            ("ms", "mri_seg", "full", "n3"): [0.2, 0.4, 0.6],
        }
    )
    (table,) = zoetmulder_tables(data)
    assert table.header == ("source task", "source domain", "strategy", "brain: Dice", "ms: Dice")
    by_source = {row[0]: row for row in table.rows}
    assert by_source["segmentation"][1:3] == ("MRI", "full")
    assert by_source["segmentation"][3].startswith("0.800 [")
    assert by_source["segmentation"][4].startswith("0.400 [")
    assert by_source["none (from scratch)"][3].startswith("0.400 [")
    assert by_source["none (from scratch)"][4] == "—"  # scratch was not run on ms


def test_verdict_without_common_cases_is_not_tested():
    data = rows({("brain", "none", "full", "n3"): [0.9], ("brain", "none", "scratch", "n3"): [0.5]})
    data[1]["case"] = "other"
    (verdict,) = compare_all(data, "dice")
    assert verdict.n == 0
    assert not verdict.significant
    assert "cannot be tested" in verdict.sentence()


def test_references_never_win_and_overall_sentence():
    strong = [0.9 + 0.001 * i for i in range(8)]
    weak = [0.5 + 0.002 * i for i in range(8)]
    data = rows(
        {
            ("brain", "none", "oracle", "n3"): [1.0] * 8,
            ("brain", "none", "full", "n3"): strong,
            ("brain", "none", "scratch", "n3"): weak,
            ("ms", "none", "full", "n3"): weak,
            ("ms", "none", "scratch", "n3"): strong,
        }
    )
    brain = compare_setting([r for r in data if r["target"] == "brain"], "dice", {"target": "brain"})
    assert list(brain.means) == ["full", "scratch"]
    assert brain.significant  # 8 positive differences: p = 2 / 2**8 < 0.05
    verdicts = compare_all(data, "dice")
    assert [v.winner for v in verdicts] == ["full", "scratch"]
    assert overall_sentence(verdicts) == (
        "Over 2 settings (target x label budget): **full** won 1 (1 significantly); "
        "**scratch** won 1 (1 significantly)."
    )


def test_gap_closed_and_win_counts_need_their_data():
    data = rows({("brain", "none", "full", "n3"): [0.8], ("brain", "none", "baseline", "n3"): [0.4]})
    assert gap_closed_table(data, "dice") is None  # no oracle
    one_pair = [{**r, "domain_pair": "a->b"} for r in data]
    assert win_count_table(one_pair, "dice", "brain") is None  # one domain pair, one contender


def test_rendering_escapes_text():
    table = Table("a|b", ("x", "<y>"), (("1|2", "**bold**"),))
    report = Report("<script>alert(1)</script>", ("**winner** & co",), (Section("S", tables=(table,)),))
    page = render_html(report)
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<strong>winner</strong> &amp; co" in page
    assert "<th>&lt;y&gt;</th>" in page
    markdown = render_markdown(report)
    assert "| 1\\|2 | \\*\\*bold\\*\\* |" in markdown  # table cells are plain text: no markup
    assert text('"q"') == "&quot;q&quot;"


def test_empty_section_shows_its_note_and_figures_link_files():
    report = Report(
        "t", (), (Section("Gap", note="Omitted: needs oracle."), Section("F", figures=(Figure("f1", b""),)))
    )
    assert "Omitted: needs oracle." in render_html(report)
    markdown = render_markdown(report, "figs")
    assert "_Omitted: needs oracle._" in markdown
    assert "![f1](figs/f1.png)" in markdown


def test_references_by_strategy_and_budget_pattern():
    data = [
        {"target": "t", "source": "mri_seg", "strategy": "frozen", "budget": "n0", "case": "c0", "dice": 0.2},
        {"target": "t", "source": "none", "strategy": "scratch", "budget": "nall", "case": "c0", "dice": 0.8},
        {"target": "t", "source": "none", "strategy": "scratch", "budget": "n3", "case": "c0", "dice": 0.4},
        {"target": "t", "source": "mri_seg", "strategy": "full", "budget": "n3", "case": "c0", "dice": 0.65},
    ]
    labelled = add_arms(data, baseline="FROZEN", oracle="scratch@nall")
    assert [r["arm"] for r in labelled] == ["baseline", "oracle", "none / scratch", "mri_seg / full"]
    table = gap_closed_table(labelled, "dice")
    assert table.header == ("target", "strategy", "n3")
    assert {row[1]: row[2] for row in table.rows} == {"mri_seg / full": "0.75", "none / scratch": "0.33"}


def test_a_setting_where_every_strategy_ties_has_no_winner():
    """All arms at Dice 0 (nothing learnt) is a tie, said as such, and not counted as anybody's win."""
    data = rows(
        {
            ("brain", "none", "full", "n3"): [0.9, 0.8, 0.85],
            ("brain", "none", "scratch", "n3"): [0.5, 0.6, 0.55],
            ("lesion", "none", "full", "n3"): [0.0, 0.0, 0.0],
            ("lesion", "none", "scratch", "n3"): [0.0, 0.0, 0.0],
        }
    )
    verdicts = compare_all(data, "dice")
    lesion = next(v for v in verdicts if v.setting["target"] == "lesion")
    assert lesion.tied
    assert not next(v for v in verdicts if v.setting["target"] == "brain").tied
    assert "every strategy has the same mean Dice (0.000; n = 3 paired cases)" in lesion.sentence()
    assert overall_sentence(verdicts) == (
        "Over 2 settings (target x label budget): **full** won 1 (0 significantly); 1 tied (every strategy the same)."
    )


def test_a_setting_with_only_references_says_so():
    data = rows({("brain", "none", "oracle", "nall"): [0.9, 0.8]})
    verdict = compare_setting(data, "dice", {"target": "brain", "budget": "nall"})
    assert verdict.sentence() == (
        "**brain, nall**: only the references (baseline / oracle) ran here; there is nothing to compare."
    )


def test_lower_is_better_gap_closed_and_win_counts():
    from medtransfer.report.tables import gap_closed_table, win_count_table

    rows = []
    for k, pair in enumerate(["a->t", "b->t", "c->t"]):
        for arm, value in {"baseline": 20.0, "oracle": 10.0, "good": 12.0 + k * 0.1, "bad": 18.0}.items():
            rows.append({"target": "t", "budget": "n1", "arm": arm, "domain_pair": pair, "case": "c0", "hd95": value})
    gap = gap_closed_table(rows, "hd95")
    assert gap is not None
    cells = {row[1]: row[2] for row in gap.rows}
    assert cells["good"].startswith("0.79")
    assert cells["bad"].startswith("0.20")
    wins = win_count_table([r for r in rows if r["arm"] in ("good", "bad")], "hd95", "t, n1")
    body = {row[0]: row for row in wins.rows}
    assert body["good"][1] == "3 / 3"
    assert body["bad"][1] == "0 / 3"
    assert "lower HD95 is better" in wins.note


def test_gap_closed_says_why_a_cell_or_target_is_missing():
    data = []
    for target, refs in {
        "t1": {"baseline": 0.5, "oracle": 0.5},
        "t2": {"oracle": 0.9},
        "t3": {"baseline": 0.2, "oracle": 0.6},
    }.items():
        for arm, value in {**refs, "full": 0.7}.items():
            data.append(
                {"target": target, "budget": "n1", "arm": arm, "domain_pair": "a->b", "case": "c", "dice": value}
            )
    table = gap_closed_table(data, "dice")
    cells = {row[0]: row[2] for row in table.rows}
    assert cells == {"t1": "— (no gap)", "t3": "1.25"}
    assert "No gap to close where the oracle is not better than the baseline (t1: 1 of 1 domain pair)" in table.note
    assert "needs both a baseline and an oracle: target t2 (no finite baseline result)" in table.note


def test_heatmaps_name_the_metric_share_one_colour_bar_and_keep_text_readable(monkeypatch):
    from medtransfer.report import plots

    figures = []
    monkeypatch.setattr(plots, "to_png", lambda fig: figures.append(fig) or b"")
    data = [
        {"arm": arm, "source_domain": "a", "target_domain": t, "domain_pair": f"a->{t}", "case": "c", "hd95": 7.0}
        for arm in ("full", "scratch")
        for t in ("a", "b")
    ]
    plots.domain_heatmaps(data, "hd95", "brain, n1")
    (fig,) = figures
    assert "HD95 (mm)" in fig._suptitle.get_text()
    colorbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(colorbars) == 1
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 2
    image = panels[0].images[0]
    assert image.norm.vmin < 7.0 < image.norm.vmax  # min == max: one mid-scale colour, not the darkest
    texts = [t for t in panels[0].texts if t.get_text() == "7.00"]
    assert texts
    assert {t.get_color() for t in texts} == {"w"}


def test_markup_in_user_strings_stays_literal():
    from medtransfer.report.document import literal

    table = Table("t_1 <x>", ("strategy",), (("a**b**c",), ("x[1](y)",)))
    headline = (f"**{literal('a**b**c')}** beats {literal('<i>x_[1]</i>')}",)
    report = Report("grid_<b>", headline, (Section("S", ("see **this**",), tables=(table,)),))
    page = render_html(report)
    assert "<strong>a**b**c</strong> beats &lt;i&gt;x_[1]&lt;/i&gt;" in page
    assert "<td>a**b**c</td>" in page
    assert "<strong>b</strong>" not in page
    assert "<strong>this</strong>" in page
    assert "<h1>grid_&lt;b&gt;</h1>" in page
    markdown = render_markdown(report)
    assert "> **a\\*\\*b\\*\\*c** beats \\<i>x\\_\\[1\\]\\</i>" in markdown
    assert "| a\\*\\*b\\*\\*c |" in markdown
    assert "| x\\[1\\](y) |" in markdown
    assert "# grid\\_\\<b>" in markdown
    assert "*t_1 \\<x>*" in markdown  # an underscore inside a word is no markup
