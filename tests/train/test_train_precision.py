"""Precision plans: what ``auto`` means (CPU probe, oneDNN cap, the suite's fp32 pin) and the bf16 path vs fp32."""

from __future__ import annotations

import os

import pytest
import torch
from train_toy_helpers import SquaresDataset, toy_batches, toy_config, toy_net, toy_unet, write_cube_dataset

from medtransfer.cli import main
from medtransfer.errors import ConfigError
from medtransfer.train import DiceValidator, TrainConfig, Trainer, resolve_device, resolve_precision
from medtransfer.train import precision as precision_module

CPU = torch.device("cpu")
ZEN4 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512_bf16 avx512_vnni\n"
AVX2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
BAD_PIN = "MEDTRANSFER_PRECISION: 'fp8' is not a precision; allowed: auto, fp32, bf16, fp16 (or unset)"


@pytest.fixture
def fake_cpu(monkeypatch):
    """Set what the CPU-flag probe reads (``/proc/cpuinfo``'s text, or ``None`` for no such file)."""

    def set_cpuinfo(text: str | None) -> None:
        monkeypatch.setattr(precision_module, "cpu_flags", lambda: text)
        precision_module.cpu_has_fast_bf16.cache_clear()

    yield set_cpuinfo
    precision_module.cpu_has_fast_bf16.cache_clear()


def test_explicit_precision_wins():
    plan = resolve_precision("bf16", CPU)
    assert plan.autocast_dtype == torch.bfloat16
    assert plan.channels_last
    assert plan.name == "bf16"
    assert resolve_precision("fp32", CPU).autocast_dtype is None
    assert not resolve_precision("fp32", CPU).channels_last
    assert resolve_precision("bf16", CPU, channels_last=False).channels_last is False
    with pytest.raises(ConfigError, match="fp16 needs CUDA"):
        resolve_precision("fp16", CPU)


def test_the_suite_pins_auto_whatever_the_cpu(fake_cpu):
    """Learning tests must give the same numbers on AVX2-only and avx512_bf16 CPUs (tests/conftest.py).

    The pin is fp32 unless a developer asks for ``MEDTRANSFER_PRECISION=bf16`` to check the margins in bf16.
    """
    pinned = os.environ.get("MEDTRANSFER_PRECISION")
    assert pinned in ("fp32", "bf16")
    for cpuinfo in (ZEN4, AVX2):
        fake_cpu(cpuinfo)
        assert resolve_precision("auto", CPU).name == pinned
        assert Trainer(toy_net(), toy_config(precision="auto"), toy_batches(toy_config())).plan.name == pinned


def test_auto_on_cpu_follows_the_cpu_flags(unpinned_precision, fake_cpu):
    fake_cpu(ZEN4)
    assert precision_module.cpu_has_fast_bf16()
    assert resolve_precision("auto", CPU).name == "bf16"
    fake_cpu(AVX2)
    assert not precision_module.cpu_has_fast_bf16()
    assert resolve_precision("auto", CPU).name == "fp32"


def test_a_onednn_isa_cap_without_bf16_means_no_fast_bf16(unpinned_precision, fake_cpu, monkeypatch):
    fake_cpu(ZEN4)
    for isa, fast in (("AVX2", False), ("avx512_core", False), ("AVX512_CORE_BF16", True), ("ALL", True)):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
        precision_module.cpu_has_fast_bf16.cache_clear()
        assert precision_module.cpu_has_fast_bf16() is fast, isa


def test_without_cpuinfo_the_probe_asks_pytorch(unpinned_precision, fake_cpu, monkeypatch):
    fake_cpu(None)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert not precision_module.cpu_has_fast_bf16()


