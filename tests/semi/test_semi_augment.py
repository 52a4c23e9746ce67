"""Strong augmentation keeps image and label aligned; feature dropout is active only in training."""

from __future__ import annotations

import torch

from medtransfer.models import create_model
from medtransfer.semi import StrongAugmentConfig, add_feature_dropout, augment_item

OFF = {"rotate_deg": 0.0, "scale": 0.0, "gamma": 0.0, "noise_std": 0.0, "bias": 0.0}


def _pair():
    label = torch.zeros(1, 12, 12, dtype=torch.long)
    label[0, 2:5, 3:9] = 1
    label[0, 8:10, 1:4] = -1
    return label.float().clone(), label


def test_flips_move_image_and_label_together():
    seen = set()
    for seed in range(8):
        torch.manual_seed(seed)
        image, label = _pair()
        out_image, out_label = augment_item(image, label, StrongAugmentConfig(flip=True, **OFF))
        assert torch.equal(out_image, out_label.float())
        seen.add(out_label.numpy().tobytes())
    assert len(seen) > 1  # flips happen


def test_affine_keeps_label_values_and_alignment():
    torch.manual_seed(0)
    image, label = _pair()
    config = StrongAugmentConfig(flip=False, rotate_deg=20.0, scale=0.1, gamma=0.0, noise_std=0.0, bias=0.0)
    out_image, out_label = augment_item(image, label, config)
    assert out_label.dtype == torch.long
    assert out_label.shape == label.shape
    assert set(out_label.unique().tolist()) <= {-1, 0, 1}
    # bilinear image vs nearest label of the same warp: where the label is 1 the image is mostly close to 1
    assert out_image[out_label == 1].mean() > 0.6


def test_intensity_transforms_change_image_only():
    torch.manual_seed(0)
    image, label = _pair()
    image = image.clamp_min(0) + 0.5
    out_image, out_label = augment_item(image, label, StrongAugmentConfig(flip=False, rotate_deg=0.0, scale=0.0))
    assert torch.equal(out_label, label)
    assert not torch.allclose(out_image, image)


def test_feature_dropout_training_only_and_removable():
    torch.manual_seed(0)
    model = create_model("unet", features=4, depth=2, norm="instance")  # no running statistics to drift
    x = torch.randn(1, 1, 16, 16)
    model.eval()
    with torch.no_grad():
        reference = model(x)
    handles = add_feature_dropout(model, 0.5)
    assert len(handles) == len(model.stage_names()) - 1
    with torch.no_grad():
        assert torch.equal(model(x), reference)
        model.train()
        a, b = model(x), model(x)
    assert not torch.equal(a, b)
    for h in handles:
        h.remove()
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), reference)
