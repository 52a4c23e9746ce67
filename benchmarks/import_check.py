"""Each imported packaged network against its original, on the real Colin27 head at the original's own input.

* ``deepbrain_unet``: the whole head resized to 128^3 and divided by its maximum (deepbrain's ``Extractor.run``);
  the original is the frozen graph ``graph.pb`` evaluated op by op in NumPy (``medtransfer.models.tf_graph``,
  independent of the PyTorch module; TensorFlow is not needed);
* ``deepbet_linknet``: both TorchScript networks of the wheel, ``bbox_model.pt`` on the whole head at 128^3 and
  ``model.pt`` on the brain's bounding box at ``--deepbet-size`` (deepbet: 256^3), normalised as
  ``deepbet.utils.normalize``; the original is ``torch.jit.load`` of the file;
* ``hdbet_unet``: the head at 1.5 mm, z-scored, padded to a multiple of 16; the original is HD-BET's own
  ``Network`` class (``network_architecture.py`` of the wheel) with the fold's state dict, on the (z, y, x) array.

Reports the largest absolute difference of the output probabilities (and the brain fraction, so that a
comparison of two empty outputs is visible).  A network whose wheel is missing is reported as skipped.

Usage:
    python benchmarks/import_check.py [--device auto] [--folds 0 1 2 3 4] [--deepbet-size 256]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from medtransfer.bench.sources import colin27_files
from medtransfer.data.io import load_nifti
from medtransfer.errors import MissingSourceError
from medtransfer.models import create_model
from medtransfer.models.deepbet_linknet import deepbet_state_dict
from medtransfer.models.deepbrain_unet import deepbrain_state_dict
from medtransfer.models.hdbet_unet import hdbet_state_dict, original_hdbet_network
from medtransfer.models.tf_graph import evaluate, read_graph
from medtransfer.pretrain.packaged import PACKAGED_SOURCES, packaged_file

logger = logging.getLogger("import_check")


def _model(name: str, state: dict, device: torch.device) -> torch.nn.Module:
    model = create_model(name, **({"out_channels": 1} if name == "deepbrain_unet" else {}))
    model.load_state_dict(state)
    return model.to(device).eval()


def _summary(got: torch.Tensor | np.ndarray, expected: torch.Tensor | np.ndarray, seconds: float) -> dict:
    got, expected = (np.asarray(torch.as_tensor(a).cpu(), dtype=np.float64) for a in (got, expected))
    return {
        "input_shape": list(got.shape),
        "max_abs_diff": float(np.abs(got - expected).max()),
        "brain_fraction": float((expected > 0.5).mean()),
        "seconds": round(seconds, 1),
    }


def check_deepbrain(head: np.ndarray, device: torch.device) -> dict:
    path = packaged_file(PACKAGED_SOURCES["deepbrain_unet"])
    x = ndimage.zoom(head, [128 / s for s in head.shape], order=1).astype(np.float32)
    x /= x.max()
    start = time.perf_counter()
    expected = evaluate(read_graph(path), "prob", {"img": x[None, ..., None], "training": np.bool_(False)})[0, ..., 0]
    model = _model("deepbrain_unet", deepbrain_state_dict(path), device)
    with torch.no_grad():
        got = torch.sigmoid(model(torch.from_numpy(x)[None, None].to(device)))[0, 0]
    return {"reference": "graph.pb evaluated in NumPy", **_summary(got, expected, time.perf_counter() - start)}


def _deepbet_normalize(x: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    x = ((x - low) / (high - low)).clamp(0, 1)
    return 0.226 * (x - x.mean()) / x.std() + 0.449


def _brain_box(prob: torch.Tensor, shape: tuple[int, ...], margin: float = 0.1) -> tuple[slice, ...]:
    """deepbet's ``get_bbox_with_margin`` (without its largest-component step: the check compares networks)."""
    mask = (prob > 0.5).float()
    box = []
    for axis, size in enumerate(shape):
        hits = torch.where(mask.mean([a for a in range(3) if a != axis]) > 0.02)[0]
        scale = size / mask.shape[axis]
        centre, extent = (
            scale * (hits.max() + 1 + hits.min()) / 2,
            scale * (1 + 2 * margin) * (hits.max() + 1 - hits.min()),
        )
        box.append(slice(max(0, int(centre - extent / 2)), min(size, int(centre + extent / 2))))
    return tuple(box)


