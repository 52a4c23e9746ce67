"""Second review of grids: cell kinds, value checks at load, compared arms' test sets, races whose cells changed,
run-only keys, trained sources (settings, fingerprint, leaks, paths), status of staged reruns and orphan cells."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medtransfer.cli import main
from medtransfer.errors import ConfigError
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


# --- 6: eval, resources and threads values at load --------------------------------------------------------------

FINETUNE = {
    "name": "ft",
    "defaults": {
        "kind": "finetune",
        "data": {"root": "nowhere"},
        "finetune": {"train": {"epochs": 1, "optimizer": "adam"}},
    },
    "axes": {"target": "brain", "strategy": ["scratch", "full"], "seed": [0, 1]},
}
CELL = "(cell brain/none__scratch/nall/seed0)"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"eval": {"max_test_cases": "all"}},
            f"eval.max_test_cases {CELL}: must be an integer >= 1, or null for every held-out case, got 'all'",
        ),
        (
            {"eval": {"max_test_cases": 0}},
            f"eval.max_test_cases {CELL}: must be an integer >= 1, or null for every held-out case, got 0",
        ),
        ({"eval": {"tolerance_mm": "1mm"}}, f"eval.tolerance_mm {CELL}: must be a number > 0 (mm), got '1mm'"),
        ({"eval": {"tolerance_mm": -1}}, f"eval.tolerance_mm {CELL}: must be a number > 0 (mm), got -1"),
        ({"eval": {"checkpoint": "final"}}, f"eval.checkpoint {CELL}: must be last or best, got 'final'"),
        ({"eval": {"save_cases": 1.5}}, f"eval.save_cases {CELL}: must be an integer >= 0, got 1.5"),
        ({"eval": {"surface_1mm": "yes"}}, f"eval.surface_1mm {CELL}: must be true or false, got 'yes'"),
        ({"eval": {"lesions": "maybe"}}, f"eval.lesions {CELL}: must be auto, true or false, got 'maybe'"),
        (
            {"eval": {"lesion_iou": 0}},
            f"eval.lesion_iou {CELL}: must be a number in (0, 1] (the IoU one predicted component needs), null (any "
            "overlap of >= 1 voxel) or 'msseg' (the MSSEG challenges' detection rule), got 0",
        ),
        (
            {"resources": {"num_cpus": "two"}},
            f"resources.num_cpus {CELL}: must be a number >= 0 (what the executor reserves for the cell), got 'two'",
        ),
        (
            {"resources": {"num_gpus": -1}},
            f"resources.num_gpus {CELL}: must be a number >= 0 (what the executor reserves for the cell), got -1",
        ),
        (
            {"threads": 0},
            f"threads {CELL}: must be an integer >= 1 (torch threads of the cell; leave it out to use "
            "resources.num_cpus), got 0",
        ),
    ],
)
def test_bad_eval_resources_and_threads_values_are_one_line_at_load(tmp_path, capsys, section, message):
    grid = _write(tmp_path, {**FINETUNE, "defaults": {**FINETUNE["defaults"], **section}})
    assert main(["grid", "status", str(grid), "--results", str(tmp_path / "res")]) == 2
    assert _error(capsys) == [f"error: {grid}: {message}"]


def test_resources_and_threads_of_any_kind_are_checked_and_good_values_load(tmp_path, capsys):
    dummy = {"defaults": {"kind": "dummy", "resources": {"num_cpus": "two"}}, "axes": {"target": "t", "strategy": "a"}}
    grid = _write(tmp_path, dummy)
    assert main(["grid", "status", str(grid), "--results", str(tmp_path / "res")]) == 2
    assert _error(capsys) == [
        f"error: {grid}: resources.num_cpus (cell t/none__a/nall/seed0): must be a number >= 0 (what the executor "
        "reserves for the cell), got 'two'"
    ]
    good = {
        "eval": {
            "max_test_cases": None,
            "tolerance_mm": 2,
            "checkpoint": "best",
            "save_cases": 0,
            "lesions": "auto",
            "surface_1mm": False,
            "lesion_iou": "msseg",
        },
        "resources": {"num_cpus": 0.5, "num_gpus": 1},
        "threads": 2,
    }
    from medtransfer.experiments import load_grid

    assert load_grid(_write(tmp_path, {**FINETUNE, "defaults": {**FINETUNE["defaults"], **good}})).name == "ft"


ATTEMPTS: list[bool] = []


def flaky_cell(config, run_dir, *, resume):
    """Leaves a partial output, then fails while eval.save_cases is 7 (a bad eval value met after training)."""
    ATTEMPTS.append(resume)
    (Path(run_dir) / "trained.txt").write_text("weights")
    if (config.get("eval") or {}).get("save_cases") == 7:
        raise RuntimeError("evaluation failed")
    return {"metrics": {"dice": 0.5}}


def test_an_interrupted_cell_whose_eval_alone_changed_resumes(tmp_path):
    from medtransfer.experiments import register_cell_kind, run_grid

    register_cell_kind("test_flaky_eval", flaky_cell, sections=("opts",))
    ATTEMPTS.clear()

    def grid(eval_options, **extra):
        raw = {
            "defaults": {"kind": "test_flaky_eval", "eval": eval_options, **extra},
            "axes": {"target": "t", "strategy": "a"},
        }
        from medtransfer.experiments import load_grid

        return load_grid(_write(tmp_path, raw))

    assert run_grid(grid({"save_cases": 7}), results_root=tmp_path / "res", progress=False).counts["failed"] == 1
    assert run_grid(grid({"save_cases": 1}), results_root=tmp_path / "res", progress=False).counts["ran"] == 1
    assert ATTEMPTS == [False, True]  # the second attempt resumes the training of the first
    ATTEMPTS.clear()
    (tmp_path / "res/g/t/none__a/nall/seed0/summary.json").unlink()  # interrupted again, then resources change
    run_grid(grid({"save_cases": 1}, resources={"num_cpus": 1}), results_root=tmp_path / "res", progress=False)
    assert ATTEMPTS == [True]  # resources say where a cell runs: still a resume
    ATTEMPTS.clear()
    (tmp_path / "res/g/t/none__a/nall/seed0/summary.json").unlink()  # and now what it trains with
    run_grid(grid({"save_cases": 1}, opts={"lr": 2}), results_root=tmp_path / "res", progress=False)
    assert ATTEMPTS == [False]


# --- 10: compared arms hold out the same test scans -----------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            {"when": {"strategy": "first_k:*"}, "set": {"finetune": {"split_seed": 1}}},
            "overrides[0] sets finetune.split_seed to 1 for cell brain/none__first_k-1/nall/seed0, but cell "
            "brain/none__scratch/nall/seed0 of the same target and seed has 0",
        ),
        (
            {"when": {"strategy": "scratch"}, "set": {"finetune": {"test_fraction": 0.3}}},  # the first cell differs
            "overrides[0] sets finetune.test_fraction to 0.3 for cell brain/none__scratch/nall/seed0, but cell "
            "brain/none__full/nall/seed0 of the same target and seed has 0.2",
        ),
        (
            {"when": {"strategy": "full", "seed": 1}, "set": {"eval": {"max_test_cases": 2}}},
            "overrides[0] sets eval.max_test_cases to 2 for cell brain/none__full/nall/seed1, but cell "
            "brain/none__scratch/nall/seed1 of the same target and seed has None",
        ),
        (
            {"when": {"strategy": "full"}, "set": {"finetune": {"val_fraction": 0.1}}},
            "overrides[0] sets finetune.val_fraction to 0.1 for cell brain/none__full/nall/seed0, but cell "
            "brain/none__scratch/nall/seed0 of the same target and seed has 0.2",
        ),
    ],
)
def test_an_override_giving_some_arms_other_test_scans_is_refused_at_load(tmp_path, capsys, override, message):
    grid = {**FINETUNE, "axes": {**FINETUNE["axes"], "strategy": ["scratch", "full", "first_k:1"]}}
    path = _write(tmp_path, {**grid, "overrides": [override]})
    assert main(["grid", "status", str(path), "--results", str(tmp_path / "res")]) == 2
    assert _error(capsys) == [
        f"error: {path}: {message}: arms compared scan by scan must hold out the same test scans; set it in "
        "defaults, or for every cell of that target (when: {target: ...})"
    ]


def test_test_set_keys_may_differ_between_targets_and_seeds_and_equal_the_default(tmp_path):
    from medtransfer.experiments import load_grid

    grid = {**FINETUNE, "axes": {**FINETUNE["axes"], "target": ["brain", "anatomy"]}}
    grid["overrides"] = [
        {"when": {"target": "anatomy"}, "set": {"finetune": {"test_fraction": 0.5}}},  # every cell of a target
        {"when": {"seed": 1}, "set": {"finetune": {"split_seed": 1}}},  # every arm of a seed
        {"when": {"strategy": "full"}, "set": {"finetune": {"val_fraction": 0.2, "max_val_cases": 1}}},  # defaults
    ]
    assert load_grid(_write(tmp_path, grid)).name == "ft"


# --- 1: a saved race whose arms are other cells now ------------------------------------------------------------


def test_a_saved_race_of_a_renamed_source_is_refused_and_not_shown_as_its_decisions(tmp_path, capsys):
    def grid(source):
        raw = {
            "defaults": {"kind": "dummy", "dummy": {"n_cases": 12, "noise": 0.01}},
            "axes": {"target": "brain", "source": [source], "strategy": ["full", "first_k:1"], "seed": [0, 1, 2]},
            "overrides": [
                {"when": {"strategy": "full"}, "set": {"dummy": {"level": 0.8}}},
                {"when": {"strategy": "first_k:*"}, "set": {"dummy": {"level": 0.5}}},
            ],
            "race": {"metric": "dice"},
        }
        return _write(tmp_path, raw)

    results, state = tmp_path / "res", tmp_path / "res/g/_race/brain/nall.json"
    assert main(["grid", "run", str(grid("src_a")), "--results", str(results), "--race"]) == 0
    assert "race brain, nall: " in capsys.readouterr().out  # decided after round 1: full won
    before = state.read_text()
    renamed = grid("src_b")  # the arms keep their names (full, first_k:1): one source, arms named by strategy
    assert main(["grid", "run", str(renamed), "--results", str(results), "--race"]) == 2
    assert _error(capsys) == [
        f"error: {state}: the race of brain, nall raced arm 'full' on the cells src_a__full, the grid now gives "
        "src_b__full (a renamed source keeps the arm's name): its decisions are not about these cells; delete this "
        "file to start that race again from round 1 (its finished cells are kept and not run again)"
    ]
    assert state.read_text() == before
    assert not (results / "g/brain/src_b__full").exists()
    assert main(["grid", "status", str(renamed), "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == "8 cells: 2 orphan, 6 pending"  # not dropped/skipped by the old race
    orphans = [line.split()[0] for line in out.splitlines() if line.split()[1:2] == ["orphan"]]
    assert orphans == ["brain/src_a__first_k-1/nall/seed0", "brain/src_a__full/nall/seed0"]  # the race's round 1
    state.unlink()
    assert main(["grid", "run", str(renamed), "--results", str(results), "--race"]) == 0
    assert "grid g: 2 ran" in capsys.readouterr().out


# --- 3: run-only keys and a moved data.root, as finetune --resume sees them -------------------------------------

RESUMED: list[bool] = []


def interrupted_cell(config, run_dir, *, resume):
    """Records ``resume``, leaves a partial training and is killed (KeyboardInterrupt: no error.json, no summary)."""
    RESUMED.append(resume)
    (Path(run_dir) / "train").mkdir(exist_ok=True)
    if (config.get("opts") or {}).get("die", True):
        raise KeyboardInterrupt
    return {"metrics": {"dice": 0.5}}


def test_num_workers_and_a_moved_data_root_never_ask_a_training_to_resume_what_it_refuses(tmp_path):
    from medtransfer.experiments import load_grid, register_cell_kind, run_grid
    from medtransfer.experiments.runner import ChangedCells
    from medtransfer.train.resume import changed_options

    register_cell_kind("test_interrupted", interrupted_cell, sections=("opts",))
    for root in ("data", "moved/data"):
        (tmp_path / root / "brain").mkdir(parents=True)

    def run(workers=0, root="data", die=True, progress=False):
        raw = {
            "defaults": {
                "kind": "test_interrupted",
                "data": {"root": str(tmp_path / root)},
                "finetune": {"train": {"num_workers": workers, "progress": progress}},
                "opts": {"die": die},
            },
            "axes": {"target": "brain", "strategy": "full"},
        }
        try:
            run_grid(load_grid(_write(tmp_path, raw)), results_root=tmp_path / "res", progress=False)
        except KeyboardInterrupt:
            pass

    run()
    run(workers=1)  # what finetune --resume refuses (train.num_workers: 0 -> 1): start over
    assert changed_options({"train": {"num_workers": 0}}, {"train": {"num_workers": 1}}) != []
    run(workers=1, root="moved/data")  # so does a moved dataset (its scans' paths are recorded)
    run(workers=1, root="moved/data", progress=True)  # how it reports: resume
    assert RESUMED == [False, False, False, True]
    run(workers=1, root="moved/data", progress=True, die=False)  # opts.die: what it computes; it finishes
    run(workers=1, root="data", progress=True, die=False)  # moved back, the same folder name: the same results
    assert RESUMED == [False, False, False, True, False]
    with pytest.raises(ChangedCells, match=r"finetune.train.num_workers changed since"):
        run(workers=2, root="data", progress=True, die=False)  # a finished cell: num_workers makes it stale


# --- 5: datasets outside data.root, names and domains in the _sources folder ------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"axes": {"target": ["../outside"], "strategy": ["scratch"]}},
            "axes.target '../outside' is outside data.root ('..' leaves it)",
        ),
        (
            {"data": {"datasets": {"brain": "/abs/brain"}}},
            "data.datasets.brain '/abs/brain' is outside data.root (an absolute path)",
        ),
        (
            {"data": {"datasets": {"brain": "sub/../../x"}}},
            "data.datasets.brain 'sub/../../x' is outside data.root ('..' leaves it)",
        ),
        (
            {"sources": {"src": {"target": "../other"}}},
            "sources.src.target '../other' is outside data.root ('..' leaves it)",
        ),
    ],
)
def test_a_dataset_outside_data_root_is_one_line_at_load(tmp_path, capsys, change, message):
    grid = {
        "defaults": {"kind": "finetune", "data": {"root": str(tmp_path / "root"), **change.get("data", {})}},
        "axes": change.get("axes", {"target": "brain", "strategy": ["scratch"]}),
    }
    if "sources" in change:
        grid["defaults"]["sources"] = change["sources"]
    path = _write(tmp_path, grid)
    assert main(["grid", "status", str(path), "--results", str(tmp_path / "res")]) == 2
    assert _error(capsys) == [
        f"error: {path}: {message}; a dataset is a folder inside data.root: give its path relative to data.root"
    ]


def test_resolve_dataset_refuses_a_folder_outside_data_root(tmp_path):
    from medtransfer.experiments.sources import resolve_dataset

    for folder in ("root/brain", "outside"):
        (tmp_path / folder).mkdir(parents=True)
    root = {"root": str(tmp_path / "root")}
    assert resolve_dataset({"data": root, "target": "brain"}) == str(tmp_path / "root/brain")
    with pytest.raises(ConfigError, match=r"^target '../outside' is outside data.root \('..' leaves it\)"):
        resolve_dataset({"data": root, "target": "../outside"})
    data = {**root, "datasets": {"brain": str(tmp_path / "outside")}}
    with pytest.raises(ConfigError, match=r"^data.datasets.brain '.*/outside' is outside data.root \(an absolute"):
        resolve_dataset({"data": data, "target": "brain"})


def test_source_names_and_domains_stay_one_folder_inside_sources(tmp_path, monkeypatch):
    import medtransfer.finetune as finetune
    import medtransfer.infer as infer
    from medtransfer.experiments import sources

    outs = []

    def fake_run(values, resume=False):
        out = Path(values["out"])
        out.mkdir(parents=True, exist_ok=True)
        (out / "model.pt").write_text("x")
        (out / "summary.json").write_text("{}")
        outs.append(out)

    monkeypatch.setattr(finetune, "run_finetune", fake_run)
    monkeypatch.setattr(infer, "find_checkpoint", lambda out: Path(out) / "model.pt")
    (tmp_path / "data/brain").mkdir(parents=True)
    config = {
        "data": {"root": str(tmp_path / "data")},
        "target": "brain",
        "domain": {"source": "x/../escaped_dom", "target": "b"},  # joined as a path: <tmp>/escaped_dom
    }
    grid_dir = tmp_path / "res" / "g"
    sources.train_source(config, "../../../escaped_src", {"domain": "{source_domain}"}, grid_dir)
    (out,) = outs
    assert out.parent == grid_dir / "_sources"
    assert out.name.startswith("---..-..-escaped_src__x-..-escaped_dom")  # '/' and the leading dots become '-'
    assert not (tmp_path / "escaped_dom").exists()


# --- 2: a grid-trained source's settings and its cache folder ----------------------------------------------------

TRAINED: list[dict] = []


def source_probe_cell(config, run_dir, *, resume):
    """Resolves the cell's source and returns the train options the (fake) training recorded in it."""
    import json

    from medtransfer.experiments import sources

    checkpoint = Path(sources.resolve_source(config, run_dir))
    return {"metrics": {"dice": 0.5}, "source": checkpoint.parent.name, "trained": json.loads(checkpoint.read_text())}


