"""Training-step throughput: medtransfer's default 2D U-Net vs MONAI BasicUNet, plus GFLOP/s vs matmul peaks.

Both networks (~1.9-2.0M parameters, four down-samplings) train with SGD-Nesterov on the same batch of 128x128
slices, in one process, with the variants timed *interleaved* (round-robin, one step each per round) so that load
from other processes hits them alike; every ratio against MONAI is the median of per-round ratios.

Variants:
    monai_basicunet_fp32            MONAI as its defaults give it (InstanceNorm, fp32, NCHW): the reference.
    medtransfer_unet_fp32_nchw      plain fp32, NCHW (the trainer's path before channels_last for fp32).
    medtransfer_unet_fp32_channels_last   fp32 with oneDNN NHWC convolutions.
    medtransfer_unet_fp32_channels_last_compiled   the same step under ``torch.compile`` (inductor).
    medtransfer_trainer_default     ``Trainer.train_step`` with the default TrainConfig (``precision: auto``,
                                    ``channels_last: null``, ``compile: false``): what a user gets.
    medtransfer_unet_bf16_channels_last   bf16 autocast; only timed with native bf16 or ``--all-precisions``.
    monai_basicunet_bf16            MONAI under the same bf16 autocast (NCHW): the fair reduced-precision peer.

``--device cuda`` times the same steps on the GPU (bf16 autocast is then always timed, MONAI in bf16 too; matmul
peaks are measured on the GPU with 8192-sized matrices; no profile).

The achieved GFLOP/s (FLOPs of convolutions and matmuls counted by ``torch.utils.flop_counter``) is compared with
fp32 and bf16 matrix-multiply peaks measured in the same run; the bf16 peak is only a meaningful target on CPUs
with native bf16 (AMX / AVX512-BF16).  ``--profile`` adds where the time of the default step goes (torch.profiler,
self time by operator class) and the speed-up that would remain if everything but the convolutions were free.

On a machine shared with other busy processes, OpenMP's spin-waiting makes 2 threads several times *slower*
than 1 (a thread spins at each barrier while its partner is descheduled); ``OMP_WAIT_POLICY=PASSIVE`` (set before
the process starts; reported in the JSON) avoids that.

Usage:
    [OMP_WAIT_POLICY=PASSIVE] python benchmarks/train_throughput.py [--batch 32] [--rounds 5] [--size 128]
        [--threads 1 2] [--profile] [--no-compile] [--all-precisions] [--device cpu|cuda]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from medtransfer.cli import positive_int
from medtransfer.models import create_model
from medtransfer.train import StepBatchSampler, TrainBatches, TrainConfig, Trainer, create_loss
from medtransfer.train.compile import compile_model
from medtransfer.train.precision import (
    PrecisionPlan,
    cpu_has_fast_bf16,
    model_to_plan,
    resolve_precision,
    to_memory_format,
)

logger = logging.getLogger("train_throughput")
Step = Callable[[], float]
OP_CLASSES = {  # operator-name fragment -> class, first match wins (self time, so nothing is counted twice)
    "convolution": "convolution",
    "conv": "convolution",
    "batch_norm": "batch_norm",
    "instance_norm": "norm_other",
    "relu": "activation",
    "threshold": "activation",
    "clamp": "activation",
    "leaky": "activation",
    "max_pool": "pooling",
    "cat": "copies",
    "copy": "copies",
    "fill": "copies",
    "zero": "copies",
    "contiguous": "copies",
    "softmax": "loss",
    "nll": "loss",
    "sgd": "optimizer",
    "_foreach": "optimizer",
}


def matmul_peak(dtype: torch.dtype, device: torch.device, repeats: int = 5) -> float:
    """Best-of-``repeats`` GFLOP/s of an ``n x n`` matrix multiply in ``dtype`` (n = 1024 on CPU, 8192 on GPU)."""
    n = 8192 if device.type == "cuda" else 1024
    a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work (timings on CUDA); nothing on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_step(model: nn.Module, plan: PrecisionPlan, x: torch.Tensor, y: torch.Tensor, compiled: bool) -> Step:
    """One SGD-Nesterov step of ``model`` on ``(x, y)`` under ``plan`` (optionally through torch.compile)."""
    model = model_to_plan(model, plan)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
    network = compile_model(model) if compiled else model
    loss_fn = create_loss("ce")
    x, y = to_memory_format(x.to(plan.device), plan.channels_last), y.to(plan.device)

    def step() -> float:
        with plan.autocast():
            logits = network(x)
        loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    step.model = model  # for FLOP counting in eager mode
    return step


def trainer_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> tuple[Step, Trainer]:
    """``Trainer.train_step`` with the default TrainConfig (CE loss) on the fixed batch."""
    config = TrainConfig(device=str(device), loss="ce", batch_size=len(x), progress=False, lr=1e-3)
    items = [{"image": image, "label": label} for image, label in zip(x, y, strict=True)]
    trainer = Trainer(model, config, TrainBatches(items, StepBatchSampler(len(items), len(items), 1, seed=0)))
    batch = {"image": x, "label": y}
    trainer.network.train()

    def step() -> float:
        return float(trainer.train_step(batch)["loss"])

    step.model = trainer.model
    return step, trainer


def step_flops(step: Step, x: torch.Tensor, y: torch.Tensor) -> int:
    """FLOPs of one eager forward + backward of the step's model (torch.compile hides ops from the counter)."""
    model, loss_fn = step.model, create_loss("ce")
    device = next(model.parameters()).device
    x, y = x.to(device).contiguous(memory_format=torch.channels_last), y.to(device)
    with FlopCounterMode(display=False) as counter:
        loss_fn(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def build_variants(args: argparse.Namespace, x: torch.Tensor, y: torch.Tensor) -> tuple[dict[str, Step], dict]:
    """Name -> step function of every variant, plus facts about the trainer's default plan."""
    from monai.networks.nets import BasicUNet

    device = torch.device(args.device)
    fp32_nchw = resolve_precision("fp32", device, channels_last=False)
    fp32_cl = resolve_precision("fp32", device, channels_last=True)
    bf16_cl = resolve_precision("bf16", device)

    def unet() -> nn.Module:
        torch.manual_seed(0)
        return create_model("unet", spatial_dims=2, in_channels=1, out_channels=2)

    torch.manual_seed(0)
    variants = {
        "monai_basicunet_fp32": plain_step(
            BasicUNet(spatial_dims=2, in_channels=1, out_channels=2), fp32_nchw, x, y, False
        ),
        "medtransfer_unet_fp32_nchw": plain_step(unet(), fp32_nchw, x, y, False),
        "medtransfer_unet_fp32_channels_last": plain_step(unet(), fp32_cl, x, y, False),
    }
    if not args.no_compile:
        variants["medtransfer_unet_fp32_channels_last_compiled"] = plain_step(unet(), fp32_cl, x, y, True)
    default_step, trainer = trainer_step(unet(), x, y, device)
    variants["medtransfer_trainer_default"] = default_step
    if device.type == "cuda" or cpu_has_fast_bf16() or args.all_precisions:
        variants["medtransfer_unet_bf16_channels_last"] = plain_step(unet(), bf16_cl, x, y, False)
    if device.type == "cuda":
        torch.manual_seed(0)
        bf16_nchw = resolve_precision("bf16", device, channels_last=False)
        monai_bf16 = BasicUNet(spatial_dims=2, in_channels=1, out_channels=2)
        variants["monai_basicunet_bf16"] = plain_step(monai_bf16, bf16_nchw, x, y, False)
    default = {
        "precision": trainer.plan.name,
        "channels_last": trainer.plan.channels_last,
        "compile": trainer.config.compile,
    }
    return variants, default


def time_interleaved(variants: dict[str, Step], rounds: int) -> dict[str, list[float]]:
    """Seconds per step of every variant in each of ``rounds`` round-robin rounds (after warm-up)."""
    for name, step in variants.items():
        start = time.perf_counter()
        step(), step()  # warm-up (and compilation for the compiled variant)
        logger.info("warm-up of %s: %.1f s", name, time.perf_counter() - start)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(rounds):
        for name, step in variants.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
        logger.info("round %d/%d done", r + 1, rounds)
    return times


def profile_step(step: Step, monai_seconds: float) -> dict:
    """Self CPU time per operator class over two steps, and the conv-only bound of the speed-up over MONAI."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(), step()
    per_class: dict[str, float] = {}
    for event in prof.key_averages():
        if not event.key.startswith("aten::"):
            continue
        name = event.key.lower()
        group = next((c for frag, c in OP_CLASSES.items() if frag in name), "other_aten")
        per_class[group] = per_class.get(group, 0.0) + event.self_cpu_time_total / 2e6
    total = sum(per_class.values())
    return {
        "seconds_per_step_by_class": {k: round(v, 3) for k, v in sorted(per_class.items(), key=lambda kv: -kv[1])},
        "share_by_class": {k: round(v / total, 3) for k, v in sorted(per_class.items(), key=lambda kv: -kv[1])},
        "max_speedup_vs_monai_if_only_convolutions_cost": round(monai_seconds / per_class.get("convolution", total), 2),
    }


def run(args: argparse.Namespace, threads: int) -> dict:
    """The report for one thread count."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 1, args.size, args.size)
    y = (x > 0.5).long()
    variants, default = build_variants(args, x, y)
    load_before = os.getloadavg()
    times = time_interleaved(variants, args.rounds)
    load_after = os.getloadavg()
    device = torch.device(args.device)
    peak_fp32, peak_bf16 = matmul_peak(torch.float32, device), matmul_peak(torch.bfloat16, device)
    flops = {name: step_flops(step, x, y) for name, step in variants.items()}
    monai = times["monai_basicunet_fp32"]
    runs = {}
    for name, seconds in times.items():
        step_s = statistics.median(seconds)
        gflops = flops[name] / step_s / 1e9
        runs[name] = {
            "images_per_s": round(args.batch / step_s, 2),
            "step_ms": round(step_s * 1e3, 1),
            "step_ms_per_round": [round(s * 1e3) for s in seconds],
            "gflop_per_step": round(flops[name] / 1e9, 2),
            "achieved_gflops": round(gflops, 1),
            "fraction_of_fp32_peak": round(gflops / peak_fp32, 3),
            "fraction_of_bf16_peak": round(gflops / peak_bf16, 3),
            "speedup_vs_monai": round(statistics.median(m / s for m, s in zip(monai, seconds, strict=True)), 2),
        }
        if "monai_basicunet_bf16" in times:  # on CUDA: against MONAI under the same bf16 autocast too
            ratios = (m / s for m, s in zip(times["monai_basicunet_bf16"], seconds, strict=True))
            runs[name]["speedup_vs_monai_bf16"] = round(statistics.median(ratios), 2)
    default_run = runs["medtransfer_trainer_default"]
    best = max((n for n in runs if n.startswith("medtransfer")), key=lambda n: runs[n]["speedup_vs_monai"])
    vs_bf16 = {"speedup_vs_monai_bf16_trainer_default": default_run.get("speedup_vs_monai_bf16")}
    needed = 4.0 * flops["medtransfer_trainer_default"] / statistics.median(monai) / 1e9
    report = {
        "threads": threads,
        "load_average_1min_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "trainer_default_plan": default,
        "fp32_matmul_peak_gflops": round(peak_fp32, 1),
        "bf16_matmul_peak_gflops": round(peak_bf16, 1),
        "runs": runs,
        "targets": {
            "speedup_vs_monai_trainer_default": default_run["speedup_vs_monai"],
            "speedup_vs_monai_best_variant": [best, runs[best]["speedup_vs_monai"]],
            **({} if vs_bf16["speedup_vs_monai_bf16_trainer_default"] is None else vs_bf16),
            "speedup_target": 4.0,
            "fraction_of_bf16_peak_trainer_default": default_run["fraction_of_bf16_peak"],
            "fraction_of_fp32_peak_trainer_default": default_run["fraction_of_fp32_peak"],
            "fraction_target": 0.15,
            "gflops_needed_for_4x_monai": round(needed, 1),
            "fraction_of_fp32_peak_needed_for_4x_monai": round(needed / peak_fp32, 2),
        },
    }
    if args.profile:
        logger.info("profiling the trainer's default step")
        report["profile_trainer_default"] = profile_step(
            variants["medtransfer_trainer_default"], statistics.median(monai)
        )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=positive_int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timed steps per variant")
    parser.add_argument("--size", type=positive_int, default=128)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the steps run")
    parser.add_argument("--threads", type=positive_int, nargs="+", default=[torch.get_num_threads()])
    parser.add_argument("--profile", action="store_true", help="add a torch.profiler breakdown of the default step")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    parser.add_argument(
        "--all-precisions", action="store_true", help="also time bf16 on CPUs without native bf16 (emulated: slow)"
    )
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here")
    if args.device == "cuda" and args.profile:
        parser.error("--profile times CPU operators only; leave it out with --device cuda")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    native_bf16 = cpu_has_fast_bf16()
    report = {
        "batch": args.batch,
        "image_size": [args.size, args.size],
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_has_native_bf16": native_bf16,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset (libgomp spins)"),
        "bf16_peak_target_meaningful": native_bf16,
        "note": "with native bf16 (AMX / AVX512-BF16) the trainer's auto precision is bf16 and the bf16 peak is the "
        "target; without it (as on AVX2-only CPUs) bf16 is emulated, slower than fp32, auto trains in fp32, and the "
        "fraction of the fp32 peak is the meaningful efficiency figure",
        "by_threads": [run(args, threads) for threads in args.threads],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    from medtransfer.cli import run_script

    run_script(main)
