"""Read a TensorFlow 1 frozen graph (``GraphDef`` protobuf) without TensorFlow, and evaluate it in NumPy.

A frozen graph is a protobuf message (https://protobuf.dev/programming-guides/encoding/): ``GraphDef.node`` (field
1) holds ``NodeDef`` messages (``name`` 1, ``op`` 2, ``input`` 3, ``attr`` 5: a map of ``AttrValue``); a ``Const``
node's ``value`` attribute is a ``TensorProto`` (``dtype`` 1, ``tensor_shape`` 2, ``tensor_content`` 4 or typed
value lists).  :func:`read_graph` decodes exactly that with a small wire-format reader.

:func:`evaluate` runs the graph op by op in NumPy (``NDHWC`` layout, TF's ``SAME``/``VALID`` padding rules,
``Switch``/``Merge`` dead-branch semantics).  It is the independent reference an imported re-implementation
is checked against (tests and ``benchmarks/import_check.py``); it knows the ops of small 3D U-Nets and
names any other op it meets.
"""

from __future__ import annotations

import itertools
import os
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import DataError

# tensorflow/core/framework/types.proto
DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8, 9: np.int64, 10: np.bool_}
_WIRE_VARINT, _WIRE_64, _WIRE_BYTES, _WIRE_32 = 0, 1, 2, 5


@dataclass(frozen=True)
class GraphNode:
    """One ``NodeDef``: ``attrs`` maps attribute names to decoded values (numbers, strings, lists, arrays)."""

    name: str
    op: str
    inputs: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _fields(data: bytes) -> Iterator[tuple[int, int, Any]]:
    """``(field number, wire type, value)`` of a message: ints for varints, bytes otherwise."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        wire = key & 7
        if wire == _WIRE_VARINT:
            value, pos = _varint(data, pos)
        elif wire == _WIRE_64:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == _WIRE_BYTES:
            length, pos = _varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire == _WIRE_32:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield key >> 3, wire, value


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _ints(wire: int, value: Any) -> list[int]:
    """A repeated int field: one varint, or a packed run of varints."""
    if wire == _WIRE_VARINT:
        return [_signed(value)]
    out, pos = [], 0
    while pos < len(value):
        item, pos = _varint(value, pos)
        out.append(_signed(item))
    return out


def _floats(wire: int, value: bytes, fmt: str) -> list[float]:
    size = struct.calcsize(fmt)
    return (
        list(struct.unpack(f"<{len(value) // size}{fmt}", value))
        if wire == _WIRE_BYTES
        else [*struct.unpack(f"<{fmt}", value)]
    )


def _shape(data: bytes) -> list[int]:
    dims = []
    for number, _, dim in _fields(data):
        if number == 2:
            dims.append(next((_signed(v) for n, _, v in _fields(dim) if n == 1), 0))
    return dims


def _tensor(data: bytes) -> np.ndarray:
    """Decode a ``TensorProto`` into an array of its dtype and shape."""
    dtype, shape, content, values = np.float32, [], None, []
    for number, wire, value in _fields(data):
        if number == 1:
            dtype = DTYPES.get(value)
            if dtype is None:
                raise ValueError(f"unsupported tensor dtype enum {value}")
        elif number == 2:
            shape = _shape(value)
        elif number == 4:
            content = value
        elif number == 5:
            values += _floats(wire, value, "f")
        elif number == 6:
            values += _floats(wire, value, "d")
        elif number in (7, 10, 11):  # int_val, int64_val, bool_val
            values += _ints(wire, value)
    count = int(np.prod(shape)) if shape else 1
    if content is not None:
        return np.frombuffer(content, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype).reshape(shape)
    array = np.asarray(values, dtype=dtype)
    if array.size < count:  # TF repeats the last value to fill the tensor
        array = np.concatenate([array, np.full(count - array.size, array[-1] if array.size else 0, dtype=dtype)])
    return array.reshape(shape)


def _attr_list(data: bytes) -> list[Any]:
    out: list[Any] = []
    for number, wire, value in _fields(data):
        if number == 2:
            out.append(value.decode("utf-8", "replace"))
        elif number in (3, 5, 6):
            out += _ints(wire, value)
        elif number == 4:
            out += _floats(wire, value, "f")
        elif number == 7:
            out.append(_shape(value))
        elif number == 8:
            out.append(_tensor(value))
    return out


def _attr(data: bytes) -> Any:
    """Decode an ``AttrValue`` (list, string, int, float, bool, type, shape or tensor)."""
    for number, _, value in _fields(data):
        if number == 1:
            return _attr_list(value)
        if number == 2:
            return value.decode("utf-8", "replace")
        if number in (3, 5, 6):
            return _signed(value)
        if number == 4:
            return struct.unpack("<f", value)[0]
        if number == 7:
            return _shape(value)
        if number == 8:
            return _tensor(value)
    return None


def _node(data: bytes) -> GraphNode:
    name = op = ""
    inputs, attrs = [], {}
    for number, _, value in _fields(data):
        if number == 1:
            name = value.decode()
        elif number == 2:
            op = value.decode()
        elif number == 3:
            inputs.append(value.decode())
        elif number == 5:
            entry = dict((n, v) for n, _, v in _fields(value))
            attrs[entry.get(1, b"").decode()] = _attr(entry.get(2, b""))
    return GraphNode(name, op, tuple(inputs), attrs)


def read_graph(path: str | os.PathLike) -> dict[str, GraphNode]:
    """The nodes of a frozen ``GraphDef`` file, by name, in file order.

    Raises:
        DataError: the file cannot be read or is not a GraphDef.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        nodes = [_node(value) for number, wire, value in _fields(data) if number == 1 and wire == _WIRE_BYTES]
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror or err})") from err
    except (ValueError, IndexError, UnicodeDecodeError, struct.error) as err:
        raise DataError(f"{path}: not a TensorFlow frozen graph (GraphDef protobuf): {err}") from err
    if not nodes or not all(n.name and n.op for n in nodes):
        raise DataError(f"{path}: not a TensorFlow frozen graph (GraphDef protobuf): no named nodes")
    return {n.name: n for n in nodes}


