"""A 2.5D source's first convolution re-laid out channel by channel for a target with other image channels, context
or a symmetry channel: kernels worked out by hand, and networks that compute exactly what the source computed."""

from __future__ import annotations

import json

import pytest
import torch

from medtransfer.checkpoint import load_checkpoint
from medtransfer.finetune import FinetuneConfig, run_finetune
from medtransfer.finetune.build import InputLayout, relayout_input_kernel, relayout_source, source_layout
from medtransfer.models import create_model
from medtransfer.models.loading import adapt_input_conv, load_pretrained


def _kernel(*values: float) -> torch.Tensor:
    """A (1, I, 1, 1) kernel with input weights ``values``."""
    return torch.tensor(values, dtype=torch.float32).reshape(1, -1, 1, 1)


def _flat(weight: torch.Tensor) -> list[float]:
    return [round(v, 6) for v in weight[0, :, 0, 0].tolist()]


@pytest.mark.parametrize(
    ("source", "target", "weights", "expected"),
    [
        # T1 with one neighbour on each side (w-1, w0, w+1 = 1, 2, 3) -> T1 + FLAIR: each offset's kernel shared
        # by the two modalities (the generic cyclic repeat would give FLAIR at offset -1 the T1 kernel of offset 0)
        (InputLayout(1, 1), InputLayout(2, 1), (1, 2, 3), [0.5, 0.5, 1, 1, 1.5, 1.5]),
        # -> the same with a symmetry channel: the mirror channels start at zero
        (InputLayout(1, 1), InputLayout(1, 1, True), (1, 2, 3), [1, 0, 2, 0, 3, 0]),
        # -> one slice: the offsets' kernels add up
        (InputLayout(1, 1), InputLayout(1, 0), (1, 2, 3), [6]),
        # -> two neighbours each side: the outer offsets start at zero
        (InputLayout(1, 1), InputLayout(1, 2), (1, 2, 3), [0, 1, 2, 3, 0]),
        # two neighbours each side -> one: the outer kernels add into the outermost offsets
        (InputLayout(1, 2), InputLayout(1, 1), (1, 2, 3, 4, 5), [3, 3, 9]),
        # (T1, FLAIR) x 3 offsets (a-1, b-1, a0, b0, a+1, b+1 = 1..6) -> T1 alone: each offset's kernels summed
        (InputLayout(2, 1), InputLayout(1, 1), (1, 2, 3, 4, 5, 6), [3, 7, 11]),
        # a source with a symmetry channel (i-1, m-1, i0, m0, i+1, m+1 = 1..6) -> none: the mirror kernels dropped
        (InputLayout(1, 1, True), InputLayout(1, 1), (1, 2, 3, 4, 5, 6), [1, 3, 5]),
        # one slice, one channel -> 3 offsets, spread evenly (as the generic repeat does)
        (InputLayout(1, 0), InputLayout(1, 1), (3,), [1, 1, 1]),
        # three modalities (a, b, c = 1, 2, 3 at each offset... here offsets -1, 0, +1 hold 1-3, 4-6, 7-9) -> two:
        # timm's rule within each offset, the first two repeated and rescaled by 3 / 2
        (InputLayout(3, 1), InputLayout(2, 1), tuple(range(1, 10)), [1.5, 3, 6, 7.5, 10.5, 12]),
    ],
)
def test_kernels_are_re_laid_out_channel_by_channel(source, target, weights, expected):
    assert _flat(relayout_input_kernel(_kernel(*weights), source, target)) == pytest.approx(expected)


def test_without_context_or_mirrors_the_kernel_is_what_adapt_input_conv_gives():
    weight = torch.randn(4, 2, 3, 3)
    for channels in (1, 3, 4):
        torch.testing.assert_close(
            relayout_input_kernel(weight, InputLayout(2), InputLayout(channels)), adapt_input_conv(channels, weight)
        )


def test_a_kernel_of_another_width_is_refused():
    with pytest.raises(ValueError, match="has 3 input channels"):
        relayout_input_kernel(_kernel(1, 2, 3), InputLayout(2, 1), InputLayout(1, 1))


def _source(in_channels: int, inference: dict) -> dict:
    torch.manual_seed(0)
    config = {"spatial_dims": 2, "in_channels": in_channels, "out_channels": 1, "features": 4, "depth": 2}
    model = create_model("unet", **config)
    return {
        "model": {"name": "unet", "config": config},
        "state_dict": model.state_dict(),
        "meta": {"inference": inference},
    }


def _target(source: dict, in_channels: int, layout: InputLayout) -> tuple[torch.nn.Module, dict | None]:
    model = create_model("unet", **{**source["model"]["config"], "in_channels": in_channels})
    relaid, record = relayout_source(source, model, layout)
    audit = load_pretrained(model, relaid)
    assert not audit.adapted  # every tensor copied as it is: the re-laid kernel has the target's shape
    return model.eval(), record


def test_a_target_with_a_symmetry_channel_starts_as_its_2_5d_source():
    source = _source(3, {"context": 1})
    assert source_layout(source) == InputLayout(1, 1)
    target, record = _target(source, 6, InputLayout(1, 1, True))
    assert record == {
        "key": record["key"],
        "source": {"channels": 1, "context": 1, "symmetry": False},
        "target": {"channels": 1, "context": 1, "symmetry": True},
        "zero_channels": 3,
    }
    base = create_model("unet", **source["model"]["config"])
    base.load_state_dict(source["state_dict"])
    x, mirror = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    stacked = torch.stack([x, mirror], dim=2).flatten(1, 2)  # per offset: (image, mirror)
    with torch.no_grad():
        torch.testing.assert_close(target(stacked), base.eval()(x), rtol=1e-5, atol=1e-5)


