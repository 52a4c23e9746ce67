"""Post-processing of predicted label maps: small-component removal, and tuning its size on validation cases.

A run trained with ``min_component_mm3: auto`` (:mod:`medtransfer.finetune`) tunes the minimum component volume
on its validation cases (:func:`tune_min_component`: the candidate with the highest pooled lesion F1) and stores it
in its checkpoints' meta::

    ckpt["meta"]["postprocess"] = {"min_component_mm3": 40.0, "tuned_on": [...], "val_lesion_f1": {...}}

:class:`~medtransfer.infer.predictor.Predictor` applies it to every prediction (``medtransfer predict``, the grid's
cell evaluation), on the input's grid, so a size in mm³ means the same whatever the scan's voxel size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import ConfigError

CONNECTIVITY = 26  # the lesion metrics' default (metrics/lesions.py): a component is what they count as a lesion
MIN_COMPONENT_KEY = "min_component_mm3"
# Candidate minimum sizes, in voxels of the validation scans (converted to mm³ with their voxel volume), about 1.6x
# apart.  They run to 20000 voxels (20 ml at 1 mm) so that the caps from the training lesions, not the list, bound
# the choice: a list that stopped at 120 voxels (0.12 ml at 1 mm, 3 ml at 3 mm) was the chosen size of every 1 mm
# stroke run, with the validation F1 still rising there.  Sizes above the caps are scored, never chosen.
# SHORT_CANDIDATE_VOXELS is that earlier list (benchmarks/min_component_rules.py re-scores it against this one).
SHORT_CANDIDATE_VOXELS = (0, 2, 3, 5, 8, 12, 20, 30, 50, 80, 120)
CANDIDATE_VOXELS = SHORT_CANDIDATE_VOXELS + (200, 300, 500, 800, 1200, 2000, 3000, 5000, 8000, 12000, 20000)
# Above the free size (half the volume a new lesion falls under with probability 5 %, from the training lesions), a
# validation set may remove components up to the volume a new lesion falls under with probability 20 %, and only
# where its lesion F1 is strictly higher (prediction_bound).
EVIDENCE_PERCENTILE = 20.0
# Where the caps' lesion volumes come from (lesion_size_prior): the training lesions alone, or with the source's.
LESION_PRIOR_CHOICES = ("auto", "target", "pooled")
PRIOR_AGREEMENT_ALPHA = 0.05
# meta["postprocess"] key: every lesion volume (mm³) a checkpoint's caps were fitted to; a model fine-tuned from it
# takes them as its source's (source_lesion_volumes)
PRIOR_VOLUMES_KEY = "prior_lesion_volumes_mm3"


def _structure(spatial_dims: int) -> np.ndarray:
    return np.ones((3,) * spatial_dims, dtype=bool)


def component_sizes(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """26-connected (8 in 2D) components of ``mask``: ``(labels, sizes)``; ``sizes[i]`` is component ``i + 1``'s
    voxel count."""
    labels, count = ndimage.label(np.asarray(mask, dtype=bool), _structure(np.ndim(mask)))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    return labels, sizes


def remove_small_components(mask: np.ndarray, min_voxels: float) -> np.ndarray:
    """``mask`` without its connected components of fewer than ``min_voxels`` voxels.

    Example:
        >>> m = np.zeros((6, 6), bool); m[0, 0] = True; m[3:5, 3:5] = True
        >>> remove_small_components(m, 2).sum()
        4
    """
    mask = np.asarray(mask, dtype=bool)
    if min_voxels <= 1 or not mask.any():
        return mask
    return keep_components(*component_sizes(mask), min_voxels)


def keep_components(labels: np.ndarray, sizes: np.ndarray, min_voxels: float) -> np.ndarray:
    """The mask of the components of ``(labels, sizes)`` (:func:`component_sizes`) of ``min_voxels`` voxels or more
    (every component for ``min_voxels <= 1``, as :func:`remove_small_components`)."""
    keep = np.concatenate([[False], sizes >= min_voxels])  # every component has a voxel: <= 1 keeps them all
    return keep[labels]


def min_voxels(min_mm3: float, spacing: Sequence[float]) -> float:
    """A volume in mm³ as a voxel count at ``spacing`` (mm)."""
    return float(min_mm3) / float(np.prod([float(s) for s in spacing]))


def apply_postprocess(labels: np.ndarray, spacing: Sequence[float], postprocess: dict[str, Any] | None) -> np.ndarray:
    """A label map after the stored post-processing: each foreground label loses its components smaller than
    ``postprocess["min_component_mm3"]`` (they become background).  ``None`` or a size of 0 changes nothing."""
    size = float((postprocess or {}).get(MIN_COMPONENT_KEY) or 0.0)
    if size <= 0:
        return labels
    threshold = min_voxels(size, spacing)
    out = labels.copy()
    for value in np.unique(labels):
        if value == 0:
            continue
        mask = labels == value
        out[mask & ~remove_small_components(mask, threshold)] = 0
    return out


def _case(mask: np.ndarray) -> np.ndarray:
    return np.asarray(mask, dtype=bool)[None, None]


def check_min_component(value: Any, name: str = "min_component_mm3") -> float | str | None:
    """The option: ``None`` (off), ``"auto"`` (tuned on validation) or a volume in mm³ >= 0.

    Raises:
        ConfigError: anything else.
    """
    if value is None or (isinstance(value, str) and value.lower() == "auto"):
        return None if value is None else "auto"
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number < 0:
        raise ConfigError(f"{name} must be 'auto', null or a volume in mm³ >= 0, got {value!r}")
    return number


def _lesion_volumes(labels: Sequence[np.ndarray], voxel_volumes_mm3: Sequence[float]) -> np.ndarray:
    """Volumes (mm³) of the 26-connected foreground components of ``labels``, each in its own scan's voxels."""
    volumes = [component_sizes(mask)[1] * float(v) for mask, v in zip(labels, voxel_volumes_mm3, strict=True)]
    return np.concatenate(volumes) if volumes else np.zeros(0)


