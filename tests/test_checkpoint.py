from __future__ import annotations

import pytest
import torch

from medtransfer.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from medtransfer.errors import DataError


def test_round_trip_adds_format(tmp_path):
    weights = {"w": torch.arange(3.0)}
    path = save_checkpoint(tmp_path / "c.pt", {"model": {"name": "unet", "config": {}}, "state_dict": weights})
    ckpt = load_checkpoint(path)
    assert ckpt["format"] == FORMAT
    assert torch.equal(ckpt["state_dict"]["w"], weights["w"])


@pytest.mark.parametrize("key", ["state_dict", "model", "network_weights", "model_state_dict"])
def test_foreign_layouts_are_unwrapped(tmp_path, key):
    torch.save({key: {"conv.weight": torch.ones(2)}, "epoch": 3}, tmp_path / "f.pth")
    ckpt = load_checkpoint(tmp_path / "f.pth")
    assert ckpt["format"] is None
    assert torch.equal(ckpt["state_dict"]["conv.weight"], torch.ones(2))
    assert ckpt["epoch"] == 3


def test_plain_state_dict(tmp_path):
    torch.save({"a": torch.zeros(1)}, tmp_path / "s.pt")
    assert set(load_checkpoint(tmp_path / "s.pt")["state_dict"]) == {"a"}


class _Payload:
    """Any pickled class instance is code to weights_only loading."""


def test_code_in_checkpoint_is_refused(tmp_path):
    torch.save({"obj": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(DataError, match="evil.pt"):
        load_checkpoint(tmp_path / "evil.pt")


def test_missing_and_non_dict(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")
    torch.save([torch.ones(1)], tmp_path / "list.pt")
    with pytest.raises(DataError, match="must hold a dict"):
        load_checkpoint(tmp_path / "list.pt")
