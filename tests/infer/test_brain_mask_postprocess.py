"""A brain-extraction run's masks are one closed brain: largest component, holes filled (as HD-BET and deepbet do)."""

from __future__ import annotations

import numpy as np
from test_infer_predict_cli import THRESHOLD, ThresholdNet

from medtransfer.checkpoint import save_checkpoint
from medtransfer.data.io import Volume
from medtransfer.infer.predictor import brain_mask_postprocess, load_predictor


def _scan() -> Volume:
    """A bright hollow box (a 'brain' with a dark hole inside) and a separate small bright blob (a 'skull' bit)."""
    array = np.zeros((24, 24, 24), np.float32)
    array[4:16, 4:16, 4:16] = 1.0
    array[8:12, 8:12, 8:12] = 0.0  # the hole
    array[19:22, 19:22, 19:22] = 1.0  # the separate blob
    return Volume(array, np.eye(4))


def _predictor(tmp_path, labels):
    meta = {
        "preprocess": {"target_spacing": [1.0, 1.0, 1.0], "clip_percentiles": [0.0, 100.0]},
        "labels": labels,
        "inference": {"divisor": 4},
    }
    spec = {"name": THRESHOLD, "config": {"spatial_dims": 3, "in_channels": 1}}
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"model": spec, "state_dict": ThresholdNet(3).state_dict(), "meta": meta})
    return load_predictor(path, device="cpu", precision="fp32")


def test_brain_mask_run_keeps_the_largest_component_with_holes_filled(tmp_path):
    mask = _predictor(tmp_path, {"background": 0, "brain": 1}).predict(_scan())
    assert mask[4:16, 4:16, 4:16].all()  # the hole is filled
    assert mask.sum() == 12**3  # the blob is gone, nothing else added
    assert mask[20, 20, 20] == 0


def test_other_labels_are_left_as_the_network_gives_them(tmp_path):
    mask = _predictor(tmp_path, {"background": 0, "lesion": 1}).predict(_scan())
    assert mask[10, 10, 10] == 0
    assert mask[20, 20, 20] == 1
    assert mask.sum() == 12**3 - 4**3 + 3**3


def test_postprocess_of_an_empty_mask_is_empty():
    assert not brain_mask_postprocess(np.zeros((5, 6, 7), np.uint8)).any()
