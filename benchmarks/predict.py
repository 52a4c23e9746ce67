"""Prediction speed on a 1 mm head (181x217x181): medtransfer's slice-wise predictor vs MONAI's sliding window.

Both run the same 2D network (medtransfer's default U-Net, random weights; speed does not depend on them) over
every axial slice of the Colin27 head (``/usr/share/mricron/templates/ch2.nii.gz``; falls back to a synthetic
volume of the same shape when the Debian package is missing):

* ``medtransfer``: :func:`medtransfer.infer.predict_volume` (whole slices, batched, padded to the network's
  divisor), precision ``auto``; and the full ``Predictor.predict`` (preprocessing + restore to the input grid);
* ``monai_sliceinferer``: ``monai.inferers.SliceInferer`` (``sliding_window_inference`` per slice) with a 128x128
  window (the training patch), MONAI's default overlap 0.25, and with one whole-slice window.

Usage:
    python benchmarks/predict.py [--repeats 2] [--batch 16]

Prints one JSON object with volumes/s and ratios.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from medtransfer.cli import positive_int
from medtransfer.data.io import Volume, load_nifti
from medtransfer.data.preprocess import PreprocessConfig
from medtransfer.infer import Predictor, predict_volume
from medtransfer.models import create_model
from medtransfer.train import resolve_precision
from medtransfer.train.precision import model_to_plan

logger = logging.getLogger("predict_benchmark")
HEAD = Path("/usr/share/mricron/templates/ch2.nii.gz")


def head_volume() -> Volume:
    if HEAD.is_file():
        return load_nifti(HEAD, dtype=np.float32)
    rng = np.random.default_rng(0)
    return Volume(rng.random((181, 217, 181), dtype=np.float32), np.eye(4))


def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=positive_int, default=2)
    parser.add_argument("--batch", type=positive_int, default=16)
    parser.add_argument("--skip-whole-slice", action="store_true", help="skip MONAI's whole-slice-window variant")
    args = parser.parse_args()
    from monai.inferers import SliceInferer

    volume = head_volume()
    image = torch.from_numpy(np.ascontiguousarray(volume.array, dtype=np.float32))[None]  # (1, X, Y, Z)
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    net = create_model("unet", spatial_dims=2, in_channels=1, out_channels=2)
    plan = resolve_precision("auto", cpu, model=net)  # what the predictor picks: channels_last for BatchNorm nets
    model = model_to_plan(net, plan).eval()
    fp32_model = create_model("unet", spatial_dims=2, in_channels=1, out_channels=2).eval()
    fp32_model.load_state_dict(model.state_dict())

    def ours():
        return predict_volume(model, image, spatial_dims=2, slice_axis=2, divisor=16, batch_size=args.batch, plan=plan)

    predictor = Predictor(model, PreprocessConfig(), [0, 1], 1, 2, plan, {"divisor": 16, "batch_size": args.batch})

    def ours_full():
        return predictor.predict(volume)

    batch = image[None]  # (1, 1, X, Y, Z), slices along the last axis

    def monai(roi):
        inferer = SliceInferer(roi_size=roi, sw_batch_size=args.batch, spatial_dim=2, progress=False)
        with torch.no_grad():
            return lambda: inferer(batch, fp32_model)

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    runs = {
        f"medtransfer_predict_volume({plan.name})": ours,
        f"medtransfer_full_pipeline({plan.name})": ours_full,
        "monai_sliceinferer_roi128_overlap0.25": _no_grad(monai((128, 128))),
    }
    if not args.skip_whole_slice:
        runs["monai_sliceinferer_whole_slice"] = _no_grad(monai(tuple(image.shape[1:3])))
    times = {}
    for name, fn in runs.items():
        logger.info("timing %s", name)
        times[name] = best_time(fn, args.repeats)
    ref = times["monai_sliceinferer_roi128_overlap0.25"]
    report = {
        "volume_shape": list(volume.array.shape),
        "source": str(HEAD) if HEAD.is_file() else "synthetic",
        "threads": torch.get_num_threads(),
        "runs": {
            k: {"seconds": round(t, 2), "volumes_per_s": round(1 / t, 4), "speedup_vs_monai_roi128": round(ref / t, 2)}
            for k, t in times.items()
        },
    }
    print(json.dumps(report, indent=2))


def _no_grad(fn):
    def run():
        with torch.no_grad():
            return fn()

    return run


if __name__ == "__main__":
    from medtransfer.cli import run_script

    run_script(main)
