"""Paired comparison of two sets of `benchmarks/lesions.py` results (e.g. scratch vs a lesion source), print JSON.

    python benchmarks/lesions_compare.py --target stroke \\
        --a benchmarks/results/lesions_seed{11,23,31,47}.json \\
        --b benchmarks/results/lesions_source101_seed{11,23,31,47}.json

Every ``--a`` file is paired with the ``--b`` file of the same build seed; within a build the test scans are the
same (the demo's split), so the per-case Dice values pair scan by scan.  Prints, for A and B and B - A: the mean
Dice over every paired scan, the pooled lesion recall / precision / F1 (lesions summed over the builds), and
the per-build F1; the paired two-sided Wilcoxon signed-rank test and the sign test of the per-scan Dice
(``medtransfer.report.stats``), on how many scans (ties dropped by the Wilcoxon, counted), and, when the
difference is not significant at alpha, how many paired scans the Wilcoxon test would need to reject with power
0.8 if the observed per-scan differences were the population (``medtransfer.report.equivalence.
wilcoxon_sample_size``).  A scan without a Dice (no lesion on either side; None in the JSON) is left out of the
paired numbers and counted.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from medtransfer.report.equivalence import wilcoxon_sample_size
from medtransfer.report.stats import paired_sign_test, paired_wilcoxon

ALPHA = 0.05


class CompareError(ValueError):
    """Result files that cannot be paired (one line for the user)."""


def load_result(path: Path, target: str) -> dict:
    """``{"seed", "per_case_dice", "test_cases", "lesions", "detected", "false_positives", "f1", "init"}`` of one
    file; the lesion counts are the exact ones of its recall-by-volume bins, the false-positive components its
    per-scan mean times the scans."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CompareError(f"{path}: not a readable lesions.py JSON ({err})") from err
    result = (data.get("results") or {}).get(target)
    if not isinstance(result, dict) or "per_case_dice" not in result:
        raise CompareError(f"{path}: holds no '{target}' result (targets: {sorted(data.get('results') or {})})")
    bins = result.get("recall_by_volume") or []
    dice = [math.nan if v is None else float(v) for v in result["per_case_dice"]]  # None: no lesion on either side
    return {
        "seed": data["build"]["seed"],
        "per_case_dice": dice,
        "test_cases": result.get("test_cases"),
        "lesions": int(sum(b["lesions"] for b in bins)),
        "detected": int(sum(b["detected"] for b in bins)),
        "false_positives": round(float(result.get("fp_per_case") or 0.0) * len(dice)),
        "f1": result.get("f1"),
        "init": result.get("init"),
    }


def pair(a: list[dict], b: list[dict]) -> list[tuple[dict, dict]]:
    """The (A, B) results of each build seed, checked to test the same scans."""
    by_seed_a, by_seed_b = _by_seed(a, "--a"), _by_seed(b, "--b")
    if set(by_seed_a) != set(by_seed_b):
        raise CompareError(f"--a has build seeds {sorted(by_seed_a)}, --b {sorted(by_seed_b)}: give the same seeds")
    pairs = []
    for seed in sorted(by_seed_a):
        ra, rb = by_seed_a[seed], by_seed_b[seed]
        if len(ra["per_case_dice"]) != len(rb["per_case_dice"]):
            raise CompareError(
                f"seed {seed}: {len(ra['per_case_dice'])} test scans in A, {len(rb['per_case_dice'])} in B"
            )
        if ra["test_cases"] and rb["test_cases"] and ra["test_cases"] != rb["test_cases"]:
            if sorted(ra["test_cases"]) == sorted(rb["test_cases"]):
                raise CompareError(f"seed {seed}: A and B list the same test scans in another order")
            raise CompareError(f"seed {seed}: A and B were tested on different scans")
        pairs.append((ra, rb))
    return pairs


def _by_seed(results: list[dict], flag: str) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for r in results:
        if r["seed"] in out:
            raise CompareError(f"{flag}: two results of build seed {r['seed']}")
        out[r["seed"]] = r
    return out


