"""configs/demo.yaml is the grid `medtransfer demo` runs (same cells, same cell configs up to the data root)."""

from __future__ import annotations

from pathlib import Path

import yaml

from medtransfer.experiments.demo import FULL, demo_grid
from medtransfer.experiments.spec import expand_grid, parse_grid

CONFIG = Path(__file__).parents[2] / "configs" / "demo.yaml"


def _cells(raw, tmp_path):
    return {c.id: c for c in expand_grid(parse_grid(raw, "demo"), tmp_path)}


def test_configs_demo_yaml_matches_the_demo_grid(tmp_path):
    from_file = yaml.safe_load(CONFIG.read_text())
    from_code = demo_grid(Path(from_file["defaults"]["data"]["root"]), FULL)
    a, b = _cells(from_file, tmp_path), _cells(from_code, tmp_path)
    assert sorted(a) == sorted(b)
    for cell_id, cell in a.items():
        ours, theirs = cell.config, b[cell_id].config
        for key in ("finetune", "eval", "target", "strategy", "budget", "seed", "domain"):
            assert ours.get(key) == theirs.get(key), (cell_id, key)
        source = ours["sources"]["source_domain"]["finetune"]["train"]
        assert source["epochs"] == theirs["sources"]["source_domain"]["finetune"]["train"]["epochs"]
