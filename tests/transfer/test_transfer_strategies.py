"""Every registered strategy on a tiny U-Net: real SGD steps, frozen vs trainable, BN statistics, init."""

from __future__ import annotations

import json

import pytest
import torch

from medtransfer.errors import ConfigError
from medtransfer.models import create_model
from medtransfer.transfer import create_strategy, list_strategies
from medtransfer.transfer.bn import norm_layers

STAGES = ["input", "enc1", "bottleneck", "dec2", "dec1", "head"]
ALL = set(STAGES)
# spec -> stages whose parameters train (None: only the norm layers, everywhere)
EXPECTED_TRAINABLE = {
    "scratch": ALL,
    "full": ALL,
    "first_k": {"input"},
    "first_k:2": {"input", "enc1"},
    "first_k:k=2,bn_mode=adapt": {"input", "enc1"},
    "last_k": {"head"},
    "last_k:2": {"dec1", "head"},
    "last_k:3,bn_mode=adapt": {"dec2", "dec1", "head"},
    "frozen_encoder": {"dec2", "dec1", "head"},
    "frozen_encoder:adapt": {"dec2", "dec1", "head"},
    "bn_only": None,
    "discriminative": ALL,
    "gradual_unfreeze": {"head"},
    "gradual_unfreeze:every=2,start=2": {"dec1", "head"},
    "mean_var": ALL,
    "hybrid_k": ALL,
    "hybrid_k:0": ALL,
    "reinit_head": ALL,
}


def _tiny(**kw):
    return create_model("unet", features=4, depth=2, **kw)


@pytest.fixture(scope="module")
def source_state():
    """A 'pretrained' model: random weights plus BatchNorm statistics moved away from their defaults."""
    torch.manual_seed(123)
    model = _tiny()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(2, 1, 8, 8) * 2 + 1)
        for param in model.parameters():  # norm affine parameters too differ from a fresh init
            param.add_(0.05 * torch.randn_like(param))
    return {k: v.clone() for k, v in model.state_dict().items()}


def _train_steps(model, plan, steps: int = 2):
    optimizer = torch.optim.SGD(plan.optimizer_groups(lr=0.1))
    model.train()
    for _ in range(steps):
        x, y = torch.randn(2, 1, 8, 8), (torch.rand(2, 1, 8, 8) > 0.5).float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return optimizer


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_every_registered_strategy_is_covered():
    data_strategies = {e.name for e in list_strategies() if e.prepare is None}
    assert data_strategies == {s.split(":")[0] for s in EXPECTED_TRAINABLE}
    # the rest change the model itself (tests/transfer/test_spottune_gate.py)
    assert {e.name for e in list_strategies() if e.prepare is not None} == {"spottune"}


@pytest.mark.parametrize("spec", list(EXPECTED_TRAINABLE))
def test_frozen_params_bit_identical_trainable_changed(spec, source_state):
    model = _tiny()
    strategy = create_strategy(spec)
    plan = strategy.prepare(model, source_state, seed=0)
    json.dumps(plan.description)  # serialisable for the run folder
    stage_of = model.parameter_stages()
    expected = EXPECTED_TRAINABLE[spec]
    norm_params = {
        f"{n}.{p}"
        for n, m in model.named_modules()
        if m in norm_layers(model)
        for p, _ in m.named_parameters(recurse=False)
    }
    before = _snapshot(model)
    _train_steps(model, plan)
    after = model.state_dict()
    for name, param in model.named_parameters():
        should_train = name in norm_params if expected is None else stage_of[name] in expected
        assert param.requires_grad == should_train, name
        changed = not torch.equal(after[name], before[name])
        assert changed == should_train, f"{spec}: {name} changed={changed}, trainable={should_train}"
    described = {row["stage"]: row["trainable"] for row in plan.description["stages"]}
    if expected is not None:
        assert {s for s, on in described.items() if on} == expected