@pytest.fixture
def fake_source_training(monkeypatch):
    """``run_finetune`` writes the values it got as its 'checkpoint' (and a config.yaml as run_finetune does)."""
    import json

    import medtransfer.finetune as finetune
    import medtransfer.infer as infer
    from medtransfer.experiments import register_cell_kind

    def fake_run(values, resume=False):
        out = Path(values["out"])
        out.mkdir(parents=True, exist_ok=True)
        TRAINED.append({"train": values.get("train"), "out": out.name, "resume": resume})
        (out / "model.pt").write_text(json.dumps(values.get("train")))
        (out / "summary.json").write_text("{}")

    TRAINED.clear()
    monkeypatch.setattr(finetune, "run_finetune", fake_run)
    monkeypatch.setattr(infer, "find_checkpoint", lambda out: Path(out) / "model.pt")
    register_cell_kind("test_source_probe", source_probe_cell, sections=())
    return TRAINED


def _source_grid(tmp_path, source_lr=0.5, override_lr=0.01, extra_override=None):
    (tmp_path / "data/brain").mkdir(parents=True, exist_ok=True)
    grid = {
        "defaults": {
            "kind": "test_source_probe",
            "data": {"root": str(tmp_path / "data")},
            "finetune": {"train": {"lr": 0.001, "epochs": 5}},
            "sources": {"src": {"finetune": {"train": {"lr": source_lr}}}},
        },
        "axes": {"target": "brain", "source": ["src"], "strategy": ["full", "first_k:1"]},
        "overrides": [{"when": {"strategy": "first_k:*"}, "set": {"finetune": {"train": {"lr": override_lr}}}}],
    }
    if extra_override:
        grid["overrides"].append(extra_override)
    return _write(tmp_path, grid)


