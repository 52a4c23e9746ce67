"""``build_zoo`` writes the six sources + scratch from a (miniature) brainshift folder in one call."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from pretrain_helpers import TINY_MODEL, one_thread, write_tiny_nnunet  # noqa: E402

from medtransfer.checkpoint import load_checkpoint  # noqa: E402
from medtransfer.pretrain.zoo import build_zoo  # noqa: E402


def _mini_brainshift(root: Path) -> Path:
    rng = np.random.default_rng(0)
    sources = root / "sources"
    sources.mkdir(parents=True)
    np.savez(
        sources / "mri_classification.npz",
        images=rng.random((12, 20, 20)).astype(np.float32),
        labels=np.arange(12) % 6,
        class_names=np.asarray(["a", "b", "c", "d", "e", "f"]),
    )
    np.savez(
        sources / "natural_classification.npz",
        images=rng.integers(0, 255, (12, 28, 28), dtype=np.uint8),
        labels=np.arange(12) % 10,
    )
    np.savez(
        sources / "natural_segmentation.npz",
        images=rng.random((12, 32, 32)).astype(np.float32),
        labels=(rng.random((12, 32, 32)) > 0.7).astype(np.uint8),
    )
    np.savez(sources / "natural_ssl.npz", images=rng.random((12, 32, 32)).astype(np.float32))
    write_tiny_nnunet(root / "Dataset001_BrainExtraction", {"background": 0, "brain": 1})
    write_tiny_nnunet(root / "Dataset002_Anatomy", {"background": 0, "a": 1, "b": 2}, cases=3)
    return root


@pytest.mark.slow
@pytest.mark.usefixtures(one_thread.__name__)
def test_zoo_writes_six_sources_and_scratch(tmp_path, caplog):
    data = _mini_brainshift(tmp_path / "brainshift")
    options = dict(size=16, epochs=1, steps_per_epoch=2, batch_size=4, progress=False, device="cpu")
    with caplog.at_level("WARNING", logger="medtransfer.pretrain.sources"):
        summary = build_zoo(tmp_path / "zoo", data, model_config=dict(TINY_MODEL), **options)
    # the MRI sources warn that they read every case: a target fine-tuned and tested on this build would leak
    leaks = [r.getMessage() for r in caplog.records if "seen in pretraining" in r.getMessage()]
    assert any("Dataset002_Anatomy" in m and "segmentation" in m and "labels included" in m for m in leaks)
    assert any("Dataset001_BrainExtraction" in m and "self-supervised" in m and "images only" in m for m in leaks)
    expected = {f"{d}_{t}" for d in ("natural", "mri") for t in ("classification", "segmentation", "restoration")}
    assert set(summary) == expected | {"scratch"}
    assert json.loads((tmp_path / "zoo" / "zoo.json").read_text()) == summary
    architectures = set()
    for name, entry in summary.items():
        ckpt = load_checkpoint(tmp_path / "zoo" / entry["checkpoint"])
        config = {k: v for k, v in ckpt["model"]["config"].items() if k not in ("head", "num_classes", "out_channels")}
        architectures.add((ckpt["model"]["name"], json.dumps(config, sort_keys=True)))
        if name != "scratch":
            assert entry["steps"] == 2
            assert entry["metrics"]
    assert len(architectures) == 1  # one architecture: only the source differs
    assert summary["mri_segmentation"]["data"] == "Dataset002_Anatomy axial slices with labels"
    # a rerun reuses every finished source and keeps each one's own training time in zoo.json
    again = build_zoo(tmp_path / "zoo", data, model_config=dict(TINY_MODEL), **options)
    for name, entry in summary.items():
        meta = load_checkpoint(tmp_path / "zoo" / entry["checkpoint"])["meta"]
        assert again[name]["seconds"] == entry["seconds"] == round(meta.get("seconds", 0.0), 1), name
