"""Second review of grids: cell kinds, value checks at load, compared arms' test sets, races whose cells changed,
run-only keys, trained sources (settings, fingerprint, leaks, paths), status of staged reruns and orphan cells."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medtransfer.cli import main
from medtransfer.experiments import list_cell_kinds


def _write(tmp_path: Path, grid: dict, name: str = "g.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def _error(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


# --- 7: a kind that is not a name ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        (
            {"defaults": {"kind": ["dummy"]}, "axes": {"target": "brain", "strategy": ["full"]}},
            "defaults.kind must be the name of one cell kind ({kinds}), got ['dummy']",
        ),
        (
            {
                "defaults": {"kind": {"name": "dummy"}},
                "axes": {"target": "brain", "strategy": ["full", "scratch"]},
                "race": {},
            },
            "defaults.kind must be the name of one cell kind ({kinds}), got {{'name': 'dummy'}}",
        ),
        (
            {
                "defaults": {"kind": "dummy"},
                "axes": {"target": "brain", "strategy": ["full"]},
                "overrides": [{"when": {"strategy": "full"}, "set": {"kind": "dumy"}}],
            },
            "overrides[0].set.kind: unknown cell kind 'dumy'; did you mean 'dummy'? Allowed: {kinds}",
        ),
    ],
)
def test_a_kind_that_is_no_registered_name_is_one_line_at_load(tmp_path, capsys, grid, message):
    path = _write(tmp_path, grid)
    message = message.format(kinds=", ".join(list_cell_kinds()))  # the built-in ones and any a test registered
    for command in ("status", "run"):
        assert main(["grid", command, str(path), "--results", str(tmp_path / "res")]) == 2
        assert _error(capsys) == [f"error: {path}: {message}"]
    assert not (tmp_path / "res").exists()
