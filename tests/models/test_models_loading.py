"""load_pretrained: the audit across channel/class changes, prefixes, files, input-channel adaptation."""

from __future__ import annotations

import logging

import pytest
import torch

from medtransfer.checkpoint import save_checkpoint
from medtransfer.errors import DataError
from medtransfer.models import create_model
from medtransfer.models.loading import adapt_input_conv, load_pretrained


def _unet(**kw):
    return create_model("unet", features=4, depth=2, **kw)


def test_identical_model_loads_everything_and_matches():
    src, dst = _unet(), _unet()
    audit = load_pretrained(dst, src.state_dict())
    assert audit.loaded == list(dst.state_dict())
    assert not audit.skipped_shape
    assert not audit.missing
    for k, v in dst.state_dict().items():
        assert torch.equal(v, src.state_dict()[k])


def test_class_change_gets_fresh_head_reported_as_skipped(caplog):
    src, dst = _unet(out_channels=4), _unet(out_channels=2)
    fresh_head = dst.head.conv.weight.detach().clone()
    with caplog.at_level(logging.INFO, logger="medtransfer.models.loading"):
        audit = load_pretrained(dst, src.state_dict())
    assert audit.skipped_shape == ["head.conv.weight", "head.conv.bias"]
    assert audit.shapes["head.conv.weight"] == "source (4, 4, 1, 1) vs model (2, 4, 1, 1)"
    assert torch.equal(dst.head.conv.weight, fresh_head)
    assert "skipped_shape: 2" in caplog.text
    with pytest.raises(DataError, match="strict_shapes"):
        load_pretrained(_unet(out_channels=2), src.state_dict(), strict_shapes=True)


def test_input_channel_adaptation_rgb_to_grey_and_to_four():
    src = _unet(in_channels=3)
    w = src.encoder.stages["input"].conv1.conv.weight.detach()
    grey = _unet(in_channels=1)
    audit = load_pretrained(grey, src.state_dict())
    assert audit.adapted == ["encoder.stages.input.conv1.conv.weight"]
    assert not audit.skipped_shape
    torch.testing.assert_close(grey.encoder.stages["input"].conv1.conv.weight, w.sum(1, keepdim=True))
    four = _unet(in_channels=4)
    load_pretrained(four, src.state_dict())
    expected = torch.cat([w, w[:, :1]], 1) * 3 / 4
    torch.testing.assert_close(four.encoder.stages["input"].conv1.conv.weight, expected)
    no_adapt = load_pretrained(_unet(in_channels=1), src.state_dict(), adapt_input=False)
    assert no_adapt.skipped_shape == ["encoder.stages.input.conv1.conv.weight"]


def test_adapt_input_conv_keeps_response_to_grey_image():
    w = torch.randn(5, 3, 3, 3)
    grey = torch.randn(1, 1, 6, 6)
    ref = torch.nn.functional.conv2d(grey.repeat(1, 3, 1, 1), w)
    torch.testing.assert_close(torch.nn.functional.conv2d(grey, adapt_input_conv(1, w)), ref)


def test_prefixes_file_source_missing_and_unexpected(tmp_path):
    src = _unet()
    wrapped = {f"module._orig_mod.{k}": v for k, v in src.state_dict().items()}
    wrapped["module.extra.weight"] = torch.zeros(1)
    del wrapped["module._orig_mod.head.conv.bias"]
    path = save_checkpoint(tmp_path / "src.pt", {"model": {"name": "unet", "config": {}}, "state_dict": wrapped})
    audit = load_pretrained(_unet(), path)
    assert audit.missing == ["head.conv.bias"]
    assert audit.unexpected == ["extra.weight"]
    assert audit.to_dict()["loaded"] == audit.loaded


def test_unrelated_source_is_an_error():
    with pytest.raises(DataError, match="no pretrained tensor matches"):
        load_pretrained(_unet(), {"foo.weight": torch.zeros(3)})


def test_2d_source_into_3d_model_is_inflated():
    src = _unet()
    dst = create_model("unet", spatial_dims=3, features=4, depth=2)
    audit = load_pretrained(dst, src.state_dict(), inflate_mode="i3d")
    assert "encoder.stages.input.conv1.conv.weight" in audit.inflated
    assert not audit.skipped_shape
    w2 = src.encoder.stages["input"].conv1.conv.weight
    torch.testing.assert_close(dst.encoder.stages["input"].conv1.conv.weight.sum(-1), w2)  # over Z, the slice axis


def test_whole_model_weights_into_bare_encoder_strip_the_prefix():
    src = _unet()
    encoder = _unet().encoder
    audit = load_pretrained(encoder, src.state_dict())
    assert audit.prefix == "-encoder."
    assert not audit.missing
    assert "head.conv.weight" in audit.unexpected
    torch.testing.assert_close(encoder.stages["input"].conv1.conv.weight, src.encoder.stages["input"].conv1.conv.weight)


def test_classification_source_into_segmentation_target():
    src = _unet(head="classification", num_classes=10)
    dst = _unet(out_channels=2)
    audit = load_pretrained(dst, src.state_dict())
    assert audit.unexpected == ["head.fc.weight", "head.fc.bias"]
    assert {k.split(".")[0] for k in audit.missing} == {"decoder", "head"}
    assert all(k.startswith("encoder.") for k in audit.loaded)


@pytest.mark.parametrize("wrapper", ["state_dict", "network_weights", "model_state_dict"])
def test_weights_nested_in_common_checkpoint_dicts(wrapper):
    src = _unet()
    audit = load_pretrained(_unet(), {wrapper: src.state_dict(), "epoch": 3})
    assert len(audit.loaded) == len(src.state_dict())
