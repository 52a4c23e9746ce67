"""Fine-tuning data in memory: preprocessed cases, 2D slice and 3D patch datasets (the one implementation).

Cases are preprocessed (:func:`medtransfer.data.preprocess.preprocess_case`, or read from a
:class:`~medtransfer.data.cache.PreprocessCache` shared by every run of a grid) and sampled from memory.  Raw label
values are mapped to class indices (sorted label values; 0 = background).  Items are ``{"image", "label", "case"}``
dicts; sampling is by index (:class:`~medtransfer.train.batches.StepBatchSampler`) so that a resumed run sees the
same batches.  Image-level (classification) items: :mod:`.classification`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..data.check import count_nonfinite
from ..data.io import load_nifti
from ..data.layouts import Case
from ..data.preprocess import PreprocessConfig, PreprocessInfo, preprocess_case, split_channels
from ..data.symmetry import add_mirror_channels
from ..errors import DataError
from ..infer.sliding_window import context_indices
from ..train.batches import StepBatchSampler

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedCase:
    """One preprocessed case: image ``(C, X, Y, Z)`` float32, class-index label ``(X, Y, Z)`` int64."""

    case_id: str
    image: np.ndarray
    label: np.ndarray
    info: PreprocessInfo


def with_mirror_channels(case: PreparedCase) -> PreparedCase:
    """``case`` with every image channel's mirror about the mid-sagittal plane appended
    (:func:`medtransfer.data.symmetry.add_mirror_channels`, as prediction adds it)."""
    image = add_mirror_channels(np.asarray(case.image), case.info.spacing)
    return PreparedCase(case.case_id, image, case.label, case.info)


def label_lookup(label_values: Sequence[int]) -> np.ndarray:
    """Array mapping raw label value -> class index (unknown values map to -1)."""
    lut = np.full(max(label_values) + 1, -1, dtype=np.int64)
    lut[list(label_values)] = np.arange(len(label_values))
    return lut


def prepare_case(case: Case, config: PreprocessConfig, label_values: Sequence[int]) -> PreparedCase:
    """Load and preprocess one labelled case; label values become class indices."""
    channels = [v for path in case.images for v in split_channels(load_nifti(path, dtype="float32"))]
    label = load_nifti(case.label) if case.label is not None else None
    if label is None:
        raise DataError(f"case {case.case_id}: no label file, cannot train or validate on it")
    for volume in channels:
        nans, infs = count_nonfinite(volume.array)
        if nans + infs:
            logger.warning(
                "%s: %d NaN / %d infinite voxel(s) of %d, trained with NaN read as the lowest clipped intensity",
                volume.source,
                nans,
                infs,
                volume.array.size,
            )
    image, lab, info = preprocess_case(channels, config, label)
    return PreparedCase(case.case_id, image, _classes(label_lookup(label_values), lab, case), info)


def prepare_cases(
    cases: Sequence[Case],
    config: PreprocessConfig,
    label_values: Sequence[int],
    cache_dir: str | None = None,
    progress: bool = True,
) -> list[PreparedCase]:
    """Preprocess ``cases`` (progress bar), through the preprocessing cache in ``cache_dir`` when given."""
    if cache_dir is None:
        bar = tqdm(cases, desc="preprocess", unit="case", leave=False, disable=not progress)
        return [prepare_case(c, config, label_values) for c in bar]
    from ..data.cache import build_cache

    cache = build_cache(cases, cache_dir, config, image_dtype="float32", progress=progress)
    lut = label_lookup(label_values)
    prepared = []
    for case, cached in zip(cases, cache.load_all([c.case_id for c in cases], mmap=False), strict=True):
        if cached.label is None:
            raise DataError(f"case {case.case_id}: no label file, cannot train or validate on it")
        prepared.append(PreparedCase(case.case_id, cached.image, _classes(lut, cached.label, case), cached.info))
    return prepared


def _classes(lut: np.ndarray, label: np.ndarray, case: Case) -> np.ndarray:
    raw = np.asarray(label).astype(np.int64)
    if raw.max(initial=0) >= len(lut) or (lut[raw] < 0).any():
        found = sorted(int(v) for v in np.unique(raw))
        declared = [int(v) for v in np.flatnonzero(lut >= 0)]
        raise DataError(f"{case.label}: label values {found} not all declared in the dataset ({declared})")
    return lut[raw]


def _pad_to(array: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Zero-pad the trailing axes of ``array`` at the end up to ``shape``."""
    pad = [x for s, t in zip(reversed(array.shape[-len(shape) :]), reversed(shape), strict=True) for x in (0, t - s)]
    return torch.nn.functional.pad(array, pad) if any(pad) else array


