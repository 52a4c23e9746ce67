"""Lesion recipe benchmark: train the lesion recipes from scratch on a brainshift build, print JSON.

Stroke uses configs/recipes/lesion_recipe.yaml, MS configs/recipes/ms_lesion_recipe.yaml (the same keys with the
blob loss); ``--recipe`` makes every target use one file.

Builds (or reuses) a 16-subject siemens_3t brainshift build of stroke and MS lesions (at 1 mm: the recipe resamples
to its working spacing, 1.5 mm), trains the recipe on the
non-test scans of the demo's split (test_fraction 0.5, split_seed 0: 8 test scans; 6 training + 2 validation),
predicts the 8 test scans as ``medtransfer predict`` does and scores them with the grid cell's scoring
(:func:`medtransfer.experiments.evaluate_cell.score`, lesions matched at IoU >= 0.1, 26-connected).  Prints Dice,
lesion recall / precision / F1, false positives per scan, per-lesion recall by reference volume, seconds and
pass/fail against issue 16's targets.

    # one thread per run; with more threads on cores other jobs share, add OMP_WAIT_POLICY=PASSIVE (libgomp's
    # waiting threads otherwise spin and slow every job on the machine, as the medtransfer command avoids)
    OMP_NUM_THREADS=1 python benchmarks/lesions.py --seed 23 [--spacing 1] [--targets stroke ms] [--work DIR]
        [--init SOURCE.pt]   # fine-tune a pretrained source (e.g. from `medtransfer pretrain zoo`) instead
        [--source-seed 101]  # first train the recipe on a lesion build of the five *other* scanners, then
                             # fine-tune that lesion source (strategy full) instead of training from scratch
        [--precision bf16]   # train source and target in bf16 (CPUs with AMX / AVX512-BF16); predict in fp32

``--source-seed S`` is the realistic transfer setting for a lesion target: a public lesion dataset from other
scanners (as ATLAS is for stroke) as the source, the user's few scans as the target.  It builds
``--source-subjects`` (10) subjects per profile of the five profiles other than siemens_3t at seed ``S`` (a
different seed from ``--seed``: other subjects, other lesions; brainshift has one real head, Colin27, so the
source's anatomy is other deformations of the same head, an optimistic stand-in for a public dataset), trains the
target's recipe on all of it but 2 held-out and 2 validation scans for ``--source-epochs`` (60: 3000 steps, ~22
min on one core) and fine-tunes its last weights on the target split exactly as the scratch run trains.

``--work`` keeps the builds and one run folder per target, seed, initialisation, recipe and precision (names in
the JSON's ``run_dir``): the same command again resumes an interrupted run from its last epoch or reuses a
finished one, and other recipes or precisions share the builds without touching its folder.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from medtransfer.bench.build import BenchmarkConfig, build_benchmark, check_simulator
from medtransfer.bench.profiles import list_profiles
from medtransfer.bench.simulate import SIMULATOR_VERSION
from medtransfer.data.io import load_nifti
from medtransfer.data.layouts import load_dataset
from medtransfer.errors import MedTransferError
from medtransfer.experiments.evaluate_cell import lesion_match_rule, score, summarize_rows
from medtransfer.finetune import FinetuneConfig, run_finetune
from medtransfer.infer import load_predictor
from medtransfer.infer.postprocess import (
    CANDIDATE_VOXELS,
    MIN_COMPONENT_KEY,
    apply_postprocess,
    component_sizes,
    keep_components,
)
from medtransfer.metrics.lesions import (
    DEFAULT_LESION_IOU,
    MSSEG,
    LesionStats,
    compute_lesion_detection,
    lesion_case,
    reduce_lesion_stats,
)
from medtransfer.metrics.lesions import recall_by_volume as lesion_recall_by_volume
from medtransfer.metrics.overlap import compute_dice

REPO = Path(__file__).resolve().parents[1]
TARGETS = {
    "stroke": ("stroke_lesion", "Dataset004_StrokeLesion", {"dice": 0.45, "lesion_f1": 0.55}),
    "ms": ("ms_lesion", "Dataset003_MSLesion", {"lesion_f1": 0.45}),
}
RECIPES = {
    "stroke": REPO / "configs" / "recipes" / "lesion_recipe.yaml",
    "ms": REPO / "configs" / "recipes" / "ms_lesion_recipe.yaml",
}
DOMAIN = "siemens_3t"
SOURCE_DOMAINS = tuple(p for p in list_profiles() if p != DOMAIN)
SOURCE_SPLIT = {"test_fraction": 0.05, "val_fraction": 0.05}  # 50 scans: 46 training, 2 validation, 2 held out
SCORES_KEY = "test_scores_by_min_mm3 (diagnostic, not used to choose)"
VOLUME_BINS_CC = (0.0, 0.03, 0.1, 0.3, 1.0, 10.0, float("inf"))


def build(
    work: Path,
    seed: int,
    spacing: float,
    targets: list[str],
    subjects: int = 16,
    domains: tuple[str, ...] = (DOMAIN,),
    name: str | None = None,
) -> Path:
    """A brainshift build of ``targets`` in ``work`` (reused when it already holds every dataset): by default the
    target build (16 siemens_3t subjects), with ``domains`` / ``subjects`` / ``name`` the lesion source's."""
    root = work / (name or f"brainshift_seed{seed}_{spacing:g}mm")
    if all((root / TARGETS[t][1] / "dataset.json").is_file() for t in targets):
        for t in targets:
            check_simulator(root / TARGETS[t][1])
        return root
    config = BenchmarkConfig(
        out=root,
        seed=seed,
        subjects_per_domain=subjects,
        spacing=spacing,
        targets=tuple(TARGETS[t][0] for t in targets),
        domains=domains,
        sources=False,
    )
    return build_benchmark(config)