def _results(tmp_path) -> dict[str, dict]:
    import json

    return {
        p.parent.parent.parent.name: json.loads(p.read_text())["result"]
        for p in (tmp_path / "res/g").glob("brain/*/nall/seed0/summary.json")
    }


def test_a_trained_source_has_the_entrys_settings_over_the_defaults_whichever_cell_runs_first(
    tmp_path, fake_source_training
):
    from medtransfer.experiments import load_grid, run_grid

    spec = load_grid(_source_grid(tmp_path))
    run_grid(spec, results_root=tmp_path / "res", progress=False, only="*first_k*")  # lr 0.01 for this cell only
    run_grid(spec, results_root=tmp_path / "res", progress=False)
    results = _results(tmp_path)
    assert results["src__full"]["trained"] == results["src__first_k-1"]["trained"] == {"lr": 0.5, "epochs": 5}
    assert len(fake_source_training) == 1  # trained once, for both cells
    assert results["src__full"]["source"].startswith("src-")  # src-<fingerprint>


def test_an_edited_source_entry_trains_a_new_source_for_the_cells_rerun(tmp_path, fake_source_training):
    from medtransfer.experiments import load_grid, run_grid
    from medtransfer.experiments.runner import ChangedCells

    run_grid(load_grid(_source_grid(tmp_path)), results_root=tmp_path / "res", progress=False)
    first = _results(tmp_path)["src__full"]["source"]
    edited = load_grid(_source_grid(tmp_path, source_lr=0.9))
    with pytest.raises(ChangedCells, match=r"sources.src.finetune.train.lr, grid.source_finetune.train.lr changed"):
        run_grid(edited, results_root=tmp_path / "res", progress=False)
    run_grid(edited, results_root=tmp_path / "res", progress=False, rerun_changed=True)
    results = _results(tmp_path)
    assert [t["train"]["lr"] for t in fake_source_training] == [0.5, 0.9]
    assert results["src__full"]["trained"] == results["src__first_k-1"]["trained"] == {"lr": 0.9, "epochs": 5}
    assert results["src__full"]["source"] != first
    assert (tmp_path / "res/g/_sources" / first).is_dir()  # the earlier source stays as it was


