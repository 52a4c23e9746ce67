"""Is a missed stroke less visible than a found one?  The simulator's side of #16's "diagnose first".

    python benchmarks/stroke_visibility.py --seeds 11 23 31 47 59 71 --cases 0 2 3 4 5 7 10 11 \
        --runs benchmarks/results/lesion_match_msseg_rescored.json --json OUT.json

Every stroke case of a brainshift build is simulated again from the build's seed (the builder's own per-case seed
and random streams, so the lesion is the build's: its volume is checked against the build's ``metadata.csv`` when
``--work`` holds the build), once with and once without its stroke, both through the subject's scanner contrast
on the 1 mm grid (before resolution blur and Rician noise).  Per stroke it prints:

* ``volume_mm3`` and the shares of it that were CSF, grey matter, white matter and deep grey before the stroke;
* ``shell_contrast_sigma``: mean intensity of the brain within 3 mm of the stroke (CSF, grey and white matter,
  deep grey) minus the stroke's, in units of the scan's noise standard deviation (the profile's Rician sigma);
* ``darkened_2sigma``: the share of the stroke's voxels the stroke made darker by more than 2 sigma (labelled
  voxels that look unchanged would be a simulator fault: a lesion no reader could see).

With ``--runs`` (``benchmarks/lesion_match_rules.py``'s JSON: every reference lesion of each run's test scans, found
or not under IoU >= 0.1, and the highest lesion probability inside it) each stroke is joined to the runs that
tested it, and found and missed strokes are compared per kind of run (scratch / from a source): count, median
volume and contrast, and a two-sided Mann-Whitney U test of each (one row per stroke and run: a stroke tested by
two runs counts twice).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

BRAIN = ("CSF", "GM", "WM", "DEEP_GREY")
SHARES = {"csf": "CSF", "grey_matter": "GM", "white_matter": "WM", "deep_grey": "DEEP_GREY"}


def stroke_visibility(
    before: np.ndarray, after: np.ndarray, lesion: np.ndarray, tissue: np.ndarray, sigma: float, shell_voxels: int = 3
) -> dict:
    """Visibility of one painted lesion.

    Args:
        before, after: the scan without and with the lesion (same contrast, no noise).
        lesion: boolean mask of the lesion.
        tissue: the tissue codes (:class:`medtransfer.bench.atlas.Tissue`) *before* the lesion.
        sigma: the noise standard deviation of the scan.
        shell_voxels: thickness of the shell of brain around the lesion the contrast is measured against.
    """
    from scipy import ndimage

    from medtransfer.bench.atlas import Tissue

    lesion = np.asarray(lesion, bool)
    if not lesion.any():
        raise ValueError("the lesion mask is empty")
    brain = np.isin(tissue, [Tissue[name] for name in BRAIN])
    # the brain within ``shell_voxels`` (Euclidean) of the lesion, computed in the lesion's box grown by that much
    idx = np.nonzero(lesion)
    box = tuple(slice(max(0, int(i.min()) - shell_voxels), int(i.max()) + shell_voxels + 1) for i in idx)
    shell = np.zeros(lesion.shape, bool)
    shell[box] = (ndimage.distance_transform_edt(~lesion[box]) <= shell_voxels) & ~lesion[box] & brain[box]
    darkening = (np.asarray(before, np.float64) - after)[lesion] / sigma
    inside = float(np.mean(after[lesion]))
    record = {"volume_voxels": int(lesion.sum())}
    record.update({key: round(float(np.mean(tissue[lesion] == Tissue[name])), 3) for key, name in SHARES.items()})
    record["shell_contrast_sigma"] = round((float(np.mean(after[shell])) - inside) / sigma, 2) if shell.any() else None
    record["darkened_2sigma"] = round(float(np.mean(darkening > 2)), 3)
    return record


def simulate_stroke(seed: int, index: int, domain: str) -> tuple[dict, str]:
    """Case ``index`` of the stroke cohort of domain ``domain`` in a build of seed ``seed``: its visibility record
    and case id (the builder's random streams; ``medtransfer.bench.simulate.simulate_case``)."""
    from medtransfer.bench.atlas import load_head_atlas
    from medtransfer.bench.build import case_seed
    from medtransfer.bench.deform import DeformationConfig, random_subject
    from medtransfer.bench.lesions import add_stroke_lesion
    from medtransfer.bench.profiles import WM_REFERENCE, apply_contrast, get_profile, jitter
    from medtransfer.bench.simulate import Cohort

    atlas = load_head_atlas()
    rngs = [np.random.default_rng([case_seed(seed, Cohort.STROKE, domain, index), k]) for k in range(5)]
    image, tissue, region = random_subject(atlas, rngs[0], DeformationConfig())
    painted, tissue_after, lesion, info = add_stroke_lesion(image.copy(), tissue.copy(), region, atlas, rngs[1])
    profile = jitter(get_profile(domain), rngs[2])
    voxel_mm3 = float(abs(np.linalg.det(atlas.affine[:3, :3])))
    record = {"seed": seed, "case": f"{domain}_{index:03d}", "territory": info["territory"]}
    if not lesion.any():
        return record | {"volume_mm3": 0.0}, record["case"]
    visibility = stroke_visibility(
        apply_contrast(image, tissue, profile),
        apply_contrast(painted, tissue_after, profile),
        lesion,
        tissue,
        profile.noise * WM_REFERENCE,
    )
    record["volume_mm3"] = round(visibility.pop("volume_voxels") * voxel_mm3, 1)
    return record | visibility, record["case"]


def build_volume(work: Path | None, seed: int, case: str) -> float | None:
    """The lesion volume the build of ``seed`` under ``work`` records for ``case`` (None: no such build)."""
    if work is None:
        return None
    path = work / f"brainshift_seed{seed}_1mm" / "Dataset004_StrokeLesion" / "metadata.csv"
    if not path.is_file():
        return None
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["case"] == case:
                return float(row["lesion_volume_mm3"])
    return None


def tested_by(runs_path: Path) -> dict[tuple[int, str], list[dict]]:
    """(seed, case) -> the stroke runs of a ``lesion_match_rules.py`` JSON that tested it: kind, file, found under
    IoU >= 0.1, highest lesion probability (one reference lesion per stroke scan)."""
    report = json.loads(runs_path.read_text())
    out: dict[tuple[int, str], list[dict]] = {}
    for run in report["runs"]:
        if run.get("target") != "stroke" or "reference_lesions" not in run:
            continue
        for case, lesions in zip(run["test_cases"], run["reference_lesions"], strict=True):
            if len(lesions) != 1:
                continue
            out.setdefault((int(run["seed"]), case), []).append(
                {
                    "kind": run["kind"],
                    "file": run["file"],
                    "found": bool(lesions[0]["found_iou"]),
                    "max_probability": lesions[0]["max_probability"],
                }
            )
    return out


def compare(records: list[dict]) -> dict:
    """Found against missed strokes per kind of run: counts, medians, Mann-Whitney U (two-sided) p-values."""
    from scipy.stats import mannwhitneyu

    out = {}
    kinds = sorted({run["kind"] for record in records for run in record.get("runs", [])})
    for kind in kinds:
        rows = [(record, run) for record in records for run in record.get("runs", []) if run["kind"] == kind]
        groups = {
            label: [record for record, run in rows if run["found"] is wanted]
            for label, wanted in (("found", True), ("missed", False))
        }
        entry: dict = {}
        for label, group in groups.items():
            entry[label] = {
                "strokes": len(group),
                "median_volume_mm3": _median([r["volume_mm3"] for r in group]),
                "median_shell_contrast_sigma": _median([r["shell_contrast_sigma"] for r in group]),
                "min_darkened_2sigma": min((r["darkened_2sigma"] for r in group), default=None),
            }
        entry["largest_missed_mm3"] = max((r["volume_mm3"] for r in groups["missed"]), default=None)
        entry["smallest_found_mm3"] = min((r["volume_mm3"] for r in groups["found"]), default=None)
        for key in ("volume_mm3", "shell_contrast_sigma"):
            found = [r[key] for r in groups["found"] if r.get(key) is not None]
            missed = [r[key] for r in groups["missed"] if r.get(key) is not None]
            entry[f"mann_whitney_p_{key}"] = (
                float(f"{mannwhitneyu(found, missed, alternative='two-sided').pvalue:.3g}")
                if found and missed
                else None
            )
        out[kind] = entry
    return out


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return round(float(np.median(values)), 2) if values else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", required=True, help="seeds of the brainshift builds")
    parser.add_argument("--cases", type=int, nargs="+", default=list(range(16)), help="case indices (default 0-15)")
    parser.add_argument("--domain", default="siemens_3t", help="scanner profile of the build (default siemens_3t)")
    parser.add_argument("--runs", type=Path, default=None, help="benchmarks/lesion_match_rules.py JSON to join")
    parser.add_argument("--work", type=Path, default=None, help="folder holding the builds, to check the volumes")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if any(index < 0 for index in args.cases):
        parser.error(f"--cases must be case indices >= 0, got {args.cases}")
    runs = tested_by(args.runs) if args.runs else {}
    started, records = time.time(), []
    for seed in args.seeds:
        for index in args.cases:
            record, case = simulate_stroke(seed, index, args.domain)
            recorded = build_volume(args.work, seed, case)
            if recorded is not None and abs(recorded - record["volume_mm3"]) > 0.5:
                parser.exit(
                    1,
                    f"stroke_visibility.py: seed {seed} {case}: simulated {record['volume_mm3']} mm3, the "
                    f"build records {recorded} mm3: not the build's lesion (another code version?)\n",
                )
            if recorded is not None:
                record["build_volume_checked"] = True
            if (seed, case) in runs:
                record["runs"] = runs[(seed, case)]
            records.append(record)
            print(f"[{len(records)}/{len(args.seeds) * len(args.cases)}] seed {seed} {case}", file=sys.stderr)
    report = {
        "measure": "1 mm grid, scanner contrast, before blur and noise; contrast in noise sigma (profile Rician sigma)",
        "strokes": records,
        "found_vs_missed (IoU >= 0.1)": compare(records) if runs else None,
        "seconds": round(time.time() - started, 1),
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
