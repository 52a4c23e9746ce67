from __future__ import annotations

from pathlib import Path

import pytest

from medtransfer.errors import ConfigError
from medtransfer.experiments.spec import budget_label, deep_merge, expand_grid, load_grid, parse_grid, select_cells

BASE = {
    "name": "g",
    "defaults": {"kind": "dummy", "train": {"lr": 0.001, "epochs": 2}},
    "axes": {"target": "brain", "strategy": ["scratch", "first_k:2"]},
}


def _grid(**axes):
    return parse_grid({**BASE, "axes": {**BASE["axes"], **axes}}, "grid.yaml")


def test_expand_cartesian_product_and_layout(tmp_path):
    spec = _grid(source=["none", "mri_seg"], budget=[3, {"n_labelled": 1, "every_kth_slice": 24}], seed=[0, 1])
    cells = expand_grid(spec, tmp_path)
    assert len(cells) == 2 * 2 * 2 * 2
    first = cells[0]
    assert first.id == "brain/none__scratch/n3/seed0"
    assert first.run_dir == tmp_path / "g" / "brain" / "none__scratch" / "n3" / "seed0"
    ids = {c.id for c in cells}
    assert "brain/mri_seg__first_k-2/n1_k24/seed1" in ids
    assert len(ids) == len(cells)


def test_resolved_config_holds_axes_and_defaults(tmp_path):
    spec = _grid(source=[{"name": "mri", "checkpoint": "ckpt/mri.pt"}], budget=[{"every_kth_slice": 12}])
    cfg = expand_grid(spec, tmp_path)[1].config
    assert cfg["strategy"] == "first_k:2"
    assert cfg["source"] == {"name": "mri", "checkpoint": "ckpt/mri.pt"}
    assert cfg["budget"] == {"n_labelled": "all", "every_kth_slice": 12}
    assert cfg["seed"] == 0
    assert cfg["train"] == {"lr": 0.001, "epochs": 2}
    assert cfg["grid"] == {"name": "g", "cell_id": "brain/mri__first_k-2/nall_k12/seed0"}
    assert "domain" not in cfg


def test_source_given_as_checkpoint_path(tmp_path):
    cell = expand_grid(_grid(source=["ckpts/mri_seg.pt"]), tmp_path)[0]
    assert cell.config["source"] == {"name": "mri_seg", "checkpoint": "ckpts/mri_seg.pt"}
    assert cell.axes["source"] == "mri_seg"


def test_domains_expand_to_ordered_pairs_in_path(tmp_path):
    spec = _grid(strategy=["full"], domains=["siemens_15", "ge_3", "philips_3"])
    cells = expand_grid(spec, tmp_path)
    assert len(cells) == 6
    assert cells[0].id == "brain/siemens_15_to_ge_3/none__full/nall/seed0"
    assert cells[0].config["domain"] == {"source": "siemens_15", "target": "ge_3"}
    assert cells[0].axes["domain_pair"] == "siemens_15->ge_3"


@pytest.mark.parametrize("pair", ["a->b", ["a", "b"], {"source": "a", "target": "b"}])
def test_domain_pair_forms(tmp_path, pair):
    cells = expand_grid(_grid(strategy=["full"], domain_pairs=[pair]), tmp_path)
    assert [c.axes["domain_pair"] for c in cells] == ["a->b"]


def test_overrides_apply_in_order_to_matching_cells(tmp_path):
    raw = {
        **BASE,
        "overrides": [
            {"when": {"strategy": "first_k:*"}, "set": {"train": {"lr": 0.01}}},
            {"when": {"strategy": "first_k:*", "seed": [1]}, "set": {"train": {"epochs": 5}}},
        ],
    }
    raw["axes"] = {**BASE["axes"], "seed": [0, 1]}
    by_id = {c.id: c.config["train"] for c in expand_grid(parse_grid(raw, "g.yaml"), tmp_path)}
    assert by_id["brain/none__scratch/nall/seed1"] == {"lr": 0.001, "epochs": 2}
    assert by_id["brain/none__first_k-2/nall/seed0"] == {"lr": 0.01, "epochs": 2}
    assert by_id["brain/none__first_k-2/nall/seed1"] == {"lr": 0.01, "epochs": 5}


def test_exclude_with_negation(tmp_path):
    raw = {**BASE, "exclude": [{"source": "none", "strategy": "!scratch"}, {"source": "!none", "strategy": "scratch"}]}
    raw["axes"] = {**BASE["axes"], "source": ["none", "mri"]}
    ids = [c.id for c in expand_grid(parse_grid(raw, "g.yaml"), tmp_path)]
    assert ids == ["brain/none__scratch/nall/seed0", "brain/mri__first_k-2/nall/seed0"]


