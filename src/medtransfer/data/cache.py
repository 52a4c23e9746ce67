"""Preprocessing cache: every case preprocessed once, stored as ``.npy`` and read back with ``mmap``.

Layout under ``cache_dir``::

    <config fingerprint>/index.json               # config, and per case: files, source stats, PreprocessInfo, ...
    <config fingerprint>/index.lock               # held (flock) while a builder updates index.json
    <config fingerprint>/<case>-<hash>_image.npy  # (C, X, Y, Z) float16 (default) or float32
    <config fingerprint>/<case>-<hash>_label.npy  # (X, Y, Z) uint8

An entry is keyed by the case id *and* its source files (``<hash>`` covers both, see :func:`case_key`), so two
datasets that share a case id and a ``cache_dir`` each keep their own arrays.  A case entry is reused while its source
files keep their size and modification time; a changed source or a different
:class:`~medtransfer.data.preprocess.PreprocessConfig` (another fingerprint folder) triggers a rebuild.  Arrays and
the index are written atomically, and each index update (read, add the entry, write) holds an exclusive lock, so
concurrent builders neither leave half-written files behind nor lose each other's entries.
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
from ..utils import atomic_path, file_lock, write_json_atomic
from .io import Volume, load_nifti
from .layouts import Case
from .preprocess import PreprocessConfig, PreprocessInfo, preprocess_case, split_channels

logger = logging.getLogger(__name__)

INDEX = "index.json"
INDEX_LOCK = "index.lock"
CACHE_VERSION = 2  # 2: entries keyed by case id + source files (1: by case id alone, so datasets could mix)


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


def _safe_name(case_id: str, sources: Sequence[str] = ()) -> str:
    """A file name stem in the cache: the id in portable characters plus a hash of the id itself and ``sources``, so
    that ids that differ only in other characters (``case 2`` / ``case_2``, ``病例1`` / ``症例1``) or in case (on a
    case-insensitive file system), or one id of two datasets (other ``sources``), never share files."""
    digest = hashlib.sha1("\0".join([case_id, *sources]).encode("utf-8")).hexdigest()[:10]
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', case_id)}-{digest}"


def case_key(case: Case) -> str:
    """The case's key in the index and the stem of its cache files: its id and its resolved source files (images,
    label), so the same id in another dataset (other files) gets another key."""
    return _safe_name(case.case_id, [str(path.resolve()) for path in case.files])


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
        self._built: dict[str, str] = {}  # case id -> key of the cases given to build(): load() reads those

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
        if entry is None or entry.get("image") != f"{case_key(case)}_image.npy":
            return False
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

        keyed = [(case, case_key(case)) for case in cases]
        index = self.read_index()
        todo = [(case, key) for case, key in keyed if not self.is_valid(case, index["cases"].get(key))]
        logger.info("cache %s: %d of %d case(s) to preprocess", self.folder, len(todo), len(keyed))
        for case, key in tqdm(todo, desc="preprocess", disable=not progress or not todo):
            entry = self._build_case(case)
            with self._index_lock():  # read, add, write in one step: entries other builders add meanwhile stay
                index = self.read_index()
                index["cases"][key] = entry
                self._write_index(index)
        self._built.update((case.case_id, key) for case, key in keyed)
        return [case.case_id for case, _ in todo]

    def _index_lock(self):
        """The lock (:func:`~medtransfer.utils.file_lock` on ``index.lock``) held around an index update."""
        self.folder.mkdir(parents=True, exist_ok=True)
        return file_lock(self.folder / INDEX_LOCK)

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
        name = case_key(case)
        entry: dict[str, Any] = {"case_id": case.case_id, "image": f"{name}_image.npy", "label": None}
        _save_npy(self.folder / entry["image"], image.astype(self.image_dtype))
        if lab is not None:
            entry["label"] = f"{name}_label.npy"
            _save_npy(self.folder / entry["label"], lab)
        entry.update(source=stats, info=info.to_dict(), metadata=_jsonable(case.metadata), shape=list(image.shape))
        return entry

    def case_ids(self) -> list[str]:
        """The ids of the cached cases (an id cached from two datasets once)."""
        return list(dict.fromkeys(entry["case_id"] for entry in self.read_index()["cases"].values()))

    def load(self, case: str | Case, *, mmap: bool = True, index: dict[str, Any] | None = None) -> CachedCase:
        """A cached case, memory-mapped read-only (``mmap=False`` reads it into memory).

        Args:
            case: a :class:`Case`, or a case id: the case of that id given to :meth:`build`, else the only cached
                case of that id.

        Raises:
            DataError: the case is not cached, the id is cached from several datasets (give the :class:`Case`, or
                build first), or a cache file is damaged.
        """
        index = index or self.read_index()
        key = self._key_of(case, index)
        if key not in index["cases"]:
            case_id = case.case_id if isinstance(case, Case) else case
            raise DataError(f"{self.folder}: case {case_id!r} is not in the cache; build it first")
        return self._load_entry(key, mmap, index)

    def _load_entry(self, key: str, mmap: bool, index: dict[str, Any]) -> CachedCase:
        entry = index["cases"][key]
        try:
            image = _read_npy(self.folder / entry["image"], mmap=mmap)
            label = _read_npy(self.folder / entry["label"], mmap=mmap) if entry["label"] else None
        except DataError as err:
            raise DataError(
                f"{err}; delete the folder {self.folder} to clear this cache (it is rebuilt from the dataset)"
            ) from err
        info = PreprocessInfo.from_dict(entry["info"])
        return CachedCase(entry["case_id"], image, label, info, entry.get("metadata", {}))

    def _key_of(self, case: str | Case, index: dict[str, Any]) -> str | None:
        """The index key of ``case`` (see :meth:`load`); ``None`` when no entry has its id."""
        if isinstance(case, Case):
            return case_key(case)
        if case in self._built:
            return self._built[case]
        keys = [key for key, entry in index["cases"].items() if entry.get("case_id") == case]
        if len(keys) > 1:
            sources = "; ".join(str(index["cases"][key]["source"][0]["path"]) for key in keys[:3])
            raise DataError(
                f"{self.folder}: case {case!r} is cached from {len(keys)} datasets (e.g. {sources}); build this "
                "dataset's cases with this cache first, or load the Case rather than its id"
            )
        return keys[0] if keys else None

    def load_all(self, cases: Sequence[str | Case] | None = None, *, mmap: bool = True) -> list[CachedCase]:
        """Every cached case (or the given cases or ids, see :meth:`load`), reading the index once."""
        index = self.read_index()
        if cases is None:
            return [self._load_entry(key, mmap, index) for key in index["cases"]]
        return [self.load(case, mmap=mmap, index=index) for case in cases]


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


def _as_uint8_label(volume: Volume, path: Path) -> Volume:
    """The label as uint8 (a 4D file with one component as 3D), keeping its file so later errors name it.

    Raises:
        DataError: values that are not integers in 0..255, naming the file.
    """
    array = np.asarray(volume.array)
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise DataError(f"{path}: label must hold integer values (run 'medtransfer data check')")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise DataError(f"{path}: label values must be in 0..255, got {array.min()}..{array.max()}")
    return Volume(array.astype(np.uint8), volume.affine, source=volume.source or str(path))


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
