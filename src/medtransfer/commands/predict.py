"""``medtransfer predict``: apply a trained model to NIfTI scans."""

from __future__ import annotations

import argparse

from . import add_threads_option


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="apply a trained model to NIfTI scans",
        description="Apply a trained run to a scan (or a folder of scans): the run's preprocessing, sliding-window "
        "prediction, and a label map written on exactly the input's grid and affine.",
    )
    parser.add_argument("--model", required=True, help="run folder (or checkpoint file) of a trained model")
    parser.add_argument("--input", required=True, help="scan.nii.gz, or a folder of scans ({case}_0000.nii.gz ...)")
    parser.add_argument("--output", required=True, help="mask.nii.gz for one scan, a folder for a folder")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    add_threads_option(parser)
    parser.add_argument(
        "--checkpoint",
        default="best",
        choices=["best", "last"],
        help="which checkpoint of a run folder: best validation Dice (default) or the final weights",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..infer import load_predictor, predict_path

    predictor = load_predictor(args.model, device=args.device, precision=args.precision, checkpoint=args.checkpoint)
    written = predict_path(predictor, args.input, args.output)
    for path in written:
        print(path)
    return 0
