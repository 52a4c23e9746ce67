"""``medtransfer finetune``: fine-tune a pretrained model with a transfer strategy."""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
from pathlib import Path

from ..cli import positive_int
from . import add_threads_option


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune a pretrained model with a transfer strategy",
        description="Fine-tune a source checkpoint (or a fresh model) on a labelled budget of a target dataset "
        "with a transfer strategy; writes a run folder (config.yaml, env.json, checkpoints, history, summary.json).",
    )
    parser.add_argument(
        "--init",
        default=None,
        help="source checkpoint or run folder, or 'none' / 'scratch' for random init (required unless --config "
        "gives init:)",
    )
    parser.add_argument("--strategy", default=None, help="NAME[:ARGS], e.g. first_k:2 (see 'medtransfer strategies')")
    parser.add_argument("--data", required=True, help="target dataset folder (nnU-Net raw, MSD, CC359, folders)")
    parser.add_argument("--out", required=True, help="run folder to write")
    parser.add_argument("--model", default=None, help="model name when --init none (default unet)")
    parser.add_argument("--target-domain", default=None, help="use only cases of this domain (metadata.csv)")
    parser.add_argument("--n-labelled", type=int, default=None, help="labelled scans (default 3)")
    parser.add_argument("--every-kth-slice", type=int, default=None, help="label every k-th slice of one scan")
    parser.add_argument("--seed", type=int, default=None, help="seed of the budget and of training (default 0)")
    parser.add_argument("--cache-dir", default=None, help="preprocessing cache shared by runs on the same data")
    parser.add_argument("--config", default=None, help="YAML with finetune keys (train:, preprocess:, ...)")
    parser.add_argument("--epochs", type=positive_int, default=None)
    parser.add_argument("--steps-per-epoch", type=positive_int, default=None)
    parser.add_argument("--batch-size", type=positive_int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    add_threads_option(parser)
    semi = parser.add_argument_group(
        "teacher-student", "noisy-student pseudo-labelling of unlabelled target scans (2D models; docs/beyond.md)"
    )
    semi.add_argument("--unlabelled", default=None, help="folder of unlabelled target scans (any dataset layout)")
    semi.add_argument("--pseudo-rounds", type=int, default=None, help="student rounds with --unlabelled (default 1)")
    semi.add_argument("--pseudo-threshold", type=float, default=None, help="min top-class probability kept (0.9)")
    semi.add_argument("--pseudo-max-entropy", type=float, default=None, help="max normalised entropy kept (off)")
    semi.add_argument("--student-dropout", type=float, default=None, help="student feature dropout (default 0.1)")
    parser.add_argument(
        "--classify",
        default=None,
        metavar="TARGET",
        help="an image-level classification target instead of segmentation: 'lesion' (per slice, lesion present) "
        "or 'metadata:COLUMN' (a case-level class from metadata.csv); scores accuracy, balanced accuracy, AUC",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..finetune import FinetuneConfig, run_finetune
    from ..utils import check_writable

    if args.device is not None:  # before any data work: cuda without CUDA, cuda:7 on a 1-GPU machine, a typo
        from ..train.precision import resolve_device

        resolve_device(args.device)
    check_writable(args.out)
    if args.cache_dir is not None:
        check_writable(args.cache_dir, folder=True, what="--cache-dir")
    if args.init is None and not args.config:
        raise ConfigError("--init is required (a source checkpoint or run folder, or 'none'), or a --config with init:")

    train = {
        key: value
        for key, value in {
            "epochs": args.epochs,
            "steps_per_epoch": args.steps_per_epoch,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "precision": args.precision,
            "device": args.device,
        }.items()
        if value is not None
    }
    overrides = {
        "init": args.init,
        "strategy": args.strategy,
        "data": args.data,
        "out": args.out,
        "model": args.model,
        "target_domain": args.target_domain,
        "n_labelled": args.n_labelled,
        "every_kth_slice": args.every_kth_slice,
        "seed": args.seed,
        "cache_dir": args.cache_dir,
        "train": train or None,
    }
    if args.config:
        config = FinetuneConfig.from_yaml(args.config, **overrides)
    else:
        config = FinetuneConfig.from_dict({}, **overrides)
    out = Path(config.out)
    _refuse_occupied_out(out, args.resume, classify=args.classify is not None)
    with _removed_if_nothing_trained(out):
        if args.classify is not None:
            return _run_classification(args, config)
        if args.unlabelled is None:
            _refuse_semi_options(args)
            print(run_finetune(config, resume=args.resume))
            return 0
        return _run_teacher_student(args, config)


def _refuse_occupied_out(out: Path, resume: bool, *, classify: bool = False) -> None:
    """``--out`` is a run folder to create: a file there, or a folder with anything in it (an earlier run, the
    user's files) is refused unless ``--resume`` asks to continue the run in it -- a run's folder (its
    ``config.yaml``, or a teacher-student run's ``round*/config.yaml``), never a folder of the user's files.
    Classification runs, which never resume, say so themselves."""
    from ..errors import ConfigError

    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: is a file; --out is the run folder to create")
    if not (out.is_dir() and any(out.iterdir())):
        return
    is_run = (out / "config.yaml").is_file() or any(out.glob("round*/config.yaml"))
    if not resume:
        hint = "pass --resume to continue (or return) the run in it, or give" if is_run else "give"
        raise ConfigError(f"{out}: exists and is not empty; finetune never writes over a folder: {hint} another --out")
    if not is_run and not classify:
        raise ConfigError(
            f"{out}: holds no medtransfer run (no config.yaml), so there is nothing to --resume and its files are "
            "not finetune's to write over; give another --out"
        )


@contextlib.contextmanager
def _removed_if_nothing_trained(out: Path):
    """On a failure before the first checkpoint (a bad option found late, a device that is not there, Ctrl-C
    during preprocessing) remove what this run wrote into ``out`` (its config.yaml, env.json), so that a corrected
    command starts clean; a run with a checkpoint is kept for ``--resume``."""
    before = set(out.iterdir()) if out.is_dir() else None
    try:
        yield
    except BaseException as err:
        if not (out.is_dir() and any(out.rglob("*.pt"))):  # a teacher's or a run's checkpoint: kept
            if before is None:
                shutil.rmtree(out, ignore_errors=True)
            elif out.is_dir():
                for path in set(out.iterdir()) - before:
                    shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            if isinstance(err, KeyboardInterrupt):  # nothing to --resume: say so, not "rerun with --resume"
                raise StoppedBeforeCheckpoint from err
        raise


class StoppedBeforeCheckpoint(KeyboardInterrupt):
    """Interrupted (Ctrl-C, SIGTERM) before the first checkpoint: the run folder was removed, nothing to resume."""

    hint = ": stopped before the first checkpoint, so nothing was kept; rerun the same command to start again"


SEMI_OPTIONS = ("pseudo_rounds", "pseudo_threshold", "pseudo_max_entropy", "student_dropout")


def _refuse_semi_options(args: argparse.Namespace) -> None:
    from ..errors import ConfigError

    given = [f"--{name.replace('_', '-')}" for name in SEMI_OPTIONS if getattr(args, name) is not None]
    if given:
        verb = "applies" if len(given) == 1 else "apply"
        raise ConfigError(f"{', '.join(given)} only {verb} with --unlabelled DIR (teacher-student pseudo-labelling)")


def _run_classification(args: argparse.Namespace, config) -> int:
    """An image-level target: writes config.yaml, history.jsonl, model.pt, metrics_per_case.json, summary.json."""
    from ..errors import ConfigError
    from ..finetune import ClassificationOptions, run_classification

    if args.unlabelled is not None:
        raise ConfigError("--classify and --unlabelled cannot be combined (pseudo-labels are for segmentation)")
    if args.resume:
        raise ConfigError(
            f"{config.out}: --classify runs do not resume (they are short); give another --out, or delete the folder "
            "to train again"
        )
    if config.every_kth_slice is not None:
        raise ConfigError("--classify takes whole labelled scans (--n-labelled), not --every-kth-slice")
    out = run_classification(config, ClassificationOptions.from_dict({"target": args.classify}, where="--classify"))
    metrics = json.loads((out / "summary.json").read_text())["metrics"]
    print("  ".join(f"{key} {value:.4f}" for key, value in metrics.items() if isinstance(value, float)))
    print(out)
    return 0


def _run_teacher_student(args: argparse.Namespace, config) -> int:
    """Teacher (this fine-tuning run) + noisy-student rounds; prints teacher vs student validation Dice."""

    from ..errors import DataError
    from ..semi import run_teacher_student

    if not Path(args.unlabelled).is_dir():
        raise DataError(f"--unlabelled {args.unlabelled}: not a folder (give a folder of unlabelled target scans)")
    pseudo = {"threshold": args.pseudo_threshold, "max_entropy": args.pseudo_max_entropy}
    options = {
        "finetune": config.to_dict(),
        "unlabelled": args.unlabelled,
        "out": args.out,
        "rounds": 1 if args.pseudo_rounds is None else args.pseudo_rounds,
        "pseudo": {k: v for k, v in pseudo.items() if v is not None},
    }
    if args.student_dropout is not None:
        options["dropout"] = args.student_dropout
    out = run_teacher_student(options)
    summary = json.loads((Path(out) / "summary.json").read_text())
    print(f"{'round':>5}  {'teacher Dice':>12}  {'student Dice':>12}  better")
    for row in summary["rounds"]:
        better = "yes" if row["student_better"] else "no"
        print(f"{row['round']:>5}  {row['teacher_val_dice']:>12.4f}  {row['student_val_dice']:>12.4f}  {better}")
    print(out)
    return 0
