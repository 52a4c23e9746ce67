"""Precision plans and the bf16 fast path: bf16 and fp32 loss curves agree on a small problem."""

from __future__ import annotations

import pytest
import torch
from train_toy_helpers import toy_batches, toy_config, toy_net

from medtransfer.errors import ConfigError
from medtransfer.train import Trainer, resolve_precision


def test_explicit_precision_wins():
    cpu = torch.device("cpu")
    plan = resolve_precision("bf16", cpu)
    assert plan.autocast_dtype == torch.bfloat16
    assert plan.channels_last
    assert plan.name == "bf16"
    assert resolve_precision("fp32", cpu).autocast_dtype is None
    assert not resolve_precision("fp32", cpu).channels_last
    assert resolve_precision("bf16", cpu, channels_last=False).channels_last is False
    with pytest.raises(ConfigError, match="fp16 needs CUDA"):
        resolve_precision("fp16", cpu)


def test_auto_on_cpu_follows_hardware(monkeypatch):
    from medtransfer.train import precision

    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    assert resolve_precision("auto", torch.device("cpu")).name == "bf16"
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)
    assert resolve_precision("auto", torch.device("cpu")).name == "fp32"


def test_bf16_channels_last_loss_curve_matches_fp32():
    curves = {}
    for precision in ("fp32", "bf16"):
        config = toy_config(epochs=3, steps_per_epoch=5, precision=precision, lr=0.05)
        trainer = Trainer(toy_net(dropout=0.0), config, toy_batches(config))
        if precision == "bf16":
            assert trainer.plan.channels_last
            assert trainer.model[0].weight.is_contiguous(memory_format=torch.channels_last)
        curves[precision] = torch.tensor([r["train_loss"] for r in trainer.fit().history])
    assert curves["fp32"][-1] < curves["fp32"][0]
    assert torch.allclose(curves["bf16"], curves["fp32"], rtol=0.03, atol=0.01), curves
