"""A stage none of whose tensors came from the source (missing from it or of another shape) is described as
``fresh`` and keeps its fresh init: mean-var does not redraw it from the statistics of its own random init."""

from __future__ import annotations

import torch

from medtransfer.models import create_model
from medtransfer.transfer import create_strategy

ENCODER = ["input", "enc1", "bottleneck"]


def _classifier_source():
    return create_model("unet", features=4, depth=2, head="classification", num_classes=10).state_dict()


def _inits(plan):
    return {row["stage"]: row["init"] for row in plan.description["stages"]}


def test_stages_a_classification_source_lacks_are_fresh_not_pretrained():
    model = create_model("unet", features=4, depth=2, out_channels=2)
    plan = create_strategy("full").prepare(model, _classifier_source(), seed=0)
    assert {k.split(".")[0] for k in plan.audit.missing} == {"decoder", "head"}
    assert _inits(plan) == {
        "input": "pretrained",
        "enc1": "pretrained",
        "bottleneck": "pretrained",
        "dec2": "fresh",
        "dec1": "fresh",
        "head": "fresh",
    }


def test_a_head_of_another_shape_is_fresh():
    source = create_model("unet", features=4, depth=2, out_channels=3).state_dict()
    model = create_model("unet", features=4, depth=2, out_channels=2)
    plan = create_strategy("full").prepare(model, source, seed=0)
    assert plan.audit.skipped_shape == ["head.conv.weight", "head.conv.bias"]
    assert _inits(plan) == {**{s: "pretrained" for s in [*ENCODER, "dec2", "dec1"]}, "head": "fresh"}


def test_mean_var_leaves_tensors_the_source_lacks_at_their_fresh_init():
    source = _classifier_source()
    torch.manual_seed(0)
    model = create_model("unet", features=4, depth=2, out_channels=2)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    plan = create_strategy("mean_var").prepare(model, source, seed=0)
    assert _inits(plan) == {**{s: "mean_var" for s in ENCODER}, "dec2": "fresh", "dec1": "fresh", "head": "fresh"}
    after = model.state_dict()
    for key in plan.audit.missing:
        assert torch.equal(after[key], fresh[key]), key  # not redrawn from its own init's mean and std
    weight = "encoder.stages.input.conv1.conv.weight"
    assert not torch.equal(after[weight], source[weight])  # loaded tensors are redrawn
