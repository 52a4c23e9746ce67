"""Med3D-style multi-dataset pretraining: shared encoder, one branch per dataset, mixed batches."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from pretrain_helpers import TINY_MODEL, blob_segmentation, one_thread, tiny_config  # noqa: E402

from medtransfer.checkpoint import load_checkpoint  # noqa: E402
from medtransfer.errors import ConfigError  # noqa: E402
from medtransfer.models import create_model, load_pretrained  # noqa: E402
from medtransfer.pretrain.config import PretrainConfig  # noqa: E402
from medtransfer.pretrain.datasets import SegmentationDataset  # noqa: E402
from medtransfer.pretrain.multi import MultiHeadModel, MultiSourceDataset  # noqa: E402
from medtransfer.pretrain.multi_run import run_multi  # noqa: E402
from medtransfer.pretrain.sources import SourceData  # noqa: E402


def _binary(source: SourceData) -> SourceData:
    return SourceData(source.images, (source.labels == 1).astype("int64"), ["background", "bright"], {"source": "b"})


def test_multi_head_model_shares_one_encoder():
    model = MultiHeadModel("unet", TINY_MODEL, {"a": 3, "b": 2})
    x = torch.zeros(2, 1, 16, 16)
    assert model(x, "a").shape == (2, 3, 16, 16)
    assert model(x, "b").shape == (2, 2, 16, 16)
    single = create_model("unet", **TINY_MODEL, out_channels=3)
    assert set(model.encoder_state_dict()) == {k for k in single.state_dict() if k.startswith("encoder.")}
    with pytest.raises(ConfigError, match="did you mean"):
        model(x, "aa")


def test_balanced_mixing_is_round_robin_and_proportional_covers_everything():
    a, b = SegmentationDataset(blob_segmentation(n=4)), SegmentationDataset(blob_segmentation(n=2, seed=1))
    balanced = MultiSourceDataset({"a": a, "b": b}, "balanced")
    assert len(balanced) == 8
    assert [balanced.locate(i) for i in range(6)] == [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 0)]
    proportional = MultiSourceDataset({"a": a, "b": b}, "proportional")
    assert [proportional.locate(i) for i in range(6)] == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1)]
    assert balanced[1]["dataset"] == 1
    with pytest.raises(ConfigError, match="mixing"):
        MultiSourceDataset({"a": a}, "roundrobin")


@pytest.mark.usefixtures(one_thread.__name__)
def test_multi_dataset_pretraining_trains_every_branch_and_exports_the_encoder(tmp_path):
    sources = {"squares3": blob_segmentation(n=60), "bright2": _binary(blob_segmentation(n=60, seed=3))}
    config = PretrainConfig(**tiny_config("multi", tmp_path / "multi.pt", domain="mri", epochs=3))
    ckpt = load_checkpoint(run_multi(config, sources=sources))
    metrics = ckpt["meta"]["metrics"]
    assert metrics["dice_squares3"] > 0.5
    assert metrics["dice_bright2"] > 0.5
    assert set(ckpt["meta"]["branches"]) == {"squares3", "bright2"}
    assert all(k.startswith("encoder.") for k in ckpt["state_dict"])
    target = create_model(ckpt["model"]["name"], **{**ckpt["model"]["config"], "out_channels": 1})
    audit = load_pretrained(target, ckpt)
    assert set(audit.loaded) == set(ckpt["state_dict"])
    assert audit.unexpected == []
    assert {k for k in audit.missing if not k.startswith(("decoder.", "head."))} == set()