def common_slice_shape(cases: Sequence[PreparedCase], axis: int, divisor: int) -> tuple[int, int]:
    """In-plane shape that holds every case's slices, rounded up to ``divisor``."""
    sizes = [[s for i, s in enumerate(c.label.shape) if i != axis] for c in cases]
    return tuple(int(max(col) + (-max(col)) % divisor) for col in zip(*sizes, strict=True))


def oversample_foreground(index: list, has_foreground, fraction: float) -> list:
    """Repeat the items with foreground until they are at least ``fraction`` of the index (order kept).

    Example:
        >>> oversample_foreground([0, 1, 2, 3], lambda i: i == 0, 0.5)
        [0, 1, 2, 3, 0, 0]
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"foreground fraction must be in [0, 1), got {fraction}")
    fg = [item for item in index if has_foreground(item)]
    if not fg or fraction == 0.0 or len(fg) >= fraction * len(index):
        return index
    # smallest r with (len(fg) * (1 + r)) / (len(index) + r * len(fg)) >= fraction
    n, f = len(index), len(fg)
    repeats = -(-(fraction * n - f) // (f * (1 - fraction)))
    return index + fg * int(repeats)


class SliceDataset(Dataset):
    """2D slices along ``axis`` of prepared cases, zero-padded to one in-plane ``shape``.

    Args:
        cases: prepared cases.
        axis: slice axis of the (RAS) arrays.
        shape: in-plane shape of every item.
        slices: optional case id -> slice indices (an every-k-th-slice budget); default all slices.
        foreground_fraction: foreground oversampling (nnU-Net uses 1/3): slices that contain a foreground class
            are repeated in the index until they make up at least this share of it, so that small targets
            (lesions) are seen in most batches.  The index stays fixed, so sampling stays resumable.
        augment: optional callable applied to every item (:mod:`medtransfer.train.augment`).
        context: 2.5D: the ``context`` neighbouring slices on each side become extra channels, ordered as
            :func:`medtransfer.infer.sliding_window.context_stack` orders them at prediction (edges repeat).
        lesion_mix: optional :class:`LesionMix`: with its probability an item becomes a slice of its case with a
            lesion carved from another training case (before ``augment``).
    """

    def __init__(
        self,
        cases: Sequence[PreparedCase],
        axis: int,
        shape: tuple[int, int],
        slices: dict[str, Sequence[int]] | None = None,
        foreground_fraction: float = 0.0,
        augment: Callable[[dict], dict] | None = None,
        context: int = 0,
        lesion_mix: LesionMix | None = None,
    ) -> None:
        self.cases, self.axis, self.shape, self.augment, self.context = list(cases), axis, shape, augment, context
        if lesion_mix is not None and lesion_mix.p > 0 and slices:
            raise ValueError("lesion_mix needs whole labelled scans, not a slice budget")
        self.lesion_mix = lesion_mix.bind(self.cases, axis) if lesion_mix is not None and lesion_mix.p > 0 else None
        self.index = [
            (ci, s)
            for ci, case in enumerate(self.cases)
            for s in (slices.get(case.case_id, ()) if slices else range(case.label.shape[axis]))
        ]
        if not self.index:
            raise DataError("no labelled slices to train on (check the label budget)")
        self.index = oversample_foreground(self.index, self._has_foreground, foreground_fraction)

    def _has_foreground(self, item: tuple[int, int]) -> bool:
        ci, s = item
        return bool((np.take(self.cases[ci].label, s, axis=self.axis) > 0).any())

    def foreground_items(self) -> list[int]:
        """Positions in the index of the slices that contain foreground."""
        return [i for i, item in enumerate(self.index) if self._has_foreground(item)]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        ci, s = self.index[i]
        case = self.cases[ci]
        mixed = self.lesion_mix.draw(ci) if self.lesion_mix is not None else None
        if mixed is not None:
            s = mixed.target_slice
        image, label = self.stack(ci, s)
        if mixed is not None:
            image, label = mixed.paste(image, label)
        item = {"image": _pad_to(image, self.shape), "label": _pad_to(label, self.shape), "case": case.case_id}
        return self.augment(item) if self.augment else item

    def stack(self, ci: int, s: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Slice ``s`` of case ``ci`` unpadded: image ``(offsets * C, a, b)`` (2.5D stack), label ``(1, a, b)``."""
        case = self.cases[ci]
        slices = context_indices(s, case.image.shape[self.axis + 1], self.context)
        image = torch.from_numpy(np.moveaxis(np.take(case.image, slices, axis=self.axis + 1), self.axis + 1, 0))
        image = image.flatten(0, 1)  # (offsets, C, a, b) -> (offsets * C, a, b)
        label = torch.from_numpy(np.take(case.label, s, axis=self.axis))[None]
        return image, label


