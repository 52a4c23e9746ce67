"""``medtransfer finetune`` with what users do: an --out that holds something, a start that fails, labels the
uint8 working grid cannot hold, a 4D label, a case with other channels than the dataset's, a damaged config."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from medtransfer.cli import main
from medtransfer.data.io import Volume, save_nifti
from medtransfer.data.preprocess import PreprocessConfig, preprocess_case
from medtransfer.errors import DataError
from testkit import blob_dataset

TINY = ["--init", "none", "--n-labelled", "2", "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2"]
TINY += ["--device", "cpu", "--precision", "fp32", "--threads", "1"]


def _finetune(data, out, *extra):
    return main(["finetune", "--data", str(data), "--out", str(out), *TINY, *extra])


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.rsplit("\r", 1)[-1]  # after the last progress bar redraw
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


def test_an_out_that_holds_something_is_refused_unless_resumed(tmp_path, capsys):
    data = blob_dataset(tmp_path / "data")
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert _finetune(data, notes) == 2
    assert _one_error(capsys) == f"error: {notes}: is a file; --out is the run folder to create"
    assert notes.read_text() == "mine"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("# my own options\n")
    assert _finetune(data, mine) == 2
    assert _one_error(capsys) == (
        f"error: {mine}: exists and is not empty; finetune never writes over a folder: pass --resume to continue "
        "(or return) the run in it, or give another --out"
    )
    assert (mine / "config.yaml").read_text() == "# my own options\n"
    run = tmp_path / "run"
    assert _finetune(data, run) == 0
    before = (run / "checkpoints" / "checkpoint_last.pt").read_bytes()
    assert _finetune(data, run, "--seed", "7") == 2  # another run into a finished one: refused, weights kept
    assert "exists and is not empty" in _one_error(capsys)
    assert (run / "checkpoints" / "checkpoint_last.pt").read_bytes() == before
    assert _finetune(data, run, "--resume") == 0  # the same options, resumed: returned as it is
    assert (run / "checkpoints" / "checkpoint_last.pt").read_bytes() == before


def test_resume_into_a_folder_that_holds_no_run_is_refused_and_its_files_kept(tmp_path, capsys):
    """--resume continues a run (config.yaml); the user's own env.json / history.jsonl / summary.json in a folder
    without one are neither written over nor taken for a finished run, and --resume is not suggested for it."""
    data = blob_dataset(tmp_path / "data")
    mine = tmp_path / "mine"
    mine.mkdir()
    files = {"env.json": '{"mine": 1}', "history.jsonl": "{}\n", "summary.json": '{"mine": 2}'}
    for name, text in files.items():
        (mine / name).write_text(text)
    assert _finetune(data, mine, "--resume") == 2
    assert _one_error(capsys) == (
        f"error: {mine}: holds no medtransfer run (no config.yaml), so there is nothing to --resume and its files "
        "are not finetune's to write over; give another --out"
    )
    assert _finetune(data, mine) == 2
    assert _one_error(capsys) == (
        f"error: {mine}: exists and is not empty; finetune never writes over a folder: give another --out"
    )
    assert {p.name: p.read_text() for p in mine.iterdir()} == files


def test_sigterm_before_the_first_checkpoint_leaves_no_run_folder(tmp_path, capsys, monkeypatch):
    """SIGTERM (timeout, SLURM, docker stop) ends finetune as Ctrl-C does: nothing trained yet, so the folder it
    started goes, and the corrected command runs; exit status 143."""
    import os
    import signal
    import threading

    from medtransfer.train import Trainer

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are installed from the main thread only")
    # a test runner's worker may handle SIGTERM itself (pytest-xdist): the command then leaves it alone, so the
    # test stands in for a plain process, whose SIGTERM action is the default
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    data = blob_dataset(tmp_path / "data")
    run = tmp_path / "run"

    def terminated(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(Trainer, "fit", terminated)
    try:
        assert _finetune(data, run) == 143
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the command's handler is gone again
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "terminated: stopped before the first checkpoint, so nothing was kept; rerun the same command to start again"
    )
    assert not run.exists()
    monkeypatch.undo()
    assert _finetune(data, run) == 0


def test_a_start_that_fails_leaves_nothing_so_the_corrected_command_runs(tmp_path, capsys):
    data = blob_dataset(tmp_path / "data")
    typo = tmp_path / "typo.yaml"
    typo.write_text("train: {loss: dice-ce}\n")
    run = tmp_path / "run"
    assert _finetune(data, run, "--config", str(typo)) == 2
    assert "dice-ce" in _one_error(capsys)
    assert not run.exists()  # no config.yaml / env.json of a run that never trained
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text("train: {loss: dice_ce}\n")
    assert _finetune(data, run, "--config", str(fixed)) == 0
    # an empty folder made by the user beforehand stays, emptied of what the failed run wrote
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _finetune(data, empty, "--config", str(typo)) == 2
    assert empty.is_dir()
    assert list(empty.iterdir()) == []


def test_a_damaged_config_of_a_resumed_run_is_one_line(tmp_path, capsys):
    data = blob_dataset(tmp_path / "data")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("data: [x\n")
    assert _finetune(data, run, "--resume") == 2
    assert _one_error(capsys).startswith(f"error: {run / 'config.yaml'}: unreadable (")
    (run / "config.yaml").write_text("- a\n")
    assert _finetune(data, run, "--resume") == 2
    assert _one_error(capsys) == (
        f"error: {run / 'config.yaml'}: holds a list, not a run's options; choose another --out"
    )


def _head(shape=(12, 10, 8)):
    image = np.random.default_rng(0).random(shape).astype(np.float32)
    return Volume(image, np.eye(4), source="img.nii.gz")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([0, 1026], r"^lab.nii.gz: label values from 0 to 1026; allowed are whole numbers from 0 to 255: remap"),
        (
            [-1, 1],
            r"^lab.nii.gz: label values from -1 to 1; allowed are whole numbers from 0 \(background\) to 255: "
            "negative values are no classes",
        ),
        ([0, 0.5], r"^lab.nii.gz: \d+ label voxel\(s\) are not whole numbers \(e.g. 0.5\)"),
    ],
)
def test_labels_the_uint8_grid_cannot_hold_are_refused_not_wrapped(values, message):
    head = _head()
    label = np.full(head.array.shape, values[0], dtype=np.float32 if 0.5 in values else np.int16)
    label[2:6, 2:6, 2:6] = values[1]
    with pytest.raises(DataError, match=message):
        preprocess_case([head], PreprocessConfig(), Volume(label, np.eye(4), source="lab.nii.gz"))


def test_a_label_stored_4d_with_one_volume_is_a_3d_label():
    head = _head()
    label = np.zeros(head.array.shape, np.uint8)
    label[2:6, 2:6, 2:6] = 1
    _, flat, _ = preprocess_case([head], PreprocessConfig(), Volume(label, np.eye(4)))
    _, four_d, _ = preprocess_case([head], PreprocessConfig(), Volume(label[..., None], np.eye(4)))
    np.testing.assert_array_equal(four_d, flat)


def test_a_case_with_other_channels_than_the_dataset_is_one_line(tmp_path, capsys):
    data = blob_dataset(tmp_path / "data")
    image = tmp_path / "data" / "imagesTr" / "c0_0000.nii.gz"
    one = np.asarray(nib.load(image).dataobj)
    save_nifti(image, np.stack([one, one], axis=-1), np.diag([1.0, 1.0, 2.0, 1.0]))  # 2 volumes, 1 declared
    assert _finetune(data, tmp_path / "run", "--n-labelled", "4") == 2
    line = _one_error(capsys)
    assert "c0_0000.nii.gz: case c0 has 2 image channel(s), the dataset declares 1" in line
    assert not (tmp_path / "run").exists()


def test_a_pool_too_small_for_its_fractions_is_warned_about(tmp_path, caplog):
    from medtransfer.data.layouts import load_dataset
    from medtransfer.finetune import FinetuneConfig, select_cases

    data = blob_dataset(tmp_path / "data", n=2)
    config = FinetuneConfig.from_dict({"data": str(data), "out": str(tmp_path / "r"), "init": "none", "n_labelled": 1})
    with caplog.at_level("WARNING", logger="medtransfer.finetune.select"):
        select_cases(config, load_dataset(data))
    assert "its 2 case(s) leave no validation case at val_fraction" in caplog.text


def test_a_target_domain_on_data_without_domains_says_so(tmp_path, capsys):
    data = blob_dataset(tmp_path / "data")
    (data / "metadata.csv").unlink()
    assert _finetune(data, tmp_path / "run", "--target-domain", "siemens_3t") == 2
    assert _one_error(capsys) == (
        f"error: {data}: no case has a domain, so there is no domain 'siemens_3t'; give domains in metadata.csv "
        "(a 'domain' column), or leave --target-domain out"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('foreground_fraction: "0.3"', "foreground_fraction must be a number in [0, 1), got '0.3'"),
        ("seed: abc", "seed must be a whole number >= 0, got 'abc'"),
        ("train: [1, 2]", "train must be a mapping of options, got [1, 2]"),
        ('preprocess: {target_spacing: "3,3,3"}', "target_spacing must be three positive numbers (mm) such as"),
        ("preprocess: {target_spacing: [.inf, 3, 3]}", "target_spacing must be three positive numbers (mm)"),
        ("preprocess: {target_spacings: [3, 3, 3]}", "unknown preprocessing option 'target_spacings'; did you mean"),
        ("train: {epoch: 1}", "unknown train config key 'epoch'; did you mean 'epochs'"),
        ("patch_size: [32, -32, 32]", "patch_size must be positive whole numbers such as [48, 48, 48]"),
    ],
)
def test_config_files_with_wrong_values_are_one_line_naming_the_file(tmp_path, capsys, text, message):
    data = blob_dataset(tmp_path / "data")
    config = tmp_path / "cfg.yaml"
    config.write_text(text + "\n")
    assert _finetune(data, tmp_path / "run", "--config", str(config)) == 2
    assert _one_error(capsys).startswith(f"error: {config}: {message}")
    assert not (tmp_path / "run").exists()


def test_an_empty_train_section_is_no_options(tmp_path):
    data = blob_dataset(tmp_path / "data")
    config = tmp_path / "cfg.yaml"
    config.write_text("train:\nforeground_fraction: 0.25\n")
    assert _finetune(data, tmp_path / "run", "--config", str(config)) == 0


def test_labels_without_any_foreground_are_warned_about(tmp_path, caplog):
    data = blob_dataset(tmp_path / "data")
    for path in (data / "labelsTr").iterdir():
        volume = nib.load(str(path))
        save_nifti(path, np.zeros(volume.shape, np.uint8), volume.affine)
    with caplog.at_level("WARNING", logger="medtransfer.finetune.segment"):
        assert _finetune(data, tmp_path / "run") == 0
    warned = [r.getMessage() for r in caplog.records if "foreground voxel" in r.getMessage()]
    assert len(warned) == 1
    assert warned[0].startswith("none of the 2 labelled training case(s) has a foreground voxel (")


def test_training_scans_of_mixed_voxel_sizes_are_resampled_to_their_median(tmp_path):
    """Scans at 1 x 1 x 2 mm and at 1 x 1 x 3 mm (every other one): the run trains (and records) the median voxel
    size of its training and validation scans, the spacing predict resamples new scans to; a dataset of one voxel
    size keeps each scan's own (null)."""
    import yaml

    from medtransfer.checkpoint import load_checkpoint

    data = blob_dataset(tmp_path / "data")
    for i in (0, 2, 4):
        for path in (data / "imagesTr" / f"c{i}_0000.nii.gz", data / "labelsTr" / f"c{i}.nii.gz"):
            volume = nib.load(str(path))
            save_nifti(path, np.asarray(volume.dataobj), np.diag([1.0, 1.0, 3.0, 1.0]))
    run, split = tmp_path / "run", tmp_path / "split.yaml"
    split.write_text("test_fraction: 0.0\nval_fraction: 0.34\n")  # 4 training scans, 2 validation
    assert _finetune(data, run, "--n-labelled", "4", "--config", str(split)) == 0
    config = yaml.safe_load((run / "config.yaml").read_text())
    used = config["cases"]["labelled"] + config["cases"]["val"]
    z = [3.0 if int(case[1:]) % 2 == 0 else 2.0 for case in used]
    assert sorted(set(z)) == [2.0, 3.0]  # both voxel sizes are among them
    expected = [1.0, 1.0, float(np.median(z))]
    assert config["preprocess"]["target_spacing"] == expected
    meta = load_checkpoint(run / "checkpoints" / "checkpoint_last.pt")["meta"]
    assert meta["preprocess"]["target_spacing"] == expected
    uniform = blob_dataset(tmp_path / "uniform")
    assert _finetune(uniform, tmp_path / "run2") == 0
    assert yaml.safe_load((tmp_path / "run2" / "config.yaml").read_text())["preprocess"]["target_spacing"] is None


