"""Whole-scan prediction: the run's preprocessing, sliding-window inference, restore onto the input grid.

A run's checkpoint carries everything needed (written by :func:`medtransfer.finetune.run_finetune`)::

    ckpt["model"]              {"name": ..., "config": {...}}        -> create_model(name, **config)
    ckpt["meta"]["preprocess"] PreprocessConfig.to_dict()
    ckpt["meta"]["labels"]     {"background": 0, "brain": 1, ...}    (nnU-Net dataset.json spelling)
    ckpt["meta"]["inference"]  {"slice_axis": 2, "patch_size": [...], "overlap": 0.5, "divisor": 32,
                                "context": 1, "mirror": true,     (2.5D neighbours, test-time mirroring,
                                "symmetry": true}                  a mirror channel: medtransfer.data.symmetry)
    ckpt["meta"]["postprocess"] {"min_component_mm3": 40.0, ...}   (:mod:`.postprocess`)

A brain mask (labels exactly ``{"background": 0, "brain": 1}``) is post-processed as brain-extraction tools do
(HD-BET, deepbet): its largest connected component, holes filled (:func:`brain_mask_postprocess`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..checkpoint import load_checkpoint, missing_checkpoint_hint
from ..data.io import Volume
from ..data.preprocess import PreprocessConfig, preprocess_case, restore_to_input, split_channels
from ..data.symmetry import add_mirror_channels
from ..errors import ConfigError, DataError
from ..train.precision import PrecisionPlan, model_to_plan, resolve_device, resolve_precision
from .postprocess import apply_postprocess
from .sliding_window import predict_patches, predict_slices

if TYPE_CHECKING:
    from .ensemble import Ensemble

logger = logging.getLogger(__name__)

CHECKPOINT_NAMES = ("checkpoint_best.pt", "checkpoint_last.pt", "checkpoint.pt")
BRAIN_MASK_LABELS = {"background": 0, "brain": 1}


def brain_mask_postprocess(mask: np.ndarray) -> np.ndarray:
    """The largest 6-connected component of a binary mask, its holes filled (same shape, boolean)."""
    from scipy import ndimage

    components, count = ndimage.label(mask > 0)
    if count == 0:
        return np.zeros(mask.shape, dtype=bool)
    sizes = np.bincount(components.ravel())[1:]
    return ndimage.binary_fill_holes(components == 1 + int(sizes.argmax()))


def predict_volume(
    model: nn.Module,
    image: np.ndarray | torch.Tensor,
    *,
    spatial_dims: int = 2,
    slice_axis: int = 2,
    patch_size: tuple[int, int, int] | None = None,
    overlap: float = 0.5,
    divisor: int = 32,
    batch_size: int | None = None,
    plan: PrecisionPlan | None = None,
    context: int = 0,
    mirror: bool = False,
) -> torch.Tensor:
    """Probabilities ``(K, X, Y, Z)`` of a preprocessed image ``(C, X, Y, Z)`` (2D: slice-wise; 3D: patches).

    A 3D model without ``patch_size`` sees the whole (padded) volume at once.  ``context``: neighbouring slices
    stacked as channels (2.5D models); ``mirror``: test-time mirroring (see :mod:`.sliding_window`).
    """
    image = torch.as_tensor(np.asarray(image, dtype=np.float32) if isinstance(image, np.ndarray) else image)
    if image.ndim != 4:
        raise DataError(f"expected a preprocessed image (C, X, Y, Z), got shape {tuple(image.shape)}")
    if spatial_dims == 2:
        return predict_slices(
            model,
            image,
            axis=slice_axis,
            batch_size=batch_size or 16,
            divisor=divisor,
            plan=plan,
            context=int(context),
            mirror=bool(mirror),
        )
    if patch_size is None:
        patch_size = tuple(s + (-s) % divisor for s in image.shape[1:])
    return predict_patches(
        model, image, patch_size, overlap=overlap, batch_size=batch_size or 2, plan=plan, mirror=bool(mirror)
    )


@dataclass
class Predictor:
    """A trained model with its preprocessing and label values, ready for scans.

    Attributes:
        model: the network in eval mode on ``plan.device``.
        preprocess: the training preprocessing.
        label_values: output label value of each class index (class 0 = background).
        in_channels: image channels the run was trained on (a 2.5D model takes ``2 * context + 1`` times as many,
            a model with ``symmetry`` twice as many again: each channel's mirror).
        spatial_dims: 2 (slice-wise) or 3 (patches).
        inference: ``slice_axis``, ``patch_size``, ``overlap``, ``divisor``, ``batch_size``, ``context``,
            ``mirror`` for :func:`predict_volume`; ``symmetry``: add each channel's mirror first.
        plan: device and precision.
        postprocess: applied to every label map (:func:`~medtransfer.infer.postprocess.apply_postprocess`).
        brain_mask: keep the largest component of the foreground and fill its holes (brain extraction).
        label_names: the run's ``meta["labels"]`` (name -> value), when it records them.
    """

    model: nn.Module
    preprocess: PreprocessConfig
    label_values: list[int]
    in_channels: int
    spatial_dims: int
    plan: PrecisionPlan
    inference: dict[str, Any] = field(default_factory=dict)
    postprocess: dict[str, Any] = field(default_factory=dict)
    brain_mask: bool = False
    label_names: dict[str, int] | None = None

    def predict(self, channels: list[Volume] | Volume, source: str = "input") -> np.ndarray:
        """Label map with exactly the input's shape (save it with the input's affine).

        Args:
            channels: one 3D volume per channel, or one 3D/4D (channels last) volume.
            source: name used in error messages (the file).

        Raises:
            DataError: not 3D, or a channel count other than the model's.
        """
        channels = _as_channels(channels, source)
        classes = self.classes_from_proba(self.predict_proba(channels, source), channels[0].spacing[:3])
        return label_array(classes, self.label_values)

    def predict_proba(self, channels: list[Volume] | Volume, source: str = "input") -> np.ndarray:
        """Class probabilities ``(K, X, Y, Z)`` on the input's grid (float32; before post-processing).

        What :meth:`predict` takes the argmax of; an ensemble averages them over its members.
        """
        channels = _as_channels(channels, source)
        if len(channels) != self.in_channels:
            raise DataError(
                f"{source}: the model takes {self.in_channels} channel(s), the input has {len(channels)} (a 4D file "
                f"of C volumes is C channels; give {self.in_channels} 3D volume(s): one file per channel, "
                "{case}_0000, {case}_0001, ..., or one 4D file of that many volumes)"
            )
        image, _, info = preprocess_case(channels, self.preprocess)
        inference = dict(self.inference)
        if self.spatial_dims == 2:
            _warn_off_plane(image.shape[1:], int(inference.get("slice_axis", 2)), info.spacing, source)
        else:
            _warn_thin(image.shape[1:], inference.get("patch_size"), info.spacing, source)
        if inference.pop("symmetry", False):
            image = add_mirror_channels(image, info.spacing)
        probs = predict_volume(self.model, image, spatial_dims=self.spatial_dims, plan=self.plan, **inference)
        return np.asarray(restore_to_input(probs.numpy(), info, order=1), dtype=np.float32)

    def classes_from_proba(self, probs: np.ndarray, spacing) -> np.ndarray:
        """Class indices (argmax of ``probs``) after the stored post-processing and, for a brain mask, its
        largest component with holes filled."""
        classes = apply_postprocess(np.asarray(probs).argmax(0), spacing, self.postprocess)
        if self.brain_mask:
            classes = brain_mask_postprocess(classes).astype(classes.dtype)
        return classes


def _warn_thin(shape, patch_size, spacing, source: str) -> None:
    """Warn when a 3D patch model gets a scan (cropped, at the working spacing) under a quarter of its patch along
    an axis: the network then sees mostly padding, and a slab of a few slices predicts worse than a whole scan."""
    if not patch_size:
        return
    thin = [(axis, n, p) for axis, (n, p) in enumerate(zip(shape, patch_size, strict=True)) if n * 4 < p]
    if thin:
        said = ", ".join(f"{n} voxel(s) along axis {axis} (patch {p})" for axis, n, p in thin)
        logger.warning(
            "%s: at the working spacing (%s mm) the scan is %s: the 3D model sees mostly padding there, so expect a "
            "worse mask than on a whole scan",
            source,
            " x ".join(f"{s:g}" for s in spacing),
            said,
        )


def _warn_off_plane(shape, slice_axis: int, spacing, source: str) -> None:
    """Warn when a 2D model's slices are under an eighth as wide along one in-plane axis as along the other: a
    slice (or a few) from another plane, e.g. one coronal slice given to an axial model, which it then predicts as
    hundreds of slices one voxel wide."""
    axes = [axis for axis in range(len(shape)) if axis != slice_axis]
    narrow, wide = sorted(axes, key=lambda axis: shape[axis])
    if shape[narrow] * 8 < shape[wide]:
        logger.warning(
            "%s: at the working spacing (%s mm) the scan is %d voxel(s) along axis %d, an axis of the slices this 2D "
            "model predicts (it slices along axis %d, %d voxel(s)): a slice from another plane? Each slice it sees "
            "is %d voxel(s) wide, so expect a wrong mask; give it the whole volume or slices in its own plane",
            source,
            " x ".join(f"{s:g}" for s in spacing),
            shape[narrow],
            narrow,
            slice_axis,
            shape[slice_axis],
            shape[narrow],
        )


def label_array(classes: np.ndarray, label_values: list[int]) -> np.ndarray:
    """Class indices as the dataset's label values (uint8 when they fit, else int16)."""
    values = np.asarray(label_values)
    dtype = np.uint8 if values.max(initial=0) < 256 and values.min(initial=0) >= 0 else np.int16
    return values[classes].astype(dtype)