def check_deepbet(head: np.ndarray, device: torch.device, size: int) -> dict:
    path = packaged_file(PACKAGED_SOURCES["deepbet_linknet"])
    x = torch.from_numpy(head).to(device)
    small = F.interpolate(x[None, None], (128,) * 3, mode="nearest-exact")[0, 0]
    low, high = small.quantile(0.005), small.quantile(0.995)
    results = {}
    for file, inputs in (("bbox_model.pt", small), ("model.pt", None)):
        weights = path.with_name(file)
        original = torch.jit.load(str(weights), map_location=device).eval()
        model = _model("deepbet_linknet", deepbet_state_dict(weights), device)
        if inputs is None:  # the brain mask network reads the bounding box found by the first one
            box = _brain_box(results["bbox_model.pt"]["probability"], tuple(x.shape))
            inputs = F.interpolate(x[box][None, None], (size,) * 3, mode="nearest-exact")[0, 0]
        start = time.perf_counter()
        with torch.no_grad():
            expected = original(_deepbet_normalize(inputs, low, high)[None, None])[0, 1]
            got = model(_deepbet_normalize(inputs, low, high)[None, None]).softmax(1)[0, 1]
        results[file] = {"probability": expected, **_summary(got, expected, time.perf_counter() - start)}
    for entry in results.values():
        del entry["probability"]
    return {"reference": "torch.jit.load of the wheel's TorchScript files", **results}


def check_hdbet(head: np.ndarray, device: torch.device, folds: list[int]) -> dict:
    path = packaged_file(PACKAGED_SOURCES["hdbet_unet"])
    x = ndimage.zoom(head, 1 / 1.5, order=3).astype(np.float32)  # 1 mm -> 1.5 mm (HD-BET: cubic)
    x = (x - x.mean()) / x.std()
    x = np.pad(x, [(0, -s % 16) for s in x.shape], constant_values=float(x.min()))
    tensor = torch.from_numpy(x)[None, None].to(device)
    original = original_hdbet_network(path.parent.parent).to(device)
    results = {}
    for fold in folds:
        weights = path.with_name(f"{fold}.model")
        original.load_state_dict(torch.load(weights, map_location=device, weights_only=True))
        state, _ = hdbet_state_dict(weights)
        model = _model("hdbet_unet", state, device)
        start = time.perf_counter()
        with torch.no_grad():
            expected = original(tensor.permute(0, 1, 4, 3, 2)).softmax(1).permute(0, 1, 4, 3, 2)[0, 1]
            got = model(tensor).softmax(1)[0, 1]
        results[f"fold{fold}"] = _summary(got, expected, time.perf_counter() - start)
    return {"reference": "HD-BET's Network class (network_architecture.py) on the (z, y, x) array", **results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--folds", type=int, nargs="+", default=[0], help="HD-BET folds to check (0-4)")
    parser.add_argument("--deepbet-size", type=int, default=None, help="model.pt input side (default 256, CPU 128)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else args.device)
    if device.type == "auto":
        device = torch.device("cpu")
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # compare in fp32
    head = load_nifti(colin27_files().t1, dtype=np.float32).array  # RAS, 1 mm
    size = args.deepbet_size or (256 if device.type == "cuda" else 128)
    checks = {
        "deepbrain_unet": lambda: check_deepbrain(head, device),
        "deepbet_linknet": lambda: check_deepbet(head, device, size),
        "hdbet_unet": lambda: check_hdbet(head, device, args.folds),
    }
    report = {"head": str(Path(colin27_files().t1)), "device": str(device), "networks": {}}
    for name, check in checks.items():
        try:
            report["networks"][name] = check()
        except MissingSourceError as err:
            report["networks"][name] = {"skipped": str(err)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    from medtransfer.cli import run_script

    run_script(main)
