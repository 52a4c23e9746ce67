"""Lesion-wise detection: connected components of prediction and reference, matched per case.

A reference lesion is *detected* (true positive) when a predicted lesion overlaps it by at least one voxel, or,
with ``iou_threshold``, when some single predicted component has IoU >= threshold with it.  A predicted lesion
that detects no reference lesion is a false positive.  So a reference lesion split into two predicted
components counts one TP and no FP; two reference lesions merged into one prediction count two TPs.

``iou_threshold="msseg"`` applies the detection rule of the MSSEG challenges instead (Commowick et al. 2018,
Sci Rep 8:13650; Inria's ``animaSegPerfAnalyzer`` with its command-line defaults): components of at most
:data:`MSSEG_MIN_VOLUME_MM3` are dropped from both masks (the volume is voxels times the product of the spacing,
an area in 2D; without ``spacing``, 3 voxels); components are face-connected (6 in 3D, 4 in 2D, whatever
``connectivity`` says); a reference lesion is detected when the predicted components overlap more than
:data:`MSSEG_ALPHA` of it and the components overlapping it, taken largest overlap first until they hold
:data:`MSSEG_GAMMA` of the overlapped voxels, each have at most :data:`MSSEG_BETA` of their voxels outside every
reference lesion (as in anima, at most ``n_ref + 1`` components are examined; passing them is enough).  A
predicted component is a true positive under the same test with the roles swapped (its false positives are the
components that fail it).  Fragments of one lesion detect it together; a component mostly outside the lesions (a
mask of the whole brain) detects nothing.  The Dice of a detected lesion is with every predicted component that
overlaps it (a component mostly outside it lowers it).
medtransfer's evaluations (grid cells, ``medtransfer evaluate``) use ``DEFAULT_LESION_IOU``: with the any-overlap
rule a mask of the whole brain is one component that touches every lesion, so it scores recall, precision and
F1 near 1; with IoU >= 0.1 it scores 0.

Counts come first, per case and class (SMP's ``get_stats``); ratios are derived from them per case or after
summing over cases (:func:`reduce_lesion_stats`):

* detection rate (lesion recall) = TP / n_ref;
* lesion precision = (n_pred - FP) / n_pred;
* lesion F1 = harmonic mean of the two (0 when one side has lesions and the other none);
* Dice of detected lesions = mean over the detected reference lesions of the Dice between the lesion and the
  predicted components that detect it (the same matching rule; a merged prediction counts whole for each);
* count error = n_pred - n_ref; volume error = predicted - reference total volume (mm³, voxels without spacing).

A ratio whose denominator is zero (no reference lesions, no predicted lesions, no detected lesion) is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError, did_you_mean
from .inputs import as_class_masks, per_case_spacing
from .reduction import nanmean

CONNECTIVITY = {2: (4, 8), 3: (6, 18, 26)}
DEFAULT_LESION_IOU = 0.1
MSSEG = "msseg"
MSSEG_ALPHA = 0.10  # a lesion must be overlapped on more than this fraction of its voxels
MSSEG_BETA = 0.70  # an overlapping component may lie outside every lesion on at most this fraction of its voxels
MSSEG_GAMMA = 0.65  # ... checked for the components holding this share of the overlap, largest first
MSSEG_MIN_VOLUME_MM3 = 3.0  # components of at most this volume are dropped from both masks
MSSEG_CONNECTIVITY = {2: 4, 3: 6}
LesionRule = float | str | None
COUNT_FIELDS = ("tp", "fn", "fp", "n_ref", "n_pred")


class LesionReduction(StrEnum):
    """``micro``: sum the counts over cases, then take ratios; ``macro``: ratios per case, then NaN-mean."""

    MICRO = "micro"
    MACRO = "macro"


@dataclass(frozen=True)
class LesionStats:
    """Lesion counts and volumes per case and class; every field is a ``(B, C)`` array.

    ``detected_dice_sum`` is the sum over detected reference lesions of their Dice with the predicted components
    that detect them (sums, like the counts, reduce over cases by adding).
    """

    tp: np.ndarray
    fn: np.ndarray
    fp: np.ndarray
    n_ref: np.ndarray
    n_pred: np.ndarray
    volume_ref: np.ndarray
    volume_pred: np.ndarray
    detected_dice_sum: np.ndarray

    @property
    def detection_rate(self) -> np.ndarray:
        return _ratio(self.tp, self.n_ref)

    @property
    def precision(self) -> np.ndarray:
        return _ratio(self.n_pred - self.fp, self.n_pred)

    @property
    def f1(self) -> np.ndarray:
        recall, precision = self.detection_rate, self.precision
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.where(recall + precision > 0, 2 * recall * precision / (recall + precision), 0.0)
        one_sided = (self.n_ref == 0) ^ (self.n_pred == 0)
        return np.where(one_sided, 0.0, np.where((self.n_ref == 0) & (self.n_pred == 0), np.nan, f1))

    @property
    def detected_dice(self) -> np.ndarray:
        """Mean Dice of the detected reference lesions (NaN without a detected lesion)."""
        return _ratio(self.detected_dice_sum, self.tp)

    @property
    def count_error(self) -> np.ndarray:
        return (self.n_pred - self.n_ref).astype(np.float64)

    @property
    def volume_error(self) -> np.ndarray:
        return self.volume_pred - self.volume_ref

    def as_dict(self) -> dict[str, np.ndarray]:
        """Counts and derived ratios, each ``(B, C)``."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in DERIVED:
            out[name] = getattr(self, name)
        return out

    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, Any]], prefix: str = "lesion_") -> LesionStats:
        """``(N, 1)`` statistics of N flat records (e.g. per-case rows) holding ``{prefix}{field}`` values.

        Raises:
            DataError: a record lacks a field.
        """
        try:
            columns = {f.name: np.array([[float(r[prefix + f.name])] for r in records]) for f in fields(cls)}
        except (KeyError, TypeError) as err:
            raise DataError(f"a lesion record lacks a count or volume ({err}); fields: {_field_names(prefix)}") from err
        return cls(**{k: v.astype(np.int64) if k in COUNT_FIELDS else v for k, v in columns.items()})

    @classmethod
    def concatenate(cls, stats: Sequence[LesionStats]) -> LesionStats:
        """Stack several batches along the case axis."""
        return cls(**{f.name: np.concatenate([getattr(s, f.name) for s in stats]) for f in fields(cls)})


