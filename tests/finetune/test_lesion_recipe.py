"""The lesion recipe's options end to end: a small lesion run learns, its checkpoint carries 2.5D context, mirroring
and the tuned post-processing, and prediction applies them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from scipy import ndimage, stats

from medtransfer.checkpoint import load_checkpoint, save_checkpoint
from medtransfer.data.io import load_nifti, save_nifti
from medtransfer.data.layouts import load_dataset, write_dataset_json
from medtransfer.errors import ConfigError
from medtransfer.experiments.evaluate_cell import evaluate_test_cases
from medtransfer.finetune import FinetuneConfig, run_finetune
from medtransfer.finetune.data import ForegroundBatchSampler
from medtransfer.infer import load_predictor
from medtransfer.infer.postprocess import EVIDENCE_PERCENTILE, lesion_size_cap
from medtransfer.metrics import compute_dice
from medtransfer.models import create_model

RECIPE = {
    "model_config": {"spatial_dims": 2, "features": 8, "depth": 2},
    "n_labelled": "all",
    "context_slices": 1,
    "foreground_fraction": 0.5,
    "foreground_sampling": "batch",
    "augment": "spatial_intensity",
    "tta_mirror": True,
    "min_component_mm3": "auto",
    "test_fraction": 0.25,
    "val_fraction": 0.25,
    "train": {
        "epochs": 4,
        "steps_per_epoch": 15,
        "batch_size": 8,
        "lr": 0.01,
        "optimizer": "adam",
        "loss": "dice_ce",
        "device": "cpu",
        "precision": "fp32",
        "progress": False,
    },
}


def lesion_dataset(root, n=8, seed=0):
    """Small dark lesions (radius 1.5-2.5 voxels, 2-3 per scan) in a bright noisy disc."""
    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    grid = np.indices((32, 32, 10)).astype(np.float32)
    brain = ((grid[0] - 16) ** 2 + (grid[1] - 16) ** 2) < 13**2
    rows = ["case,subject,domain"]
    for i in range(n):
        label = np.zeros(brain.shape, np.uint8)
        for _ in range(int(rng.integers(2, 4))):
            centre = np.array([rng.integers(8, 24), rng.integers(8, 24), rng.integers(3, 7)])[:, None, None, None]
            label[np.sqrt((((grid - centre) * np.array([1, 1, 1.5])[:, None, None, None]) ** 2).sum(0)) < 2.2] = 1
        image = brain * 1.0 - 0.6 * label + rng.normal(0, 0.12, brain.shape)
        affine = np.diag([1.0, 1.0, 1.5, 1.0])
        save_nifti(root / "imagesTr" / f"c{i}_0000.nii.gz", image.astype(np.float32), affine)
        save_nifti(root / "labelsTr" / f"c{i}.nii.gz", label, affine)
        rows.append(f"c{i},s{i},a")
    write_dataset_json(root, {"background": 0, "lesion": 1}, ["T1"], n)
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    return root


def _test_dice(predictor, dataset, case_ids) -> float:
    dices = []
    for case_id in case_ids:
        case = dataset.get(case_id)
        pred = predictor.predict(load_nifti(case.images[0], dtype="float32"))
        ref = np.rint(load_nifti(case.label).array) > 0
        dices.append(float(compute_dice((pred > 0)[None, None], ref[None, None])[0, 0]))
    return float(np.mean(dices))


def test_lesion_recipe_learns_and_its_checkpoint_carries_the_options(tmp_path):
    data = lesion_dataset(tmp_path / "lesions")
    out = run_finetune(FinetuneConfig.from_dict({**RECIPE, "data": str(data), "out": str(tmp_path / "run")}))
    summary = json.loads((out / "summary.json").read_text())
    meta = load_checkpoint(out / "checkpoints" / "checkpoint_last.pt")["meta"]
    assert meta["inference"]["context"] == 1
    assert meta["inference"]["mirror"] is True
    assert meta["postprocess"]["tuned_on"] == summary["val_cases"]
    assert len(summary["val_cases"]) == 2
    assert meta["postprocess"]["min_component_mm3"] in [float(k) for k in meta["postprocess"]["val_lesion_f1"]]
    # the size is at most half the 5 % prediction bound of the training lesions' volumes, or (where the validation F1
    # is strictly higher) their 20 % bound (lesion_size_cap, checked by hand in tests/infer)
    dataset = load_dataset(data)
    train_labels = [load_nifti(dataset.get(c).label) for c in summary["labelled_cases"]]
    masks, voxel_volumes = [np.rint(t.array) > 0 for t in train_labels], [np.prod(t.spacing[:3]) for t in train_labels]
    cap = lesion_size_cap(masks, voxel_volumes)
    evidence_cap = lesion_size_cap(masks, voxel_volumes, EVIDENCE_PERCENTILE, factor=1.0)
    post = meta["postprocess"]
    assert post["max_mm3_from_training_lesions"] == pytest.approx(cap, abs=1e-3)
    assert post["max_mm3_if_validation_better"] == pytest.approx(evidence_cap, abs=1e-3)
    assert post["min_component_mm3"] <= evidence_cap
    if post["min_component_mm3"] > cap:
        free_best = max(f1 for k, f1 in post["val_lesion_f1"].items() if float(k) <= cap)
        assert post["val_lesion_f1"][f"{post['min_component_mm3']:g}"] > free_best

    predictor = load_predictor(out, checkpoint="last", device="cpu", precision="fp32")
    assert predictor.in_channels == 1
    assert load_checkpoint(out / "checkpoints" / "checkpoint_last.pt")["model"]["config"]["in_channels"] == 3
    assert predictor.inference["context"] == 1
    assert predictor.postprocess == meta["postprocess"]
    trained = _test_dice(predictor, dataset, summary["test_cases"])
    torch.manual_seed(0)
    predictor.model.load_state_dict(
        create_model(
            "unet", **load_checkpoint(out / "checkpoints" / "checkpoint_last.pt")["model"]["config"]
        ).state_dict()
    )
    untrained = _test_dice(predictor, dataset, summary["test_cases"])
    assert trained > 0.5, (trained, untrained)
    assert trained > untrained + 0.3, (trained, untrained)


def test_predict_and_the_grid_cell_apply_the_stored_min_component_size(tmp_path):
    data = lesion_dataset(tmp_path / "lesions", n=4)
    tiny = {**RECIPE, "min_component_mm3": None, "train": {**RECIPE["train"], "epochs": 1, "steps_per_epoch": 2}}
    out = run_finetune(FinetuneConfig.from_dict({**tiny, "data": str(data), "out": str(tmp_path / "run")}))
    path = out / "checkpoints" / "checkpoint_last.pt"
    ckpt = load_checkpoint(path)
    assert "postprocess" not in ckpt["meta"]
    image = load_nifti(data / "imagesTr" / "c0_0000.nii.gz", dtype="float32")
    raw = load_predictor(path, device="cpu", precision="fp32").predict(image)
    options = {"surface_1mm": False, "save_cases": 0}
    cell = evaluate_test_cases(path, load_dataset(data), ["c0"], tmp_path / "cell", options)
    assert raw.any()
    assert cell[0]["lesion_n_pred"] > 0
    # a stored size above the untrained model's largest component empties its mask, in predict and in the cell
    ckpt["meta"]["postprocess"] = {"min_component_mm3": 1e9}
    save_checkpoint(path, ckpt)
    assert not load_predictor(path, device="cpu", precision="fp32").predict(image).any()
    cell = evaluate_test_cases(path, load_dataset(data), ["c0"], tmp_path / "cell", options)
    assert cell[0]["lesion_n_pred"] == 0


def test_a_run_without_validation_scans_stores_the_training_lesions_free_size(tmp_path):
    data = lesion_dataset(tmp_path / "lesions", n=4)
    tiny = {**RECIPE, "val_fraction": 0.0, "train": {**RECIPE["train"], "epochs": 1, "steps_per_epoch": 2}}
    out = run_finetune(FinetuneConfig.from_dict({**tiny, "data": str(data), "out": str(tmp_path / "run")}))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["val_cases"] == []
    assert len(summary["labelled_cases"]) == 3
    post = load_checkpoint(out / "checkpoints" / "checkpoint_last.pt")["meta"]["postprocess"]
    # worked out again here: 26-connected lesions of the 3 training scans, 1 x 1 x 1.5 = 1.5 mm³ a voxel; half the
    # lower 95 % prediction bound of a log-normal law fitted to them (Student's t, scipy)
    volumes = []
    for case in summary["labelled_cases"]:
        label = np.rint(load_nifti(data / "labelsTr" / f"{case}.nii.gz").array) > 0
        labels, count = ndimage.label(label, np.ones((3, 3, 3)))
        volumes += [1.5 * int((labels == i).sum()) for i in range(1, count + 1)]
    logs = np.log(volumes)
    spread = logs.std(ddof=1) * np.sqrt(1 + 1 / len(logs))
    bound = 0.5 * np.exp(logs.mean() - stats.t.ppf(0.95, len(logs) - 1) * spread)
    assert len(volumes) >= 2
    assert post["min_component_mm3"] == pytest.approx(bound, abs=1e-3)
    assert post["min_component_mm3"] == post["max_mm3_from_training_lesions"] > 0
    assert post["tuned_on"] == []
    assert post["val_lesion_f1"] == {}


def _free_and_evidence(volumes):
    """Half the 5 % and the 20 % lower prediction bounds of log-normal volumes, written out (Student's t, scipy)."""
    logs = np.log(volumes)
    n = len(logs)
    spread = logs.std(ddof=1) * np.sqrt(1 + 1 / n)
    return (
        0.5 * np.exp(logs.mean() - stats.t.ppf(0.95, n - 1) * spread),
        np.exp(logs.mean() - stats.t.ppf(0.80, n - 1) * spread),
    )


def test_a_run_fine_tuned_from_a_lesion_source_pools_its_lesions_into_the_caps(tmp_path, caplog):
    source_data = lesion_dataset(tmp_path / "source_scans", n=4)
    target_data = lesion_dataset(tmp_path / "target_scans", n=4, seed=1)  # other scans, the same lesion law
    tiny = {**RECIPE, "val_fraction": 0.0, "train": {**RECIPE["train"], "epochs": 1, "steps_per_epoch": 2}}
    source = run_finetune(FinetuneConfig.from_dict({**tiny, "data": str(source_data), "out": str(tmp_path / "src")}))
    source_ckpt = source / "checkpoints" / "checkpoint_last.pt"
    post = load_checkpoint(source_ckpt)["meta"]["postprocess"]
    recorded = post["prior_lesion_volumes_mm3"]  # the source's 3 training scans' lesions (no source of its own)
    summary = json.loads((source / "summary.json").read_text())
    assert sorted(k.split(" ")[1] for k in recorded) == sorted(f"source_scans/{c}" for c in summary["labelled_cases"])
    own = [v for volumes in recorded.values() for v in volumes]
    assert post["lesion_prior"]["source_pooled"] is False
    assert len(own) == post["lesion_prior"]["training_lesions"] >= 6
    assert post["max_mm3_from_training_lesions"] == pytest.approx(_free_and_evidence(own)[0], abs=1e-3)

    def finetune(name, init=source_ckpt, **options):
        config = {**tiny, "data": str(target_data), "out": str(tmp_path / name), "init": str(init), **options}
        return run_finetune(FinetuneConfig.from_dict(config)) / "checkpoints" / "checkpoint_last.pt"

    # the target's own training lesions, worked out again here (26-connected, 1 x 1 x 1.5 mm voxels)
    pooled = finetune("pooled")
    target_cases = json.loads((tmp_path / "pooled" / "summary.json").read_text())["labelled_cases"]
    mine = []
    for case in target_cases:
        labels, count = ndimage.label(
            load_nifti(target_data / "labelsTr" / f"{case}.nii.gz").array > 0.5, np.ones((3,) * 3)
        )
        mine += [1.5 * int((labels == i).sum()) for i in range(1, count + 1)]
    # the same law: Mann-Whitney does not tell them apart, so the source's lesions join
    post = load_checkpoint(pooled)["meta"]["postprocess"]
    assert post["lesion_prior"]["source_pooled"] is True
    assert post["lesion_prior"]["agreement_p"] == pytest.approx(stats.mannwhitneyu(mine, own).pvalue)
    assert post["lesion_prior"]["agreement_p"] >= 0.05
    assert (post["lesion_prior"]["training_lesions"], post["lesion_prior"]["source_lesions"]) == (len(mine), len(own))
    assert len(post["prior_lesion_volumes_mm3"]) == 6  # 3 target scans and the source's 3
    free, evidence = _free_and_evidence(mine + own)
    assert post["max_mm3_from_training_lesions"] == pytest.approx(free, abs=1e-3)
    assert post["max_mm3_if_validation_better"] == pytest.approx(evidence, abs=1e-3)
    # a chain: fine-tuned again from that run on the same scans, each scan's lesions still count once
    chained = load_checkpoint(finetune("chained", pooled))["meta"]["postprocess"]
    assert chained["prior_lesion_volumes_mm3"] == post["prior_lesion_volumes_mm3"]
    assert chained["max_mm3_from_training_lesions"] == post["max_mm3_from_training_lesions"]
    post = load_checkpoint(finetune("target", min_component_prior="target"))["meta"]["postprocess"]
    assert post["lesion_prior"]["source_pooled"] is False
    assert post["max_mm3_from_training_lesions"] == pytest.approx(_free_and_evidence(mine)[0], abs=1e-3)
    # a source of lesions a thousand times larger (another kind) is refused, with a warning
    ckpt = load_checkpoint(source_ckpt)
    ckpt["meta"]["postprocess"]["prior_lesion_volumes_mm3"] = {
        k: [1000.0 * v for v in vs] for k, vs in recorded.items()
    }
    save_checkpoint(source_ckpt, ckpt)
    with caplog.at_level("WARNING", logger="medtransfer"):
        post = load_checkpoint(finetune("refused"))["meta"]["postprocess"]
    assert post["lesion_prior"]["source_pooled"] is False
    assert post["lesion_prior"]["agreement_p"] < 0.01
    assert len(post["prior_lesion_volumes_mm3"]) == 3
    assert "the source's lesions differ in size" in caplog.text


def test_foreground_batch_sampler_fills_every_batch_and_is_resumable():
    sampler = ForegroundBatchSampler(50, [4, 9, 11], 0.5, batch_size=6, steps_per_epoch=5, seed=3)
    for step in range(5):
        batch = sampler.global_indices(2, step)
        assert len(batch) == 6
        assert sum(i in (4, 9, 11) for i in batch) >= 3
        assert batch == ForegroundBatchSampler(50, [4, 9, 11], 0.5, 6, 5, seed=3).global_indices(2, step)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("context_slices", -1, "context_slices must be an integer >= 0"),
        ("foreground_sampling", "batches", "foreground_sampling"),
        ("min_component_mm3", "tiny", "min_component_mm3 must be 'auto', null or a volume"),
        ("tta_mirror", "yes", "tta_mirror must be true or false"),
        ("symmetry_channel", "yes", "symmetry_channel must be true or false"),
        ("max_val_cases", -1, r"max_val_cases must be an integer >= 0 \(0: no validation\), got -1"),
        ("max_val_cases", "2", "max_val_cases must be an integer >= 0"),
    ],
)
def test_recipe_options_are_checked(key, value, message):
    with pytest.raises(ConfigError, match=message):
        FinetuneConfig.from_dict({"data": "d", "out": "o", key: value})