def test_a_change_to_defaults_finetune_masked_by_an_override_still_reaches_the_source(tmp_path, fake_source_training):
    from medtransfer.experiments import load_grid, run_grid
    from medtransfer.experiments.runner import changed_cells
    from medtransfer.experiments.spec import expand_grid

    run_grid(load_grid(_source_grid(tmp_path)), results_root=tmp_path / "res", progress=False)
    grid = yaml.safe_load((tmp_path / "g.yaml").read_text())
    grid["defaults"]["finetune"]["train"]["epochs"] = 7
    grid["overrides"].append({"when": {"strategy": "first_k:*"}, "set": {"finetune": {"train": {"epochs": 5}}}})
    cells = expand_grid(load_grid(_write(tmp_path, grid)), tmp_path / "res")
    assert changed_cells(cells) == {
        "brain/src__full/nall/seed0": ["finetune.train.epochs", "grid.source_finetune.train.epochs"],
        "brain/src__first_k-1/nall/seed0": ["grid.source_finetune.train.epochs"],  # its own finetune is as it was
    }


def _legacy_source(root: Path, lr: float) -> Path:
    """A finished source as an earlier version left it: ``_sources/src`` with run_finetune's resolved options."""
    legacy = root / "res/g/_sources/src"
    legacy.mkdir(parents=True)
    (legacy / "summary.json").write_text("{}")
    (legacy / "model.pt").write_text('{"legacy": true}')
    resolved = {
        "data": str(root / "data/brain"),
        "out": str(legacy),
        "init": None,
        "strategy": "scratch",
        "n_labelled": 4,
        "seed": 0,
        "target_domain": None,
        "train": {"lr": lr, "epochs": 5, "loss": "bce", "seed": 0, "optimizer": "sgd", "progress": True},
        "preprocess": {"clip_percentiles": [1.0, 99.0], "target_spacing": [1.0, 1.0, 2.0]},
        "model_config": {},
    }
    (legacy / "config.yaml").write_text(yaml.safe_dump(resolved))
    return legacy


