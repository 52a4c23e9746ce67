"""Frozen norm statistics survive .train() and deepcopy; release restores normal behaviour."""

from __future__ import annotations

import copy

import torch
from torch import nn

from medtransfer.transfer.bn import BNMode, freeze_norm_stats, has_frozen_stats, norm_layers, release_norm_stats


def _net():
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 2, 1), nn.GroupNorm(1, 2))


def test_frozen_batchnorm_keeps_eval_mode_and_statistics_through_train():
    net = _net()
    bn = net[1]
    assert freeze_norm_stats(net) == 2
    net.train()
    assert not bn.training
    assert net[0].training  # other layers follow the model
    mean, var = bn.running_mean.clone(), bn.running_var.clone()
    net(torch.randn(4, 1, 6, 6) * 3 + 2)
    assert torch.equal(bn.running_mean, mean)
    assert torch.equal(bn.running_var, var)
    clone = copy.deepcopy(net).train()
    assert not clone[1].training
    assert has_frozen_stats(clone[1])


def test_release_restores_training_and_statistics_update():
    net = _net()
    freeze_norm_stats(net)
    release_norm_stats(net.train())
    bn = net[1]
    assert bn.training
    net(torch.randn(4, 1, 6, 6) * 3 + 2)
    assert not torch.equal(bn.running_mean, torch.zeros(3))
    net.eval()
    assert not bn.training


def test_norm_layers_and_mode_parsing():
    assert [type(m).__name__ for m in norm_layers(_net())] == ["BatchNorm2d", "GroupNorm"]
    assert BNMode.parse("ADAPT") is BNMode.ADAPT
