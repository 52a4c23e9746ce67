"""Score an ensemble of finished `benchmarks/lesions.py` runs on their test scans, print JSON like lesions.py's.

    python benchmarks/lesions_ensemble.py --target stroke \\
        --runs WORK/run_stroke_seed47_from_source101 WORK/run_stroke_seed47_stroke_3d_recipe_from_source101 \\
        --seed 47 --out ens47 [--json benchmarks/results/lesions_ensemble_seed47.json]

The runs (2 or more, e.g. the 2D recipe and configs/recipes/stroke_3d_recipe.yaml on one build: lesions.py keeps one
run folder per target, initialisation, recipe and precision, and names it in its JSON as ``run_dir``) must share the
build and the split. ``medtransfer ensemble``'s library call (:func:`medtransfer.infer.ensemble.create_ensemble`)
makes the ensemble in ``--out`` from each run's last checkpoint and tunes its minimum component size on the shared
validation scans; the test scans are then predicted (the members' probabilities averaged) and scored exactly as
lesions.py scores one run (:func:`lesions.score_test_cases`). The JSON has lesions.py's shape (``build``,
``results[target]``), so `benchmarks/lesions_compare.py` pairs it with any single run of the same build seed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lesions import DOMAIN, TARGETS, run_and_print, score_test_cases  # noqa: E402

from medtransfer.errors import MedTransferError  # noqa: E402
from medtransfer.experiments.evaluate_cell import lesion_match_rule  # noqa: E402
from medtransfer.infer.ensemble import create_ensemble, load_ensemble  # noqa: E402
from medtransfer.metrics.lesions import DEFAULT_LESION_IOU  # noqa: E402
from medtransfer.utils import read_yaml_mapping  # noqa: E402


def run(args: argparse.Namespace) -> dict:
    """Make (or reuse) the ensemble and score it; the report as a dict."""
    target, folder, thresholds = TARGETS[args.target]
    summaries = [json.loads((r / "summary.json").read_text()) for r in args.runs]
    data = Path(read_yaml_mapping(args.runs[0] / "config.yaml", what="run config")["data"])
    if data.name != folder:
        raise MedTransferError(f"{args.runs[0]}: trained on {data.name}, not the {args.target} dataset {folder}")
    for run_dir, summary in zip(args.runs[1:], summaries[1:], strict=True):
        if summary["test_cases"] != summaries[0]["test_cases"]:
            raise MedTransferError(f"{run_dir}: other test scans than {args.runs[0]}; the runs must share a split")
    start = time.perf_counter()
    if not (args.out / "ensemble.json").is_file():
        create_ensemble(args.runs, args.out, checkpoint="last", device="cpu", precision="fp32")
    tune_s = time.perf_counter() - start
    ensemble = load_ensemble(args.out, device="cpu", precision="fp32")
    result = {
        "target": target,
        "init": "ensemble of " + ", ".join(str(r) for r in args.runs),
        "members": [{"run": str(r), "init": s.get("init")} for r, s in zip(args.runs, summaries, strict=True)],
        **score_test_cases(ensemble, data, summaries[0], thresholds),
        "ensemble_tune_seconds": round(tune_s, 1),
    }
    return {
        "build": {"seed": args.seed, "domain": DOMAIN, "path": str(data.parent)},
        "lesion_match": lesion_match_rule(DEFAULT_LESION_IOU),
        "results": {args.target: result},
        "pass": result["pass"],
        "seconds": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=sorted(TARGETS), default="stroke")
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="finished lesions.py run folders (2+)")
    parser.add_argument("--out", type=Path, required=True, help="the ensemble folder (made if absent, else reused)")
    parser.add_argument("--seed", type=int, required=True, help="the build's seed (lesions_compare.py pairs by it)")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    if len(args.runs) < 2:
        parser.error("--runs needs 2 or more run folders")
    run_and_print(run, args, "lesions_ensemble.py")


if __name__ == "__main__":
    from medtransfer.cli import run_script

    run_script(main)
