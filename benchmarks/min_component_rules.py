"""The minimum-component rule, re-scored on finished lesion runs: the old cap against the evidence rule, print JSON.

``min_component_mm3: auto`` picks the size of the smallest connected component a lesion prediction keeps from the
validation scans' lesion F1 (:func:`medtransfer.infer.postprocess.tune_min_component`).  The old rule never went
above half the 5th percentile of the training lesions' volumes (the *free size*); the current one also allows
sizes up to their 20th percentile where the validation F1 is strictly higher.  Both rules only choose from the
validation F1 of each candidate size, and every ``benchmarks/lesions.py`` result stores that curve and the test
scans' lesion F1 at every candidate size (computed on the same raw predictions), so each finished run can be
re-scored exactly under both rules without training anything:

    python benchmarks/min_component_rules.py benchmarks/results/lesions_*seed*.json --work DIR \\
        [--vs-nnunet-run W/ms_lesion --vs-nnunet-data BUILD/Dataset003_MSLesion] > rules.json

The training labels (for the two caps) come from the run's build, rebuilt in ``--work`` with ``benchmarks/lesions.py``'s
builder when the recorded path is gone (the build is a function of its seed).  ``--vs-nnunet-run`` adds the
medtransfer arm of a ``benchmarks/vs_nnunet.py`` target folder: its checkpoint stores the validation curve, and the
test curve is computed from its saved predictions (which must be unprocessed, i.e. the run chose size 0).

Results that also store the test scans' per-scan scores at every candidate size (``lesions.py`` since 2026-12-07)
are re-scored a second way too, ``candidate_lists``: the size the current candidate list chooses
(:data:`~medtransfer.infer.postprocess.CANDIDATE_VOXELS`, to 20000 voxels) against the size the earlier list, which
stopped at 120 voxels (:data:`~medtransfer.infer.postprocess.SHORT_CANDIDATE_VOXELS`), chooses from the same
validation curve under the same caps -- paired scan by scan over every run with ``lesions_compare.py``'s test
(A = the short list, B = the current one).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lesions import SCORES_KEY, TARGETS, build  # noqa: E402
from lesions_compare import compare  # noqa: E402

from medtransfer.checkpoint import load_checkpoint  # noqa: E402
from medtransfer.data.io import load_nifti  # noqa: E402
from medtransfer.data.layouts import load_dataset  # noqa: E402
from medtransfer.infer.postprocess import (  # noqa: E402
    EVIDENCE_PERCENTILE,
    MIN_COMPONENT_KEY,
    SHORT_CANDIDATE_VOXELS,
    choose_min_component,
    training_lesion_caps,
    tune_min_component,
)

TEST_KEY = "test_lesion_f1_by_min_mm3 (diagnostic, not used to choose)"


def rescore(name: str, val: dict, test: dict, free: float | None, evidence: float | None, recorded=None) -> dict:
    """Both rules' sizes and the test lesion F1 each gives (``free``, ``evidence``: :func:`training_lesion_caps`)."""
    by_size = {float(k): v for k, v in test.items()}
    old = choose_min_component(val, free)
    new = choose_min_component(val, free, evidence)
    row = {
        "run": name,
        "free_mm3": None if free is None else round(free, 3),
        "evidence_cap_mm3": None if evidence is None else round(evidence, 3),
        "old_rule": {"min_component_mm3": old, "test_lesion_f1": round(by_size[old], 4)},
        "evidence_rule": {"min_component_mm3": new, "test_lesion_f1": round(by_size[new], 4)},
    }
    if recorded is not None and float(recorded) != old:
        row["warning"] = f"the run recorded {recorded} mm³, the old rule gives {old} here"
    return row


def candidate_lists(run: str, result: dict, free: float | None, evidence: float | None) -> tuple[dict, dict]:
    """The short list's and the current list's (size, per-scan test scores) of one run, as ``lesions_compare.py``
    pairs results (``seed``: here the ``run``'s name, ``per_case_dice``, ``test_cases``, lesion counts, ``f1``);
    ``init`` names the list."""
    val = result["val_lesion_f1_by_min_mm3"]
    short = dict(sorted(val.items(), key=lambda kv: float(kv[0]))[: len(SHORT_CANDIDATE_VOXELS)])
    out = []
    for name, curve in (("short list (to 120 voxels)", short), ("current list", val)):
        size = choose_min_component(curve, free, evidence)
        scores = result[SCORES_KEY][f"{size:g}"]
        found, lesions, fp = (sum(scores[k]) for k in ("found", "lesions", "false_positives"))
        components = sum(scores["components"])
        recall = found / lesions if lesions else float("nan")
        precision = (components - fp) / components if components else float("nan")
        out.append(
            {
                "seed": run,
                "init": name,
                "min_component_mm3": size,
                "per_case_dice": [float(d or 0.0) for d in scores["dice"]],
                "test_cases": result.get("test_cases"),
                "lesions": lesions,
                "detected": found,
                "false_positives": fp,
                "f1": 2 * precision * recall / (precision + recall) if found else 0.0,
            }
        )
    return out[0], out[1]