DERIVED = ("detection_rate", "precision", "f1", "detected_dice", "count_error", "volume_error")


def _field_names(prefix: str) -> list[str]:
    return [prefix + f.name for f in fields(LesionStats)]


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.full(np.shape(numerator), np.nan)
    np.divide(numerator, denominator, out=out, where=np.asarray(denominator) > 0)
    return out


def compute_lesion_detection(
    pred: Any,
    ref: Any,
    connectivity: int = 26,
    iou_threshold: LesionRule = None,
    labels: Sequence[int] | None = None,
    spacing: Any = None,
) -> LesionStats:
    """Lesion-wise TP/FN/FP counts and volumes per case and class.

    Args:
        pred: masks ``(B, C, *spatial)`` or label maps ``(B, *spatial)`` with ``labels``.
        ref: reference in the same layout.
        connectivity: 6, 18 or 26 in 3D; 4 or 8 in 2D (the default 26 means 8 in 2D).
        iou_threshold: ``None`` to detect on any overlap, the IoU a single predicted component needs, or
            ``"msseg"`` for the MSSEG challenges' rule (module docstring).
        labels: label values for label-map inputs.
        spacing: voxel size in mm for volumes in mm³; ``None`` counts voxels.

    Returns:
        :class:`LesionStats` with ``(B, C)`` arrays.

    Example:
        >>> import numpy as np
        >>> ref = np.zeros((1, 1, 8, 8), bool); ref[0, 0, 1:3, 1:3] = ref[0, 0, 5:7, 5:7] = True
        >>> pred = np.zeros((1, 1, 8, 8), bool); pred[0, 0, 1:2, 1:2] = pred[0, 0, 4, 0] = True
        >>> s = compute_lesion_detection(pred, ref)
        >>> s.tp.tolist(), s.fn.tolist(), s.fp.tolist()
        ([[1]], [[1]], [[1]])
    """
    pred, ref = as_class_masks(pred, ref, labels)
    batch, channels = pred.shape[:2]
    spatial_dims = pred.ndim - 2
    connectivity = _check_connectivity(connectivity, spatial_dims)
    iou_threshold = check_iou_threshold(iou_threshold)
    voxel_volumes = [float(np.prod(s)) for s in per_case_spacing(spacing, batch, spatial_dims)]
    rows = np.zeros((8, batch, channels))
    for b, c in np.ndindex(batch, channels):
        matched = _match_lesions(pred[b, c], ref[b, c], connectivity, iou_threshold, voxel_volumes[b])
        rows[:5, b, c], rows[7, b, c] = matched[:5], matched[5]
        rows[5, b, c] = np.count_nonzero(ref[b, c]) * voxel_volumes[b]
        rows[6, b, c] = np.count_nonzero(pred[b, c]) * voxel_volumes[b]
    counts = rows[:5].astype(np.int64)
    return LesionStats(*counts, volume_ref=rows[5], volume_pred=rows[6], detected_dice_sum=rows[7])