def lesion_size_cap(
    labels: Sequence[np.ndarray], voxel_volumes_mm3: Sequence[float], percentile: float = 5.0, factor: float = 0.5
) -> float | None:
    """A minimum component size (mm³) from the training labels: ``factor`` times :func:`prediction_bound` of their
    lesion volumes (26-connected components of the foreground, each measured in its own scan's voxels).

    The default, half the bound under which a new lesion falls with probability 5 %, is the size below which removal
    is free: removing larger components would delete true lesions (the factor two allows for under-segmented
    ones); below it, removal can only trade noise.  :data:`EVIDENCE_PERCENTILE` (``factor=1``) is the most that a
    validation set's evidence may remove (:func:`tune_min_component`).  ``None`` with fewer than two lesions.
    """
    return prediction_bound(_lesion_volumes(labels, voxel_volumes_mm3), percentile, factor)


def prediction_bound(volumes_mm3: np.ndarray, percentile: float = 5.0, factor: float = 1.0) -> float | None:
    """``factor`` times the volume under which a *new* lesion falls with probability ``percentile`` %, from the
    volumes of ``n`` training lesions: the lower prediction bound of a log-normal model,
    ``exp(m - t_{n-1, 1-p} * s * sqrt(1 + 1/n))`` with ``m``, ``s`` the mean and standard deviation of the log
    volumes (Student's t: ``s`` is estimated).  ``None`` with fewer than two lesions (no spread to go by).

    The plain percentile of a handful of lesions is no such bound: with one lesion per scan and 6 training scans
    (a stroke target), half the 5th percentile of their volumes lies above about a tenth of the lesions of the
    same law on average (Monte Carlo, log-uniform 0.3-150 ml), where this bound keeps the expected share under 2 %;
    with many lesions (MS) the two are close where the log volumes are near normal.  Lesions of one scan are not
    independent draws, so ``n`` overstates the evidence somewhat when a few scans hold many lesions.

    Example:
        >>> round(prediction_bound(np.exp([1.0, 3.0, 5.0]), 5.0), 4)  # m 3, s 2, t_{2, 0.95} 2.92
        0.0237
    """
    from scipy import stats

    volumes = np.asarray(volumes_mm3, dtype=np.float64)
    volumes = volumes[np.isfinite(volumes) & (volumes > 0)]
    n = volumes.size
    if n < 2:
        return None
    logs = np.log(volumes)
    if np.ptp(logs) == 0:  # one volume: no spread, the bound is that volume (exactly, not exp(log(v)))
        return factor * float(volumes[0])
    t = float(stats.t.ppf(1.0 - percentile / 100.0, n - 1))
    spread = float(logs.std(ddof=1)) * math.sqrt(1.0 + 1.0 / n)
    bound = factor * float(np.exp(logs.mean() - t * spread))
    return bound if math.isfinite(bound) else None


def lesion_volumes(dataset, case_ids: Sequence[str]) -> np.ndarray:
    """Volumes (mm³) of the lesions (26-connected foreground components) of the ``case_ids`` labels of
    ``dataset``, each in its own scan's voxels."""
    from ..data.io import load_nifti

    labels = [load_nifti(dataset.get(c).label) for c in case_ids]
    return _lesion_volumes([np.rint(t.array) > 0 for t in labels], [np.prod(t.spacing[:3]) for t in labels])


