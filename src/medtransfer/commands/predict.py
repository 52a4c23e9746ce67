"""``medtransfer predict``: apply a trained model to NIfTI scans."""

from __future__ import annotations

import argparse

from . import add_threads_option


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="apply a trained model to NIfTI scans",
        description="Apply a trained run to a scan (or a folder of scans): the run's preprocessing, sliding-window "
        "prediction, and a label map written on exactly the input's grid and affine. An output is never written "
        "over an input scan (same path, hard link or symlink), nor over an existing file unless --overwrite is "
        "given: that is refused before any work. In a folder, "
        "every readable scan is predicted; the ones that could not be are listed at the end (exit status 2).",
    )
    parser.add_argument(
        "--model",
        required=True,
        help="run folder, ensemble folder (`medtransfer ensemble`) or checkpoint file of a trained model",
    )
    parser.add_argument("--input", required=True, help="scan.nii.gz, or a folder of scans ({case}_0000.nii.gz ...)")
    parser.add_argument("--output", required=True, help="mask.nii.gz for one scan, a folder for a folder")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument(
        "--allow-nan",
        action="store_true",
        help="predict scans that have some NaN (or infinite) voxels, with a warning naming the file and the count; "
        "NaN is then read as background (the scan's lowest clipped intensity) and inf is clipped to the intensity "
        "range. Without it such scans are refused: a mask of a scan with missing intensities can look right and "
        "be wrong. A scan with no finite voxel is always refused",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace label maps that already exist at the output (an input scan is never replaced)",
    )
    add_threads_option(parser)
    parser.add_argument(
        "--checkpoint",
        default="best",
        choices=["best", "last"],
        help="which checkpoint of a run folder: best validation Dice (default) or the final weights",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from ..errors import DataError
    from ..infer import load_predictor, predict_path
    from ..utils import check_writable

    if not Path(args.input).exists():  # before the (possibly slow) model load; predict_path checks the rest
        raise DataError(f"{args.input}: input not found (give a .nii/.nii.gz file or a folder of them)")
    check_writable(args.output)
    predictor = load_predictor(args.model, device=args.device, precision=args.precision, checkpoint=args.checkpoint)
    result = predict_path(predictor, args.input, args.output, allow_nan=args.allow_nan, overwrite=args.overwrite)
    for path in result.written:
        print(path)
    if result.failed:
        for message in result.failed:
            print(f"error: {message}", file=sys.stderr)
        total = len(result.written) + len(result.failed)
        raise DataError(
            f"{args.input}: {len(result.failed)} of {total} scan(s) could not be predicted (listed above); "
            f"the other {len(result.written)} were written to {args.output}"
        )
    return 0