def build_source(work: Path, seed: int, spacing: float, targets: list[str], subjects: int) -> Path:
    """The lesion source's build: ``subjects`` per profile of every profile but the target's."""
    name = f"brainshift_source_seed{seed}_{spacing:g}mm_{subjects}x{len(SOURCE_DOMAINS)}"
    return build(work, seed, spacing, targets, subjects, SOURCE_DOMAINS, name)


def train_source(
    name: str,
    root: Path,
    work: Path,
    recipe: Path,
    seed: int,
    epochs: int,
    precision: dict | None = None,
    variant: str = "",
) -> dict:
    """Train ``recipe`` from scratch on every scanner of the source build (``precision``: a ``train.precision``
    override; ``variant``: see ``run_variant``); its last weights are the source."""
    out = work / f"source_{name}_seed{seed}{variant}"
    start = time.perf_counter()
    config = FinetuneConfig.from_yaml(
        recipe,
        data=str(root / TARGETS[name][1]),
        out=str(out),
        init=None,
        n_labelled="all",
        seed=0,
        **SOURCE_SPLIT,
        train={"epochs": epochs, **(precision or {})},
    )
    run_finetune(config, resume=True)
    summary = json.loads((out / "summary.json").read_text())
    return {
        "seed": seed,
        "domains": list(SOURCE_DOMAINS),
        "path": str(root),
        "simulator": SIMULATOR_VERSION,
        "recipe_epochs": epochs,
        "train_cases": len(summary["labelled_cases"]),
        "val_cases": summary["val_cases"],
        "held_out_cases": summary["test_cases"],
        "checkpoint": str(out / "checkpoints" / "checkpoint_last.pt"),
        "train_seconds": round(time.perf_counter() - start, 1),
    }


