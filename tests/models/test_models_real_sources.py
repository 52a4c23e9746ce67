"""The re-implemented packaged networks: same output as the originals on a real head, readers, named stages.

The originals: deepbrain's frozen graph evaluated op by op in NumPy (``tf_graph.evaluate``, independent of the
PyTorch module), deepbet's TorchScript module, HD-BET's own ``Network`` class.  The real head is Colin27
(``mricron-data``), downsampled and cropped so each check takes about a second.  A missing wheel or data
package skips with the command that installs it.
"""

from __future__ import annotations

import pickle
import struct
import zipfile

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from medtransfer.errors import DataError, MissingSourceError
from medtransfer.models import create_model
from medtransfer.models.deepbet_linknet import deepbet_state_dict
from medtransfer.models.deepbrain_unet import deepbrain_state_dict
from medtransfer.models.hdbet_unet import hdbet_state_dict, original_hdbet_network
from medtransfer.models.tf_graph import conv3d, conv3d_transpose, evaluate, read_graph
from medtransfer.models.torchscript_weights import read_torchscript_weights
from medtransfer.pretrain.packaged import PACKAGED_SOURCES, packaged_file
from medtransfer.transfer import create_strategy

REAL_MODELS = ("deepbrain_unet", "deepbet_linknet", "hdbet_unet")


def _weights(name: str):
    try:
        return packaged_file(PACKAGED_SOURCES[name])
    except MissingSourceError as err:
        pytest.skip(str(err))


def _colin(spacing: float) -> np.ndarray:
    """Colin27's T1 with skull (RAS, 1 mm) resampled to ``spacing`` mm, float32."""
    from medtransfer.bench.sources import colin27_files

    try:
        path = colin27_files().t1
    except MissingSourceError as err:
        pytest.skip(str(err))
    image = nib.load(path).get_fdata(dtype=np.float32)
    return ndimage.zoom(image, 1 / spacing, order=1).astype(np.float32)


def _crop(image: np.ndarray, shape: tuple[int, int, int], centre: tuple[float, float, float]) -> np.ndarray:
    start = [int(c * n - s / 2) for c, n, s in zip(centre, image.shape, shape, strict=True)]
    return np.ascontiguousarray(image[tuple(slice(a, a + s) for a, s in zip(start, shape, strict=True))])