def check_iou_threshold(value: Any, name: str = "iou_threshold") -> LesionRule:
    """``value`` as a lesion-matching rule: an IoU threshold in (0, 1], ``None`` for the any-overlap (>= 1 voxel)
    rule, or ``"msseg"`` (any case) for the MSSEG challenges' rule.

    Raises:
        ConfigError: anything else (booleans and other strings included).
    """
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() == MSSEG:
        return MSSEG
    try:
        number = float(value) if not isinstance(value, bool | str) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not 0 < number <= 1:
        raise ConfigError(
            f"{name} must be a number in (0, 1] (the IoU one predicted component needs), null (any overlap of >= 1 "
            f"voxel) or 'msseg' (the MSSEG challenges' detection rule), got {value!r}"
        )
    return number


def _check_connectivity(connectivity: int, spatial_dims: int) -> int:
    if spatial_dims == 2 and connectivity == 26:
        return 8
    if connectivity not in CONNECTIVITY[spatial_dims]:
        raise ConfigError(
            f"connectivity {connectivity} is not valid in {spatial_dims}D; allowed: {CONNECTIVITY[spatial_dims]}"
        )
    return connectivity


def _match_lesions(
    pred: np.ndarray, ref: np.ndarray, connectivity: int, rule: LesionRule, voxel_volume: float = 1.0
) -> tuple[int, int, int, int, int, float]:
    """``(tp, fn, fp, n_ref, n_pred, detected_dice_sum)`` for one binary pair."""
    return _match_counts(_component_matches(pred, ref, connectivity, rule, voxel_volume))


def _match_counts(matched) -> tuple[int, int, int, int, int, float]:
    """:func:`_match_lesions`' tuple from the components of :func:`_component_matches`."""
    if matched is None:
        return 0, 0, 0, 0, 0, 0.0
    n_ref, n_pred, ref_ids, pred_ids, inter, ref_sizes, pred_sizes, ref_hit, pred_hit = matched[:9]
    tp = int(np.count_nonzero(ref_hit))
    dice_sum = _detected_dice_sum(ref_ids, pred_ids, inter, ref_sizes, pred_sizes)
    return tp, n_ref - tp, n_pred - int(np.count_nonzero(pred_hit)), n_ref, n_pred, dice_sum


