"""The options of a pretraining run: which source task, which source domain."""

from __future__ import annotations

from enum import StrEnum

from ..errors import ConfigError, did_you_mean


class SourceTask(StrEnum):
    """What the source model learns.

    * ``classification``: encoder + classification head (Fashion-MNIST classes; MRI: dominant brain lobe);
    * ``segmentation``: the full U-Net (natural composites; MRI anatomy);
    * ``restoration``: Models Genesis (Zhou et al. 2019): restore the image from a corrupted copy;
    * ``rotation``: predict which of 0/90/180/270 degrees the image was rotated by (Gidaris et al. 2018);
    * ``multi``: Med3D-style (Chen et al. 2019) shared encoder with one decoder/head per dataset;
    * ``import``: no training, write external ImageNet-derived weights (ResNet file, HED VGG16) as a checkpoint.
    """

    CLASSIFICATION = "classification"
    SEGMENTATION = "segmentation"
    RESTORATION = "restoration"
    ROTATION = "rotation"
    MULTI = "multi"
    IMPORT = "import"


class SourceDomain(StrEnum):
    """Where the source images come from."""

    NATURAL = "natural"
    MRI = "mri"


def parse_task(value: str | SourceTask) -> SourceTask:
    """``value`` as a :class:`SourceTask` or a :class:`ConfigError` with suggestions."""
    try:
        return SourceTask(str(value).lower())
    except ValueError:
        raise ConfigError(did_you_mean(str(value), [t.value for t in SourceTask], what="pretraining task")) from None


def parse_domain(value: str | SourceDomain) -> SourceDomain:
    """``value`` as a :class:`SourceDomain` or a :class:`ConfigError` with suggestions."""
    try:
        return SourceDomain(str(value).lower())
    except ValueError:
        raise ConfigError(did_you_mean(str(value), [d.value for d in SourceDomain], what="source domain")) from None
