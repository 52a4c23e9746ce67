"""Post-processing of predicted label maps: small-component removal, and tuning its size on validation cases.

A run trained with ``min_component_mm3: auto`` (:mod:`medtransfer.finetune`) tunes the minimum component volume
on its validation cases (:func:`tune_min_component`: the candidate with the highest pooled lesion F1) and stores it
in its checkpoints' meta::

    ckpt["meta"]["postprocess"] = {"min_component_mm3": 40.0, "tuned_on": [...], "val_lesion_f1": {...}}

:class:`~medtransfer.infer.predictor.Predictor` applies it to every prediction (``medtransfer predict``, the grid's
cell evaluation), on the input's grid, so a size in mm³ means the same whatever the scan's voxel size.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import ConfigError

logger = logging.getLogger(__name__)

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
# meta["postprocess"] key: {"label hash dataset folder/case id": [lesion volumes, mm³]} of every case a checkpoint's
# caps were fitted to; a model fine-tuned from it offers them as its source's (source_lesion_volumes)
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
        >>> int(remove_small_components(m, 2).sum())
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
    """A label map after the stored post-processing: the connected components of its foreground (every label
    > 0 together, the lesions :func:`tune_on_validation` counted when it chose the size) smaller than
    ``postprocess["min_component_mm3"]`` become background; the labels of the others are kept as they are (a
    tumour core touching its oedema is one lesion, not two small ones).  ``None`` or a size of 0 changes
    nothing."""
    size = float((postprocess or {}).get(MIN_COMPONENT_KEY) or 0.0)
    if size <= 0:
        return labels
    foreground = labels > 0
    out = labels.copy()
    out[foreground & ~remove_small_components(foreground, min_voxels(size, spacing))] = 0
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
    return flat_volumes(lesion_volumes_by_case(dataset, case_ids))


def lesion_volumes_by_case(dataset, case_ids: Sequence[str]) -> dict[str, list[float]]:
    """:func:`lesion_volumes` per case (a case without lesions maps to ``[]``), keyed ``"{label hash}
    {dataset folder name}/{case id}"``: the form a checkpoint records (:data:`PRIOR_VOLUMES_KEY`).  The hash (the
    first 16 hex digits of SHA-256 over the lesion mask's shape, voxel size and voxels) is what identifies a scan,
    so that its lesions are counted once however many runs of a chain or members of an ensemble were trained on it,
    wherever its dataset lies, whatever it is called and however its label file is stored (``.nii`` or ``.nii.gz``,
    any dtype, a trailing axis of one); a copy on another voxel grid (reoriented, resampled) is another scan to it.
    The name is for people."""
    volumes = {}
    for case_id in case_ids:
        digest, found = _label_summary(dataset.get(case_id).label)
        volumes[f"{digest} {Path(dataset.root).name}/{case_id}"] = list(found)
    return volumes


def _label_summary(path) -> tuple[str, tuple[float, ...]]:
    """A label file's hash and lesion volumes (6 significant digits), read once per process while the file stays
    the same (inode, size, modification and change times; a run's best and last checkpoints are tuned one after the
    other)."""
    stat = Path(path).stat()
    return _cached_label_summary(
        str(Path(path).resolve()), (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    )


@functools.lru_cache(maxsize=4096)
def _cached_label_summary(path: str, version: tuple[int, ...]) -> tuple[str, tuple[float, ...]]:
    mask, spacing, digest = _lesion_mask(path)
    found = _lesion_volumes([mask], [np.prod(spacing)])
    return digest, tuple(float(f"{v:.6g}") for v in found)


def _lesion_mask(path) -> tuple[np.ndarray, np.ndarray, str]:
    """A label file's lesion mask (3D), its voxel size and its label hash (:func:`lesion_volumes_by_case`)."""
    from ..data.io import load_nifti

    label = load_nifti(path)
    mask = np.rint(label.array) > 0
    while mask.ndim > 3 and mask.shape[-1] == 1:  # (X, Y, Z, 1) is the 3D label the pipeline reads it as
        mask = mask[..., 0]
    spacing = np.asarray(label.spacing[:3], dtype=np.float64)
    digest = hashlib.sha256(repr((mask.shape, spacing.round(6).tolist())).encode() + np.packbits(mask).tobytes())
    return mask, spacing, digest.hexdigest()[:16]