def _component_matches(
    pred: np.ndarray, ref: np.ndarray, connectivity: int, rule: LesionRule, voxel_volume: float = 1.0
):
    """The connected components of one binary pair and how they match under the rule:
    ``(n_ref, n_pred, ref_ids, pred_ids, intersections, ref_sizes, pred_sizes, ref_hit, pred_hit, ref_labels,
    box)``, where the (reference, predicted) pairs are those that detect the reference lesion (sizes indexed by
    component id, 0 = background; ``ref_hit`` / ``pred_hit`` mark the detected reference lesions and the predicted
    components that are true positives, index 0 unused; ``ref_labels`` are the reference components inside
    ``box``, the bounding box of both masks), or ``None`` when both masks are empty."""
    import cc3d

    box = _bounding_box(pred | ref)
    if box is None:
        return None
    msseg = rule == MSSEG
    if msseg:
        connectivity = MSSEG_CONNECTIVITY[ref.ndim]
    # as uint8: connected-components-3d 4.1 labels some background pixels of 2D *bool* arrays at connectivity 8
    # ([[0,0,0],[0,0,1],[0,0,1]] gave pixel (1, 0) a label); uint8 input is labelled right
    ref_labels, n_ref = cc3d.connected_components(ref[box].view(np.uint8), connectivity=connectivity, return_N=True)
    pred_labels, n_pred = cc3d.connected_components(pred[box].view(np.uint8), connectivity=connectivity, return_N=True)
    if msseg:  # components of at most MSSEG_MIN_VOLUME_MM3 leave both masks (anima keeps size > floor(v / voxel))
        most = math.floor(MSSEG_MIN_VOLUME_MM3 / voxel_volume)
        ref_labels, n_ref = _drop_components(ref_labels, n_ref, most)
        pred_labels, n_pred = _drop_components(pred_labels, n_pred, most)
    both = (ref_labels > 0) & (pred_labels > 0)
    pair_keys, inter = np.unique(
        ref_labels[both].astype(np.int64) * (n_pred + 1) + pred_labels[both], return_counts=True
    )
    ref_ids, pred_ids = np.divmod(pair_keys, n_pred + 1)
    ref_sizes = np.bincount(ref_labels.ravel(), minlength=n_ref + 1)
    pred_sizes = np.bincount(pred_labels.ravel(), minlength=n_pred + 1)
    ref_hit, pred_hit = np.zeros(n_ref + 1, dtype=bool), np.zeros(n_pred + 1, dtype=bool)
    if msseg:
        ref_hit = _msseg_hits(ref_ids, pred_ids, inter, ref_sizes, pred_sizes)
        pred_hit = _msseg_hits(pred_ids, ref_ids, inter, pred_sizes, ref_sizes)
        keep = ref_hit[ref_ids]  # a detected lesion's Dice is with every component that overlaps it
        matches = ref_ids[keep], pred_ids[keep], inter[keep]
        return n_ref, n_pred, *matches, ref_sizes, pred_sizes, ref_hit, pred_hit, ref_labels, box
    if rule is not None and pair_keys.size:
        keep = inter / (ref_sizes[ref_ids] + pred_sizes[pred_ids] - inter) >= rule
        ref_ids, pred_ids, inter = ref_ids[keep], pred_ids[keep], inter[keep]
    ref_hit[ref_ids], pred_hit[pred_ids] = True, True
    return n_ref, n_pred, ref_ids, pred_ids, inter, ref_sizes, pred_sizes, ref_hit, pred_hit, ref_labels, box


def _drop_components(labels: np.ndarray, n: int, most: int) -> tuple[np.ndarray, int]:
    """``labels`` without the components of at most ``most`` voxels, renumbered 1..k, and k."""
    if most < 1 or n == 0:
        return labels, n
    kept = np.bincount(labels.ravel(), minlength=n + 1) > most
    kept[0] = False
    remap = np.zeros(n + 1, dtype=labels.dtype)
    remap[kept] = np.arange(1, np.count_nonzero(kept) + 1, dtype=labels.dtype)
    return remap[labels], int(np.count_nonzero(kept))


