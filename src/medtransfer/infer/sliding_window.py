"""Sliding-window prediction: slice-wise for 2D models, overlapping patches with blending for 3D models.

Both take a preprocessed image ``(C, X, Y, Z)`` and return per-class probabilities ``(K, X, Y, Z)`` (softmax for
multi-class models; a one-channel sigmoid model gives ``K = 2``: background and foreground).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from enum import StrEnum

import torch
import torch.nn.functional as F
from torch import nn

from ..train.precision import PrecisionPlan, to_memory_format

Forward = Callable[[torch.Tensor], torch.Tensor]


class Blend(StrEnum):
    """How overlapping patch predictions are averaged."""

    GAUSSIAN = "gaussian"  # nnU-Net: centre voxels weigh more (sigma = patch / 8)
    CONSTANT = "constant"


def logits_to_probs(logits: torch.Tensor) -> torch.Tensor:
    """``(B, K, ...)`` logits -> probabilities; one sigmoid channel becomes two channels ``[1 - p, p]``."""
    logits = logits.float()
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits)
        return torch.cat([1 - p, p], dim=1)
    return logits.softmax(1)


def _forward(model: nn.Module, plan: PrecisionPlan | None, mirror: bool = False) -> Forward:
    def run(x: torch.Tensor) -> torch.Tensor:
        if plan is None:
            return logits_to_probs(model(x))
        x = to_memory_format(x.to(plan.device), plan.channels_last)
        with plan.autocast():
            return logits_to_probs(model(x))

    return functools.partial(mirrored, run) if mirror else run


def mirror_axes(spatial_dims: int) -> list[tuple[int, ...]]:
    """Every subset of the spatial axes of a ``(B, C, *spatial)`` batch: the flips of test-time mirroring
    (``()`` first: the unflipped input; 4 in 2D, 8 in 3D, as nnU-Net mirrors)."""
    axes = range(2, 2 + spatial_dims)
    return [combo for r in range(spatial_dims + 1) for combo in itertools.combinations(axes, r)]


def mirrored(forward: Forward, x: torch.Tensor) -> torch.Tensor:
    """Test-time mirroring: the mean of ``forward`` over every flip of the spatial axes of ``x``, each prediction
    flipped back."""
    flips = mirror_axes(x.ndim - 2)
    total = None
    for dims in flips:
        probs = forward(x.flip(dims) if dims else x)
        probs = probs.flip(dims) if dims else probs
        total = probs if total is None else total + probs
    return total / len(flips)


def context_indices(position: int, count: int, context: int) -> list[int]:
    """Slice indices of a 2.5D input: ``position - context .. position + context``, clamped to ``[0, count)``
    (the edge slice repeats)."""
    return [min(max(position + o, 0), count - 1) for o in range(-context, context + 1)]


def context_stack(slices: torch.Tensor, context: int) -> torch.Tensor:
    """2.5D input: every slice of ``slices`` ``(S, C, H, W)`` with its ``context`` neighbours on each side as
    channels, ``(S, C * (2 * context + 1), H, W)`` ordered by offset ``-context .. +context`` (all channels of one
    offset together; :func:`context_indices`).  Training (:class:`medtransfer.finetune.data.SliceDataset`) and
    prediction (:func:`predict_slices`) both stack this way.

    Example:
        >>> context_stack(torch.arange(3.0).reshape(3, 1, 1, 1), 1)[:, :, 0, 0].tolist()
        [[0.0, 0.0, 1.0], [0.0, 1.0, 2.0], [1.0, 2.0, 2.0]]
    """
    if context <= 0:
        return slices
    n = slices.shape[0]
    index = torch.tensor([context_indices(s, n, context) for s in range(n)])
    return slices[index].flatten(1, 2)


def _pad_to_multiple(x: torch.Tensor, divisor: int, dims: int) -> tuple[torch.Tensor, list[int]]:
    """Pad the last ``dims`` axes at the end up to multiples of ``divisor``; returns the original sizes."""
    sizes = list(x.shape[-dims:])
    pad = []
    for s in reversed(sizes):
        pad += [0, (-s) % divisor]
    return (F.pad(x, pad, mode="replicate") if any(pad) else x), sizes


@torch.no_grad()
def predict_slices(
    model: nn.Module,
    image: torch.Tensor,
    *,
    axis: int = 2,
    batch_size: int = 16,
    divisor: int = 32,
    plan: PrecisionPlan | None = None,
    context: int = 0,
    mirror: bool = False,
) -> torch.Tensor:
    """Apply a 2D model to every slice of ``image`` along spatial ``axis``.

    Args:
        model: 2D network ``(B, C, H, W) -> (B, K, H, W)`` in eval mode.
        image: ``(C, X, Y, Z)``.
        axis: spatial axis the slices are taken along (0, 1 or 2; 2 = axial for RAS volumes).
        batch_size: slices per forward pass.
        divisor: slices are padded (replicate) to multiples of this (the network's total down-sampling).
        plan: device/precision plan; ``None`` runs on the image's device in fp32.
        context: 2.5D models: neighbouring slices on each side stacked as channels (:func:`context_stack`).
        mirror: test-time mirroring (:func:`mirrored`, 4 passes per slice).

    Returns:
        Probabilities ``(K', X, Y, Z)`` on the CPU (``K' = 2`` for a one-channel model).
    """
    slices = context_stack(image.movedim(axis + 1, 0), context)  # (S, C', a, b)
    forward = _forward(model, plan, mirror)
    out = []
    for start in range(0, slices.shape[0], batch_size):
        batch, sizes = _pad_to_multiple(slices[start : start + batch_size], divisor, 2)
        out.append(forward(batch)[..., : sizes[0], : sizes[1]].cpu())
    return torch.cat(out).movedim(0, axis + 1)


@functools.lru_cache(maxsize=8)
def importance_map(
    patch_size: tuple[int, ...], blend: Blend = Blend.GAUSSIAN, sigma_scale: float = 0.125
) -> torch.Tensor:
    """Blending weights of one patch: a Gaussian (nnU-Net, sigma = size / 8) or ones; never zero."""
    if Blend(blend) == Blend.CONSTANT:
        return torch.ones(patch_size)
    axes = []
    for size in patch_size:
        coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
        axes.append(torch.exp(-(coords**2) / (2 * (size * sigma_scale) ** 2)))
    weight = functools.reduce(lambda a, b: a[..., None] * b, axes)
    return (weight / weight.max()).float().clamp_min(1e-4)


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start positions covering ``size`` with windows of ``patch`` overlapping by about ``overlap``."""
    if size <= patch:
        return [0]
    step = max(1, int(patch * (1 - overlap)))
    count = -(-(size - patch) // step) + 1
    return [round(i * (size - patch) / (count - 1)) for i in range(count)]


@torch.no_grad()
def predict_patches(
    model: nn.Module,
    image: torch.Tensor,
    patch_size: Sequence[int],
    *,
    overlap: float = 0.5,
    blend: Blend | str = Blend.GAUSSIAN,
    batch_size: int = 2,
    plan: PrecisionPlan | None = None,
    mirror: bool = False,
) -> torch.Tensor:
    """Apply a 3D model to overlapping patches of ``image`` and blend the probabilities.

    Args:
        model: 3D network ``(B, C, D, H, W) -> (B, K, D, H, W)`` in eval mode.
        image: ``(C, X, Y, Z)``; sides smaller than the patch are padded (replicate) and cropped back.
        patch_size: ``(px, py, pz)``, each a multiple of the network's down-sampling.
        overlap: fraction of the patch shared by neighbouring windows (0 <= overlap < 1).
        blend: ``gaussian`` or ``constant`` weights.
        batch_size: patches per forward pass.
        plan: device/precision plan; ``None`` runs on the image's device in fp32.
        mirror: test-time mirroring (:func:`mirrored`, 8 passes per patch).

    Returns:
        Probabilities ``(K', X, Y, Z)`` on the CPU.
    """
    patch = tuple(int(p) for p in patch_size)
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    sizes = image.shape[1:]
    pad = [x for s, p in zip(reversed(sizes), reversed(patch), strict=True) for x in (0, max(p - s, 0))]
    padded = F.pad(image[None], pad, mode="replicate")[0] if any(pad) else image
    starts = list(
        itertools.product(*(window_starts(s, p, overlap) for s, p in zip(padded.shape[1:], patch, strict=True)))
    )
    weight = importance_map(patch, Blend(blend))
    forward = _forward(model, plan, mirror)
    total = norm = None
    for i in range(0, len(starts), batch_size):
        group = starts[i : i + batch_size]
        boxes = [tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True)) for start in group]
        probs = forward(torch.stack([padded[(slice(None), *box)] for box in boxes])).cpu()
        if total is None:
            total = torch.zeros((probs.shape[1], *padded.shape[1:]))
            norm = torch.zeros(padded.shape[1:])
        for box, p in zip(boxes, probs, strict=True):
            total[(slice(None), *box)] += p * weight
            norm[box] += weight
    out = total / norm
    return out[(slice(None), *(slice(0, s) for s in sizes))]
