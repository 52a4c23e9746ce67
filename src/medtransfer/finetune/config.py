"""The configuration of one fine-tuning run: what to load, how to adapt it, on which labels.

The CLI builds it from its options (``medtransfer finetune``), a grid cell from the cell's keys
(:meth:`FinetuneConfig.from_cell`); every fine-tuning variant (segmentation, classification, teacher-student)
runs from it.  Options of the run folder: docs/guide.md.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..errors import ConfigError, check_seed, did_you_mean
from ..infer.postprocess import check_lesion_prior, check_min_component
from ..train.augment import AugmentMode
from ..utils import read_yaml_mapping

NO_INIT = ("none", "scratch", "")
ALL = "all"


class ForegroundSampling(StrEnum):
    """How 2D training oversamples slices with foreground (``foreground_fraction`` of them)."""

    INDEX = "index"  # foreground slices repeated in the dataset's index: the share holds on average
    BATCH = "batch"  # every batch holds round(fraction * batch_size) foreground slices (nnU-Net-like)

    @classmethod
    def parse(cls, value: str | ForegroundSampling) -> ForegroundSampling:
        try:
            return cls(str(value).lower())
        except ValueError as err:
            raise ConfigError(did_you_mean(str(value), [m.value for m in cls], what="foreground_sampling")) from err


@dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tuning run.

    Attributes:
        data: dataset folder (any layout :func:`medtransfer.data.layouts.load_dataset` reads).
        out: run folder.
        init: source checkpoint, or ``None`` to train from scratch.
        strategy: ``NAME[:ARGS]`` of a registered transfer strategy (default: ``full`` with ``init``, else
            ``scratch``).
        model: registry name used when ``init`` is ``None`` (or holds a bare state dict).
        model_config: extra ``create_model`` keys (``features``, ``depth``, ``norm``, ...).
        target_domain: train and validate only on cases of this domain.
        n_labelled: labelled scans (from different subjects of the training pool), or ``"all"`` (one scan of every
            training subject); the run records the number it resolved to.
        every_kth_slice: label only every k-th slice of one scan (DART budgets; needs ``n_labelled=1``).
        seed: seed of the labelled subset and of training.
        split_seed: seed of the subject split (shared by the runs that are compared).
        val_fraction: share of subjects held out for validation; ``test_fraction`` for the final test.
        max_val_cases: validate on at most this many held-out cases (speed).
        slice_axis: slice axis of 2D models on RAS arrays (2 = axial).
        patch_size: training patch of 3D models (default: the source's, else 64^3; see :mod:`.source_prep`).
        foreground_fraction: foreground oversampling (nnU-Net's 1/3; 0 turns it off).  2D: labelled slices
            containing foreground are repeated until they are at least this share of the training slices;
            3D: this share of the random patches is centred on a random foreground voxel.
        foreground_sampling: 2D: ``index`` (foreground slices repeated in the index) or ``batch`` (each batch
            holds ``round(foreground_fraction * batch_size)`` foreground slices).
        augment: ``none`` (default: the papers' protocols), ``spatial`` (random flips, rotation and scaling of
            the training items; intensities untouched) or ``spatial_intensity`` (plus gamma and brightness, which
            keep the order of intensities and so a lesion's contrast), see :mod:`medtransfer.train.augment`.
        context_slices: 2D models: neighbouring slices on each side given as extra input channels (2.5D; the
            checkpoint records it and prediction stacks the same way).
        symmetry_channel: add every image channel mirrored left-right about the head's mid-sagittal plane as an
            extra channel (:mod:`medtransfer.data.symmetry`; the checkpoint records it and prediction adds it the same
            way): a unilateral lesion differs from its contralateral twin, a sulcus or vessel seldom does.
        lesion_mix: 2D models: probability that a training slice gets a lesion carved from another training case
            (CarveMix, rescaled in-plane 0.5-1.25x; :class:`medtransfer.finetune.data.LesionMix`); 0 turns it off.
        tta_mirror: prediction averages over every mirroring of the spatial axes (recorded in the checkpoint).
        min_component_mm3: post-processing of predictions: connected components smaller than this (mm³) are
            removed; ``auto`` tunes it on the validation cases (highest lesion F1; without validation cases, the
            free size of the training lesions: :func:`medtransfer.infer.postprocess.tune_on_validation`), ``null``
            turns it off.
        min_component_prior: the lesion volumes ``auto`` bounds the size with: ``auto`` (the training lesions and,
            where the source checkpoint records its own and a Mann-Whitney test with enough training lesions to
            refuse does not find them of another size, the source's:
            :func:`medtransfer.infer.postprocess.lesion_size_prior`), ``target`` (the training lesions alone) or
            ``pooled`` (both, untested; under a slice budget, the source's alone).
        cache_dir: preprocessing cache shared by runs (``None``: preprocess in memory each run).
        train: :class:`~medtransfer.train.config.TrainConfig` keys.
        preprocess: :class:`~medtransfer.data.preprocess.PreprocessConfig` keys.
    """

    data: str
    out: str
    init: str | None = None
    strategy: str | None = None
    model: str = "unet"
    model_config: dict[str, Any] = field(default_factory=dict)
    target_domain: str | None = None
    n_labelled: int | str = 3
    every_kth_slice: int | None = None
    seed: int = 0
    split_seed: int = 0
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    max_val_cases: int = 4
    slice_axis: int = 2
    patch_size: tuple[int, int, int] | None = None
    foreground_fraction: float = 0.33
    foreground_sampling: str = "index"
    augment: str = "none"
    context_slices: int = 0
    symmetry_channel: bool = False
    lesion_mix: float = 0.0
    tta_mirror: bool = False
    min_component_mm3: float | str | None = None
    min_component_prior: str = "auto"
    cache_dir: str | None = None
    train: dict[str, Any] = field(default_factory=dict)
    preprocess: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        init = None if self.init is None or str(self.init).lower() in NO_INIT else str(self.init)
        object.__setattr__(self, "init", init)
        if self.strategy is None:
            object.__setattr__(self, "strategy", "full" if init else "scratch")
        object.__setattr__(self, "data", str(self.data))
        object.__setattr__(self, "out", str(self.out))
        for key in ("train", "preprocess", "model_config"):
            value = getattr(self, key)
            if value is None:
                object.__setattr__(self, key, {})  # an empty `train:` in YAML
            elif not isinstance(value, dict):
                raise ConfigError(f"{key} must be a mapping of options, got {value!r}")
        if self.patch_size is not None:
            sizes = self.patch_size
            if (
                isinstance(sizes, (str, bytes))
                or not isinstance(sizes, (list, tuple))
                or not all(isinstance(p, int) and not isinstance(p, bool) and p > 0 for p in sizes)
            ):
                raise ConfigError(f"patch_size must be positive whole numbers such as [48, 48, 48], got {sizes!r}")
        object.__setattr__(self, "patch_size", self.patch_size and tuple(int(p) for p in self.patch_size))
        check_seed(self.seed)
        if isinstance(self.n_labelled, str) and self.n_labelled.strip().isdigit():
            object.__setattr__(self, "n_labelled", int(self.n_labelled))
        if self.n_labelled != ALL:
            if isinstance(self.n_labelled, bool) or not isinstance(self.n_labelled, int) or self.n_labelled < 1:
                raise ConfigError(f"n_labelled must be an integer >= 1 or 'all', got {self.n_labelled!r}")
        if self.every_kth_slice is not None and (
            isinstance(self.every_kth_slice, bool)
            or not isinstance(self.every_kth_slice, int)
            or self.every_kth_slice < 1
            or self.n_labelled != 1
        ):
            raise ConfigError("every_kth_slice needs k >= 1 and n_labelled = 1 (one scan, every k-th slice)")
        fraction = self.foreground_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0.0 <= fraction < 1.0:
            raise ConfigError(f"foreground_fraction must be a number in [0, 1), got {fraction!r}")
        object.__setattr__(self, "augment", AugmentMode.parse(self.augment).value)
        object.__setattr__(self, "foreground_sampling", ForegroundSampling.parse(self.foreground_sampling).value)
        object.__setattr__(self, "min_component_mm3", check_min_component(self.min_component_mm3))
        object.__setattr__(self, "min_component_prior", check_lesion_prior(self.min_component_prior))
        if isinstance(self.max_val_cases, bool) or not isinstance(self.max_val_cases, int) or self.max_val_cases < 0:
            raise ConfigError(f"max_val_cases must be an integer >= 0 (0: no validation), got {self.max_val_cases!r}")
        if isinstance(self.context_slices, bool) or not isinstance(self.context_slices, int) or self.context_slices < 0:
            raise ConfigError(f"context_slices must be an integer >= 0, got {self.context_slices!r}")
        number = not isinstance(self.lesion_mix, bool) and isinstance(self.lesion_mix, int | float)
        if not number or not 0.0 <= self.lesion_mix <= 1.0:
            raise ConfigError(f"lesion_mix must be a probability in [0, 1], got {self.lesion_mix!r}")
        object.__setattr__(self, "lesion_mix", float(self.lesion_mix))
        if self.lesion_mix and self.every_kth_slice is not None:
            raise ConfigError("lesion_mix carves lesions between whole labelled scans; a slice budget has one scan")
        if not isinstance(self.symmetry_channel, bool):
            raise ConfigError(f"symmetry_channel must be true or false, got {self.symmetry_channel!r}")
        if self.symmetry_channel and self.lesion_mix:
            raise ConfigError(
                "symmetry_channel and lesion_mix cannot be combined: a carved lesion would take its donor's mirrored "
                "tissue into the mirror channel; use one of them"
            )
        if not isinstance(self.tta_mirror, bool):
            raise ConfigError(f"tta_mirror must be true or false, got {self.tta_mirror!r}")
        if isinstance(self.slice_axis, bool) or self.slice_axis not in (0, 1, 2):
            raise ConfigError(f"slice_axis must be 0, 1 or 2, got {self.slice_axis!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any], **overrides: Any) -> FinetuneConfig:
        """Build from a mapping; ``overrides`` that are not ``None`` win; ``train``/``preprocess`` merge."""
        values = dict(values)
        for key, value in overrides.items():
            if value is None:
                continue
            if key in ("train", "preprocess", "model_config"):
                values[key] = {**(values.get(key) or {}), **value}
            else:
                values[key] = value
        names = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in names:
                raise ConfigError(did_you_mean(key, names, what="finetune config key"))
        return cls(**values)

    @classmethod
    def from_cell(
        cls, cell: dict[str, Any], *, data: str, domain: str | None, init: str | None, out: str | os.PathLike
    ):
        """The run of a grid cell: its ``finetune`` keys plus its strategy, budget and seed.

        ``budget`` is ``{n_labelled: N | all, every_kth_slice: K}`` (default every training subject).
        """
        budget = dict(cell.get("budget") or {"n_labelled": ALL})
        strategy = str(cell.get("strategy") or "scratch")
        values = {
            **(cell.get("finetune") or {}),
            "data": data,
            "out": str(out),
            "init": init if strategy != "scratch" else None,
            "strategy": strategy,
            "target_domain": domain,
            "n_labelled": budget.get("n_labelled", ALL),
            "every_kth_slice": budget.get("every_kth_slice"),
            "seed": int(cell.get("seed", 0)),
        }
        return cls.from_dict(values)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, **overrides: Any) -> FinetuneConfig:
        """Read a YAML file of finetune keys (a small diff from the defaults); ``overrides`` win."""
        data = read_yaml_mapping(path, what="finetune options")
        try:  # the file's own values first, so that an error names the file (its train: and preprocess: too)
            cls.from_dict({"data": ".", "out": ".", **data})
            from ..data.preprocess import PreprocessConfig
            from ..train.config import TrainConfig

            for key, section in (("train", TrainConfig), ("preprocess", PreprocessConfig)):
                section.from_dict(dict(data.get(key) or {}))  # from_dict above refused a section that is no mapping
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from err
        return cls.from_dict(data, **overrides)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["patch_size"] = self.patch_size and list(self.patch_size)
        return out
