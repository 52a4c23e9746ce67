"""Re-score finished lesion runs under two lesion-matching rules: IoU >= 0.1 (medtransfer's, the one #16's targets
are judged by) and the MSSEG challenges' detection rule (Commowick et al. 2018; ``medtransfer.metrics.lesions``).

    python benchmarks/lesion_match_rules.py benchmarks/results/lesions_amd_avx2_seed59.json ... --json OUT.json

Each results file is a ``benchmarks/lesions.py`` JSON whose run folders still exist.  Every run's test scans are
predicted again from its last checkpoint with the minimum component size the JSON records, and scored under both
rules.  The IoU counts must reproduce the JSON's (found and false positives per scan at that size): a run that does
not is reported with ``reproduced: "no: ..."`` (why) and left out of the pooled numbers.  Printed as JSON: per
run, and pooled per target and kind of run (scratch / fine-tuned from a source), lesion recall / precision / F1 /
false positives per scan under each rule, per scan the volumes of the reference lesions one rule finds and the
other does not, and every reference lesion with the share of it predicted, the highest lesion probability inside
it and the predicted components that overlap it.
Pre-registration: benchmarks/results/lesion_match_msseg_preregistration.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lesions import SCORES_KEY, TARGETS, rule_scores, run_and_print  # noqa: E402

from medtransfer.data.io import load_nifti  # noqa: E402
from medtransfer.data.layouts import load_dataset  # noqa: E402
from medtransfer.errors import DataError  # noqa: E402
from medtransfer.experiments.evaluate_cell import lesion_match_rule  # noqa: E402
from medtransfer.infer import load_predictor  # noqa: E402
from medtransfer.infer.postprocess import MIN_COMPONENT_KEY, apply_postprocess  # noqa: E402
from medtransfer.infer.predictor import label_array  # noqa: E402
from medtransfer.metrics.lesions import (  # noqa: E402
    DEFAULT_LESION_IOU,
    MSSEG,
    LesionStats,
    detected_reference,
    reduce_lesion_stats,
)

RULES = {"iou": DEFAULT_LESION_IOU, "msseg": MSSEG}


def runs_of(path: Path) -> list[dict]:
    """The runs of one ``benchmarks/lesions.py`` JSON: target name, its entry, the build's dataset folder, seed."""
    try:
        report = json.loads(path.read_text())
        build = report["build"]
        return [
            {
                "file": path.name,
                "target": name,
                "entry": entry,
                "seed": build["seed"],
                "data": Path(build["path"]) / TARGETS[name][1],
            }
            for name, entry in report["results"].items()
        ]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a benchmarks/lesions.py results file ({err})") from err


def predict_run(run: dict) -> tuple[list[np.ndarray], list[np.ndarray], tuple[float, ...], list[float], list]:
    """Binary predictions (the recorded minimum component size applied), references, spacing, per-scan Dice and
    lesion probability maps (before post-processing) of the run's test scans."""
    entry = run["entry"]
    predictor = load_predictor(Path(entry["run_dir"]), checkpoint="last", device="cpu", precision="fp32")
    predictor.postprocess = {}
    dataset = load_dataset(run["data"])
    preds, refs, dice, probs, spacing = [], [], [], [], None
    for case_id in entry["test_cases"]:
        case = dataset.get(case_id)
        image = load_nifti(case.images[0], dtype="float32")
        proba = predictor.predict_proba(image, source=case_id)  # what predict takes the argmax of
        raw = label_array(predictor.classes_from_proba(proba, image.spacing[:3]), predictor.label_values)
        ref = load_nifti(case.label)
        spacing = tuple(float(s) for s in ref.spacing[:3])
        pred = apply_postprocess(raw, spacing, {MIN_COMPONENT_KEY: entry["min_component_mm3"] or 0.0}) > 0
        truth = np.rint(ref.array).astype(np.int64) > 0
        preds.append(pred)
        refs.append(truth)
        probs.append(1.0 - proba[0])
        total = pred.sum() + truth.sum()
        dice.append(round(float(2 * (pred & truth).sum() / total), 4) if total else None)
    return preds, refs, spacing, dice, probs


def reproduction(entry: dict, iou: dict) -> str:
    """``"yes"`` when the IoU counts equal those the results file recorded at the run's chosen size, else why not."""
    size = f"{float(entry['min_component_mm3'] or 0.0):g}"
    recorded = (entry.get(SCORES_KEY) or {}).get(size)
    if recorded is None:
        return f"no: the file records no per-scan counts at {size} mm3"
    if recorded["found"] != iou["found"] or recorded["false_positives"] != iou["false_positives"]:
        return (
            f"no: found {iou['found']} / false positives {iou['false_positives']} per scan, the file "
            f"{recorded['found']} / {recorded['false_positives']}"
        )
    return "yes"


