"""The ``teacher_student`` cell kind: noisy-student pseudo-labelling on the target domain as a grid arm.

A cell runs :func:`medtransfer.semi.run_teacher_student`: round 0 fine-tunes a teacher exactly as the
``finetune`` cell would (same source, base strategy, budget, seed and split), then ``rounds`` students are
trained on the labelled slices plus confident pseudo-labels of the target domain's *other training cases*
(the unlabelled pool: the split's training subjects minus the labelled ones; validation and test subjects are
never in it, which :func:`~medtransfer.semi.check_no_leak` verifies before anything is trained).  The last
student predicts and scores the held-out test cases like the ``finetune`` cell.

Cell config keys, on top of the ``finetune`` cell's (see :mod:`medtransfer.experiments.cells`)::

    strategy: teacher_student | "teacher_student:first_k:3"   # after the colon: the base strategy (default full)
    teacher_student: {rounds: 1, pseudo: {threshold: 0.9}, augment: {...}, dropout: 0.1, dice_loss: false,
                      strategy: full, max_unlabelled: null}

A grid mixes it with ``finetune`` cells by switching the kind for these strategy values::

    overrides:
      - when: {strategy: "teacher_student*"}
        set: {kind: teacher_student}

Run folder: ``ts/`` (the teacher-student output: ``round0/`` teacher run, ``round{r}/`` students,
``summary.json``), ``unlabelled/`` (links to the pool's images + metadata.csv), ``history.jsonl`` (per-epoch
records of the teacher then each student, with their ``round``; what the report's convergence plot reads),
``rounds.json`` (per round: teacher vs student validation Dice) and the evaluation folders of the ``finetune``
cell.  Per-case rows: the last student's ``dice``, ``iou``, ``surface_dice`` and the teacher's ``teacher_dice``
on the same test case (``medtransfer report --metric teacher_dice`` compares the teachers).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..train.history import write_jsonl
from ..utils import write_json_atomic, write_text_atomic
from .cells import (
    SUMMARY,
    aggregate,
    capped_test_ids,
    cell_id,
    finetune_config,
    read_history,
    set_threads,
    target_domain,
)
from .sources import resolve_dataset, resolve_source

log = logging.getLogger(__name__)

KIND_PREFIX = "teacher_student"
TS_DIR = "ts"
UNLABELLED_DIR = "unlabelled"
OPTION_KEYS = ("rounds", "pseudo", "augment", "dropout", "dice_loss", "strategy", "max_unlabelled")


def base_strategy(config: dict[str, Any]) -> str:
    """The strategy of teacher and students: ``teacher_student:<base>`` or ``teacher_student.strategy`` (full)."""
    strategy = str(config.get("strategy") or KIND_PREFIX)
    options = config.get("teacher_student") or {}
    head, _, rest = strategy.partition(":")
    if head == KIND_PREFIX:
        base = rest or str(options.get("strategy", "full"))
    else:  # a plain strategy under kind teacher_student: that strategy is the base
        base = strategy
    if base in ("baseline", "oracle", KIND_PREFIX):
        raise ConfigError(f"cell {cell_id(config)}: teacher_student needs a trainable base strategy, got {base!r}")
    return base


def run_teacher_student_cell(config: dict[str, Any], run_dir: Path, *, resume: bool) -> dict[str, Any]:
    """The ``teacher_student`` cell function (runner protocol: returns metrics, per-case rows and history)."""
    from ..data.layouts import load_dataset
    from ..semi import run_teacher_student
    from .evaluate_cell import evaluate_test_cases

    run_dir = Path(run_dir)
    options = dict(config.get("teacher_student") or {})
    unknown = sorted(set(options) - set(OPTION_KEYS))
    if unknown:
        raise ConfigError(
            f"cell {cell_id(config)}: unknown teacher_student option(s) {unknown}; allowed: {OPTION_KEYS}"
        )
    set_threads(config)
    data = resolve_dataset(config)
    dataset = load_dataset(data)
    domain = target_domain(config)
    base = base_strategy(config)
    checkpoint = resolve_source(config, run_dir) if base != "scratch" else None
    ft = finetune_config({**config, "strategy": base}, data, domain, checkpoint, run_dir / TS_DIR / "round0")
    pool = unlabelled_pool(config, dataset, ft)
    unlabelled = link_unlabelled(dataset, pool, run_dir / UNLABELLED_DIR)
    rounds = int(options.get("rounds", 1))
    out = run_teacher_student(
        {
            "finetune": ft.to_dict(),
            "unlabelled": str(unlabelled),
            "out": str(run_dir / TS_DIR),
            "rounds": rounds,
            **{k: options[k] for k in ("pseudo", "augment", "dropout", "dice_loss") if k in options},
        }
    )
    summary = json.loads((out / SUMMARY).read_text())
    per_round = [
        {k: row[k] for k in ("round", "teacher_val_dice", "student_val_dice", "student_better")}
        | {"pseudo_kept_fraction": _mean(row.get("pseudo_kept_fraction") or [])}
        for row in summary["rounds"]
    ]
    write_json_atomic(run_dir / "rounds.json", {"rounds": per_round, "unlabelled_cases": pool})
    history = _epoch_history(out, rounds)
    write_jsonl(run_dir / "history.jsonl", history)
    test_ids = capped_test_ids(config, summary["test_cases"], dataset, domain)
    eval_options = config.get("eval") or {}
    rows = evaluate_test_cases(_student_checkpoint(out, rounds), dataset, test_ids, run_dir, eval_options)
    teacher_rows = evaluate_test_cases(
        Path(summary["teacher_run"]), dataset, test_ids, run_dir / "teacher_eval", {**eval_options, "save_cases": 0}
    )
    _add_teacher_dice(rows, teacher_rows)
    metrics = aggregate(rows)
    metrics["teacher_dice"] = _mean([r["teacher_dice"] for r in rows if r.get("teacher_dice") is not None])
    write_json_atomic(run_dir / "metrics_per_case.json", {"per_case": rows, "metrics": metrics})
    log.info("cell %s: %s", cell_id(config), ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
    return {
        "metrics": metrics,
        "per_case": rows,
        "history": history,
        "rounds": per_round,
        "checkpoint": str(_student_checkpoint(out, rounds)),
    }


def unlabelled_pool(config: dict[str, Any], dataset, ft) -> list[str]:
    """Case ids of the target domain's training subjects that are not labelled (never validation or test).

    The cases come from :func:`~medtransfer.finetune.select_cases` of the teacher's config ``ft``: the very
    selection the teacher run makes.

    Raises:
        DataError: (from the leak guard) a pool case shares a subject, id or file with a validation/test case.
        ConfigError: the pool is empty (every training subject is labelled).
    """
    from ..finetune import select_cases
    from ..semi import check_no_leak, held_out_cases

    selection = select_cases(ft, dataset)
    pool = selection.unlabelled_ids(dataset)
    limit = (config.get("teacher_student") or {}).get("max_unlabelled")
    pool = pool[: int(limit)] if limit else pool
    if not pool:
        raise ConfigError(
            f"cell {cell_id(config)}: no unlabelled training case left in domain {ft.target_domain!r} "
            f"({len(selection.split.train)} training cases, {len(selection.labelled_ids)} labelled); lower the budget"
        )
    split = selection.split
    check_no_leak([dataset.get(c) for c in pool], held_out_cases(dataset.cases, [*split.test, *split.val]))
    return pool


def link_unlabelled(dataset, case_ids: list[str], folder: Path) -> Path:
    """A ``folders``-layout dataset of links to the cases' images (labels left out) with their subjects."""
    import csv
    import io

    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")  # quotes a subject or domain holding a comma
    writer.writerow(["case", "subject", "domain"])
    for case_id in case_ids:
        case = dataset.get(case_id)
        if len(case.images) != 1:
            raise ConfigError(f"{dataset.root}: teacher_student cells need single-channel images ({case_id})")
        link = images / f"{case_id}.nii.gz"
        if link.parent != images:  # layouts refuse such ids; never unlink anything outside images/
            raise ConfigError(f"{dataset.root}: case id {case_id!r} cannot name a file in {images}")
        if link.is_symlink() or link.exists():
            link.unlink()
        _link_inside(Path(case.images[0]).resolve(), link)
        writer.writerow([case_id, case.subject, case.domain or ""])
    write_text_atomic(folder / "metadata.csv", table.getvalue())
    return folder


def _link_inside(source: Path, link: Path) -> None:
    """A hard link (a copy across file systems): datasets refuse symlinks that point outside their folder."""
    try:
        os.link(source, link)
    except OSError:
        shutil.copy2(source, link)


def _student_checkpoint(out: Path, rounds: int) -> Path:
    """The last student's run folder (``eval.checkpoint`` picks best or last inside it)."""
    return out / f"round{rounds}"


def _epoch_history(out: Path, rounds: int) -> list[dict[str, Any]]:
    """Per-epoch records of the teacher (round 0) then of each student, each tagged with its ``round``."""
    records = []
    for r in range(rounds + 1):
        records.extend({**rec, "round": r} for rec in read_history(out / f"round{r}" / "history.jsonl"))
    return records


def _add_teacher_dice(rows: list[dict[str, Any]], teacher_rows: list[dict[str, Any]]) -> None:
    teacher = {(r["case"], r.get("label")): r.get("dice") for r in teacher_rows}
    for row in rows:
        row["teacher_dice"] = teacher.get((row["case"], row.get("label")))


def _mean(values: list[float]) -> float:
    values = [float(v) for v in values if v is not None]
    return sum(values) / len(values) if values else float("nan")
