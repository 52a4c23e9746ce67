"""``medtransfer evaluate``: evaluate predictions against references (Dice, surface Dice, HD95, lesions)."""

from __future__ import annotations

import argparse
import math

DESCRIPTION = """\
Evaluate predicted label maps against references: Dice, IoU, surface Dice at a tolerance (DeepMind
definition), HD95, ASSD and lesion-wise detection, per case and label.

Two forms:
  medtransfer evaluate --pred DIR --ref DIR [--out DIR]
      cases are matched by file name (case.nii.gz in both folders); spacing is read from the NIfTI headers;
      outputs default to the prediction folder (as nnU-Net does).
  medtransfer evaluate RUN_DIR [--out DIR]
      RUN_DIR holds predictions/ and either a reference/ folder or a config.yaml whose key data.labels_dir
      names the reference folder (relative paths are relative to RUN_DIR); outputs default to
      RUN_DIR/evaluation/.

Writes metrics_per_case.csv (one row per case and label) and summary.json (means per label that ignore
labels absent from both masks, micro-averaged lesion detection).  Every case must have both files, and a
prediction must lie on its reference's grid (same shape and affine).
"""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate predictions against references (Dice, surface Dice, HD95, lesions)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run", nargs="?", metavar="RUN_DIR", help="run folder with predictions/ (see above)")
    parser.add_argument("--pred", metavar="DIR", help="folder of predicted label maps (.nii.gz)")
    parser.add_argument("--ref", metavar="DIR", help="folder of reference label maps with the same file names")
    parser.add_argument(
        "--labels", type=int, nargs="+", metavar="L", help="labels to evaluate (default: all found; 1 if none is)"
    )
    parser.add_argument("--tolerance-mm", type=float, default=1.0, help="surface Dice tolerance in mm (default 1)")
    parser.add_argument(
        "--connectivity",
        type=int,
        default=None,
        choices=(6, 18, 26),
        help="lesion connectivity (default 26; the MSSEG rule is defined with 6)",
    )
    parser.add_argument(
        "--lesion-match",
        default="0.1",
        metavar="RULE",
        help="how a reference lesion is detected: an IoU in (0, 1] that one predicted component needs (default "
        "0.1), 'overlap' (any voxel; a whole-brain mask then detects every lesion) or 'msseg' (the MSSEG "
        "challenges' rule, Commowick et al. 2018: fragments of one lesion detect it together)",
    )
    parser.add_argument("--no-lesions", action="store_true", help="skip lesion-wise detection")
    parser.add_argument("--out", metavar="DIR", help="output folder for metrics_per_case.csv and summary.json")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import ConfigError
    from ..metrics.evaluation import EvaluationConfig, evaluate_folders, resolve_run_folder
    from ..utils import check_writable

    if args.run and (args.pred or args.ref):
        raise ConfigError("give either RUN_DIR or --pred and --ref, not both")
    if args.run:
        pred_dir, ref_dir = resolve_run_folder(args.run)
        out_dir = Path(args.out) if args.out else Path(args.run) / "evaluation"
    elif args.pred and args.ref:
        pred_dir, ref_dir = Path(args.pred), Path(args.ref)
        out_dir = Path(args.out) if args.out else pred_dir
    else:
        raise ConfigError("nothing to evaluate: give RUN_DIR, or both --pred DIR and --ref DIR")
    check_writable(out_dir, folder=True, what="the evaluation output (--out)")
    config = EvaluationConfig(
        labels=tuple(args.labels) if args.labels else None,
        tolerance_mm=args.tolerance_mm,
        connectivity=_connectivity(args),
        lesions=not args.no_lesions,
        lesion_iou=_lesion_rule(args.lesion_match),
    )
    summary = evaluate_folders(pred_dir, ref_dir, out_dir, config)
    _print_summary(summary, out_dir)
    return 0


def _lesion_rule(text: str) -> float | str | None:
    """``--lesion-match`` as :class:`EvaluationConfig`'s ``lesion_iou``.

    Raises:
        ConfigError: not an IoU in (0, 1], ``overlap`` or ``msseg``.
    """
    from ..errors import ConfigError
    from ..metrics.lesions import check_iou_threshold

    word = text.strip().lower()
    if word == "overlap":
        return None
    try:
        return check_iou_threshold(word if word == "msseg" else float(word))
    except (ValueError, ConfigError):
        raise ConfigError(
            f"--lesion-match must be an IoU in (0, 1] (one predicted component must reach it), 'overlap' (any "
            f"voxel) or 'msseg' (the MSSEG challenges' rule), got {text!r}"
        ) from None


def _connectivity(args: argparse.Namespace) -> int:
    """``--connectivity`` (26 when not given); the MSSEG rule refuses any but its own 6."""
    from ..errors import ConfigError

    if args.lesion_match.strip().lower() == "msseg" and not args.no_lesions:
        if args.connectivity not in (None, 6):
            raise ConfigError(
                f"--lesion-match msseg counts face-connected lesions (6); got --connectivity {args.connectivity}"
            )
        return 6
    return 26 if args.connectivity is None else args.connectivity


def _print_summary(summary: dict, out_dir) -> None:
    from ..experiments.evaluate_cell import lesion_match_rule

    keys = ("dice", "iou", "surface_dice", "hd95", "assd", "lesion_detection_rate", "lesion_precision", "lesion_f1")
    present = [k for k in keys if k in next(iter(summary["mean"].values()))]
    config = summary["config"]
    print(f"{summary['n_cases']} case(s); means over cases (tolerance {config['tolerance_mm']} mm)")
    print("label  " + "  ".join(f"{k:>12}" for k in present))
    for label, means in summary["mean"].items():
        print(f"{label:>5}  " + "  ".join(f"{means[k]:>12.4f}" for k in present))
    if config.get("lesions"):
        rule = lesion_match_rule(config["lesion_iou"], config["connectivity"])
        print(f"lesions: micro-averaged over the cases; a lesion is matched by {rule}")
        for label, means in summary["mean"].items():
            if isinstance(means.get("lesion_f1_scan_mean"), float) and math.isfinite(means["lesion_f1_scan_mean"]):
                print(
                    f"label {label}: lesion F1 averaged per case (the MSSEG challenges' convention, over the cases "
                    f"where it is defined): {means['lesion_f1_scan_mean']:.4f}"
                )
    print(f"wrote {out_dir}/metrics_per_case.csv and {out_dir}/summary.json")
