"""Strategies on the paper presets: DART's "first layers" / "last layers", frozen ResNet encoder."""

from __future__ import annotations

import pytest
import torch

from medtransfer.models import create_model
from medtransfer.transfer import create_strategy


@pytest.mark.parametrize(("spec", "n_trainable"), [("first_k:1", 4816), ("last_k:1", 626)])
def test_dart_first_and_last_layers_match_the_paper(spec, n_trainable):
    source = create_model("dart_resunet").state_dict()
    model = create_model("dart_resunet")
    plan = create_strategy(spec).prepare(model, source)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == n_trainable
    assert sum(row["trainable_params"] for row in plan.description["stages"]) == n_trainable


def test_frozen_resnet_encoder_stays_frozen_including_batchnorm():
    source = create_model("resnet18_unet").state_dict()
    model = create_model("resnet18_unet")
    plan = create_strategy("frozen_encoder").prepare(model, source)
    assert [g["name"] for g in plan.param_groups] == ["dec4", "dec3", "dec2", "dec1", "dec0", "head"]
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    optimizer = torch.optim.SGD(plan.optimizer_groups(lr=0.1))
    model.train()
    model(torch.randn(2, 1, 32, 32)).mean().backward()
    optimizer.step()
    assert not model.encoder.bn1.training
    for key, value in model.encoder.state_dict().items():
        assert torch.equal(value, before[key]), key
