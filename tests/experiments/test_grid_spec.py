from __future__ import annotations

from pathlib import Path

import pytest

from medtransfer.errors import ConfigError
from medtransfer.experiments.spec import budget_label, deep_merge, expand_grid, load_grid, parse_grid, select_cells

BASE = {
    "name": "g",
    "defaults": {"kind": "dummy", "finetune": {"train": {"lr": 0.001, "epochs": 2}}},
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
    assert cfg["finetune"] == {"train": {"lr": 0.001, "epochs": 2}}
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
            {"when": {"strategy": "first_k:*"}, "set": {"finetune": {"train": {"lr": 0.01}}}},
            {"when": {"strategy": "first_k:*", "seed": [1]}, "set": {"finetune": {"train": {"epochs": 5}}}},
        ],
    }
    raw["axes"] = {**BASE["axes"], "seed": [0, 1]}
    by_id = {c.id: c.config["finetune"]["train"] for c in expand_grid(parse_grid(raw, "g.yaml"), tmp_path)}
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
    with pytest.raises(ConfigError, match=r"shift.yaml: cannot read YAML \(line 2, column 1\): while parsing"):
        load_grid(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_grid(Path(tmp_path / "missing.yaml"))


AXES = {"target": "t", "strategy": "s"}


@pytest.mark.parametrize(
    ("defaults", "message"),
    [
        ({"finetun": {"train": {"epochs": 1}}}, "defaults.finetun: unknown key 'finetun'; did you mean 'finetune'?"),
        (
            {"eval": {"tolerence_mm": 5}},
            "defaults.eval.tolerence_mm: unknown key 'tolerence_mm'; did you mean 'tolerance_mm'?",
        ),
        ({"resources": {"num_cpu": 1}}, "defaults.resources.num_cpu: unknown key 'num_cpu'; did you mean 'num_cpus'?"),
        (
            {"finetune": {"train": {"epoch": 1}}},
            "defaults.finetune.train.epoch: unknown key 'epoch'; did you mean 'epochs'?",
        ),
        (
            {"finetune": {"max_val_case": 1}},
            "defaults.finetune.max_val_case: unknown key 'max_val_case'; did you mean 'max_val_cases'?",
        ),
        (
            {"finetune": {"preprocess": {"target_spacng": [2, 2, 2]}}},
            "defaults.finetune.preprocess.target_spacng: unknown key",
        ),
        ({"finetune": {"seed": 3}}, r"defaults.finetune.seed: set by the grid for each cell \(the seed is axes.seed\)"),
        (
            {"finetune": {"n_labelled": 3}},
            r"defaults.finetune.n_labelled: set by the grid for each cell \(the label budget",
        ),
        ({"finetune": 3}, "defaults.finetune must be a mapping with keys init|defaults.finetune must be a mapping"),
        ({"data": {"roots": "bs"}}, "defaults.data.roots: unknown key 'roots'; did you mean 'root'?"),
        (
            {"sources": {"src": {"domian": "a"}}},
            "defaults.sources.src.domian: unknown key 'domian'; did you mean 'domain'?",
        ),
        (
            {"sources": {"src": {"finetune": {"train": {"lr_": 1}}}}},
            "defaults.sources.src.finetune.train.lr_: unknown key",
        ),
        (
            {"teacher_student": {"pseudo": {"treshold": 0.9}}},
            "defaults.teacher_student.pseudo.treshold: unknown key 'treshold'; did you mean 'threshold'?",
        ),
        (
            {"classification": {"traget": "lesion"}},
            "defaults.classification.traget: unknown key 'traget'; did you mean 'target'?",
        ),
        ({"dummy": {"sleep": 1}}, "defaults.dummy.sleep: unknown key 'sleep'; did you mean 'sleep_s'?"),
        ({"train": {"lr": 1}}, "defaults.train: unknown key 'train'"),
    ],
)
def test_every_key_of_defaults_is_checked_at_every_level(defaults, message):
    with pytest.raises(ConfigError, match=message) as exc:
        parse_grid({"axes": AXES, "defaults": defaults}, "grid.yaml")
    assert str(exc.value).startswith("grid.yaml: defaults.")
    assert "Allowed: " in str(exc.value) or "set by the grid" in str(exc.value) or "must be a mapping" in str(exc.value)


def test_override_values_are_checked_like_defaults():
    raw = {"axes": AXES, "overrides": [{"when": {"strategy": "s"}, "set": {"finetune": {"trian": {"lr": 1}}}}]}
    with pytest.raises(
        ConfigError, match=r"^g.yaml: overrides\[0\].set.finetune.trian: unknown key 'trian'; did you mean 'train'\?"
    ):
        parse_grid(raw, "g.yaml")


def test_allowed_keys_come_from_the_configs_that_read_them():
    """Every field of the dataclasses a cell builds is accepted, so the grid's list cannot drift from them."""
    import dataclasses

    from medtransfer.data.preprocess import PreprocessConfig
    from medtransfer.experiments.config_keys import SET_BY_THE_GRID
    from medtransfer.finetune import FinetuneConfig
    from medtransfer.train.config import TrainConfig

    finetune = {f.name: None for f in dataclasses.fields(FinetuneConfig) if f.name not in SET_BY_THE_GRID}
    finetune["train"] = {f.name: None for f in dataclasses.fields(TrainConfig)}
    finetune["preprocess"] = {f.name: None for f in dataclasses.fields(PreprocessConfig)}
    defaults = {
        "kind": "dummy",  # keys only: the None values would fail the finetune kind's value checks (check_cell_values)
        "threads": 1,
        "data": "bs",  # a plain folder is accepted too
        "finetune": finetune,
        "sources": {"any_name": {"checkpoint": "x.pt", "domain": "a", "target": "t", "seed": 0, "finetune": finetune}},
        "eval": dict.fromkeys(("max_test_cases", "tolerance_mm", "surface_1mm", "lesions", "save_cases", "checkpoint")),
        "resources": {"num_cpus": 1, "num_gpus": 0},
        "teacher_student": {"rounds": 1, "pseudo": {"threshold": 0.9}, "augment": {"flip": True}, "dropout": 0.1},
        "classification": {"target": "lesion"},
        "dummy": {"sleep_s": 0, "n_cases": 1, "fail": False, "crash": False},
    }
    spec = parse_grid({"axes": AXES, "defaults": defaults}, "g.yaml")
    assert set(spec.defaults["finetune"]["train"]) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(SET_BY_THE_GRID) < {f.name for f in dataclasses.fields(FinetuneConfig)}


@pytest.mark.parametrize(
    ("module", "keys", "variable"),
    [
        ("medtransfer.experiments.evaluate_cell", "OPTION_KEYS", "options"),
        ("medtransfer.experiments.kinds", "DUMMY_KEYS", "options"),
    ],
)
def test_option_lists_name_every_option_their_module_reads(module, keys, variable):
    """The `eval` / `dummy` options a module reads (``options.get("x")``, ``options["x"]``) are all listed."""
    import ast
    import importlib
    import inspect

    mod = importlib.import_module(module)
    read = set()
    for node in ast.walk(ast.parse(inspect.getsource(mod))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            target, key = node.func.value, node.args[0] if node.args else None
        elif isinstance(node, ast.Subscript):
            target, key = node.value, node.slice
        else:
            continue
        if isinstance(target, ast.Name) and target.id == variable and isinstance(key, ast.Constant):
            read.add(key.value)
    assert read
    assert read <= set(getattr(mod, keys))
