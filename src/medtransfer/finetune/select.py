"""Which cases a fine-tuning run uses: the subject split of the target domain and the label budget, once.

:func:`select_cases` is the only place a run's split and budget are derived.  The run writes the selection into
its ``summary.json`` (``labelled_cases``, ``val_cases``, ``test_cases``) and its checkpoints' meta; later stages
(the grid's evaluation, teacher-student's unlabelled pool) read it from there or from this function, never from a
copy of it.  Splits and budgets themselves: :mod:`medtransfer.data.splits`; their rules: docs/guide.md.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from ..data.layouts import Case, CaseDataset
from ..data.splits import LabelBudget, Split, every_kth_slice_budget, n_scans_budget, split_by_subject
from ..errors import ConfigError, DataError
from .config import ALL, FinetuneConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Selection:
    """The cases of one run.

    Attributes:
        split: the subject split of the target domain's cases.
        budget: the labelled scans (or slices of one scan) of the training part.
        val_ids: the validation cases used (``split.val`` capped by ``max_val_cases``).
    """

    split: Split
    budget: LabelBudget
    val_ids: tuple[str, ...]

    @property
    def labelled_ids(self) -> list[str]:
        return list(self.budget.cases)

    @property
    def test_ids(self) -> list[str]:
        return list(self.split.test)

    @property
    def n_labelled(self) -> int:
        """The number of labelled scans (what ``n_labelled: all`` resolved to)."""
        return int(self.budget.params.get("n", len(self.budget.cases)))

    def unlabelled_ids(self, dataset: CaseDataset) -> list[str]:
        """Training cases neither labelled nor of a labelled subject (never validation or test cases)."""
        labelled = set(self.budget.cases)
        subjects = {dataset.get(c).subject for c in labelled}
        return [c for c in self.split.train if c not in labelled and dataset.get(c).subject not in subjects]

    def with_slices(self, config: FinetuneConfig, n_slices: int) -> Selection:
        """The every-k-th-slice budget of the one labelled scan (``config.every_kth_slice``), given its slices."""
        if not config.every_kth_slice:
            return self
        budget = every_kth_slice_budget(
            self.budget.cases[0], n_slices, config.every_kth_slice, axis=config.slice_axis, seed=config.seed
        )
        return dataclasses.replace(self, budget=budget)

    def to_dict(self) -> dict[str, Any]:
        return {"labelled_cases": self.labelled_ids, "val_cases": list(self.val_ids), "test_cases": self.test_ids}


def target_pool(dataset: CaseDataset, domain: str | None) -> list[Case]:
    """The cases of the target ``domain`` (every case when ``None``)."""
    pool = [c for c in dataset.cases if domain is None or c.domain == domain]
    if not pool:
        domains = sorted({str(c.domain) for c in dataset.cases if c.domain is not None})
        if not dataset.cases:
            raise ConfigError(f"{dataset.root}: the dataset has no cases")
        if not domains:
            raise ConfigError(
                f"{dataset.root}: no case has a domain, so there is no domain {domain!r}; give domains in "
                "metadata.csv (a 'domain' column), or leave --target-domain out"
            )
        raise ConfigError(f"{dataset.root}: no case of domain {domain!r}; domains: {domains}")
    return pool


def select_cases(config: FinetuneConfig, dataset: CaseDataset) -> Selection:
    """Split the target domain's subjects and draw the label budget (``n_labelled`` scans or ``all``).

    Raises:
        ConfigError: no case of the target domain, or a budget larger than the training subjects.
        DataError: no training subject left after the split.
    """
    pool = target_pool(dataset, config.target_domain)
    split = split_by_subject(
        pool, test_fraction=config.test_fraction, val_fraction=config.val_fraction, seed=config.split_seed
    )
    train_pool = [dataset.get(c) for c in split.train]
    for what, key, got in (("validation", "val_fraction", split.val), ("test", "test_fraction", split.test)):
        if getattr(config, key) and not got:
            logger.warning(
                "%s: its %d case(s) leave no %s case at %s %g: the run has no %s scans",
                dataset.root,
                len(pool),
                what,
                key,
                getattr(config, key),
                what,
            )
    if not train_pool:
        raise DataError(f"{dataset.root}: no training subjects left after the split ({len(pool)} cases in the pool)")
    subjects = len({c.subject for c in train_pool})
    n = subjects if config.n_labelled == ALL else int(config.n_labelled)
    if not 1 <= n <= subjects:
        held = len({dataset.get(c).subject for c in (*split.val, *split.test)})
        raise ConfigError(
            f"n_labelled {n} (--n-labelled): the training pool of {dataset.root} holds {subjects} subject(s) (of "
            f"{subjects + held}: {len(split.val)} validation and {len(split.test)} test case(s) are held out by "
            f"val_fraction {config.val_fraction:g} / test_fraction {config.test_fraction:g}); give 1 to {subjects}, "
            "or lower the held-out fractions"
        )
    budget = n_scans_budget(train_pool, n, seed=config.seed)
    return Selection(split, budget, tuple(list(split.val)[: config.max_val_cases]))


def label_map(dataset: CaseDataset) -> dict[str, int]:
    """Label name -> value (background first); binary when the dataset declares no names."""
    names = dataset.label_names or {0: "background", 1: "foreground"}
    if 0 not in names:
        raise DataError(f"{dataset.root}: the dataset's labels must include 0 (background), got {names}")
    return {str(names[v]): int(v) for v in sorted(names)}
