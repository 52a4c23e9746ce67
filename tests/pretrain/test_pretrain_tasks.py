"""Each source task trains for real on tiny in-memory data: the held-out loss falls well below its start and the
task metric beats chance / the do-nothing baseline; the checkpoint carries the metadata finetune needs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from pretrain_helpers import blob_segmentation, one_thread, quadrant_classes, smooth_images, tiny_config  # noqa: E402

from medtransfer.checkpoint import load_checkpoint  # noqa: E402
from medtransfer.models import create_model  # noqa: E402
from medtransfer.pretrain.run import run_pretrain  # noqa: E402

pytestmark = pytest.mark.usefixtures(one_thread.__name__)


def _train(task, source, tmp_path, **overrides):
    out = run_pretrain(tiny_config(task, tmp_path / f"{task}.pt", **overrides), source=source)
    return load_checkpoint(out)


def test_classification_learns_the_classes(tmp_path):
    ckpt = _train("classification", quadrant_classes(), tmp_path)
    metrics = ckpt["meta"]["metrics"]
    assert metrics["chance"] == 0.25
    assert metrics["accuracy"] >= 0.6
    assert metrics["accuracy"] > metrics["majority"] + 0.2
    assert metrics["loss_end"] < 0.6 * metrics["loss_start"]
    assert ckpt["model"]["config"]["head"] == "classification"
    assert ckpt["model"]["config"]["num_classes"] == 4


def test_segmentation_reaches_a_good_dice(tmp_path):
    ckpt = _train("segmentation", blob_segmentation(), tmp_path, epochs=3)
    metrics = ckpt["meta"]["metrics"]
    assert metrics["dice"] > 0.6
    assert metrics["loss_end"] < 0.5 * metrics["loss_start"]
    assert ckpt["model"]["config"]["out_channels"] == 3


def test_restoration_beats_the_corrupted_input(tmp_path):
    ckpt = _train("restoration", smooth_images(), tmp_path, epochs=3)
    metrics = ckpt["meta"]["metrics"]
    assert metrics["mse"] < 0.7 * metrics["mse_identity"]  # better than returning the corrupted input
    assert metrics["loss_end"] < 0.5 * metrics["loss_start"]
    assert ckpt["model"]["config"]["head"] == "restoration"


def test_rotation_prediction_beats_chance(tmp_path):
    ckpt = _train("rotation", smooth_images(), tmp_path)
    metrics = ckpt["meta"]["metrics"]
    assert metrics["chance"] == 0.25
    assert metrics["accuracy"] >= 0.6
    assert metrics["loss_end"] < 0.6 * metrics["loss_start"]


def test_checkpoint_metadata_rebuilds_the_model(tmp_path):
    ckpt = _train("classification", quadrant_classes(n=40), tmp_path, epochs=1, steps_per_epoch=2)
    meta = ckpt["meta"]
    assert meta["source_task"] == "classification"
    assert meta["source_domain"] == "natural"
    assert meta["architecture"] == ckpt["model"]
    assert meta["steps"] == 2
    assert meta["epochs"] == 1
    assert meta["data"]["source"] == "quadrant squares"
    assert meta["class_names"][0] == "top-left"
    model = create_model(ckpt["model"]["name"], **ckpt["model"]["config"])
    assert meta["stage_names"] == model.stage_names()
    model.load_state_dict(ckpt["state_dict"])  # strict: the checkpoint is the whole source model
    assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 4)
    assert (tmp_path / "classification.pt.run" / "checkpoint_last.pt").is_file()


@pytest.mark.parametrize("loss", ["l1"])
def test_restoration_l1_loss_option(tmp_path, loss):
    ckpt = _train("restoration", smooth_images(n=40), tmp_path, restoration_loss=loss, epochs=1, steps_per_epoch=3)
    assert ckpt["meta"]["pretrain_config"]["restoration_loss"] == "l1"
    assert ckpt["meta"]["metrics"]["mse_identity"] > 0
