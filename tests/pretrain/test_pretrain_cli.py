"""``medtransfer pretrain`` through ``cli.main``: ImageNet imports, a short natural run, user errors (exit 2)."""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from pretrain_helpers import one_thread  # noqa: E402

from medtransfer.checkpoint import load_checkpoint  # noqa: E402
from medtransfer.cli import main  # noqa: E402
from medtransfer.models import create_model, load_pretrained  # noqa: E402
from medtransfer.models.vgg_unet import VGG16_BLOCKS  # noqa: E402


def _imagenet_resnet18_file(path: Path, model: str = "resnet18_unet") -> dict[str, torch.Tensor]:
    """A torchvision-named ResNet-18 (or ``model``'s ResNet) state dict with RGB input and an ImageNet ``fc``
    (random values)."""
    encoder = create_model(model, in_channels=3).state_dict()
    state = {k.removeprefix("encoder."): v.clone() for k, v in encoder.items() if k.startswith("encoder.")}
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()}
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 512), torch.randn(1000)
    torch.save(state, path)
    return state


def test_import_resnet_weights_writes_an_encoder_checkpoint(tmp_path, capsys):
    weights = tmp_path / "resnet18_imagenet.pth"
    source = _imagenet_resnet18_file(weights)
    out = tmp_path / "imagenet_resnet18.pt"
    args = ["pretrain", "--task", "import", "--model", "resnet18_unet", "--weights", str(weights), "--out", str(out)]
    assert main(args) == 0
    assert "adapted input: 1" in capsys.readouterr().out
    ckpt = load_checkpoint(out)
    meta = ckpt["meta"]
    assert meta["source_task"] == "import"
    assert meta["source_domain"] == "natural"
    assert meta["transfers"] == "encoder"
    assert meta["load_audit"]["unexpected"] == ["encoder.fc.weight", "encoder.fc.bias"]  # prefix added
    assert ckpt["model"]["name"] == "resnet18_unet"
    assert all(k.startswith("encoder.") for k in ckpt["state_dict"])
    # grey input: the RGB kernels are summed (timm's adapt_input_conv)
    first = next(k for k in source if k.endswith("weight") and source[k].ndim == 4)
    torch.testing.assert_close(ckpt["state_dict"][f"encoder.{first}"], source[first].sum(1, keepdim=True))
    target = create_model("resnet18_unet", in_channels=1, out_channels=3)
    audit = load_pretrained(target, ckpt)
    assert set(audit.loaded) == set(ckpt["state_dict"])
    assert any(k.startswith("decoder.") for k in audit.missing)


def test_import_refuses_an_existing_out_and_files_of_another_network(tmp_path, capsys):
    r18, r34 = tmp_path / "r18.pth", tmp_path / "r34.pth"
    _imagenet_resnet18_file(r18)
    _imagenet_resnet18_file(r34, "resnet34_unet")
    unet = tmp_path / "unet.pt"
    torch.save(create_model("unet", features=8, depth=2).state_dict(), unet)

    def run(model, weights, out):
        code = main(["pretrain", "--task", "import", "--model", model, "--weights", str(weights), "--out", str(out)])
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        return code, err

    mine = tmp_path / "mine.pt"
    mine.write_text("precious")
    code, err = run("resnet18_unet", r18, mine)
    assert code == 2
    assert err == f"error: {mine}: already exists; an import never replaces a file: give another --out\n"
    assert mine.read_text() == "precious"
    # ResNet-34 into ResNet-18: every ResNet-18 tensor is there, plus the 3rd..6th blocks it lacks
    code, err = run("resnet18_unet", r34, tmp_path / "a.pt")
    assert code == 2
    assert f"error: {r34}: does not fit resnet18_unet's encoder: " in err
    assert "tensors the model does not have (first: encoder.layer1.2." in err
    # ResNet-18 into ResNet-34: blocks missing
    code, err = run("resnet34_unet", r18, tmp_path / "b.pt")
    assert code == 2
    assert "encoder tensors not in it or of another shape (first: encoder.layer1.2." in err
    # a segmentation U-Net's state dict read as a ResNet: a few tensors of the same name and shape are not a source
    code, err = run("resnet18_unet", unet, tmp_path / "c.pt")
    assert code == 2
    assert err.startswith(f"error: {unet}: does not fit resnet18_unet's encoder: ")
    assert not any((tmp_path / n).exists() for n in ("a.pt", "b.pt", "c.pt"))


def test_import_vgg16_from_a_hed_weights_file(tmp_path):
    path, features = tmp_path / "hed.weights.h5", 8
    rng, in_ch = np.random.default_rng(0), 3
    with h5py.File(path, "w") as h5:
        for b, (width, n) in enumerate(VGG16_BLOCKS, start=1):
            for i in range(n):
                group = f"block{b}/layers/conv2d{'' if i == 0 else f'_{i}'}/vars"
                h5[f"{group}/0"] = rng.standard_normal((3, 3, in_ch, width * features // 64)).astype(np.float32)
                h5[f"{group}/1"] = rng.standard_normal(width * features // 64).astype(np.float32)
                in_ch = width * features // 64
    out = tmp_path / "vgg.pt"
    args = ["pretrain", "--task", "import", "--model", "vgg16_unet", "--features", "8", "--weights", str(path)]
    assert main([*args, "--out", str(out)]) == 0
    ckpt = load_checkpoint(out)
    assert len(ckpt["state_dict"]) == 26  # 13 convolutions x (weight, bias)
    assert ckpt["model"]["config"]["features"] == 8
    assert "HED" in ckpt["meta"]["data"]["source"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "clasification"], "did you mean 'classification'"),
        (["--task", "segmentation", "--domain", "mri"], "needs --data"),
        (["--task", "segmentation", "--domain", "ct"], "source domain"),
        (["--task", "import", "--model", "resnet18_unet"], "needs --weights"),
        (["--task", "import", "--model", "unet_x"], "unknown --task import model 'unet_x'"),
        (["--task", "import", "--model", "deepbet_link"], "did you mean 'deepbet_linknet'"),
        (["--task", "restoration", "--size", "20"], "multiple of 2**depth"),
        (["--task", "multi", "--domain", "natural"], "--domain mri"),
    ],
)
def test_user_errors_exit_2_with_a_message(tmp_path, capsys, args, message):
    assert main(["pretrain", *args, "--out", str(tmp_path / "x.pt")]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.usefixtures(one_thread.__name__)
def test_natural_rotation_run_from_the_installed_packages(tmp_path, capsys):
    out = tmp_path / "rotation.pt"
    args = ["pretrain", "--task", "rotation", "--out", str(out), "--size", "32", "--count", "60", "--features", "8"]
    args += ["--depth", "2", "--epochs", "1", "--steps-per-epoch", "3", "--batch-size", "8", "--no-progress"]
    assert main([*args, "--precision", "fp32", "--device", "cpu"]) == 0
    assert "source metrics: accuracy=" in capsys.readouterr().out
    meta = load_checkpoint(out)["meta"]
    assert meta["data"]["source"] == "scikit-image photo crops"
    assert meta["data"]["count"] == 60
