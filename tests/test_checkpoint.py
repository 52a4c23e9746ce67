from __future__ import annotations

import ast
import errno
from pathlib import Path

import numpy as np
import pytest
import torch

import medtransfer
from medtransfer.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from medtransfer.errors import DataError, OutputError
from medtransfer.train.checkpointing import CheckpointManager


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


def test_load_errors_never_suggest_the_unsafe_loader(tmp_path):
    torch.save({"obj": _Payload()}, tmp_path / "evil.pt")
    np.save(tmp_path / "array.npy", np.zeros(3))
    (tmp_path / "truncated.pt").write_bytes(_checkpoint_bytes(tmp_path)[:60])
    expected = {
        "evil.pt": "refused: the file holds pickled code (test_checkpoint._Payload), which medtransfer never runs",
        "array.npy": "not a medtransfer or PyTorch weights file",
        "truncated.pt": "not a complete PyTorch file (truncated or damaged, or another zip archive)",
    }
    for name, message in expected.items():
        with pytest.raises(DataError) as info:
            load_checkpoint(tmp_path / name)
        assert str(info.value).startswith(f"{tmp_path / name}: {message}")
        assert "state dict of tensors" in str(info.value)
        assert "weights_only" not in str(info.value)


def _checkpoint_bytes(tmp_path) -> bytes:
    return save_checkpoint(tmp_path / "whole.pt", {"state_dict": {"w": torch.ones(4)}}).read_bytes()


def test_checkpoint_is_the_only_place_that_calls_torch_load():
    src = Path(medtransfer.__file__).parent
    callers = sorted(str(p.relative_to(src)) for p in src.rglob("*.py") if _calls_torch_load(p))
    assert callers == ["checkpoint.py"]


def _calls_torch_load(path: Path) -> bool:
    calls = (node.func for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Call))
    return any(
        isinstance(f, ast.Attribute) and f.attr == "load" and isinstance(f.value, ast.Name) and f.value.id == "torch"
        for f in calls
    )


def _fill_disk_after(n_bytes: int):
    """A ``Path.write_bytes`` that writes ``n_bytes`` and then fails as a full disk does."""

    def write_bytes(self, data):
        with self.open("wb") as handle:
            handle.write(bytes(data)[:n_bytes])
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    return write_bytes


def test_disk_full_keeps_the_earlier_checkpoint(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path / "run", {"name": "unet", "config": {}})
    manager.save("last", {"w": torch.zeros(8)}, {"step": 1})
    monkeypatch.setattr(Path, "write_bytes", _fill_disk_after(100))
    with pytest.raises(OutputError) as info:
        manager.save("last", {"w": torch.ones(8)}, {"step": 2})
    message = str(info.value)
    assert message.startswith(f"{manager.last_path}: cannot write the checkpoint: the disk is full (")
    assert (
        f"MiB free on the file system of {tmp_path / 'run'}); the existing checkpoint_last.pt is unchanged" in message
    )
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint_last.pt"]
    last = manager.load_last()
    assert torch.equal(last["state_dict"]["w"], torch.zeros(8))
    assert last["trainer"] == {"step": 1}


def test_disk_full_on_a_first_checkpoint_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(Path, "write_bytes", _fill_disk_after(0))
    with pytest.raises(OutputError, match=r"the disk is full \(0\.0 MiB needed, .*; nothing was written; free some"):
        save_checkpoint(tmp_path / "c.pt", {"state_dict": {"w": torch.ones(2)}})
    assert list(tmp_path.iterdir()) == []


def test_a_missing_best_checkpoint_of_a_run_without_validation_names_the_last_one(tmp_path):
    from medtransfer.checkpoint import missing_checkpoint_hint
    from medtransfer.infer import find_checkpoint

    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    best, last = folder / "checkpoint_best.pt", folder / "checkpoint_last.pt"
    assert missing_checkpoint_hint(best) == ""  # no last one either: nothing to point at
    torch.save({"state_dict": {}}, last)
    hint = f"; that run wrote only {last} (it had no validation scans): name that file"
    assert missing_checkpoint_hint(best) == hint
    assert missing_checkpoint_hint(folder / "other.pt") == ""
    with pytest.raises(DataError) as err:
        load_checkpoint(best)
    assert str(err.value) == f"{best}: checkpoint not found{hint}"
    with pytest.raises(DataError) as err:
        find_checkpoint(best)
    assert str(err.value) == f"{best}: checkpoint not found{hint}"
    assert find_checkpoint(tmp_path / "run") == last  # the run folder itself still finds it