@pytest.mark.parametrize(
    "spec",
    [
        "first_k:2",
        "last_k:2",
        "frozen_encoder",
        "gradual_unfreeze",
        "first_k:2,bn_mode=adapt",
        "last_k:2,adapt",
        "frozen_encoder:adapt",
    ],
)
def test_batchnorm_statistics_follow_bn_mode(spec, source_state):
    model = _tiny()
    strategy = create_strategy(spec)
    plan = strategy.prepare(model, source_state, seed=0)
    trainable = set(strategy.trainable_stages(model))
    stages = model.stage_modules()
    before = _snapshot(model)
    _train_steps(model, plan)
    adapt = strategy.config.bn_mode.value == "adapt"
    for stage, module in stages.items():
        for layer in norm_layers(module):
            stats_changed = not torch.equal(layer.running_mean, before[_buffer_name(model, layer, "running_mean")])
            if stage in trainable or adapt:
                assert layer.training
                assert stats_changed, f"{spec}: {stage} statistics should update"
            else:
                assert not layer.training, f"{spec}: {stage} norm must stay in eval mode after model.train()"
                assert not stats_changed, f"{spec}: {stage} statistics must stay frozen"


def _buffer_name(model, layer, buffer):
    name = next(n for n, m in model.named_modules() if m is layer)
    return f"{name}.{buffer}"


@pytest.mark.parametrize(
    "spec", ["full", "first_k:2", "last_k", "frozen_encoder", "bn_only", "discriminative", "gradual_unfreeze"]
)
def test_pretrained_strategies_start_from_the_source_exactly(spec, source_state):
    model = _tiny()
    plan = create_strategy(spec).prepare(model, source_state, seed=0)
    assert plan.audit is not None
    assert not plan.audit.missing
    for key, value in model.state_dict().items():
        assert torch.equal(value, source_state[key]), key


def test_scratch_ignores_source_and_is_seeded(source_state):
    a, b = _tiny(), _tiny()
    plan = create_strategy("scratch").prepare(a, source_state, seed=7)
    create_strategy("scratch").prepare(b, None, seed=7)
    assert plan.audit is None
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key])
    assert not torch.equal(a.head.conv.weight, source_state["head.conv.weight"])


@pytest.mark.parametrize("k", [0, 2, 4])
def test_hybrid_keeps_exactly_the_lowest_k_stages(k, source_state):
    model = _tiny()
    plan = create_strategy(f"hybrid_k:{k}").prepare(model, source_state, seed=1)
    kept = set(STAGES[:k])
    for name, value in model.named_parameters():
        stage = model.parameter_stages()[name]
        same = torch.equal(value, source_state[name])
        assert same == (stage in kept), f"{name} ({stage}) same={same}"
    rows = {row["stage"]: row["init"] for row in plan.description["stages"]}
    assert rows == {s: "pretrained" if s in kept else "fresh" for s in STAGES}
    for layer in norm_layers(model.stage_modules()["bottleneck"]):
        if "bottleneck" not in kept:  # re-initialised stages get fresh statistics too
            assert torch.equal(layer.running_mean, torch.zeros_like(layer.running_mean))


def test_reinit_head_changes_only_the_head(source_state):
    model = _tiny()
    create_strategy("reinit_head").prepare(model, source_state, seed=0)
    for name, value in model.named_parameters():
        assert torch.equal(value, source_state[name]) == (not name.startswith("head.")), name


def test_mean_var_matches_each_layer_mean_and_std():
    torch.manual_seed(5)
    source = create_model("unet", features=8, depth=2)
    with torch.no_grad():  # give every layer its own scale and offset
        for i, p in enumerate(source.parameters()):
            if p.ndim > 1:
                p.mul_(1 + i % 4).add_(0.01 * (i % 3 - 1))
    src = source.state_dict()
    model = create_model("unet", features=8, depth=2)
    create_strategy("mean_var").prepare(model, src, seed=0)
    checked = 0
    for name, value in model.named_parameters():
        ref = src[name]
        if ref.ndim < 2:
            continue
        n = ref.numel()
        assert not torch.equal(value, ref), name
        assert abs(value.mean() - ref.mean()) < 5 * ref.std() / n**0.5 + 1e-7, name
        assert abs(value.std() / ref.std() - 1) < 5 * (1 / (2 * (n - 1))) ** 0.5, name
        checked += 1
    assert checked >= 10
    for layer in norm_layers(model):  # norm layers are reset, statistics belong to forgotten features
        assert torch.equal(layer.weight, torch.ones_like(layer.weight))