@dataclass(frozen=True)
class Donor:
    """One connected foreground component of a training case, ready to be carved out.

    ``box`` is the component's bounding box grown by the carve margin (in the case's array); ``weight`` (the box's
    shape) is 1 on the component and the voxels within the margin of it and falls to 0 over about two voxels
    outside (a soft edge: no step in intensity where the carved region meets its new surroundings); ``slices``
    are the positions along the slice axis where the component has voxels; ``centre`` is the centre of the
    component's own bounding box (voxel coordinates, not clipped like ``box``).
    """

    case: int
    box: tuple[slice, slice, slice]
    weight: np.ndarray
    slices: tuple[int, ...]
    centre: tuple[float, float, float]


def lesion_donors(cases: Sequence[PreparedCase], axis: int, margin: int = 2) -> list[Donor]:
    """Every foreground component of ``cases`` (26-connected: what the lesion metrics count as one lesion,
    :func:`~medtransfer.infer.postprocess.component_sizes`) as a :class:`Donor` (carve margin ``margin`` voxels)."""
    from scipy import ndimage

    from ..infer.postprocess import component_sizes

    donors = []
    for ci, case in enumerate(cases):
        components, _ = component_sizes(case.label > 0)
        for k, box in enumerate(ndimage.find_objects(components), start=1):
            pad = margin + 3
            grown = tuple(
                slice(max(0, b.start - pad), min(n, b.stop + pad)) for b, n in zip(box, case.label.shape, strict=True)
            )
            lesion = components[grown] == k
            carve = ndimage.binary_dilation(lesion, iterations=margin) if margin else lesion
            weight = np.clip(2.0 * ndimage.gaussian_filter(carve.astype(np.float32), 1.0), 0.0, 1.0)
            weight[carve] = 1.0
            present = np.flatnonzero(lesion.any(axis=tuple(a for a in range(3) if a != axis)))
            slices = tuple(int(grown[axis].start + p) for p in present)
            donors.append(Donor(ci, grown, weight, slices, tuple((b.start + b.stop) / 2 for b in box)))
    return donors


