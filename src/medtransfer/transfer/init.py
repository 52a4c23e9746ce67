"""Initialisations used by strategies: seeded re-initialisation and Transfusion's mean-var draws.

Mean-var (Raghu et al., NeurIPS 2019): every weight and bias tensor of a convolution or linear layer is
replaced by i.i.d. draws from a normal with that pretrained tensor's mean and standard deviation, keeping the
scale and forgetting the features.  Normalisation layers are reset to their defaults (weight 1, bias 0, fresh
running statistics): the statistics belonged to the forgotten features.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterable, Iterator

import torch
from torch import nn

WEIGHT_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run the block with the global torch RNG seeded by ``seed`` (restored afterwards); no-op for ``None``."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def reset_parameters(
    modules: Iterable[nn.Module], seed: int | None = None, init: Callable[[nn.Module], None] | None = None
) -> int:
    """Call ``reset_parameters`` (and ``reset_running_stats``) on every sub-module; returns how many were reset.

    ``init`` (the model's ``init_weights``) is then applied to each module, under the same seed: the model's own
    initialisation on top of PyTorch's defaults.
    """
    count = 0
    modules = list(modules)
    with seeded(seed):
        for module in modules:
            for sub in module.modules():
                if hasattr(sub, "reset_parameters"):
                    sub.reset_parameters()
                    count += 1
                elif hasattr(sub, "reset_running_stats"):
                    sub.reset_running_stats()
            if init is not None:
                init(module)
    return count


@torch.no_grad()
def mean_var_init(
    model: nn.Module, generator: torch.Generator | None = None, *, only: Collection[str] | None = None
) -> list[str]:
    """Redraw conv/linear tensors of ``model`` from N(mean, std) of their current (pretrained) values.

    Args:
        model: the model, holding the pretrained weights.
        generator: RNG of the draws.
        only: names of the parameters that hold pretrained values (``LoadAudit.loaded``); the others (missing
            from the source or of another shape) keep their fresh init instead of being redrawn from its own
            statistics.  ``None``: every parameter is pretrained.

    Returns the names of the redrawn parameters.  Tensors with a single element keep their value as the mean
    (their standard deviation is undefined).  Norm layers are reset.
    """
    redrawn = []
    for name, module in model.named_modules():
        if isinstance(module, WEIGHT_LAYERS):
            for pname, param in module.named_parameters(recurse=False):
                full = f"{name}.{pname}" if name else pname
                if only is not None and full not in only:
                    continue
                mean = param.mean()
                std = param.std() if param.numel() > 1 else torch.zeros(())
                draw = torch.randn(param.shape, generator=generator, dtype=torch.float32)
                param.copy_((draw * std.float() + mean.float()).to(param.dtype))
                redrawn.append(full)
        elif isinstance(module, nn.modules.batchnorm._NormBase | nn.GroupNorm | nn.LayerNorm):
            module.reset_parameters()
    return redrawn
