"""The trainer learns a toy problem, validates per case, keeps best/last checkpoints and a history."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.distributed as dist
from train_toy_helpers import SquaresDataset, toy_batches, toy_config, toy_net

from medtransfer.checkpoint import load_checkpoint
from medtransfer.train import (
    CheckpointManager,
    DiceAccumulator,
    DiceValidator,
    MetricsHistory,
    StepBatchSampler,
    Trainer,
)


def test_trainer_learns_and_records(tmp_path, caplog):
    config = toy_config(epochs=4, steps_per_epoch=6, lr=0.1, schedule="cosine", loss="dice_ce")
    validator = DiceValidator(SquaresDataset(n=8, seed=1), num_classes=1, batch_size=4)
    manager = CheckpointManager(tmp_path, model_spec={"name": "toy", "config": {}}, meta={"labels": ["bg", "sq"]})
    trainer = Trainer(
        toy_net(),
        config,
        toy_batches(config),
        validator=validator,
        checkpoints=manager,
        history=MetricsHistory(tmp_path / "history.jsonl"),
    )
    with caplog.at_level("INFO", logger="medtransfer.train"):
        result = trainer.fit()
    losses = [r["train_loss"] for r in result.history]
    assert losses[-1] < 0.6 * losses[0]
    assert result.history[-1]["val_dice"] > 0.8
    assert result.best_metric == max(r["val_dice"] for r in result.history)
    records = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1, 2, 3]
    best = load_checkpoint(result.best_checkpoint)
    assert best["meta"]["val_dice"] == result.best_metric
    assert best["meta"]["labels"] == ["bg", "sq"]
    assert best["model"]["name"] == "toy"
    assert "trainer" not in best
    assert "trainer" in load_checkpoint(result.last_checkpoint)
    assert any("epoch 4/4" in m and "val_dice" in m for m in caplog.messages)


def test_dice_accumulator_pools_slices_per_case():
    pred = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]])
    ref = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]])
    acc = DiceAccumulator(num_classes=1)
    acc.update(pred, ref, ["a", "a", "b"])
    per_case = acc.per_case()
    assert per_case["a"] == [pytest.approx(2 * 1 / (2 + 2))]  # pooled over both slices of case a
    assert per_case["b"] == [0.0]
    assert acc.aggregate()["dice"] == pytest.approx(0.25)
    empty = DiceAccumulator(num_classes=2)
    empty.update(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long), ["c"])
    assert all(math.isnan(v) for v in empty.per_case()["c"])


def test_batches_are_deterministic_and_cover_the_data():
    sampler = StepBatchSampler(10, batch_size=5, steps_per_epoch=2, seed=3)
    assert sorted(sampler.global_indices(0, 0) + sampler.global_indices(0, 1)) == list(range(10))
    assert sampler.global_indices(0, 0) != sampler.global_indices(1, 0)
    ranks = [StepBatchSampler(10, 4, 2, seed=3, rank=r, world_size=2).indices(1, 1) for r in range(2)]
    assert sorted(ranks[0] + ranks[1]) == sorted(sampler.__class__(10, 4, 2, seed=3).global_indices(1, 1))


def test_epoch_hooks_run_every_epoch():
    calls = []
    config = toy_config(epochs=2, steps_per_epoch=1)
    Trainer(toy_net(), config, toy_batches(config), epoch_start_hooks=[lambda m, e, o: calls.append(e)]).fit()
    assert calls == [0, 1]


def test_ddp_single_process_gloo_matches_plain_training(tmp_path):
    config = toy_config(epochs=2, steps_per_epoch=3)
    plain = Trainer(toy_net(), config, toy_batches(config))
    plain.fit()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ddp = Trainer(toy_net(), config, toy_batches(config), checkpoints=CheckpointManager(tmp_path))
        assert isinstance(ddp.network, torch.nn.parallel.DistributedDataParallel)
        ddp.fit()
    finally:
        dist.destroy_process_group()
    for key, value in plain.model.state_dict().items():
        assert torch.allclose(value.float(), ddp.model.state_dict()[key].float(), atol=1e-6), key
    saved = load_checkpoint(tmp_path / "checkpoint_last.pt")["state_dict"]
    assert not any(k.startswith("module.") for k in saved)


def test_a_tied_validation_dice_keeps_the_later_model_as_best(tmp_path):
    """Validation Dice stuck at 0 (a small lesion not found yet) must not pin "best" to the first epoch."""

    def never_found(model):
        return {"dice": 0.0}

    config = toy_config(epochs=3, steps_per_epoch=2, lr=0.1)
    manager = CheckpointManager(tmp_path, model_spec={"name": "toy", "config": {}})
    result = Trainer(toy_net(), config, toy_batches(config), validator=never_found, checkpoints=manager).fit()
    assert load_checkpoint(result.best_checkpoint)["meta"]["epoch"] == 2


def test_history_records_the_largest_learning_rate_of_the_groups():
    """Discriminative rates put the input stage first at the smallest rate; the history shows the head's."""
    net = toy_net()
    groups = [
        {"params": list(net[0].parameters()) + list(net[1].parameters()), "lr_scale": 0.25},
        {"params": list(net[4].parameters()), "lr_scale": 1.0},
    ]
    config = toy_config(epochs=1, steps_per_epoch=2, lr=0.1, schedule="constant", warmup_steps=0)
    result = Trainer(net, config, toy_batches(config), param_groups=groups).fit()
    assert result.history[-1]["lr"] == pytest.approx(0.1)