def recall_by_volume(preds: list[np.ndarray], refs: list[np.ndarray], spacing) -> list[dict]:
    """Per-lesion recall in reference-volume bins, summed over the cases (``metrics.lesions.recall_by_volume``, the
    rule of the grid cell, with this benchmark's finer bins)."""
    edges_mm3 = [v * 1000.0 for v in VOLUME_BINS_CC]
    total = np.zeros(len(VOLUME_BINS_CC) - 1, dtype=int)
    detected = np.zeros_like(total)
    for pred, ref in zip(preds, refs, strict=True):
        counts = lesion_recall_by_volume(pred, ref, spacing, edges_mm3, iou_threshold=DEFAULT_LESION_IOU)
        total += [n for n, _ in counts.values()]
        detected += [d for _, d in counts.values()]
    return [
        {"volume_cc": f"{lo:g}-{hi:g}", "lesions": int(n), "detected": int(d), "recall": (d / n if n else None)}
        for lo, hi, n, d in zip(VOLUME_BINS_CC[:-1], VOLUME_BINS_CC[1:], total, detected, strict=True)
    ]


def run_variant(name: str, recipe: Path, precision: str | None) -> str:
    """The part of a run folder's name that tells recipes and precisions apart: ``_{recipe stem}`` for a recipe other
    than the target's default and ``_{precision}`` for a --precision other than the recipe's own; "" for the
    default recipe as it is. Runs of several recipes then share one --work (and its builds) without one resuming,
    or refusing, another's folder."""
    parts = [] if recipe.resolve() == RECIPES[name].resolve() else [recipe.stem]
    if precision and precision != recipe_precision(recipe):
        parts.append(precision)
    return "".join(f"_{part}" for part in parts)


def run_folder(
    work: Path, name: str, seed: int, init: Path | None, source_seed: int | None = None, variant: str = ""
) -> Path:
    """The target run's folder: one per initialisation, so that a finished scratch run is never resumed as a
    fine-tuning run (or the other way round), and one per recipe / precision (``variant``, see ``run_variant``)."""
    if source_seed is not None:
        return work / f"run_{name}_seed{seed}{variant}_from_source{source_seed}"
    if init is not None:  # a run folder's checkpoint is named after the run, a bare file after itself
        label = init.parent.parent.name if init.parent.name == "checkpoints" else init.stem
        return work / f"run_{name}_seed{seed}{variant}_init_{label}"
    return work / f"run_{name}_seed{seed}{variant}"


def run_target(
    name: str,
    root: Path,
    work: Path,
    recipe: Path,
    seed: int,
    overrides: dict,
    init: Path | None = None,
    source_seed: int | None = None,
    variant: str = "",
) -> dict:
    target, folder, thresholds = TARGETS[name]
    data = root / folder
    out = run_folder(work, name, seed, init, source_seed, variant)
    start = time.perf_counter()
    config = FinetuneConfig.from_yaml(
        recipe,
        data=str(data),
        out=str(out),
        init=str(init) if init else None,
        target_domain=DOMAIN,
        n_labelled="all",
        seed=0,
        **overrides,
    )
    run_finetune(config, resume=True)
    train_s = time.perf_counter() - start
    summary = json.loads((out / "summary.json").read_text())
    predictor = load_predictor(out, checkpoint="last", device="cpu", precision="fp32")
    result = {
        "target": target,
        "init": str(init) if init else "none (scratch)",
        "run_dir": str(out),
        **score_test_cases(predictor, data, summary, thresholds),
        "history": _history(out),
        "train_seconds": round(train_s, 1),
    }
    return result


