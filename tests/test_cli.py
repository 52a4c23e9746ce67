from __future__ import annotations

import errno
import importlib
import os
import re

import numpy as np
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


@pytest.mark.parametrize("command", ["finetune", "pretrain", "predict", "ensemble"])
@pytest.mark.parametrize("value", ["0", "99999", "x"])
def test_threads_out_of_range_is_a_usage_error_before_any_work(command, value, capsys):
    # 99999 threads made OpenBLAS segfault (exit 139) while it started them
    with pytest.raises(SystemExit) as exc:
        main([command, "--threads", value])
    assert exc.value.code == 2
    most = 4 * (os.cpu_count() or 1)
    assert f"argument --threads: expected a whole number from 1 to {most}" in capsys.readouterr().err


def _raise(error):
    def fail(*args, **kwargs):
        raise error

    return fail


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (
            PermissionError(errno.EACCES, "Permission denied", "/results/run/summary.json"),
            "error: /results/run/summary.json: Permission denied; check the folder's permissions or choose another "
            "output location",
        ),
        (
            OSError(errno.ENOSPC, "No space left on device", "/results/run/ckpt.pt"),
            "error: /results/run/ckpt.pt: No space left on device; the disk is full: free some space or choose "
            "another output location",
        ),
        (
            OSError(errno.EROFS, "Read-only file system", "/mnt/cdrom/mask.nii.gz"),
            "error: /mnt/cdrom/mask.nii.gz: Read-only file system; the file system is read-only: choose another "
            "output location",
        ),
    ],
)
def test_os_errors_caused_by_the_machine_are_one_error_line(monkeypatch, capsys, error, line):
    import medtransfer.transfer

    monkeypatch.setattr(medtransfer.transfer, "list_strategies", _raise(error))
    assert main(["strategies"]) == 2
    assert capsys.readouterr().err == line + "\n"


@pytest.mark.parametrize(
    "error", [FileNotFoundError(errno.ENOENT, "No such file or directory", "/bug/path"), ValueError("a bug")]
)
def test_other_exceptions_are_bugs_and_keep_their_traceback(monkeypatch, error):
    import medtransfer.transfer

    monkeypatch.setattr(medtransfer.transfer, "list_strategies", _raise(error))
    with pytest.raises(type(error)):
        main(["strategies"])


WRITERS = {  # command line (OUT = the read-only location) -> library function that does the work
    "finetune --init none --data DATA --out OUT/run": "medtransfer.finetune.run_finetune",
    "pretrain --task segmentation --data DATA --out OUT/source.pt": "medtransfer.pretrain.run.run_pretrain",
    "report DATA --out OUT/report": "medtransfer.report.build.create_report",
    "evaluate --pred DATA --ref DATA --out OUT/eval": "medtransfer.metrics.evaluation.evaluate_folders",
    "data build-benchmark --out OUT/bench": "medtransfer.bench.build_benchmark",
    "demo --out OUT/demo": "medtransfer.experiments.demo.run_demo",
    "grid run GRID --results OUT/results": "medtransfer.experiments.load_grid",
}


