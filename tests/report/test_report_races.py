"""The race table and sentence of a race too short for a confidence interval."""

from __future__ import annotations

from medtransfer.experiments.race import RaceConfig, new_race, race_sentence, summarize_race, update
from medtransfer.report.races import RaceRecord, _row


def one_scan_race():
    state = new_race(["full", "first_k:1"], RaceConfig(max_rounds=3))
    update(state, {"full": {"c0/s0": 0.9}, "first_k:1": {"c0/s0": 0.7}})
    return state, summarize_race(state)


def test_a_race_on_one_scan_says_too_few_instead_of_nan():
    state, summary = one_scan_race()
    assert summary.n == 1
    sentence = race_sentence(summary, "Dice")
    assert "nan" not in sentence
    assert "+0.200 Dice over first_k:1 (95% CI — (too few paired scans, n = 1))" in sentence
    row = _row(RaceRecord("brain, n1", "dice", state, summary))
    assert not any("nan" in cell for cell in row)
    assert row[3] == "+0.200 [— (too few paired scans, n = 1)] vs first_k:1"


def test_a_race_on_several_scans_keeps_its_ci():
    state = new_race(["full", "first_k:1"], RaceConfig(max_rounds=3))
    update(
        state,
        {"full": {"c0/s0": 0.9, "c1/s0": 0.8, "c2/s0": 0.85}, "first_k:1": {"c0/s0": 0.7, "c1/s0": 0.65, "c2/s0": 0.7}},
    )
    summary = summarize_race(state)
    assert "(95% CI +" in race_sentence(summary, "Dice")
    assert "too few" not in race_sentence(summary, "Dice")
