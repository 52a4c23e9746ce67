"""Domain shift on brainshift: train brain extraction on one scanner, test on all six (DART-style 6x6 matrix).

Prints JSON with the matrices of Dice and surface Dice at 1 mm tolerance (rows: training domain, columns: test
domain).  Surface Dice is computed as DART did, on a 1 mm grid: each test case's exact 1 mm ground truth
(``labelsTr_1mm``) is the reference, and the network's probabilities (working spacing) are resampled linearly
onto that grid before thresholding.

Usage:
    python benchmarks/domain_shift.py [--data DIR] [--subjects-per-domain 8] [--test-per-domain 4]
        [--spacing 1.5] [--steps 2500] [--domains ...] [--sources siemens_3t ge_15t ...] [--merge a.json b.json]
        [--by {domain,head}] [--heads colin27 icbm152_2009c]

Anatomy shift (``--by head``): cases are grouped by the ``head`` column of Dataset001's ``metadata.csv`` (written
by builds with ``--heads colin27 icbm152_2009c``; data without it is refused) instead of by scanner, so the
matrices' rows are training heads, columns test heads, and ``--sources`` names heads.  A build made here then
uses ``--heads`` (default both heads with ``--by head``, Colin27 alone otherwise) and ``--domains`` still picks
the scanners.  Each group holds out its last ``--test-per-domain`` cases in metadata order (for heads, subject
``i`` has head ``heads[i % 2]``, so a head's cases are every other subject); train and test cases of a group must
be different subjects.  With several scanners a head's held-out cases are the last scanner's (metadata is in
scanner order), so a clean anatomy-shift matrix uses one scanner, e.g.
``--by head --domains siemens_3t --subjects-per-domain 16 --test-per-domain 4`` (8 cases per head, 4 to train).

JSON: ``--by domain`` (the default) writes exactly the keys it always has.  ``--by head`` adds ``"by": "head"``,
``"groups"`` (the matrices' rows and columns: the heads in the data) and ``"train_groups"`` (the rows that were
trained, i.e. ``--sources``); there ``"domains"`` lists the scanners in the data, ``"train_domains"`` those
among the training cases, and ``train_cases_per_domain`` / ``test_cases_per_domain`` count per head (the first
head's for the former).  ``summarise`` and ``--merge`` read ``groups`` / ``train_groups`` when present.

Without ``--data`` (or when it holds no Dataset001) a brain-extraction-only build is written to a temporary
folder first.  Each training run is a plain 2D U-Net (``medtransfer.models``, 8 base features, depth 4,
BatchNorm) on axial slices with one neighbouring slice on each side as extra channels (2.5D; ``--context``),
Adam with a one-cycle schedule and BCE + soft Dice.  Spatial augmentation (flips, rotations, zoom) is on by
default and never touches intensities, so each scanner's contrast stays what the model has to cope with;
predictions average the two in-plane mirror images (``--tta``) and are post-processed as usual for brain
extraction (largest connected component, holes filled).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medtransfer.bench import DATASETS, HEADS, LABELS_1MM, BenchmarkConfig, Target, build_benchmark, list_profiles
from medtransfer.bench.layout import HEAD_COLUMN
from medtransfer.cli import positive_int
from medtransfer.data.io import load_nifti
from medtransfer.data.orientation import to_canonical
from medtransfer.data.resample import resample_to_grid
from medtransfer.metrics import compute_dice, compute_surface_dice
from medtransfer.models import create_model

log = logging.getLogger("domain_shift")
SLICE_MULTIPLE = 16
MIN_STEPS = 10


@dataclass
class Case:
    """A test or training case in RAS at the working spacing, plus where its 1 mm ground truth lives."""

    case_id: str
    domain: str
    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    truth_1mm: Path
    subject: str = ""
    head: str = ""


def normalise(image: np.ndarray) -> np.ndarray:
    """DART's preprocessing: clip to the 1st-99th percentile, scale to [0, 1]."""
    lo, hi = np.percentile(image, [1, 99])
    return np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)