def pooled(results: list[dict]) -> dict:
    """Lesion recall / precision / F1 with every build's lesions and false-positive components summed.

    Precision here is found lesions / (found lesions + false-positive components): a build's JSON keeps no count of
    the predicted components that hit a lesion (two may hit one), so this can differ slightly from the metric's
    own precision, (predicted - false positives) / predicted, when a lesion is hit by several components.
    """
    lesions = sum(r["lesions"] for r in results)
    detected = sum(r["detected"] for r in results)
    false_positives = sum(r["false_positives"] for r in results)
    recall = detected / lesions if lesions else math.nan
    precision = detected / (detected + false_positives) if detected + false_positives else math.nan
    f1 = 2 * precision * recall / (precision + recall) if detected else 0.0
    return {
        "lesions": lesions,
        "detected": detected,
        "false_positives": false_positives,
        "recall": recall,
        "precision": precision,
        "f1": f1,
    }


def compare(a: list[dict], b: list[dict]) -> dict:
    """The comparison of B against A (see the module docstring)."""
    pairs = pair(a, b)
    dice_a = np.array([v for ra, _ in pairs for v in ra["per_case_dice"]])
    dice_b = np.array([v for _, rb in pairs for v in rb["per_case_dice"]])
    finite = np.isfinite(dice_a) & np.isfinite(dice_b)  # a scan without a lesion on either side has no Dice
    dice_a, dice_b = dice_a[finite], dice_b[finite]
    diff = dice_b - dice_a
    wilcoxon = paired_wilcoxon(dice_b, dice_a)
    sign = paired_sign_test(dice_b, dice_a)
    sd = float(np.std(diff, ddof=1)) if diff.size > 1 else math.nan
    significant = bool(wilcoxon.pvalue < ALPHA)
    return {
        "seeds": [ra["seed"] for ra, _ in pairs],
        "a": {
            "init": sorted({str(ra["init"]) for ra, _ in pairs}),
            "dice": float(dice_a.mean()),
            **pooled([r for r, _ in pairs]),
        },
        "b": {
            "init": sorted({str(rb["init"]) for _, rb in pairs}),
            "dice": float(dice_b.mean()),
            **pooled([r for _, r in pairs]),
        },
        "f1_per_seed": {str(ra["seed"]): {"a": ra["f1"], "b": rb["f1"]} for ra, rb in pairs},
        "dice_b_minus_a": {
            "paired_scans": int(diff.size),
            "scans_without_dice": int((~finite).sum()),
            "mean": float(diff.mean()),
            "sd": sd,
            "b_better": int((diff > 0).sum()),
            "a_better": int((diff < 0).sum()),
            "tied": int((diff == 0).sum()),
            "wilcoxon_p": wilcoxon.pvalue,
            "sign_test_p": sign.pvalue,
            "test": "paired two-sided Wilcoxon signed-rank (zero differences dropped) and sign test, per test scan, "
            "no correction (one comparison)",
            "pooled_precision": "found lesions / (found lesions + false-positive components), summed over builds",
            "significant_at_0.05": significant,
            "paired_scans_needed_for_power_0.8": None if significant else wilcoxon_sample_size(diff),
            "power_method": "the Wilcoxon test above, resampling the observed per-scan differences (ties and zeros "
            "kept); optimistic: it takes the observed difference as the true one",
            "caution": "each arm's scans of one build were predicted by one trained model: the p-values measure "
            "scan-to-scan variation given those models, not the variation between training runs",
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=["stroke", "ms"], default="stroke")
    parser.add_argument("--a", type=Path, nargs="+", required=True, help="lesions.py JSON files (the reference arm)")
    parser.add_argument("--b", type=Path, nargs="+", required=True, help="lesions.py JSON files (the compared arm)")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    try:
        result = compare([load_result(p, args.target) for p in args.a], [load_result(p, args.target) for p in args.b])
    except CompareError as err:
        print(f"lesions_compare: {err}", file=sys.stderr)
        return 2
    text = json.dumps({"target": args.target, **result}, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    from medtransfer.cli import run_script

    run_script(main)
