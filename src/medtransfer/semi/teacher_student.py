"""Noisy-student rounds for segmentation (orchestration: the only module of ``semi`` that imports ``train``).

Round 0 is an ordinary fine-tuning run (:func:`medtransfer.finetune.run_finetune`): the teacher.  Each
round ``r = 1..N`` then pseudo-labels the unlabelled scans with the current teacher, trains a student from the
same source and strategy on labelled + confident pseudo-labelled slices with strong augmentation and feature
dropout, compares student and teacher on the validation cases (Dice), and makes the student the next teacher.
Students are built and trained by the same parts as every fine-tuning run (:mod:`medtransfer.finetune`), so
any strategy that serves the ``teacher_student`` task trains them (docs/beyond.md).

Output folder::

    OUT/round0/                 the teacher's fine-tuning run folder
    OUT/round{r}/checkpoints/   the student's checkpoints (plain model, loadable by predict)
    OUT/round{r}/history.jsonl  per-epoch records
    OUT/round{r}/round.json     teacher and student validation Dice, pseudo-label statistics
    OUT/summary.json            every round, written last
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.utils.data import ConcatDataset

from ..checkpoint import load_checkpoint
from ..data.layouts import CaseDataset, load_dataset
from ..data.preprocess import PreprocessConfig
from ..data.splits import LabelBudget
from ..errors import ConfigError, DataError
from ..utils import write_json_atomic
from .augment import AugmentedDataset, StrongAugmentConfig, add_feature_dropout
from .leak import check_no_leak, held_out_cases
from .loss import MaskedSegLoss
from .pseudo import PseudoLabelConfig, prepare_unlabelled, pseudo_label

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherStudentConfig:
    """Noisy-student options.

    Attributes:
        finetune: the :class:`~medtransfer.finetune.FinetuneConfig` keys of the teacher run (its
            ``out`` is replaced by ``OUT/round0``); students use the same source, strategy, split and training.
        unlabelled: folder of unlabelled target scans (any dataset layout; labels, if present, are never read).
        out: output folder.
        rounds: student rounds (each student becomes the next teacher).
        pseudo: :class:`PseudoLabelConfig` keys.
        augment: :class:`StrongAugmentConfig` keys.
        dropout: feature dropout on every stage output of the student (training only).
        dice_loss: add soft Dice on confident voxels to the student's (masked) cross-entropy.
    """

    finetune: dict[str, Any]
    unlabelled: str
    out: str
    rounds: int = 1
    pseudo: dict[str, Any] = field(default_factory=dict)
    augment: dict[str, Any] = field(default_factory=dict)
    dropout: float = 0.1
    dice_loss: bool = False

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ConfigError(f"teacher-student needs rounds >= 1, got {self.rounds}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")


def run_teacher_student(config: TeacherStudentConfig | dict[str, Any]) -> Path:
    """Teacher fine-tuning, then ``rounds`` noisy-student rounds; returns the output folder (see module doc).

    Raises:
        DataError: an unlabelled scan shares a subject, id or file with a test or validation scan.
        ConfigError: bad options, or a 3D model (pseudo-labelling is slice-wise here).
    """
    from ..finetune import FinetuneConfig, run_finetune, select_cases
    from ..transfer import Task, check_strategy_task

    config = config if isinstance(config, TeacherStudentConfig) else TeacherStudentConfig(**config)
    out = Path(config.out)
    ft = FinetuneConfig.from_dict({**config.finetune, "out": str(out / "round0")})
    check_strategy_task(ft.strategy, Task.TEACHER_STUDENT)
    if ft.context_slices or ft.symmetry_channel:
        raise ConfigError(
            "teacher-student pseudo-labelling feeds single slices of the image channels: finetune.context_slices "
            "and finetune.symmetry_channel are not supported here (set them to 0 / false)"
        )
    dataset, unlabelled_ds = load_dataset(ft.data), _load_unlabelled(config.unlabelled)
    pseudo_cfg = PseudoLabelConfig(**config.pseudo)  # bad thresholds stop here, before the teacher trains
    planned = select_cases(ft, dataset)  # the split the teacher will make: a leak stops here too
    held_planned = held_out_cases(dataset.cases, [*planned.split.test, *planned.val_ids])
    check_no_leak(list(unlabelled_ds.cases), held_planned, what="test/validation")
    teacher_dir = run_finetune(ft, resume=True)
    summary = json.loads((teacher_dir / "summary.json").read_text())
    held = held_out_cases(dataset.cases, [*summary["test_cases"], *summary["val_cases"]])
    check_no_leak(list(unlabelled_ds.cases), held, what="test/validation")
    ctx = _Context.from_teacher_run(ft, teacher_dir, summary, dataset)
    unlabelled = prepare_unlabelled(list(unlabelled_ds.cases), ctx.preprocess)
    teacher, rows = ctx.load_model(teacher_dir / summary["checkpoint"]), []
    for r in range(1, config.rounds + 1):
        pseudo = pseudo_label(teacher, unlabelled, pseudo_cfg, axis=ft.slice_axis, divisor=ctx.divisor)
        student = ctx.train_student(config, pseudo, out / f"round{r}", seed=ft.seed + r)
        row = {
            "round": r,
            "teacher_val_dice": ctx.evaluate(teacher),
            "student_val_dice": ctx.evaluate(student),
            "pseudo_cases": [p.case_id for p in pseudo],
            "pseudo_kept_fraction": [p.kept_fraction for p in pseudo],
        }
        row["student_better"] = row["student_val_dice"] > row["teacher_val_dice"]
        write_json_atomic(out / f"round{r}" / "round.json", row)
        log.info("round %d: teacher Dice %.4f, student Dice %.4f", r, row["teacher_val_dice"], row["student_val_dice"])
        rows.append(row)
        teacher = student
    _remove_stale_rounds(out, config.rounds)
    write_json_atomic(
        out / "summary.json",
        {
            "status": "done",
            "teacher_run": str(teacher_dir),
            "rounds": rows,
            "test_cases": summary["test_cases"],
            "val_cases": summary["val_cases"],
            "labelled_cases": summary["labelled_cases"],
            "unlabelled_cases": [c.case_id for c in unlabelled],
            "options": asdict(config) | {"finetune": ft.to_dict()},
        },
    )
    return out


def _remove_stale_rounds(out: Path, rounds: int) -> None:
    """Remove the ``roundN`` folders past ``rounds`` that an earlier run of this folder wrote (they hold its
    ``round.json``): resumed with fewer rounds, the folder would otherwise show students its summary does not list."""
    import re
    import shutil

    for folder in out.iterdir():
        match = re.fullmatch(r"round(\d+)", folder.name)
        if match and int(match.group(1)) > rounds and (folder / "round.json").is_file():
            log.info("removing %s: a round of an earlier run (this one has %d)", folder, rounds)
            shutil.rmtree(folder)


class _Context:
    """Everything the rounds share: the teacher run's model spec, preprocessing, labelled and validation data."""

    def __init__(self, ft, spec, meta, train_cfg, labelled, val_cases, budget, num_labels):
        self.ft, self.spec, self.meta, self.train_cfg = ft, spec, meta, train_cfg
        self.divisor = int(meta.get("inference", {}).get("divisor", 16))
        self.preprocess = PreprocessConfig.from_dict(meta["preprocess"])
        self.num_labels = num_labels
        self.labelled_cases, self.val_cases, self.budget = labelled, val_cases, budget

    def datasets(self, pseudo=()):
        """Labelled, pseudo-labelled and validation slice datasets padded to one shape (that holds them all)."""
        from ..finetune.data import SliceDataset, common_slice_shape

        axis = self.ft.slice_axis
        shape = common_slice_shape([*self.labelled_cases, *self.val_cases, *pseudo], axis, self.divisor)
        labelled = SliceDataset(self.labelled_cases, axis, shape, self.budget.slices)
        pseudo_ds = SliceDataset(pseudo, axis, shape) if pseudo else None
        val = SliceDataset(self.val_cases, axis, shape) if self.val_cases else None
        return labelled, pseudo_ds, val

    @classmethod
    def from_teacher_run(cls, ft, run: Path, summary: dict[str, Any], dataset) -> _Context:
        from ..finetune.data import prepare_cases
        from ..train.config import TrainConfig

        ckpt = load_checkpoint(run / summary["checkpoint"])
        spec, meta = ckpt["model"], ckpt["meta"]
        if int(spec["config"].get("spatial_dims", 2)) != 2:
            raise ConfigError("teacher-student pseudo-labelling supports 2D (slice) models only")
        resolved = yaml.safe_load((run / "config.yaml").read_text())
        values = sorted(int(v) for v in meta["labels"].values())
        preprocess = PreprocessConfig.from_dict(meta["preprocess"])
        labelled = prepare_cases([dataset.get(c) for c in summary["labelled_cases"]], preprocess, values)
        val = prepare_cases([dataset.get(c) for c in summary["val_cases"]], preprocess, values)
        budget = LabelBudget.from_dict(meta["budget"])
        return cls(ft, spec, meta, TrainConfig.from_dict(resolved["train"]), labelled, val, budget, len(values))

    def load_model(self, path: Path) -> nn.Module:
        from ..models import create_model

        model = create_model(self.spec["name"], **self.spec["config"])
        model.load_state_dict(load_checkpoint(path)["state_dict"])
        return model.eval()

    def evaluate(self, model: nn.Module) -> float:
        """Mean validation Dice of ``model`` (NaN without validation cases)."""
        from ..train.validation import DiceValidator

        val = self.datasets()[2]
        if val is None:
            return float("nan")
        model.eval()

        @torch.no_grad()
        def step(batch):
            return model(batch["image"]).float()

        return float(DiceValidator(val, num_classes=max(self.num_labels - 1, 1))(step)["dice"])

    def train_student(self, config: TeacherStudentConfig, pseudo, folder: Path, seed: int) -> nn.Module:
        """A student from the source weights and strategy, trained on labelled + pseudo-labelled slices."""
        from ..finetune import build_model, fit, load_source
        from ..finetune.build import InputLayout, relayout_source
        from ..finetune.fit import training_model
        from ..train import CheckpointManager, MetricsHistory, StepBatchSampler, TrainBatches
        from ..train.validation import DiceValidator
        from ..transfer import Task, apply_strategy

        torch.manual_seed(seed)
        in_channels = int(self.spec["config"].get("in_channels", 1))
        source = load_source(self.ft)
        model, spec = build_model(self.ft, source, in_channels, num_labels=self.num_labels)
        source, _ = relayout_source(source, model, InputLayout(in_channels))  # as the teacher's run did
        strategy = apply_strategy(self.ft.strategy, model, source, seed=seed, task=Task.TEACHER_STUDENT)
        handles = add_feature_dropout(training_model(strategy, model), config.dropout)
        labelled, pseudo_ds, val = self.datasets(pseudo)
        data = AugmentedDataset(ConcatDataset([labelled, pseudo_ds]), StrongAugmentConfig(**config.augment))
        cfg = self.train_cfg
        fitted = fit(
            strategy,
            model,
            cfg,
            TrainBatches(data, StepBatchSampler(len(data), cfg.batch_size, cfg.steps_per_epoch, seed), cfg.num_workers),
            loss=MaskedSegLoss(dice=config.dice_loss, ignore_index=PseudoLabelConfig(**config.pseudo).ignore_index),
            validator=DiceValidator(val, num_classes=max(self.num_labels - 1, 1)) if val else None,
            checkpoints=CheckpointManager(folder / "checkpoints", spec, {**self.meta, "teacher_student": True}),
            history=MetricsHistory(folder / "history.jsonl"),
        )
        for handle in handles:
            handle.remove()
        model, result = fitted.model, fitted.result
        best = result.best_checkpoint or result.last_checkpoint
        if best is not None:
            model.load_state_dict(load_checkpoint(best)["state_dict"])
        return model.eval()


