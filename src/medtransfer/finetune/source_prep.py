"""Fine-tuning from an imported source uses the source's own preprocessing and input geometry.

An imported network (``medtransfer pretrain --task import``: deepbrain, deepbet, HD-BET, an nnU-Net model folder)
was trained on scans prepared one way: a voxel size, an intensity normalisation, sides that are multiples of its
total down-sampling, a patch size.  Its checkpoint records them (``meta["preprocess"]``, ``meta["inference"]``) and
:func:`adopt_source` carries them into the fine-tuning run, key by key, unless the run's own configuration gives
the key: the user's ``preprocess:`` keys and an explicit ``patch_size`` win.  The log says which value came from
where; ``config.yaml`` records the resolved values, so a resumed run and ``predict`` see the same ones.  A 2D
source's slice axis (``meta["inference"]["slice_axis"]``, e.g. a 2D nnU-Net trained on sagittal slices) is not
adopted but checked: the run's ``slice_axis`` has a default, so a run that sets another one is refused.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from ..errors import ConfigError
from .build import load_source
from .config import FinetuneConfig

logger = logging.getLogger(__name__)

DEFAULT_PATCH = (64, 64, 64)  # 3D training patch when neither the run nor the source gives one


def source_inference(source: dict[str, Any] | None) -> dict[str, Any]:
    """The source checkpoint's ``meta["inference"]`` (``{}`` without one)."""
    return dict(((source or {}).get("meta") or {}).get("inference") or {})


def adopt_source(config: FinetuneConfig) -> FinetuneConfig:
    """``config`` with the source's preprocessing and patch size wherever the run does not set them.

    Args:
        config: the run; ``config.preprocess`` holds only the keys the user gave, ``config.patch_size`` is
            ``None`` unless given.

    Returns:
        The run with ``preprocess`` completed from ``meta["preprocess"]`` of the source and ``patch_size``
        resolved (the run's, else the source's ``meta["inference"]["patch_size"]``, else 64^3).

    Raises:
        ConfigError: a 3D patch size that is not a multiple of the source network's down-sampling; a 2D source
            recording another ``meta["inference"]["slice_axis"]`` than the run's ``slice_axis``.
    """
    source = load_source(config) if config.init else None
    meta = (source or {}).get("meta") or {}
    given = dict(config.preprocess)
    taken = {k: v for k, v in (meta.get("preprocess") or {}).items() if k not in given}
    inference = source_inference(source)
    patch = config.patch_size
    if patch is None and inference.get("patch_size") and len(inference["patch_size"]) == 3:
        patch = tuple(int(p) for p in inference["patch_size"])
        taken["patch_size"] = list(patch)
    patch = tuple(patch or DEFAULT_PATCH)
    _check_patch(config, source, patch, inference.get("divisor"))
    _check_slice_axis(config, source, inference.get("slice_axis"))
    if taken:
        logger.info("from the source %s: %s", config.init, _describe(taken))
    if given:
        logger.info("from this run's config: %s", _describe(given))
    return dataclasses.replace(
        config, preprocess={**{k: v for k, v in taken.items() if k != "patch_size"}, **given}, patch_size=patch
    )


def _check_patch(config: FinetuneConfig, source: dict | None, patch: tuple[int, ...], divisor: int | None) -> None:
    spec = (source or {}).get("model") or {}
    if not divisor or int((spec.get("config") or {}).get("spatial_dims", 2)) != 3:
        return
    if any(int(p) % int(divisor) for p in patch):
        raise ConfigError(
            f"patch_size {list(patch)} does not fit the source {spec.get('name')} ({config.init}); its sides must "
            f"be multiples of {divisor} (the network's total down-sampling)"
        )


PLANES = {0: "sagittal", 1: "coronal", 2: "axial"}


def _check_slice_axis(config: FinetuneConfig, source: dict | None, slice_axis: Any) -> None:
    """A 2D source's in-plane kernels fit only the plane it was trained on: the run must slice along the same axis.

    ``FinetuneConfig.slice_axis`` has a default (2), so a run that gives none cannot be told from one that gives 2;
    instead of overriding either, a run slicing along another axis than the source's is refused.
    """
    spec = (source or {}).get("model") or {}
    dims = {**(spec.get("config") or {}), **config.model_config}.get("spatial_dims", 2)
    if slice_axis is None or int(dims) != 2 or int(slice_axis) == config.slice_axis:
        return
    need = int(slice_axis)
    raise ConfigError(
        f"{config.init}: the 2D source {spec.get('name')} was trained on {PLANES.get(need, '')} slices "
        f"(slice_axis {need}) but this run slices along axis {config.slice_axis} "
        f"({PLANES.get(config.slice_axis, '')}); set slice_axis: {need} so its in-plane kernels meet the plane "
        "they were trained on"
    )


def _describe(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())
