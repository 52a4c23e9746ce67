"""Offline sources: idx reader, Debian file lookup and the missing-package error."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from medtransfer.bench import sources
from medtransfer.cli import main
from medtransfer.errors import DataError, MissingSourceError


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_read_idx_round_trip(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "x-idx3-ubyte.gz", array)
    np.testing.assert_array_equal(sources.read_idx(tmp_path / "x-idx3-ubyte.gz"), array)


def test_read_idx_rejects_bad_magic_and_truncation(tmp_path):
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x00\x00\x0d\x01\x00\x00\x00\x02ab"))
    with pytest.raises(DataError, match="magic"):
        sources.read_idx(tmp_path / "bad.gz")
    (tmp_path / "short.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05ab"))
    with pytest.raises(DataError, match="shape"):
        sources.read_idx(tmp_path / "short.gz")


def test_find_debian_file_searches_the_cache_root(tmp_path, monkeypatch):
    target = tmp_path / "usr/share/medtransfer-test/file.txt"
    target.parent.mkdir(parents=True)
    target.write_text("x")
    monkeypatch.setenv("MEDTRANSFER_DEBIAN_ROOT", str(tmp_path))
    assert sources.find_debian_file(Path("/usr/share/medtransfer-test/file.txt"), "pkg") == target


def test_missing_package_names_package_and_command(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTRANSFER_DEBIAN_ROOT", str(tmp_path))
    monkeypatch.setattr(sources, "MRICRON_DIR", Path("/nonexistent/mricron/templates"))
    with pytest.raises(MissingSourceError) as info:
        sources.colin27_files()
    message = str(info.value)
    assert "mricron-data" in message
    assert "install-data-packages.sh" in message
    assert "apt-get install mricron-data" in message


def test_cli_reports_missing_source_without_traceback(tmp_path, monkeypatch, capsys):
    from medtransfer.bench import atlas

    monkeypatch.setenv("MEDTRANSFER_DEBIAN_ROOT", str(tmp_path))
    monkeypatch.setattr(sources, "MRICRON_DIR", Path("/nonexistent/mricron/templates"))
    atlas.load_head_atlas.cache_clear()
    try:
        code = main(["data", "build-benchmark", "--out", str(tmp_path / "out"), "--subjects-per-domain", "1"])
    finally:
        atlas.load_head_atlas.cache_clear()
    assert code == 2
    err = capsys.readouterr().err
    assert "mricron-data" in err
    assert "Traceback" not in err


def test_fashion_mnist_is_read_with_labels():
    images, labels = sources.load_fashion_mnist("t10k")
    assert images.shape == (10000, 28, 28)
    assert images.dtype == np.uint8
    assert sorted(np.unique(labels).tolist()) == list(range(10))


def test_skimage_photos_are_local_grey_images():
    paths = sources.skimage_photo_paths()
    assert len(paths) >= 10
    photo = sources.load_photo_gray(paths[0])
    assert photo.ndim == 2
    assert 0.0 <= photo.min() <= photo.max() <= 1.0
