"""The CUDA paths: device choice, AMP (bf16, fp16 + gradient scaler), channels_last, resume, DDP, predict.

Marked ``gpu``: skipped without CUDA (tests/conftest.py); ``benchmarks/gpu_check.sh`` runs them on a GPU.
``MEDTRANSFER_TEST_DEVICE=cpu`` runs them on the CPU instead, to check the tests themselves (the CUDA-only ones
skip then).
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.distributed as dist
from train_toy_helpers import (
    Killed,
    SquaresDataset,
    stop_after,
    toy_batches,
    toy_config,
    toy_net,
    toy_unet,
    write_cube_dataset,
)

from medtransfer.checkpoint import load_checkpoint
from medtransfer.cli import main
from medtransfer.errors import ConfigError
from medtransfer.train import CheckpointManager, DiceValidator, Trainer, resolve_device, resolve_precision
from medtransfer.train.precision import auto_precision

pytestmark = pytest.mark.gpu
TRAIN = {"epochs": 5, "steps_per_epoch": 8, "lr": 0.02, "optimizer": "adam", "schedule": "constant"}


def _needs_cuda(device: torch.device) -> None:
    if device.type != "cuda":
        pytest.skip("CUDA only")


def test_auto_picks_the_gpu_and_amp_with_channels_last(unpinned_precision, test_device):
    _needs_cuda(test_device)
    assert resolve_device("auto").type == "cuda"
    expected = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    plan = resolve_precision("auto", resolve_device("auto"))
    assert (plan.name, plan.channels_last, plan.grad_scaling) == (expected, True, expected == "fp16")
    with pytest.raises(ConfigError, match=f"has {torch.cuda.device_count()} CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_the_trainer_learns_on_the_device(test_device, precision):
    if precision == "fp16":
        _needs_cuda(test_device)
    config = toy_config(**TRAIN, loss="dice_ce", precision=precision, device=str(test_device))
    validator = DiceValidator(SquaresDataset(n=8, seed=1), num_classes=1, batch_size=4)
    trainer = Trainer(toy_unet(), config, toy_batches(config), validator=validator)
    assert next(trainer.model.parameters()).device.type == test_device.type
    assert trainer.plan.channels_last == (precision != "fp32" or test_device.type == "cpu")
    assert trainer.scaler.is_enabled() == (precision == "fp16")
    history = trainer.fit().history
    assert history[-1]["val_dice"] > 0.85, history


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_resume_on_the_device_continues_the_interrupted_run(tmp_path, test_device, precision):
    """Optimizer, scaler and CUDA RNG states come back from a CPU-loadable checkpoint; dropout draws on the GPU."""
    if precision == "fp16":
        _needs_cuda(test_device)
    steps = {"epochs": 3, "steps_per_epoch": 4, "checkpoint_every_steps": 3}
    config = toy_config(**steps, precision=precision, device=str(test_device))

    def trainer(folder: str) -> Trainer:
        return Trainer(toy_net(), config, toy_batches(config), checkpoints=CheckpointManager(tmp_path / folder))

    full = trainer("full")
    full.fit()
    crash = trainer("crash")
    crash.data.epoch = stop_after(crash.data.epoch, total_steps=7)
    with pytest.raises(Killed):
        crash.fit()
    saved = load_checkpoint(tmp_path / "crash" / "checkpoint_last.pt")
    assert saved["trainer"]["global_step"] == 6
    assert all(t.device.type == "cpu" for t in saved["state_dict"].values())  # loads on a machine without a GPU
    resumed = trainer("crash")
    resumed.fit(resume=True)
    assert resumed.global_step == 12
    for key, value in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_ddp_in_one_process_on_the_device_matches_plain_training(tmp_path, test_device):
    config = toy_config(epochs=2, steps_per_epoch=3, device=str(test_device))
    plain = Trainer(toy_net(), config, toy_batches(config))
    plain.fit()
    backend = "nccl" if test_device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ddp = Trainer(toy_net(), config, toy_batches(config))
        assert isinstance(ddp.network, torch.nn.parallel.DistributedDataParallel)
        ddp.fit()
    finally:
        dist.destroy_process_group()
    for key, value in plain.model.state_dict().items():
        torch.testing.assert_close(ddp.model.state_dict()[key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_finetune_and_predict_on_the_device_agree_with_the_cpu(tmp_path, test_device, unpinned_precision):
    data, run = write_cube_dataset(tmp_path / "ds", n=6, size=16), tmp_path / "run"
    train = ["--epochs", "3", "--steps-per-epoch", "5", "--batch-size", "4", "--lr", "0.01"]
    argv = ["finetune", "--init", "none", "--data", str(data), "--out", str(run), "--n-labelled", "2", *train]
    assert main([*argv, "--device", str(test_device)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["precision"] == auto_precision(test_device).value
    scan = data / "imagesTr" / "c0_0000.nii.gz"
    predict, masks = ["predict", "--model", str(run), "--input", str(scan)], {}
    for device in (str(test_device), "cpu"):
        out = tmp_path / f"mask_{device}.nii.gz"
        assert main([*predict, "--output", str(out), "--device", device]) == 0
        masks[device] = np.asarray(nib.load(out).dataobj)
    assert masks["cpu"].shape == nib.load(scan).shape
    assert np.mean(masks[str(test_device)] == masks["cpu"]) > 0.95  # bf16 on either side may flip a few edge voxels


def test_finetune_tunes_its_postprocessing_on_the_device(tmp_path, test_device, monkeypatch):
    import medtransfer.infer as infer
    from medtransfer.finetune import FinetuneConfig, run_finetune

    devices, load = [], infer.load_predictor
    monkeypatch.setattr(infer, "load_predictor", lambda *a, **k: devices.append(k["device"]) or load(*a, **k))
    data, run = write_cube_dataset(tmp_path / "ds", n=6, size=16), tmp_path / "run"
    train = {**TRAIN, "epochs": 2, "device": str(test_device)}
    options = {"data": str(data), "out": str(run), "init": None, "n_labelled": 2, "min_component_mm3": "auto"}
    run_finetune(FinetuneConfig.from_dict({**options, "train": train}))
    assert devices  # the validation scans were predicted to tune the minimum component size ...
    assert set(devices) == {str(test_device)}  # ... on the run's device, not on the CPU
    assert "postprocess" in load_checkpoint(run / "checkpoints" / "checkpoint_last.pt")["meta"]
