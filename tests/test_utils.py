from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch

from medtransfer.checkpoint import save_checkpoint
from medtransfer.data.io import save_nifti
from medtransfer.errors import ConfigError, DataError
from medtransfer.finetune import FinetuneConfig
from medtransfer.train.config import TrainConfig
from medtransfer.utils import (
    atomic_path,
    check_writable,
    load_yaml,
    read_yaml_mapping,
    write_json_atomic,
    write_text_atomic,
)


def test_read_yaml_mapping(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("a: 1\nb: {c: [1, 2]}\n")
    assert read_yaml_mapping(good) == {"a": 1, "b": {"c": [1, 2]}}
    empty = tmp_path / "empty.yaml"
    empty.write_text("# only a comment\n")
    with pytest.raises(ConfigError) as err:  # a config file read as "no options" is almost always a mistake
        read_yaml_mapping(empty, what="finetune options")
    assert str(err.value) == f"{empty}: the file is empty (or only comments); expected a mapping of finetune options"
    assert read_yaml_mapping(empty, allow_empty=True) == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [("- 1\n- 2\n", "expected a mapping of train options, found list"), ("a: [1\n", "cannot read YAML")],
)
def test_bad_yaml_names_the_file(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        TrainConfig.from_yaml(path)
    assert str(path) in str(err.value)


def test_config_yaml_readers(tmp_path):
    path = tmp_path / "ft.yaml"
    path.write_text("data: d\nout: o\ntrain: {epochs: 2}\n")
    assert FinetuneConfig.from_yaml(path).train == {"epochs": 2}
    assert TrainConfig.from_yaml(path).epochs == 2  # the train: section of the same file
    (tmp_path / "list.yaml").write_text("[1]\n")
    with pytest.raises(ConfigError, match="finetune options"):
        FinetuneConfig.from_yaml(tmp_path / "list.yaml")


def test_a_key_given_twice_in_a_mapping_is_one_line_naming_the_file_the_key_and_both_lines(tmp_path, capsys):
    from medtransfer.cli import main

    grid = tmp_path / "dup.yaml"
    grid.write_text(
        "defaults: {kind: dummy}\naxes:\n  target: [brain]\n  strategy: [full, scratch]\n  seed: [0, 1]\n"
        "  strategy: [full]\n"
    )
    assert main(["grid", "status", str(grid), "--results", str(tmp_path / "res")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {grid}: cannot read YAML (line 6, column 3): duplicate key 'strategy' (first given on line 4); a "
        "key may appear once in a mapping (the second would silently replace the first)"
    ]
    train = tmp_path / "train.yaml"  # every reader of config files: finetune and train options too
    train.write_text("train:\n  lr: 0.1\n  epochs: 2\n  lr: 0.01\n")
    for read in (TrainConfig.from_yaml, FinetuneConfig.from_yaml):
        with pytest.raises(ConfigError, match=r"line 4, column 3\): duplicate key 'lr' \(first given on line 2\)"):
            read(train)


@pytest.mark.parametrize(
    "text",
    [
        "a: 1\nb: {c: [1, 2]}\n",
        "base: &b {x: 1, y: 2}\nd:\n  <<: *b\n  x: 3\n",  # a merge key's values may be overridden
        "- {a: 1}\n- {a: 2}\n",  # equal keys in different mappings
        "1: a\n'1': b\n",  # 1 and '1' are different keys
        "s: !!set {a, b}\nt: 2001-12-14\nn: ~\n",
    ],
)
def test_load_yaml_reads_what_safe_load_reads(text):
    import yaml

    assert load_yaml(text) == yaml.safe_load(text)


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.json"

    def write_half_then_fail():
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_half_then_fail()
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_published_files_get_the_permissions_of_a_plain_open(tmp_path, umask, mode):
    """Masks, summaries, reports and checkpoints are readable by whom the user's umask allows (not always 0o600)."""
    old = os.umask(umask)
    try:
        (tmp_path / "existing.json").write_text("old")
        (tmp_path / "existing.json").chmod(0o600)
        write_json_atomic(tmp_path / "summary.json", {"dice": 0.9})
        write_text_atomic(tmp_path / "existing.json", "new")
        save_nifti(tmp_path / "mask.nii.gz", np.zeros((2, 2, 2), np.uint8), np.eye(4))
        save_checkpoint(tmp_path / "ckpt.pt", {"state_dict": {"w": torch.zeros(1)}})
        with open(tmp_path / "plain.txt", "w") as handle:  # the reference: what open() gives
            handle.write("x")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == dict.fromkeys(["ckpt.pt", "existing.json", "mask.nii.gz", "plain.txt", "summary.json"], mode)


def test_atomic_write_into_a_read_only_folder_names_the_target_not_the_temporary(read_only_dir):
    target = read_only_dir / "summary.json"
    with pytest.raises(PermissionError) as err:
        write_text_atomic(target, "{}")
    assert err.value.filename == str(target)
    assert list(read_only_dir.iterdir()) == []


def test_check_writable_accepts_new_and_existing_locations_and_leaves_nothing(tmp_path):
    (tmp_path / "old.nii.gz").write_text("x")
    assert check_writable(tmp_path / "new" / "deeper" / "run") == tmp_path
    assert check_writable(tmp_path / "old.nii.gz") == tmp_path
    assert check_writable(tmp_path) == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.nii.gz"]


def test_check_writable_refuses_a_read_only_folder_and_a_file_in_the_way(read_only_dir, tmp_path):
    with pytest.raises(DataError) as err:
        check_writable(read_only_dir / "run" / "summary.json")
    assert str(err.value) == (
        f"{read_only_dir}: cannot write here (Permission denied), so {read_only_dir}/run/summary.json cannot be "
        "written; give an output location in a folder you can write to"
    )
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match=f"{tmp_path}/file: is a file, so {tmp_path}/file/run cannot be written"):
        check_writable(tmp_path / "file" / "run")
    assert list(read_only_dir.iterdir()) == []


def test_json_writer_writes_strict_json(tmp_path):
    """NaN and +-infinity (also inside numpy values) become null: strict JSON parsers reject NaN / Infinity."""
    import json
    import math

    import numpy as np

    from medtransfer.train.history import MetricsHistory
    from medtransfer.utils import write_json_atomic

    def strict(text: str):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))

    obj = {"hd95": math.inf, "rows": [{"dice": math.nan}, (1.5, -math.inf)], "a": np.array([0.5, np.nan])}
    write_json_atomic(tmp_path / "s.json", {**obj, "n": np.int64(3), "x": np.float32(0.25), "p": tmp_path})
    assert strict((tmp_path / "s.json").read_text()) == {
        "hd95": None,
        "rows": [{"dice": None}, [1.5, None]],
        "a": [0.5, None],
        "n": 3,
        "x": 0.25,
        "p": str(tmp_path),
    }
    history = MetricsHistory(tmp_path / "history.jsonl")
    history.append({"epoch": 0, "train_loss": math.nan})  # a diverged run
    assert strict((tmp_path / "history.jsonl").read_text()) == {"epoch": 0, "train_loss": None}
