"""Segmentation metrics: Dice, IoU, surface Dice (DeepMind definition), HD95, ASSD, lesion-wise detection.

Functional API ``compute_*`` on batch-first inputs (masks ``(B, C, *spatial)`` or label maps with ``labels``)
returning ``(B, C)`` tables, and accumulators ``<Name>Metric`` (``__call__`` -> ``aggregate()`` -> ``reset()``).
Conventions (empty masks, reductions) are in ``docs/metrics.md``.
"""

from __future__ import annotations

from .base import CumulativeMetric
from .lesions import (
    LesionDetectionMetric,
    LesionReduction,
    LesionStats,
    compute_lesion_detection,
    reduce_lesion_stats,
)
from .overlap import DiceMetric, IoUMetric, compute_dice, compute_iou
from .reduction import MetricReduction, reduce_metric
from .surface import (
    ASSDMetric,
    HD95Metric,
    SurfaceDiceMetric,
    compute_assd,
    compute_hd95,
    compute_surface_dice,
)
from .surface_distance import Boundary, SurfaceDistances, compute_surface_distances

__all__ = [
    "ASSDMetric",
    "Boundary",
    "CumulativeMetric",
    "DiceMetric",
    "HD95Metric",
    "IoUMetric",
    "LesionDetectionMetric",
    "LesionReduction",
    "LesionStats",
    "MetricReduction",
    "SurfaceDiceMetric",
    "SurfaceDistances",
    "compute_assd",
    "compute_dice",
    "compute_hd95",
    "compute_iou",
    "compute_lesion_detection",
    "compute_surface_distances",
    "compute_surface_dice",
    "reduce_lesion_stats",
    "reduce_metric",
]