def graph_constants(nodes: Mapping[str, GraphNode]) -> dict[str, np.ndarray]:
    """Name -> value of every ``Const`` node (the frozen weights)."""
    return {n.name: n.attrs["value"] for n in nodes.values() if n.op == "Const" and "value" in n.attrs}


# -- NumPy evaluation (the reference) ------------------------------------------------------------------------

DEAD = object()  # output of the untaken side of a Switch (TF's "dead tensor")


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pads(shape: tuple[int, ...], kernel: tuple[int, ...], strides: list[int], padding: str) -> list[tuple[int, int]]:
    if padding == "VALID":
        return [(0, 0)] * 3
    return [_same_pads(shape[1 + i], kernel[i], strides[1 + i]) for i in range(3)]


def _window(x: np.ndarray, offset: tuple[int, ...], strides: list[int], out: tuple[int, ...]) -> tuple[slice, ...]:
    return (slice(None), *(slice(o, o + s * (n - 1) + 1, s) for o, s, n in zip(offset, strides[1:4], out, strict=True)))


def conv3d(x: np.ndarray, kernel: np.ndarray, strides: list[int], padding: str) -> np.ndarray:
    """TF ``Conv3D``: ``x`` (N, D, H, W, C), ``kernel`` (kd, kh, kw, C, O)."""
    pads = _pads(x.shape, kernel.shape[:3], strides, padding)
    xp = np.pad(x, [(0, 0), *pads, (0, 0)])
    out = tuple((xp.shape[1 + i] - kernel.shape[i]) // strides[1 + i] + 1 for i in range(3))
    y = np.zeros((x.shape[0], *out, kernel.shape[4]), dtype=np.float32)
    for offset in itertools.product(*(range(k) for k in kernel.shape[:3])):
        y += xp[_window(xp, offset, strides, out)] @ kernel[offset]
    return y


def conv3d_transpose(sizes: np.ndarray, kernel: np.ndarray, dy: np.ndarray, strides: list[int], padding: str):
    """TF ``Conv3DBackpropInputV2``: the gradient of ``conv3d`` with input shape ``sizes`` w.r.t. its input."""
    sizes = tuple(int(s) for s in sizes)
    pads = _pads(sizes, kernel.shape[:3], strides, padding)
    full = np.zeros((sizes[0], *(n + a + b for n, (a, b) in zip(sizes[1:4], pads, strict=True)), sizes[4]), np.float32)
    for offset in itertools.product(*(range(k) for k in kernel.shape[:3])):
        full[_window(full, offset, strides, dy.shape[1:4])] += dy @ kernel[offset].T
    return full[(slice(None), *(slice(a, a + n) for (a, _), n in zip(pads, sizes[1:4], strict=True)))]


def max_pool3d(x: np.ndarray, ksize: list[int], strides: list[int], padding: str) -> np.ndarray:
    """TF ``MaxPool3D`` (N, D, H, W, C)."""
    pads = _pads(x.shape, tuple(ksize[1:4]), strides, padding)
    xp = np.pad(x, [(0, 0), *pads, (0, 0)], constant_values=-np.inf)
    out = tuple((xp.shape[1 + i] - ksize[1 + i]) // strides[1 + i] + 1 for i in range(3))
    windows = [xp[_window(xp, o, strides, out)] for o in itertools.product(*(range(k) for k in ksize[1:4]))]
    return np.maximum.reduce(windows)


def _strided_slice(x, begin, end, strides, attrs):
    index = []
    for axis, (b, e, s) in enumerate(zip(begin, end, strides, strict=True)):
        if attrs.get("shrink_axis_mask", 0) >> axis & 1:
            index.append(int(b))
        else:
            lo = None if attrs.get("begin_mask", 0) >> axis & 1 else int(b)
            hi = None if attrs.get("end_mask", 0) >> axis & 1 else int(e)
            index.append(slice(lo, hi, int(s)))
    return np.asarray(x)[tuple(index)]


def _check_layout(node: GraphNode) -> None:
    layout = node.attrs.get("data_format", "NDHWC")
    if layout not in ("NDHWC", "NHWC"):
        raise NotImplementedError(f"{node.name}: data_format {layout} (only channels-last graphs)")


_OPS = {
    "Identity": lambda n, a: a[0],
    "Relu": lambda n, a: np.maximum(a[0], 0),
    "Sigmoid": lambda n, a: 0.5 * (1 + np.tanh(0.5 * a[0])),  # overflow-free logistic
    "BiasAdd": lambda n, a: a[0] + a[1],
    "Add": lambda n, a: np.add(a[0], a[1]),
    "Sub": lambda n, a: np.subtract(a[0], a[1]),
    "Mul": lambda n, a: np.multiply(a[0], a[1]),
    "RealDiv": lambda n, a: np.divide(a[0], a[1]),
    "Floor": lambda n, a: np.floor(a[0]),
    "Shape": lambda n, a: np.asarray(np.shape(a[0]), dtype=np.int32),
    "Pack": lambda n, a: np.stack(a, axis=n.attrs.get("axis", 0)),
    "ConcatV2": lambda n, a: np.concatenate(a[:-1], axis=int(a[-1])),
    "StridedSlice": lambda n, a: _strided_slice(a[0], a[1], a[2], a[3], n.attrs),
    "Conv3D": lambda n, a: conv3d(a[0], a[1], n.attrs["strides"], n.attrs["padding"]),
    "MaxPool3D": lambda n, a: max_pool3d(a[0], n.attrs["ksize"], n.attrs["strides"], n.attrs["padding"]),
    "Conv3DBackpropInputV2": lambda n, a: conv3d_transpose(a[0], a[1], a[2], n.attrs["strides"], n.attrs["padding"]),
}


def evaluate(nodes: Mapping[str, GraphNode], fetch: str, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
    """Compute the tensor ``fetch`` (``"name"`` or ``"name:i"``) with ``feeds`` for placeholders, in float32.

    Raises:
        NotImplementedError: the graph needs an op this reference does not implement (named).
    """
    memo: dict[str, list[Any]] = {}

    def outputs(name: str) -> list[Any]:
        if name in feeds:
            return [np.asarray(feeds[name])]
        if name not in memo:
            memo[name] = _run(nodes[name], [value(i) for i in nodes[name].inputs if not i.startswith("^")])
        return memo[name]

    def value(ref: str) -> Any:
        name, _, index = ref.partition(":")
        return outputs(name)[int(index or 0)]

    def _run(node: GraphNode, args: list[Any]) -> list[Any]:
        if node.op == "Const":
            return [node.attrs["value"]]
        if node.op == "PlaceholderWithDefault":
            return [args[0]]
        if node.op == "Merge":
            alive = next((i for i, a in enumerate(args) if a is not DEAD), None)
            return [DEAD, DEAD] if alive is None else [args[alive], np.int32(alive)]
        if any(a is DEAD for a in args):
            return [DEAD, DEAD]
        if node.op == "Switch":
            return [DEAD, args[0]] if bool(args[1]) else [args[0], DEAD]
        if node.op not in _OPS:
            raise NotImplementedError(f"{node.name}: op {node.op} is not implemented by the NumPy reference")
        _check_layout(node)
        return [_OPS[node.op](node, args)]

    result = value(fetch)
    return np.asarray(result, dtype=np.float32)
