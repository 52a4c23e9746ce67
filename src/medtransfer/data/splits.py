"""Subject-level splits, k-fold cross-validation and label budgets, reproducible from a seed.

Splits assign *subjects*, never slices or single cases: all cases of one subject (``Case.subject``, from
``metadata.csv``, defaulting to the case id) land in the same set.  Optional stratification by ``Case.domain`` keeps
every domain's share in each set: a set gets ``round(fraction * subjects)`` subjects in all, as without
stratification, shared among the domains by largest remainder.  Budgets say which labels a fine-tuning run may use:

- ``n_scans_budget``: n labelled scans, one from each of n different subjects of the training pool;
- ``every_kth_slice_budget``: one scan with every k-th slice along an axis (the DART budgets, ``DART_SLICE_STEPS``).

Everything is plain data (``to_dict``/``from_dict``) so a run records exactly what it used.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError
from .layouts import Case

DART_SLICE_STEPS = (48, 36, 24, 12, 6, 3)


@dataclass(frozen=True)
class Split:
    """Case ids per set.

    Attributes:
        train: training case ids.
        val: validation case ids.
        test: test case ids.
        seed: seed that produced the split.
        fold: fold index for k-fold splits, else ``None``.
    """

    train: tuple[str, ...]
    val: tuple[str, ...] = ()
    test: tuple[str, ...] = ()
    seed: int = 0
    fold: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "train": list(self.train),
            "val": list(self.val),
            "test": list(self.test),
            "seed": self.seed,
            "fold": self.fold,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Split:
        return cls(
            tuple(data["train"]),
            tuple(data.get("val", ())),
            tuple(data.get("test", ())),
            int(data.get("seed", 0)),
            data.get("fold"),
        )


def _subjects(cases: Sequence[Case]) -> dict[str, list[str]]:
    """subject -> its case ids (in dataset order)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for case in cases:
        groups[case.subject].append(case.case_id)
    return dict(groups)


def _strata(cases: Sequence[Case], stratify: bool) -> dict[str, list[str]]:
    """stratum (domain, or one stratum) -> sorted subjects; a subject's domain is its most common one."""
    domains: dict[str, Counter] = defaultdict(Counter)
    for case in cases:
        domains[case.subject][case.domain or ""] += 1
    strata: dict[str, list[str]] = defaultdict(list)
    for subject, counter in sorted(domains.items()):
        strata[counter.most_common(1)[0][0] if stratify else ""].append(subject)
    return dict(sorted(strata.items()))


def split_by_subject(
    cases: Sequence[Case],
    *,
    test_fraction: float = 0.2,
    val_fraction: float = 0.0,
    seed: int = 0,
    stratify_by_domain: bool = False,
) -> Split:
    """Random train/val/test split of subjects (within each domain when ``stratify_by_domain``).

    The test set holds ``round(test_fraction * subjects)`` subjects and the validation set
    ``round(val_fraction * subjects)``; stratified, each domain gives the whole part of its share and the rest come
    one each from the domains with the largest remainders (ties in a seeded order), so 10 domains of 2 subjects at
    0.2 still hold out 4 subjects.

    Example:
        >>> cases = [Case(f"c{i}", [], None, {"subject": f"s{i // 2}"}) for i in range(8)]
        >>> split = split_by_subject(cases, test_fraction=0.25, seed=0)
        >>> len(split.test), len(split.train)
        (2, 6)
    """
    if not 0 <= test_fraction < 1 or not 0 <= val_fraction < 1 or test_fraction + val_fraction >= 1:
        raise ConfigError(f"fractions must be in [0, 1) and sum below 1, got test {test_fraction}, val {val_fraction}")
    rng = np.random.default_rng(seed)
    groups = _subjects(cases)
    orders = [
        [subjects[i] for i in rng.permutation(len(subjects))]
        for subjects in _strata(cases, stratify_by_domain).values()
    ]
    sizes = [len(order) for order in orders]
    ties = rng.permutation(len(orders)) if len(orders) > 1 else np.zeros(1, int)
    n_test = _share(test_fraction, sizes, sizes, ties)
    n_val = _share(val_fraction, sizes, [n - t for n, t in zip(sizes, n_test, strict=True)], ties)
    sets: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for order, t, v in zip(orders, n_test, n_val, strict=True):
        sets["test"] += order[:t]
        sets["val"] += order[t : t + v]
        sets["train"] += order[t + v :]
    return Split(*(tuple(_cases_of(sets[n], groups, cases)) for n in ("train", "val", "test")), seed=seed)


def _share(fraction: float, sizes: Sequence[int], room: Sequence[int], ties: np.ndarray) -> list[int]:
    """``round(fraction * total)`` subjects shared among strata of ``sizes`` by largest remainder (Hamilton).

    Each stratum gets the whole part of ``fraction * size``; the subjects left go one each to the strata with the
    largest fractional parts that have ``room`` left, ties broken by the seeded order ``ties`` (so the same domains
    do not always give up a subject).  One stratum gets ``round(fraction * size)``, as an unstratified split.

    Example:
        >>> _share(0.2, [2] * 10, [2] * 10, np.arange(10))  # 10 domains x 2 subjects: 4 in all, not 0
        [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    """
    quotas = [fraction * n for n in sizes]
    counts = [min(int(q), r) for q, r in zip(quotas, room, strict=True)]
    left = int(round(fraction * sum(sizes))) - sum(counts)
    # fractional parts rounded to 9 digits, so that 0.1 * 5 and 0.1 * 15 tie as the 0.5 they stand for
    order = sorted(range(len(sizes)), key=lambda s: (-round(quotas[s] - int(quotas[s]), 9), int(ties[s])))
    for s in order:
        if left <= 0:
            break
        if counts[s] < room[s]:
            counts[s] += 1
            left -= 1
    return counts


