"""Import an nnU-Net v2 trained model folder as a medtransfer source checkpoint (``--task import --model nnunet``).

An nnU-Net results folder (``nnUNet_results/DatasetXXX/Trainer__Plans__configuration/``) holds::

    plans.json          the network (``configurations[name]["architecture"]``) and the preprocessing
    dataset.json        channel names and labels
    fold_N/checkpoint_final.pth   {"network_weights": ..., "init_args": {"configuration": ...}, trainer state}

The checkpoint is read with ``torch.load(weights_only=True)``; besides tensors nnU-Net's trainer state holds
numpy scalars (its logged losses and Dice), which are allowed as plain data (never any class or function).  The
network is rebuilt as :class:`medtransfer.models.NnUNet` with named stages, in medtransfer's axis order
(RAS ``x, y, z`` instead of the file's ``z, y, x`` that nnU-Net uses): kernels, strides, spacing and patch size
are reordered alike, so a scan in RAS orientation meets the kernels as during nnU-Net's training.  The
preprocessing goes into ``meta["preprocess"]`` (``PreprocessConfig``), ``meta["inference"]`` and ``meta["labels"]``
as ``medtransfer predict`` reads them; what has no medtransfer equivalent is kept in ``meta["nnunet"]`` and named
in ``meta["nnunet"]["preprocess_notes"]``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import load_checkpoint, save_checkpoint
from ..data.layouts.nnunet import parse_channels, read_json
from ..data.preprocess import PreprocessConfig
from ..errors import ConfigError, DataError, did_you_mean
from ..models import create_model, load_pretrained
from ..models.loading import strip_wrapper_prefixes
from ..models.nnunet_plans import config_from_plans, convert_nnunet_state_dict
from .config import PretrainConfig
from .run import source_meta

log = logging.getLogger(__name__)

PLANS, DATASET, CHECKPOINT = "plans.json", "dataset.json", "checkpoint_final.pth"
FOLDER_HELP = f"an nnU-Net v2 trained model folder ({PLANS}, {DATASET}, fold_N/{CHECKPOINT})"
# nnU-Net's normalisation scheme -> the nearest PreprocessConfig intensity options (exact unless noted).
NORMALISATION = {
    "ZScoreNormalization": {"clip_percentiles": None, "scaling": "zscore"},
    "CTNormalization": {"clip_percentiles": (0.5, 99.5), "scaling": "zscore", "crop_to_foreground": False},
    "NoNormalization": {"clip_percentiles": None, "scaling": "none"},
    "RescaleTo01Normalization": {"clip_percentiles": None, "scaling": "unit"},
    "RGBTo01Normalization": {"clip_percentiles": None, "scaling": "unit"},
}


def import_nnunet(config: PretrainConfig) -> Path:
    """Write ``config.out`` from the nnU-Net model folder (or checkpoint file) ``config.weights``.

    Raises:
        ConfigError / DataError: a missing or malformed file, an unknown configuration or fold, an architecture
            that cannot be rebuilt, weights that do not fit it (each message names the file).
    """
    if not config.weights:
        raise ConfigError(f"--task import --model nnunet needs --weights MODEL_FOLDER: {FOLDER_HELP}")
    folder, path = locate_checkpoint(config.weights, config.fold)
    plans, dataset = read_json(_required(folder / PLANS)), read_json(_required(folder / DATASET))
    ckpt = load_nnunet_checkpoint(path)
    name = configuration_name(plans, ckpt, folder)
    configuration = resolve_configuration(plans, name, folder / PLANS)
    arch = architecture(configuration, folder / PLANS, name)
    spatial_dims = 2 if str(arch["arch_kwargs"].get("conv_op", "")).endswith("2d") else 3
    axes, slice_axis = ras_axes(plans.get("transpose_forward", [0, 1, 2]), spatial_dims, folder / PLANS)
    model_cfg = config_from_plans(arch["network_class_name"], arch["arch_kwargs"], axes, source=f"{folder / PLANS}")
    n_stages = len(model_cfg["features_per_stage"])
    state, ignored = convert_nnunet_state_dict(
        strip_wrapper_prefixes(ckpt["state_dict"]), n_stages, model_cfg["encoder"], axes
    )
    in_ch, out_ch = _channels(state, path, model_cfg["encoder"])
    _check_dataset(dataset, in_ch, out_ch, folder / DATASET, path)
    model = create_model("nnunet", in_channels=in_ch, out_channels=out_ch, **model_cfg)
    audit = load_pretrained(model, state, adapt_input=False, prefix="")
    misfit = audit.misfit()  # a 2D fold's kernels would be inflated silently into a 3D configuration's network
    if misfit:
        raise DataError(
            f"{path}: network_weights do not fit the {arch['network_class_name'].rsplit('.', 1)[-1]} that "
            f"{folder / PLANS} describes for configuration {name!r} ({misfit}); is it the right folder?"
        )
    spec = {"name": "nnunet", "config": dict(model.model_config)}
    meta = source_meta(config, spec, model.stage_names(), None)
    meta.update(
        _describe(plans, dataset, ckpt, folder, path, name, arch, ignored),
        load_audit=audit.to_dict(),
        steps=0,
        metrics=_metrics(ckpt),
    )
    meta.update(_preprocessing(configuration, plans, axes, slice_axis, model_cfg, meta["nnunet"]))
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_checkpoint(config.out, {"model": spec, "state_dict": weights, "meta": meta})
    log.info("wrote %s from %s (configuration %s): %s", config.out, path, name, audit.summary())
    return Path(config.out)


def locate_checkpoint(weights: str, fold: str | None) -> tuple[Path, Path]:
    """``(model_folder, checkpoint)`` of ``--weights`` (a model folder, a ``fold_N`` folder or a checkpoint file)."""
    given = Path(weights)
    if given.is_file():
        if fold is not None and given.parent.name != f"fold_{fold}":
            raise ConfigError(f"{given}: --fold {fold} contradicts the checkpoint's folder {given.parent.name}")
        if not (given.parent.parent / PLANS).is_file():
            raise DataError(
                f"{given}: a checkpoint file is read from the fold_N folder of its model folder, but there is no "
                f"{given.parent.parent / PLANS}; --weights takes {FOLDER_HELP}"
            )
        return given.parent.parent, given
    if not given.is_dir():
        raise DataError(f"{given}: not found; --weights takes {FOLDER_HELP}")
    if not (given / PLANS).is_file() and given.name.startswith("fold_") and (given.parent / PLANS).is_file():
        return locate_checkpoint(str(given / CHECKPOINT), fold)
    _required(given / PLANS)
    folds = sorted(p.name for p in given.glob("fold_*") if (p / CHECKPOINT).is_file())
    if fold is None:
        fold = "0" if "fold_0" in folds or len(folds) != 1 else folds[0][len("fold_") :]
    if not (str(fold).isdigit() or fold == "all"):
        raise ConfigError(f"--fold {fold!r} names no nnU-Net fold; allowed: a fold number (0, 1, ...) or 'all'")
    path = given / f"fold_{fold}" / CHECKPOINT
    if not path.is_file():
        others = sorted(p.name for p in path.parent.glob("*.pth")) if path.parent.is_dir() else []
        hint = f"; or give one of {', '.join(others)} itself as --weights" if others else ""
        raise DataError(
            f"{path}: not found; folds with a {CHECKPOINT}: {', '.join(folds) or 'none'} (choose with --fold){hint}"
        )
    return given, path


def _required(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: not found; --weights takes {FOLDER_HELP}")
    return path


def numpy_data_globals() -> list[Any]:
    """The numpy *data* types nnU-Net's trainer state pickles (scalars, dtypes, arrays): no code is allowed.

    Both module spellings are listed, so checkpoints written under numpy 1 (``numpy.core``) and numpy 2
    (``numpy._core``) load alike.
    """
    core = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    dtypes = [type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFD"]
    out: list[Any] = [np.dtype, np.ndarray, *dtypes]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out += [(core.scalar, f"{module}.scalar"), (core._reconstruct, f"{module}._reconstruct")]
    return out


def load_nnunet_checkpoint(path: Path) -> dict[str, Any]:
    """``checkpoint_final.pth`` read with ``weights_only=True`` (numpy data allowed); weights under ``state_dict``."""
    with torch.serialization.safe_globals(numpy_data_globals()):
        ckpt = load_checkpoint(path)
    if not any(k.startswith("decoder.") for k in ckpt.get("state_dict", {})):
        raise DataError(f"{path}: not an nnU-Net checkpoint (no 'network_weights' of a U-Net decoder)")
    return ckpt


def configuration_name(plans: dict[str, Any], ckpt: dict[str, Any], folder: Path) -> str:
    """The configuration the weights were trained with: the checkpoint's ``init_args``, else the folder name
    ``Trainer__Plans__configuration``, else the only configuration of the plans."""
    name = (ckpt.get("init_args") or {}).get("configuration")
    if isinstance(name, str):
        return name
    parts = folder.resolve().name.split("__")
    if len(parts) == 3:
        return parts[2]
    available = list(plans.get("configurations") or {})
    if len(available) == 1:
        return available[0]
    raise DataError(
        f"{folder}: the configuration of the weights is unknown (neither in the checkpoint's init_args nor in a "
        f"folder name Trainer__Plans__configuration); configurations in {PLANS}: {', '.join(available)}"
    )


def resolve_configuration(plans: dict[str, Any], name: str, source: Path) -> dict[str, Any]:
    """``plans["configurations"][name]`` with ``inherits_from`` resolved (as nnU-Net's ``PlansManager``)."""
    configurations = plans.get("configurations")
    if not isinstance(configurations, dict) or not configurations:
        raise DataError(f"{source}: no 'configurations'; is it an nnU-Net v2 plans file?")
    chain: list[str] = []
    while True:
        if name not in configurations:
            raise ConfigError(f"{source}: {did_you_mean(name, configurations, what='nnU-Net configuration')}")
        if name in chain:
            raise DataError(f"{source}: configurations inherit from each other in a circle: {' -> '.join(chain)}")
        chain.append(name)
        parent = configurations[name].get("inherits_from")
        if parent is None:
            break
        name = parent
    resolved: dict[str, Any] = {}
    for item in reversed(chain):
        resolved.update(configurations[item])
    return resolved


def architecture(configuration: dict[str, Any], source: Path, name: str) -> dict[str, Any]:
    """The configuration's ``architecture`` (plans written before nnU-Net 2.4 are converted as nnU-Net does)."""
    if "architecture" in configuration:
        arch = configuration["architecture"]
        if not isinstance(arch, dict) or not {"network_class_name", "arch_kwargs"} <= set(arch):
            raise DataError(f"{source}: configuration {name!r}: 'architecture' lacks network_class_name/arch_kwargs")
        return arch
    try:
        kind, n = configuration["UNet_class_name"], len(configuration["n_conv_per_stage_encoder"])
        dims, base, top = len(configuration["patch_size"]), configuration["UNet_base_num_features"], None
        top = configuration["unet_max_num_features"]
        kwargs = {
            "n_stages": n,
            "features_per_stage": [min(base * 2**i, top) for i in range(n)],
            "conv_op": f"torch.nn.Conv{dims}d",
            "kernel_sizes": configuration["conv_kernel_sizes"],
            "strides": configuration["pool_op_kernel_sizes"],
            "n_conv_per_stage" if kind == "PlainConvUNet" else "n_blocks_per_stage": configuration[
                "n_conv_per_stage_encoder"
            ],
            "n_conv_per_stage_decoder": configuration["n_conv_per_stage_decoder"],
            "conv_bias": True,
            "norm_op": f"torch.nn.InstanceNorm{dims}d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        }
    except (KeyError, TypeError) as err:
        raise DataError(f"{source}: configuration {name!r} describes no network (missing {err})") from err
    return {"network_class_name": str(kind), "arch_kwargs": kwargs}


def ras_axes(transpose_forward: Any, spatial_dims: int, source: Path) -> tuple[list[int], int | None]:
    """``(axes, slice_axis)``: ``axes[i]`` is the network axis that becomes axis ``i`` of the medtransfer model.

    nnU-Net's arrays are the file's ``(z, y, x)`` transposed by ``transpose_forward``; medtransfer's are
    ``(x, y, z)`` (RAS for a file stored close to RAS).  A 2D network sees slices along ``slice_axis``.
    """
    if sorted(int(t) for t in transpose_forward) != [0, 1, 2]:
        raise DataError(f"{source}: transpose_forward must be a permutation of 0, 1, 2, got {transpose_forward}")
    ras_of = [2 - int(t) for t in transpose_forward]  # medtransfer axis of each nnU-Net (transposed) axis
    if spatial_dims == 3:
        return [ras_of.index(i) for i in range(3)], None
    in_plane = ras_of[1:]
    return [in_plane.index(r) for r in sorted(in_plane)], ras_of[0]


def _channels(state: dict[str, torch.Tensor], path: Path, encoder: str) -> tuple[int, int]:
    first = "encoder.stages.input." + ("stem." if encoder == "residual" else "") + "convs.0.conv.weight"
    if first not in state or "head.conv.weight" not in state:
        raise DataError(f"{path}: network_weights lack the first convolution or the segmentation output layer")
    return int(state[first].shape[1]), int(state["head.conv.weight"].shape[0])


def _check_dataset(dataset: dict[str, Any], in_ch: int, out_ch: int, source: Path, path: Path) -> None:
    channels = parse_channels(dataset.get("channel_names", dataset.get("modality")), source)
    labels = dataset.get("labels") or {}
    regions = any(isinstance(v, list) for v in labels.values())
    expected = len(labels) - 1 if regions else len(labels)
    if len(channels) != in_ch or (labels and expected != out_ch):
        raise DataError(
            f"{source}: names {len(channels)} channel(s) and {expected} output(s), but {path} takes {in_ch} "
            f"channel(s) and predicts {out_ch}; plans, dataset.json and fold must come from the same model folder"
        )


def _describe(plans, dataset, ckpt, folder: Path, path: Path, name: str, arch, ignored) -> dict[str, Any]:
    labels = dataset.get("labels") or {}
    regions = any(isinstance(v, list) for v in labels.values())
    ordered = sorted(labels, key=lambda k: labels[k] if not regions else 0)
    dataset_name = str(plans.get("dataset_name") or dataset.get("name") or folder.parent.name)
    trainer = str(ckpt.get("trainer_name") or folder.resolve().name.split("__")[0])
    out = {
        "source_task": "segmentation",
        "source_domain": dataset_name,
        "class_names": [str(k) for k in ordered if not regions or k != "background"],
        "transfers": "all matching tensors",
        "data": {
            "source": f"nnU-Net v2 model: {dataset_name}, {trainer}, configuration {name}, {path.parent.name}",
            "origin": str(path),
        },
        "nnunet": {
            "configuration": name,
            "trainer": trainer,
            "plans_name": plans.get("plans_name"),
            "dataset_name": dataset_name,
            "fold": path.parent.name,
            "epochs": ckpt.get("current_epoch"),
            "network_class": arch["network_class_name"],
            "arch_kwargs": arch["arch_kwargs"],
            "channel_names": dataset.get("channel_names", dataset.get("modality")),
            "labels": labels,
            "ignored": ignored,
        },
    }
    if not regions:
        out["labels"] = {str(k): int(labels[k]) for k in ordered}
    return out


def _metrics(ckpt: dict[str, Any]) -> dict[str, float]:
    best = ckpt.get("_best_ema")
    return {"ema_fg_dice": float(best)} if isinstance(best, int | float | np.floating) else {}


def _preprocessing(configuration, plans, axes, slice_axis, model_cfg, info: dict[str, Any]) -> dict[str, Any]:
    """``preprocess`` (PreprocessConfig), ``inference`` and the nnU-Net preprocessing facts in ``info``."""
    schemes = list(configuration.get("normalization_schemes") or ["ZScoreNormalization"])
    scheme, notes = schemes[0], []
    if len(set(schemes)) > 1:
        notes.append(f"channels use {schemes}; medtransfer scales every channel as {scheme}")
    if scheme not in NORMALISATION:
        notes.append(f"{scheme} has no medtransfer equivalent; z-scoring instead")
    if scheme == "CTNormalization":
        notes.append(
            "CTNormalization clips to the dataset's foreground percentiles 0.5/99.5 and z-scores with its "
            "mean/std (intensity_properties); medtransfer uses each scan's own percentiles and statistics"
        )
    if scheme == "ZScoreNormalization" and any(configuration.get("use_mask_for_norm") or []):
        notes.append("use_mask_for_norm: nnU-Net z-scores inside the non-zero mask only")
    spacing = [float(s) for s in configuration.get("spacing", [])]
    target = [float("nan")] * 3
    if slice_axis is None:
        target = [spacing[a] for a in axes] if len(spacing) == 3 else target
    elif len(spacing) == 2:
        in_plane = sorted(set(range(3)) - {slice_axis})
        target[slice_axis] = float((plans.get("original_median_spacing_after_transp") or [math.nan])[0])
        for j, ras in enumerate(in_plane):
            target[ras] = spacing[axes[j]]
    options = {"crop_to_foreground": True, "crop_threshold": 0.0, "crop_margin": 0}
    options.update(NORMALISATION.get(scheme, NORMALISATION["ZScoreNormalization"]))
    valid = all(math.isfinite(s) and s > 0 for s in target)
    preprocess = PreprocessConfig(target_spacing=tuple(target) if valid else None, **options)
    if not valid:
        notes.append("no usable spacing in the plans: scans keep their own spacing")
    patch = [int(p) for p in configuration.get("patch_size", [])]
    strides = np.prod(np.asarray(model_cfg["strides"]), axis=0)
    inference: dict[str, Any] = {"divisor": int(strides.max())}
    if slice_axis is None:
        inference.update(patch_size=[patch[a] for a in axes], overlap=0.5)
    else:
        inference["slice_axis"] = int(slice_axis)
    info.update(
        spacing=spacing,
        patch_size=patch,
        transpose_forward=list(plans.get("transpose_forward", [0, 1, 2])),
        axes=list(axes),
        normalization_schemes=schemes,
        use_mask_for_norm=configuration.get("use_mask_for_norm"),
        intensity_properties=plans.get("foreground_intensity_properties_per_channel", {}),
        preprocess_notes=notes,
    )
    return {"preprocess": preprocess.to_dict(), "inference": inference}
