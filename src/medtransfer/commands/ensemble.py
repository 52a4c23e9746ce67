"""``medtransfer ensemble``: make an ensemble of trained runs that ``medtransfer predict`` applies like one run."""

from __future__ import annotations

import argparse

from . import add_threads_option


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "ensemble",
        help="combine trained runs into one model (probabilities averaged)",
        description="Combine two or more runs trained on the same labels and split (e.g. a 2D and a 3D recipe, as "
        "nnU-Net ensembles its 2d and 3d_fullres) into an ensemble folder: each member predicts a scan with its own "
        "preprocessing and mirroring, their class probabilities are averaged on the scan's grid, and the "
        "ensemble's own minimum lesion-component size is tuned on the validation cases the members share. "
        "`medtransfer predict --model FOLDER` then uses it like a run. The folder records each member's checkpoint "
        "and SHA-256; a member changed later is refused.",
    )
    parser.add_argument(
        "--model", action="append", required=True, help="a run folder or checkpoint file; give it 2 or more times"
    )
    parser.add_argument("--out", required=True, help="the ensemble folder to create (new or empty)")
    parser.add_argument(
        "--data", default=None, help="the dataset the runs were trained on (default: the one their summary names)"
    )
    parser.add_argument(
        "--checkpoint", default="last", choices=["best", "last"], help="which checkpoint of each run folder"
    )
    parser.add_argument(
        "--min-component",
        default="auto",
        help="auto (default: tuned on the members' shared validation cases when the members remove small "
        "components, as lesion runs do; off when none does), a size in mm³, or none",
    )
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="of the validation predictions that tune --min-component (default fp32, as a run tunes its own; "
        "predict chooses its precision when it applies the ensemble)",
    )
    add_threads_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from ..errors import ConfigError
    from ..infer.ensemble import create_ensemble
    from ..infer.postprocess import check_min_component
    from ..utils import check_writable

    if len(args.model) < 2:
        raise ConfigError(f"--model given {len(args.model)} time(s): an ensemble needs 2 or more runs")
    size = None if str(args.min_component).lower() == "none" else args.min_component
    try:  # before any work, in the words of the option's help ('none', not YAML's null)
        check_min_component(size, name="--min-component")
    except ConfigError:
        raise ConfigError(
            f"--min-component must be 'auto', 'none' or a size in mm³ >= 0, got {args.min_component!r}"
        ) from None
    check_writable(args.out)
    path = create_ensemble(
        args.model,
        args.out,
        data=args.data,
        checkpoint=args.checkpoint,
        min_component=size,
        device=args.device,
        precision=args.precision,
    )
    record = json.loads(path.read_text())
    post = record["postprocess"]
    size = post.get("min_component_mm3")
    removal = f"minimum component {size:g} mm³" if size else "no small-component removal"
    print(f"{path}: {len(record['members'])} members, {removal}")
    return 0
