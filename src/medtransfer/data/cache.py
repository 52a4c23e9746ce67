"""Preprocessing cache: every case preprocessed once, stored as ``.npy`` and read back with ``mmap``.

Layout under ``cache_dir``::

    <config fingerprint>/index.json          # config, and per case: files, source stats, PreprocessInfo, metadata
    <config fingerprint>/<case>_image.npy    # (C, X, Y, Z) float16 (default) or float32
    <config fingerprint>/<case>_label.npy    # (X, Y, Z) uint8

A case entry is reused while its source files keep their size and modification time; a changed source or a
different :class:`~medtransfer.data.preprocess.PreprocessConfig` (another fingerprint folder) triggers a rebuild.
Arrays and the index are written atomically, so concurrent builders never leave half-written files behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..utils import atomic_path, write_json_atomic
from .io import load_nifti
from .layouts import Case
from .preprocess import PreprocessConfig, PreprocessInfo, preprocess_case, split_channels

logger = logging.getLogger(__name__)

INDEX = "index.json"
CACHE_VERSION = 1


@dataclass(frozen=True)
class CachedCase:
    """One preprocessed case (arrays memory-mapped, read-only).

    Attributes:
        case_id: the case id.
        image: ``(C, X, Y, Z)``.
        label: ``(X, Y, Z)`` uint8, or ``None`` for unlabelled cases.
        info: geometry needed to map predictions back to the input file.
        metadata: the case's metadata (subject, domain, ...).
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    info: PreprocessInfo
    metadata: dict[str, Any] = field(default_factory=dict)


