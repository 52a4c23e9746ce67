"""``torch.compile`` for training, with checkpoints that stay interchangeable with eager models.

:func:`compile_model` returns a ``torch.compile`` wrapper that the trainer uses only to *run* the training step;
checkpoints, the optimiser and validation keep using the plain module, so ``state_dict`` keys never get the
wrapper's ``_orig_mod.`` prefix and a checkpoint of a compiled run loads into an eager model (predict,
fine-tuning).  Checkpoints written elsewhere from a wrapper's ``state_dict`` can be fixed with
:func:`strip_compile_prefix`.  (``nn.Module.compile()`` in place is not used: in torch 2.13 it silently
compiles nothing for modules whose ``forward`` lives in torch itself, such as ``nn.Sequential``, pytorch#150915.)

Inductor fuses the elementwise work around the convolutions (BatchNorm statistics and normalisation, ReLU and
their backward passes) into generated C++ loops; convolutions stay oneDNN calls.  On a 2-core AVX2 CPU this
gains only 4-9% per step for the default 2D U-Net (convolutions are ~80% of the step) at a cost of about a
minute of compilation per new input shape, which is why :class:`TrainConfig` leaves it off by
default (``compile: true`` turns it on); see ``benchmarks/train_throughput.py``.

Example:
    >>> from torch import nn
    >>> model = nn.Conv2d(1, 2, 3)
    >>> compiled = compile_model(model)  # compiles lazily at the first call
    >>> list(strip_compile_prefix(compiled.state_dict())) == list(model.state_dict())
    True
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

COMPILE_PREFIX = "_orig_mod."


@functools.cache
def compiler_available() -> bool:
    """True when inductor can build CPU kernels (it needs a C++ compiler such as ``g++``)."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception:  # noqa: BLE001 - any failure means inductor cannot build CPU kernels here
        return False
    return True


def is_compiled(model: nn.Module) -> bool:
    """True when ``model`` is a ``torch.compile`` wrapper (or was compiled in place with ``nn.Module.compile``)."""
    from torch._dynamo.eval_frame import OptimizedModule

    return isinstance(model, OptimizedModule) or getattr(model, "_compiled_call_impl", None) is not None


def compile_model(model: nn.Module, *, mode: str | None = None, dynamic: bool | None = None) -> nn.Module:
    """A ``torch.compile`` (inductor) wrapper of ``model`` that shares its parameters and buffers.

    Compilation happens lazily at the first call.  Without a C++ compiler ``model`` itself is returned (with a
    warning) rather than failing at the first training step.  Keep saving ``model.state_dict()``, not the
    wrapper's.

    Args:
        model: the network (already on its device and memory format; may be DDP-wrapped).
        mode: ``torch.compile`` mode (``None``: default; ``max-autotune`` compiles much longer).
        dynamic: ``torch.compile``'s dynamic-shape setting (``None``: recompile as dynamic after a shape change).
    """
    if is_compiled(model):
        return model
    if not compiler_available():
        logger.warning("torch.compile needs a C++ compiler (g++) for CPU kernels: training eagerly")
        return model
    logger.info("compiling the training forward/backward with torch.compile (inductor, mode=%s)", mode or "default")
    return torch.compile(model, mode=mode, dynamic=dynamic)


def strip_compile_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """``state_dict`` with the ``_orig_mod.`` prefix of ``torch.compile`` wrappers removed from every key."""
    return {
        ".".join(part for part in key.split(".") if part != COMPILE_PREFIX[:-1]): value
        for key, value in state_dict.items()
    }
