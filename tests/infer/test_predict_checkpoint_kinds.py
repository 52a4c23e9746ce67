"""What predict makes of checkpoints that are not a fine-tuned segmentation run: a segmentation source applied as
it is (labels from its output classes), a classification source, labels that do not match the outputs, weights
that do not fit the model they name -- one error line each, never a traceback."""

from __future__ import annotations

import numpy as np
import pytest

from medtransfer.checkpoint import save_checkpoint
from medtransfer.cli import main
from medtransfer.data.io import save_nifti
from medtransfer.errors import DataError
from medtransfer.infer.predictor import load_predictor
from medtransfer.models import create_model

SMALL = {"spatial_dims": 2, "in_channels": 1, "features": 4, "depth": 2}


def _checkpoint(tmp_path, config: dict, meta: dict, state=None, name="c.pt"):
    model = create_model("unet", **config)
    path = tmp_path / name
    spec = {"name": "unet", "config": config}
    save_checkpoint(path, {"model": spec, "state_dict": model.state_dict() if state is None else state, "meta": meta})
    return path


def test_a_three_class_segmentation_source_predicts_its_three_classes(tmp_path):
    meta = {"kind": "medtransfer.source", "class_names": ["background", "wm", "gm"]}
    path = _checkpoint(tmp_path, {**SMALL, "out_channels": 3}, meta)
    predictor = load_predictor(path, device="cpu", precision="fp32")
    assert predictor.label_values == [0, 1, 2]
    assert predictor.label_names == {"background": 0, "wm": 1, "gm": 2}
    scan = np.random.default_rng(0).normal(size=(16, 16, 4)).astype(np.float32)
    from medtransfer.data.io import Volume

    labels = predictor.predict(Volume(scan, np.eye(4)))
    assert labels.shape == scan.shape
    assert set(np.unique(labels)) <= {0, 1, 2}
    # without class names (or with names that do not fit): class_0..class_2
    unnamed = load_predictor(_checkpoint(tmp_path, {**SMALL, "out_channels": 3}, {}, name="u.pt"), device="cpu")
    assert unnamed.label_names == {"class_0": 0, "class_1": 1, "class_2": 2}
    binary = load_predictor(_checkpoint(tmp_path, SMALL, {"class_names": ["a", "b"]}, name="b.pt"), device="cpu")
    assert binary.label_names == {"background": 0, "foreground": 1}  # a binary source as before


def test_a_classification_source_is_refused_with_what_to_do(tmp_path):
    meta = {"kind": "medtransfer.source", "source_task": "classification"}
    path = _checkpoint(tmp_path, {**SMALL, "head": "classification", "num_classes": 4}, meta)
    with pytest.raises(DataError) as info:
        load_predictor(path, device="cpu")
    assert str(info.value) == (
        f"{path}: a model with a classification head (source task classification) draws no label map; fine-tune it "
        f"on labelled scans first (medtransfer finetune --init {path} ...) and predict with that run"
    )


def test_labels_that_do_not_match_the_outputs_are_refused(tmp_path):
    path = _checkpoint(tmp_path, {**SMALL, "out_channels": 3}, {"labels": {"background": 0, "lesion": 1}})
    with pytest.raises(DataError) as info:
        load_predictor(path, device="cpu")
    assert str(info.value) == (
        f"{path}: the model has 3 output channel(s) but the checkpoint names 2 label(s) (0, 1); it is not a "
        "consistent segmentation checkpoint"
    )


def test_weights_that_do_not_fit_the_named_model_are_one_error_line(tmp_path, capsys):
    other = create_model("unet", **{**SMALL, "features": 8}).state_dict()
    path = _checkpoint(tmp_path, SMALL, {}, state=other)
    scan = save_nifti(tmp_path / "s.nii.gz", np.zeros((16, 16, 4), np.float32) + 1, np.eye(4))
    code = main(["predict", "--model", str(path), "--input", str(scan), "--output", str(tmp_path / "m.nii.gz")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: its weights do not fit the model it names (unet): ")
    assert err.count("\n") == 1
    assert not (tmp_path / "m.nii.gz").exists()