def load_cases(root: Path, by: str = "domain") -> dict[str, list[Case]]:
    """Every case of Dataset001 by domain (``by="head"``: by the ``head`` column), in metadata order."""
    folder = root / DATASETS[Target.BRAIN_EXTRACTION].folder
    metadata = folder / "metadata.csv"
    groups: dict[str, list[Case]] = {}
    with metadata.open() as handle:
        reader = csv.DictReader(handle)
        if by == "head" and HEAD_COLUMN not in (reader.fieldnames or []):
            raise SystemExit(f"{metadata} has no head column: build with --heads {' '.join(HEADS)}")
        for row in reader:
            volume = load_nifti(folder / "imagesTr" / f"{row['case']}_0000.nii.gz", dtype=np.float32)
            image, affine, _ = to_canonical(volume.array, volume.affine)
            label, _, _ = to_canonical(load_nifti(folder / "labelsTr" / f"{row['case']}.nii.gz").array, volume.affine)
            truth = folder / LABELS_1MM / f"{row['case']}.nii.gz"
            case = Case(
                row["case"],
                row["domain"],
                normalise(image),
                label.astype(np.float32),
                affine,
                truth,
                subject=row.get("subject") or row["case"],
                head=row.get(HEAD_COLUMN) or "",
            )
            groups.setdefault(case.head if by == "head" else case.domain, []).append(case)
    return groups


def group_order(groups: dict[str, list[Case]], by: str) -> list[str]:
    """The matrices' rows and columns: scanner profiles in profile order (others are left out, as always), or the
    heads in :data:`HEADS` order followed by any other head named in the data."""
    if by == "head":
        return [h for h in HEADS if h in groups] + sorted(set(groups) - set(HEADS))
    return [d for d in list_profiles() if d in groups]


def split(cases: list[Case], test: int) -> tuple[list[Case], list[Case]]:
    """A group's training cases and its held-out last ``test``; they must be different subjects."""
    train_cases, test_cases = cases[:-test], cases[-test:]
    shared = sorted({c.subject for c in train_cases} & {c.subject for c in test_cases})
    if shared:
        raise SystemExit(f"subjects both trained on and held out: {', '.join(shared)}")
    return train_cases, test_cases


def build_heads(args: argparse.Namespace) -> tuple[str, ...]:
    """The heads of a build made here: ``--heads``, else both with ``--by head`` and Colin27 alone otherwise."""
    if getattr(args, "heads", None):
        return tuple(args.heads)
    return HEADS if getattr(args, "by", "domain") == "head" else HEADS[:1]


