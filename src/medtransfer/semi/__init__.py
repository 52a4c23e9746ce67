"""Semi-supervised fine-tuning: teacher-student (noisy student) pseudo-labelling with a leak guard.

``run_teacher_student(TeacherStudentConfig(finetune={...}, unlabelled=DIR, out=OUT, rounds=N))`` trains the
teacher, pseudo-labels ``DIR`` and trains N students; :func:`check_no_leak` refuses unlabelled scans that share
a subject, case id or file with test or validation scans.
"""

from __future__ import annotations

from .augment import AugmentedDataset, StrongAugmentConfig, add_feature_dropout, augment_item
from .leak import check_no_leak, held_out_cases
from .loss import IGNORE_INDEX, MaskedSegLoss
from .pseudo import (
    PseudoLabelConfig,
    PseudoLabelledCase,
    UnlabelledCase,
    confident_labels,
    predict_probabilities,
    prepare_unlabelled,
    pseudo_label,
)
from .teacher_student import TeacherStudentConfig, run_teacher_student

__all__ = [
    "IGNORE_INDEX",
    "AugmentedDataset",
    "MaskedSegLoss",
    "PseudoLabelConfig",
    "PseudoLabelledCase",
    "StrongAugmentConfig",
    "TeacherStudentConfig",
    "UnlabelledCase",
    "add_feature_dropout",
    "augment_item",
    "check_no_leak",
    "confident_labels",
    "held_out_cases",
    "predict_probabilities",
    "prepare_unlabelled",
    "pseudo_label",
    "run_teacher_student",
]
