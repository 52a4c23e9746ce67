"""Every grid file in configs/ parses, expands and names a registered cell kind, strategies and sources."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medtransfer.experiments.kinds import get_cell_function
from medtransfer.experiments.spec import expand_grid, load_grid
from medtransfer.transfer.registry import create_params

ROOT = Path(__file__).resolve().parents[2]
# the grid files (a finetune recipe such as brain_extraction.yaml has no axes)
CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml") if "axes" in yaml.safe_load(p.read_text()))
REFERENCES = ("baseline", "oracle")


def test_the_protocol_configs_exist():
    assert {p.stem for p in CONFIGS} >= {"demo", "shirokikh2020", "zoetmulder2022", "transfusion"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_expands_to_runnable_cells(path, tmp_path):
    spec = load_grid(path)
    cells = expand_grid(spec, tmp_path)
    assert cells
    assert len({c.run_dir for c in cells}) == len(cells)
    for cell in cells:
        get_cell_function(cell.config["kind"], where=str(path))
        strategy = cell.config["strategy"]
        if cell.config["kind"] != "finetune" or strategy in REFERENCES:
            pass  # other cell kinds read their own strategy names
        else:
            create_params(strategy)  # a registered strategy with valid parameters
        source = cell.config["source"]
        assert source["checkpoint"] or source["name"] in (*cell.config.get("sources", {}), "none")
        datasets = cell.config["data"]["datasets"]
        assert cell.config["target"] in datasets


def test_shirokikh_grid_holds_the_references_once_per_pair(tmp_path):
    cells = expand_grid(load_grid(next(p for p in CONFIGS if p.stem == "shirokikh2020")), tmp_path)
    pairs = {c.axes["domain_pair"] for c in cells}
    for reference in REFERENCES:
        assert sorted(c.axes["domain_pair"] for c in cells if c.axes["strategy"] == reference) == sorted(pairs)
    assert {c.axes["budget"] for c in cells} == {"n1_k24", "n1_k8", "n1", "n3", "nall"}


def test_zoetmulder_grid_crosses_ten_sources_with_three_targets(tmp_path):
    cells = expand_grid(load_grid(next(p for p in CONFIGS if p.stem == "zoetmulder2022")), tmp_path)
    assert len({c.axes["source"] for c in cells}) == 10  # six pretrained + scratch + three real-scan networks
    assert {c.axes["target"] for c in cells} == {"anatomy", "ms_lesion", "stroke_lesion"}
    real = [c for c in cells if c.axes["source"].startswith("real_mri_seg_")]
    assert {c.axes["source"] for c in real} == {f"real_mri_seg_{n}" for n in ("deepbrain", "deepbet", "hdbet")}
    assert {c.axes["target"] for c in real} == {"anatomy", "ms_lesion", "stroke_lesion"}
    assert all(c.config["finetune"]["patch_size"] == [64, 64, 64] for c in real)  # 3D patches
    assert all("patch_size" not in c.config["finetune"] for c in cells if c not in real)


def test_demo_config_matches_the_demo_grid(tmp_path):
    from medtransfer.experiments.demo import FULL, demo_grid
    from medtransfer.experiments.spec import parse_grid

    from_file = expand_grid(load_grid(next(p for p in CONFIGS if p.stem == "demo")), tmp_path)
    from_code = expand_grid(parse_grid(demo_grid(Path("demo-output/brainshift"), FULL), "demo"), tmp_path)
    assert [c.id for c in from_file] == [c.id for c in from_code]
    for a, b in zip(from_file, from_code, strict=True):
        assert a.config["finetune"]["train"] == b.config["finetune"]["train"], a.id
        assert a.config["eval"] == b.config["eval"]