def _source_stats(case: Case) -> list[dict[str, Any]]:
    stats = []
    for path in case.files:
        st = path.stat()
        stats.append({"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return stats


def _safe_name(case_id: str) -> str:
    """The case's file name stem in the cache: its id in portable characters plus a hash of the id itself, so that
    ids that differ only in other characters (``case 2`` / ``case_2``, ``病例1`` / ``症例1``) or in case (on a
    case-insensitive file system) never share files."""
    digest = hashlib.sha1(case_id.encode("utf-8")).hexdigest()[:10]
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', case_id)}-{digest}"


class PreprocessCache:
    """Preprocessed arrays of a set of cases under one configuration.

    Args:
        cache_dir: parent folder; each configuration gets its own sub-folder.
        config: preprocessing configuration.
        image_dtype: ``float16`` (half the memory, the default) or ``float32``.

    Example:
        >>> cache = PreprocessCache("/tmp/cache", PreprocessConfig())  # doctest: +SKIP
        >>> cache.build(load_dataset("data/brainshift").cases)  # doctest: +SKIP
        >>> cache.load("case000").image.shape  # doctest: +SKIP
        (1, 160, 190, 160)
    """

    def __init__(self, cache_dir: str | os.PathLike, config: PreprocessConfig, *, image_dtype: str = "float16") -> None:
        if image_dtype not in ("float16", "float32"):
            raise DataError(f"image_dtype must be 'float16' or 'float32', got {image_dtype!r}")
        self.config = config
        self.image_dtype = image_dtype
        self.folder = Path(cache_dir) / f"{config.fingerprint()}_{image_dtype}"

    @property
    def index_path(self) -> Path:
        return self.folder / INDEX

    def read_index(self) -> dict[str, Any]:
        """The index (empty when missing, unreadable or from another cache version)."""
        try:
            index = json.loads(self.index_path.read_text())
        except (OSError, json.JSONDecodeError):
            return {"cases": {}}
        return index if index.get("version") == CACHE_VERSION else {"cases": {}}

    def is_valid(self, case: Case, entry: dict[str, Any] | None) -> bool:
        """True when the cached entry exists, its files exist and the sources are unchanged."""
        if entry is None or entry.get("image") != f"{_safe_name(case.case_id)}_image.npy":
            return False  # an entry of an older cache, named without the id's hash: rebuilt under the new name
        if not (self.folder / entry["image"]).is_file():
            return False
        if entry.get("label") and not (self.folder / entry["label"]).is_file():
            return False
        if bool(entry.get("label")) != (case.label is not None):
            return False
        try:
            if entry["source"] != _source_stats(case):
                return False
        except OSError:
            return False
        damaged = self._damaged_array(entry)
        if damaged:
            logger.warning("%s; rebuilding case %r", damaged, case.case_id)
        return damaged is None

    def _damaged_array(self, entry: dict[str, Any]) -> str | None:
        """What is wrong with an entry's ``.npy`` files (truncated, foreign, other shape or type), or ``None``.

        Only the headers are read (memory-mapped), so checking a large cache stays cheap.
        """
        expected = [(entry["image"], tuple(entry.get("shape", ())), np.dtype(self.image_dtype))]
        if entry.get("label"):
            expected.append((entry["label"], tuple(entry.get("shape", ()))[1:], np.dtype(np.uint8)))
        for name, shape, dtype in expected:
            path = self.folder / name
            try:
                array = _read_npy(path, mmap=True)
            except DataError as err:
                return str(err)
            if array.shape != shape or array.dtype != dtype:
                return f"{path}: cache file holds {array.dtype} {array.shape}, expected {dtype} {shape}"
        return None

    def build(self, cases: Iterable[Case], *, progress: bool = True) -> list[str]:
        """Preprocess the cases not cached yet (or stale); returns the ids that were (re)built."""
        from tqdm.auto import tqdm

        cases = list(cases)
        index = self.read_index()
        todo = [c for c in cases if not self.is_valid(c, index["cases"].get(c.case_id))]
        logger.info("cache %s: %d of %d case(s) to preprocess", self.folder, len(todo), len(cases))
        for case in tqdm(todo, desc="preprocess", disable=not progress or not todo):
            entry = self._build_case(case)
            index = self.read_index()  # merge with entries written meanwhile by other builders
            index["cases"][case.case_id] = entry
            self._write_index(index)
        return [c.case_id for c in todo]

    def _write_index(self, index: dict[str, Any]) -> None:
        index.update(version=CACHE_VERSION, config=self.config.to_dict(), image_dtype=self.image_dtype)
        write_json_atomic(self.index_path, index)

    def _build_case(self, case: Case) -> dict[str, Any]:
        stats = _source_stats(case)
        channels = [ch for path in case.images for ch in split_channels(load_nifti(path, dtype=np.float32))]
        label = load_nifti(case.label) if case.label is not None else None
        if label is not None:
            label = _as_uint8_label(label, case.label)
        image, lab, info = preprocess_case(channels, self.config, label)
        name = _safe_name(case.case_id)
        entry: dict[str, Any] = {"image": f"{name}_image.npy", "label": None}
        _save_npy(self.folder / entry["image"], image.astype(self.image_dtype))
        if lab is not None:
            entry["label"] = f"{name}_label.npy"
            _save_npy(self.folder / entry["label"], lab)
        entry.update(source=stats, info=info.to_dict(), metadata=_jsonable(case.metadata), shape=list(image.shape))
        return entry

    def case_ids(self) -> list[str]:
        return list(self.read_index()["cases"])

    def load(self, case_id: str, *, mmap: bool = True, index: dict[str, Any] | None = None) -> CachedCase:
        """A cached case, memory-mapped read-only (``mmap=False`` reads it into memory)."""
        entry = (index or self.read_index())["cases"].get(case_id)
        if entry is None:
            raise DataError(f"{self.folder}: case {case_id!r} is not in the cache; build it first")
        try:
            image = _read_npy(self.folder / entry["image"], mmap=mmap)
            label = _read_npy(self.folder / entry["label"], mmap=mmap) if entry["label"] else None
        except DataError as err:
            raise DataError(
                f"{err}; delete the folder {self.folder} to clear this cache (it is rebuilt from the dataset)"
            ) from err
        return CachedCase(case_id, image, label, PreprocessInfo.from_dict(entry["info"]), entry.get("metadata", {}))

    def load_all(self, case_ids: Sequence[str] | None = None, *, mmap: bool = True) -> list[CachedCase]:
        """Every cached case (or the given ids), reading the index once."""
        index = self.read_index()
        ids = list(index["cases"]) if case_ids is None else case_ids
        return [self.load(cid, mmap=mmap, index=index) for cid in ids]


def build_cache(
    cases: Iterable[Case],
    cache_dir: str | os.PathLike,
    config: PreprocessConfig,
    *,
    image_dtype: str = "float16",
    progress: bool = True,
) -> PreprocessCache:
    """Build (or reuse) the cache of ``cases`` and return it."""
    cache = PreprocessCache(cache_dir, config, image_dtype=image_dtype)
    cache.build(cases, progress=progress)
    return cache


def _as_uint8_label(volume, path: Path):
    array = np.asarray(volume.array)
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise DataError(f"{path}: label must hold integer values (run 'medtransfer data check')")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise DataError(f"{path}: label values must be in 0..255, got {array.min()}..{array.max()}")
    return type(volume)(array.astype(np.uint8), volume.affine)


def _read_npy(path: Path, *, mmap: bool) -> np.ndarray:
    """A cached array (read-only memory map, or in memory).

    Raises:
        DataError: the file is missing, truncated or not a ``.npy`` file (the message names it, not NumPy's advice
            to allow pickles).
    """
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"{path}: damaged preprocessing cache file ({_npy_problem(path)})") from err
    if not isinstance(array, np.ndarray):  # an .npz archive under an .npy name
        array.close()
        raise DataError(f"{path}: damaged preprocessing cache file (not a .npy array)")
    return array


def _npy_problem(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            magic = handle.read(6)
    except OSError as err:
        return f"cannot be read: {err.strerror or err}"
    return "truncated or damaged .npy array" if magic == b"\x93NUMPY" else "not a .npy array"


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, np.ascontiguousarray(array))


def _jsonable(metadata: dict[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, str | int | float | bool) or v is None else str(v) for k, v in metadata.items()}
