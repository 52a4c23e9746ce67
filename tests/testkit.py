"""Shared test data builders for the fine-tuning tests (train, experiments, semi, transfer).

Importable from any test module as ``testkit`` (pytest puts ``tests/``, the folder of the root conftest.py, on
``sys.path``); no test module imports another.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from torch import nn

from medtransfer.checkpoint import save_checkpoint
from medtransfer.data.io import save_nifti
from medtransfer.data.layouts import write_dataset_json
from medtransfer.models import create_model, list_models, register_model

# ---------------------------------------------------------------- two domains (grid cells, classification)

GRID_TRAIN = {"epochs": 3, "steps_per_epoch": 6, "batch_size": 8, "lr": 0.01, "optimizer": "adam", "device": "cpu"}


def two_domain_blobs(root, per_domain=5):
    """Blobs in noise; domain ``b`` has inverted, rescaled contrast (a domain shift)."""
    rng = np.random.default_rng(0)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rows = ["case,subject,domain"]
    grid = np.indices((24, 24, 8)).astype(np.float32)
    for domain in ("a", "b"):
        for i in range(per_domain):
            centre = np.array([12 + rng.integers(-4, 5), 12 + rng.integers(-4, 5), 4])[:, None, None, None]
            scale = np.array([1, 1, 2])[:, None, None, None]
            label = (np.sqrt((((grid - centre) * scale) ** 2).sum(0)) < 6).astype(np.uint8)
            image = label * 1.0 + rng.normal(0, 0.25, label.shape)
            image = image if domain == "a" else 2.0 - 3.0 * image
            case = f"{domain}{i}"
            affine = np.diag([1.0, 1.0, 2.0, 1.0])
            save_nifti(root / "imagesTr" / f"{case}_0000.nii.gz", image.astype(np.float32), affine)
            save_nifti(root / "labelsTr" / f"{case}.nii.gz", label, affine)
            rows.append(f"{case},{case},{domain}")
    write_dataset_json(root, {"background": 0, "blob": 1}, ["T1"], 2 * per_domain)
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    return root


# ---------------------------------------------------------------- one domain, three-class source (finetune CLI)

FINETUNE_MODEL = {"spatial_dims": 2, "in_channels": 1, "out_channels": 3, "features": 4, "depth": 2}
FINETUNE_ARGS = ["--epochs", "2", "--steps-per-epoch", "3", "--batch-size", "4", "--lr", "0.01", "--device", "cpu"]


def blob_dataset(root, n=6):
    rng = np.random.default_rng(0)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rows = ["case,subject,domain"]
    grid = np.indices((20, 20, 8)).astype(np.float32)
    for i in range(n):
        centre = np.array([10 + rng.integers(-3, 4), 10 + rng.integers(-3, 4), 4])[:, None, None, None]
        label = (np.sqrt((((grid - centre) * np.array([1, 1, 2])[:, None, None, None]) ** 2).sum(0)) < 5).astype(
            np.uint8
        )
        image = label * 1.0 + rng.normal(0, 0.2, label.shape) + 0.2
        affine = np.diag([1.0, 1.0, 2.0, 1.0])
        save_nifti(root / "imagesTr" / f"c{i}_0000.nii.gz", image.astype(np.float32), affine)
        save_nifti(root / "labelsTr" / f"c{i}.nii.gz", label, affine)
        rows.append(f"c{i},s{i},{'a' if i % 2 else 'b'}")
    write_dataset_json(root, {"background": 0, "blob": 1}, ["T1"], n)
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    return root


def source_checkpoint(path, config=None):
    """A freshly initialised (seed 0) U-Net checkpoint with ``config`` (default :data:`FINETUNE_MODEL`)."""
    config = dict(config or FINETUNE_MODEL)
    torch.manual_seed(0)
    model = create_model("unet", **config)
    save_checkpoint(path, {"model": {"name": "unet", "config": config}, "state_dict": model.state_dict()})
    return path


# ---------------------------------------------------------------- labelled + unlabelled folders (teacher-student)

SEMI_MODEL = {"spatial_dims": 2, "in_channels": 1, "out_channels": 1, "features": 4, "depth": 2}


def semi_blob(rng, shape=(16, 16, 6)):
    grid = np.indices(shape).astype(np.float32)
    centre = np.array([8 + rng.integers(-3, 4), 8 + rng.integers(-3, 4), 3])[:, None, None, None]
    label = (np.sqrt(((grid - centre) ** 2).sum(0)) < 4).astype(np.uint8)
    return (label * 1.0 + rng.normal(0, 0.2, label.shape) + 0.2).astype(np.float32), label


def semi_datasets(root, n=6, n_unlabelled=2):
    rng = np.random.default_rng(0)
    data = root / "ds"
    (data / "imagesTr").mkdir(parents=True)
    (data / "labelsTr").mkdir()
    rows = ["case,subject"]
    for i in range(n):
        image, label = semi_blob(rng)
        save_nifti(data / "imagesTr" / f"c{i}_0000.nii.gz", image, np.eye(4))
        save_nifti(data / "labelsTr" / f"c{i}.nii.gz", label, np.eye(4))
        rows.append(f"c{i},s{i}")
    write_dataset_json(data, {"background": 0, "blob": 1}, ["T1"], n)
    (data / "metadata.csv").write_text("\n".join(rows) + "\n")
    unl = root / "unl"
    (unl / "images").mkdir(parents=True)
    for i in range(n_unlabelled):
        # larger than the labelled scans: every slice dataset is padded to one common shape
        save_nifti(unl / "images" / f"u{i}.nii.gz", semi_blob(rng, (20, 16, 6))[0], np.eye(4))
    return data, unl


# ---------------------------------------------------------------- nnU-Net v2 trained model folders

NNUNET_DNA = "dynamic_network_architectures.architectures.unet"
NNUNET_LABELS = {"background": 0, "liver": 1}


def nnunet_arch(class_name: str, dims: int) -> dict:
    """A plans ``architecture`` entry (nnU-Net >= 2.4 format) of a 3-stage network."""
    if dims == 3:
        kernels, strides = [[1, 3, 3], [3, 3, 3], [3, 3, 3]], [[1, 1, 1], [1, 2, 2], [2, 2, 2]]
    else:
        kernels, strides = [[3, 3]] * 3, [[1, 1], [2, 2], [2, 2]]
    per_stage = "n_conv_per_stage" if class_name == "PlainConvUNet" else "n_blocks_per_stage"
    return {
        "network_class_name": f"{NNUNET_DNA}.{class_name}",
        "arch_kwargs": {
            "n_stages": 3,
            "features_per_stage": [4, 8, 16],
            "conv_op": f"torch.nn.modules.conv.Conv{dims}d",
            "kernel_sizes": kernels,
            "strides": strides,
            per_stage: [2, 2, 2],
            "n_conv_per_stage_decoder": [2, 2],
            "conv_bias": True,
            "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dims}d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def nnunet_plans(class_name: str) -> dict:
    """plans.json with 2d, 3d_fullres and 3d_lowres (inheriting); spacings and patches differ per axis."""
    common = {"normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False], "batch_dice": True}
    return {
        "dataset_name": "Dataset042_Tiny",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [2.0, 0.8, 0.9],
        "original_median_shape_after_transp": [8, 16, 12],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {
            "2d": {**common, "patch_size": [16, 12], "spacing": [0.8, 0.9], "architecture": nnunet_arch(class_name, 2)},
            "3d_fullres": {
                **common,
                "patch_size": [8, 16, 12],
                "spacing": [2.0, 0.8, 0.9],
                "architecture": nnunet_arch(class_name, 3),
            },
            "3d_lowres": {"inherits_from": "3d_fullres", "spacing": [4.0, 1.6, 1.8]},
        },
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {"max": 900.0, "mean": 120.5, "median": 118.0, "min": -80.0, "percentile_00_5": -20.0,
                  "percentile_99_5": 400.0, "std": 60.25}
        },
    }  # fmt: skip


def _nnunet_reference(arch: dict, in_channels: int, classes: int) -> torch.nn.Module:
    """The trained network as nnU-Net builds it (``get_network_from_plans``, deep supervision on)."""
    import pydoc

    unet = pytest.importorskip(NNUNET_DNA)
    kwargs = {
        k: pydoc.locate(v) if k in arch["_kw_requires_import"] and v else v for k, v in arch["arch_kwargs"].items()
    }
    cls = getattr(unet, arch["network_class_name"].rsplit(".", 1)[-1])
    net = cls(input_channels=in_channels, num_classes=classes, deep_supervision=True, **kwargs)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.3)
    return net


def _save_like_nnunet(path, net, plans, dataset, configuration) -> None:
    """``nnUNetTrainer.save_checkpoint``: weights, SGD state, the logger's numpy values, init args."""
    optimizer = torch.optim.SGD(net.parameters(), 1e-3, momentum=0.99, nesterov=True, weight_decay=3e-5)
    dims = len(plans["configurations"][configuration]["patch_size"])
    sum(o.mean() for o in net(torch.randn(2, 1, *[8] * dims))).backward()  # one step: momentum buffers exist
    optimizer.step()
    now = time.time()
    checkpoint = {
        "network_weights": net.state_dict(),
        "optimizer_state": optimizer.state_dict(),
        "grad_scaler_state": None,
        "logging": {
            "mean_fg_dice": [np.float64(0.61)],
            "ema_fg_dice": [np.float64(0.61)],
            "dice_per_class_or_region": [[np.float64(0.61)]],
            "train_losses": [np.mean(np.array([-0.4, -0.5], dtype=np.float32))],
            "val_losses": [np.float32(-0.45)],
            "lrs": [0.01],
            "epoch_start_timestamps": [now - 60],
            "epoch_end_timestamps": [now],
        },
        "_best_ema": np.float64(0.61),
        "current_epoch": 1,
        "init_args": {
            "plans": plans,
            "configuration": configuration,
            "fold": 0,
            "dataset_json": dataset,
            "device": torch.device("cpu"),
        },
        "trainer_name": "nnUNetTrainer",
        "inference_allowed_mirroring_axes": (0, 1, 2),
    }
    path.parent.mkdir(parents=True)
    torch.save(checkpoint, path)