def score_test_cases(predictor, data: Path, summary: dict, thresholds: dict) -> dict:
    """Predict a run's (or an ensemble's) test scans and score them: Dice, lesion recall / precision / F1, false
    positives per scan, recall by volume, the tuned minimum component size and pass/fail against ``thresholds``.

    ``predictor`` is a :class:`~medtransfer.infer.Predictor` or an :class:`~medtransfer.infer.ensemble.Ensemble`
    whose ``postprocess`` holds its tuned size; ``summary`` names the test, training and validation cases."""
    chosen = predictor.postprocess.get(MIN_COMPONENT_KEY) or 0.0
    val_f1 = predictor.postprocess.get("val_lesion_f1")
    caps = {
        k: predictor.postprocess.get(k)
        for k in ("max_mm3_from_training_lesions", "max_mm3_if_validation_better", "lesion_prior")
    }
    predictor.postprocess = {}  # raw predictions first: the test F1 of every candidate size is a diagnostic
    dataset = load_dataset(data)
    rows, preds, refs, raws = [], [], [], []
    start = time.perf_counter()
    for case_id in summary["test_cases"]:
        case = dataset.get(case_id)
        raw = predictor.predict(load_nifti(case.images[0], dtype="float32"), source=case_id)
        ref = load_nifti(case.label)
        pred = apply_postprocess(raw, ref.spacing[:3], {MIN_COMPONENT_KEY: chosen})
        raws.append(raw > 0)
        ref_labels = np.rint(ref.array).astype(np.int64)
        rows.append(score(pred, ref_labels, ref.spacing[:3], 1, {"surface_dice": False}, True))
        preds.append(pred > 0)
        refs.append(ref_labels > 0)
    predict_s = time.perf_counter() - start
    metrics = summarize_rows(rows)
    msseg = rule_scores(preds, refs, ref.spacing[:3], MSSEG)
    test_f1, test_scores = _sweep(raws, refs, float(np.prod(ref.spacing[:3])))  # every candidate, one matching each
    result = {
        "dice": metrics.get("dice"),
        "per_case_dice": [_rounded(r["dice"]) for r in rows],  # None: no lesion and nothing predicted
        **{k: metrics.get(f"lesion_{k}") for k in ("detection_rate", "precision", "f1", "fp_per_case")},
        "lesions": int(sum(r["lesion_n_ref"] for r in rows)),
        "recall_by_volume": recall_by_volume(preds, refs, ref.spacing[:3]),
        "min_component_mm3": chosen,
        "msseg_rule (reported beside, decides nothing)": msseg,
        "val_lesion_f1_by_min_mm3": val_f1,
        **caps,
        "test_lesion_f1_by_min_mm3 (diagnostic, not used to choose)": test_f1,
        SCORES_KEY: test_scores,
        "test_cases": summary["test_cases"],
        "train_cases": summary["labelled_cases"],
        "val_cases": summary["val_cases"],
        "predict_seconds": round(predict_s, 1),
        "targets": thresholds,
    }
    values = {"dice": result["dice"], "lesion_f1": result["f1"]}
    result["pass"] = all(values[k] is not None and values[k] >= v for k, v in thresholds.items())
    return result


def _rounded(value) -> float | None:
    """A per-scan Dice for the JSON: 3 decimals, None where it is undefined (no lesion on either side)."""
    return None if value is None or not math.isfinite(float(value)) else round(float(value), 3)


def rule_scores(preds: list[np.ndarray], refs: list[np.ndarray], spacing, rule) -> dict:
    """Lesion recall, precision, F1 (micro over the scans), false positives per scan and per-scan counts of
    ``preds`` against ``refs`` under one matching ``rule`` (:func:`~medtransfer.metrics.lesions.lesion_case`'s
    ``iou_threshold``: an IoU, ``None`` or ``"msseg"``), with the rule in words."""
    stats = [lesion_case(p, r, spacing, iou_threshold=rule)[0] for p, r in zip(preds, refs, strict=True)]
    pooled = reduce_lesion_stats(LesionStats.concatenate(stats), "micro")

    def value(name):
        number = float(pooled[name][0])
        return number if math.isfinite(number) else None

    return {
        "lesion_match": lesion_match_rule(rule),
        "detection_rate": value("detection_rate"),
        "precision": value("precision"),
        "f1": value("f1"),
        "fp_per_case": value("fp_per_case"),
        "lesions": [int(s.n_ref[0, 0]) for s in stats],
        "found": [int(s.tp[0, 0]) for s in stats],
        "false_positives": [int(s.fp[0, 0]) for s in stats],
        "components": [int(s.n_pred[0, 0]) for s in stats],
    }