def training_lesion_caps(dataset, train_ids: Sequence[str]) -> tuple[float | None, float | None]:
    """``(free size, evidence cap)`` of the ``train_ids`` labels of ``dataset`` (:func:`lesion_size_cap` with its
    defaults and with :data:`EVIDENCE_PERCENTILE`), their components counted once; ``None`` with fewer than two
    lesions."""
    return volume_caps(lesion_volumes(dataset, train_ids))


def volume_caps(volumes_mm3: np.ndarray) -> tuple[float | None, float | None]:
    """``(free size, evidence cap)`` of lesion volumes: half their 5 % and their :data:`EVIDENCE_PERCENTILE`
    :func:`prediction_bound`; ``None`` with fewer than two lesions."""
    return prediction_bound(volumes_mm3, 5.0, 0.5), prediction_bound(volumes_mm3, EVIDENCE_PERCENTILE, 1.0)


def check_lesion_prior(value: Any, name: str = "min_component_prior") -> str:
    """``value`` as one of :data:`LESION_PRIOR_CHOICES` (case-insensitive).

    Raises:
        ConfigError: anything else.
    """
    text = str(value).strip().lower() if isinstance(value, str) else None
    if text not in LESION_PRIOR_CHOICES:
        raise ConfigError(f"{name} must be one of {', '.join(LESION_PRIOR_CHOICES)}, got {value!r}")
    return text


def source_lesion_volumes(checkpoint: dict[str, Any] | None) -> np.ndarray | None:
    """The lesion volumes (mm³) a source checkpoint's own caps were fitted to (``meta["postprocess"]``
    :data:`PRIOR_VOLUMES_KEY`, recorded by :func:`tune_on_validation`); ``None`` where it records none (a source
    trained before 2026-12-07, a brain-mask or anatomy model, a zoo network) or holds something else."""
    post = ((checkpoint or {}).get("meta") or {}).get("postprocess") or {}
    values = post.get(PRIOR_VOLUMES_KEY) if isinstance(post, dict) else None
    if not isinstance(values, list | tuple) or not values:
        return None
    try:
        volumes = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return volumes if volumes.ndim == 1 and np.all(np.isfinite(volumes) & (volumes > 0)) else None


def pooled_source_volumes(postprocess: dict[str, Any]) -> np.ndarray | None:
    """The source lesion volumes a tuned ``meta["postprocess"]`` pooled with its training lesions (the part of
    :data:`PRIOR_VOLUMES_KEY` after the training ones), ``None`` where it pooled none: what an ensemble of such
    runs offers :func:`lesion_size_prior` as its source's."""
    record = postprocess.get("lesion_prior") if isinstance(postprocess, dict) else None
    if not isinstance(record, dict) or not record.get("source_pooled"):
        return None
    volumes = source_lesion_volumes({"meta": {"postprocess": postprocess}})
    start = record.get("training_lesions")
    if volumes is None or not isinstance(start, int) or not 0 <= start < volumes.size:
        return None
    return volumes[start:]


def lesion_size_prior(
    training_mm3: np.ndarray, source_mm3: np.ndarray | None = None, mode: str = "auto"
) -> tuple[np.ndarray, dict[str, Any]]:
    """The lesion volumes the caps are fitted to, and where they came from.

    With one lesion per scan (a stroke target) a few training scans give bounds that swing with the draw (six
    strokes: free sizes of 6 to 435 mm³ over four draws of the same law); the source a model was fine-tuned from
    was trained on many more lesions, and where they are of the same kind (a public stroke set for a stroke target)
    they pin the bounds down.  ``mode``:

    * ``target``: the training lesions alone;
    * ``pooled``: the training lesions and the source's (``source_mm3``) together;
    * ``auto``: pooled, unless the two are of different sizes: a two-sided Mann-Whitney U test of the training
      against the source volumes at :data:`PRIOR_AGREEMENT_ALPHA` (with two or more training lesions; an MS source
      for a stroke target, or the reverse, differs by an order of magnitude and is refused), then the training
      lesions alone.

    Returns:
        ``(volumes, record)``; ``record``: ``{"mode", "training_lesions", "source_lesions" (offered),
        "source_pooled", "agreement_p"}`` (``agreement_p`` ``None`` where no test ran).

    Example:
        >>> v, r = lesion_size_prior(np.array([300.0, 900.0]), np.array([200.0, 500.0, 4000.0]))
        >>> v.size, r["source_pooled"], round(r["agreement_p"], 2)
        (5, True, 1.0)
    """
    training = np.asarray(training_mm3, dtype=np.float64).ravel()
    source = np.zeros(0) if source_mm3 is None else np.asarray(source_mm3, dtype=np.float64).ravel()
    record: dict[str, Any] = {
        "mode": mode,
        "training_lesions": int(training.size),
        "source_lesions": int(source.size),
        "source_pooled": False,
        "agreement_p": None,
    }
    if mode == "target" or not source.size:
        return training, record
    if mode == "auto" and training.size >= 2:
        from scipy import stats

        p = float(stats.mannwhitneyu(training, source, alternative="two-sided").pvalue)
        record["agreement_p"] = round(p, 6)
        if p < PRIOR_AGREEMENT_ALPHA:
            return training, record
    record["source_pooled"] = True
    return np.concatenate([training, source]), record


