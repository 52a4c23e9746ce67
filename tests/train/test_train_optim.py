"""Config parsing, optimisers with lr_scale groups, and the schedules."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from medtransfer.errors import ConfigError
from medtransfer.train import TrainConfig, create_optimizer, create_scheduler
from medtransfer.train.schedules import LRFactor


def test_config_from_dict_and_yaml(tmp_path):
    config = TrainConfig.from_dict({"optimizer": "AdamW", "schedule": "cosine", "epochs": 2}, lr=0.01)
    assert (config.optimizer, config.schedule, config.lr, config.epochs) == ("adamw", "cosine", 0.01, 2)
    (tmp_path / "c.yaml").write_text("train:\n  epochs: 3\n  precision: bf16\n")
    assert TrainConfig.from_yaml(tmp_path / "c.yaml").precision == "bf16"
    assert TrainConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("values", "message"),
    [({"epoch": 3}, "did you mean 'epochs'"), ({"optimizer": "sdg"}, "'sgd'"), ({"precision": "fp8"}, "bf16")],
)
def test_config_errors_name_the_problem(values, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict(values)


def test_dart_step_schedule():
    f = LRFactor("step", steps_per_epoch=10, total_steps=200, step_epoch=15, gamma=0.1)
    assert f(0) == f(149) == 1.0
    assert f(150) == f(199) == pytest.approx(0.1)


def test_cosine_and_poly_schedules():
    cos = LRFactor("cosine", steps_per_epoch=10, total_steps=100)
    assert cos(0) == 1.0
    assert cos(50) == pytest.approx(0.5)
    assert cos(100) == pytest.approx(0.0, abs=1e-12)
    poly = LRFactor("poly", steps_per_epoch=10, total_steps=100, poly_exponent=0.9)
    assert poly(50) == pytest.approx(0.5**0.9)
    warm = LRFactor("constant", steps_per_epoch=10, total_steps=100, warmup_steps=4)
    assert [warm(s) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]


def test_optimizer_honours_lr_scale_and_schedule():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    groups = [
        {"params": model[0].parameters(), "lr_scale": 0.1, "name": "encoder"},
        {"params": model[1].parameters(), "lr_scale": 1.0, "name": "head"},
    ]
    config = TrainConfig(lr=0.01, steps_per_epoch=2, epochs=4, step_epoch=1, schedule="step")
    opt = create_optimizer(model, config, groups)
    assert isinstance(opt, torch.optim.SGD)
    assert opt.defaults["nesterov"]
    assert opt.defaults["momentum"] == 0.9
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.001, 0.01])
    sched = create_scheduler(opt, config)
    for _ in range(2):
        opt.step()
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.0001, 0.001])


def test_zero_scale_groups_are_dropped_and_all_frozen_is_an_error():
    model = nn.Linear(2, 2)
    groups = [{"params": [model.weight], "lr_scale": 0.0}, {"params": [model.bias]}]
    opt = create_optimizer(model, TrainConfig(optimizer="adam"), groups)
    assert [len(g["params"]) for g in opt.param_groups] == [1]
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        create_optimizer(model, TrainConfig())
    assert not math.isnan(opt.param_groups[0]["lr"])