def test_the_precision_variable_pins_auto_and_explicit_still_wins(unpinned_precision, fake_cpu, monkeypatch):
    fake_cpu(AVX2)
    monkeypatch.setenv("MEDTRANSFER_PRECISION", "BF16 ")
    assert resolve_precision("auto", CPU).name == "bf16"
    assert resolve_precision("fp32", CPU).name == "fp32"
    monkeypatch.setenv("MEDTRANSFER_PRECISION", "auto")
    assert resolve_precision("auto", CPU).name == "fp32"  # the CPU's own choice
    monkeypatch.setenv("MEDTRANSFER_PRECISION", "fp8")
    with pytest.raises(ConfigError) as err:
        resolve_precision("auto", CPU)
    assert str(err.value) == BAD_PIN
    with pytest.raises(ConfigError, match="MEDTRANSFER_PRECISION"):
        TrainConfig(precision="auto")
    assert TrainConfig(precision="fp32").precision == "fp32"  # an explicit precision does not read it


def test_a_bad_precision_variable_is_one_error_line_and_no_run_folder(tmp_path, monkeypatch, capsys):
    data, out = write_cube_dataset(tmp_path / "ds"), tmp_path / "run"
    monkeypatch.setenv("MEDTRANSFER_PRECISION", "fp8")
    argv = ["finetune", "--init", "none", "--data", str(data), "--out", str(out), "--epochs", "1", "--device", "cpu"]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {BAD_PIN}"]
    assert not out.exists()


def test_a_cuda_device_number_beyond_the_machine_is_a_config_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError) as err:
        resolve_device("cuda:1")
    assert (
        str(err.value)
        == "device 'cuda:1' requested but this machine has 1 CUDA device(s); allowed: auto, cpu, cuda, cuda:0"
    )
    assert resolve_device("cuda:0") == torch.device("cuda", 0)


def test_bf16_channels_last_loss_curve_matches_fp32():
    curves = {}
    for precision in ("fp32", "bf16"):
        config = toy_config(epochs=3, steps_per_epoch=5, precision=precision, lr=0.05)
        trainer = Trainer(toy_net(dropout=0.0), config, toy_batches(config))
        if precision == "bf16":
            assert trainer.plan.channels_last
            assert trainer.model[0].weight.is_contiguous(memory_format=torch.channels_last)
        curves[precision] = torch.tensor([r["train_loss"] for r in trainer.fit().history])
    assert curves["fp32"][-1] < curves["fp32"][0]
    assert torch.allclose(curves["bf16"], curves["fp32"], rtol=0.03, atol=0.01), curves


def test_bf16_autocast_forward_and_training_agree_with_fp32():
    """The bf16 path on purpose: same U-Net, same batches; outputs close, and both learn to the same Dice."""
    images = torch.stack([item["image"] for item in SquaresDataset(n=8, seed=2).items])
    outputs = {}
    for precision in ("fp32", "bf16"):
        plan = resolve_precision(precision, CPU)
        model = precision_module.model_to_plan(toy_unet().eval(), plan)
        with torch.no_grad(), plan.autocast():
            outputs[precision] = model(precision_module.to_memory_format(images, plan.channels_last)).float()
    assert outputs["bf16"].dtype == torch.float32
    scale = outputs["fp32"].abs().max()
    assert (outputs["bf16"] - outputs["fp32"]).abs().max() < 0.03 * scale  # bf16 keeps 8 bits of mantissa
    assert not torch.equal(outputs["bf16"], outputs["fp32"])  # autocast really ran in bf16

    dice = {}
    train = {"epochs": 5, "steps_per_epoch": 8, "lr": 0.02, "optimizer": "adam", "schedule": "constant"}
    for precision in ("fp32", "bf16"):
        config = toy_config(**train, loss="dice_ce", precision=precision)
        validator = DiceValidator(SquaresDataset(n=8, seed=1), num_classes=1, batch_size=4)
        trainer = Trainer(toy_unet(), config, toy_batches(config), validator=validator)
        assert trainer.plan.name == precision
        dice[precision] = trainer.fit().history[-1]["val_dice"]
    assert min(dice.values()) > 0.9, dice  # 0.997 / 0.995 on an AMD EPYC with avx512_bf16
    assert abs(dice["bf16"] - dice["fp32"]) < 0.05, dice