def _msseg_hits(
    a_ids: np.ndarray, b_ids: np.ndarray, inter: np.ndarray, a_sizes: np.ndarray, b_sizes: np.ndarray
) -> np.ndarray:
    """Which components of mask A are detected by mask B under the MSSEG rule (index 0 unused).

    ``(a_ids, b_ids, inter)`` are every overlapping pair of components and its overlap in voxels.  Component a is
    detected when B covers more than :data:`MSSEG_ALPHA` of it and the B components overlapping it, largest overlap
    first (ties: lower id first), until they hold :data:`MSSEG_GAMMA` of its covered voxels, each lie outside every
    A component on at most :data:`MSSEG_BETA` of their voxels.  As in anima (``falsePositiveRatioTester``, whose
    loop also stops at the number of A labels counting the background), at most ``n_A + 1`` B components are
    examined: when they pass without reaching gamma, a is detected.
    """
    hit = np.zeros(a_sizes.size, dtype=bool)
    if a_ids.size == 0:
        return hit
    covered_b = np.bincount(b_ids, weights=inter, minlength=b_sizes.size)
    outside_b = 1.0 - covered_b / np.maximum(b_sizes, 1)
    order = np.lexsort((b_ids, -inter, a_ids))  # per component of A: largest overlap first
    a_sorted, b_sorted, inter_sorted = a_ids[order], b_ids[order], inter[order]
    starts = np.flatnonzero(np.r_[True, a_sorted[1:] != a_sorted[:-1]])
    examined_at_most = a_sizes.size  # anima's bound: the A labels, background included
    for start, stop in zip(starts, np.r_[starts[1:], a_sorted.size], strict=True):
        a = a_sorted[start]
        covered = int(inter_sorted[start:stop].sum())
        if covered <= MSSEG_ALPHA * a_sizes[a]:
            continue
        weight, failed = 0.0, False
        for b, overlap in zip(b_sorted[start:stop][:examined_at_most], inter_sorted[start:stop], strict=False):
            if outside_b[b] > MSSEG_BETA:
                failed = True
                break
            weight += overlap / covered
            if weight >= MSSEG_GAMMA:
                break
        hit[a] = not failed
    return hit


# Reference-volume bins of the lesion recall by size (mm³): MS lesions are mostly under 0.1 ml, ATLAS strokes
# span 0.1 ml to over 10 ml; a recipe that misses every small lesion shows it here and not in a pooled recall.
VOLUME_BINS_MM3 = (0.0, 30.0, 100.0, 1000.0, 10000.0, math.inf)


def volume_bin_names(bins_mm3: Sequence[float] = VOLUME_BINS_MM3) -> list[str]:
    """Column-safe names of the bins, in ml: ``lt0.03ml``, ``0.03-0.1ml``, ..., ``ge10ml``.

    Example:
        >>> volume_bin_names((0.0, 100.0, 1000.0, math.inf))
        ['lt0.1ml', '0.1-1ml', 'ge1ml']

    Raises:
        ConfigError: edges that do not start at 0, increase and end at infinity (every lesion must fall in a
            bin), or names that collide.
    """
    edges = np.asarray(bins_mm3, dtype=float)
    if edges.ndim != 1 or edges.size < 2 or edges[0] != 0 or not np.isposinf(edges[-1]) or np.any(np.diff(edges) <= 0):
        raise ConfigError(f"volume bins must start at 0, increase and end at infinity, got {list(bins_mm3)}")
    names = []
    for low, high in zip(bins_mm3[:-1], bins_mm3[1:], strict=True):
        if low <= 0:
            names.append(f"lt{high / 1000:g}ml")
        elif math.isinf(high):
            names.append(f"ge{low / 1000:g}ml")
        else:
            names.append(f"{low / 1000:g}-{high / 1000:g}ml")
    if len(set(names)) < len(names):
        raise ConfigError(f"volume bins {list(bins_mm3)} are too close to name apart in ml: {names}")
    return names


def recall_by_volume(
    pred: Any,
    ref: Any,
    spacing: Sequence[float],
    bins_mm3: Sequence[float] = VOLUME_BINS_MM3,
    connectivity: int = 26,
    iou_threshold: LesionRule = DEFAULT_LESION_IOU,
) -> dict[str, tuple[int, int]]:
    """Reference lesions and detected ones per reference-volume bin, for one binary case (2D or 3D).

    A lesion of volume v (its voxel count times the voxel volume, mm³) falls in the bin ``low <= v < high``; it is
    detected under the rule of :func:`compute_lesion_detection` (the same matching, so the detected counts of all
    bins add up to its ``tp``).

    Returns:
        bin name (:func:`volume_bin_names`) -> ``(n_ref, detected)``.

    Example:
        >>> ref = np.zeros((10, 10, 10), bool); ref[0, 0, 0] = True; ref[5:8, 5:8, 5:8] = True
        >>> pred = np.zeros_like(ref); pred[5:8, 5:8, 5:7] = True
        >>> recall_by_volume(pred, ref, (1.0, 1.0, 1.0), (0.0, 10.0, math.inf))
        {'lt0.01ml': (1, 0), 'ge0.01ml': (1, 1)}
    """
    pred, ref, voxel_volume, connectivity, iou_threshold = _one_case(
        pred, ref, spacing, connectivity, iou_threshold, "recall by volume"
    )
    volume_bin_names(bins_mm3)  # bad bins fail before any labelling
    matched = _component_matches(pred, ref, connectivity, iou_threshold, voxel_volume)
    return _volume_bin_counts(matched, voxel_volume, bins_mm3)