def reference_lesions(pred: np.ndarray, ref: np.ndarray, spacing, prob: np.ndarray | None = None) -> list[dict]:
    """Every reference lesion of one scan (26-connected, as IoU >= 0.1 counts them): its volume, the share of it
    predicted, the highest lesion probability inside it (``prob``: before post-processing; a lesion missed at
    probability 0.3 could be won by a lower threshold, one at 0.001 not), whether each rule finds it (under MSSEG:
    any of its voxels lies in a lesion the rule detects; MSSEG labels face-connected lesions over 3 mm3) and the
    predicted components (26-connected) that overlap it, each with its voxels, its voxels inside the lesion and its
    IoU with the lesion."""
    import cc3d

    by_iou = detected_reference(pred, ref, spacing, iou_threshold=DEFAULT_LESION_IOU)
    by_msseg = detected_reference(pred, ref, spacing, iou_threshold=MSSEG)
    labels, n = cc3d.connected_components(ref, connectivity=26, return_N=True)
    pieces, n_pred = cc3d.connected_components(pred, connectivity=26, return_N=True)
    piece_sizes = np.bincount(pieces.ravel(), minlength=n_pred + 1)
    voxel = float(np.prod(spacing))
    out = []
    for i, box in enumerate(cc3d.statistics(labels)["bounding_boxes"][1:], 1):
        lesion = labels[box] == i
        size = int(lesion.sum())
        ids, inside = np.unique(pieces[box][lesion], return_counts=True)
        overlapping = [
            {"voxels": int(piece_sizes[j]), "inside": int(k), "iou": round(float(k / (piece_sizes[j] + size - k)), 4)}
            for j, k in zip(ids, inside, strict=True)
            if j
        ]
        out.append(
            {
                "volume_mm3": round(size * voxel, 1),
                "covered": round(float(np.count_nonzero(pred[box][lesion]) / size), 4),
                "max_probability": None if prob is None else round(float(prob[box][lesion].max()), 4),
                "found_iou": bool(by_iou[box][lesion].any()),
                "found_msseg": bool(by_msseg[box][lesion].any()),
                "components": sorted(overlapping, key=lambda c: -c["inside"]),
            }
        )
    return out


def lesion_differences(lesions: list[dict]) -> dict:
    """The volumes of one scan's reference lesions (:func:`reference_lesions`) one rule finds and the other not."""
    return {
        "iou_only_mm3": [x["volume_mm3"] for x in lesions if x["found_iou"] and not x["found_msseg"]],
        "msseg_only_mm3": [x["volume_mm3"] for x in lesions if x["found_msseg"] and not x["found_iou"]],
    }


def kind(init: str) -> str:
    """``scratch`` or ``source`` (a run fine-tuned from a checkpoint)."""
    return "scratch" if str(init).startswith("none") else "source"


def pooled(runs: list[dict]) -> dict:
    """Recall, precision, F1 (counts summed over the runs' scans first, ``reduce_lesion_stats``' micro reduction)
    and false positives per scan, per rule; ``None`` where undefined (no scans, no lesions, no components)."""
    out = {}
    for rule in RULES:
        found, lesions, fps, comps = (
            np.array([n for r in runs for n in r[rule][key]], dtype=np.int64).reshape(-1, 1)
            for key in ("found", "lesions", "false_positives", "components")
        )
        zeros = np.zeros(found.shape)
        values = dict.fromkeys(("detection_rate", "precision", "f1", "fp_per_case"))
        if found.size:
            stats = LesionStats(found, lesions - found, fps, lesions, comps, zeros, zeros, zeros)
            reduced = reduce_lesion_stats(stats, "micro")
            values = {k: float(reduced[k][0]) if np.isfinite(reduced[k][0]) else None for k in values}
        out[rule] = {"scans": int(found.size), "lesions": int(lesions.sum()), "found": int(found.sum()), **values}
    return out


def run(args: argparse.Namespace) -> dict:
    runs = [r for path in args.results for r in runs_of(path)]
    out = []
    for i, r in enumerate(runs, 1):
        entry = r["entry"]
        if not (Path(entry["run_dir"]) / "checkpoints").is_dir():
            raise DataError(f"{r['file']}: run folder {entry['run_dir']} has no checkpoints (re-scoring needs them)")
        start = time.perf_counter()
        preds, refs, spacing, dice, probs = predict_run(r)
        scores = {name: rule_scores(preds, refs, spacing, rule) for name, rule in RULES.items()}
        lesions = [reference_lesions(p, t, spacing, q) for p, t, q in zip(preds, refs, probs, strict=True)]
        row = {
            "file": r["file"],
            "target": r["target"],
            "kind": kind(entry["init"]),
            "seed": r["seed"],
            "init": entry["init"],
            "min_component_mm3": entry["min_component_mm3"],
            "test_cases": entry["test_cases"],
            "dice": dice,
            **scores,
            "lesions_one_rule_finds": [lesion_differences(x) for x in lesions],
            "reference_lesions": lesions,
            "reproduced": reproduction(entry, scores["iou"]),
            "seconds": round(time.perf_counter() - start, 1),
        }
        out.append(row)
        f1 = {name: "n/a" if v["f1"] is None else f"{v['f1']:.3f}" for name, v in scores.items()}
        print(
            f"[{i}/{len(runs)}] {r['file']} {r['target']}: F1 {f1['iou']} (IoU >= 0.1) {f1['msseg']} (MSSEG), "
            f"reproduced: {row['reproduced']}, {row['seconds']} s",
            file=sys.stderr,
        )
    groups = sorted({(r["target"], r["kind"]) for r in out})
    good = [r for r in out if r["reproduced"] == "yes"]
    return {
        "rules": {name: lesion_match_rule(rule) for name, rule in RULES.items()},
        "preregistration": "benchmarks/results/lesion_match_msseg_preregistration.md",
        "runs": out,
        "not_reproduced": {f"{r['file']} {r['target']}": r["reproduced"] for r in out if r["reproduced"] != "yes"},
        "pooled (micro over the scans of the reproduced runs; not the MSSEG challenge's per-scan mean)": {
            f"{t} {k}": pooled([r for r in good if (r["target"], r["kind"]) == (t, k)]) for t, k in groups
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", type=Path, help="benchmarks/lesions.py JSON files")
    parser.add_argument("--json", type=Path, help="also write the report here")
    run_and_print(run, parser.parse_args(), "lesion_match_rules.py")


if __name__ == "__main__":
    main()
