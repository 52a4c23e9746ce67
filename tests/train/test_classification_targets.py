"""Classification targets: metrics against scikit-learn and by hand, slice targets, training above chance."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from medtransfer.finetune.classification import (
    ClassificationLoss,
    ClassificationValidator,
    SliceClassificationDataset,
    area_under_curve,
    epochs_to_reach,
    slice_targets,
)
from medtransfer.metrics.classification import accuracy, balanced_accuracy, classification_metrics, roc_auc
from medtransfer.models import create_model
from medtransfer.train import TrainConfig

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def test_metrics_by_hand():
    y_true = [0, 0, 0, 1]
    y_pred = [0, 0, 0, 0]
    assert accuracy(y_true, y_pred) == 0.75
    assert balanced_accuracy(y_true, y_pred) == 0.5  # recall 1 for class 0, 0 for class 1
    # scores: positives {0.8}, negatives {0.1, 0.8, 0.3}: pairs won 2, tied 1 -> (2 + 0.5) / 3
    assert roc_auc(y_true, [0.1, 0.8, 0.3, 0.8]) == pytest.approx(2.5 / 3)
    assert np.isnan(roc_auc([1, 1], [0.2, 0.9]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 50)
    scores = np.round(np.clip(rng.uniform(0, 1, 50) + 0.3 * y, 0, 1), 1)  # rounding makes ties
    m = classification_metrics(y, scores)
    pred = (scores > 0.5).astype(int)
    assert m["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(sklearn_metrics.balanced_accuracy_score(y, pred))
    assert m["auc"] == pytest.approx(sklearn_metrics.roc_auc_score(y, scores))
    y3 = rng.integers(0, 3, 60)
    probs = rng.dirichlet(np.ones(3), 60)
    probs[np.arange(60), y3] += 0.3
    probs /= probs.sum(1, keepdims=True)
    m3 = classification_metrics(y3, probs)
    assert m3["auc"] == pytest.approx(sklearn_metrics.roc_auc_score(y3, probs, multi_class="ovr"))
    assert m3["balanced_accuracy"] == pytest.approx(sklearn_metrics.balanced_accuracy_score(y3, probs.argmax(1)))


def test_slice_targets_and_dataset():
    label = np.zeros((6, 5, 4), np.int64)
    label[2, 2, 1] = 1
    label[1:3, 1:3, 3] = 2
    assert slice_targets(label, axis=2).tolist() == [0, 1, 0, 1]
    assert slice_targets(label, axis=2, min_voxels=2).tolist() == [0, 0, 0, 1]
    assert slice_targets(label, axis=0).tolist() == [0, 1, 1, 0, 0, 0]
    case = SimpleNamespace(case_id="c", image=np.ones((1, 6, 5, 4), np.float32), label=label)
    ds = SliceClassificationDataset([case], axis=2, shape=(8, 8))
    assert len(ds) == 4
    assert ds[1]["image"].shape == (1, 8, 8)
    assert int(ds[1]["label"]) == 1
    assert ds.class_counts() == {0: 2, 1: 2}


def test_loss_matches_torch():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.5]])
    target = torch.tensor([0, 1])
    assert ClassificationLoss()(logits, target).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, target).item()
    )


def _blob_cases(n, rng):
    """Volumes whose slices hold a bright blob (lesion) or not: per-slice targets from the labels."""
    cases = []
    for i in range(n):
        label = np.zeros((16, 16, 8), np.int64)
        for z in range(8):
            if rng.uniform() < 0.5:
                x, y = rng.integers(3, 13, 2)
                label[x - 2 : x + 2, y - 2 : y + 2, z] = 1
        image = (label + rng.normal(0, 0.3, label.shape)).astype(np.float32)[None]
        cases.append(SimpleNamespace(case_id=f"c{i}", image=image, label=label))
    return cases


def _train(model, strategy, source, train, val, config):
    """Train a classification model as run_classification does: the strategy through finetune.fit."""
    from medtransfer.finetune import fit
    from medtransfer.train import StepBatchSampler, TrainBatches
    from medtransfer.transfer import apply_strategy

    applied = apply_strategy(strategy, model, source, seed=0, task="classification")
    config = TrainConfig.from_dict({**config.to_dict(), "val_every": 1, "seed": 0})
    batches = TrainBatches(train, StepBatchSampler(len(train), config.batch_size, config.steps_per_epoch, 0))
    loss, validator = ClassificationLoss(), ClassificationValidator(val)
    return fit(applied, model, config, batches, loss=loss, validator=validator).result.history


@pytest.mark.slow
def test_mean_var_and_hybrid_train_above_chance_with_a_per_epoch_curve():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    train = SliceClassificationDataset(_blob_cases(4, rng), axis=2, shape=(16, 16))
    val = SliceClassificationDataset(_blob_cases(2, rng), axis=2, shape=(16, 16))
    cfg = {"head": "classification", "num_classes": 2, "features": 4, "depth": 2}
    source = create_model("unet", **cfg).state_dict()
    config = TrainConfig(
        epochs=4, steps_per_epoch=8, batch_size=8, lr=0.01, optimizer="adam", progress=False, device="cpu"
    )
    histories = {}
    for strategy in ("mean_var", "hybrid_k:2", "full"):
        history = _train(create_model("unet", **cfg), strategy, source, train, val, config)
        assert [r["epoch"] for r in history] == [0, 1, 2, 3]
        assert all({"val_accuracy", "val_balanced_accuracy", "val_auc"} <= set(r) for r in history)
        histories[strategy] = history
    best = max(r["val_balanced_accuracy"] for history in histories.values() for r in history)
    assert best > 0.75  # chance is 0.5
    for history in histories.values():
        assert 0.0 <= area_under_curve(history) <= 1.0
    history = [{"val_accuracy": 0.5}, {"val_accuracy": 0.8}, {"val_accuracy": 0.95}]
    assert epochs_to_reach(history, target=0.9) == 3
    assert epochs_to_reach(history, target=0.99) is None
