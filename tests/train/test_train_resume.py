"""Resuming reproduces an uninterrupted run bit for bit (in process, and after kill -9 in a subprocess)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from train_toy_helpers import Killed, SquaresDataset, stop_after, toy_batches, toy_config, toy_net

from medtransfer.checkpoint import load_checkpoint
from medtransfer.train import CheckpointManager, MetricsHistory, Trainer
from medtransfer.train.augment import SpatialAugment

SCRIPT = Path(__file__).with_name("train_resume_script.py")


def _trainer(out: Path, config, dataset=None) -> Trainer:
    return Trainer(
        toy_net(),
        config,
        toy_batches(config, dataset),
        checkpoints=CheckpointManager(out),
        history=MetricsHistory(out / "history.jsonl"),
    )


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


class _Augmented(SquaresDataset):
    """The toy squares through the spatial augmentation fine-tuning uses (``augment: spatial``)."""

    augment = SpatialAugment(p_affine=1.0)

    def __getitem__(self, i: int) -> dict:
        return self.augment(super().__getitem__(i))


@pytest.mark.parametrize("dataset", [None, _Augmented], ids=["plain", "augmented"])
def test_resume_mid_epoch_in_process_is_bit_identical(tmp_path, dataset):
    config = toy_config(epochs=3, steps_per_epoch=4, checkpoint_every_steps=3)
    full = _trainer(tmp_path / "full", config, dataset and dataset())
    full.fit()

    # The data stream dies at step 7; the last checkpoint is from step 6 (mid-epoch 2), as after a crash.
    crash = _trainer(tmp_path / "crash", config, dataset and dataset())
    crash.data.epoch = stop_after(crash.data.epoch, total_steps=7)
    with pytest.raises(Killed):
        crash.fit()
    assert load_checkpoint(tmp_path / "crash" / "checkpoint_last.pt")["trainer"]["global_step"] == 6

    resumed = _trainer(tmp_path / "crash", config, dataset and dataset())
    resumed.fit(resume=True)
    assert resumed.global_step == full.global_step == 12
    _assert_same_weights(full.model.state_dict(), resumed.model.state_dict())
    assert [r["train_loss"] for r in resumed.history.records] == [r["train_loss"] for r in full.history.records]
    lines = (tmp_path / "crash" / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1, 2]


def test_checkpoint_is_weights_only_data(tmp_path):
    trainer = _trainer(tmp_path, toy_config(epochs=1, steps_per_epoch=2))
    trainer.fit()
    ckpt = torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)
    assert set(ckpt["trainer"]["rng"]) >= {"python", "numpy", "torch"}
    assert ckpt["trainer"]["epoch"] == 1
    assert ckpt["trainer"]["step_in_epoch"] == 0


def _run(out: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(SCRIPT), str(out), *args], env=env)


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
    reference = _run(tmp_path / "ref")
    killed = _run(tmp_path / "run", "--delay", "0.03")
    ckpt = tmp_path / "run" / "checkpoint_last.pt"
    deadline = time.monotonic() + 60
    while not ckpt.exists() and time.monotonic() < deadline and killed.poll() is None:
        time.sleep(0.02)
    time.sleep(0.3)  # a little past the checkpoint, mid-way through the next steps
    assert killed.poll() is None, "the run finished before it could be killed"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    step = load_checkpoint(ckpt)["trainer"]["global_step"]
    assert 0 < step < 24
    assert not (tmp_path / "run" / "final.pt").exists()

    resumed = _run(tmp_path / "run", "--resume")
    assert resumed.wait(timeout=120) == 0
    assert reference.wait(timeout=120) == 0
    final = torch.load(tmp_path / "run" / "final.pt", weights_only=True)
    _assert_same_weights(torch.load(tmp_path / "ref" / "final.pt", weights_only=True), final)
    history = [json.loads(x) for x in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    ref_history = [json.loads(x) for x in (tmp_path / "ref" / "history.jsonl").read_text().splitlines()]
    assert [h["train_loss"] for h in history] == [h["train_loss"] for h in ref_history]
