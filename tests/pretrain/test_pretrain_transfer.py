"""A classification or restoration source loads into a segmentation target through finetune's own model
building and strategy code: the encoder (and whatever else matches) is loaded and the audit says so."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from pretrain_helpers import one_thread, quadrant_classes, smooth_images, tiny_config  # noqa: E402

from medtransfer.checkpoint import load_checkpoint  # noqa: E402
from medtransfer.finetune import FinetuneConfig, build_model, load_source  # noqa: E402
from medtransfer.pretrain.run import run_pretrain  # noqa: E402
from medtransfer.transfer import apply_strategy  # noqa: E402

pytestmark = pytest.mark.usefixtures(one_thread.__name__)


def _target(ckpt_path: Path, tmp_path: Path, num_labels: int = 3):
    config = FinetuneConfig.from_dict({"init": str(ckpt_path), "data": str(tmp_path), "out": str(tmp_path / "run")})
    pretrained = load_source(config)
    model, spec = build_model(config, pretrained, 1, num_labels=num_labels)
    return model, spec, apply_strategy("full", model, pretrained, seed=0)


@pytest.mark.parametrize(
    ("task", "source"),
    [("classification", quadrant_classes(n=40)), ("restoration", smooth_images(n=40))],
)
def test_source_loads_into_a_segmentation_target(tmp_path, task, source):
    path = run_pretrain(tiny_config(task, tmp_path / f"{task}.pt", epochs=1, steps_per_epoch=2), source=source)
    ckpt = load_checkpoint(path)
    model, spec, applied = _target(path, tmp_path)
    assert spec["config"].get("head", "segmentation") == "segmentation"
    audit = applied.audit
    encoder_keys = [k for k in model.state_dict() if k.startswith("encoder.")]
    assert set(encoder_keys) <= set(audit["loaded"])  # the whole encoder transfers
    for key in encoder_keys:
        torch.testing.assert_close(model.state_dict()[key], ckpt["state_dict"][key])
    if task == "classification":
        # an encoder-only source: decoder and segmentation head stay freshly initialised
        assert any(k.startswith("decoder.") for k in audit["missing"])
        assert {"head.fc.weight", "head.fc.bias"} <= set(audit["unexpected"])
    else:
        # restoration trains the full U-Net: the decoder transfers too, the 1-channel head does not fit 3 classes
        assert any(k.startswith("decoder.") for k in audit["loaded"])
        assert "head.conv.weight" in audit["skipped_shape"]
    assert model.eval()(torch.zeros(1, 1, 16, 16)).shape == (1, 3, 16, 16)
