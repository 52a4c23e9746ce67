"""The minimum-component rule, re-scored on finished lesion runs under several rules, print JSON.

``min_component_mm3: auto`` picks the size of the smallest connected component a lesion prediction keeps from the
validation scans' lesion F1 (:func:`medtransfer.infer.postprocess.tune_min_component`), bounded by two caps taken
from the training lesions: the *free size* (ties go to the largest size under it) and the *evidence cap* (above the
free size only a strictly higher validation F1 counts).  Three things changed on 2026-12-07 and are compared here:

* the candidate list: it stopped at 120 voxels (``SHORT_CANDIDATE_VOXELS``), now it runs to 20000
  (``CANDIDATE_VOXELS``) so that the caps, not the list, bound the choice;
* the caps: half the 5th and the 20th *percentile* of the training lesion volumes, then the 5 % and 20 % lower
  *prediction bounds* of a log-normal law fitted to them (:func:`~medtransfer.infer.postprocess.prediction_bound`),
  which a handful of lesions (a stroke target: one per scan) no longer places above a tenth of the true lesions;
* the lesions behind the caps: a run fine-tuned from a lesion source now pools the source's training lesions with
  its own where a Mann-Whitney test does not find them of different sizes
  (:func:`~medtransfer.infer.postprocess.lesion_size_prior`, ``auto``).

Rules (candidate list, caps): ``session21`` (short, percentile), ``short_prediction`` (short, prediction),
``long_percentile`` (long, percentile), ``target_prior`` (long, prediction of the training lesions alone: the rule
from 2026-12-07 until the source prior), ``pooled_prior`` (long, prediction of training and source lesions pooled
untested), ``short_source_prior`` (short, ``auto`` pooling) and ``current`` (long, ``auto`` pooling).  The source
rules need a result with a lesion source (``lesions.py --source-seed``): its training lesions come from the source
checkpoint's record, else from the source build's scans that were neither validation nor held out.  (Result files
written before the source prior name ``target_prior`` ``current`` and pair against ``session21`` only.)

Every rule chooses from the validation F1 of each candidate size alone, and every ``benchmarks/lesions.py`` result
stores that curve and the test scans' lesion F1 at every candidate (on the same raw predictions), so each finished
run is re-scored exactly, without training; the long-list rules need a curve that runs past 120 voxels (results
since 2026-12-07).  Those results also store per-scan test Dice, false positives and lesions found at every size:
the rules are then compared scan by scan with ``lesions_compare.py``'s paired test (A = ``--baseline``, default
``session21``; B = each other rule, on the runs both could re-score).  A model-free check goes with it: the share
of the *test* lesions that lie under each kind of free size and evidence cap (what a perfect segmentation would
lose in a tie), each build's test lesions counted once per kind.

    python benchmarks/min_component_rules.py benchmarks/results/lesions_*seed*.json --work DIR \\
        [--vs-nnunet-run W/ms_lesion --vs-nnunet-data BUILD/Dataset003_MSLesion] > rules.json

The labels (for the caps and the test lesions) come from the run's build, rebuilt in ``--work`` with
``benchmarks/lesions.py``'s builder when the recorded path is gone (the build is a function of its seed).
``--vs-nnunet-run`` adds the medtransfer arm of a ``benchmarks/vs_nnunet.py`` target folder: its checkpoint stores
the validation curve, and the test curve is computed from its saved predictions (which must be unprocessed, i.e.
the run chose size 0).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lesions import SCORES_KEY, TARGETS, build, build_source  # noqa: E402
from lesions_compare import compare  # noqa: E402

from medtransfer.checkpoint import load_checkpoint  # noqa: E402
from medtransfer.data.io import load_nifti  # noqa: E402
from medtransfer.data.layouts import load_dataset  # noqa: E402
from medtransfer.infer.postprocess import (  # noqa: E402
    EVIDENCE_PERCENTILE,
    MIN_COMPONENT_KEY,
    SHORT_CANDIDATE_VOXELS,
    choose_min_component,
    flat_volumes,
    lesion_size_prior,
    lesion_volumes,
    lesion_volumes_by_case,
    source_lesion_volumes,
    tune_min_component,
    volume_caps,
)

TEST_KEY = "test_lesion_f1_by_min_mm3 (diagnostic, not used to choose)"
RULES = {  # name: (candidate list, kind of caps)
    "session21": ("short", "percentile"),
    "short_prediction": ("short", "prediction"),
    "long_percentile": ("long", "percentile"),
    "target_prior": ("long", "prediction"),
    "pooled_prior": ("long", "pooled"),
    "short_source_prior": ("short", "source"),
    "current": ("long", "source"),
}
CAP_KINDS = ("percentile", "prediction", "pooled", "source")


def caps(training: dict, kind: str, source: dict | None = None) -> tuple[float | None, float | None]:
    """``(free size, evidence cap)`` in mm³ of the ``training`` lesions (``{case: volumes}``): ``percentile`` (half
    the 5th and the 20th percentile, the rule until 2026-12-07), ``prediction`` (the :func:`prediction_bound` caps
    of the training lesions alone), ``pooled`` (the same with the lesion source's training lesions, ``source``,
    pooled untested) or ``source`` (pooled as ``min_component_prior: auto`` pools them: the current rule).
    ``(None, None)`` for the source kinds without a source."""
    volumes = flat_volumes(training)
    if kind == "percentile":
        if not volumes.size:
            return None, None
        return 0.5 * float(np.percentile(volumes, 5)), float(np.percentile(volumes, EVIDENCE_PERCENTILE))
    if kind in ("pooled", "source"):
        if source is None:
            return None, None
        volumes = flat_volumes(lesion_size_prior(training, source, "pooled" if kind == "pooled" else "auto")[0])
    return volume_caps(volumes)


def _short(curve: dict) -> dict:
    return dict(sorted(curve.items(), key=lambda kv: float(kv[0]))[: len(SHORT_CANDIDATE_VOXELS)])


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def rescore(
    name: str,
    val: dict,
    test: dict,
    train_volumes: dict,
    test_volumes: np.ndarray | None,
    scores=None,
    source_volumes: dict | None = None,
):
    """One run under every rule its curves (and its lesion source: the ``source`` rules need one) allow: ``{"run",
    "training_lesions", "source_lesions", "caps_mm3", "test_lesions", "test_lesions_under", "rules": {rule:
    {"min_component_mm3", "test_lesion_f1"}}}`` (the test lesion counts ``None`` when the result does not name its
    test scans) and, with per-scan ``scores`` (``lesions.py``'s :data:`SCORES_KEY`), each rule's result as
    ``lesions_compare.py`` pairs them."""
    long_curve = len(val) > len(SHORT_CANDIDATE_VOXELS)
    by_size = {float(k): v for k, v in test.items()}
    kinds = [k for k in CAP_KINDS if k in ("percentile", "prediction") or source_volumes is not None]
    all_caps = {kind: caps(train_volumes, kind, source_volumes) for kind in kinds}
    row: dict = {
        "run": name,
        "source_lesions": None,  # the source's lesions on other scans than the training ones (see source_prior)
        "training_lesions": int(flat_volumes(train_volumes).size),
        "source_prior": None if source_volumes is None else lesion_size_prior(train_volumes, source_volumes)[1],
        "caps_mm3": {kind: {"free": _rounded(f), "evidence": _rounded(e)} for kind, (f, e) in all_caps.items()},
        "test_lesions": None if test_volumes is None else int(test_volumes.size),
        "test_lesions_under": None
        if test_volumes is None
        else {
            kind: {
                "free": int((test_volumes < (f or 0.0)).sum()),
                "evidence": int((test_volumes < (e or 0.0)).sum()),
            }
            for kind, (f, e) in all_caps.items()
        },
        "rules": {},
    }
    if row["source_prior"] is not None:
        row["source_lesions"] = row["source_prior"]["source_lesions"]
    paired = {}
    for rule, (candidates, kind) in RULES.items():
        if (candidates == "long" and not long_curve) or kind not in all_caps:
            continue
        size = choose_min_component(_short(val) if candidates == "short" else val, *all_caps[kind])
        row["rules"][rule] = {"min_component_mm3": size, "test_lesion_f1": round(by_size[size], 4)}
        if scores is not None:
            paired[rule] = _paired_result(name, rule, size, scores[f"{size:g}"])
    return row, paired


def _paired_result(run: str, rule: str, size: float, scores: dict) -> dict:
    """A rule's test result of one run as ``lesions_compare.py`` pairs them (``seed``: the run's name)."""
    found, lesions, fp = (sum(scores[k]) for k in ("found", "lesions", "false_positives"))
    components = sum(scores["components"])
    recall = found / lesions if lesions else float("nan")
    precision = (components - fp) / components if components else float("nan")
    return {
        "seed": run,
        "init": rule,
        "min_component_mm3": size,
        "per_case_dice": [float("nan") if d is None else float(d) for d in scores["dice"]],  # None: no Dice
        "test_cases": None,
        "lesions": lesions,
        "detected": found,
        "false_positives": fp,
        "f1": 2 * precision * recall / (precision + recall) if found else 0.0,
    }


def from_lesions_json(path: Path, work: Path) -> list[tuple[str, dict, dict]]:
    """``(target, row, paired results)`` of each result of one ``lesions.py`` JSON."""
    report = json.loads(path.read_text())
    rows = []
    for target, result in report.get("results", {}).items():
        if not isinstance(result, dict) or target not in TARGETS:
            continue
        if not result.get(TEST_KEY) or not result.get("val_lesion_f1_by_min_mm3"):
            print(f"{path} {target}: no validation or test curve (nothing tuned), skipped", file=sys.stderr)
            continue
        root = Path(report["build"].get("path", ""))
        dataset_dir = root / TARGETS[target][1]
        if not (dataset_dir / "dataset.json").is_file():
            spacing = report["build"].get("spacing_mm", 1.0)
            require_simulator(path, report)
            dataset_dir = build(work, report["build"]["seed"], spacing, [target]) / TARGETS[target][1]
        dataset = load_dataset(dataset_dir)
        train = lesion_volumes_by_case(dataset, result["train_cases"])
        test = lesion_volumes(dataset, result["test_cases"]) if result.get("test_cases") else None
        row, paired = rescore(
            f"{path.stem} {target}",
            result["val_lesion_f1_by_min_mm3"],
            result[TEST_KEY],
            train,
            test,
            result.get(SCORES_KEY),
            source_training_volumes(result.get("source"), target, report["build"].get("spacing_mm", 1.0), work),
        )
        row["build"] = str(dataset_dir.resolve())
        row["recorded_min_component_mm3"] = result.get("min_component_mm3")
        rows.append((target, row, paired))
    return rows


def require_simulator(where: Path, report: dict) -> None:
    """Stop before remaking a gone build whose run was recorded on another brainshift simulator (the remade
    build would hold other lesions than the run's predictions)."""
    from medtransfer.bench.simulate import SIMULATOR_VERSION

    recorded = int(report.get("build", {}).get("simulator", 1))
    if recorded != SIMULATOR_VERSION:
        raise SystemExit(
            f"{where}: recorded on brainshift simulator {recorded} builds, which are gone; this code builds simulator "
            f"{SIMULATOR_VERSION}: point the JSON's build path at the old build, or check out c3feee4 to remake it"
        )


def source_training_volumes(source: dict | None, target: str, spacing: float, work: Path) -> dict | None:
    """The ``{case: lesion volumes}`` (mm³) of the training scans of a result's lesion source (``lesions.py``'s
    ``source`` entry), ``None`` without one: those its checkpoint records, else those of its build's scans that
    were neither validation nor held out (the source trains on every other scan), the build remade in ``work``
    where gone."""
    if not source:
        return None
    checkpoint = Path(source.get("checkpoint", ""))
    if checkpoint.is_file():
        recorded = source_lesion_volumes(load_checkpoint(checkpoint))
        if recorded is not None:
            return recorded
    root = Path(source.get("path", ""))
    if not (root / TARGETS[target][1] / "dataset.json").is_file():
        require_simulator(root, {"build": source})
        subjects = int(root.name.rpartition("_")[2].partition("x")[0]) if "x" in root.name else 10
        root = build_source(work, source["seed"], spacing, [target], subjects)
    dataset = load_dataset(root / TARGETS[target][1])
    left_out = {*source.get("val_cases", []), *source.get("held_out_cases", [])}
    train = [c for c in dataset.case_ids if c not in left_out]
    if len(train) != source.get("train_cases", len(train)):
        raise SystemExit(f"{root}: {len(train)} training scans, the source trained on {source['train_cases']}")
    return lesion_volumes_by_case(dataset, train)


def from_vs_nnunet(folder: Path, data: Path) -> tuple[str, dict, dict]:
    """The medtransfer arm of a vs_nnunet target folder (``run/``, ``predictions/``, ``reference``)."""
    run = folder / "medtransfer" / "run"
    summary = json.loads((run / "summary.json").read_text())
    post = load_checkpoint(run / "checkpoints" / "checkpoint_last.pt")["meta"]["postprocess"]
    if float(post.get(MIN_COMPONENT_KEY) or 0.0) != 0.0:
        raise SystemExit(f"{run}: its predictions were post-processed ({post[MIN_COMPONENT_KEY]} mm³); need size 0")
    preds, refs = [], []
    for case_id in summary["test_cases"]:
        ref = load_nifti(folder / "reference" / f"{case_id}.nii.gz")
        pred = load_nifti(folder / "medtransfer" / "predictions" / f"{case_id}.nii.gz")
        preds.append(np.rint(pred.array) > 0)
        refs.append(np.rint(ref.array) > 0)
    _, test = tune_min_component(preds, refs, float(np.prod(ref.spacing[:3])))
    dataset = load_dataset(data)
    train = lesion_volumes_by_case(dataset, summary["labelled_cases"])
    test_volumes = lesion_volumes(dataset, summary["test_cases"])
    row, paired = rescore(f"vs_nnunet {folder}", post["val_lesion_f1"], test, train, test_volumes)
    row["build"] = str(Path(data).resolve())
    return "ms", row, paired


def summarize(rows: list[tuple[dict, dict]], baseline: str = "session21") -> dict:
    """Per target: the model-free shares, each rule's mean test F1 over the runs it could re-score, and the paired
    comparisons of each rule against ``baseline`` over the runs with per-scan scores that both could re-score."""
    out: dict = {"n_runs": len(rows), "runs": [row for row, _ in rows]}
    # each build's test scans once per kind of caps (several runs of one build share them; the source kinds count
    # only the runs that have a source)
    out["test_lesions_under"] = {}
    for kind in CAP_KINDS:
        counted = {
            row["build"]: row
            for row, _ in rows
            if row["test_lesions_under"] is not None and kind in row["test_lesions_under"]
        }.values()
        if kind in ("pooled", "source") and not counted:
            continue
        lesions = sum(row["test_lesions"] for row in counted)
        out["test_lesions_under"][kind] = {
            cap: {
                "builds": len(counted),
                "lesions": lesions,
                "under": (n := sum(row["test_lesions_under"][kind][cap] for row in counted)),
                "share": round(n / lesions, 4) if lesions else None,
            }
            for cap in ("free", "evidence")
        }
    out["mean_test_lesion_f1"] = {}
    for rule in RULES:
        both = [row["rules"] for row, _ in rows if rule in row["rules"] and baseline in row["rules"]]
        values = [row["rules"][rule]["test_lesion_f1"] for row, _ in rows if rule in row["rules"]]
        if values:
            out["mean_test_lesion_f1"][rule] = {
                "runs": len(values),
                "mean": round(float(np.mean(values)), 4),
                "with_baseline": {  # over the runs both this rule and the baseline re-score
                    "runs": len(both),
                    "mean": round(float(np.mean([r[rule]["test_lesion_f1"] for r in both])), 4) if both else None,
                    "baseline_mean": (
                        round(float(np.mean([r[baseline]["test_lesion_f1"] for r in both])), 4) if both else None
                    ),
                },
            }
    out["paired_vs_baseline"] = {"baseline": baseline}
    others = [rule for rule in RULES if rule != baseline]
    for rule in others:
        with_scores = [paired for _, paired in rows if rule in paired and baseline in paired]
        if not with_scores:
            continue
        result = compare([p[baseline] for p in with_scores], [p[rule] for p in with_scores])
        result["dice_b_minus_a"]["test"] = (
            "paired two-sided Wilcoxon signed-rank (zero differences dropped) and sign test, per test scan, no "
            f"correction: {len(others)} rules against {baseline}"
        )
        out["paired_vs_baseline"][rule] = {
            "sizes_mm3": {
                p[rule]["seed"]: [p[baseline]["min_component_mm3"], p[rule]["min_component_mm3"]] for p in with_scores
            },
            **result,
        }
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="*", type=Path, help="benchmarks/lesions.py JSON files")
    parser.add_argument("--work", type=Path, default=Path("min_component_rules_work"), help="builds, if needed")
    parser.add_argument("--vs-nnunet-run", type=Path, action="append", default=[], help="a vs_nnunet target folder")
    parser.add_argument("--vs-nnunet-data", type=Path, action="append", default=[], help="its dataset folder")
    parser.add_argument("--baseline", choices=sorted(RULES), default="session21", help="the rule the others face")
    args = parser.parse_args(argv)
    if len(args.vs_nnunet_run) != len(args.vs_nnunet_data):
        parser.error("give one --vs-nnunet-data per --vs-nnunet-run")
    rows = [row for path in args.results for row in from_lesions_json(path, args.work)]
    rows += [from_vs_nnunet(f, d) for f, d in zip(args.vs_nnunet_run, args.vs_nnunet_data, strict=True)]
    out: dict = {
        "benchmark": "min_component_rules",
        "rules": {name: {"candidates": c, "caps": k} for name, (c, k) in RULES.items()},
        "targets": {
            target: summarize([(row, paired) for t, row, paired in rows if t == target], args.baseline)
            for target in sorted({t for t, _, _ in rows})
        },
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    from medtransfer.cli import run_script

    run_script(main)
