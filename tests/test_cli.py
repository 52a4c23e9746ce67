from __future__ import annotations

import pytest

from medtransfer.cli import COMMAND_MODULES, main


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in COMMAND_MODULES:
        assert name in out


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out


@pytest.mark.parametrize("name", COMMAND_MODULES)
def test_each_command_has_help(name):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0


@pytest.mark.parametrize("command", ["finetune", "pretrain", "predict"])
def test_threads_option_sets_torch_threads_before_the_command_runs(command, monkeypatch, tmp_path, capsys):
    import torch

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    args = {
        "finetune": ["--init", "none", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "run")],
        "pretrain": ["--task", "no-such-task", "--out", str(tmp_path / "run")],
        "predict": ["--model", str(tmp_path / "missing"), "--input", "a.nii.gz", "--output", "b.nii.gz"],
    }[command]
    assert main([command, "--threads", "3", *args]) == 2  # the command itself then fails on its bad input
    assert calls == [3]
    assert "error:" in capsys.readouterr().err


def test_threads_below_one_is_a_clear_error(capsys):
    assert main(["predict", "--threads", "0", "--model", "m", "--input", "a", "--output", "b"]) == 2
    assert "--threads must be at least 1, got 0" in capsys.readouterr().err