def test_a_source_an_earlier_version_trained_is_reused_only_with_the_same_options(tmp_path, fake_source_training):
    from medtransfer.experiments import load_grid, run_grid
    from medtransfer.experiments.runner import changed_cells
    from medtransfer.experiments.spec import expand_grid

    legacy = _legacy_source(tmp_path / "same", lr=0.5)
    spec = load_grid(_source_grid(tmp_path / "same"))
    run_grid(spec, results_root=tmp_path / "same/res", progress=False)
    assert fake_source_training == []  # the options it is trained with now: linked, not trained again
    (linked,) = [p for p in legacy.parent.iterdir() if p.name.startswith("src-")]
    assert linked.is_symlink()
    assert linked.resolve() == legacy.resolve()
    assert _results(tmp_path / "same")["src__full"]["trained"] == {"legacy": True}
    cells = expand_grid(spec, tmp_path / "same/res")
    for cell in cells:  # cells that ran before grid.source_finetune was recorded are not changed cells
        stored = yaml.safe_load((cell.run_dir / "config.yaml").read_text())
        del stored["grid"]["source_finetune"]
        (cell.run_dir / "config.yaml").write_text(yaml.safe_dump(stored))
    assert changed_cells(cells) == {}

    _legacy_source(tmp_path / "first_k", lr=0.01)  # trained by the first_k cell first: with its override's lr
    run_grid(load_grid(_source_grid(tmp_path / "first_k")), results_root=tmp_path / "first_k/res", progress=False)
    assert [t["train"] for t in fake_source_training] == [{"lr": 0.5, "epochs": 5}]  # trained anew, as it should be