def tune_min_component(
    preds: Sequence[np.ndarray],
    refs: Sequence[np.ndarray],
    voxel_volume_mm3: float,
    candidates: Sequence[int] = CANDIDATE_VOXELS,
    iou_threshold: float | None = None,
    max_mm3: float | None = None,
    evidence_max_mm3: float | None = None,
) -> tuple[float, dict[str, float]]:
    """The minimum component volume (mm³) that maximises the pooled lesion F1 of ``preds`` against ``refs``.

    Args:
        preds, refs: binary masks of the validation cases (one array per case).
        voxel_volume_mm3: the volume of one voxel of these masks.
        candidates: minimum sizes to try, in voxels.
        iou_threshold: the lesion-matching rule (:func:`medtransfer.metrics.lesions.compute_lesion_detection`;
            default :data:`~medtransfer.metrics.lesions.DEFAULT_LESION_IOU`).
        max_mm3: the free size (:func:`lesion_size_cap` of the training labels: half the 5 % prediction bound of
            their lesion volumes).  With it, several sizes tied at the best F1 at or below it (a validation set
            that cannot tell them apart: two scans holding a few large lesions, or no lesion found at all) give the
            largest of them: between them the training labels' prior is the only evidence, and it says true lesions
            are larger.  Without a cap the smallest tied size is kept.
        evidence_max_mm3: the most the validation evidence may remove (the training labels' 20 % bound,
            :data:`EVIDENCE_PERCENTILE`).  A candidate above ``max_mm3`` and at most this is chosen only when its
            F1 is *strictly* higher than every allowed one at or below ``max_mm3`` (each step above the free size
            deletes true lesions of the training kind, so a tie does not pay for it; of those tied above, the
            smallest).  Where training lesions are one or two voxels at the working grid (MS at 1.5-3 mm), the
            free size is under a voxel and this is what lets a validation set that is full of one-voxel false
            positives remove them.  ``None``: nothing above ``max_mm3``.  Larger candidates are scored
            (reported) but never chosen.  Without ``max_mm3`` (fewer than two training lesions, or a slice budget:
            no lesion volumes to go by) the choice stays within :data:`SHORT_CANDIDATE_VOXELS` (up to 120 voxels):
            two validation scans alone once chose 160 mm³ and deleted every test stroke under 1 ml.

    Returns:
        ``(min_mm3, f1_by_candidate)``: the chosen size (lesion counts summed over the cases before the ratio;
        ties as above), and the F1 of every candidate keyed by its volume in mm³.
    """
    from ..metrics.lesions import DEFAULT_LESION_IOU, LesionStats, compute_lesion_detection, reduce_lesion_stats

    iou = DEFAULT_LESION_IOU if iou_threshold is None else iou_threshold
    components = [component_sizes(p) for p in preds]  # each candidate keeps the components >= it of one labelling
    scores: dict[str, float] = {}
    for voxels in sorted(candidates):
        stats = LesionStats.concatenate(
            [
                compute_lesion_detection(_case(keep_components(labels, sizes, voxels)), _case(r), iou_threshold=iou)
                for (labels, sizes), r in zip(components, refs, strict=True)
            ]
        )
        f1 = float(reduce_lesion_stats(stats, "micro")["f1"][0])
        volume = round(voxels * voxel_volume_mm3, 3)
        scores[f"{volume:g}"] = 0.0 if not math.isfinite(f1) else f1
    allowed = scores
    if max_mm3 is None:  # no training lesions to go by: the first candidates only (see evidence_max_mm3 above)
        largest = round(SHORT_CANDIDATE_VOXELS[-1] * voxel_volume_mm3, 3)
        allowed = {key: f1 for key, f1 in scores.items() if float(key) <= largest}
    return choose_min_component(allowed, max_mm3, evidence_max_mm3), scores