def test_a_bad_option_in_a_recipe_file_names_the_file(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("context_slices: -1\n")
    with pytest.raises(ConfigError, match=r"recipe\.yaml: context_slices must be an integer >= 0, got -1"):
        FinetuneConfig.from_yaml(path, data="d", out="o")


def test_a_run_with_lesion_mix_learns_and_records_it(tmp_path):
    data = lesion_dataset(tmp_path / "lesions")
    values = {**RECIPE, "lesion_mix": 0.5, "min_component_mm3": None, "data": str(data), "out": str(tmp_path / "run")}
    out = run_finetune(FinetuneConfig.from_dict(values))
    summary = json.loads((out / "summary.json").read_text())
    assert yaml.safe_load((out / "config.yaml").read_text())["lesion_mix"] == 0.5
    predictor = load_predictor(out, checkpoint="last", device="cpu", precision="fp32")
    trained = _test_dice(predictor, load_dataset(data), summary["test_cases"])
    assert trained > 0.5, trained


def test_lesion_mix_needs_a_2d_model(tmp_path):
    data = lesion_dataset(tmp_path / "lesions", n=4)
    values = {**RECIPE, "context_slices": 0, "lesion_mix": 0.5, "data": str(data), "out": str(tmp_path / "run")}
    values["model_config"] = {"spatial_dims": 3, "features": 4, "depth": 2}
    with pytest.raises(ConfigError, match="lesion_mix carves lesions into 2D slices: it needs a 2D model, got a 3D"):
        run_finetune(FinetuneConfig.from_dict(values))
    assert not (tmp_path / "run").exists()


def test_a_run_with_a_symmetry_channel_learns_and_predicts_with_it(tmp_path):
    data = lesion_dataset(tmp_path / "lesions")
    values = {**RECIPE, "symmetry_channel": True, "min_component_mm3": None, "train": {**RECIPE["train"], "epochs": 8}}
    out = run_finetune(FinetuneConfig.from_dict({**values, "data": str(data), "out": str(tmp_path / "run")}))
    summary = json.loads((out / "summary.json").read_text())
    ckpt = load_checkpoint(out / "checkpoints" / "checkpoint_last.pt")
    assert ckpt["meta"]["inference"]["symmetry"] is True
    assert ckpt["model"]["config"]["in_channels"] == 6  # (T1, its mirror) x 3 slices of 2.5D context
    predictor = load_predictor(out, checkpoint="last", device="cpu", precision="fp32")
    assert predictor.in_channels == 1  # the user gives the T1 alone; prediction adds its mirror
    trained = _test_dice(predictor, load_dataset(data), summary["test_cases"])
    assert trained > 0.5, trained


def test_symmetry_channel_and_lesion_mix_are_not_combined():
    with pytest.raises(ConfigError, match="symmetry_channel and lesion_mix cannot be combined"):
        FinetuneConfig.from_dict({"data": "d", "out": "o", "symmetry_channel": True, "lesion_mix": 0.3})