def _max_abs_diff(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


# -- (a) same output as the original on a real head -------------------------------------------------------------


def test_deepbrain_reproduces_its_frozen_graph_on_a_real_head():
    path = _weights("deepbrain_unet")
    head = _colin(3.0)  # 60 x 72 x 60: the whole head, as deepbrain sees it (at 128^3)
    head = _crop(head, (56, 72, 56), (0.5, 0.5, 0.5))
    x = head / head.max()
    reference = evaluate(read_graph(path), "prob", {"img": x[None, ..., None], "training": np.bool_(False)})
    model = create_model("deepbrain_unet").eval()
    model.load_state_dict(deepbrain_state_dict(path))
    with torch.no_grad():
        prob = torch.sigmoid(model(torch.from_numpy(x)[None, None]))[0, 0]
    assert reference.shape == (1, 56, 72, 56, 1)
    assert 0.1 < float((reference > 0.5).mean()) < 0.6  # it finds a brain: the comparison is not of zeros
    assert _max_abs_diff(prob, reference[0, ..., 0]) < 1e-4


def test_deepbet_reproduces_its_torchscript_module_on_a_real_head():
    path = _weights("deepbet_linknet")
    head = _crop(_colin(2.0), (64, 96, 64), (0.5, 0.55, 0.55))
    low, high = np.percentile(head, (0.5, 99.5))
    unit = np.clip((head - low) / (high - low), 0, 1)
    x = torch.from_numpy(0.449 + 0.226 * (unit - unit.mean()) / unit.std())[None, None].float()
    original = torch.jit.load(str(path)).eval()
    model = create_model("deepbet_linknet").eval()
    model.load_state_dict(deepbet_state_dict(path))
    with torch.no_grad():
        expected, got = original(x), model(x).softmax(1)
    assert expected.shape == got.shape == (1, 2, 64, 96, 64)
    assert 0.05 < float((expected[0, 1] > 0.5).float().mean()) < 0.95
    assert _max_abs_diff(got, expected) < 1e-5


def test_hdbet_reproduces_its_network_class_in_ras_order():
    path = _weights("hdbet_unet")
    head = _crop(_colin(3.0), (48, 64, 48), (0.5, 0.5, 0.5))
    x = torch.from_numpy((head - head.mean()) / head.std())[None, None]
    original = original_hdbet_network(path.parent.parent)
    original.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    state, dropped = hdbet_state_dict(path)
    model = create_model("hdbet_unet").eval()
    model.load_state_dict(state)
    with torch.no_grad():  # HD-BET reads (z, y, x) arrays; the import reads (x, y, z)
        expected = original(x.permute(0, 1, 4, 3, 2)).permute(0, 1, 4, 3, 2)
        got = model(x)
    assert len(dropped) == 56  # running statistics of 26 norms x 2 + 2 deep-supervision heads
    assert _max_abs_diff(got.softmax(1), expected.softmax(1)) < 1e-4


# -- the readers ---------------------------------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes | int) -> bytes:
    if isinstance(payload, int):
        return _varint(number << 3) + _varint(payload)
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _tensor_proto(array: np.ndarray, *, packed_ints: bool = False) -> bytes:
    shape = b"".join(_field(2, _field(1, d)) for d in array.shape)
    if packed_ints:  # int_val, packed varints (negative numbers take 10 bytes)
        return _field(1, 3) + _field(2, shape) + _field(7, b"".join(_varint(int(v)) for v in array.ravel()))
    return _field(1, 1) + _field(2, shape) + _field(4, array.astype("<f4").tobytes())


def _node(name: str, op: str, inputs=(), **attrs: bytes) -> bytes:
    body = _field(1, name.encode()) + _field(2, op.encode()) + b"".join(_field(3, i.encode()) for i in inputs)
    for key, value in attrs.items():
        body += _field(5, _field(1, key.encode()) + _field(2, value))
    return _field(1, body)


def _int_list(values) -> bytes:
    return _field(1, _field(3, b"".join(_varint(v) for v in values)))


def test_graph_reader_decodes_a_hand_written_graph_def(tmp_path):
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 3, 2, 4)).astype(np.float32)
    conv_attrs = {"strides": _int_list([1, 1, 1, 1, 1]), "padding": _field(2, b"SAME")}
    graph = (
        _node("x", "Placeholder")
        + _node("k", "Const", value=_field(8, _tensor_proto(kernel)))
        + _node("axis", "Const", value=_field(8, _tensor_proto(np.array(-1), packed_ints=True)))
        + _node("y", "Conv3D", ["x", "k"], **conv_attrs)
        + _node("r", "Relu", ["y"])
        + _node("out", "ConcatV2", ["r", "y", "axis"], N=_field(3, 2))
    )
    path = tmp_path / "graph.pb"
    path.write_bytes(graph)
    nodes = read_graph(path)
    assert list(nodes) == ["x", "k", "axis", "y", "r", "out"]
    np.testing.assert_array_equal(nodes["k"].attrs["value"], kernel)
    assert int(nodes["axis"].attrs["value"]) == -1
    assert nodes["y"].attrs["strides"] == [1, 1, 1, 1, 1]
    assert nodes["y"].attrs["padding"] == "SAME"
    x = rng.normal(size=(1, 5, 6, 7, 2)).astype(np.float32)
    out = evaluate(nodes, "out", {"x": x})
    expected = torch.nn.functional.conv3d(
        torch.from_numpy(x).permute(0, 4, 1, 2, 3), torch.from_numpy(kernel).permute(4, 3, 0, 1, 2), padding=1
    ).permute(0, 2, 3, 4, 1)
    np.testing.assert_allclose(out[..., 4:], expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(out[..., :4], np.maximum(expected.numpy(), 0), atol=1e-5)
    (tmp_path / "bad.pb").write_bytes(b"\x0a\xff\xff\xff")
    with pytest.raises(DataError, match="not a TensorFlow frozen graph"):
        read_graph(tmp_path / "bad.pb")


def test_numpy_reference_ops_follow_tensorflow_padding():
    """Strided SAME conv pads (0, 1) on even sizes; its transpose is PyTorch's transposed conv cropped at the end."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 6, 4, 8, 3)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 3, 3, 2)).astype(np.float32)
    y = conv3d(x, kernel, [1, 2, 2, 2, 1], "SAME")
    torch_x, torch_k = torch.from_numpy(x).permute(0, 4, 1, 2, 3), torch.from_numpy(kernel).permute(4, 3, 0, 1, 2)
    expected = torch.nn.functional.conv3d(torch.nn.functional.pad(torch_x, (0, 1, 0, 1, 0, 1)), torch_k, stride=2)
    np.testing.assert_allclose(y, expected.permute(0, 2, 3, 4, 1).numpy(), atol=1e-5)
    dx = conv3d_transpose(np.array(x.shape), kernel, y, [1, 2, 2, 2, 1], "SAME")
    up = torch.nn.functional.conv_transpose3d(torch.from_numpy(y).permute(0, 4, 1, 2, 3), torch_k, stride=2)
    np.testing.assert_allclose(dx, up[:, :, :6, :4, :8].permute(0, 2, 3, 4, 1).numpy(), atol=1e-5)


def test_torchscript_reader_reads_tensors_and_runs_no_code(tmp_path):
    module = torch.jit.script(torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.InstanceNorm3d(2, affine=True)))
    path = tmp_path / "scripted.pt"
    module.save(str(path))
    weights = read_torchscript_weights(path)
    assert set(weights) == set(module.state_dict())
    assert all(torch.equal(weights[k], v) for k, v in module.state_dict().items())

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(Evil(), protocol=2))
    with pytest.raises(DataError, match=r"refused: the file references __builtin__\.print"):
        read_torchscript_weights(evil)
    (tmp_path / "notzip.pt").write_bytes(struct.pack("<4i", 1, 2, 3, 4))
    with pytest.raises(DataError, match="not a readable TorchScript archive"):
        read_torchscript_weights(tmp_path / "notzip.pt")


# -- (c) named stages and strategies ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", REAL_MODELS)
def test_named_stages_partition_the_parameters(name):
    model = create_model(name)
    stages = model.parameter_stages()
    assert set(stages) == set(model.state_dict()) | {n for n, _ in model.named_parameters()}
    groups = model.group_matcher()
    assert all(groups[s] for s in model.stage_names()), "every stage holds parameters"
    assert model.stage_names()[0] == "input"
    assert model.stage_names()[-1] == "head"
    assert "bottleneck" in model.stage_names()
    assert set(model.encoder.stage_modules()) == set(model.stage_names()[: model.stage_names().index("bottleneck") + 1])


@pytest.mark.parametrize("name", REAL_MODELS)
@pytest.mark.parametrize("spec", ["first_k:1", "frozen_encoder", "last_k:2", "mean_var", "hybrid_k:2"])
def test_strategies_apply_to_the_real_source_architectures(name, spec):
    source = {k: v.clone() for k, v in create_model(name).state_dict().items()}
    model = create_model(name, out_channels=2)
    plan = create_strategy(spec).prepare(model, source, seed=0)
    stages = model.stage_names()
    trainable = {row["stage"] for row in plan.description["stages"] if row["trainable"]}
    expected = {
        "first_k:1": {"input"},
        "frozen_encoder": set(stages) - set(model.encoder.stage_modules()),
        "last_k:2": set(stages[-2:]),
    }.get(spec, set(stages))
    assert trainable == expected
    for stage, module in model.stage_modules().items():
        assert all(p.requires_grad == (stage in expected) for p in module.parameters()), stage
    assert plan.audit is not None
    assert not plan.audit.missing
    assert not plan.audit.unexpected
