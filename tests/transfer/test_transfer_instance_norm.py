"""Strategies on networks with instance norm (HD-BET, deepbet, nnU-Net): ``bn_only`` trains exactly the norms'
affine parameters, frozen/adapting norm modes work without running statistics, Transfusion's inits reset the
affine parameters, and a network with no norm parameters at all is refused by ``bn_only`` with a clear error."""

from __future__ import annotations

import pytest
import torch

from medtransfer.errors import ConfigError
from medtransfer.models import create_model
from medtransfer.transfer import create_strategy


def _instance_unet():
    return create_model("unet", spatial_dims=3, features=4, depth=2, norm="instance")


@pytest.fixture(scope="module")
def source_state():
    """'Pretrained' weights: random, with the instance norms' affine parameters away from (1, 0)."""
    torch.manual_seed(7)
    model = _instance_unet()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return {k: v.clone() for k, v in model.state_dict().items()}


def _norm_keys(model) -> set[str]:
    return {
        f"{name}.{p}"
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.modules.instancenorm._InstanceNorm)
        for p, _ in module.named_parameters(recurse=False)
    }


def _steps(model, plan, steps=2):
    optimizer = torch.optim.SGD(plan.optimizer_groups(lr=0.1))
    model.train()
    for _ in range(steps):
        x, y = torch.randn(2, 1, 8, 8, 8), (torch.rand(2, 1, 8, 8, 8) > 0.5).float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_bn_only_trains_exactly_the_instance_norm_affine_parameters(source_state):
    model = _instance_unet()
    plan = create_strategy("bn_only").prepare(model, source_state)
    norms = _norm_keys(model)
    assert norms  # every stage but the head has instance norms with weight and bias
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == norms
    assert sum(len(g["params"]) for g in plan.param_groups) == len(norms)
    _steps(model, plan)
    after = model.state_dict()
    moved = {k for k in source_state if not torch.equal(after[k], source_state[k])}
    assert moved == norms


@pytest.mark.parametrize("spec", ["first_k:1", "first_k:k=1,bn_mode=adapt", "frozen_encoder", "last_k:2"])
def test_frozen_stages_with_instance_norm_train_in_either_norm_mode(spec, source_state):
    model = _instance_unet()
    plan = create_strategy(spec).prepare(model, source_state)
    frozen = [name for name, row in zip(model.stage_names(), plan.description["stages"], strict=True)
              if not row["trainable"]]  # fmt: skip
    x = torch.randn(1, 1, 8, 8, 8)
    model.train()
    with torch.no_grad():
        train_mode = model(x)
    model.eval()
    with torch.no_grad():
        eval_mode = model(x)
    # instance norm without running statistics normalises each input by itself in either mode
    torch.testing.assert_close(train_mode, eval_mode)
    stages = model.stage_modules()
    before = {stage: [p.detach().clone() for p in stages[stage].parameters()] for stage in frozen}
    _steps(model, plan)
    assert frozen
    for stage in frozen:  # frozen stages, their instance norms' affine parameters included, stay bit-identical
        assert all(torch.equal(a, b) for a, b in zip(stages[stage].parameters(), before[stage], strict=True)), stage


def test_mean_var_and_hybrid_reset_instance_norm_affine_parameters(source_state):
    model = _instance_unet()
    create_strategy("mean_var").prepare(model, source_state, seed=0)
    state = model.state_dict()
    for key in _norm_keys(model):
        expected = torch.ones_like(state[key]) if key.endswith("weight") else torch.zeros_like(state[key])
        assert torch.equal(state[key], expected), key
    hybrid = _instance_unet()
    create_strategy("hybrid_k:1").prepare(hybrid, source_state, seed=0)
    state = hybrid.state_dict()
    kept = [k for k in _norm_keys(hybrid) if ".input." in k]
    fresh = [k for k in _norm_keys(hybrid) if ".input." not in k]
    assert kept
    assert fresh
    assert all(torch.equal(state[k], source_state[k]) for k in kept)  # the lowest stage keeps its affine values
    assert all(torch.equal(state[k], torch.ones_like(state[k])) for k in fresh if k.endswith("weight"))


def test_bn_only_refuses_a_network_without_norm_parameters():
    source = create_model("deepbrain_unet").state_dict()  # deepbrain has no normalisation layers
    with pytest.raises(ConfigError) as err:
        create_strategy("bn_only").prepare(create_model("deepbrain_unet"), source)
    assert str(err.value) == (
        "strategy bn_only: deepbrain_unet has no normalisation layer with affine parameters, so there is nothing to "
        "train; choose a strategy that trains weights (e.g. last_k, frozen_encoder, full)"
    )