def held_out_scans(dataset, case_ids: Sequence[str]) -> set[str]:
    """The label hashes (:func:`lesion_volumes_by_case`) of a run's held-out scans: ``case_ids`` (its validation and
    test scans) and the dataset's labelled held-out scans (``labelsTs``); cases without a label are skipped."""
    labels = [dataset.get(c).label for c in dict.fromkeys(case_ids)]
    labels += [c.label for c in dataset.test_cases]
    return {_label_summary(path)[0] for path in dict.fromkeys(p for p in labels if p is not None)}


_HASH_RE = re.compile(r"[0-9a-f]{16}")


def _scan_identity(key: str) -> str:
    """What identifies the scan of a :func:`lesion_volumes_by_case` key: its label hash; the whole key where it
    does not start with one (a record written by hand)."""
    first = key.split(" ", 1)[0]
    return first if _HASH_RE.fullmatch(first) else key


def flat_volumes(by_case: Mapping[str, Sequence[float]]) -> np.ndarray:
    """Every volume of a ``{case: volumes}`` mapping, in one array."""
    values = [v for volumes in by_case.values() for v in volumes]
    return np.asarray(values, dtype=np.float64)


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


def recorded_lesion_volumes(postprocess: Any) -> dict[str, list[float]] | None:
    """The ``{case: lesion volumes}`` a tuned ``meta["postprocess"]`` records (:data:`PRIOR_VOLUMES_KEY`: every
    lesion its caps were fitted to), ``None`` where it records none or something else (then nothing is pooled)."""
    values = postprocess.get(PRIOR_VOLUMES_KEY) if isinstance(postprocess, dict) else None
    if not isinstance(values, dict) or not values:
        return None
    by_case = {}
    for case, volumes in values.items():
        if not isinstance(case, str) or not isinstance(volumes, list | tuple):
            return None
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in volumes):
            return None
        if not all(math.isfinite(v) and v > 0 for v in volumes):
            return None
        by_case[case] = [float(v) for v in volumes]
    return by_case


def source_lesion_volumes(checkpoint: Any) -> dict[str, list[float]] | None:
    """:func:`recorded_lesion_volumes` of a source checkpoint; ``None`` where it records none (a source trained
    before 2026-12-07, a brain-mask or anatomy model, a zoo network) or its meta is not what a run writes."""
    meta = checkpoint.get("meta") if isinstance(checkpoint, dict) else None
    return recorded_lesion_volumes(meta.get("postprocess") if isinstance(meta, dict) else None)


def _smallest_two_sided_p(n1: int, n2: int) -> float:
    """The smallest p a two-sided Mann-Whitney U test of ``n1`` against ``n2`` values can give (complete
    separation, no ties): ``2 / C(n1 + n2, n1)``, through log-gamma (the binomial of thousands of lesions overflows
    a float)."""
    log_comb = math.lgamma(n1 + n2 + 1) - math.lgamma(n1 + 1) - math.lgamma(n2 + 1)
    return round(min(1.0, 2.0 * math.exp(-log_comb)), 12)  # the same on every libm at a boundary such as 2 / 40