def test_cells_whose_overrides_change_the_source_entry_get_their_own_source(tmp_path, fake_source_training):
    from medtransfer.experiments import load_grid, run_grid

    longer = {"when": {"strategy": "first_k:*"}, "set": {"sources": {"src": {"finetune": {"train": {"epochs": 9}}}}}}
    run_grid(load_grid(_source_grid(tmp_path, extra_override=longer)), results_root=tmp_path / "res", progress=False)
    results = _results(tmp_path)
    assert results["src__full"]["trained"] == {"lr": 0.5, "epochs": 5}
    assert results["src__first_k-1"]["trained"] == {"lr": 0.5, "epochs": 9}
    assert results["src__full"]["source"] != results["src__first_k-1"]["source"]
    assert len(fake_source_training) == 2


def test_an_interrupted_source_whose_dataset_moved_starts_over(tmp_path, fake_source_training):
    from medtransfer.experiments import sources

    (tmp_path / "data/brain").mkdir(parents=True)
    config = {"data": {"root": str(tmp_path / "data")}, "target": "brain", "finetune": {}}
    run = sources.source_run(config, "src", {}, tmp_path / "res/g")
    run.out.mkdir(parents=True)
    (run.out / "config.yaml").write_text(yaml.safe_dump({"data": str(tmp_path / "old/brain")}))  # no summary
    sources.train_source(config, "src", {}, tmp_path / "res/g")
    assert [t["resume"] for t in fake_source_training] == [False]  # finetune --resume would refuse the move
    (run.out / "summary.json").unlink()
    (run.out / "config.yaml").write_text(yaml.safe_dump({"data": str(tmp_path / "data/brain")}))
    sources.train_source(config, "src", {}, tmp_path / "res/g")
    assert [t["resume"] for t in fake_source_training] == [False, True]