def _as_channels(channels: list[Volume] | Volume, source: str) -> list[Volume]:
    if isinstance(channels, Volume):
        if channels.array.ndim not in (3, 4):
            raise DataError(
                f"{source}: expected a 3D image (or 4D with channels last), got shape {channels.array.shape}"
            )
        return split_channels(channels)
    for v in channels:
        if v.array.ndim != 3:
            raise DataError(f"{source}: each channel file must be 3D, got shape {v.array.shape}")
    return list(channels)


CHECKPOINT_CHOICES = ("best", "last")


def find_checkpoint(run: str | os.PathLike, prefer: str = "best") -> Path:
    """The checkpoint of a run folder or the file itself.

    Args:
        run: a run folder (its ``checkpoints/`` or the folder itself) or a checkpoint file.
        prefer: ``best`` (highest validation Dice, else last) or ``last`` (the final weights, else best).
    """
    if prefer not in CHECKPOINT_CHOICES:
        raise ConfigError(f"checkpoint choice {prefer!r}: allowed are {', '.join(CHECKPOINT_CHOICES)}")
    run = Path(run)
    if run.is_file():
        return run
    names = CHECKPOINT_NAMES if prefer == "best" else (CHECKPOINT_NAMES[1], CHECKPOINT_NAMES[0], *CHECKPOINT_NAMES[2:])
    for folder in (run / "checkpoints", run):
        for name in names:
            if (folder / name).is_file():
                return folder / name
    hint = missing_checkpoint_hint(run)
    if hint:
        raise DataError(f"{run}: checkpoint not found{hint}")
    raise DataError(f"{run}: no checkpoint found (looked for {', '.join(CHECKPOINT_NAMES)} in it and checkpoints/)")


