"""Memory format per norm layer: one U-Net training step in NCHW against channels_last, fp32 and bf16, on this CPU.

What it checks: the trainer's default format (``resolve_precision`` with the model: in fp32 on CPU channels_last
only for BatchNorm-only conv nets, in bf16 channels_last for every model), reported as ``trainer_default``.  For
each norm (batch, instance) and each U-Net (2D: batch of 128x128 slices; 3D: batch of 48^3 patches), the two
formats are timed interleaved (round r times NCHW then channels_last, the order flipping every round) and the
median of the per-round ratios is reported, so that load from other jobs hits both alike (the JSON records the
load average: ratios taken under load vary by +-10 %).  bf16 runs only where the CPU has native bf16 (AMX or
AVX512-BF16) unless ``--all-precisions``.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/channels_last_norms.py [--threads 1] [--rounds 6] [--json OUT]

Prints JSON: per (dims, norm, precision) the median seconds per step of each format, ``nchw_over_channels_last``
(> 1: channels_last is faster) and what the trainer picks for that model (``trainer_default``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from medtransfer.models import create_model
from medtransfer.train.precision import cpu_has_fast_bf16, resolve_precision
from medtransfer.train.run_env import cpu_model

SHAPES = {2: (16, 1, 128, 128), 3: (2, 1, 48, 48, 48)}


def _step(model, opt, x, y, dtype) -> float:
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        loss = torch.nn.functional.cross_entropy(model(x).float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - start


def measure(dims: int, norm: str, precision: str, rounds: int, warmup: int = 2) -> dict:
    """Median step time of each format and the median per-round ratio NCHW / channels_last."""
    dtype = torch.bfloat16 if precision == "bf16" else None
    fmt = torch.channels_last if dims == 2 else torch.channels_last_3d
    shape = SHAPES[dims]
    variants = {}
    for name in ("nchw", "channels_last"):
        torch.manual_seed(0)
        model = create_model("unet", spatial_dims=dims, features=16, depth=4, norm=norm, in_channels=1, out_channels=2)
        x = torch.randn(*shape)
        if name == "channels_last":
            model, x = model.to(memory_format=fmt), x.contiguous(memory_format=fmt)
        y = torch.randint(0, 2, (shape[0], *shape[2:]))
        variants[name] = (model, torch.optim.Adam(model.parameters(), 1e-3), x, y)
    times: dict[str, list[float]] = {"nchw": [], "channels_last": []}
    for r in range(warmup + rounds):
        order = ["nchw", "channels_last"] if r % 2 == 0 else ["channels_last", "nchw"]
        for name in order:
            t = _step(*variants[name], dtype)
            if r >= warmup:
                times[name].append(t)
    ratios = [a / b for a, b in zip(times["nchw"], times["channels_last"], strict=True)]
    plan = resolve_precision(precision, torch.device("cpu"), model=variants["nchw"][0])
    return {
        "dims": dims,
        "norm": norm,
        "precision": precision,
        "batch_shape": list(shape),
        "nchw_s": round(statistics.median(times["nchw"]), 4),
        "channels_last_s": round(statistics.median(times["channels_last"]), 4),
        "nchw_over_channels_last": round(statistics.median(ratios), 3),
        "trainer_default": "channels_last" if plan.channels_last else "nchw",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=6, help="timed steps per format (interleaved)")
    parser.add_argument("--all-precisions", action="store_true", help="also bf16 where it is emulated (slow)")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    if args.threads < 1 or args.rounds < 1:
        parser.error("--threads and --rounds must be at least 1")
    torch.set_num_threads(args.threads)
    load_before = round(os.getloadavg()[0], 2)
    precisions = ["fp32"] + (["bf16"] if cpu_has_fast_bf16() or args.all_precisions else [])
    rows = [
        measure(dims, norm, precision, args.rounds)
        for dims in (2, 3)
        for norm in ("batch", "instance")
        for precision in precisions
    ]
    report = {
        "cpu_model": cpu_model(),
        "cpu_has_native_bf16": cpu_has_fast_bf16(),
        "torch": torch.__version__,
        "threads": args.threads,
        "rounds": args.rounds,
        "load_average_1min_before_after": [load_before, round(os.getloadavg()[0], 2)],
        "results": rows,
    }
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