def lesion_case(
    pred: Any,
    ref: Any,
    spacing: Sequence[float] | None = None,
    connectivity: int = 26,
    iou_threshold: LesionRule = DEFAULT_LESION_IOU,
    bins_mm3: Sequence[float] = VOLUME_BINS_MM3,
) -> tuple[LesionStats, dict[str, tuple[int, int]]]:
    """:func:`compute_lesion_detection` and :func:`recall_by_volume` of one binary case (2D or 3D) at once.

    Both come from one labelling of the components (what a per-case evaluation records), and equal the two
    functions' results exactly.

    Returns:
        ``(stats, by_volume)``: :class:`LesionStats` with ``(1, 1)`` arrays, and bin name -> ``(n_ref, detected)``.

    Example:
        >>> ref = np.zeros((10, 10, 10), bool); ref[0, 0, 0] = True; ref[5:8, 5:8, 5:8] = True
        >>> pred = np.zeros_like(ref); pred[5:8, 5:8, 5:7] = True; pred[0, 9, 9] = True
        >>> stats, by_volume = lesion_case(pred, ref, (1.0, 1.0, 1.0), bins_mm3=(0.0, 10.0, math.inf))
        >>> stats.tp.tolist(), stats.fn.tolist(), stats.fp.tolist(), by_volume
        ([[1]], [[1]], [[1]], {'lt0.01ml': (1, 0), 'ge0.01ml': (1, 1)})
    """
    pred, ref, voxel_volume, connectivity, iou_threshold = _one_case(
        pred, ref, spacing, connectivity, iou_threshold, "a lesion case"
    )
    volume_bin_names(bins_mm3)
    matched = _component_matches(pred, ref, connectivity, iou_threshold, voxel_volume)
    tp, fn, fp, n_ref, n_pred, dice_sum = _match_counts(matched)
    stats = LesionStats(
        *(np.array([[count]], dtype=np.int64) for count in (tp, fn, fp, n_ref, n_pred)),
        volume_ref=np.array([[np.count_nonzero(ref) * voxel_volume]]),
        volume_pred=np.array([[np.count_nonzero(pred) * voxel_volume]]),
        detected_dice_sum=np.array([[dice_sum]]),
    )
    return stats, _volume_bin_counts(matched, voxel_volume, bins_mm3)


def detected_reference(
    pred: Any,
    ref: Any,
    spacing: Sequence[float] | None = None,
    connectivity: int = 26,
    iou_threshold: LesionRule = DEFAULT_LESION_IOU,
) -> np.ndarray:
    """The reference voxels of one binary case (2D or 3D) whose lesion the prediction detects under the rule of
    :func:`compute_lesion_detection` (a boolean mask of ``ref``'s shape), so that two rules can be compared lesion
    by lesion although they label lesions differently.

    Example:
        >>> ref = np.zeros((6, 6, 6), bool); ref[0:2, 0:2, 0:2] = True; ref[4:6, 4:6, 4:6] = True
        >>> pred = np.zeros_like(ref); pred[0:2, 0:2, 0] = True
        >>> int(detected_reference(pred, ref).sum())
        8
    """
    pred, ref, voxel_volume, connectivity, iou_threshold = _one_case(
        pred, ref, spacing, connectivity, iou_threshold, "detected lesions"
    )
    out = np.zeros(ref.shape, dtype=bool)
    matched = _component_matches(pred, ref, connectivity, iou_threshold, voxel_volume)
    if matched is not None:
        ref_hit, ref_labels, box = matched[7], matched[9], matched[10]
        out[box] = ref_hit[ref_labels] & (ref_labels > 0)
    return out