def test_select_cells_by_glob(tmp_path):
    cells = expand_grid(_grid(seed=[0, 1]), tmp_path)
    assert [c.id for c in select_cells(cells, "*seed1")] == [
        "brain/none__scratch/nall/seed1",
        "brain/none__first_k-2/nall/seed1",
    ]
    assert len(select_cells(cells, "brain/none__scratch")) == 2  # a folder prefix selects what is below
    assert len(select_cells(cells, None)) == 4


def test_labels_never_escape_the_results_folder(tmp_path):
    cell = expand_grid(parse_grid({"axes": {"target": "..", "strategy": "a/b"}}, "g.yaml"), tmp_path)[0]
    assert cell.id == "--/none__a-b/nall/seed0"
    assert tmp_path in cell.run_dir.parents


def test_colliding_labels_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match="share the run folder"):
        expand_grid(_grid(strategy=["first_k:2", "first_k-2"]), tmp_path)


def test_budget_label():
    assert budget_label({"n_labelled": 3}) == "n3"
    assert budget_label({"n_labelled": 1, "every_kth_slice": 24}) == "n1_k24"
    assert budget_label({"n_labelled": "all"}) == "nall"


def test_deep_merge_does_not_mutate():
    base = {"train": {"lr": 1, "epochs": 2}, "x": 1}
    assert deep_merge(base, {"train": {"lr": 3}, "y": {"z": 1}}) == {
        "train": {"lr": 3, "epochs": 2},
        "x": 1,
        "y": {"z": 1},
    }
    assert base == {"train": {"lr": 1, "epochs": 2}, "x": 1}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"axes": {"target": "t", "strategy": "s", "seeds": [0]}}, "unknown axis 'seeds'; did you mean 'seed'"),
        ({"axes": {"target": "t", "strategy": "s"}, "default": {}}, "did you mean 'defaults'"),
        ({"axes": {"strategy": "s"}}, "axes.target is required"),
        ({"axes": {"target": "t", "strategy": "s", "budget": [{"n_label": 3}]}}, "did you mean 'n_labelled'"),
        ({"axes": {"target": "t", "strategy": "s", "budget": [0]}}, r"axes.budget\[0\].n_labelled must be"),
        ({"axes": {"target": "t", "strategy": "s", "budget": ["half"]}}, r"axes.budget\[0\] must be an int"),
        ({"axes": {"target": "t", "strategy": "s", "seed": [-1]}}, r"axes.seed\[0\] must be an int >= 0"),
        ({"axes": {"target": "t", "strategy": "s", "domains": ["a"]}}, "at least two distinct"),
        ({"axes": {"target": "t", "strategy": "s", "domain_pairs": ["a-b"]}}, "'source->target'"),
        ({"axes": {"target": "t", "strategy": "s", "domains": ["a", "b"], "domain_pairs": ["a->b"]}}, "not both"),
        ({"axes": {"target": "t", "strategy": "s"}, "defaults": {"seed": 1}}, "defaults.seed is set by"),
        ({"axes": {"target": "t", "strategy": "s"}, "overrides": [{"when": {"strat": "x"}, "set": {}}]}, "strat"),
        ({"axes": {"target": "t", "strategy": "s"}, "overrides": [{"set": {"seed": 2}}]}, "may not change axis"),
        ({"axes": {"target": "t", "strategy": "s"}, "exclude": ["x"]}, r"exclude\[0\] must map"),
        ({"axes": {"target": "t", "strategy": ""}}, r"axes.strategy\[0\] must be a non-empty name"),
        (["not", "a", "mapping"], "must be a mapping"),
    ],
)
def test_invalid_grids_name_file_and_key(raw, message):
    with pytest.raises(ConfigError, match=message) as exc:
        parse_grid(raw, "my_grid.yaml")
    assert str(exc.value).startswith("my_grid.yaml: ")


def test_load_grid_from_file(tmp_path):
    path = tmp_path / "shift.yaml"
    path.write_text("axes:\n  target: brain\n  strategy: [full]\n  seed: [0, 1]\n")
    spec = load_grid(path)
    assert spec.name == "shift"  # the file's stem when no name is given
    assert len(expand_grid(spec, tmp_path)) == 2
    path.write_text("axes: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_grid(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_grid(Path(tmp_path / "missing.yaml"))
