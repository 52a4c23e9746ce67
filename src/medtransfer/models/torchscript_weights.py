"""Read the tensors of a TorchScript archive as data, without running (or compiling) any of its code.

A TorchScript file (``torch.jit.save``) is a zip archive: ``<root>/data.pkl`` pickles the module tree (objects
of ``__torch__.*`` classes whose attributes are sub-modules and tensors), the tensors' bytes sit in
``<root>/data/<key>``, and ``<root>/code/`` holds the TorchScript source.  ``torch.jit.load`` compiles that
source; this reader only unpickles the tree with an unpickler that accepts nothing but plain containers,
tensor rebuilding and storages (any other global is refused), so a file's code never runs, as
``torch.load(weights_only=True)`` guarantees for checkpoints.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from collections.abc import Iterator

import torch

from ..errors import DataError

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}
_SKIPPED_ATTRIBUTES = ("training", "_is_full_backward_hook")
# torch.jit._pickle's typed-container builders return their argument unchanged: data, not code
_JIT_BUILDERS = {
    "build_intlist": lambda data: data,
    "build_doublelist": lambda data: data,
    "build_boollist": lambda data: data,
    "build_tensorlist": lambda data: data,
    "restore_type_tag": lambda value, _type: value,
}


class _ScriptObject:
    """Stand-in for a ``__torch__.*`` module object: its pickled attributes land in ``__dict__``."""


class _StorageType:
    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


class _DataUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, root: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.root = archive, root

    def find_class(self, module: str, name: str):
        if module.startswith("__torch__"):
            return type(name, (_ScriptObject,), {})
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return torch._utils._rebuild_tensor_v2
        if module == "torch.jit._pickle" and name in _JIT_BUILDERS:
            return _JIT_BUILDERS[name]
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise pickle.UnpicklingError(
            f"refused: the file references {module}.{name}; only module trees of tensors are read (no code runs)"
        )

    def persistent_load(self, pid):
        kind, storage_type, key, _location, _numel = pid
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        raw = bytearray(self.archive.read(f"{self.root}/data/{key}"))
        untyped = torch.frombuffer(raw, dtype=torch.uint8).untyped_storage() if raw else torch.UntypedStorage(0)
        return torch.storage.TypedStorage(wrap_storage=untyped, dtype=storage_type.dtype, _internal=True)


def read_torchscript_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Every tensor attribute of the archived module tree, by dotted name (``down0.block1.double_conv.0.weight``).

    Raises:
        DataError: not a readable TorchScript archive, or it holds objects other than modules and tensors.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if not pickles:
                raise DataError(f"{path}: not a TorchScript archive (no <root>/data.pkl inside)")
            root = pickles[0].split("/")[0]
            tree = _DataUnpickler(archive.read(pickles[0]), archive, root).load()
    except (OSError, zipfile.BadZipFile, KeyError) as err:
        raise DataError(f"{path}: not a readable TorchScript archive ({err})") from err
    except (pickle.UnpicklingError, ValueError, TypeError, EOFError) as err:
        raise DataError(f"{path}: {err}") from err
    weights = dict(_tensors(tree, ""))
    if not weights:
        raise DataError(f"{path}: the TorchScript archive holds no tensors")
    return weights


def _tensors(obj: object, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    if not isinstance(obj, _ScriptObject):
        return
    for name, value in vars(obj).items():
        if name in _SKIPPED_ATTRIBUTES:
            continue
        if isinstance(value, torch.Tensor):
            yield f"{prefix}{name}", value
        else:
            yield from _tensors(value, f"{prefix}{name}.")
