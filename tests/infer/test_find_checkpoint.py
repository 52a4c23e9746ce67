"""Which checkpoint of a run folder a predictor (or a grid's evaluation) loads."""

from __future__ import annotations

import pytest

from medtransfer.errors import ConfigError, DataError
from medtransfer.infer import find_checkpoint


def _run(tmp_path, names):
    (tmp_path / "checkpoints").mkdir(parents=True)
    for name in names:
        (tmp_path / "checkpoints" / name).write_bytes(b"")
    return tmp_path


def test_best_is_the_default_and_last_is_chosen_on_request(tmp_path):
    run = _run(tmp_path, ["checkpoint_best.pt", "checkpoint_last.pt"])
    assert find_checkpoint(run).name == "checkpoint_best.pt"
    assert find_checkpoint(run, "last").name == "checkpoint_last.pt"


def test_each_choice_falls_back_to_the_other(tmp_path):
    assert find_checkpoint(_run(tmp_path / "a", ["checkpoint_last.pt"]), "best").name == "checkpoint_last.pt"
    assert find_checkpoint(_run(tmp_path / "b", ["checkpoint_best.pt"]), "last").name == "checkpoint_best.pt"


def test_a_file_is_itself_and_bad_choices_are_named(tmp_path):
    run = _run(tmp_path, ["checkpoint_best.pt"])
    assert find_checkpoint(run / "checkpoints" / "checkpoint_best.pt", "last").name == "checkpoint_best.pt"
    with pytest.raises(ConfigError, match="allowed are best, last"):
        find_checkpoint(run, "newest")
    with pytest.raises(DataError, match="no checkpoint found"):
        find_checkpoint(tmp_path / "empty")