def from_lesions_json(path: Path, work: Path, lists: list | None = None) -> list[tuple[str, dict]]:
    """Both rules re-scored on each result of one ``lesions.py`` JSON; results with per-scan scores at every size
    also append ``(target, short-list result, current-list result)`` to ``lists``."""
    report = json.loads(path.read_text())
    rows = []
    for target, result in report.get("results", {}).items():
        if not isinstance(result, dict) or TEST_KEY not in result or target not in TARGETS:
            continue
        seed, spacing = report["build"]["seed"], report["build"]["spacing_mm"]
        root = Path(report["build"].get("path", ""))
        dataset_dir = root / TARGETS[target][1]
        if not (dataset_dir / "dataset.json").is_file():
            dataset_dir = build(work, seed, spacing, [target]) / TARGETS[target][1]
        free, evidence = training_lesion_caps(load_dataset(dataset_dir), result["train_cases"])
        val, test, recorded = result["val_lesion_f1_by_min_mm3"], result[TEST_KEY], result.get("min_component_mm3")
        rows.append((target, rescore(f"{path.stem} {target}", val, test, free, evidence, recorded)))
        if lists is not None and SCORES_KEY in result:
            lists.append((target, *candidate_lists(path.stem, result, free, evidence)))
    return rows


def from_vs_nnunet(folder: Path, data: Path) -> tuple[str, dict]:
    """The medtransfer arm of a vs_nnunet target folder (``run/``, ``predictions/``, ``../reference`` or
    ``reference``)."""
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
    free, evidence = training_lesion_caps(load_dataset(data), summary["labelled_cases"])
    return "ms", rescore(f"vs_nnunet {folder}", post["val_lesion_f1"], test, free, evidence, 0.0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="*", type=Path, help="benchmarks/lesions.py JSON files")
    parser.add_argument("--work", type=Path, default=Path("min_component_rules_work"), help="builds, if needed")
    parser.add_argument("--vs-nnunet-run", type=Path, action="append", default=[], help="a vs_nnunet target folder")
    parser.add_argument("--vs-nnunet-data", type=Path, action="append", default=[], help="its dataset folder")
    args = parser.parse_args(argv)
    if len(args.vs_nnunet_run) != len(args.vs_nnunet_data):
        parser.error("give one --vs-nnunet-data per --vs-nnunet-run")
    lists: list = []
    rows = [row for path in args.results for row in from_lesions_json(path, args.work, lists)]
    rows += [from_vs_nnunet(f, d) for f, d in zip(args.vs_nnunet_run, args.vs_nnunet_data, strict=True)]
    out: dict = {"benchmark": "min_component_rules", "evidence_percentile": EVIDENCE_PERCENTILE, "targets": {}}
    for target in sorted({t for t, _ in rows}):
        runs = [r for t, r in rows if t == target]
        old = [r["old_rule"]["test_lesion_f1"] for r in runs]
        new = [r["evidence_rule"]["test_lesion_f1"] for r in runs]
        out["targets"][target] = {
            "runs": runs,
            "n_runs": len(runs),
            "changed": sum(r["old_rule"]["min_component_mm3"] != r["evidence_rule"]["min_component_mm3"] for r in runs),
            "mean_test_lesion_f1_old_rule": round(float(np.mean(old)), 4),
            "mean_test_lesion_f1_evidence_rule": round(float(np.mean(new)), 4),
            "better": sum(n > o for o, n in zip(old, new, strict=True)),
            "worse": sum(n < o for o, n in zip(old, new, strict=True)),
        }
    for target in sorted({t for t, *_ in lists}):
        short, current = [a for t, a, _ in lists if t == target], [b for t, _, b in lists if t == target]
        out["targets"][target]["candidate_lists"] = {
            "sizes_mm3": {
                str(a["seed"]): [a["min_component_mm3"], b["min_component_mm3"]]
                for a, b in zip(short, current, strict=True)
            },
            **compare(short, current),
        }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    from medtransfer.cli import run_script

    run_script(main)
