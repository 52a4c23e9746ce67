from __future__ import annotations

from collections import Counter

import numpy as np
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


def _domain_cases(domains: int, per_domain: int) -> list[Case]:
    return [Case(f"c{d}_{i}", [], None, {"domain": f"d{d}"}) for d in range(domains) for i in range(per_domain)]


def _per_domain(ids, cases) -> list[int]:
    domain = {c.case_id: c.domain for c in cases}
    return sorted(Counter(domain[i] for i in ids).values(), reverse=True)


@pytest.mark.parametrize("seed", range(4))
def test_stratified_split_takes_the_global_count_by_largest_remainder(seed):
    """10 domains x 2 subjects at 0.2: each domain's 0.4 rounded alone gave an empty test set; the global
    round(0.2 * 20) = 4 goes one each to 4 domains (all tie at 0.4)."""
    cases = _domain_cases(10, 2)
    split = split_by_subject(cases, test_fraction=0.2, seed=seed, stratify_by_domain=True)
    assert (len(split.train), len(split.val), len(split.test)) == (16, 0, 4)
    assert _per_domain(split.test, cases) == [1, 1, 1, 1]
    both = split_by_subject(cases, test_fraction=0.2, val_fraction=0.2, seed=seed, stratify_by_domain=True)
    assert (len(both.train), len(both.val), len(both.test)) == (12, 4, 4)
    assert _per_domain(both.val, cases) == [1, 1, 1, 1]
    assert not set(both.val) & set(both.test)


def test_stratified_split_of_four_domains_of_five_at_a_tenth():
    """4 x 5 at 0.1: round(0.5) = 0 per domain gave no test case; round(0.1 * 20) = 2 go to 2 of the 4 tied domains
    (which ones depends on the seed)."""
    cases = _domain_cases(4, 5)
    chosen = set()
    for seed in range(8):
        split = split_by_subject(cases, test_fraction=0.1, seed=seed, stratify_by_domain=True)
        assert len(split.test) == 2
        assert _per_domain(split.test, cases) == [1, 1]
        assert split == split_by_subject(cases, test_fraction=0.1, seed=seed, stratify_by_domain=True)
        chosen.add(frozenset(c[:2] for c in split.test))
    assert len(chosen) > 1  # the seeded tie-break does not always take the same domains


def test_stratified_split_gives_each_domain_its_whole_share_first():
    """Domains of 7, 2 and 1 subjects at 0.3: quotas 2.1, 0.6 and 0.3; round(0.3 * 10) = 3 = 2 (whole part of the
    first) + 1 to the largest remainder (0.6, the second domain)."""
    cases = [Case(f"a{i}", [], None, {"domain": "a"}) for i in range(7)]
    cases += [Case(f"b{i}", [], None, {"domain": "b"}) for i in range(2)] + [Case("c0", [], None, {"domain": "c"})]
    split = split_by_subject(cases, test_fraction=0.3, seed=0, stratify_by_domain=True)
    assert Counter(c[0] for c in split.test) == {"a": 2, "b": 1}


def test_unstratified_split_is_unchanged():
    """One stratum: round(fraction * subjects), the subjects the seeded permutation puts first (as before)."""
    cases = _domain_cases(4, 5)
    split = split_by_subject(cases, test_fraction=0.1, val_fraction=0.15, seed=0)
    order = [f"c{i // 5}_{i % 5}" for i in np.random.default_rng(0).permutation(20)]
    assert set(split.test) == set(order[:2])
    assert set(split.val) == set(order[2:5])
