"""SpotTUnet gate: frozen copies stay bit-identical, fine-tuned copies and the policy learn, collapse is exact."""

from __future__ import annotations

import json

import pytest
import torch

from medtransfer.errors import ConfigError
from medtransfer.models import create_model
from medtransfer.transfer.spottune import (
    FINETUNED,
    FROZEN,
    POLICY_GROUP,
    GatedStage,
    SpotTuneLoss,
    collapse,
    prepare_spottune,
)

MODELS = [("unet", {"features": 4, "depth": 2}), ("dart_resunet", {"features": 4})]


def _prepared(name, cfg, spec="spottune:lam=0.01"):
    torch.manual_seed(0)
    source = create_model(name, **cfg).state_dict()
    torch.manual_seed(1)
    return source, prepare_spottune(spec, create_model(name, **cfg), source, seed=0)


def _train(plan, steps=4, size=16):
    model = plan.model
    opt = torch.optim.SGD([{**g, "lr": 0.05 * g["lr_scale"]} for g in plan.param_groups])
    loss_fn = plan.wrap_loss(torch.nn.BCEWithLogitsLoss())
    model.train()
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = torch.randn(2, 1, size, size, generator=gen)
        y = (x > 0).float()
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize(("name", "cfg"), MODELS)
def test_frozen_copies_bit_identical_and_finetuned_copies_change(name, cfg):
    source, plan = _prepared(name, cfg)
    model = plan.model
    frozen_before = {
        s: {k: v.clone() for k, v in m.state_dict().items()} for s, m in model.frozen_stage_modules().items()
    }
    tuned_before = {
        s: {k: v.clone() for k, v in m.state_dict().items()} for s, m in model.finetuned_stage_modules().items()
    }
    logits_before = model.policy_logits.detach().clone()
    # the frozen copies start as the pretrained weights of their stage
    plain_src = create_model(name, **cfg)
    plain_src.load_state_dict(source)
    src_stages = plain_src.stage_modules()
    for stage, state in frozen_before.items():
        for key, value in src_stages[stage].state_dict().items():
            assert torch.equal(state[key], value)
    _train(plan)
    for stage, module in model.frozen_stage_modules().items():
        for key, value in module.state_dict().items():
            assert torch.equal(value, frozen_before[stage][key]), f"{stage}.{key} changed"
        assert not module.training  # frozen norm statistics even in train mode
    changed = [
        s
        for s, m in model.finetuned_stage_modules().items()
        if any(not torch.equal(v, tuned_before[s][k]) for k, v in m.state_dict().items())
    ]
    assert "head" in changed
    assert len(changed) >= 2
    assert not torch.equal(model.policy_logits.detach(), logits_before)


def test_policy_readable_and_serialisable():
    _, plan = _prepared("unet", {"features": 4, "depth": 2})
    model = plan.model
    policy = model.policy()
    assert list(policy) == ["input", "enc1", "bottleneck", "dec2", "dec1"]  # head is always fine-tuned
    assert all(p == pytest.approx(0.5) for p in policy.values())
    with torch.no_grad():
        model.policy_logits[:, 1] = torch.tensor([2.0, -1.0, 0.5, -3.0, 1.0])
    choices = model.choices()
    assert choices == {
        "input": FINETUNED,
        "enc1": FROZEN,
        "bottleneck": FINETUNED,
        "dec2": FROZEN,
        "dec1": FINETUNED,
        "head": FINETUNED,
    }
    assert model.policy()["input"] == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item())
    desc = json.loads(json.dumps(plan.description()))
    assert desc["finetuned_stages"] == ["input", "bottleneck", "dec1", "head"]
    assert desc["params"]["lam"] == 0.01
    groups = {g["name"]: g for g in plan.param_groups}
    assert groups[POLICY_GROUP]["lr_scale"] == 10.0
    assert groups[POLICY_GROUP]["weight_decay"] == 0.0


@pytest.mark.parametrize(("name", "cfg"), MODELS)
def test_collapse_matches_eval_forward(name, cfg):
    _, plan = _prepared(name, cfg)
    model = plan.model
    _train(plan, steps=2)
    with torch.no_grad():
        model.policy_logits.copy_(
            torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(len(model.gated_names), 1)[: len(model.gated_names)]
        )
    model.eval()
    plain = collapse(model)
    assert not any(isinstance(m, GatedStage) for m in plain.modules())
    assert set(plain.state_dict()) == set(create_model(name, **cfg).state_dict())
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model(x), plain(x), atol=1e-6)
    # the collapsed stage is the chosen copy
    for stage, choice in model.choices().items():
        if stage in model.frozen_stage_modules():
            src = model.frozen_stage_modules()[stage] if choice == FROZEN else model.finetuned_stage_modules()[stage]
            for (k, v), (_, w) in zip(
                src.state_dict().items(), plain.stage_modules()[stage].state_dict().items(), strict=True
            ):
                assert torch.equal(v, w), k