def _one_case(pred: Any, ref: Any, spacing: Any, connectivity: int, iou_threshold: Any, what: str):
    """Binary 2D/3D ``pred``, ``ref`` of one shape, the voxel volume (1 without spacing), checked rule."""
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise DataError(f"prediction {pred.shape} and reference {ref.shape} differ in shape")
    if ref.ndim not in CONNECTIVITY:
        raise DataError(f"{what} needs one 2D or 3D case, got an array of shape {ref.shape}")
    (voxel,) = per_case_spacing(spacing, 1, ref.ndim)  # None counts voxels, as compute_lesion_detection does
    connectivity = _check_connectivity(connectivity, ref.ndim)
    return pred, ref, float(np.prod(voxel)), connectivity, check_iou_threshold(iou_threshold)


def _volume_bin_counts(matched, voxel_volume: float, bins_mm3: Sequence[float]) -> dict[str, tuple[int, int]]:
    """Reference lesions and detected ones per volume bin from :func:`_component_matches`' components."""
    names = volume_bin_names(bins_mm3)
    out = dict.fromkeys(names, (0, 0))
    if matched is None or matched[0] == 0:
        return out
    ref_sizes, detected = matched[5], matched[7]
    edges = np.asarray(bins_mm3, dtype=float)
    volumes = ref_sizes[1:] * voxel_volume
    bins = np.digitize(volumes, edges) - 1
    totals = np.bincount(bins, minlength=len(names))
    hits = np.bincount(bins, weights=detected[1:], minlength=len(names))
    return {name: (int(totals[i]), int(hits[i])) for i, name in enumerate(names)}


def _detected_dice_sum(
    ref_ids: np.ndarray, pred_ids: np.ndarray, inter: np.ndarray, ref_sizes: np.ndarray, pred_sizes: np.ndarray
) -> float:
    """Sum over detected reference lesions of Dice(lesion, union of the predicted components matched to it).

    Predicted components are disjoint, so the intersection and the size of the union are sums over the pairs.
    """
    if ref_ids.size == 0:
        return 0.0
    n = ref_sizes.size
    overlap = np.bincount(ref_ids, weights=inter, minlength=n)
    matched = np.bincount(ref_ids, weights=pred_sizes[pred_ids], minlength=n)
    detected = np.unique(ref_ids)
    return float(np.sum(2 * overlap[detected] / (ref_sizes[detected] + matched[detected])))


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def reduce_lesion_stats(
    stats: LesionStats, reduction: str | LesionReduction = LesionReduction.MICRO
) -> dict[str, np.ndarray]:
    """Reduce per-case lesion statistics over cases, per class.

    Args:
        stats: per-case statistics ``(B, C)``.
        reduction: ``micro`` (sum counts, then ratios) or ``macro`` (ratios per case, NaN-mean).

    Returns:
        ``(C,)`` arrays: summed counts and volumes, the reduced detection rate, precision, F1 and Dice of detected
        lesions, and per-case means (in both modes) of the count error, volume error and false-positive
        components (``fp_per_case``).
    """
    try:
        reduction = LesionReduction(reduction)
    except ValueError as err:
        raise ConfigError(did_you_mean(str(reduction), [r.value for r in LesionReduction], what="reduction")) from err
    if stats.tp.shape[0] == 0:
        raise DataError("no cases to reduce")
    summed = LesionStats(**{f.name: getattr(stats, f.name).sum(axis=0, keepdims=True) for f in fields(stats)})
    out = {f.name: getattr(summed, f.name)[0] for f in fields(stats)}
    source = summed if reduction is LesionReduction.MICRO else stats
    for name in ("detection_rate", "precision", "f1", "detected_dice"):
        out[name] = nanmean(getattr(source, name), axis=0)
    out["count_error"] = stats.count_error.mean(axis=0)
    out["volume_error"] = stats.volume_error.mean(axis=0)
    out["fp_per_case"] = stats.fp.mean(axis=0).astype(np.float64)
    return out


