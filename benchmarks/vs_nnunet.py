"""medtransfer's scratch arm against nnU-Net v2 on the same brainshift lesion split, with the same wall-clock budget.

Prints JSON: test Dice, lesion recall / precision / F1 and seconds for both, and the ratio medtransfer / nnU-Net.

Usage (nnU-Net is an optional extra: install it into a separate environment, never the development one)::

    python3 -m venv ~/nnunet-venv && ~/nnunet-venv/bin/pip install torch==2.13.0
    ~/nnunet-venv/bin/pip install -e '.[bench-nnunet]'
    ~/nnunet-venv/bin/python benchmarks/vs_nnunet.py --minutes 20 [--targets stroke_lesion ms_lesion]
        [--seed 0] [--spacing 3] [--data BRAINSHIFT] [--work DIR] [--nnunet-configuration 2d|3d_fullres]
        [--nnunet-batch-size N] [--medtransfer-config FINETUNE.yaml]

Data: a brainshift build (``--data``, or built into the work folder with ``medtransfer data build-benchmark --seed S
--spacing X --subjects-per-domain 16 --targets ... --domains siemens_3t --no-sources``).  Per target:

* **medtransfer** runs through its command line, as a user would: ``medtransfer finetune --init none`` with the
  recipe (``--medtransfer-config``; default: ``configs/recipes/lesion_recipe.yaml``) on every training
  subject of the recipe's split, then ``medtransfer predict`` on the run's test scans and ``medtransfer evaluate``.
  A short probe run (two epochs of 15 steps) first measures the speed; the real run keeps the recipe's epochs and
  lengthens (or shortens) each one so that the run takes ``--minutes``.  The probe's ``summary.json`` names the
  test cases.
* **nnU-Net** gets exactly those test cases as ``imagesTs`` and every other case of the domain as ``imagesTr``
  (nnU-Net trains fold ``all`` on them), all reoriented to RAS first (nnU-Net expects one orientation; brainshift
  varies it per case), then ``nnUNetv2_plan_and_preprocess``, ``nnUNetv2_train ... all -tr
  nnUNetTrainer_TimeBudget`` (nnU-Net's default trainer for ``--minutes`` of training instead of 1000 epochs; see
  ``benchmarks/_nnunet_launcher.py``) and ``nnUNetv2_predict``; the predictions are put back on each scan's own grid
  and scored by the same ``medtransfer evaluate``.

Lesions are matched as ``medtransfer.metrics.lesions`` does by default (a reference lesion is detected by a
predicted component with IoU >= 0.1); lesion ratios are micro-averaged over the test scans.  ``train_seconds`` is
each arm's measured training time (medtransfer: the whole ``finetune`` run; nnU-Net: its ``run_training``), the
other ``*_seconds`` are what the arm spent outside the budget.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medtransfer.errors import ConfigError, DataError, MedTransferError

log = logging.getLogger("vs_nnunet")
REPO = Path(__file__).resolve().parents[1]
LESION_RECIPE = REPO / "configs" / "recipes" / "lesion_recipe.yaml"
LAUNCHER = Path(__file__).resolve().with_name("_nnunet_launcher.py")
TRAINER = "nnUNetTrainer_TimeBudget"
LESION_TARGETS = ("stroke_lesion", "ms_lesion")
TARGETS = (*LESION_TARGETS, "anatomy")
PROBE_STEPS = 15  # per epoch of the two-epoch probe
SCORES = ("dice", "lesion_recall", "lesion_precision", "lesion_f1")
BUILT_MARKER = ".vs-nnunet-built"


class StageError(Exception):
    """A step of the benchmark (a medtransfer or nnU-Net command) failed; the message names its log."""


# ------------------------------------------------------------------------------------------- pure helpers
def select_split(pool: Sequence[str], test_cases: Sequence[str]) -> tuple[list[str], list[str]]:
    """nnU-Net's ``(training, test)`` cases: the medtransfer run's test cases, and every other case of the pool.

    Raises:
        DataError: no test case, a test case outside the pool, or no case left to train on.
    """
    unknown = sorted(set(test_cases) - set(pool))
    if unknown:
        raise DataError(f"test cases not in the dataset's pool of {len(pool)} cases: {', '.join(unknown)}")
    if not test_cases:
        raise DataError("the medtransfer run lists no test case (its recipe's test_fraction is 0?)")
    held_out = set(test_cases)
    train = [case for case in pool if case not in held_out]
    if not train:
        raise DataError(f"no training case left: all {len(pool)} cases of the pool are test cases")
    return train, sorted(held_out)


def plan_medtransfer(budget_s: float, seconds_per_step: float, fixed_s: float, epochs: int) -> tuple[int, int]:
    """``(epochs, steps per epoch)`` of a medtransfer run that takes ``budget_s`` at the probe's speed.

    ``fixed_s`` (preprocessing, set-up, validation and checkpoints: what the probe spent outside its steps) is paid
    first; the recipe's ``epochs`` are kept (fewer only when not even one step per epoch fits), each one as long
    as the rest of the budget allows.
    """
    steps = int(max(budget_s - fixed_s, 0.0) / max(seconds_per_step, 1e-9) + 1e-6)  # 55 / 0.1 is 549.99...
    if steps >= epochs:
        return epochs, steps // epochs
    return max(steps, 1), 1


def scores_from_evaluation(summary: Mapping[str, Any], lesions: bool) -> dict[str, Any]:
    """Dice (mean over test scans and foreground labels) and micro-averaged lesion ratios from an evaluation's
    ``summary.json`` (``medtransfer evaluate``); lesion ratios are ``None`` for a target that is not a lesion."""
    scores: dict[str, Any] = {"dice": summary["foreground_mean"]["dice"]}
    label = summary["mean"][str(summary["config"]["labels"][0])]
    for key, source in (("lesion_recall", "detection_rate"), ("lesion_precision", "precision"), ("lesion_f1", "f1")):
        scores[key] = label.get(f"lesion_{source}") if lesions else None
    return scores


def ratios(ours: Mapping[str, Any], theirs: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """``ours[k] / theirs[k]`` for each key; ``None`` (and ``<key>_null_reason``) where it is undefined."""
    out: dict[str, Any] = {}
    for key in keys:
        a, b = ours.get(key), theirs.get(key)
        if a is None or b is None or not (np.isfinite(a) and np.isfinite(b)):
            out[key], out[f"{key}_null_reason"] = None, "a value is missing or not finite"
        elif b == 0:
            out[key], out[f"{key}_null_reason"] = None, "nnU-Net's value is 0"
        else:
            out[key] = float(a) / float(b)
    return out


UNDER_BUDGET = 0.8  # an arm that trained for less than this share of the budget is named in the entry's warnings


def assemble_target(
    split: Mapping[str, Any],
    medtransfer: Mapping[str, Any],
    nnunet: Mapping[str, Any],
    budget_s: float | None = None,
) -> dict:
    """One target's entry of the printed JSON: the split, both arms and the ratios medtransfer / nnU-Net; with
    ``budget_s``, each arm's share of the budget it trained for, and a warning for an arm under ``UNDER_BUDGET``
    of it (medtransfer's steps are planned from a short probe, nnU-Net's epochs from its first iterations: a
    machine busy with something else during either makes the plan short, and the comparison then favours the
    other arm)."""
    entry = {
        "split": dict(split),
        "medtransfer": dict(medtransfer),
        "nnunet": dict(nnunet),
        "ratio_medtransfer_over_nnunet": ratios(medtransfer, nnunet, (*SCORES, "train_seconds")),
    }
    if budget_s:
        used = {
            arm: float(values["train_seconds"]) / budget_s
            for arm, values in (("medtransfer", medtransfer), ("nnunet", nnunet))
            if values.get("train_seconds") is not None
        }
        entry["budget_used"] = used
        entry["warnings"] = [
            f"{arm} trained {share:.0%} of the {budget_s:g} s budget: the comparison favours the other arm"
            for arm, share in used.items()
            if share < UNDER_BUDGET
        ]
    return entry


def lesion_rule(iou: float) -> str:
    return (
        f"a reference lesion is detected when one predicted connected component has IoU >= {iou:g} with it "
        "(medtransfer.metrics.lesions' default); a predicted component that detects none is a false positive; "
        "lesion recall, precision and F1 are micro-averaged over the test scans (counts summed first)"
    )


# --------------------------------------------------------------------------------------- orientation (RAS)
def write_ras(source: Path, out: Path, dtype) -> None:
    """Write ``source`` reoriented to RAS (axis permutations and flips only: exact) to ``out``."""
    from medtransfer.data.io import load_nifti, save_nifti
    from medtransfer.data.orientation import to_canonical

    volume = load_nifti(source)
    array, affine, _ = to_canonical(volume.array, volume.affine)
    save_nifti(out, array, affine, dtype=dtype)


def restore_prediction(prediction: Path, reference: Path, out: Path) -> None:
    """Put a label map predicted on the RAS copy of ``reference``'s scan back on ``reference``'s own grid.

    Raises:
        DataError: the prediction is not on the RAS grid of the reference (shape or affine).
    """
    from medtransfer.data.io import load_nifti, save_nifti
    from medtransfer.data.orientation import canonical_transform, reorient_affine, reorient_array

    ref, pred = load_nifti(reference), load_nifti(prediction)
    how = canonical_transform(ref.affine, ref.array.shape, source=str(reference))
    expected = reorient_affine(ref.affine, how)
    if tuple(pred.array.shape[:3]) != how.output_shape or not np.allclose(pred.affine, expected, atol=1e-3):
        raise DataError(
            f"{prediction}: shape {pred.array.shape} / affine differ from the RAS grid {how.output_shape} of "
            f"{reference}; the prediction must be on the grid of the RAS scan it was made from"
        )
    save_nifti(out, reorient_array(np.asarray(pred.array), how, inverse=True), ref.affine, dtype=np.uint8)


# ----------------------------------------------------------------------------------------------- commands
def run_step(cmd: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None) -> float:
    """Run ``cmd`` with its output in ``log_path``; returns its wall-clock seconds.

    Raises:
        StageError: the command failed (the message has the end of its log).
    """
    log.info("%s", " ".join(str(c) for c in cmd))
    what = _describe([str(c) for c in cmd])
    start = time.perf_counter()
    with log_path.open("w") as handle:
        code = subprocess.run([str(c) for c in cmd], stdout=handle, stderr=subprocess.STDOUT, env=env).returncode
    if code != 0:
        tail = " | ".join(log_path.read_text(errors="replace").strip().splitlines()[-3:])
        raise StageError(f"{log_path}: {what} failed (exit status {code}): {tail}")
    return time.perf_counter() - start


def _describe(words: Sequence[str]) -> str:
    """``medtransfer finetune``, ``medtransfer data build-benchmark``, ``nnUNetv2_train``, ... for messages."""
    if words[1:3] == ["-m", "medtransfer.cli"]:
        return " ".join(["medtransfer", *[w for w in words[3:5] if not w.startswith("-")]])
    return f"nnUNetv2_{words[2]}"


def medtransfer(*args: Any) -> list[str]:
    return [sys.executable, "-m", "medtransfer.cli", *map(str, args)]


def evaluate(pred: Path, ref: Path, out: Path, labels: Sequence[int], lesions: bool) -> dict[str, Any]:
    """``medtransfer evaluate --pred --ref``; returns the scores (:func:`scores_from_evaluation`)."""
    run_step(
        medtransfer("evaluate", "--pred", pred, "--ref", ref, "--labels", *labels, "--out", out),
        out.with_name(f"{out.name}.log"),
    )
    summary = json.loads((out / "summary.json").read_text())
    return scores_from_evaluation(summary, lesions) | {"lesion_iou": summary["config"]["lesion_iou"]}


def link_cases(cases: Sequence[str], source: Path, suffix: str, out: Path) -> Path:
    """``out/<case><suffix>`` symlinks to ``source/<case><suffix>``."""
    out.mkdir(parents=True)
    for case in cases:
        (out / f"{case}{suffix}").symlink_to(source / f"{case}{suffix}")
    return out


# ---------------------------------------------------------------------------------------------- the arms
def run_medtransfer(dataset: Path, domain: str, recipe: Path, budget_s: float, work: Path) -> dict[str, Any]:
    """Probe, train for the budget, predict the test scans and evaluate; returns scores, seconds and the split."""
    from medtransfer.finetune import FinetuneConfig
    from medtransfer.train.config import TrainConfig

    config = FinetuneConfig.from_yaml(recipe, data=str(dataset), out=str(work / "run"))
    # every training subject of the split is labelled: the recipe file says n_labelled: all (see run())
    common = ["--init", "none", "--config", recipe, "--data", dataset, "--target-domain", domain]
    common += ["--cache-dir", work / "cache"]
    work.mkdir(parents=True)
    probe_s = run_step(
        medtransfer("finetune", *common, "--epochs", 2, "--steps-per-epoch", PROBE_STEPS, "--out", work / "probe"),
        work / "probe.log",
    )
    probe = json.loads((work / "probe" / "summary.json").read_text())
    epoch_s = _epoch_seconds(work / "probe")
    step_s, fixed_s = epoch_s[-1] / PROBE_STEPS, probe["seconds"] - sum(epoch_s)  # the 2nd epoch runs warm
    epochs, steps = plan_medtransfer(budget_s, step_s, fixed_s, TrainConfig.from_dict(config.train).epochs)
    run_step(
        medtransfer("finetune", *common, "--epochs", epochs, "--steps-per-epoch", steps, "--out", work / "run"),
        work / "run.log",
    )
    summary = json.loads((work / "run" / "summary.json").read_text())
    if summary["test_cases"] != probe["test_cases"]:
        raise StageError(f"{work}: the probe and the run split the data differently")
    images = link_cases(probe["test_cases"], dataset / "imagesTr", "_0000.nii.gz", work / "test_images")
    predict_s = run_step(
        medtransfer("predict", "--model", work / "run", "--input", images, "--output", work / "predictions"),
        work / "predict.log",
    )
    return {
        "test_cases": probe["test_cases"],
        "labelled_cases": summary["labelled_cases"],
        "val_cases": summary["val_cases"],
        "epochs": epochs,
        "steps_per_epoch": steps,
        "batch_size": config.train.get("batch_size"),
        "train_seconds": summary["seconds"],
        "probe_seconds": probe_s,
        "predict_seconds": predict_s,
    }


def _epoch_seconds(run: Path) -> list[float]:
    """Seconds of each epoch's training steps (validation excluded), from the run's ``history.jsonl``."""
    records = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines() if line.strip()]
    return [float(r["seconds"]) for r in records]


def nnunet_env(work: Path, budget_s: float, workers: int) -> dict[str, str]:
    """The environment of nnU-Net's commands: its three folders in ``work``, the budget, the loader processes."""
    env = dict(os.environ)
    for name in ("raw", "preprocessed", "results"):
        (work / name).mkdir(parents=True, exist_ok=True)
        env[f"nnUNet_{name}"] = str(work / name)
    env.update(nnUNet_n_proc_DA=str(workers), nnUNet_compile="false", MEDTRANSFER_NNUNET_SECONDS=str(budget_s))
    return env