# --- 4: a grid-trained source never trains on the scans a cell holds out -----------------------------------------
# two_domain_blobs(per_domain=10), test_fraction 0.3, val_fraction 0.1, split_seed 0 (worked out with select_cases,
# the training's own selection): the cells of domain b test on b2, b4, b6 and validate on b7; a source over both
# domains trains on a0 a1 a5 a7 a8 a9 b0 b2 b4 b5 b7 b8; one on domain b with split_seed 3 trains on b1 b3 b4 b5 b7
# b8 and validates on b2 (its checkpoint would be picked on a test scan).


def _leak_grid(tmp_path, source, target="blob"):
    from testkit import two_domain_blobs

    if not (tmp_path / "data/blob").exists():
        two_domain_blobs(tmp_path / "data/blob", per_domain=10)
    grid = {
        "defaults": {
            "kind": "finetune",
            "data": {"root": str(tmp_path / "data")},
            "finetune": {"test_fraction": 0.3, "val_fraction": 0.1, "train": {"epochs": 1}},
            "sources": {"src": source},
        },
        "axes": {"target": target, "source": "src", "strategy": ["scratch", "full"], "domain_pairs": ["a->b"]},
    }
    return _write(tmp_path, grid)


FULL = "blob/a_to_b/src__full/nall/seed0"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            {},
            f"source 'src' of cell {FULL} would train on every domain of blob with its own split, which holds scans "
            "the cell holds out for test or validation (b2, b4, b7): results would be scored on scans the source "
            'learnt; give sources.src.domain a domain the cells do not test on, e.g. "{source_domain}"',
        ),
        (
            {"domain": "{target_domain}", "finetune": {"split_seed": 3}},
            f"source 'src' of cell {FULL} would train on domain b of blob with its own split, which holds scans "
            "the cell holds out for test or validation (b2, b4, b7): results would be scored on scans the source "
            "learnt; train it on another domain (sources.src.domain) or target, or give sources.src.finetune the "
            "cells' split_seed, test_fraction and val_fraction (then it trains on their training subjects only)",
        ),
    ],
)
def test_a_source_that_would_train_on_held_out_scans_is_refused_before_any_work(tmp_path, capsys, source, message):
    grid = _leak_grid(tmp_path, source)
    assert main(["grid", "run", str(grid), "--results", str(tmp_path / "res")]) == 2
    assert _error(capsys) == [f"error: {grid}: {message}"]
    assert not (tmp_path / "res").exists()  # nothing ran, no source was trained


def test_sources_that_hold_out_what_the_cells_hold_out_pass(tmp_path):
    from medtransfer.experiments import load_grid
    from medtransfer.experiments.sources import check_source_leaks
    from medtransfer.experiments.spec import expand_grid

    for source in (
        {"domain": "{source_domain}"},  # domain a: the cells test on b
        {"domain": "{source_domain}", "finetune": {"split_seed": 3}},  # another split of a: still not b
        {"domain": "b"},  # domain b with the cells' split: it trains on their training subjects only
    ):
        cells = expand_grid(load_grid(_leak_grid(tmp_path, source)), tmp_path / "res")
        check_source_leaks(cells, cells, "g.yaml")


def test_a_copy_of_a_held_out_scan_in_another_dataset_counts(tmp_path, capsys):
    import shutil

    from medtransfer.experiments import load_grid
    from medtransfer.experiments.sources import check_source_leaks
    from medtransfer.experiments.spec import expand_grid

    grid = _leak_grid(tmp_path, {"target": "copy", "domain": "b", "finetune": {"split_seed": 3}})
    shutil.copytree(tmp_path / "data/blob", tmp_path / "data/copy")  # the same scans (copies) in another dataset
    cells = expand_grid(load_grid(grid), tmp_path / "res")
    with pytest.raises(ConfigError, match=r"would train on domain b of copy .* \(b2, b4, b7\)"):
        check_source_leaks(cells, cells, "g.yaml")
    (tmp_path / "data/copy/imagesTr/b4_0000.nii.gz").write_bytes(b"another scan")  # b4 now differs
    with pytest.raises(ConfigError, match=r"would train on domain b of copy .* \(b2, b7\)"):
        check_source_leaks(cells, cells, "g.yaml")