def test_discriminative_learning_rates_are_applied_per_stage(source_state):
    model = _tiny()
    plan = create_strategy("discriminative:decay=0.5").prepare(model, source_state)
    scales = {g["name"]: g["lr_scale"] for g in plan.param_groups}
    assert scales == {s: 0.5 ** (5 - i) for i, s in enumerate(STAGES)}
    optimizer = torch.optim.SGD(plan.optimizer_groups(lr=0.1))
    w = model.encoder.stages["input"].conv1.conv.weight
    before = w.detach().clone()
    model(torch.randn(2, 1, 8, 8)).square().mean().backward()
    grad = w.grad.clone()
    optimizer.step()
    torch.testing.assert_close(w.detach(), before - 0.1 * 0.5**5 * grad)


def test_gradual_unfreezing_over_epochs(source_state):
    model = _tiny()
    strategy = create_strategy("gradual_unfreeze:every=1")
    plan = strategy.prepare(model, source_state, seed=0)
    optimizer = torch.optim.SGD(plan.optimizer_groups(lr=0.1))
    for epoch in range(3):
        strategy.on_epoch_start(model, epoch, optimizer)
        before = _snapshot(model)
        model.train()
        model(torch.randn(2, 1, 8, 8)).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        stage_of = model.parameter_stages()
        trained = {stage_of[n] for n, p in model.named_parameters() if not torch.equal(p, before[n])}
        assert trained == set(STAGES[-(epoch + 1) :]), epoch
    assert strategy.on_epoch_start(model, 2, optimizer) is False  # same epoch, nothing new


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("frist_k", "did you mean 'first_k'"),
        ("first_k:k=2,bn_mdoe=adapt", "did you mean 'bn_mode'"),
        ("first_k:two", "must be int"),
        ("first_k:0", "must be > 0"),
        ("first_k:bn_mode=sometimes", "did you mean|Allowed: adapt, frozen"),
        ("discriminative:decay=2", r"in \(0, 1.0\]"),
        ("last_k:1,2,3", "takes 2 parameter"),
    ],
)
def test_bad_specs_are_config_errors(spec, match):
    with pytest.raises(ConfigError, match=match):
        create_strategy(spec)


def test_mapping_spec_and_prepare_errors(source_state):
    assert create_strategy({"name": "first_k", "k": 2}).config.k == 2
    assert create_strategy({"name": "last_k", "params": {"k": 3}}).config.k == 3
    with pytest.raises(ConfigError, match=r"k=9 must be in \[1, 6\]"):
        create_strategy("first_k:9").prepare(_tiny(), source_state)
    with pytest.raises(ConfigError, match="give a checkpoint"):
        create_strategy("full").prepare(_tiny(), None)


@pytest.mark.parametrize("spec", ["first_k:2", "last_k:2,bn_mode=adapt", "frozen_encoder"])
def test_verify_strategy_confirms_and_catches_tampering(spec, source_state):
    from medtransfer.transfer.verify import compare_with_source, verify_strategy

    model = _tiny()
    plan = create_strategy(spec).prepare(model, source_state, seed=0)
    _train_steps(model, plan)
    assert verify_strategy(model, source_state, plan.description) == []
    frozen = next(row["stage"] for row in plan.description["stages"] if not row["trainable"])
    with torch.no_grad():
        next(model.stage_modules()[frozen].parameters()).add_(1.0)
    assert verify_strategy(model, source_state, plan.description) == [
        f"stage {frozen} was frozen but 1 parameter tensors changed"
    ]
    assert compare_with_source(model, source_state)[frozen]["max_abs_diff"] == pytest.approx(1.0)