def test_an_out_among_the_dataset_scans_is_refused(tmp_path, capsys):
    data = blob_dataset(tmp_path / "data")
    before = sorted(p.name for p in (data / "imagesTr").iterdir())
    assert _finetune(data, data / "imagesTr" / "run") == 2
    assert _one_error(capsys) == (
        f"error: {data / 'imagesTr' / 'run'}: lies in {(data / 'imagesTr').resolve()}, a folder of the dataset's "
        "scans or labels; the run's files there would break the dataset: give an --out outside it"
    )
    assert sorted(p.name for p in (data / "imagesTr").iterdir()) == before
    assert _finetune(data, data / "runs" / "a") == 0  # beside the scans, inside the dataset folder: fine


def test_a_budget_beyond_the_training_pool_says_what_the_split_held_out(tmp_path, capsys):
    data = blob_dataset(tmp_path / "data")  # 6 subjects, some held out for validation and test
    assert _finetune(data, tmp_path / "run", "--n-labelled", "6") == 2
    line = _one_error(capsys)
    assert line.startswith(f"error: n_labelled 6 (--n-labelled): the training pool of {data} holds ")
    pool = int(line.split(" holds ")[1].split()[0])
    assert "subject(s) (of 6: " in line
    assert f"give 1 to {pool}, or lower the held-out fractions" in line
    assert not (tmp_path / "run").exists()