def write_nnunet_raw(dataset: Path, train: Sequence[str], test: Sequence[str], raw: Path) -> Path:
    """nnU-Net raw dataset ``raw/<name>``: RAS copies of the training (imagesTr, labelsTr) and test (imagesTs)
    cases, and a dataset.json with the source's channels and labels."""
    source = json.loads((dataset / "dataset.json").read_text())
    out = raw / dataset.name
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (out / folder).mkdir(parents=True)
    for case in train:
        write_ras(dataset / "imagesTr" / f"{case}_0000.nii.gz", out / "imagesTr" / f"{case}_0000.nii.gz", np.float32)
        write_ras(dataset / "labelsTr" / f"{case}.nii.gz", out / "labelsTr" / f"{case}.nii.gz", np.uint8)
    for case in test:
        write_ras(dataset / "imagesTr" / f"{case}_0000.nii.gz", out / "imagesTs" / f"{case}_0000.nii.gz", np.float32)
    meta = {"channel_names": source["channel_names"], "labels": source["labels"], "numTraining": len(train)}
    (out / "dataset.json").write_text(json.dumps(meta | {"file_ending": ".nii.gz", "name": dataset.name}, indent=2))
    return out


def launch(entry: str, *args: Any) -> list[str]:
    """An nnU-Net command (``nnUNetv2_<entry>``) run through the launcher."""
    return [sys.executable, str(LAUNCHER), entry, *map(str, args)]


