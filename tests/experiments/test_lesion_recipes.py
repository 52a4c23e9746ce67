"""The shipped lesion recipes agree with each other and with the Zoetmulder grid's lesion cells."""

from __future__ import annotations

from pathlib import Path

import yaml

from medtransfer.experiments.spec import expand_grid, load_grid
from medtransfer.finetune import FinetuneConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _recipe(name: str) -> dict:
    return yaml.safe_load((CONFIGS / "recipes" / name).read_text())


def test_the_ms_recipe_is_the_lesion_recipe_with_the_blob_loss():
    stroke, ms = _recipe("lesion_recipe.yaml"), _recipe("ms_lesion_recipe.yaml")
    assert stroke["train"].pop("loss") == "dice_ce"
    assert ms["train"].pop("loss") == "blob_dice_ce"
    assert stroke == ms
    for name in ("lesion_recipe.yaml", "ms_lesion_recipe.yaml"):
        config = FinetuneConfig.from_yaml(CONFIGS / "recipes" / name, data="d", out="o")
        assert config.preprocess["target_spacing"] == [1.5, 1.5, 1.5]


def test_the_variant_recipes_are_the_lesion_recipe_plus_one_key():
    base = _recipe("lesion_recipe.yaml")
    for name, key, value in (
        ("lesion_mix_recipe.yaml", "lesion_mix", 0.3),
        ("lesion_symmetry_recipe.yaml", "symmetry_channel", True),
    ):
        variant = _recipe(name)
        assert variant.pop(key) == value
        assert variant == base, name
        assert getattr(FinetuneConfig.from_yaml(CONFIGS / "recipes" / name, data="d", out="o"), key) == value


def test_zoetmulder_lesion_cells_use_the_recipes(tmp_path):
    cells = expand_grid(load_grid(CONFIGS / "zoetmulder2022.yaml"), tmp_path)
    recipe = _recipe("lesion_recipe.yaml")
    for target, loss in (("ms_lesion", "blob_dice_ce"), ("stroke_lesion", "dice_ce")):
        finetune = next(c for c in cells if c.id.startswith(target + "/mri_seg")).config["finetune"]
        assert finetune["train"]["loss"] == loss
        assert finetune["preprocess"] == recipe["preprocess"]
        for key in ("context_slices", "foreground_fraction", "foreground_sampling", "augment", "tta_mirror"):
            assert finetune[key] == recipe[key], key
    anatomy = next(c for c in cells if c.id.startswith("anatomy/")).config["finetune"]
    assert "preprocess" not in anatomy


def test_the_lesion_demo_runs_the_ms_recipe():
    from medtransfer.experiments.demo import LESION_RECIPE

    assert _recipe("ms_lesion_recipe.yaml") == LESION_RECIPE


def test_the_3d_stroke_recipe_differs_from_the_lesion_recipe_in_the_network_and_sampling_only():
    flat, deep = _recipe("lesion_recipe.yaml"), _recipe("stroke_3d_recipe.yaml")
    differ = {k for k in flat.keys() | deep.keys() if k != "train" and flat.get(k) != deep.get(k)}
    assert differ == {"model_config", "patch_size", "context_slices", "foreground_sampling"}
    train_differ = {
        k for k in flat["train"].keys() | deep["train"].keys() if flat["train"].get(k) != deep["train"].get(k)
    }
    assert train_differ == {"epochs", "batch_size", "val_every"}
    # the same split, spacing, loss, augmentation, mirroring and post-processing, so the two compare on one split
    for key in ("split_seed", "test_fraction", "val_fraction", "max_val_cases", "preprocess", "augment", "tta_mirror"):
        assert deep[key] == flat[key], key
    assert deep["min_component_mm3"] == flat["min_component_mm3"] == "auto"
    assert deep["train"]["loss"] == flat["train"]["loss"] == "dice_ce"
    config = FinetuneConfig.from_yaml(CONFIGS / "recipes" / "stroke_3d_recipe.yaml", data="d", out="o")
    assert config.model_config["spatial_dims"] == 3
    assert config.model_config["norm"] == "instance"
    assert list(config.patch_size) == [48, 48, 48]
    assert "context_slices" not in deep  # 2.5D stacking is a 2D-only key
    assert config.train["epochs"] * config.train["steps_per_epoch"] == 8000
