"""An imported torchvision/timm ImageNet ResNet records the input scaling it was trained for, and fine-tuning
adopts it: ImageNet-normalised channels are about N(0, 1), so a grey scan is z-scored (not scaled to [0, 1])."""

from __future__ import annotations

import torch

from medtransfer.checkpoint import load_checkpoint
from medtransfer.data.preprocess import PreprocessConfig, Scaling
from medtransfer.finetune import FinetuneConfig
from medtransfer.finetune.source_prep import adopt_source
from medtransfer.models import create_model
from medtransfer.pretrain.config import PretrainConfig
from medtransfer.pretrain.imports import import_weights


def _imagenet_resnet(tmp_path):
    state = create_model("resnet18_unet", in_channels=3).encoder.state_dict()  # torchvision names, RGB conv1
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    torch.save(state, tmp_path / "rn18.pth")
    out = tmp_path / "src.pt"
    import_weights(
        PretrainConfig(task="import", model="resnet18_unet", weights=str(tmp_path / "rn18.pth"), out=str(out))
    )
    return out


def test_an_imagenet_resnet_source_records_zscore_and_fine_tuning_adopts_it(tmp_path):
    source = _imagenet_resnet(tmp_path)
    meta = load_checkpoint(source)["meta"]
    assert meta["preprocess"] == {"scaling": "zscore"}
    assert "0.485, 0.456, 0.406" in meta["source_preprocessing"]["normalisation"]
    assert PreprocessConfig().scaling is Scaling.UNIT  # what a run would use without the source's
    run = adopt_source(FinetuneConfig(data=".", out=".", init=str(source)))
    assert run.preprocess == {"scaling": "zscore"}
    assert PreprocessConfig.from_dict(run.preprocess).scaling is Scaling.ZSCORE
    assert PreprocessConfig.from_dict(run.preprocess).clip_percentiles == (1.0, 99.0)  # the default clip stays
    given = adopt_source(FinetuneConfig(data=".", out=".", init=str(source), preprocess={"scaling": "unit"}))
    assert given.preprocess == {"scaling": "unit"}  # the run's own key wins
