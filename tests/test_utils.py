from __future__ import annotations

import pytest

from medtransfer.errors import ConfigError
from medtransfer.train.config import TrainConfig
from medtransfer.train.finetune_config import FinetuneConfig
from medtransfer.utils import atomic_path, read_yaml_mapping


def test_read_yaml_mapping(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("a: 1\nb: {c: [1, 2]}\n")
    assert read_yaml_mapping(good) == {"a": 1, "b": {"c": [1, 2]}}
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert read_yaml_mapping(empty) == {}


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