def scores_by_min_component(preds: list[np.ndarray], refs: list[np.ndarray], voxel_volume_mm3: float) -> dict:
    """Per-scan Dice, false-positive components, lesions found and predicted components (lesions matched at
    IoU >= 0.1, 26-connected) of ``preds`` after removing the components under each candidate size
    (:data:`~medtransfer.infer.postprocess.CANDIDATE_VOXELS`, keyed by mm³ as the F1 curve), so that two size rules
    can be compared scan by scan on the same raw predictions (``benchmarks/min_component_rules.py``)."""
    return _sweep(preds, refs, voxel_volume_mm3)[1]


def _sweep(preds: list[np.ndarray], refs: list[np.ndarray], voxel_volume_mm3: float) -> tuple[dict, dict]:
    """``(pooled lesion F1, per-scan scores)`` at every candidate size, from one labelling and one lesion matching
    per scan and size: the F1 as :func:`~medtransfer.infer.postprocess.tune_min_component` scores it (micro, 0 where
    undefined), the scores as :func:`scores_by_min_component` returns them."""
    components = [component_sizes(p) for p in preds]
    f1_curve, out = {}, {}
    for voxels in CANDIDATE_VOXELS:
        kept = [keep_components(labels, sizes, voxels)[None, None] for labels, sizes in components]
        cases = [(k, r[None, None]) for k, r in zip(kept, refs, strict=True)]
        dice = [float(compute_dice(k, r)[0, 0]) for k, r in cases]
        stats = [compute_lesion_detection(k, r, iou_threshold=DEFAULT_LESION_IOU) for k, r in cases]
        key = f"{round(voxels * voxel_volume_mm3, 3):g}"
        f1 = float(reduce_lesion_stats(LesionStats.concatenate(stats), "micro")["f1"][0])
        f1_curve[key] = f1 if math.isfinite(f1) else 0.0
        out[key] = {
            "dice": [round(d, 4) if np.isfinite(d) else None for d in dice],
            "false_positives": [int(s.fp[0, 0]) for s in stats],
            "found": [int(s.tp[0, 0]) for s in stats],
            "lesions": [int(s.n_ref[0, 0]) for s in stats],
            "components": [int(s.n_pred[0, 0]) for s in stats],
        }
    return f1_curve, out


def _history(out: Path) -> list[dict]:
    lines = (out / "history.jsonl").read_text().splitlines() if (out / "history.jsonl").is_file() else []
    keep = ("epoch", "train_loss", "val_dice")
    return [{k: v for k, v in json.loads(line).items() if k in keep} for line in lines if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, required=True, help="seed of the brainshift build")
    parser.add_argument(
        "--spacing", type=float, default=1.0, help="spacing of the build in mm (the recipe resamples to its own)"
    )
    parser.add_argument("--targets", nargs="+", choices=sorted(TARGETS), default=["stroke", "ms"])
    parser.add_argument(
        "--recipe", type=Path, default=None, help="one recipe for every target (default: each target's, RECIPES)"
    )
    parser.add_argument("--work", type=Path, default=Path("lesion-benchmark"), help="builds and run folders")
    parser.add_argument(
        "--init", type=Path, default=None, help="fine-tune this source checkpoint (strategy full) instead of scratch"
    )
    parser.add_argument(
        "--source-seed",
        type=int,
        default=None,
        help="train a lesion source on the other five scanners' build of this seed first, then fine-tune it",
    )
    parser.add_argument("--source-subjects", type=int, default=10, help="source subjects per scanner profile")
    parser.add_argument("--source-epochs", type=int, default=60, help="epochs of the source's training (50 steps)")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs (quick checks)")
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16", "auto"),
        default=None,
        help="override the recipes' train.precision (source and target): bf16 trains faster on a CPU with AMX or "
        "AVX512-BF16 (default: the recipe's, fp32); test scans are predicted in fp32 either way",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    if args.source_seed is not None and args.source_seed == args.seed:
        parser.error(f"--source-seed {args.source_seed} equals --seed: the source must hold other subjects")
    if args.source_seed is not None and args.init is not None:
        parser.error("--source-seed trains the source to fine-tune: give it or --init, not both")
    if args.source_subjects < 1 or args.source_epochs < 1:
        parser.error("--source-subjects and --source-epochs must be at least 1")
    if args.seed < 0:
        parser.error(f"--seed must be a whole number >= 0, got {args.seed}")
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {args.epochs}")
    # checked before the build (minutes): a missing recipe or source would otherwise stop the run only after it
    if args.recipe is not None and not args.recipe.is_file():
        parser.error(f"--recipe {args.recipe}: file not found")
    if args.init is not None and not args.init.exists():
        parser.error(f"--init {args.init}: not found")
    run_and_print(run, args, "lesions.py")


