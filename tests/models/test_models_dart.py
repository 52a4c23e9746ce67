"""The DART residual U-Net preset: parameter counts of the paper's layer groups and the heads."""

from __future__ import annotations

import torch

from medtransfer.models import create_model


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_dart_parameter_counts_match_the_paper():
    model = create_model("dart_resunet")
    stages = model.stage_modules()
    # paper: ~2.4M in total, "first layers" ~4.8k (3x3 conv + first residual block), "last layers" ~0.6k.
    # By hand: 1*16*9 + 2*(16*16*9 + 2*16) = 4816;  2*(16*16 + 2*16) + (2*16 + 16) + 2 = 626.
    assert _count(stages["input"]) == 4816
    assert _count(stages["head"]) == 626
    assert 2.35e6 < _count(model) < 2.45e6


def test_dart_forward_shapes_and_heads():
    seg = create_model("dart_resunet", out_channels=2)
    assert seg(torch.zeros(2, 1, 32, 32)).shape == (2, 2, 32, 32)
    cls = create_model("dart_resunet", head="classification", num_classes=10)
    assert cls.stage_names()[-2:] == ["bottleneck", "head"]
    assert cls(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    rest = create_model("dart_resunet", head="restoration", features=4)
    assert rest(torch.zeros(1, 1, 16, 16)).shape == (1, 1, 16, 16)
    small3d = create_model("dart_resunet", spatial_dims=3, features=2)
    assert small3d(torch.zeros(1, 1, 16, 16, 16)).shape == (1, 1, 16, 16, 16)