def _default_labels(path: Path, config: dict, meta: dict) -> dict[str, int]:
    """The labels of a checkpoint that records none (a segmentation source from ``medtransfer pretrain``, applied as
    it is, e.g. the grid's ``baseline``): background and foreground for a binary model, else one per output class,
    named after its ``class_names`` where they fit.

    Raises:
        DataError: the model has no segmentation head (a classification or restoration source): predict needs a
            model that draws labels; fine-tuning one makes it.
    """
    head = str(config.get("head", "segmentation"))
    if head != "segmentation":
        task = meta.get("source_task")
        raise DataError(
            f"{path}: a model with a {head} head{f' (source task {task})' if task else ''} draws no label map; "
            f"fine-tune it on labelled scans first (medtransfer finetune --init {path} ...) and predict with that run"
        )
    classes = max(int(config.get("out_channels", 1)), 2)  # one sigmoid output: background and foreground
    if classes == 2:
        return {"background": 0, "foreground": 1}
    names = list(meta.get("class_names") or [])
    if len(names) != classes or len(set(map(str, names))) != classes:
        names = [f"class_{i}" for i in range(classes)]
    return {str(name): i for i, name in enumerate(names)}


def load_predictor(
    run: str | os.PathLike, *, device: str = "auto", precision: str = "auto", checkpoint: str = "best"
) -> Predictor | Ensemble:
    """Rebuild the model of a run (or checkpoint file) with its preprocessing and label values.

    ``checkpoint`` picks ``best`` or ``last`` in a run folder (see :func:`find_checkpoint`).  An ensemble folder
    (:mod:`.ensemble`) gives an :class:`~medtransfer.infer.ensemble.Ensemble`, which predicts as a Predictor does
    (its members' checkpoints are the ones it was made with; ``checkpoint`` does not apply).
    """
    from ..models import create_model
    from .ensemble import is_ensemble, load_ensemble

    if Path(run).is_dir() and is_ensemble(run):
        return load_ensemble(run, device=device, precision=precision)
    path = find_checkpoint(run, checkpoint)
    ckpt = load_checkpoint(path)
    spec, meta = ckpt.get("model") or {}, ckpt.get("meta") or {}
    if not spec.get("name"):
        raise DataError(f"{path}: the checkpoint names no model; it is not a medtransfer run checkpoint")
    config = dict(spec.get("config", {}))
    labels = meta.get("labels") or _default_labels(path, config, meta)
    model = create_model(spec["name"], **config)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, KeyError, TypeError) as err:  # tensors missing, unexpected or of other shapes
        reason = " ".join(str(err).split())
        raise DataError(
            f"{path}: its weights do not fit the model it names ({spec['name']}): {reason[:300]}"
            f"{'...' if len(reason) > 300 else ''}"
        ) from err
    plan = resolve_precision(precision, resolve_device(device), None, model=model)
    spatial_dims = int(config.get("spatial_dims", 2))
    model = model_to_plan(model, plan, spatial_dims).eval()
    inference = dict(meta.get("inference", {}))
    context_channels = (2 * int(inference.get("context", 0)) + 1) * (2 if inference.get("symmetry") else 1)
    values = sorted(int(v) for v in (labels.values() if isinstance(labels, dict) else range(len(labels))))
    outputs = int(config.get("out_channels", 1))
    if len(values) != max(outputs, 2):
        raise DataError(
            f"{path}: the model has {outputs} output channel(s) but the checkpoint names {len(values)} label(s) "
            f"({', '.join(map(str, values))}); it is not a consistent segmentation checkpoint"
        )
    return Predictor(
        model=model,
        preprocess=PreprocessConfig.from_dict(meta.get("preprocess", {})),
        label_values=values,
        in_channels=int(config.get("in_channels", 1)) // context_channels,
        spatial_dims=spatial_dims,
        plan=plan,
        inference=inference,
        postprocess=dict(meta.get("postprocess") or {}),
        brain_mask=labels == BRAIN_MASK_LABELS,
        label_names={str(k): int(v) for k, v in labels.items()} if isinstance(labels, dict) else None,
    )
