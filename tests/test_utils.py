from __future__ import annotations

import pytest

from medtransfer.errors import ConfigError
from medtransfer.finetune import FinetuneConfig
from medtransfer.train.config import TrainConfig
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
