"""``finetune --resume`` refuses other options (naming each), ``--init`` takes a run folder (as predict does)."""

from __future__ import annotations

import json

import pytest
import yaml

from medtransfer.checkpoint import load_checkpoint
from medtransfer.cli import main
from medtransfer.train import Trainer
from testkit import FINETUNE_ARGS, blob_dataset, source_checkpoint


class Killed(Exception):
    pass


def _argv(data, source, out, *extra):
    base = ["finetune", "--init", str(source), "--data", str(data), "--out", str(out), "--n-labelled", "2"]
    return [*base, *FINETUNE_ARGS, *extra]


def _killed_after_one_epoch(monkeypatch, argv) -> None:
    """Run ``medtransfer`` with ``argv`` and kill it after its first epoch (its checkpoint written)."""
    original = Trainer.on_epoch_end

    def end_then_die(self, epoch, seconds):
        original(self, epoch, seconds)
        raise Killed

    monkeypatch.setattr(Trainer, "on_epoch_end", end_then_die)
    with pytest.raises(Killed):
        main(argv)
    monkeypatch.setattr(Trainer, "on_epoch_end", original)


def test_resume_with_other_options_is_refused_naming_each_and_leaves_the_run_alone(tmp_path, monkeypatch, capsys):
    data, source, out = blob_dataset(tmp_path / "ds"), source_checkpoint(tmp_path / "src.pt"), tmp_path / "run"
    _killed_after_one_epoch(monkeypatch, _argv(data, source, out, "--seed", "1"))
    assert not (out / "summary.json").exists()
    config_before = (out / "config.yaml").read_text()
    last_before = load_checkpoint(out / "checkpoints" / "checkpoint_last.pt")["trainer"]["global_step"]

    assert main([*_argv(data, source, out, "--seed", "2", "--lr", "0.1", "--strategy", "first_k:1"), "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {out} was fine-tuned with other options (")
    for change in ("seed: 1 -> 2", "strategy: 'full' -> 'first_k:1'", "train.lr: 0.01 -> 0.1", "train.seed: 1 -> 2"):
        assert change in err, err
    assert "; resume it with the same options, or choose another --out" in err
    assert (out / "config.yaml").read_text() == config_before  # the run folder still tells how it was made
    assert not (out / "summary.json").exists()

    # where it runs and how it reports do not change the weights: resuming with those changed is fine
    assert main([*_argv(data, source, out, "--seed", "1", "--device", "cpu"), "--resume"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seed"] == 1
    assert summary["global_step"] == 6 > last_before
    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == 1


def test_resume_of_a_finished_run_with_another_budget_is_refused(tmp_path, capsys):
    data, source, out = blob_dataset(tmp_path / "ds"), source_checkpoint(tmp_path / "src.pt"), tmp_path / "run"
    assert main(_argv(data, source, out)) == 0
    argv = _argv(data, source, out)
    argv[argv.index("--n-labelled") + 1] = "3"
    assert main([*argv, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "n_labelled: 2 -> 3)" in err
    assert "(cases.labelled: added " in err  # the third labelled case, named


def test_resume_after_the_dataset_changed_is_refused_naming_the_cases(tmp_path, monkeypatch, capsys):
    """Cases added to the dataset re-draw the split: resumed, a case the first epochs trained on could become a
    test case. The resume is refused, naming what changed, and the run folder is left as it was."""
    import shutil

    data, source, out = blob_dataset(tmp_path / "ds"), source_checkpoint(tmp_path / "src.pt"), tmp_path / "run"
    _killed_after_one_epoch(monkeypatch, _argv(data, source, out))
    config_before = (out / "config.yaml").read_text()
    stored = yaml.safe_load(config_before)["cases"]
    assert len(stored["labelled"]) == 2
    assert stored["test"]
    assert set(stored["labelled"]) <= set(stored["pool"])
    bigger = blob_dataset(tmp_path / "ds10", n=10)
    shutil.rmtree(data)
    shutil.copytree(bigger, data)
    assert main([*_argv(data, source, out), "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {out} was fine-tuned with other options (cases.")
    assert "added c" in err
    assert (out / "config.yaml").read_text() == config_before
    assert not (out / "summary.json").exists()


def test_init_takes_a_run_folder_like_predict(tmp_path):
    data, source = blob_dataset(tmp_path / "ds"), source_checkpoint(tmp_path / "src.pt")
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(_argv(data, source, first)) == 0
    assert main(_argv(data, first, second, "--strategy", "first_k:1")) == 0
    meta = load_checkpoint(second / "checkpoints" / "checkpoint_best.pt")["meta"]
    assert meta["init"] == str(first)
    audit = meta["load_audit"]
    assert audit["loaded"]
    assert not audit["skipped_shape"]  # the first run's 1-channel head fits the target