def _load_unlabelled(folder: str) -> CaseDataset:
    """The unlabelled scans (label problems do not matter); a file outside the folder is refused, as everywhere."""
    from ..infer.io import visible_scans

    root = Path(folder)
    flat = root.is_dir() and not (root / "images").is_dir() and bool(visible_scans(root))
    # a plain folder of scans, as `medtransfer predict` takes, or any dataset layout
    dataset = _flat_folder(root) if flat else load_dataset(folder, strict=False)
    outside = [str(problem) for problem in dataset.problems if problem.outside_root]
    if outside:
        raise DataError(f"{folder}: {len(outside)} unlabelled file(s) outside the folder: {'; '.join(outside[:5])}")
    bad_ids = [str(problem) for problem in dataset.problems if problem.bad_case_id]
    if bad_ids:  # their scans would be left out of the pool without a word
        raise DataError(f"{folder}: {len(bad_ids)} unlabelled scan(s) with unusable names: {'; '.join(bad_ids[:5])}")
    return dataset


def _flat_folder(root: Path) -> CaseDataset:
    """A folder of NIfTI scans (``{case}.nii.gz`` or ``{case}_0000.nii.gz``), one single-channel case each, grouped
    as ``medtransfer predict`` groups them for a one-channel model (two files of one case are refused; files that
    link out of the folder are recorded as problems by :class:`CaseDataset`, as in every layout)."""
    from ..data.layouts import Case
    from ..data.layouts.base import Layout
    from ..infer.io import group_scans

    cases = [Case(case, files) for case, files in group_scans(root, channels=1, what="pseudo-label").items()]
    return CaseDataset(root=root, layout=Layout.FOLDERS, cases=tuple(cases))
