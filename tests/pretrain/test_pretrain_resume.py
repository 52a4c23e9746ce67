"""An interrupted pretraining run resumes from ``OUT.run/checkpoint_last.pt`` and ends exactly where an
uninterrupted run ends (the trainer restores optimiser, schedule, data position and the RNG that draws the
Models Genesis corruptions)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from pretrain_helpers import one_thread, smooth_images, tiny_config  # noqa: E402

from medtransfer.checkpoint import load_checkpoint  # noqa: E402
from medtransfer.errors import ConfigError  # noqa: E402
from medtransfer.pretrain.run import run_dir, run_pretrain  # noqa: E402
from medtransfer.train import Trainer  # noqa: E402

pytestmark = pytest.mark.usefixtures(one_thread.__name__)


class Killed(Exception):
    pass


def test_killed_restoration_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    source = smooth_images(n=32)
    options = {"epochs": 2, "steps_per_epoch": 3, "batch_size": 4}
    reference = load_checkpoint(run_pretrain(tiny_config("restoration", tmp_path / "ref.pt", **options), source=source))

    original = Trainer.on_epoch_end

    def end_then_die(self, epoch, seconds):
        record = original(self, epoch, seconds)
        if epoch == 0:
            raise Killed
        return record

    out = tmp_path / "killed.pt"
    monkeypatch.setattr(Trainer, "on_epoch_end", end_then_die)
    with pytest.raises(Killed):
        run_pretrain(tiny_config("restoration", out, **options), source=source)
    assert not out.exists()
    assert (run_dir(out) / "checkpoint_last.pt").is_file()
    monkeypatch.setattr(Trainer, "on_epoch_end", original)

    resumed = load_checkpoint(run_pretrain(tiny_config("restoration", out, **options), source=source, resume=True))
    assert resumed["meta"]["steps"] == reference["meta"]["steps"] == 6
    assert [h["epoch"] for h in resumed["meta"]["history"]] == [0, 1]
    for key, value in reference["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=0, atol=1e-6)
    assert resumed["meta"]["metrics"]["mse"] == pytest.approx(reference["meta"]["metrics"]["mse"], abs=1e-6)


def test_resume_of_a_finished_run_returns_it_untouched(tmp_path):
    out = run_pretrain(tiny_config("rotation", tmp_path / "r.pt", epochs=1, steps_per_epoch=1), source=smooth_images(8))
    stamp = out.stat().st_mtime_ns
    assert run_pretrain(tiny_config("rotation", out, epochs=1, steps_per_epoch=1), resume=True) == out
    assert out.stat().st_mtime_ns == stamp


def test_resume_of_a_run_finished_with_other_options_is_refused(tmp_path):
    # the zoo resumes every source: a re-run with more epochs must not hand back the old weights silently
    out = run_pretrain(tiny_config("rotation", tmp_path / "r.pt", epochs=1, steps_per_epoch=1), source=smooth_images(8))
    with pytest.raises(ConfigError, match=r"other options \(epochs: 1 -> 2\); delete it"):
        run_pretrain(tiny_config("rotation", out, epochs=2, steps_per_epoch=1), resume=True)
    # where it runs and how it reports do not change the weights
    again = tiny_config("rotation", out, epochs=1, steps_per_epoch=1, device="cpu", progress=True)
    assert run_pretrain(again, resume=True) == out
