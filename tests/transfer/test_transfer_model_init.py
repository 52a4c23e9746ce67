"""Strategies that re-initialise stages keep the model's own initialisation (``init_weights``): nnU-Net's He init
(``a=1e-2``, zero biases) and the zeroed norm before each ResEnc block's residual add, not PyTorch's defaults."""

from __future__ import annotations

import math

import pytest
import torch

from medtransfer.models import create_model
from medtransfer.models.nnunet_unet import BasicBlockD
from medtransfer.transfer import create_strategy

KW = {"spatial_dims": 2, "features_per_stage": (4, 8, 16), "encoder": "residual", "out_channels": 2}
# He normal with a = 1e-2 (LeakyReLU): std = sqrt(2 / (1 + a^2)) / sqrt(fan_in); the bottleneck's 3x3 convolutions
# of 16 -> 16 channels have fan_in 144: std 0.11785; PyTorch's default (kaiming uniform, a = sqrt(5)) gives
# 1 / sqrt(3 * 144) = 0.04811.
HE_STD = math.sqrt(2 / (1 + 1e-4)) / math.sqrt(16 * 9)


def _pretrained_like(model):
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.5)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_seeded_scratch_keeps_nnunets_he_init_and_zeroed_residual_norms():
    model = create_model("nnunet", **KW)
    create_strategy("scratch").prepare(model, None, seed=0)
    blocks = [m for m in model.modules() if isinstance(m, BasicBlockD)]
    assert len(blocks) == 6  # two blocks per stage
    for block in blocks:
        assert torch.equal(block.conv2.norm.weight, torch.zeros_like(block.conv2.norm.weight))
        assert torch.equal(block.conv2.norm.bias, torch.zeros_like(block.conv2.norm.bias))
    conv = model.encoder.stages["bottleneck"].blocks[0].conv2.conv
    assert tuple(conv.weight.shape) == (16, 16, 3, 3)
    assert conv.weight.std().item() == pytest.approx(HE_STD, rel=0.1)  # 2304 draws: sampling error ~1.5%
    assert torch.equal(conv.bias, torch.zeros_like(conv.bias))
    again = create_model("nnunet", **KW)
    create_strategy("scratch").prepare(again, None, seed=0)
    for key, value in model.state_dict().items():  # still seeded
        assert torch.equal(value, again.state_dict()[key]), key


@pytest.mark.parametrize(
    ("spec", "fresh"), [("reinit_head", ["head"]), ("hybrid_k:2", ["bottleneck", "dec2", "dec1", "head"])]
)
def test_re_initialised_stages_get_nnunets_init(spec, fresh):
    source = _pretrained_like(create_model("nnunet", **KW))
    model = create_model("nnunet", **KW)
    create_strategy(spec).prepare(model, source, seed=0)
    for stage, module in model.stage_modules().items():
        convs = [m for m in module.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)]
        biases = [m.bias for m in convs if m.bias is not None]
        assert biases, stage
        if stage in fresh:
            assert all(torch.equal(b, torch.zeros_like(b)) for b in biases), stage  # He init: zero conv biases
        else:
            assert all(torch.equal(b, torch.full_like(b, 0.5)) for b in biases), stage
    if "bottleneck" in fresh:
        norm = model.encoder.stages["bottleneck"].blocks[0].conv2.norm
        assert torch.equal(norm.weight, torch.zeros_like(norm.weight))


def test_a_model_without_an_init_of_its_own_keeps_pytorchs_defaults():
    torch.manual_seed(3)
    model = create_model("unet", features=4, depth=2)
    create_strategy("scratch").prepare(model, None, seed=0)
    bias = model.head.conv.bias
    fan_in = 4  # the head's 1x1 convolution of 4 channels
    assert bias.abs().max().item() <= 1 / math.sqrt(fan_in)  # PyTorch's uniform(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert bias.abs().max().item() > 0