@pytest.mark.parametrize("command", WRITERS)
def test_commands_refuse_a_read_only_output_before_any_work(command, read_only_dir, tmp_path, monkeypatch, capsys):
    module, name = WRITERS[command].rsplit(".", 1)
    monkeypatch.setattr(importlib.import_module(module), name, _raise(AssertionError("the work started")))
    argv = command.replace("OUT", str(read_only_dir)).replace("DATA", str(tmp_path)).replace("GRID", "g.yaml")
    assert main(argv.split()) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {read_only_dir}: cannot write here (Permission denied), so {read_only_dir}/")
    assert err.count("\n") == 1
    assert list(read_only_dir.iterdir()) == []


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("2d", "expected a 3D image (or 4D with channels last), got shape (8, 8)"),
        ("zero_affine", "the voxel-to-world affine is zero"),
        ("all_nan", "image has no finite voxel (all NaN or inf)"),
    ],
)
def test_finetune_on_an_unusable_scan_is_one_error_line_naming_the_file(
    tmp_path, capsys, write_raw_affine, bad, message
):
    from medtransfer.data.io import save_nifti

    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(6):
        label = np.zeros((8, 8, 8), np.uint8)
        label[2:6, 2:6, 2:6] = 1
        image = label * 100.0 + i
        if bad == "zero_affine":
            write_raw_affine(root / "images" / f"scan{i}.nii.gz", image.astype(np.float32), np.zeros((4, 4)))
            write_raw_affine(root / "labels" / f"scan{i}.nii.gz", label, np.zeros((4, 4)))
            continue
        image = {"2d": image[..., 4], "all_nan": np.full_like(image, np.nan)}[bad]
        save_nifti(root / "images" / f"scan{i}.nii.gz", image.astype(np.float32), np.eye(4))
        save_nifti(root / "labels" / f"scan{i}.nii.gz", label if bad != "2d" else label[..., 4], np.eye(4))
    argv = ["finetune", "--init", "none", "--data", str(root), "--out", str(tmp_path / "run"), "--n-labelled", "1"]
    assert main([*argv, "--epochs", "1", "--steps-per-epoch", "1", "--device", "cpu", "--precision", "fp32"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.search(rf"error: {root}/images/scan\d\.nii\.gz: {re.escape(message)}", err), err


def test_ctrl_c_exits_130_and_says_how_to_continue(monkeypatch, capsys):
    import medtransfer.commands.finetune as finetune_command
    import medtransfer.commands.strategies as strategies_command

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(finetune_command, "run", interrupted)
    monkeypatch.setattr(strategies_command, "run", interrupted)
    assert main(["finetune", "--init", "none", "--data", "d", "--out", "o"]) == 130
    assert capsys.readouterr().err == (
        "interrupted: rerun the same command with --resume to continue from the last checkpoint\n"
    )
    assert main(["strategies"]) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_benchmark_scripts_report_user_errors_in_one_line(capsys):
    import argparse

    import pytest

    from medtransfer.cli import nonnegative_float, positive_int, run_script
    from medtransfer.errors import ConfigError

    def bad_option():
        raise ConfigError("--data x: not a brainshift folder")

    def missing_file():
        open("/nonexistent/results.json")  # noqa: SIM115 - raises FileNotFoundError

    for fn, message in ((bad_option, "error: --data x: not a brainshift folder\n"),
                        (missing_file, "error: /nonexistent/results.json: not found\n")):  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            run_script(fn)
        assert exit_info.value.code == 2
        assert capsys.readouterr().err == message
    for returned, code in ((0, 0), (3, 3), (None, 0), ({"summary": {}}, 0)):  # real_heads.py returns its report
        with pytest.raises(SystemExit) as exit_info:
            run_script(lambda returned=returned: returned)
        assert exit_info.value.code == code
    assert positive_int("3") == 3
    for text in ("0", "-2", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            positive_int(text)
    assert nonnegative_float("0.5") == 0.5
    for text in ("-1", "inf", "nan"):
        with pytest.raises(argparse.ArgumentTypeError):
            nonnegative_float(text)


def test_console_logging_goes_through_tqdm_while_a_command_runs(monkeypatch):
    """A warning during a progress bar is written above the bar (tqdm.write), not into it; with no console handler
    (a test harness, an embedding application) logging is left as it is."""
    import logging
    import sys

    from medtransfer.cli import _log_above_progress_bars

    root = logging.getLogger()
    console = logging.StreamHandler(sys.stderr)
    monkeypatch.setattr(root, "handlers", [console])
    with _log_above_progress_bars():
        assert console not in root.handlers
        assert [type(h).__name__ for h in root.handlers] == ["_TqdmLoggingHandler"]
    assert root.handlers == [console]
    quiet = logging.StreamHandler(open(__file__))  # not the console
    monkeypatch.setattr(root, "handlers", [quiet])
    with _log_above_progress_bars():
        assert root.handlers == [quiet]
    quiet.stream.close()


def test_finetune_cache_dir_that_is_a_file_is_refused_before_any_work(tmp_path, capsys):
    """It was a NotADirectoryError traceback after preprocessing had started."""
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    argv = ["finetune", "--init", "none", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run")]
    assert main([*argv, "--cache-dir", str(a_file)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {a_file}: is a file; --cache-dir is a folder (give a new or existing folder)"]
    assert not (tmp_path / "run").exists()
