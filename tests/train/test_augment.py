"""Spatial augmentation: image and label move together, labels stay labels, draws are reproducible."""

from __future__ import annotations

import pytest
import torch

from medtransfer.errors import ConfigError
from medtransfer.finetune import FinetuneConfig
from medtransfer.train.augment import SpatialAugment, create_augment


def _item(shape):
    label = torch.zeros((1, *shape), dtype=torch.int64)
    label[(0, *[slice(s // 4, s // 2) for s in shape])] = 2  # an off-centre block of class 2
    image = torch.cat([label.float() * 10.0, label.float() * -1.0])  # two channels that both show the block
    return {"image": image, "label": label, "case": "c"}


def test_flips_move_image_and_label_identically():
    item = _item((8, 12))
    out = SpatialAugment(p_affine=0.0, p_flip=1.0)(item)
    assert torch.equal(out["label"], item["label"].flip([1, 2]))
    assert torch.equal(out["image"], item["image"].flip([1, 2]))
    assert out["case"] == "c"


@pytest.mark.parametrize("shape", [(32, 40), (16, 20, 24)])
def test_rotation_and_scaling_keep_image_and_label_aligned(shape):
    torch.manual_seed(0)
    augment = SpatialAugment(max_rotation_deg=15, scale_range=(0.85, 1.15), p_affine=1.0, p_flip=0.0)
    item = _item(shape)
    out = augment(item)
    assert out["image"].shape == item["image"].shape
    assert out["label"].dtype == torch.int64
    assert set(out["label"].unique().tolist()) <= {0, 2}  # nearest neighbour: no new label values
    assert not torch.equal(out["label"], item["label"])  # it did move
    inside = out["image"][0] > 10.0 * 0.5  # the bilinear image thresholded at half the block's value
    agree = (inside == (out["label"][0] == 2)).float().mean()
    assert agree > 0.97  # the two differ only along the block's edge


def test_same_seed_same_augmentation():
    augment = SpatialAugment(p_affine=1.0)
    torch.manual_seed(3)
    a = augment(_item((16, 16)))
    torch.manual_seed(3)
    b = augment(_item((16, 16)))
    assert torch.equal(a["image"], b["image"])
    assert torch.equal(a["label"], b["label"])


def test_modes_and_their_errors():
    assert create_augment("none") is None
    assert isinstance(create_augment("Spatial"), SpatialAugment)
    assert FinetuneConfig(data="d", out="o", augment="spatial").augment == "spatial"
    with pytest.raises(ConfigError, match="spatial"):
        FinetuneConfig(data="d", out="o", augment="spatail")


def test_rotation_is_rigid_in_voxels_whatever_the_aspect_ratio():
    """A disc in a very non-square slice stays a disc (same area, round) after rotation at zoom 1."""
    yy, xx = torch.meshgrid(torch.arange(40.0), torch.arange(120.0), indexing="ij")
    disc = (((yy - 20) ** 2 + (xx - 60) ** 2) < 10**2).long()[None]
    item = {"image": disc.float(), "label": disc, "case": "c"}
    torch.manual_seed(0)
    out = SpatialAugment(max_rotation_deg=15, scale_range=(1.0, 1.0), p_affine=1.0, p_flip=0.0)(item)["label"][0]
    assert abs(int(out.sum()) - int(disc.sum())) <= 0.03 * int(disc.sum())
    rows, cols = torch.nonzero(out, as_tuple=True)
    height, width = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
    assert abs(height - width) <= 1  # a sheared (normalised-coordinate) rotation would make an ellipse