def set_batch_size(plans: Path, config: str, batch_size: int) -> int:
    """Set one configuration's batch size in nnU-Net's plans file (``nnUNetPlans.json``); returns the planned one.

    nnU-Net plans a batch for a GPU's memory (38-65 patches here); on a CPU each iteration then takes seconds, so a
    time budget allows only a few of them.  The trainer reads the batch size from the plans.
    """
    content = json.loads(plans.read_text())
    entry = content.get("configurations", {}).get(config)
    if not isinstance(entry, dict):
        raise ConfigError(f"{plans}: no configuration {config!r} (has: {sorted(content.get('configurations', {}))})")
    planned = entry.get("batch_size")
    entry["batch_size"] = int(batch_size)
    plans.write_text(json.dumps(content, indent=2))
    return planned


def run_nnunet(
    dataset: Path,
    train: Sequence[str],
    test: Sequence[str],
    config: str,
    budget_s: float,
    work: Path,
    workers: int,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Reorient, plan and preprocess (optionally with another batch size), train for the budget, predict, and
    restore the predictions' grids."""
    env, start = nnunet_env(work, budget_s, workers), time.perf_counter()
    raw = write_nnunet_raw(dataset, train, test, work / "raw")
    plan = f"-d {int(dataset.name[7:10])} -c {config} -np {workers} --verify_dataset_integrity"
    run_step(launch("plan_and_preprocess", *plan.split()), work / "plan.log", env)
    planned = {}
    if batch_size is not None:
        plans = work / "preprocessed" / dataset.name / "nnUNetPlans.json"
        planned = {"planned_batch_size": set_batch_size(plans, config, batch_size)}
    prepare_s = time.perf_counter() - start
    train_args = f"{dataset.name} {config} all -tr {TRAINER} -device cpu".split()
    process_s = run_step(launch("train", *train_args), work / "train.log", env)
    fold = work / "results" / dataset.name / f"{TRAINER}__nnUNetPlans__{config}" / "fold_all"
    report = json.loads((fold / "time_budget.json").read_text())
    model = f"-d {dataset.name} -c {config} -f all -tr {TRAINER} -device cpu -npp 1 -nps 1".split()
    predict = launch("predict", "-i", raw / "imagesTs", "-o", work / "predictions_ras", *model)
    predict_s = run_step(predict, work / "predict.log", env)
    (work / "predictions").mkdir()
    for name in (f"{case}.nii.gz" for case in test):
        restore_prediction(work / "predictions_ras" / name, dataset / "labelsTr" / name, work / "predictions" / name)
    keys = ("epochs", "iterations_per_epoch", "iterations", "batch_size", "patch_size", "train_seconds")
    return (
        {"configuration": config, "trainer": TRAINER, **{key: report[key] for key in keys}}
        | planned
        | {
            "train_process_seconds": process_s,
            "prepare_seconds": prepare_s,
            "predict_seconds": predict_s,
        }
    )


# -------------------------------------------------------------------------------------------- the driver
def default_recipe() -> dict[str, Any]:
    """The shipped lesion recipe (``configs/recipes/lesion_recipe.yaml``): the default for lesion targets."""
    from medtransfer.utils import read_yaml_mapping

    return read_yaml_mapping(LESION_RECIPE, what="finetune options")


def load_recipe(path: str | None) -> dict[str, Any]:
    """The medtransfer arm's settings: ``--medtransfer-config`` (checked key by key) or the shipped lesion recipe."""
    from medtransfer.finetune import FinetuneConfig
    from medtransfer.train.config import TrainConfig
    from medtransfer.utils import read_yaml_mapping

    if path is None:
        return default_recipe()
    try:
        TrainConfig.from_dict(FinetuneConfig.from_yaml(path, data="-", out="-").train)
    except ConfigError as err:
        raise ConfigError(str(err) if str(err).startswith(str(path)) else f"{path}: {err}") from None
    return read_yaml_mapping(path)


def check_data(root: Path, targets: Sequence[str]) -> Path:
    """``root`` when it is a brainshift build with every target's dataset.

    Raises:
        DataError: a target's dataset is missing (the message names it and how to build one).
    """
    from medtransfer.bench import DATASETS

    for target in targets:
        if not (root / DATASETS[target].folder / "dataset.json").is_file():
            raise DataError(
                f"{root}: no {DATASETS[target].folder}/dataset.json (--data must be a brainshift build with each "
                f"target of --targets); build one with medtransfer data build-benchmark, or leave --data out"
            )
    return root


def build_data(args: argparse.Namespace, work: Path) -> Path:
    """A brainshift build in ``work/brainshift`` (``medtransfer data build-benchmark``; reused when complete)."""
    root = work / "brainshift"
    if not (root / BUILT_MARKER).is_file():
        root.mkdir(parents=True, exist_ok=True)
        sizes = f"--seed {args.seed} --spacing {args.spacing} --subjects-per-domain {args.subjects_per_domain}"
        build = ["data", "build-benchmark", "--out", root, *sizes.split(), "--targets", *args.targets]
        run_step(medtransfer(*build, "--domains", args.domain, "--no-sources"), work / "build.log")
        (root / BUILT_MARKER).write_text("done\n")
    from medtransfer.bench import DATASETS
    from medtransfer.bench.build import check_simulator

    for target in args.targets:  # a reused build of an older simulator would be reported as this one's
        check_simulator(root / DATASETS[target].folder)
    return root


def run_target(args: argparse.Namespace, root: Path, target: str, recipe: Path, work: Path) -> dict[str, Any]:
    from medtransfer.bench import DATASETS
    from medtransfer.data.layouts import load_dataset

    dataset, budget_s = root / DATASETS[target].folder, 60.0 * args.minutes
    ours = run_medtransfer(dataset, args.domain, recipe, budget_s, work / target / "medtransfer")
    pool = [case.case_id for case in load_dataset(dataset).cases if case.domain == args.domain]
    train, test = select_split(pool, ours.pop("test_cases"))
    theirs = run_nnunet(
        dataset,
        train,
        test,
        args.nnunet_configuration,
        budget_s,
        work / target / "nnunet",
        args.nnunet_workers,
        args.nnunet_batch_size,
    )
    labels = sorted(v for v in DATASETS[target].labels.values() if v)
    reference = link_cases(test, dataset / "labelsTr", ".nii.gz", work / target / "reference")
    lesions = target in LESION_TARGETS
    for arm, folder in ((ours, "medtransfer"), (theirs, "nnunet")):
        arm |= evaluate(
            work / target / folder / "predictions", reference, work / target / folder / "evaluation", labels, lesions
        )
    built = json.loads((dataset / "dataset.json").read_text()).get("benchmark", {})
    split = {"dataset": str(dataset), "seed": built.get("seed"), "spacing_mm": built.get("spacing_mm")}
    split["simulator"] = built.get("simulator", 1)  # brainshift simulator of the build (1: before 2026-12-07)
    split |= {"domain": args.domain, "nnunet_train_cases": train, "test_cases": test}
    return assemble_target(split, ours, theirs, args.minutes * 60)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget of each arm (default 20)")
    parser.add_argument("--targets", nargs="+", default=list(LESION_TARGETS), choices=TARGETS)
    parser.add_argument("--data", help="an existing brainshift build (default: build one in the work folder)")
    parser.add_argument("--seed", type=int, default=0, help="seed of a new build")
    parser.add_argument("--spacing", type=float, default=3.0, help="working spacing of a new build (mm)")
    parser.add_argument("--subjects-per-domain", type=int, default=16, help="subjects of a new build")
    parser.add_argument("--domain", default="siemens_3t", help="the scanner whose cases are split (default siemens_3t)")
    parser.add_argument("--nnunet-configuration", default="2d", choices=("2d", "3d_fullres"))
    parser.add_argument(
        "--nnunet-workers",
        type=int,
        default=os.cpu_count() or 1,
        help="nnU-Net's data-augmentation processes (nnUNet_n_proc_DA; default: one per core)",
    )
    parser.add_argument(
        "--nnunet-batch-size",
        type=int,
        help="replace the batch size nnU-Net plans (for a GPU) by this one (default: nnU-Net's plan)",
    )
    parser.add_argument(
        "--medtransfer-config",
        help="finetune YAML of the medtransfer arm (default: configs/recipes/lesion_recipe.yaml)",
    )
    parser.add_argument("--work", help="work folder, kept (default: a temporary folder, removed at the end)")
    args = parser.parse_args(argv)
    if not args.minutes > 0:
        parser.error(f"--minutes must be > 0, got {args.minutes}")
    if args.nnunet_batch_size is not None and args.nnunet_batch_size < 1:
        parser.error(f"--nnunet-batch-size must be >= 1, got {args.nnunet_batch_size}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        output = run(args)
    except MedTransferError as err:  # bad input: one line, exit status 2 (medtransfer's convention)
        print(f"error: {err}", file=sys.stderr)
        return 2
    except StageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(output, indent=2))
    return 0


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both arms on every target of ``args``; returns the JSON to print.  Checks the input before any work."""
    import yaml

    from medtransfer.utils import check_writable

    if importlib.util.find_spec("nnunetv2") is None:
        raise ConfigError(
            f"{sys.executable}: nnunetv2 is not installed in this Python; install the benchmark extra into a "
            "separate environment: pip install -e '.[bench-nnunet]'"
        )
    recipe = load_recipe(args.medtransfer_config)
    root = check_data(Path(args.data).absolute(), args.targets) if args.data else None
    if args.work:
        check_writable(args.work)
        for target in args.targets:
            if (Path(args.work) / target).exists():
                raise ConfigError(
                    f"{Path(args.work) / target}: exists from an earlier run; remove it or use another --work"
                )
    work = Path(args.work).absolute() if args.work else Path(tempfile.mkdtemp(prefix="vs_nnunet_"))
    try:
        work.mkdir(parents=True, exist_ok=True)
        root = root or build_data(args, work)
        # the medtransfer arm labels every training subject, as nnU-Net does
        (work / "recipe.yaml").write_text(yaml.safe_dump({**recipe, "n_labelled": "all"}, sort_keys=False))
        start = time.perf_counter()
        results = {target: run_target(args, root, target, work / "recipe.yaml", work) for target in args.targets}
        return report(args, recipe, results, time.perf_counter() - start)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


def report(args: argparse.Namespace, recipe: dict, results: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The printed JSON: budget, recipe, lesion rule, one entry per target, environment."""
    import torch

    from medtransfer.metrics.lesions import DEFAULT_LESION_IOU

    return {
        "benchmark": "vs_nnunet",
        "budget_minutes": args.minutes,
        "medtransfer_recipe": {"file": args.medtransfer_config or "configs/recipes/lesion_recipe.yaml"} | recipe,
        "lesion_matching": lesion_rule(DEFAULT_LESION_IOU),
        "targets": results,
        "environment": {"cpus": os.cpu_count(), "torch": torch.__version__, "nnunetv2": _version("nnunetv2")},
        "seconds": seconds,
    }


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    from medtransfer.cli import run_script

    run_script(main)
