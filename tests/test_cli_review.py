"""CLI review fixes: options checked at parse time or before any work, messages that name the option."""

from __future__ import annotations

import pytest

from medtransfer.cli import main


def _usage_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["finetune", "--init", "none", "--data", "d", "--out", "o", "--epochs", "0"], "--epochs"),
        (["finetune", "--init", "none", "--data", "d", "--out", "o", "--batch-size", "0"], "--batch-size"),
        (["finetune", "--init", "none", "--data", "d", "--out", "o", "--steps-per-epoch", "-1"], "--steps-per-epoch"),
        (["pretrain", "--task", "segmentation", "--out", "o.pt", "--epochs", "0"], "--epochs"),
        (["pretrain", "--task", "segmentation", "--out", "o.pt", "--batch-size", "x"], "--batch-size"),
        (["data", "build-benchmark", "--out", "b", "--subjects-per-domain", "0"], "--subjects-per-domain"),
        (["data", "build-benchmark", "--out", "b", "--natural-count", "-1"], "--natural-count"),
        (["grid", "run", "g.yaml", "--workers", "0"], "--workers"),
    ],
)
def test_counts_are_checked_when_the_options_are_read(argv, option, capsys):
    err = _usage_error(argv, capsys)
    assert f"argument {option}: expected a whole number >=" in err
    assert "Traceback" not in err


def test_build_benchmark_workers_zero_still_means_one_per_core():
    from medtransfer.cli import build_parser

    args = build_parser().parse_args(["data", "build-benchmark", "--out", "b", "--workers", "0"])
    assert args.workers == 0


@pytest.mark.parametrize("command", ["finetune", "pretrain"])
@pytest.mark.parametrize("device", ["gpu", "cuda:99"])
def test_bad_device_is_refused_before_any_data_work(command, device, tmp_path, monkeypatch, capsys):
    import medtransfer.utils

    def no_work(*args, **kwargs):
        raise AssertionError("work started before --device was checked")

    monkeypatch.setattr(medtransfer.utils, "check_writable", no_work)
    argv = {
        "finetune": ["finetune", "--init", "none", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o")],
        "pretrain": ["pretrain", "--task", "segmentation", "--out", str(tmp_path / "o.pt")],
    }[command]
    assert main([*argv, "--device", device]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: ")
    assert repr(device) in err
    assert "cuda" in err


def test_evaluate_pred_that_is_a_file_says_a_folder_is_expected(tmp_path, capsys):
    pred = tmp_path / "notnii.nii.gz"
    pred.write_bytes(b"x")
    ref = tmp_path / "ref"
    ref.mkdir()
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {pred}: is a file; the prediction must be a folder of .nii/.nii.gz files\n"


def test_one_semi_option_without_unlabelled_only_applies(capsys):
    argv = ["finetune", "--init", "none", "--data", "d", "--out", "o", "--pseudo-threshold", "0.8"]
    assert main(argv) == 2
    assert "--pseudo-threshold only applies with --unlabelled" in capsys.readouterr().err


def test_ensemble_min_component_error_says_none_as_its_help_does(tmp_path, capsys):
    argv = ["ensemble", "--model", "a", "--model", "b", "--out", str(tmp_path / "e.json"), "--min-component", "big"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == "error: --min-component must be 'auto', 'none' or a size in mm³ >= 0, got 'big'\n"


def test_pretrain_ctrl_c_before_a_checkpoint_does_not_say_resume(tmp_path, monkeypatch, capsys):
    import medtransfer.pretrain.run as pretrain_run

    out = tmp_path / "src.pt"

    def interrupted(config, resume=False):
        pretrain_run.run_dir(out).mkdir()
        (pretrain_run.run_dir(out) / "history.jsonl").write_text("")
        raise KeyboardInterrupt

    monkeypatch.setattr(pretrain_run, "run_pretrain", interrupted)
    assert main(["pretrain", "--task", "segmentation", "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert "--resume" not in err
    assert "before the first checkpoint" in err
    assert not pretrain_run.run_dir(out).exists()  # a rerun of the same command is not refused


def test_pretrain_ctrl_c_after_a_checkpoint_says_resume(tmp_path, monkeypatch, capsys):
    import medtransfer.pretrain.run as pretrain_run

    out = tmp_path / "src.pt"

    def interrupted(config, resume=False):
        pretrain_run.run_dir(out).mkdir()
        (pretrain_run.run_dir(out) / "checkpoint_last.pt").write_bytes(b"x")
        raise KeyboardInterrupt

    monkeypatch.setattr(pretrain_run, "run_pretrain", interrupted)
    assert main(["pretrain", "--task", "segmentation", "--out", str(out)]) == 130
    assert "rerun the same command with --resume" in capsys.readouterr().err
    assert (pretrain_run.run_dir(out) / "checkpoint_last.pt").exists()