def kfold_by_subject(cases: Sequence[Case], k: int, *, seed: int = 0, stratify_by_domain: bool = False) -> list[Split]:
    """``k`` splits whose test sets partition the subjects (dealt round-robin within each domain stratum)."""
    subjects_total = len(_subjects(cases))
    if not 2 <= k <= subjects_total:
        raise ConfigError(f"k-fold needs 2 <= k <= number of subjects ({subjects_total}), got k={k}")
    rng = np.random.default_rng(seed)
    folds: list[list[str]] = [[] for _ in range(k)]
    start = 0
    for subjects in _strata(cases, stratify_by_domain).values():
        for j, i in enumerate(rng.permutation(len(subjects))):
            folds[(start + j) % k].append(subjects[i])
        start += len(subjects)
    groups = _subjects(cases)
    splits = []
    for f in range(k):
        train_subjects = [s for g, fold in enumerate(folds) if g != f for s in fold]
        splits.append(
            Split(
                tuple(_cases_of(train_subjects, groups, cases)), (), tuple(_cases_of(folds[f], groups, cases)), seed, f
            )
        )
    return splits


def _cases_of(subjects: Sequence[str], groups: dict[str, list[str]], cases: Sequence[Case]) -> list[str]:
    """Case ids of ``subjects``, in dataset order (so a split does not depend on set iteration order)."""
    chosen = {cid for s in subjects for cid in groups[s]}
    return [c.case_id for c in cases if c.case_id in chosen]


@dataclass(frozen=True)
class LabelBudget:
    """Which labels a run may use.

    Attributes:
        kind: ``"all"``, ``"scans"`` (whole scans) or ``"slices"`` (chosen slices of scans).
        cases: labelled case ids.
        slices: for ``"slices"``: case id -> labelled slice indices along ``axis`` (of the preprocessed array).
        axis: slice axis for ``"slices"``.
        seed: seed used to choose.
        params: the request (``{"n": 3}`` or ``{"every_k": 12}``).
    """

    kind: str
    cases: tuple[str, ...]
    slices: dict[str, tuple[int, ...]] | None = None
    axis: int = 2
    seed: int = 0
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def num_slices(self) -> int | None:
        """Number of labelled slices (``None`` when whole scans are labelled)."""
        return None if self.slices is None else sum(len(s) for s in self.slices.values())

    def to_dict(self) -> dict[str, Any]:
        slices = None if self.slices is None else {k: list(v) for k, v in self.slices.items()}
        return {
            "kind": self.kind,
            "cases": list(self.cases),
            "slices": slices,
            "axis": self.axis,
            "seed": self.seed,
            "params": dict(self.params),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelBudget:
        slices = data.get("slices")
        slices = None if slices is None else {k: tuple(int(i) for i in v) for k, v in slices.items()}
        return cls(
            data["kind"],
            tuple(data["cases"]),
            slices,
            int(data.get("axis", 2)),
            int(data.get("seed", 0)),
            dict(data.get("params", {})),
        )


def all_labels_budget(pool: Sequence[Case]) -> LabelBudget:
    """Every scan of the pool is labelled."""
    return LabelBudget("all", tuple(c.case_id for c in pool))


def n_scans_budget(pool: Sequence[Case], n: int, *, seed: int = 0) -> LabelBudget:
    """``n`` labelled scans: ``n`` random subjects of the training ``pool``, one random scan of each."""
    groups = _subjects(pool)
    if not 1 <= n <= len(groups):
        raise ConfigError(f"n labelled scans must be between 1 and the {len(groups)} subjects of the pool, got {n}")
    rng = np.random.default_rng(seed)
    subjects = sorted(groups)
    chosen = [subjects[i] for i in rng.permutation(len(subjects))[:n]]
    picks = {groups[s][int(rng.integers(len(groups[s])))] for s in chosen}
    return LabelBudget("scans", tuple(c.case_id for c in pool if c.case_id in picks), seed=seed, params={"n": n})


def every_kth_slice_budget(
    case_id: str, num_slices: int, k: int, *, axis: int = 2, offset: int | None = None, seed: int = 0
) -> LabelBudget:
    """One scan with every ``k``-th slice along ``axis`` labelled (DART: k in ``DART_SLICE_STEPS``).

    Args:
        case_id: the labelled scan (choose it with :func:`n_scans_budget` ``n=1`` for a seeded choice).
        num_slices: number of slices of that scan along ``axis`` (of the preprocessed array).
        k: step between labelled slices.
        axis: slice axis.
        offset: first labelled slice; ``None`` centres the comb (equal margins at both ends).
        seed: recorded with the budget.

    Example:
        >>> every_kth_slice_budget("a", 10, 3).slices
        {'a': (0, 3, 6, 9)}
    """
    if k < 1 or num_slices < 1:
        raise ConfigError(f"every k-th slice needs k >= 1 and at least one slice, got k={k}, slices={num_slices}")
    offset = ((num_slices - 1) % k) // 2 if offset is None else offset
    if not 0 <= offset < min(k, num_slices):
        raise ConfigError(f"offset must be in [0, {min(k, num_slices)}), got {offset}")
    slices = tuple(range(offset, num_slices, k))
    return LabelBudget("slices", (case_id,), {case_id: slices}, axis, seed, {"every_k": k})