def choose_min_component(
    scores: dict[str, float], max_mm3: float | None = None, evidence_max_mm3: float | None = None
) -> float:
    """The size :func:`tune_min_component` chooses from the validation F1 of each candidate (``scores``: F1 keyed by
    the volume in mm³, as ``meta["postprocess"]["val_lesion_f1"]`` stores it), the free size ``max_mm3`` and the
    evidence cap ``evidence_max_mm3`` (the rules: :func:`tune_min_component`)."""
    sizes = sorted((float(k), float(f1)) for k, f1 in scores.items())
    free = [(v, f1) for v, f1 in sizes if max_mm3 is None or v <= max_mm3]
    best_f1 = max((f1 for _, f1 in free), default=-1.0)
    tied = [v for v, f1 in free if f1 == best_f1] or [0.0]
    # with a cap, ties go to the larger size (the training lesions say true lesions are larger than the cap)
    best = max(tied) if max_mm3 is not None else min(tied)
    if max_mm3 is not None and evidence_max_mm3 is not None:
        better = [(v, f1) for v, f1 in sizes if max_mm3 < v <= evidence_max_mm3 and f1 > best_f1]
        if better:
            top = max(f1 for _, f1 in better)
            best = min(v for v, f1 in better if f1 == top)
    return best


def tune_on_validation(
    predict,
    dataset,
    val_ids: Sequence[str],
    train_ids: Sequence[str] = (),
    source_volumes_mm3: np.ndarray | None = None,
    prior: str = "auto",
) -> dict[str, Any]:
    """The post-processing a model should store, tuned on validation cases: ``meta["postprocess"]``.

    ``predict(channels)`` labels one case (its volumes, as :meth:`~medtransfer.infer.predictor.Predictor.predict`
    takes them) *without* post-processing; :func:`tune_min_component` then picks the size with the highest pooled
    lesion F1 on ``val_ids`` at or below the free size of the ``train_ids`` labels (:func:`lesion_size_cap`), or
    up to their 20 % prediction bound where the validation F1 is strictly higher there.  One routine for a
    run's checkpoints (:func:`medtransfer.finetune.segment.tune_postprocess`) and for an ensemble
    (:mod:`medtransfer.infer.ensemble`), so both mean the same by ``min_component_mm3: auto``.

    Without ``val_ids`` (every labelled scan trained; ``predict`` is not called) the size is the free size itself,
    the prior alone (a validation set that cannot tell the candidates apart gives the largest one at or below it);
    0 with fewer than two training lesions.

    ``source_volumes_mm3``: the lesion volumes the source checkpoint's caps came from
    (:func:`source_lesion_volumes`), pooled with the training lesions as ``prior`` says (:func:`lesion_size_prior`).

    Returns:
        ``{"min_component_mm3", "tuned_on", "val_lesion_f1", "max_mm3_from_training_lesions",
        "max_mm3_if_validation_better", "lesion_prior", PRIOR_VOLUMES_KEY}`` (the free size and the evidence cap,
        ``None`` with fewer than two lesions; where the lesion volumes came from; the volumes themselves, 0.1 mm³,
        which a model fine-tuned from this one pools as its source's).
    """
    from ..data.io import load_nifti

    volumes, record = lesion_size_prior(lesion_volumes(dataset, train_ids), source_volumes_mm3, prior)
    # rounded once, so that the stored caps reproduce the choice made with them
    cap, evidence_cap = (None if c is None else round(c, 3) for c in volume_caps(volumes))
    caps = {
        "max_mm3_from_training_lesions": cap,
        "max_mm3_if_validation_better": evidence_cap,
        "lesion_prior": record,
        PRIOR_VOLUMES_KEY: [round(float(v), 1) for v in volumes],
    }
    if not val_ids:  # nothing to tune on: the training labels' prior alone
        return {MIN_COMPONENT_KEY: 0.0 if cap is None else cap, "tuned_on": [], "val_lesion_f1": {}, **caps}
    cases = [dataset.get(c) for c in val_ids]
    refs = [load_nifti(c.label) for c in cases]
    preds = []
    for case in cases:
        volumes = [load_nifti(p, dtype="float32") for p in case.images]
        preds.append(predict(volumes if len(volumes) > 1 else volumes[0]) > 0)
    volume = float(np.prod(refs[0].spacing[:3]))
    refs = [np.rint(r.array) > 0 for r in refs]
    size, scores = tune_min_component(preds, refs, volume, max_mm3=cap, evidence_max_mm3=evidence_cap)
    return {MIN_COMPONENT_KEY: size, "tuned_on": list(val_ids), "val_lesion_f1": scores, **caps}