def lesion_size_prior(
    training: Mapping[str, Sequence[float]],
    source: Mapping[str, Sequence[float]] | None = None,
    mode: str = "auto",
    held_out: Collection[str] = (),
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """The lesion volumes the caps are fitted to, per case, and where they came from.

    With one lesion per scan (a stroke target) a few training scans give bounds that swing with the draw (six
    strokes: free sizes of 6 to 435 mm³ over four draws of the same law); the source a model was fine-tuned from
    was trained on many more lesions, and where they are of the same kind (a public stroke set for a stroke target)
    they pin the bounds down.  Both are ``{case: volumes}`` (:func:`lesion_volumes_by_case`); a source scan that is
    also a training scan (the same label hash: a chain of fine-tunes on one dataset, an ensemble's members) is
    counted once, as a training scan, and so is a scan the source lists twice.  A source scan whose label hash is
    in ``held_out`` (this run's validation or test scans, :func:`held_out_scans`: a source trained on them, as a
    chain on one dataset with another split can be) is left out, so that no held-out lesion size feeds the caps;
    scans the run merely does not use (another domain's, outside the label budget) still count.
    ``mode``:

    * ``target``: the training lesions alone;
    * ``pooled``: the training lesions and the source's together, untested;
    * ``auto``: pooled where a two-sided Mann-Whitney U test of the training against the source volumes does not
      find them of different sizes (p >= :data:`PRIOR_AGREEMENT_ALPHA`; an MS source for a stroke target, or the
      reverse, differs by an order of magnitude).  Where the test cannot reach that level at all (too few training
      lesions: with none, or 2 against 7 or fewer, even complete separation gives p >= 0.05; a slice budget has
      none), nothing is pooled: a source of another kind would go unnoticed.

    Returns:
        ``(volumes, record)``; ``record``: ``{"mode", "training_lesions", "source_lesions" (offered, not counting
        shared or held-out scans), "source_scans_shared", "source_pooled", "agreement_p"}`` (``agreement_p``
        ``None`` where no test ran), ``"source_scans_held_out"`` where some were left out, and, where ``auto`` did
        not pool, ``"why"``.

    Example:
        >>> v, r = lesion_size_prior({"h1 d/a": [300.0, 900.0]}, {"h2 d/b": [200.0, 500.0], "h3 d/c": [4000.0]})
        >>> sorted(v), r["source_lesions"], r["source_pooled"]
        (['h1 d/a'], 3, False)
        >>> r["why"]
        '2 training and 3 source lesion(s): too few for a Mann-Whitney test to reach p < 0.05'
    """
    training = {case: list(volumes) for case, volumes in training.items()}
    seen = {_scan_identity(case) for case in training}
    offered, shared, withheld = {}, 0, 0
    for case, volumes in (source or {}).items():
        if _scan_identity(case) in seen:  # a scan the training set (or an earlier source entry) already holds
            shared += 1
            continue
        seen.add(_scan_identity(case))
        if _scan_identity(case) in held_out:
            withheld += 1
            continue
        offered[case] = list(volumes)
    ours, theirs = flat_volumes(training), flat_volumes(offered)
    record: dict[str, Any] = {
        "mode": mode,
        "training_lesions": int(ours.size),
        "source_lesions": int(theirs.size),
        "source_scans_shared": shared,
        "source_pooled": False,
        "agreement_p": None,
    }
    if withheld:
        record["source_scans_held_out"] = withheld
    if mode == "target" or not theirs.size:
        return training, record
    if mode == "auto":
        if not ours.size:
            record["why"] = "no training lesions to test the source's against (a slice budget, or no lesions)"
            return training, record
        if _smallest_two_sided_p(ours.size, theirs.size) >= PRIOR_AGREEMENT_ALPHA:
            record["why"] = (
                f"{ours.size} training and {theirs.size} source lesion(s): too few for a Mann-Whitney test to reach "
                f"p < {PRIOR_AGREEMENT_ALPHA:g}"
            )
            return training, record
        from scipy import stats

        p = float(stats.mannwhitneyu(ours, theirs, alternative="two-sided").pvalue)
        record["agreement_p"] = p
        if p < PRIOR_AGREEMENT_ALPHA:
            record["why"] = (
                f"the source's lesions differ in size (median {_mm3(np.median(theirs))} against "
                f"{_mm3(np.median(ours))} in training; Mann-Whitney p = {p:.2g})"
            )
            return training, record
    record["source_pooled"] = True
    return {**training, **offered}, record


def _mm3(volume: float) -> str:
    return f"{volume:.0f} mm³" if volume >= 100 else f"{volume:.3g} mm³"


def log_lesion_prior(record: dict[str, Any], source_given: bool = False, hint: str = "min_component_prior") -> None:
    """Say which lesion volumes bound the minimum component size (a :func:`lesion_size_prior` record);
    ``source_given``: the model was fine-tuned from a checkpoint (or is an ensemble of such); ``hint``: the option
    that would pool anyway (``""``: none to name)."""
    training, offered = record["training_lesions"], record["source_lesions"]
    shared = record.get("source_scans_shared", 0)
    if record.get("source_scans_held_out"):
        logger.info(
            "minimum-component caps: %d of the source's scans are validation or test scans here; their lesions "
            "are left out",
            record["source_scans_held_out"],
        )
    if record["source_pooled"]:
        logger.info("minimum-component caps: %d training lesion(s) and %d of the source's", training, offered)
    elif record.get("why"):  # auto declined the source's lesions
        logger.warning(
            "minimum-component caps: the training lesions alone (%d), not the source's %d: %s%s",
            training,
            offered,
            record["why"],
            f" ({hint}: pooled takes both)" if hint else "",
        )
    elif shared and not offered:
        logger.info(
            "minimum-component caps: %d training lesion(s); all %d of the source's scans are training scans here",
            training,
            shared,
        )
    elif source_given and not offered and record["mode"] != "target":
        logger.info(
            "minimum-component caps: %d training lesion(s); the source records no lesion volumes of its scans "
            "(trained by an earlier version, without min_component_mm3: auto, or not on lesions)",
            training,
        )
    elif training or offered:
        logger.info("minimum-component caps: %d training lesion(s)", training)
    else:
        logger.info("minimum-component caps: none (no whole labelled scans with lesions)")


def tune_min_component(
    preds: Sequence[np.ndarray],
    refs: Sequence[np.ndarray],
    voxel_volume_mm3: float | Sequence[float],
    candidates: Sequence[int] = CANDIDATE_VOXELS,
    iou_threshold: float | None = None,
    max_mm3: float | None = None,
    evidence_max_mm3: float | None = None,
) -> tuple[float, dict[str, float]]:
    """The minimum component volume (mm³) that maximises the pooled lesion F1 of ``preds`` against ``refs``.

    Args:
        preds, refs: binary masks of the validation cases (one array per case).
        voxel_volume_mm3: the volume of one voxel of these masks, or one per case (scans of other spacings).
        candidates: minimum sizes to try, in voxels of the first case; each case removes its components smaller
            than the same volume in mm³ at its own voxel volume, as :func:`apply_postprocess` does at prediction.
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
    if np.ndim(voxel_volume_mm3) == 0:
        voxel_volume_mm3 = [float(voxel_volume_mm3)] * len(preds)
    units = [float(v) for v in voxel_volume_mm3]
    if len(units) != len(preds):
        raise ValueError(f"{len(units)} voxel volumes for {len(preds)} cases")
    unit = units[0] if units else 1.0
    components = [component_sizes(p) for p in preds]  # each candidate keeps the components >= it of one labelling
    scores: dict[str, float] = {}
    for voxels in sorted(candidates):
        volume = round(voxels * unit, 3)
        stats = LesionStats.concatenate(
            [
                compute_lesion_detection(
                    # the stored volume at this case's voxel volume, as apply_postprocess will apply it
                    _case(keep_components(labels, sizes, voxels if v == unit else volume / v)),
                    _case(r),
                    iou_threshold=iou,
                )
                for (labels, sizes), r, v in zip(components, refs, units, strict=True)
            ]
        )
        f1 = float(reduce_lesion_stats(stats, "micro")["f1"][0])
        scores[f"{volume:g}"] = 0.0 if not math.isfinite(f1) else f1
    allowed = scores
    if max_mm3 is None:  # no training lesions to go by: the first candidates only (see evidence_max_mm3 above)
        largest = round(SHORT_CANDIDATE_VOXELS[-1] * unit, 3)
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
    source_volumes_mm3: Mapping[str, Sequence[float]] | None = None,
    prior: str = "auto",
    test_ids: Sequence[str] = (),
) -> dict[str, Any]:
    """The post-processing a model should store, tuned on validation cases: ``meta["postprocess"]``.

    ``predict(channels)`` labels one case (its volumes, as :meth:`~medtransfer.infer.predictor.Predictor.predict`
    takes them) *without* post-processing; :func:`tune_min_component` then picks the size with the highest pooled
    lesion F1 on ``val_ids`` at or below the free size of the lesion volumes (those of the ``train_ids`` labels,
    with the source's where :func:`lesion_size_prior` pools them; :func:`volume_caps`), or up to their 20 %
    prediction bound where the validation F1 is strictly higher there.  One routine for a
    run's checkpoints (:func:`medtransfer.finetune.segment.tune_postprocess`) and for an ensemble
    (:mod:`medtransfer.infer.ensemble`), so both mean the same by ``min_component_mm3: auto``.

    Without ``val_ids`` (every labelled scan trained; ``predict`` is not called) the size is the free size itself,
    the prior alone (a validation set that cannot tell the candidates apart gives the largest one at or below it);
    0 with fewer than two lesions.

    ``source_volumes_mm3``: the ``{case: volumes}`` the source checkpoint's caps came from
    (:func:`source_lesion_volumes`), pooled with the training lesions as ``prior`` says (:func:`lesion_size_prior`),
    without those of this run's held-out scans: ``val_ids``, ``test_ids`` and the dataset's labelled held-out scans
    (:func:`held_out_scans`).

    Returns:
        ``{"min_component_mm3", "tuned_on", "val_lesion_f1", "max_mm3_from_training_lesions",
        "max_mm3_if_validation_better", "lesion_prior", PRIOR_VOLUMES_KEY}``: the free size and the evidence cap
        (``None`` with fewer than two lesions; the keys say "training lesions" and include the source's where they
        were pooled), the :func:`lesion_size_prior` record, and the ``{case: volumes}`` the caps came from (6
        significant digits), which a model fine-tuned from this one offers as its source's.
    """
    from ..data.io import load_nifti

    held_out = set()
    if source_volumes_mm3 and prior != "target":  # no held-out lesion size may feed the caps
        held_out = held_out_scans(dataset, [*val_ids, *test_ids])
    by_case, record = lesion_size_prior(lesion_volumes_by_case(dataset, train_ids), source_volumes_mm3, prior, held_out)
    # rounded once, so that the stored caps reproduce the choice made with them
    cap, evidence_cap = (None if c is None else round(c, 3) for c in volume_caps(flat_volumes(by_case)))
    caps = {
        "max_mm3_from_training_lesions": cap,
        "max_mm3_if_validation_better": evidence_cap,
        "lesion_prior": record,
        PRIOR_VOLUMES_KEY: by_case,
    }
    if not val_ids:  # nothing to tune on: the training labels' prior alone
        return {MIN_COMPONENT_KEY: 0.0 if cap is None else cap, "tuned_on": [], "val_lesion_f1": {}, **caps}
    cases = [dataset.get(c) for c in val_ids]
    refs = [load_nifti(c.label) for c in cases]
    preds = []
    for case in cases:
        volumes = [load_nifti(p, dtype="float32") for p in case.images]
        preds.append(predict(volumes if len(volumes) > 1 else volumes[0]) > 0)
    volumes = [float(np.prod(r.spacing[:3])) for r in refs]  # each scan at its own voxel size
    refs = [np.rint(r.array) > 0 for r in refs]
    size, scores = tune_min_component(preds, refs, volumes, max_mm3=cap, evidence_max_mm3=evidence_cap)
    return {MIN_COMPONENT_KEY: size, "tuned_on": list(val_ids), "val_lesion_f1": scores, **caps}
