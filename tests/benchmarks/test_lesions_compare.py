"""benchmarks/lesions_compare.py (paired scratch-vs-source comparison of lesions.py results) and the lesion
source options of benchmarks/lesions.py: values worked out by hand or with scipy, and one-line errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from medtransfer.infer.postprocess import tune_min_component


def _result(path: Path, seed: int, dice: list[float], bins: list[tuple[int, int]], fp_per_case: float, **extra):
    """A lesions.py JSON with only what lesions_compare reads."""
    result = {
        "per_case_dice": dice,
        "recall_by_volume": [{"volume_cc": f"bin{i}", "lesions": n, "detected": d} for i, (n, d) in enumerate(bins)],
        "fp_per_case": fp_per_case,
        "f1": 0.5,
        "init": extra.pop("init", "none (scratch)"),
        **extra,
    }
    path.write_text(json.dumps({"build": {"seed": seed}, "results": {"stroke": result}}))
    return path


@pytest.fixture
def files(tmp_path):
    a = [
        _result(tmp_path / "a1.json", 1, [0.0, 0.5, 0.8], [(2, 1), (1, 1)], 1 / 3),  # 3 lesions, 2 found, 1 FP
        _result(tmp_path / "a2.json", 2, [0.1, 0.3], [(2, 0)], 1.0),  # 2 lesions, none found, 2 FP
    ]
    b = [
        _result(tmp_path / "b1.json", 1, [0.2, 0.5, 0.9], [(2, 2), (1, 1)], 0.0, init="source.pt"),
        _result(tmp_path / "b2.json", 2, [0.0, 0.6], [(2, 1)], 0.5, init="source.pt"),
    ]
    return a, b


def test_compare_pairs_scans_by_build_seed_and_pools_lesion_counts(lc, files):
    a, b = files
    # --b given in another order than --a: pairing is by build seed
    out = lc.compare([lc.load_result(p, "stroke") for p in a], [lc.load_result(p, "stroke") for p in reversed(b)])
    assert out["seeds"] == [1, 2]
    assert out["a"]["dice"] == pytest.approx((0.0 + 0.5 + 0.8 + 0.1 + 0.3) / 5)
    assert out["b"]["dice"] == pytest.approx((0.2 + 0.5 + 0.9 + 0.0 + 0.6) / 5)
    # A: 5 lesions, 2 found, 1 + 2 false-positive components -> recall 0.4, precision 2/5, F1 0.4
    assert (out["a"]["lesions"], out["a"]["detected"], out["a"]["false_positives"]) == (5, 2, 3)
    assert out["a"]["recall"] == pytest.approx(0.4)
    assert out["a"]["precision"] == pytest.approx(0.4)
    assert out["a"]["f1"] == pytest.approx(0.4)
    # B: 4 of 5 found, 0 + 1 false positives -> recall 0.8, precision 0.8, F1 0.8
    assert (out["b"]["detected"], out["b"]["false_positives"]) == (4, 1)
    assert out["b"]["f1"] == pytest.approx(0.8)
    assert out["b"]["init"] == ["source.pt"]


def test_compare_paired_tests_match_scipy(lc, files):
    a, b = files
    out = lc.compare([lc.load_result(p, "stroke") for p in a], [lc.load_result(p, "stroke") for p in b])
    diff = np.array([0.2, 0.0, 0.1, -0.1, 0.3])  # B - A, scan by scan
    d = out["dice_b_minus_a"]
    assert d["paired_scans"] == 5
    assert d["mean"] == pytest.approx(0.1)
    assert d["sd"] == pytest.approx(np.std(diff, ddof=1))
    assert (d["b_better"], d["a_better"], d["tied"]) == (3, 1, 1)
    assert d["wilcoxon_p"] == pytest.approx(stats.wilcoxon(diff[diff != 0]).pvalue)
    assert d["sign_test_p"] == pytest.approx(0.625)  # 3 wins, 1 loss: 2 * P(X >= 3 | n=4, 1/2) = 2 * 5/16
    assert d["sign_test_p"] == pytest.approx(stats.binomtest(3, 4).pvalue)
    assert d["significant_at_0.05"] is False
    # the Wilcoxon's own sample size, resampling these five differences (one a tie): at least 6 non-zero pairs
    from medtransfer.report.equivalence import wilcoxon_power, wilcoxon_sample_size

    needed = d["paired_scans_needed_for_power_0.8"]
    assert needed == wilcoxon_sample_size(diff)
    assert wilcoxon_power(diff, needed) >= 0.8 > wilcoxon_power(diff, needed - 1)


def test_a_scan_without_a_dice_is_left_out_of_every_paired_number(lc, tmp_path):
    """An MS scan with no lesion and nothing predicted has no Dice (None in lesions.py's JSON): the pair is left
    out of the means, the SD and both tests (5 scans, 4 pairs), and counted."""
    a = _result(tmp_path / "a.json", 1, [0.1, None, 0.5, 0.2, 0.6], [(4, 2)], 0.0)
    b = _result(tmp_path / "b.json", 1, [0.3, 0.0, 0.4, 0.6, 0.9], [(4, 3)], 0.0)
    out = lc.compare([lc.load_result(a, "stroke")], [lc.load_result(b, "stroke")])
    diff = np.array([0.2, -0.1, 0.4, 0.3])
    d = out["dice_b_minus_a"]
    assert (d["paired_scans"], d["scans_without_dice"]) == (4, 1)
    assert d["mean"] == pytest.approx(0.2)
    assert d["sd"] == pytest.approx(np.std(diff, ddof=1))
    assert d["wilcoxon_p"] == pytest.approx(stats.wilcoxon(diff).pvalue)
    assert out["a"]["dice"] == pytest.approx(0.35)
    assert out["b"]["dice"] == pytest.approx(0.55)
    assert d["paired_scans_needed_for_power_0.8"] is not None


def test_compare_counts_exact_lesions_from_the_volume_bins_not_the_rounded_rate(lc, tmp_path):
    path = _result(tmp_path / "a.json", 3, [0.4] * 3, [(5, 2), (2, 1), (0, 0)], 2 / 3, detection_rate=0.4)
    r = lc.load_result(path, "stroke")
    assert (r["lesions"], r["detected"], r["false_positives"]) == (7, 3, 2)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"b_seed": 9}, "--a has build seeds \\[1\\], --b \\[9\\]"),
        ({"b_dice": [0.1, 0.2]}, "seed 1: 3 test scans in A, 2 in B"),
        ({"b_cases": ["x", "y", "z"]}, "seed 1: A and B were tested on different scans"),
        ({"b_cases": ["q", "p", "r"]}, "seed 1: A and B list the same test scans in another order"),
    ],
)
def test_compare_refuses_results_that_do_not_pair(lc, tmp_path, change, message):
    a = _result(tmp_path / "a.json", 1, [0.1, 0.2, 0.3], [(3, 1)], 0.0, test_cases=["p", "q", "r"])
    b = _result(
        tmp_path / "b.json",
        change.get("b_seed", 1),
        change.get("b_dice", [0.1, 0.2, 0.3]),
        [(3, 1)],
        0.0,
        test_cases=change.get("b_cases", ["p", "q", "r"]),
    )
    with pytest.raises(lc.CompareError, match=message):
        lc.compare([lc.load_result(a, "stroke")], [lc.load_result(b, "stroke")])


def test_compare_refuses_two_results_of_one_seed(lc, tmp_path):
    a = _result(tmp_path / "a.json", 1, [0.1], [(1, 1)], 0.0)
    with pytest.raises(lc.CompareError, match="--a: two results of build seed 1"):
        lc.compare([lc.load_result(a, "stroke")] * 2, [lc.load_result(a, "stroke")])


def test_main_prints_one_line_for_a_file_without_the_target_or_not_json(lc, tmp_path, capsys):
    good = _result(tmp_path / "a.json", 1, [0.1], [(1, 1)], 0.0)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert lc.main(["--target", "ms", "--a", str(good), "--b", str(good)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "a.json: holds no 'ms' result (targets: ['stroke'])" in err
    assert lc.main(["--a", str(broken), "--b", str(good)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "broken.json: not a readable lesions.py JSON" in err


def test_main_writes_the_json_it_prints(lc, files, tmp_path, capsys):
    a, b = files
    out = tmp_path / "cmp" / "compare.json"
    assert lc.main(["--a", *map(str, a), "--b", *map(str, b), "--json", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == printed
    assert printed["target"] == "stroke"
    assert printed["dice_b_minus_a"]["paired_scans"] == 5


# ------------------------------------------------------------------------- lesions.py: the lesion source
def test_source_domains_are_the_five_other_scanners(lb):
    assert lb.DOMAIN not in lb.SOURCE_DOMAINS
    assert len(lb.SOURCE_DOMAINS) == 5
    assert len(set(lb.SOURCE_DOMAINS)) == 5


def test_run_folders_differ_by_initialisation(lb, tmp_path):
    scratch = lb.run_folder(tmp_path, "stroke", 11, None)
    source = lb.run_folder(tmp_path, "stroke", 11, tmp_path / "src" / "checkpoints" / "checkpoint_last.pt", 101)
    from_run = lb.run_folder(tmp_path, "stroke", 11, tmp_path / "zoo_run" / "checkpoints" / "checkpoint_last.pt")
    from_file = lb.run_folder(tmp_path, "stroke", 11, tmp_path / "mri_segmentation.pt")
    assert scratch.name == "run_stroke_seed11"
    assert source.name == "run_stroke_seed11_from_source101"
    assert from_run.name == "run_stroke_seed11_init_zoo_run"
    assert from_file.name == "run_stroke_seed11_init_mri_segmentation"


def test_run_folders_differ_by_recipe_and_precision(lb, tmp_path):
    """Two recipes (or precisions) in one --work get two run and source folders, so neither resumes (or is
    refused by) the other's; the default recipe as it is keeps the plain names."""
    default = lb.RECIPES["stroke"]  # fp32
    other = tmp_path / "stroke_3d.yaml"
    other.write_text("train:\n  precision: bf16\n")
    assert lb.run_variant("stroke", default, None) == ""
    assert lb.run_variant("stroke", default, "fp32") == ""  # the recipe's own precision: the same run
    assert lb.run_variant("stroke", default, "bf16") == "_bf16"
    assert lb.run_variant("stroke", other, None) == "_stroke_3d"
    assert lb.run_variant("stroke", other, "bf16") == "_stroke_3d"
    assert lb.run_variant("stroke", other, "fp32") == "_stroke_3d_fp32"
    assert lb.run_variant("ms", default, None) == "_lesion_recipe"  # the stroke recipe is not MS's default
    src = tmp_path / "src" / "checkpoints" / "checkpoint_last.pt"
    assert (
        lb.run_folder(tmp_path, "stroke", 11, src, 101, "_stroke_3d").name
        == "run_stroke_seed11_stroke_3d_from_source101"
    )
    assert lb.run_folder(tmp_path, "stroke", 11, None, None, "_bf16").name == "run_stroke_seed11_bf16"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seed", "11", "--source-seed", "11"], "--source-seed 11 equals --seed"),
        (["--seed", "11", "--source-seed", "101", "--init", "x.pt"], "give it or --init, not both"),
        (["--seed", "11", "--source-subjects", "0"], "must be at least 1"),
        (["--seed", "-1"], "--seed must be a whole number >= 0, got -1"),
        (["--seed", "11", "--epochs", "0"], "--epochs must be at least 1, got 0"),
        (["--seed", "11", "--recipe", "missing.yaml"], "--recipe missing.yaml: file not found"),
        (["--seed", "11", "--init", "missing.pt"], "--init missing.pt: not found"),
    ],
)
def test_lesions_refuses_bad_source_options_before_building(lb, tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.setattr(sys, "argv", ["lesions.py", *args, "--work", str(tmp_path / "w")])
    with pytest.raises(SystemExit) as info:
        lb.main()
    assert info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_lesions_prints_one_line_when_a_run_folder_was_made_with_other_options(lb, tmp_path, monkeypatch, capsys):
    from medtransfer.errors import ConfigError

    def refuse(args):
        raise ConfigError(
            f"{args.work}/source_stroke_seed101 was fine-tuned with other options (train.epochs: 60 -> 30)"
        )

    monkeypatch.setattr(lb, "run", refuse)
    monkeypatch.setattr(sys, "argv", ["lesions.py", "--seed", "11", "--source-seed", "101", "--work", str(tmp_path)])
    with pytest.raises(SystemExit) as info:
        lb.main()
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("lesions.py: ")
    assert "train.epochs: 60 -> 30" in err


def test_lesions_json_names_the_machine(lb, tmp_path, monkeypatch, capsys):
    import torch

    from medtransfer.train.run_env import cpu_model

    monkeypatch.setattr(lb, "run", lambda args: {"build": {"seed": args.seed}, "results": {}})
    out = tmp_path / "r.json"
    monkeypatch.setattr(sys, "argv", ["lesions.py", "--seed", "11", "--work", str(tmp_path), "--json", str(out)])
    lb.main()
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert printed["build"] == {"seed": 11}
    expected = {"cpu_model": cpu_model(), "torch": torch.__version__, "threads": torch.get_num_threads()}
    assert printed["machine"] == expected


def test_lesions_precision_reaches_the_source_and_the_target(lb, tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(lb, "build", lambda work, *a: tmp_path)
    monkeypatch.setattr(lb, "build_source", lambda work, *a: tmp_path / "source")

    def train_source(name, root, work, recipe, seed, epochs, precision=None, variant=""):
        seen["source"] = (precision, variant)
        return {"checkpoint": str(tmp_path / "src.pt")}

    def run_target(name, root, work, recipe, seed, overrides, init=None, source_seed=None, variant=""):
        seen["target"] = (overrides, variant)
        return {"pass": False}

    monkeypatch.setattr(lb, "train_source", train_source)
    monkeypatch.setattr(lb, "run_target", run_target)
    args = lb.argparse.Namespace(
        seed=11, spacing=1.0, targets=["stroke"], recipe=None, work=tmp_path, init=None, source_seed=101,
        source_subjects=10, source_epochs=60, epochs=2, precision="bf16", json=None,
    )  # fmt: skip
    report = lb.run(args)
    assert seen == {
        "source": ({"precision": "bf16"}, "_bf16"),
        "target": ({"train": {"epochs": 2, "precision": "bf16"}}, "_bf16"),
    }
    assert report["train_precision"] == {"stroke": "bf16"}
    args.precision, args.epochs = None, None
    assert lb.run(args)["train_precision"] == {"stroke": "fp32"}  # lesion_recipe.yaml's
    assert seen == {"source": ({}, ""), "target": ({}, "")}


def test_lesions_source_training_takes_the_precision_override(lb, tmp_path, monkeypatch):
    configs = []

    def run_finetune(config, resume):
        configs.append(config)
        (Path(config.out)).mkdir(parents=True)
        summary = {"labelled_cases": ["a", "b"], "val_cases": ["c"], "test_cases": ["d"]}
        (Path(config.out) / "summary.json").write_text(json.dumps(summary))

    monkeypatch.setattr(lb, "run_finetune", run_finetune)
    recipe = lb.RECIPES["stroke"]
    lb.train_source("stroke", tmp_path / "build", tmp_path / "a", recipe, 101, 3, {"precision": "bf16"}, "_bf16")
    lb.train_source("stroke", tmp_path / "build", tmp_path / "b", recipe, 101, 3)
    assert [Path(c.out).name for c in configs] == ["source_stroke_seed101_bf16", "source_stroke_seed101"]
    assert [(c.train["epochs"], c.train["precision"]) for c in configs] == [(3, "bf16"), (3, "fp32")]
    assert configs[0].train["lr"] == configs[1].train["lr"] == 3.0e-3  # the rest of the recipe's train section kept


def test_lesions_scores_by_min_component_scan_by_scan(lb):
    # 1 mm voxels; scan a: a 1000-voxel lesion found exactly plus a 150-voxel false positive; scan b: a 64-voxel
    # lesion found exactly, nothing else
    ref_a = np.zeros((30, 30, 30), bool)
    ref_a[2:12, 2:12, 2:12] = True
    pred_a = ref_a.copy()
    pred_a[20:25, 20:25, 20:26] = True
    ref_b = np.zeros((10, 10, 10), bool)
    ref_b[2:6, 2:6, 2:6] = True
    scores = lb.scores_by_min_component([pred_a, ref_b.copy()], [ref_a, ref_b], 1.0)
    assert list(scores) == [f"{v:g}" for v in lb.CANDIDATE_VOXELS]
    # a: Dice 2*1000 / (1150 + 1000) while the false positive stays (sizes up to 150), 1 from 200 to 1000, 0 above;
    # b: 1 up to 50 voxels, 0 from 80 (the 64-voxel lesion itself goes)
    assert scores["50"]["dice"] == [round(2000 / 2150, 4), 1.0]
    assert scores["50"]["false_positives"] == [1, 0]
    assert scores["50"]["found"] == scores["50"]["lesions"] == [1, 1]
    assert scores["50"]["components"] == [2, 1]
    assert scores["80"]["dice"] == scores["120"]["dice"] == [round(2000 / 2150, 4), 0.0]
    assert scores["120"]["found"] == [1, 0]
    assert scores["200"] == {
        "dice": [1.0, 0.0],
        "false_positives": [0, 0],
        "found": [1, 0],
        "lesions": [1, 1],
        "components": [1, 0],
    }
    assert scores["1200"]["dice"] == [0.0, 0.0]
    assert scores["1200"]["found"] == [0, 0]
    # the pooled F1 curve of the same sweep is the one the tuning itself computes
    f1_curve, same = lb._sweep([pred_a, ref_b.copy()], [ref_a, ref_b], 1.0)
    assert same == scores
    assert f1_curve == tune_min_component([pred_a, ref_b.copy()], [ref_a, ref_b], 1.0)[1]