# --- nits: a rerun waiting to be moved in, two checkpoints named alike, cells the grid no longer has ------------


def test_status_of_a_finished_rerun_not_moved_in_yet_is_done(tmp_path, capsys, monkeypatch):
    import medtransfer.experiments.runner as runner
    from medtransfer.experiments import grid_status, load_grid, run_grid

    def grid(level):
        raw = {
            "defaults": {"kind": "dummy", "dummy": {"level": level}},
            "axes": {"target": "brain", "strategy": "full"},
        }
        return load_grid(_write(tmp_path, raw))

    run_grid(grid(0.5), results_root=tmp_path / "res", progress=False)
    real, calls = runner.os.rename, []

    def killed_between_the_renames(a, b):
        calls.append(a)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(a, b)

    monkeypatch.setattr(runner.os, "rename", killed_between_the_renames)
    with pytest.raises(KeyboardInterrupt):
        run_grid(grid(0.7), results_root=tmp_path / "res", progress=False, rerun_changed=True)
    monkeypatch.setattr(runner.os, "rename", real)
    (row,) = grid_status(grid(0.7), tmp_path / "res")
    assert row["status"] == "done"  # it said pending: the old folder is set aside, the rerun not moved in yet
    assert row["detail"].endswith(" s (a finished rerun waits in .seed0.rerun: the next grid run moves it in)")
    assert run_grid(grid(0.7), results_root=tmp_path / "res", progress=False).counts["skipped"] == 1


def test_two_checkpoints_named_alike_ask_for_names(tmp_path, capsys):
    grid = {
        "defaults": {"kind": "dummy"},
        "axes": {"target": "brain", "source": ["zoo/model.v2.pt", "zoo/model.v3.pt"], "strategy": "full"},
    }
    path = _write(tmp_path, grid)
    assert main(["grid", "status", str(path), "--results", str(tmp_path / "res")]) == 2
    assert _error(capsys) == [
        f"error: {path}: axes.source[0] and axes.source[1] are both named 'model' (a checkpoint is named after its "
        "file name up to the first dot), so their cells would share run folders; name them, e.g. {name: model_v2, "
        "checkpoint: zoo/model.v2.pt} and {name: model_v3, checkpoint: zoo/model.v3.pt}"
    ]


def test_cells_the_grid_no_longer_has_are_listed_by_status_and_left_out_of_the_results(tmp_path, capsys):
    from medtransfer.experiments import collect_cells
    from medtransfer.experiments.collect import scan_cells

    grid = {"defaults": {"kind": "dummy"}, "axes": {"target": "brain", "strategy": ["full", "scratch"], "seed": [0, 1]}}
    results = tmp_path / "res"
    assert main(["grid", "run", str(_write(tmp_path, grid)), "--results", str(results)]) == 0
    path = _write(tmp_path, {**grid, "exclude": [{"strategy": "scratch", "seed": 1}]})  # dropped, e.g. run with a bug
    capsys.readouterr()
    assert main(["grid", "status", str(path), "--results", str(results)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].split(None, 2) == [
        "brain/none__scratch/nall/seed1",
        "orphan",
        "finished run folder of a cell the grid no longer has (excluded or off its axes): grid run leaves it alone "
        "and, from the next grid run on, the report leaves it out",
    ]
    assert lines[-1] == "4 cells: 3 done, 1 orphan"
    assert main(["grid", "run", str(path), "--results", str(results)]) == 0
    assert sorted(r["cell_id"] for r in collect_cells(results / "g")) == [
        "brain/none__full/nall/seed0",
        "brain/none__full/nall/seed1",
        "brain/none__scratch/nall/seed0",
    ]
    assert scan_cells(results).skipped == (
        (
            "g/brain/none__scratch/nall/seed1",
            f"not a cell of grid {path} at its last grid run (excluded or no longer on its axes): left out; delete "
            "the folder, or put the cell back in the grid",
        ),
    )


def test_grid_results_that_are_a_file_are_one_clear_error(tmp_path, capsys):
    from medtransfer.cli import main

    grid = tmp_path / "g.yaml"
    grid.write_text("name: tiny\ndefaults: {kind: dummy}\naxes: {seed: [0]}\n")
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    for command in ("run", "status"):
        assert main(["grid", command, str(grid), "--results", str(a_file)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1
        assert f"{a_file}: is a file; --results is" in err[0]
