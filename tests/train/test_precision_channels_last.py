"""fp32 on CPU uses channels_last for BatchNorm-only conv nets (faster with oneDNN), not for instance norm."""

from __future__ import annotations

import torch
from torch import nn
from train_toy_helpers import toy_batches, toy_config, toy_net

from medtransfer.models import create_model
from medtransfer.train import Trainer, resolve_precision
from medtransfer.train.precision import prefers_channels_last

CPU = torch.device("cpu")


def test_prefers_channels_last_follows_the_norm_layers():
    assert prefers_channels_last(create_model("unet", spatial_dims=2, features=4, depth=2))
    assert prefers_channels_last(create_model("unet", spatial_dims=3, features=4, depth=2))
    assert not prefers_channels_last(create_model("unet", spatial_dims=2, features=4, depth=2, norm="instance"))
    assert not prefers_channels_last(create_model("unet", spatial_dims=2, features=4, depth=2, norm="group"))
    assert not prefers_channels_last(nn.Linear(3, 2))  # nothing to gain without convolutions
    assert not prefers_channels_last(None)


def test_fp32_cpu_plan_uses_channels_last_only_for_friendly_models():
    batch_unet = create_model("unet", spatial_dims=2, features=4, depth=2)
    instance_unet = create_model("unet", spatial_dims=2, features=4, depth=2, norm="instance")
    assert resolve_precision("fp32", CPU, model=batch_unet).channels_last
    assert not resolve_precision("fp32", CPU, model=instance_unet).channels_last
    assert not resolve_precision("fp32", CPU, channels_last=False, model=batch_unet).channels_last
    assert resolve_precision("fp32", CPU, channels_last=True, model=instance_unet).channels_last
    assert not resolve_precision("fp32", CPU).channels_last  # no model: the conservative NCHW default
    assert resolve_precision("bf16", CPU, model=instance_unet).channels_last  # reduced precision: always


def test_trainer_fp32_channels_last_matches_nchw_loss_curve():
    curves = {}
    for channels_last in (None, False):
        config = toy_config(epochs=2, steps_per_epoch=3, channels_last=channels_last, val_every=0)
        trainer = Trainer(toy_net(dropout=0.0), config, toy_batches(config))
        assert trainer.plan.channels_last == (channels_last is None)
        if channels_last is None:
            assert trainer.model[0].weight.is_contiguous(memory_format=torch.channels_last)
        curves[channels_last] = torch.tensor([r["train_loss"] for r in trainer.fit().history])
    assert torch.allclose(curves[None], curves[False], rtol=1e-4, atol=1e-6), curves
