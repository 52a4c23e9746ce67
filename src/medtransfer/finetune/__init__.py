"""One fine-tuning run: select the cases once, build the model, apply the strategy and train.

Segmentation (:func:`run_finetune`), classification (:func:`run_classification`) and the teacher-student rounds
(:mod:`medtransfer.semi`) are assembled from the same parts; the grid (:mod:`medtransfer.experiments`), the CLI
(``medtransfer finetune``) and the demo call these functions.

- :mod:`.config`: :class:`FinetuneConfig` (from CLI options, a YAML file or a grid cell)
- :mod:`.select`: :func:`select_cases` -> :class:`Selection` (split, budget, labelled / validation / test ids)
- :mod:`.build`: :func:`build_model` (the source's architecture with the target's channels and head)
- :mod:`.data`: prepared cases, 2D slice and 3D patch datasets; :mod:`.classification`: image-level targets
- :mod:`.fit`: :func:`fit`, the one place a strategy meets the trainer
- :mod:`.segment`: :func:`run_finetune`; :mod:`.classify`: :func:`run_classification`

The run folder and its options: docs/guide.md.
"""

from __future__ import annotations

from .build import build_model, load_source
from .classify import ClassificationOptions, run_classification
from .config import FinetuneConfig
from .fit import Fitted, fit
from .segment import SUMMARY, run_finetune
from .select import Selection, label_map, select_cases

__all__ = [
    "SUMMARY",
    "ClassificationOptions",
    "FinetuneConfig",
    "Fitted",
    "Selection",
    "build_model",
    "fit",
    "label_map",
    "load_source",
    "run_classification",
    "run_finetune",
    "select_cases",
]