def test_a_two_modality_target_of_a_2_5d_t1_source_sees_identical_modalities_as_the_source_saw_t1():
    source = _source(3, {"context": 1})
    target, record = _target(source, 6, InputLayout(2, 1))
    assert record["target"] == {"channels": 2, "context": 1, "symmetry": False}
    base = create_model("unet", **source["model"]["config"])
    base.load_state_dict(source["state_dict"])
    x = torch.randn(2, 3, 16, 16)
    both = torch.stack([x, x], dim=2).flatten(1, 2)  # per offset: (T1, FLAIR) with FLAIR = T1
    with torch.no_grad():
        torch.testing.assert_close(target(both), base.eval()(x), rtol=1e-5, atol=1e-5)


def test_sources_without_a_recorded_layout_or_with_the_same_one_are_left_alone():
    imported = _source(3, {})  # an imported network: no context or symmetry recorded
    assert source_layout(imported) is None
    model = create_model("unet", **{**imported["model"]["config"], "in_channels": 9})
    assert relayout_source(imported, model, InputLayout(3, 1)) == (imported, None)  # the generic adaptation
    same = _source(3, {"context": 1})
    model = create_model("unet", **same["model"]["config"])
    assert relayout_source(same, model, InputLayout(1, 1)) == (same, None)
    plain = _source(2, {"context": 0})  # two modalities, no context: adapt_input_conv keeps each modality's kernel
    model = create_model("unet", **{**plain["model"]["config"], "in_channels": 4})
    assert relayout_source(plain, model, InputLayout(4)) == (plain, None)


def test_a_source_without_a_layout_into_a_symmetry_target_keeps_its_channels_and_zero_mirrors():
    imported = _source(1, {})  # e.g. an imported one-channel network, or a 3D run (its meta has no context)
    target, record = _target(imported, 2, InputLayout(1, 0, True))
    assert record["source"] == {"channels": 1, "context": 0, "symmetry": False}
    assert record["zero_channels"] == 1
    base = create_model("unet", **imported["model"]["config"])
    base.load_state_dict(imported["state_dict"])
    x, mirror = torch.randn(2, 1, 16, 16), torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(target(torch.cat([x, mirror], 1)), base.eval()(x), rtol=1e-5, atol=1e-5)


def test_a_bare_rgb_encoder_into_a_symmetry_target_sums_rgb_and_zeroes_the_mirror():
    # a torchvision-style encoder state dict (no "encoder." prefix, 3 input channels, no layout recorded)
    rgb = create_model("resnet18_unet", in_channels=3, out_channels=1)
    bare = {k[len("encoder.") :]: v for k, v in rgb.state_dict().items() if k.startswith("encoder.")}
    model = create_model("resnet18_unet", in_channels=2, out_channels=1)
    relaid, record = relayout_source(bare, model, InputLayout(1, 0, True))
    assert record["source"] == {"channels": 3, "context": 0, "symmetry": False}
    assert record["zero_channels"] == 1
    load_pretrained(model, relaid)
    first = model.state_dict()[record["key"]]
    source_first = rgb.state_dict()[record["key"]]
    torch.testing.assert_close(first[:, 0], source_first.sum(1))  # grey = R + G + B
    assert float(first[:, 1].abs().sum()) == 0.0  # the mirror starts at zero


def test_a_run_from_a_2_5d_source_with_a_symmetry_channel_records_the_relayout(tmp_path):
    from test_lesion_recipe import RECIPE, lesion_dataset

    data = lesion_dataset(tmp_path / "lesions", n=4)
    tiny = {**RECIPE, "min_component_mm3": None, "train": {**RECIPE["train"], "epochs": 1, "steps_per_epoch": 2}}
    source = run_finetune(FinetuneConfig.from_dict({**tiny, "data": str(data), "out": str(tmp_path / "source")}))
    values = {**tiny, "symmetry_channel": True, "init": str(source / "checkpoints" / "checkpoint_last.pt")}
    out = run_finetune(FinetuneConfig.from_dict({**values, "data": str(data), "out": str(tmp_path / "run")}))
    meta = load_checkpoint(out / "checkpoints" / "checkpoint_last.pt")["meta"]
    assert meta["input_relayout"]["source"] == {"channels": 1, "context": 1, "symmetry": False}
    assert meta["input_relayout"]["target"] == {"channels": 1, "context": 1, "symmetry": True}
    assert meta["load_audit"]["adapted"] == []
    assert meta["input_relayout"]["zero_channels"] == 3  # one mirror per slice of the 2.5D stack
    assert json.loads((out / "summary.json").read_text())["init"].endswith("checkpoint_last.pt")


def test_a_frozen_first_convolution_with_zero_mirror_channels_is_warned_about(tmp_path, caplog):
    from test_lesion_recipe import RECIPE, lesion_dataset

    data = lesion_dataset(tmp_path / "lesions", n=4)
    tiny = {**RECIPE, "min_component_mm3": None, "train": {**RECIPE["train"], "epochs": 1, "steps_per_epoch": 2}}
    source = run_finetune(FinetuneConfig.from_dict({**tiny, "data": str(data), "out": str(tmp_path / "source")}))
    init = str(source / "checkpoints" / "checkpoint_last.pt")
    values = {**tiny, "symmetry_channel": True, "init": init, "strategy": "frozen_encoder"}
    with caplog.at_level("WARNING", logger="medtransfer"):
        run_finetune(FinetuneConfig.from_dict({**values, "data": str(data), "out": str(tmp_path / "frozen")}))
    assert "starts with the first convolution frozen: its 3 input channels that start at zero" in caplog.text