def pad_slices(volume: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Axial slices ``(Z, H, W)`` zero-padded to ``size``."""
    slices = np.moveaxis(volume, 2, 0)
    out = np.zeros((slices.shape[0], *size), dtype=np.float32)
    out[:, : slices.shape[1], : slices.shape[2]] = slices
    return out


def stack_neighbours(slices: np.ndarray, context: int) -> np.ndarray:
    """``(Z, H, W)`` -> ``(Z, 1 + 2 * context, H, W)``: each slice with ``context`` neighbours on either side
    (2.5D input; edge slices repeat at the volume's ends)."""
    index = np.clip(np.arange(len(slices))[:, None] + np.arange(-context, context + 1)[None], 0, len(slices) - 1)
    return slices[index]


def slice_size(cases: list[Case]) -> tuple[int, int]:
    """Common padded in-plane size (a multiple of 16) for every case."""
    h = max(c.image.shape[0] for c in cases)
    w = max(c.image.shape[1] for c in cases)
    return tuple(int(np.ceil(n / SLICE_MULTIPLE) * SLICE_MULTIPLE) for n in (h, w))


def train(
    cases: list[Case],
    size: tuple[int, int],
    steps: int,
    batch: int,
    seed: int,
    features: int = 8,
    augment: bool = False,
    context: int = 0,
) -> torch.nn.Module:
    """A 2D U-Net trained on every axial slice of ``cases`` (``augment``: spatial only, intensities untouched)."""
    from medtransfer.train.augment import SpatialAugment

    spatial = SpatialAugment() if augment else None
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(np.concatenate([stack_neighbours(pad_slices(c.image, size), context) for c in cases]))
    labels = torch.from_numpy(np.concatenate([pad_slices(c.label, size) for c in cases]))[:, None]
    with_brain = np.flatnonzero(labels.flatten(1).any(dim=1).numpy())
    model = create_model(
        "unet", spatial_dims=2, in_channels=1 + 2 * context, out_channels=1, features=features, depth=4
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-3, total_steps=steps, pct_start=0.2)
    model.train()
    for step in range(steps):
        # 90 % of the slices show brain: the boundary is what there is to learn; empty slices are easy
        pool = with_brain if rng.random() < 0.9 else np.arange(len(images))
        pick = torch.from_numpy(rng.choice(pool, batch))
        x, target = images[pick], labels[pick]
        if spatial is not None:
            items = [spatial({"image": i, "label": t}) for i, t in zip(x, target, strict=True)]
            x, target = torch.stack([i["image"] for i in items]), torch.stack([i["label"] for i in items])
        logits = model(x)
        prob = torch.sigmoid(logits)
        dice = 1 - (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
        loss = F.binary_cross_entropy_with_logits(logits, target) + dice
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 50 == 0 or step == steps - 1:
            log.info("step %d/%d loss %.4f", step + 1, steps, loss.item())
    return model.eval()


@torch.no_grad()
def predict(
    model: torch.nn.Module, case: Case, size: tuple[int, int], tta: bool = False, context: int = 0
) -> np.ndarray:
    """Brain probability ``(X, Y, Z)`` of one case (RAS, working spacing).

    ``tta``: average over the identity and the two in-plane mirror images (nnU-Net's test-time mirroring).
    """
    slices = torch.from_numpy(stack_neighbours(pad_slices(case.image, size), context))
    flips = [(), (-1,), (-2,)] if tta else [()]
    prob = torch.zeros(slices.shape[0], *size)
    for dims in flips:
        for start, chunk in zip(range(0, len(slices), 32), slices.split(32), strict=True):
            out = torch.sigmoid(model(chunk.flip(dims))).flip(dims)  # flip(()) is the identity
            prob[start : start + len(chunk)] += out[:, 0] / len(flips)
    h, w = case.image.shape[:2]
    return np.moveaxis(prob[:, :h, :w].numpy(), 0, 2)


def largest_filled_component(mask: np.ndarray) -> np.ndarray:
    """Standard brain-extraction post-processing: keep the largest connected component, fill its holes."""
    from scipy import ndimage

    from medtransfer.bench.atlas import largest_component

    return ndimage.binary_fill_holes(largest_component(mask))


def score(
    model: torch.nn.Module, case: Case, size: tuple[int, int], tta: bool = False, context: int = 0
) -> tuple[float, float]:
    """Dice and surface Dice (1 mm tolerance) on the 1 mm grid of the exact ground truth."""
    truth_volume = load_nifti(case.truth_1mm)
    truth, truth_affine, _ = to_canonical(truth_volume.array, truth_volume.affine)
    prob = resample_to_grid(predict(model, case, size, tta, context), case.affine, truth.shape, truth_affine, order=1)
    pred, ref = largest_filled_component(prob > 0.5)[None, None], (truth > 0)[None, None]
    dice = float(compute_dice(pred, ref)[0, 0])
    surface = float(compute_surface_dice(pred, ref, spacing=(1.0, 1.0, 1.0), tolerance_mm=1.0)[0, 0])
    return dice, surface


def run(args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    by = getattr(args, "by", "domain")
    root = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="brainshift_"))
    if not (root / DATASETS[Target.BRAIN_EXTRACTION].folder / "metadata.csv").is_file():
        heads = build_heads(args)
        if args.subjects_per_domain <= args.test_per_domain:  # before minutes of building, not after
            raise SystemExit(
                f"--subjects-per-domain {args.subjects_per_domain} leaves no training subject after "
                f"--test-per-domain {args.test_per_domain}; build more subjects or hold out fewer"
            )
        if by == "head":
            if len(heads) < 2:
                raise SystemExit(f"--by head compares heads: give two or more --heads, got {' '.join(heads)}")
            fewest = len(args.domains or list_profiles()) * (args.subjects_per_domain // len(heads))
            if fewest <= args.test_per_domain:
                raise SystemExit(
                    f"--subjects-per-domain {args.subjects_per_domain} over {len(heads)} heads gives a head {fewest} "
                    f"cases: none left to train after --test-per-domain {args.test_per_domain}; "
                    "build more subjects or hold out fewer"
                )
        config = BenchmarkConfig(
            out=root,
            seed=args.seed,
            subjects_per_domain=args.subjects_per_domain,
            spacing=args.spacing,
            targets=(Target.BRAIN_EXTRACTION,),
            domains=tuple(args.domains or list_profiles()),
            sources=False,
            workers=args.workers,
            **({"heads": heads} if heads != HEADS[:1] else {}),
        )
        build_benchmark(config)
    built = time.perf_counter()
    by_group = load_cases(root, by)
    groups = group_order(by_group, by)
    size = slice_size([c for cases in by_group.values() for c in cases])
    dice = np.full((len(groups), len(groups)), np.nan)
    surface = np.full_like(dice, np.nan)
    sources = args.sources or groups
    for source in sources:
        if source not in by_group:
            raise SystemExit(f"{root}: no {source} cases to train on ({by}s in the data: {', '.join(groups)})")
        if len(by_group[source]) <= args.test_per_domain:
            raise SystemExit(
                f"{root}: {source} has {len(by_group[source])} cases, not more than --test-per-domain "
                f"{args.test_per_domain}; build more subjects or hold out fewer"
            )
    splits = {g: split(cases, args.test_per_domain) for g, cases in by_group.items() if g in sources}
    tests = {g: cases[-args.test_per_domain :] for g, cases in by_group.items()}
    for source in sources:
        i = groups.index(source)
        log.info("training on %s", source)
        train_cases = splits[source][0]
        model = train(train_cases, size, args.steps, args.batch, args.seed, args.features, args.augment, args.context)
        for j, target in enumerate(groups):
            scores = np.array([score(model, case, size, args.tta, args.context) for case in tests[target]])
            dice[i, j], surface[i, j] = scores.mean(axis=0)
            log.info("%s -> %s: dice %.3f surface dice %.3f", source, target, dice[i, j], surface[i, j])
    if by == "head":
        scanners = {c.domain for cases in by_group.values() for c in cases}
        trained = {c.domain for s in sources for c in splits[s][0]}
        axes = {
            "by": "head",
            "groups": groups,
            "train_groups": sources,
            "domains": [d for d in list_profiles() if d in scanners] + sorted(scanners - set(list_profiles())),
            "train_domains": [d for d in list_profiles() if d in trained] + sorted(trained - set(list_profiles())),
        }
    else:
        axes = {"domains": groups, "train_domains": sources}
    return {
        "benchmark": "domain_shift",
        "data": str(root),
        **axes,
        "spacing_mm": float(np.sqrt((by_group[groups[0]][0].affine[:3, :3] ** 2).sum(0)).mean()),
        "train_cases_per_domain": len(by_group[groups[0]]) - args.test_per_domain,
        "test_cases_per_domain": args.test_per_domain,
        "steps": args.steps,
        "batch": args.batch,
        "features": args.features,
        "augment": "spatial" if args.augment else "none",
        "tta": "mirror" if args.tta else "none",
        "context_slices": args.context,
        "dice": np.round(dice, 3).tolist(),
        "surface_dice_1mm": np.round(surface, 3).tolist(),
        "build_seconds": round(built - start, 1),
        "total_seconds": round(time.perf_counter() - start, 1),
    }


def axis_keys(result: dict) -> tuple[str, str]:
    """The keys naming the matrices' rows/columns and the trained rows: ``groups`` / ``train_groups`` for
    ``--by head``, ``domains`` / ``train_domains`` otherwise."""
    return ("groups", "train_groups") if "groups" in result else ("domains", "train_domains")


def summarise(result: dict) -> dict:
    """Add the diagonal / off-diagonal summaries of the surface Dice matrix (rows that were trained)."""
    surface = np.array(result["surface_dice_1mm"], dtype=float)
    axis, trained = axis_keys(result)
    domains = result[axis]
    rows = [domains.index(s) for s in result[trained]]
    diag = [surface[i, i] for i in rows]
    off = [surface[i, j] for i in rows for j in range(len(domains)) if j != i]
    result["diagonal_surface_dice_min"] = round(float(np.min(diag)), 3)
    result["diagonal_surface_dice_mean"] = round(float(np.mean(diag)), 3)
    result["off_diagonal_surface_dice_mean"] = round(float(np.mean(off)), 3) if off else None
    result["off_diagonal_surface_dice_min"] = round(float(np.min(off)), 3) if off else None
    result["off_diagonal_pairs_below_0.6"] = int(np.sum(np.array(off) < 0.6))
    return result


def merge(paths: list[str]) -> dict:
    """Combine runs that trained on different domains or heads (e.g. split over processes) into one matrix."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    axis, trained = axis_keys(runs[0])
    if len({run.get("by", "domain") for run in runs}) > 1:
        raise SystemExit("--merge: the runs group cases differently (--by domain and --by head)")
    merged = dict(runs[0])
    for key in ("dice", "surface_dice_1mm"):
        matrix = np.array(runs[0][key], dtype=float)
        for run in runs[1:]:
            for source in run[trained]:
                i = run[axis].index(source)
                matrix[i] = np.array(run[key], dtype=float)[i]
        merged[key] = matrix.tolist()
    merged[trained] = [d for run in runs for d in run[trained]]
    if trained == "train_groups":  # the scanners seen in training, over all the runs
        merged["train_domains"] = list(dict.fromkeys(d for run in runs for d in run["train_domains"]))
    merged["total_seconds"] = round(sum(run["total_seconds"] for run in runs), 1)
    return summarise(merged)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="brainshift folder (built when missing)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--subjects-per-domain", type=positive_int, default=8, help="subjects per domain of a new build"
    )
    parser.add_argument(
        "--test-per-domain",
        type=positive_int,
        default=4,
        help="held-out cases per domain, or per head with --by head (the last ones)",
    )
    parser.add_argument("--spacing", type=float, default=1.5, help="working spacing of a new build (mm)")
    parser.add_argument("--steps", type=positive_int, default=2500, help="training steps per domain")
    parser.add_argument("--batch", type=positive_int, default=8)
    parser.add_argument("--features", type=int, default=8, help="U-Net base width")
    parser.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="spatial augmentation (flips, rotation, zoom)",
    )
    parser.add_argument("--context", type=int, default=1, help="neighbouring slices on each side (2.5D input)")
    parser.add_argument(
        "--tta", action=argparse.BooleanOptionalAction, default=True, help="test-time mirroring (3 predictions)"
    )
    parser.add_argument(
        "--threads", type=positive_int, default=1, help="torch threads (1 is fastest on a shared machine)"
    )
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--domains", nargs="+", help="scanner profiles of a new build (default: all six)")
    parser.add_argument(
        "--sources", nargs="+", help="training domains, or heads with --by head (default: every one in the data)"
    )
    parser.add_argument(
        "--by",
        choices=("domain", "head"),
        default="domain",
        help="group cases by scanner (domain shift) or by the metadata's head column (anatomy shift)",
    )
    parser.add_argument(
        "--heads",
        nargs="+",
        choices=HEADS,
        help="heads of a new build (default: both with --by head, colin27 otherwise)",
    )
    parser.add_argument("--merge", nargs="+", metavar="JSON", help="combine the JSON outputs of partial runs")
    args = parser.parse_args()
    if args.steps < MIN_STEPS and not args.merge:  # the one-cycle warm-up (20 %) needs more than one step
        parser.error(
            f"--steps must be >= {MIN_STEPS} (the one-cycle schedule warms up over 20 % of them), got {args.steps}"
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    print(json.dumps(merge(args.merge) if args.merge else summarise(run(args)), indent=2))


if __name__ == "__main__":
    from medtransfer.cli import run_script

    run_script(main)
