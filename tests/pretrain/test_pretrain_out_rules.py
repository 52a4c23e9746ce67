"""``pretrain``, ``data build-benchmark`` and ``demo`` never write over what their --out holds unless asked to."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from pretrain_helpers import one_thread  # noqa: E402

from medtransfer.cli import main  # noqa: E402

TINY = ["--size", "16", "--count", "64", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "4"]
TINY += ["--features", "4", "--depth", "2", "--threads", "1", "--no-progress", "--device", "cpu"]


def _pretrain(out, *extra):
    return main(["pretrain", "--task", "classification", "--out", str(out), *TINY, *extra])


def _one_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.strip()


@pytest.mark.usefixtures(one_thread.__name__)
def test_pretrain_refuses_an_existing_out_unless_resumed(tmp_path, capsys):
    mine = tmp_path / "mine.txt"
    mine.write_text("precious")
    assert _pretrain(mine) == 2
    assert _one_error(capsys) == (
        f"error: {mine}: already exists; pretrain never replaces a file: pass --resume to return that run (same "
        "options), or give another --out"
    )
    assert _pretrain(mine, "--resume") == 2  # not a pretrain checkpoint: never replaced either
    assert f"{mine}: not a medtransfer or PyTorch weights file" in _one_error(capsys)
    assert mine.read_text() == "precious"
    import torch

    weights = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, weights)  # someone's state dict: --resume must not train over it
    before_weights = weights.read_bytes()
    assert _pretrain(weights, "--resume") == 2
    assert _one_error(capsys) == (
        f"error: {weights}: exists and is not a finished pretrain checkpoint; --resume never replaces it: give "
        "another --out"
    )
    assert weights.read_bytes() == before_weights
    folder = tmp_path / "dir.pt"
    folder.mkdir()
    assert _pretrain(folder) == 2
    assert "is a folder; --out is the checkpoint file to write" in _one_error(capsys)
    out = tmp_path / "cls.pt"
    assert _pretrain(out) == 0
    before = out.read_bytes()
    assert _pretrain(out, "--epochs", "2") == 2
    assert "already exists; pretrain never replaces a file" in _one_error(capsys)
    assert _pretrain(out, "--resume") == 0
    assert out.read_bytes() == before
    interrupted = tmp_path / "late.pt"
    (tmp_path / "late.pt.run").mkdir()
    assert _pretrain(interrupted) == 2
    assert _one_error(capsys) == (
        f"error: {tmp_path / 'late.pt.run'}: an interrupted run of this --out; pass --resume to continue it, or delete "
        "that folder to start again"
    )


@pytest.mark.usefixtures(one_thread.__name__)
def test_an_interrupted_pretrain_resumes_only_with_its_options(tmp_path, capsys):
    from medtransfer.pretrain.run import run_dir

    out = tmp_path / "r.pt"
    assert _pretrain(out) == 0
    out.unlink()  # as if killed after its last checkpoint, before writing the source
    assert (run_dir(out) / "checkpoint_last.pt").is_file()
    assert _pretrain(out, "--resume", "--lr", "0.5") == 2
    assert "was being pretrained with other options" in _one_error(capsys)


def test_zoo_needs_data_first_and_refuses_foreign_files(tmp_path, capsys):
    assert main(["pretrain", "--task", "zoo", "--out", str(tmp_path / "zoo"), *TINY]) == 2
    assert _one_error(capsys) == "error: --task zoo pretrains MRI sources too: give --data (a brainshift folder)"
    zoo = tmp_path / "zoo2"
    zoo.mkdir()
    (zoo / "readme.txt").write_text("mine")
    assert main(["pretrain", "--task", "zoo", "--data", str(tmp_path), "--out", str(zoo), *TINY]) == 2
    assert "holds files the zoo does not write (readme.txt)" in _one_error(capsys)


def test_build_benchmark_and_demo_refuse_folders_of_other_files(tmp_path, capsys):
    user = tmp_path / "userdir"
    user.mkdir()
    (user / "metadata.csv").write_text("a,b\n")
    argv = ["data", "build-benchmark", "--out", str(user), "--spacing", "4", "--targets", "brain_extraction"]
    assert main([*argv, "--domains", "siemens_3t", "--no-sources", "--subjects-per-domain", "1"]) == 2
    assert "exists and is not empty; a benchmark is built into a new or empty folder" in _one_error(capsys)
    assert (user / "metadata.csv").read_text() == "a,b\n"
    argv = ["data", "build-benchmark", "--out", str(tmp_path / "b"), "--spacing", "4", "--targets", "brain_extraction"]
    assert main([*argv, "--seed", "-1"]) == 2
    assert "--seed must be a whole number >= 0, got -1" in _one_error(capsys)
    assert main([*argv, "--natural-count", "0"]) == 2
    assert "--natural-count must be >= 1 (or pass --no-sources), got 0" in _one_error(capsys)
    (user / "todo.txt").write_text("keep")
    assert main(["demo", "--quick", "--out", str(user), "--workers", "1"]) == 2
    assert "holds files a demo does not write (metadata.csv, todo.txt)" in _one_error(capsys)
    assert sorted(p.name for p in user.iterdir()) == ["metadata.csv", "todo.txt"]