@dataclass(frozen=True)
class LesionMix:
    """Lesions carved from one training case into another (CarveMix, Zhang et al. 2021), rescaled in-plane.

    With probability ``p`` a training slice of case B is replaced by this: a foreground component of another
    training case A (its "donor") is drawn uniformly, and one of the donor's slices uniformly; B's slice at the
    same relative position along the slice axis takes the donor's region (the component grown by ``margin``
    voxels, soft-edged) at the same relative in-plane position, rescaled in-plane by a factor drawn uniformly from
    ``scale`` (LesionMix-like size variation: a few large training lesions also teach small ones), blended as
    ``B * (1 - w) + A * w``; the label inside the region is A's, outside it B's.  Every context slice of a 2.5D
    stack takes the donor's matching slice.  Cases are preprocessed the same way (RAS, cropped to the head,
    normalised), so relative positions put a lesion where lesions occur.  Random numbers come from torch's global
    generator, as the other augmentations' do (resumable).
    """

    p: float = 0.0
    scale: tuple[float, float] = (0.5, 1.25)
    margin: int = 2

    def bind(self, cases: Sequence[PreparedCase], axis: int) -> BoundLesionMix | None:
        """The mix over ``cases``; ``None`` without foreground or a second case (nothing to carve across); a case
        carves only other cases' lesions."""
        donors = lesion_donors(cases, axis, self.margin)
        if not donors or len(cases) < 2:
            logger.warning("lesion_mix: no second training case or no foreground to carve; no lesions are carved")
            return None
        return BoundLesionMix(self, list(cases), axis, donors)


@dataclass(frozen=True)
class BoundLesionMix:
    """A :class:`LesionMix` over the training cases and their donors (:meth:`LesionMix.bind`)."""

    mix: LesionMix
    cases: list[PreparedCase]
    axis: int
    donors: list[Donor]

    def draw(self, ci: int) -> CarvedLesion | None:
        """With probability ``p``, a lesion of another case to carve into case ``ci`` (else ``None``)."""
        if float(torch.rand(())) >= self.mix.p:
            return None
        others = [d for d in self.donors if d.case != ci]
        if not others:
            return None
        donor = others[int(torch.randint(len(others), ()))]
        source_slice = donor.slices[int(torch.randint(len(donor.slices), ()))]
        low, high = self.mix.scale
        factor = low + (high - low) * float(torch.rand(()))
        n_source = self.cases[donor.case].label.shape[self.axis]
        n_target = self.cases[ci].label.shape[self.axis]
        target = min(max(round((source_slice + 0.5) * n_target / n_source - 0.5), 0), n_target - 1)
        return CarvedLesion(self, donor, source_slice, target, factor)


