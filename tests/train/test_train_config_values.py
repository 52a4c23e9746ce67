"""TrainConfig refuses values of the wrong type or sign with one line (YAML gives strings, lists and nulls)."""

from __future__ import annotations

import math

import pytest

from medtransfer.cli import main
from medtransfer.errors import ConfigError
from medtransfer.train.config import TrainConfig
from testkit import blob_dataset


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"epochs": "5"}, "epochs must be a whole number, got '5'"),
        ({"epochs": 2.7}, "epochs must be a whole number, got 2.7"),
        ({"epochs": True}, "epochs must be a whole number, got True"),
        ({"seed": -1}, "seed must be >= 0, got -1"),
        ({"num_workers": -1}, "num_workers must be >= 0, got -1"),
        ({"warmup_steps": -5}, "warmup_steps must be >= 0, got -5"),
        ({"lr": "1e-3"}, "lr must be a finite number, got '1e-3'"),
        ({"lr": math.inf}, "lr must be a finite number, got inf"),
        ({"lr": math.nan}, "lr must be a finite number, got nan"),
        ({"lr": 0}, "lr must be > 0, got 0"),
        ({"weight_decay": -1}, "weight_decay must be >= 0, got -1"),
        ({"gamma": -1}, "gamma must be > 0, got -1"),
        ({"grad_clip": -1}, "grad_clip must be >= 0, got -1"),
        ({"progress": "no"}, "progress must be true or false, got 'no'"),
        ({"channels_last": 1}, "channels_last must be true, false or null, got 1"),
        ({"loss": None}, "loss must be a name, got None"),
    ],
)
def test_wrong_types_and_signs_are_named(values, message):
    with pytest.raises(ConfigError, match=f"^train config: {message}$".replace("(", r"\(").replace(")", r"\)")):
        TrainConfig.from_dict(values)


def test_whole_floats_and_numpy_numbers_are_read():
    import numpy as np

    config = TrainConfig.from_dict({"epochs": np.int64(3), "steps_per_epoch": 5.0, "lr": np.float32(0.5)})
    assert config.epochs == 3
    assert type(config.epochs) is int
    assert config.steps_per_epoch == 5
    assert type(config.lr) is float
    config = TrainConfig.from_dict({"epochs": 5.0, "lr": 1, "gamma": 0.5})
    assert config.epochs == 5
    assert isinstance(config.epochs, int)
    assert config.lr == 1


def test_the_cli_gives_one_line_and_writes_nothing(tmp_path, capsys):
    data = blob_dataset(tmp_path / "data")
    cfg = tmp_path / "bad.yaml"
    cfg.write_text('train: {epochs: 1, steps_per_epoch: 1, batch_size: 2, lr: "1e-3"}\n')
    out = tmp_path / "run"
    argv = ["finetune", "--init", "none", "--data", str(data), "--config", str(cfg), "--out", str(out)]
    assert main([*argv, "--n-labelled", "2", "--device", "cpu"]) == 2
    assert capsys.readouterr().err.strip().endswith("train config: lr must be a finite number, got '1e-3'")
    assert not out.exists()
