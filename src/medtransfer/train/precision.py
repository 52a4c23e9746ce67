"""Device and precision choice: the fast paths (bf16 autocast + channels_last on CPUs with native bf16, AMP on CUDA).

On CPUs without native bf16 (AVX2-only x86, e.g. AMD EPYC before Zen 4) bf16 is emulated and >10x slower
than fp32, so ``auto`` trains in fp32 there; fp32 still gets channels_last when the model is BatchNorm-only,
because oneDNN's NHWC convolutions are 1.1-1.5x faster than NCHW ones on such CPUs (measured by
``benchmarks/train_throughput.py``), whereas InstanceNorm/GroupNorm layers are slower in channels_last.  With
AVX512-BF16 or AMX ``auto`` trains in bf16: 2.3x as fast as fp32 on a Zen 4, and as accurate within seed noise
(``benchmarks/precision_accuracy.py``; the README's performance section has the numbers).  The environment
variable ``MEDTRANSFER_PRECISION`` pins what ``auto`` means (the test suite pins fp32, so that learning tests give
the same numbers on every CPU)."""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError
from .config import Precision, pinned_precision


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; an unavailable CUDA request is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"unknown device {name!r}; allowed: auto, cpu, cuda, cuda:N") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        present = ", ".join(["auto", "cpu", "cuda", *(f"cuda:{i}" for i in range(count))])
        raise ConfigError(f"device {name!r} requested but this machine has {count} CUDA device(s); allowed: {present}")
    return device


# oneDNN's ISA caps (ONEDNN_MAX_CPU_ISA) that leave out its bf16 instructions: bf16 is emulated under them.
_ONEDNN_ISAS_WITHOUT_BF16 = frozenset(
    {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}
)


def cpu_flags() -> str | None:
    """The text of ``/proc/cpuinfo`` (its ``flags`` lines name the CPU's features), ``None`` where there is none."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return None


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matrix units (AMX-BF16 or AVX512-BF16) and oneDNN may use them.

    ``ONEDNN_MAX_CPU_ISA`` set to an instruction set without bf16 (``AVX2``, ``AVX512_CORE``, ...) caps oneDNN
    below its bf16 kernels, so the answer is then False whatever the CPU has.  Cached: set both before the
    first call (tests call ``cpu_has_fast_bf16.cache_clear()``).
    """
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper() in _ONEDNN_ISAS_WITHOUT_BF16:
        return False
    flags = cpu_flags()
    if flags is None:  # no /proc/cpuinfo (not Linux): ask PyTorch
        return torch.backends.cpu.get_cpu_capability() in ("AVX512_BF16", "AMX")
    return "amx_bf16" in flags or "avx512_bf16" in flags


_CHANNELS_LAST_UNFRIENDLY = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.GroupNorm, nn.LayerNorm)


def prefers_channels_last(model: nn.Module | None) -> bool:
    """True when ``model`` has convolutions and no norm layer that is slower in channels_last on CPU.

    BatchNorm (and no norm) runs fastest in channels_last with oneDNN; instance, group and layer norms have
    no fast NHWC training kernels on CPU (a 2D InstanceNorm U-Net steps ~1.3x slower in channels_last).
    """
    if model is None:
        return False
    modules = list(model.modules())
    has_conv = any(isinstance(m, nn.modules.conv._ConvNd) for m in modules)
    return has_conv and not any(isinstance(m, _CHANNELS_LAST_UNFRIENDLY) for m in modules)


@dataclass(frozen=True)
class PrecisionPlan:
    """What the trainer and predictor do for speed.

    Attributes:
        device: where the model runs.
        autocast_dtype: ``torch.bfloat16`` / ``torch.float16`` for autocast, ``None`` for fp32.
        channels_last: use the channels-last memory format for 4D/5D tensors.
        grad_scaling: use a gradient scaler (fp16 on CUDA only).
    """

    device: torch.device
    autocast_dtype: torch.dtype | None
    channels_last: bool
    grad_scaling: bool

    @property
    def name(self) -> str:
        """``fp32``, ``bf16`` or ``fp16``."""
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.autocast_dtype]

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of this plan (a no-op for fp32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)


def auto_precision(device: torch.device) -> Precision:
    """What ``auto`` stands for on ``device``: ``MEDTRANSFER_PRECISION`` where set, else the fastest accurate one.

    CUDA: bf16 where supported, fp16 (with a gradient scaler) otherwise.  CPU: bf16 with native bf16 units
    (:func:`cpu_has_fast_bf16`), fp32 otherwise.
    """
    pinned = pinned_precision()
    if pinned is not None:
        return pinned
    if device.type == "cuda":
        return Precision.BF16 if torch.cuda.is_bf16_supported() else Precision.FP16
    return Precision.BF16 if cpu_has_fast_bf16() else Precision.FP32


def resolve_precision(
    precision: Precision | str,
    device: torch.device,
    channels_last: bool | None = None,
    model: nn.Module | None = None,
) -> PrecisionPlan:
    """Pick autocast dtype and memory format.

    ``auto`` is what :func:`auto_precision` says; an explicit ``precision`` always wins; ``channels_last``
    overrides the format.  Without an override, the reduced-precision paths use channels_last, and fp32 on CPU
    uses it when ``model`` is given and :func:`prefers_channels_last` (BatchNorm-only conv nets).
    """
    precision = Precision(precision)
    if precision == Precision.AUTO:
        precision = auto_precision(device)
    if precision == Precision.FP16 and device.type != "cuda":
        raise ConfigError("precision fp16 needs CUDA; use bf16 or fp32 on CPU")
    dtype = {Precision.FP32: None, Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}[precision]
    if channels_last is None:
        channels_last = dtype is not None or (device.type == "cpu" and prefers_channels_last(model))
    return PrecisionPlan(
        device=device,
        autocast_dtype=dtype,
        channels_last=bool(channels_last),
        grad_scaling=precision == Precision.FP16,
    )


def to_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``x`` in channels-last format when asked and when it is 4D/5D."""
    if not channels_last:
        return x
    if x.ndim == 4:
        return x.contiguous(memory_format=torch.channels_last)
    if x.ndim == 5:
        return x.contiguous(memory_format=torch.channels_last_3d)
    return x


def model_to_plan(model: torch.nn.Module, plan: PrecisionPlan, spatial_dims: int = 2) -> torch.nn.Module:
    """Move ``model`` to the plan's device and memory format."""
    model = model.to(plan.device)
    if plan.channels_last:
        fmt = torch.channels_last if spatial_dims == 2 else torch.channels_last_3d
        model = model.to(memory_format=fmt)
    return model