def nnunet_model_folder(root, class_name="PlainConvUNet", configuration="3d_fullres"):
    """``root/Dataset042_Tiny/nnUNetTrainer__nnUNetPlans__<configuration>/`` and its reference network."""
    plans = nnunet_plans(class_name)
    folder = root / "Dataset042_Tiny" / f"nnUNetTrainer__nnUNetPlans__{configuration}"
    folder.mkdir(parents=True)
    dataset = {"channel_names": {"0": "T1"}, "labels": NNUNET_LABELS, "numTraining": 4, "file_ending": ".nii.gz"}
    (folder / "plans.json").write_text(json.dumps(plans, indent=4))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=4))
    arch = plans["configurations"][configuration]["architecture"]
    net = _nnunet_reference(arch, in_channels=1, classes=len(NNUNET_LABELS))
    _save_like_nnunet(folder / "fold_0" / "checkpoint_final.pth", net, plans, dataset, configuration)
    net.decoder.deep_supervision = False
    return folder, net.eval()


# ---------------------------------------------------------------- hand-built 3D threshold runs (ensembles)

THRESHOLD_NET = "test_threshold_net_3d"
THRESHOLD_SHAPE = (16, 16, 8)
THRESHOLD_PREPROCESS = {
    "target_spacing": None,
    "clip_percentiles": None,
    "scaling": "none",
    "crop_to_foreground": False,
}


