"""A 2D source trained on slices along one axis is fine-tuned along that axis, or refused with one line."""

from __future__ import annotations

import pytest

from medtransfer.checkpoint import save_checkpoint
from medtransfer.errors import ConfigError
from medtransfer.finetune import FinetuneConfig
from medtransfer.finetune.source_prep import adopt_source
from medtransfer.models import create_model


def _source(path, spatial_dims, slice_axis):
    model = create_model("unet", spatial_dims=spatial_dims, features=4, depth=2, out_channels=2)
    spec = {"name": "unet", "config": dict(model.model_config)}
    meta = {"inference": {"slice_axis": slice_axis, "divisor": 4}}
    save_checkpoint(path, {"model": spec, "state_dict": model.state_dict(), "meta": meta})
    return str(path)


def test_a_2d_source_sliced_along_another_axis_than_the_run_is_one_clear_error(tmp_path):
    init = _source(tmp_path / "sagittal.pt", 2, 0)  # e.g. a 2D nnU-Net with ras_axes([2, 0, 1], 2) -> slice axis 0
    with pytest.raises(ConfigError) as err:
        adopt_source(FinetuneConfig(data=".", out=".", init=init))  # the default slice_axis 2 (axial)
    assert str(err.value) == (
        f"{init}: the 2D source unet was trained on sagittal slices (slice_axis 0) but this run slices along axis 2 "
        "(axial); set slice_axis: 0 so its in-plane kernels meet the plane they were trained on"
    )
    assert "\n" not in str(err.value)
    resolved = adopt_source(FinetuneConfig(data=".", out=".", init=init, slice_axis=0))
    assert resolved.slice_axis == 0


def test_a_3d_source_or_a_2d_source_of_the_same_axis_is_not_refused(tmp_path):
    init3d = _source(tmp_path / "three.pt", 3, 0)  # a fine-tuned 3D run records its slice_axis too; it means nothing
    assert adopt_source(FinetuneConfig(data=".", out=".", init=init3d, patch_size=[8, 8, 8])).slice_axis == 2
    init2d = _source(tmp_path / "two.pt", 2, 2)
    assert adopt_source(FinetuneConfig(data=".", out=".", init=init2d)).slice_axis == 2