def machine() -> dict:
    """Where the numbers were measured: fp32 training repeats exactly on one processor, not across processors
    (seed 47's stroke scratch run: Dice 0.165 on an AMD EPYC, 0.060 on an Intel Xeon, same command)."""
    import torch

    from medtransfer.train.run_env import cpu_model

    return {"cpu_model": cpu_model(), "torch": torch.__version__, "threads": torch.get_num_threads()}


def run_and_print(run_fn, args: argparse.Namespace, script: str) -> None:
    """``run_fn(args)``'s report printed as JSON (and written to ``args.json``); a user error is one line naming
    ``script``, exit status 2, no traceback (e.g. a run folder of --work made with other options)."""
    try:
        report = run_fn(args)
    except MedTransferError as err:
        print(f"{script}: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    report["machine"] = machine()
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)


def recipe_precision(recipe: Path) -> str:
    """The recipe's ``train.precision`` (``auto`` where it sets none, as FinetuneConfig)."""
    import yaml

    train = (yaml.safe_load(recipe.read_text()) or {}).get("train") or {}
    return str(train.get("precision", "auto"))


def run(args: argparse.Namespace) -> dict:
    """Build, (train the source,) train and score every target; the report as a dict."""
    start = time.perf_counter()
    root = build(args.work, args.seed, args.spacing, args.targets)
    train = {"epochs": args.epochs} if args.epochs else {}
    precision = {"precision": args.precision} if args.precision else {}
    overrides = {"train": {**train, **precision}} if train or precision else {}
    recipes = {t: args.recipe or RECIPES[t] for t in args.targets}
    variants = {t: run_variant(t, recipes[t], args.precision) for t in args.targets}
    sources: dict[str, dict] = {}
    if args.source_seed is not None:
        source_root = build_source(args.work, args.source_seed, args.spacing, args.targets, args.source_subjects)
        for t in args.targets:
            sources[t] = train_source(
                t, source_root, args.work, recipes[t], args.source_seed, args.source_epochs, precision, variants[t]
            )
    results = {}
    for t in args.targets:
        init = Path(sources[t]["checkpoint"]) if t in sources else args.init
        results[t] = run_target(
            t, root, args.work, recipes[t], args.seed, overrides, init, args.source_seed, variants[t]
        )
        if t in sources:
            results[t]["source"] = sources[t]
    report = {
        "build": {
            "seed": args.seed,
            "spacing_mm": args.spacing,
            "subjects": 16,
            "domain": DOMAIN,
            "path": str(root),
            "simulator": SIMULATOR_VERSION,
        },
        "recipes": {t: str(r.relative_to(REPO) if r.is_relative_to(REPO) else r) for t, r in recipes.items()},
        "train_precision": {t: args.precision or recipe_precision(r) for t, r in recipes.items()},
        "lesion_match": lesion_match_rule(DEFAULT_LESION_IOU),
        "results": results,
        "pass": all(r["pass"] for r in results.values()),
        "seconds": round(time.perf_counter() - start, 1),
    }
    return report


if __name__ == "__main__":
    from medtransfer.cli import run_script

    run_script(main)
