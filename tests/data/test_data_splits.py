from __future__ import annotations

import pytest

from medtransfer.data.layouts import Case
from medtransfer.data.splits import (
    DART_SLICE_STEPS,
    LabelBudget,
    Split,
    every_kth_slice_budget,
    kfold_by_subject,
    n_scans_budget,
    split_by_subject,
)
from medtransfer.errors import ConfigError


def _cases(n_subjects=12, per_subject=2, domains=("a", "b", "c")):
    return [
        Case(f"s{s}_v{v}", [], None, {"subject": f"s{s}", "domain": domains[s % len(domains)]})
        for s in range(n_subjects)
        for v in range(per_subject)
    ]


def _subjects_of(ids, cases):
    by_id = {c.case_id: c.subject for c in cases}
    return {by_id[i] for i in ids}


def test_split_keeps_subjects_together_and_covers_all():
    cases = _cases()
    split = split_by_subject(cases, test_fraction=0.25, val_fraction=0.25, seed=3)
    sets = [split.train, split.val, split.test]
    assert sorted(i for s in sets for i in s) == sorted(c.case_id for c in cases)
    subjects = [_subjects_of(s, cases) for s in sets]
    assert [len(s) for s in subjects] == [6, 3, 3]
    assert sum(len(s) for s in subjects) == len(set().union(*subjects))  # disjoint


def test_split_is_reproducible_and_seed_dependent():
    cases = _cases()
    assert split_by_subject(cases, seed=1) == split_by_subject(cases, seed=1)
    tests = {split_by_subject(cases, seed=s).test for s in range(5)}
    assert len(tests) > 1


def test_stratified_split_balances_domains():
    cases = _cases(n_subjects=12)
    split = split_by_subject(cases, test_fraction=0.25, seed=0, stratify_by_domain=True)
    domains = sorted(c.domain for c in cases if c.case_id in split.test and c.case_id.endswith("_v0"))
    assert domains == ["a", "b", "c"]  # one of the 4 subjects of each domain


def test_kfold_partitions_subjects():
    cases = _cases(n_subjects=10)
    folds = kfold_by_subject(cases, 3, seed=0, stratify_by_domain=True)
    tests = [_subjects_of(f.test, cases) for f in folds]
    assert sorted(len(t) for t in tests) == [3, 3, 4]
    assert set().union(*tests) == {f"s{i}" for i in range(10)}
    for fold in folds:
        assert not _subjects_of(fold.train, cases) & _subjects_of(fold.test, cases)
    assert [f.fold for f in folds] == [0, 1, 2]


def test_kfold_rejects_bad_k():
    with pytest.raises(ConfigError, match="k-fold"):
        kfold_by_subject(_cases(n_subjects=2), 3)


def test_split_dict_round_trip():
    split = split_by_subject(_cases(), seed=2)
    assert Split.from_dict(split.to_dict()) == split


def test_n_scans_budget_uses_distinct_subjects():
    pool = _cases(n_subjects=6, per_subject=3)
    budget = n_scans_budget(pool, 4, seed=0)
    assert budget.kind == "scans"
    assert len(budget.cases) == 4
    assert len(_subjects_of(budget.cases, pool)) == 4
    assert budget == n_scans_budget(pool, 4, seed=0)
    assert LabelBudget.from_dict(budget.to_dict()) == budget
    with pytest.raises(ConfigError, match="between 1 and the 6 subjects"):
        n_scans_budget(pool, 7)


@pytest.mark.parametrize("k", DART_SLICE_STEPS)
def test_every_kth_slice_budget_matches_dart_counts(k):
    budget = every_kth_slice_budget("scan", 270, k, axis=0)
    slices = budget.slices["scan"]
    assert budget.num_slices == len(range(slices[0], 270, k))
    assert all(b - a == k for a, b in zip(slices, slices[1:], strict=False))
    assert slices[0] == 269 - slices[-1] or abs(slices[0] - (269 - slices[-1])) == 1  # centred comb
    assert LabelBudget.from_dict(budget.to_dict()) == budget


def test_every_kth_slice_budget_hand_values():
    assert every_kth_slice_budget("a", 11, 4).slices == {"a": (1, 5, 9)}  # margins 1 and 1
    assert every_kth_slice_budget("a", 10, 4).slices == {"a": (0, 4, 8)}  # margins 0 and 1
    assert every_kth_slice_budget("a", 10, 4, offset=2).slices == {"a": (2, 6)}
    with pytest.raises(ConfigError, match="offset"):
        every_kth_slice_budget("a", 10, 4, offset=4)