class LesionDetectionMetric:
    """Accumulating lesion detection: call per batch, :meth:`aggregate` sums/averages over all cases seen.

    Args:
        connectivity: see :func:`compute_lesion_detection`.
        iou_threshold: see :func:`compute_lesion_detection`.
        labels: label values when batches are label maps ``(B, *spatial)``; ``None`` for masks.
        reduction: ``micro`` or ``macro``, see :func:`reduce_lesion_stats`.

    Example:
        >>> import numpy as np
        >>> metric = LesionDetectionMetric()
        >>> m = np.zeros((1, 1, 6, 6, 6), bool); m[0, 0, 1:3, 1:3, 1:3] = True
        >>> _ = metric(m, m)
        >>> float(metric.aggregate()["detection_rate"][0])
        1.0
    """

    def __init__(
        self,
        connectivity: int = 26,
        iou_threshold: LesionRule = None,
        labels: Sequence[int] | None = None,
        reduction: str | LesionReduction = LesionReduction.MICRO,
    ) -> None:
        self.connectivity = connectivity
        self.iou_threshold = iou_threshold
        self.labels = labels
        self.reduction = reduction
        self._stats: list[LesionStats] = []

    def __call__(self, pred: Any, ref: Any, spacing: Any = None) -> LesionStats:
        stats = compute_lesion_detection(pred, ref, self.connectivity, self.iou_threshold, self.labels, spacing)
        self._stats.append(stats)
        return stats

    def get_buffer(self) -> LesionStats:
        """All per-case statistics since the last :meth:`reset`."""
        if not self._stats:
            raise DataError("LesionDetectionMetric has seen no cases; call it on a batch first")
        return LesionStats.concatenate(self._stats)

    def aggregate(self, reduction: str | LesionReduction | None = None) -> dict[str, np.ndarray]:
        return reduce_lesion_stats(self.get_buffer(), self.reduction if reduction is None else reduction)

    def reset(self) -> None:
        self._stats.clear()


def volume_bin_columns(bins_mm3: Sequence[float] = VOLUME_BINS_MM3) -> list[tuple[str, str, str]]:
    """Per bin: ``(name, reference-count column, detected-count column)`` of the per-case rows
    (``lesion_n_ref_<bin>``, ``lesion_tp_<bin>``)."""
    return [(name, f"lesion_n_ref_{name}", f"lesion_tp_{name}") for name in volume_bin_names(bins_mm3)]


def is_lesion_count(column: str) -> bool:
    """Whether a ``lesion_*`` column of a per-case row is an integer count (the counts and the per-bin counts)."""
    name = column.removeprefix("lesion_")
    return name in COUNT_FIELDS or name.startswith(("n_ref_", "tp_"))


def is_lesion_tally(column: str) -> bool:
    """Whether a per-case column is a lesion tally (a count, a volume, a sum) rather than a per-case score: the
    report and racing never offer a tally as the metric that decides a comparison."""
    return column.startswith("lesion_") and (
        is_lesion_count(column) or column in ("lesion_volume_ref", "lesion_volume_pred", "lesion_detected_dice_sum")
    )


def pooled_volume_counts(rows: Sequence[Mapping[str, Any]]) -> dict[str, tuple[int, int]]:
    """Bin name -> ``(reference lesions, detected ones)`` summed over per-case rows (a row without the counts,
    e.g. from older results, adds nothing)."""
    return {
        name: (sum(int(r.get(n_ref) or 0) for r in rows), sum(int(r.get(tp) or 0) for r in rows))
        for name, n_ref, tp in volume_bin_columns()
    }


def pooled_recall_by_volume(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """``lesion_recall_<bin>`` of per-case rows: detected / reference lesions of the bin, summed over the cases
    first (micro, like the other pooled lesion ratios); bins without a reference lesion are left out."""
    counts = pooled_volume_counts(rows)
    return {f"lesion_recall_{name}": found / total for name, (total, found) in counts.items() if total}
