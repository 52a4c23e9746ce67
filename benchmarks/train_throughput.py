"""Training-step throughput: medtransfer's default 2D U-Net vs MONAI BasicUNet, plus GFLOP/s vs a bf16 matmul peak.

Both networks (~1.9-2.0M parameters, four down-samplings) train on the same batch of 128x128 slices with SGD.
MONAI runs as its defaults give it (InstanceNorm, fp32, NCHW); medtransfer runs the fast path its trainer picks
on this machine (``--precision auto``: bf16 autocast + channels_last with BatchNorm on CPUs with AMX/AVX512-BF16,
fp32 elsewhere) and, for reference, the explicit fp32 and bf16 paths.  The achieved GFLOP/s of a step (FLOPs
counted by ``torch.utils.flop_counter``) is compared with a bf16 matrix-multiply peak measured in the same run.

Usage:
    python benchmarks/train_throughput.py [--batch 32] [--steps 10] [--size 128]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from medtransfer.models import create_model
from medtransfer.train import TrainConfig, create_loss, resolve_precision
from medtransfer.train.precision import cpu_has_fast_bf16, model_to_plan, to_memory_format

logger = logging.getLogger("train_throughput")


def matmul_peak(dtype: torch.dtype, n: int = 1024, repeats: int = 5) -> float:
    """Best-of-``repeats`` GFLOP/s of an ``n x n`` matrix multiply in ``dtype``."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def step_fn(model: nn.Module, plan, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor):
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
    x = to_memory_format(x, plan.channels_last)

    def step() -> float:
        with plan.autocast():
            logits = model(x)
        loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def measure(step, steps: int) -> float:
    """Seconds per step: median of ``steps`` timed steps after two warm-up steps."""
    step(), step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def step_flops(step) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument(
        "--all-precisions", action="store_true", help="also time bf16 on CPUs without native bf16 (emulated: slow)"
    )
    args = parser.parse_args()
    from monai.networks.nets import BasicUNet

    torch.manual_seed(0)
    x = torch.randn(args.batch, 1, args.size, args.size)
    y = (x > 0.5).long()
    loss_fn = create_loss("ce")
    cpu = torch.device("cpu")
    results = {}
    fp32 = resolve_precision("fp32", cpu)
    monai = BasicUNet(spatial_dims=2, in_channels=1, out_channels=2)
    monai_step = step_fn(monai, fp32, loss_fn, x, y)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logger.info("timing MONAI BasicUNet (fp32)")
    results["monai_basicunet_fp32"] = (measure(monai_step, args.steps), step_flops(monai_step))
    auto = TrainConfig(precision="auto", device="cpu")
    names = ["auto", "fp32"] + (["bf16"] if cpu_has_fast_bf16() or args.all_precisions else [])
    for name in names:
        plan = resolve_precision(name, cpu, auto.channels_last)
        logger.info("timing medtransfer unet (%s -> %s, channels_last=%s)", name, plan.name, plan.channels_last)
        model = model_to_plan(create_model("unet", spatial_dims=2, in_channels=1, out_channels=2), plan)
        step = step_fn(model, plan, loss_fn, x, y)
        results[f"medtransfer_unet_{name}" + (f"({plan.name})" if name == "auto" else "")] = (
            measure(step, args.steps),
            step_flops(step),
        )
    logger.info("measuring matmul peaks")
    peak_bf16, peak_fp32 = matmul_peak(torch.bfloat16), matmul_peak(torch.float32)
    monai_rate = args.batch / results["monai_basicunet_fp32"][0]
    report = {
        "batch": args.batch,
        "image_size": [args.size, args.size],
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_has_fast_bf16": cpu_has_fast_bf16(),
        "bf16_matmul_peak_gflops": round(peak_bf16, 1),
        "fp32_matmul_peak_gflops": round(peak_fp32, 1),
        "runs": {},
    }
    for name, (seconds, flops) in results.items():
        report["runs"][name] = {
            "images_per_s": round(args.batch / seconds, 2),
            "step_ms": round(seconds * 1e3, 1),
            "gflop_per_step": round(flops / 1e9, 2),
            "achieved_gflops": round(flops / seconds / 1e9, 1),
            "fraction_of_bf16_peak": round(flops / seconds / 1e9 / peak_bf16, 3),
            "fraction_of_fp32_peak": round(flops / seconds / 1e9 / peak_fp32, 3),
            "speedup_vs_monai": round(args.batch / seconds / monai_rate, 2),
        }
    auto_key = next(k for k in report["runs"] if k.startswith("medtransfer_unet_auto"))
    report["targets"] = {
        "speedup_vs_monai_auto": report["runs"][auto_key]["speedup_vs_monai"],
        "speedup_target": 4.0,
        "fraction_of_bf16_peak_auto": report["runs"][auto_key]["fraction_of_bf16_peak"],
        "fraction_target": 0.15,
        "note": "without native bf16 (no AMX/AVX512-BF16) the bf16 peak is emulated and meaningless; "
        "compare with the fp32 peak instead",
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