class ThresholdNet3d(nn.Module):
    """logit = 40 (x - threshold): foreground above the threshold, probability sigmoid(40 (x - t))."""

    def __init__(self, threshold: float = 0.5, spatial_dims: int = 3, in_channels: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, 1, 1)
        with torch.no_grad():
            self.conv.weight.fill_(40.0)
            self.conv.bias.fill_(-40.0 * threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


if THRESHOLD_NET not in list_models():
    register_model(THRESHOLD_NET, "test-only 3D threshold network")(ThresholdNet3d)


def threshold_image() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Background 0; box 1 (64 voxels) at 0.5; box 2 (100 voxels) at 1.0; a 1-voxel speck at 1.0."""
    image = np.zeros(THRESHOLD_SHAPE, np.float32)
    box1 = np.zeros(THRESHOLD_SHAPE, bool)
    box1[2:6, 2:6, 2:6] = True
    box2 = np.zeros(THRESHOLD_SHAPE, bool)
    box2[9:14, 9:14, 2:6] = True
    image[box1] = 0.5
    image[box2] = 1.0
    image[0, 15, 7] = 1.0
    return image, box1, box2


def threshold_run(
    root, name, threshold, val=("v0",), train=("t0",), data=None, labels=None, test=(), postprocess="lesion"
):
    """A run folder as run_finetune writes it: checkpoint, summary.json (its split), config.yaml (its data).

    ``postprocess="lesion"`` records a tuned minimum component size (of 0 mm³: nothing removed) as a lesion run
    with ``min_component_mm3: auto`` does; ``None`` records none, as a brain-mask or anatomy run."""
    model = ThresholdNet3d(threshold)
    meta = {
        "preprocess": THRESHOLD_PREPROCESS,
        "labels": labels or {"background": 0, "lesion": 1},
        "inference": {"patch_size": [8, 8, 8]},
    }
    if postprocess == "lesion":
        meta["postprocess"] = {"min_component_mm3": 0.0, "tuned_on": list(val)}
    spec = {"name": THRESHOLD_NET, "config": {"spatial_dims": 3, "in_channels": 1, "threshold": threshold}}
    run = root / name
    save_checkpoint(
        run / "checkpoints" / "checkpoint_last.pt", {"model": spec, "state_dict": model.state_dict(), "meta": meta}
    )
    summary = {"val_cases": list(val), "labelled_cases": list(train), "test_cases": list(test)}
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "config.yaml").write_text(f"data: {data or root / 'data'}\n")
    return run


def threshold_dataset(root, extra=None):
    """t0: a training case with two 4x4x4 lesions (free size 32 mm³, evidence cap 64 mm³: lesions of one volume
    have no spread, so both prediction bounds are that volume); v0: boxes 1 and 2 are lesions, the speck is not;
    ``extra``: more cases (id -> label) of the same image."""
    image, box1, box2 = threshold_image()
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    train_label = np.zeros(THRESHOLD_SHAPE, np.uint8)
    train_label[4:8, 4:8, 2:6] = 1
    train_label[10:14, 10:14, 2:6] = 1
    cases = {"t0": train_label, "v0": (box1 | box2).astype(np.uint8), **(extra or {})}
    for case, label in cases.items():
        save_nifti(root / "imagesTr" / f"{case}_0000.nii.gz", image, np.eye(4))
        save_nifti(root / "labelsTr" / f"{case}.nii.gz", label, np.eye(4))
    write_dataset_json(root, {"background": 0, "lesion": 1}, ["T1"], len(cases))
    return root
