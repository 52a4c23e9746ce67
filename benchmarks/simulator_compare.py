"""Lesions of two brainshift builds side by side (e.g. simulator 1 against simulator 2, same seed): prints JSON.

For each lesion dataset both builds hold (``Dataset003_MSLesion``, ``Dataset004_StrokeLesion``), per build:

* the lesions: 26-connected components of the exact 1 mm labels (``labelsTr_1mm``), their volumes in mm3 (count,
  median, quartiles, share under 1 cc and under 0.1 cc) and a histogram on log bins;
* how many of them vanish on the working grid (no voxel of the lesion in ``labelsTr`` at the build's spacing);
* each lesion's contrast on the working-grid image (a lesion there: a 26-connected component of ``labelsTr``):
  ``1 - median(lesion) / median(ring)``, the ring being the unlabelled voxels within 2 working voxels of it
  (whatever tissue they are), and the contrast-to-noise ratio ``(median(ring) - median(lesion)) / (1.4826 MAD of
  the ring)``; medians over lesions.

Writes ``volumes.png`` (the histograms, both builds per dataset) and ``montage_<dataset>.png`` (each build's
montage of the first domain, one above the other) into ``--out``.

    python benchmarks/simulator_compare.py --before OLD_BUILD --after NEW_BUILD --out docs/images/simulator2 \
        [--labels "simulator 1" "simulator 2"] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

LESION_DATASETS = ("Dataset003_MSLesion", "Dataset004_StrokeLesion")
BINS_MM3 = (0, 10, 30, 100, 300, 1000, 3000, 10_000, 30_000, 100_000, 1e9)


def lesion_table(root: Path) -> dict:
    """Per-lesion volumes, vanishing and contrast of one lesion dataset of a build."""
    from scipy import ndimage

    from medtransfer.data.io import load_nifti

    volumes, vanished, contrast, cnr, scans = [], 0, [], [], 0
    for label_path in sorted((root / "labelsTr_1mm").glob("*.nii.gz")):
        case = label_path.name[: -len(".nii.gz")]
        fine = load_nifti(label_path)
        coarse = load_nifti(root / "labelsTr" / label_path.name)
        image = load_nifti(root / "imagesTr" / f"{case}_0000.nii.gz").array.astype(np.float32)
        scans += 1
        voxel_fine = abs(np.linalg.det(fine.affine[:3, :3]))
        components, count = ndimage.label(fine.array > 0, np.ones((3, 3, 3)))
        # where each fine lesion lands on the working grid: the working voxel holding its voxel centres
        to_coarse = np.linalg.inv(coarse.affine) @ fine.affine
        coarse_lesions, _ = ndimage.label(coarse.array > 0, np.ones((3, 3, 3)))
        # each fine lesion voxel mapped to the working voxel holding its centre; a lesion vanishes when none is labelled
        where = np.argwhere(components > 0)
        ijk = np.rint(where @ to_coarse[:3, :3].T + to_coarse[:3, 3]).astype(int)
        inside_grid = np.all((ijk >= 0) & (ijk < coarse.array.shape), axis=1)
        hit = np.zeros(len(where), bool)
        hit[inside_grid] = coarse.array[tuple(ijk[inside_grid].T)] > 0
        ids = components[tuple(where.T)]
        sizes = np.bincount(ids, minlength=count + 1)[1:]
        volumes += (sizes * voxel_fine).astype(float).tolist()
        vanished += int(np.sum(np.bincount(ids, weights=hit, minlength=count + 1)[1:] == 0))
        for index, box in enumerate(ndimage.find_objects(coarse_lesions), start=1):
            box = tuple(slice(max(0, b.start - 2), b.stop + 2) for b in box)  # the 2-voxel ring fits in the box
            mask = coarse_lesions[box] == index
            shell = ndimage.binary_dilation(mask, iterations=2) & (coarse.array[box] == 0)
            if shell.sum() < 10:
                continue
            inside, ring = float(np.median(image[box][mask])), image[box][shell]
            ring_median = float(np.median(ring))
            mad = 1.4826 * float(np.median(np.abs(ring - ring_median)))
            if ring_median > 0:
                contrast.append(1 - inside / ring_median)
            if mad > 0:
                cnr.append((ring_median - inside) / mad)
    v = np.asarray(volumes)
    hist = np.histogram(v, bins=BINS_MM3)[0].tolist() if len(v) else [0] * (len(BINS_MM3) - 1)
    return {
        "scans": scans,
        "lesions": int(len(v)),
        "volume_mm3": {
            "median": float(np.median(v)) if len(v) else None,
            "q25": float(np.percentile(v, 25)) if len(v) else None,
            "q75": float(np.percentile(v, 75)) if len(v) else None,
            "share_under_1cc": float(np.mean(v < 1000)) if len(v) else None,
            "share_under_0.1cc": float(np.mean(v < 100)) if len(v) else None,
        },
        "histogram": {"bins_mm3": list(BINS_MM3), "counts": hist},
        "vanished_on_working_grid": vanished,
        "contrast_median": float(np.median(contrast)) if contrast else None,
        "cnr_median": float(np.median(cnr)) if cnr else None,
        "working_spacing_mm": float(np.sqrt((coarse.affine[:3, :3] ** 2).sum(0)).mean()) if scans else None,
    }


def plot(results: dict, labels: list[str], builds: list[Path], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 3.6), squeeze=False)
    ticks = [f"{lo:g}-{hi:g}" if hi < 1e9 else f">{lo:g}" for lo, hi in zip(BINS_MM3[:-1], BINS_MM3[1:], strict=True)]
    for ax, name in zip(axes[0], names, strict=True):
        width = 0.4
        for k, label in enumerate(labels):
            counts = results[name][label]["histogram"]["counts"]
            ax.bar(np.arange(len(counts)) + (k - 0.5) * width, counts, width, label=label)
        ax.set_xticks(range(len(ticks)), ticks, rotation=45, ha="right", fontsize=7)
        ax.set_xlabel("lesion volume, mm3 (1 mm labels, 26-connected)")
        ax.set_ylabel("lesions")
        ax.set_title(name)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "volumes.png", dpi=110)
    plt.close(fig)
    for name in names:
        images = []
        for build in builds:
            montages = sorted((build / name).glob("montage_*.png"))
            montages = [m for m in montages if m.name != "montage_task.png"] or montages
            if montages:
                images.append(plt.imread(montages[0]))
        if len(images) != len(builds):
            continue
        fig, axes = plt.subplots(len(images), 1, figsize=(10, 4.2 * len(images)))
        for ax, image, label in zip(np.atleast_1d(axes), images, labels, strict=True):
            ax.imshow(image)
            ax.set_title(label)
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(out / f"montage_{name}.png", dpi=100)
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from medtransfer.bench.build import simulator_of

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="a brainshift build (folder of Dataset*)")
    parser.add_argument("--after", type=Path, required=True, help="another build (the same seed, another simulator)")
    parser.add_argument("--labels", nargs=2, default=None, help="names of the two builds (default: their simulators)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the figures")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    builds = [args.before, args.after]
    names = [n for n in LESION_DATASETS if all((b / n / "dataset.json").is_file() for b in builds)]
    if not names:
        print(f"error: {args.before} and {args.after} share no lesion dataset ({', '.join(LESION_DATASETS)})")
        return 2
    labels = args.labels or [f"simulator {simulator_of(b / names[0])}" for b in builds]
    if labels[0] == labels[1]:
        labels = [f"{labels[0]} ({b.name})" for b in builds]
    results = {name: {label: lesion_table(b / name) for label, b in zip(labels, builds, strict=True)} for name in names}
    args.out.mkdir(parents=True, exist_ok=True)
    plot(results, labels, builds, args.out)
    text = json.dumps(
        {"builds": {lb: str(b) for lb, b in zip(labels, builds, strict=True)}, "datasets": results}, indent=2
    )
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
