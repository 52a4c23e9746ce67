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