def test_eval_is_deterministic_and_training_gates_are_hard():
    _, plan = _prepared("unet", {"features": 4, "depth": 2})
    model = plan.model
    model.train()
    gates = model.sample_gates()
    assert set(gates.detach().unique().tolist()) <= {0.0, 1.0}
    assert gates.requires_grad
    model.eval()
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_regulariser_pushes_toward_freezing():
    """With only the penalty (huge lambda, zero task loss) every stage learns to freeze."""
    _, plan = _prepared("unet", {"features": 4, "depth": 2}, "spottune:lam=1.0,temperature=0.5")
    model = plan.model
    opt = torch.optim.SGD([model.policy_logits], lr=0.5)
    loss_fn = SpotTuneLoss(lambda logits, target: logits.sum() * 0.0, model)
    model.train()
    torch.manual_seed(0)
    for _ in range(60):
        loss = loss_fn(model(torch.randn(1, 1, 8, 8)), None)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(c == FROZEN for s, c in model.choices().items() if s != "head")
    assert max(model.policy().values()) < 0.2


def _params(spec):
    from medtransfer.transfer.registry import create_params

    return create_params(spec)[1]


def test_spec_parsing_and_errors():
    params = _params("spottune:lam=0.1,temperature=0.5,policy_lr_scale=3")
    assert (params.lam, params.temperature, params.policy_lr_scale) == (0.1, 0.5, 3.0)
    assert _params({"name": "spottune", "lam": 0.2}).lam == 0.2
    assert _params("spottune:warmup=3").warmup == 3
    with pytest.raises(ConfigError, match="warmup must be int"):
        _params("spottune:warmup=2.5")
    with pytest.raises(ConfigError, match="did you mean 'lam'"):
        _params("spottune:lamb=0.1")
    with pytest.raises(ConfigError, match="temperature > 0"):
        _params("spottune:temperature=0")
    with pytest.raises(ConfigError, match="--init"):
        prepare_spottune("spottune", create_model("unet", features=4, depth=2), None)


def test_trains_through_the_trainer():
    from medtransfer.train import StepBatchSampler, TrainBatches, TrainConfig, Trainer

    _, plan = _prepared("unet", {"features": 4, "depth": 2})
    gen = torch.Generator().manual_seed(0)
    data = []
    for _ in range(4):
        x = torch.randn(1, 16, 16, generator=gen)
        data.append({"image": x, "label": (x > 0).float()})
    frozen = {s: [p.clone() for p in m.parameters()] for s, m in plan.model.frozen_stage_modules().items()}
    config = TrainConfig(epochs=1, steps_per_epoch=3, batch_size=2, progress=False, device="cpu", loss="bce")
    trainer = Trainer(
        plan.model,
        config,
        TrainBatches(data, StepBatchSampler(4, 2, 3, seed=0)),
        loss=plan.wrap_loss(torch.nn.BCEWithLogitsLoss()),
        param_groups=plan.param_groups,
    )
    assert trainer.fit().global_step == 3
    for stage, module in plan.model.frozen_stage_modules().items():
        assert all(torch.equal(a, b) for a, b in zip(module.parameters(), frozen[stage], strict=True))
    assert any(g["name"] == POLICY_GROUP for g in trainer.optimizer.param_groups)


def test_collapse_checkpoint_gives_a_plain_loadable_checkpoint(tmp_path):
    from medtransfer.checkpoint import load_checkpoint, save_checkpoint

    cfg = {"features": 4, "depth": 2}
    _, plan = _prepared("unet", cfg)
    _train(plan, steps=2)
    with torch.no_grad():
        plan.model.policy_logits[:, 1] = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0])
    path = save_checkpoint(
        tmp_path / "best.pt",
        {
            "model": {"name": "unet", "config": cfg},
            "state_dict": plan.model.state_dict(),
            "meta": {"strategy": plan.description()},
        },
    )
    from medtransfer.transfer.spottune import collapse_checkpoint

    collapse_checkpoint(path)
    ckpt = load_checkpoint(path)
    plain = create_model("unet", **cfg)
    plain.load_state_dict(ckpt["state_dict"])  # strict: exactly the architecture's keys
    assert ckpt["meta"]["spottune"]["finetuned_stages"] == ["input", "bottleneck", "dec1", "head"]
    x = torch.randn(1, 1, 16, 16)
    plan.model.eval()
    plain.eval()
    with torch.no_grad():
        assert torch.allclose(plain(x), plan.model(x), atol=1e-6)
    assert collapse_checkpoint(path) == path  # already plain: unchanged


def test_warmup_trains_every_finetuned_copy_and_leaves_the_policy():
    _, plan = _prepared("unet", {"features": 4, "depth": 2}, "spottune:lam=0.01,warmup=1")
    model = plan.model
    assert plan.on_epoch_start(model, 0) is True
    model.eval()
    assert model.sample_gates().tolist() == [1.0] * 5  # validation during warm-up uses the fine-tuned copies
    before = {s: [p.clone() for p in m.parameters()] for s, m in model.finetuned_stage_modules().items()}
    logits = model.policy_logits.detach().clone()
    _train(plan, steps=2)
    assert torch.equal(model.policy_logits.detach(), logits)
    for stage, module in model.finetuned_stage_modules().items():
        assert any(not torch.equal(a, b) for a, b in zip(module.parameters(), before[stage], strict=True)), stage
    # a checkpoint written during warm-up collapses to what was validated: every fine-tuned copy
    assert set(model.choices().values()) == {FINETUNED}
    assert set(collapse(model).state_dict()) == set(create_model("unet", features=4, depth=2).state_dict())
    state = model.state_dict()
    assert bool(state["warmup_flag"])
    assert plan.on_epoch_start(model, 1) is True
    assert not bool(model.state_dict()["warmup_flag"])
    _train(plan, steps=2)
    assert not torch.equal(model.policy_logits.detach(), logits)