@dataclass(frozen=True)
class CarvedLesion:
    """One draw of :class:`LesionMix`: ``donor``'s slice ``source_slice`` into slice ``target_slice`` of the
    receiving case, in-plane ``factor`` times its size."""

    bound: BoundLesionMix
    donor: Donor
    source_slice: int
    target_slice: int
    factor: float

    def paste(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Blend the carved region into a 2.5D ``image`` ``(offsets * C, a, b)`` and its ``label`` ``(1, a, b)``
        (slice ``target_slice`` of case ``case``, unpadded); returns new tensors."""
        axis, donor = self.bound.axis, self.donor
        source = self.bound.cases[donor.case]
        channels = source.image.shape[0]
        context = (image.shape[0] // channels - 1) // 2
        plane = tuple(b for a, b in enumerate(donor.box) if a != axis)
        first, last = donor.box[axis].start, donor.box[axis].stop
        weights, patches = [], []
        for position in context_indices(self.source_slice, source.label.shape[axis], context):
            if first <= position < last:
                w = np.take(donor.weight, position - first, axis=axis)
            else:  # a context slice beyond the carved box: nothing of the donor there
                w = np.zeros([b.stop - b.start for b in plane], dtype=np.float32)
            weights.append(np.broadcast_to(w, (channels, *w.shape)))
            patches.append(np.take(source.image, position, axis=axis + 1)[(slice(None), *plane)])
        weight = torch.from_numpy(np.concatenate(weights).astype(np.float32))
        patch = torch.from_numpy(np.concatenate(patches).astype(np.float32))
        middle = np.take(donor.weight, self.source_slice - first, axis=axis)
        carve = torch.from_numpy(middle >= 0.5)[None, None].float()
        carved = torch.from_numpy(np.take(source.label, self.source_slice, axis=axis)[plane].astype(np.float32))
        size = [max(1, round((b.stop - b.start) * self.factor)) for b in plane]
        if size != [b.stop - b.start for b in plane]:
            weight = F.interpolate(weight[None], size=size, mode="bilinear", align_corners=False)[0]
            patch = F.interpolate(patch[None], size=size, mode="bilinear", align_corners=False)[0]
            carve = F.interpolate(carve, size=size, mode="nearest-exact")  # centre-aligned, as bilinear is
            carved = F.interpolate(carved[None, None], size=size, mode="nearest-exact")[0, 0]
        # the lesion's centre goes to the same relative in-plane position of the target case
        source_shape = [n for a, n in enumerate(source.label.shape) if a != axis]
        centre = [c for a, c in enumerate(donor.centre) if a != axis]
        starts = [
            round(c * n_target / n_source - (c - b.start) * extent / (b.stop - b.start))
            for b, c, n_source, n_target, extent in zip(plane, centre, source_shape, label.shape[1:], size, strict=True)
        ]
        return _blend(image, label, patch, weight, carve[0, 0] > 0.5, carved.long(), starts)


def _blend(image, label, patch, weight, carve, carved, starts):
    """``image * (1 - weight) + patch * weight`` and ``label = carved`` where ``carve``, with the patch's top-left
    corner at ``starts`` (parts outside the image are dropped)."""
    dst, src = [], []
    for start, extent, n in zip(starts, patch.shape[1:], image.shape[1:], strict=True):
        a, b = max(start, 0), min(start + extent, n)
        if a >= b:
            return image, label
        dst.append(slice(a, b))
        src.append(slice(a - start, b - start))
    image, label = image.clone(), label.clone()
    w = weight[(slice(None), *src)]
    region = image[(slice(None), *dst)]
    image[(slice(None), *dst)] = region * (1 - w) + patch[(slice(None), *src)] * w
    inside = carve[tuple(src)]
    target = label[(0, *dst)]
    label[(0, *dst)] = torch.where(inside, carved[tuple(src)].to(label.dtype), target)
    return image, label


class ForegroundBatchSampler(StepBatchSampler):
    """Batches of which ``round(fraction * batch_size)`` items are drawn from ``foreground`` and the rest from all
    items, with replacement; the items of step ``s`` of epoch ``e`` are a pure function of ``(seed, e, s)``, so a
    resumed run sees the same batches (the rule of :class:`~medtransfer.train.batches.StepBatchSampler`).

    Example:
        >>> sampler = ForegroundBatchSampler(100, [3, 7], 0.5, batch_size=4, steps_per_epoch=2, seed=0)
        >>> sum(i in (3, 7) for i in sampler.global_indices(0, 1)) >= 2
        True
    """

    def __init__(
        self,
        num_items: int,
        foreground: Sequence[int],
        fraction: float,
        batch_size: int,
        steps_per_epoch: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(num_items, batch_size, steps_per_epoch, seed, rank, world_size)
        self.foreground = torch.as_tensor(list(foreground), dtype=torch.long)
        self.n_foreground = round(fraction * batch_size) if len(self.foreground) else 0

    def global_indices(self, epoch: int, step: int) -> list[int]:
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 100_003 + step)
        fg = self.foreground[torch.randint(0, max(len(self.foreground), 1), (self.n_foreground,), generator=generator)]
        rest = torch.randint(0, self.num_items, (self.batch_size - self.n_foreground,), generator=generator)
        batch = torch.cat([fg, rest])
        return batch[torch.randperm(len(batch), generator=generator)].tolist()


def _foreground_sample(label: torch.Tensor, at_most: int = 10_000) -> torch.Tensor:
    """Up to ``at_most`` foreground voxel coordinates, evenly strided (nnU-Net keeps a 10k sample per class);
    all of a large brain mask would cost tens of MB per case."""
    voxels = torch.nonzero(label > 0)
    return voxels[:: max(1, -(-len(voxels) // at_most))]


class PatchDataset(Dataset):
    """3D patches: random positions (training, drawn from torch's global RNG) or a tiling (validation).

    Args:
        cases: prepared cases (padded to at least ``patch_size``).
        patch_size: ``(px, py, pz)``.
        length: number of items per epoch for random patches; ``None`` tiles every case without overlap.
        augment: optional callable applied to every random patch (:mod:`medtransfer.train.augment`).
        foreground_fraction: share of random patches centred on a random foreground voxel of their case
            (nnU-Net's 1/3), so that small targets are seen; the rest are uniform.  Cases without
            foreground always get uniform patches.
    """

    def __init__(
        self,
        cases: Sequence[PreparedCase],
        patch_size: Sequence[int],
        length: int | None = None,
        augment: Callable[[dict], dict] | None = None,
        foreground_fraction: float = 0.0,
    ) -> None:
        if not 0.0 <= foreground_fraction <= 1.0:
            raise ValueError(f"foreground fraction must be in [0, 1], got {foreground_fraction}")
        self.augment, self.foreground_fraction = augment, foreground_fraction
        self.patch = tuple(int(p) for p in patch_size)
        self.cases = [self._padded(c) if length else self._tiled(c) for c in cases]
        self.length = length
        self.tiles = [] if length else [(ci, start) for ci, c in enumerate(self.cases) for start in self._grid(c)]
        self.foreground = [_foreground_sample(c[2]) for c in self.cases] if length and foreground_fraction else []

    def _padded(self, case: PreparedCase) -> tuple[str, torch.Tensor, torch.Tensor]:
        shape = [max(s, p) for s, p in zip(case.label.shape, self.patch, strict=True)]
        return case.case_id, _pad_to(torch.from_numpy(case.image), shape), _pad_to(torch.from_numpy(case.label), shape)

    def _tiled(self, case: PreparedCase) -> tuple[str, torch.Tensor, torch.Tensor]:
        """A validation case padded up to a whole number of patches on every axis (the image replicates its edge,
        as prediction pads; the label gains background), so that the tiles cover every voxel exactly once."""
        shape = [-(-s // p) * p for s, p in zip(case.label.shape, self.patch, strict=True)]
        image = torch.from_numpy(case.image)
        pad = [x for s, t in zip(reversed(image.shape[1:]), reversed(shape), strict=True) for x in (0, t - s)]
        if any(pad):
            image = torch.nn.functional.pad(image[None].float(), pad, mode="replicate")[0].to(image.dtype)
        return case.case_id, image, _pad_to(torch.from_numpy(case.label), shape)

    def _grid(self, case) -> list[tuple[int, ...]]:
        axes = [list(range(0, s - p + 1, p)) for s, p in zip(case[2].shape, self.patch, strict=True)]
        return [tuple(int(x) for x in t) for t in np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)]

    def __len__(self) -> int:
        return self.length or len(self.tiles)

    def _random_start(self, ci: int) -> list[int]:
        """A uniform patch position, or (``foreground_fraction`` of the time) one centred on foreground."""
        shape = self.cases[ci][2].shape
        highest = [s - p for s, p in zip(shape, self.patch, strict=True)]
        if self.foreground and float(torch.rand(())) < self.foreground_fraction and len(self.foreground[ci]):
            voxel = self.foreground[ci][int(torch.randint(0, len(self.foreground[ci]), ()))]
            return [min(max(int(v) - p // 2, 0), h) for v, p, h in zip(voxel, self.patch, highest, strict=True)]
        return [int(torch.randint(0, h + 1, ())) for h in highest]

    def __getitem__(self, i: int) -> dict:
        if self.length:
            ci = i % len(self.cases)
            start = self._random_start(ci)
        else:
            ci, start = self.tiles[i]
        case_id, image, label = self.cases[ci]
        box = tuple(slice(a, a + p) for a, p in zip(start, self.patch, strict=True))
        item = {"image": image[(slice(None), *box)], "label": label[box][None], "case": case_id}
        return self.augment(item) if self.augment and self.length else item
