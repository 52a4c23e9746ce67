"""Ensembles (``medtransfer ensemble``, :mod:`medtransfer.infer.ensemble`): members' probabilities averaged, the
ensemble's own minimum component size tuned on the members' shared validation cases, member changes refused.

The members are hand-built threshold networks (``testkit.threshold_run``: logit = 40 (x - t) on the raw
intensities, no scaling, no crop), so every probability below is worked out by hand.
"""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from medtransfer.checkpoint import load_checkpoint, save_checkpoint
from medtransfer.cli import main
from medtransfer.data.io import load_nifti, save_nifti
from medtransfer.data.layouts import load_dataset
from medtransfer.errors import ConfigError, DataError
from medtransfer.infer import load_predictor
from medtransfer.infer.ensemble import Ensemble, create_ensemble, load_ensemble
from medtransfer.infer.postprocess import lesion_volumes_by_case
from testkit import THRESHOLD_SHAPE, threshold_dataset, threshold_image, threshold_run


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + np.exp(-z))


def test_probabilities_are_the_members_mean_and_the_majority_decides(tmp_path):
    image, box1, box2 = threshold_image()
    volume = load_nifti(save_nifti(tmp_path / "scan.nii.gz", image, np.eye(4)), dtype="float32")
    low = [load_predictor(threshold_run(tmp_path, f"low{i}", 0.25), device="cpu", precision="fp32") for i in range(2)]
    high = [load_predictor(threshold_run(tmp_path, f"high{i}", 0.75), device="cpu", precision="fp32") for i in range(2)]
    paths = [tmp_path / n for n in ("low0", "low1", "high0")]
    two_low = Ensemble([low[0], low[1], high[0]], paths)
    probs = two_low.predict_proba(volume)
    # box 1 (x = 0.5): the low members give sigmoid(10), the high one sigmoid(-10): mean (2 s(10) + s(-10)) / 3
    expected = (2 * _sigmoid(10.0) + _sigmoid(-10.0)) / 3
    assert probs[1][box1] == pytest.approx(expected, abs=1e-5)
    assert probs[1][box2] == pytest.approx((2 * _sigmoid(30.0) + _sigmoid(10.0)) / 3, abs=1e-5)
    assert np.allclose(probs, sum(m.predict_proba(volume) for m in two_low.members) / 3, atol=1e-6)
    labels = two_low.predict(volume)
    assert labels.dtype == np.uint8
    assert labels.shape == THRESHOLD_SHAPE
    assert np.array_equal(labels[box1 | box2], np.ones((box1 | box2).sum(), np.uint8))  # 2 of 3 say box 1
    two_high = Ensemble([low[0], high[0], high[1]], [tmp_path / n for n in ("low0", "high0", "high1")])
    labels = two_high.predict(volume)
    assert not labels[box1].any()
    assert labels[box2].all()
    assert low[0].predict(volume)[box1].all()  # while the low member alone marks it


def _record_source_lesions(run, data, source):
    """Make ``run``'s checkpoint say its caps pooled ``source`` ({case: volumes}) with t0's two 64 mm³ lesions."""
    path = run / "checkpoints" / "checkpoint_last.pt"
    ckpt = load_checkpoint(path)
    ckpt["meta"]["postprocess"] |= {
        "lesion_prior": {"mode": "auto", "training_lesions": 2, "source_pooled": True},
        "prior_lesion_volumes_mm3": {**lesion_volumes_by_case(load_dataset(data), ["t0"]), **source},
    }
    save_checkpoint(path, ckpt)


def _free_size(volumes):
    """Half the 5 % lower prediction bound of log-normal volumes, written out (Student's t from scipy)."""
    from scipy import stats

    logs = np.log(volumes)
    n = len(logs)
    return 0.5 * np.exp(logs.mean() - stats.t.ppf(0.95, n - 1) * logs.std(ddof=1) * np.sqrt(1 + 1 / n))


def test_the_ensemble_pools_the_source_lesions_its_members_pooled_once(tmp_path):
    data = threshold_dataset(tmp_path / "data")
    runs = [threshold_run(tmp_path, "a", 0.25, val=()), threshold_run(tmp_path, "b", 0.4, val=())]
    # eight source lesions around t0's: 2 against 8 can reach p < 0.05, and these do not differ (p > 0.5)
    source = {f"src/{i}": [v] for i, v in enumerate((16.0, 32.0, 48.0, 64.0, 80.0, 96.0, 128.0, 256.0))}
    for run in runs:  # two members fine-tuned from the same source on the same scan: each case once
        _record_source_lesions(run, data, source)
    post = json.loads(create_ensemble(runs, tmp_path / "ens", data=data).read_text())["postprocess"]
    assert post["lesion_prior"]["source_lesions"] == 8
    assert post["lesion_prior"]["source_pooled"] is True
    assert post["lesion_prior"]["agreement_p"] > 0.5
    t0 = lesion_volumes_by_case(load_dataset(data), ["t0"])
    assert post["prior_lesion_volumes_mm3"] == {**t0, **source}
    expected = _free_size([64.0, 64.0, 16.0, 32.0, 48.0, 64.0, 80.0, 96.0, 128.0, 256.0])
    assert post["min_component_mm3"] == post["max_mm3_from_training_lesions"] == pytest.approx(expected, abs=1e-3)
    other = {f"other/{i}": [v * 1.1] for i, v in enumerate((16.0, 48.0, 80.0, 128.0))}
    _record_source_lesions(runs[1], data, other)  # another source's scans: both sets, each once
    post = json.loads(create_ensemble(runs, tmp_path / "ens2", data=data).read_text())["postprocess"]
    assert post["lesion_prior"]["source_lesions"] == 12
    assert post["prior_lesion_volumes_mm3"] == {**t0, **source, **other}


def test_create_tunes_the_minimum_component_on_shared_validation_and_predict_uses_it(tmp_path):
    data = threshold_dataset(tmp_path / "data")
    runs = [threshold_run(tmp_path, "a", 0.25), threshold_run(tmp_path, "b", 0.4)]
    out = tmp_path / "ens"
    path = create_ensemble(runs, out, device="cpu", precision="fp32")
    record = json.loads(path.read_text())
    post = record["postprocess"]
    # v0: both members mark both boxes (mean probability >= (s(10) + s(4)) / 2 = 0.99) and the 1-voxel speck.
    # Keeping the speck (size 0): 2 true, 1 false component, F1 = 0.8; any size of 2 voxels or more removes it:
    # F1 = 1.  The cap is half the training lesions' 64 mm³ (two of that volume: no spread) = 32 mm³, so of the
    # sizes tied at F1 1 (2..30 voxels of 1 mm³) the largest allowed, 30 mm³, is kept.
    assert post["max_mm3_from_training_lesions"] == 32.0
    # above 32 mm³ (up to the training lesions' 64 mm³, their 20 % bound) no size scores higher than 1
    assert post["max_mm3_if_validation_better"] == 64.0
    assert post["val_lesion_f1"]["0"] == pytest.approx(0.8)
    assert post["val_lesion_f1"]["2"] == 1.0
    assert post["min_component_mm3"] == 30.0
    assert post["tuned_on"] == ["v0"]
    assert [m["checkpoint"] for m in record["members"]] == [
        str((r / "checkpoints" / "checkpoint_last.pt").resolve()) for r in runs
    ]
    image, box1, box2 = threshold_image()
    save_nifti(tmp_path / "scan.nii.gz", image, np.eye(4))
    assert (
        main(
            [
                "predict",
                "--model",
                str(out),
                "--input",
                str(tmp_path / "scan.nii.gz"),
                "--output",
                str(tmp_path / "m.nii.gz"),
            ]
        )
        == 0
    )
    labels = np.asarray(nib.load(tmp_path / "m.nii.gz").dataobj)
    # both boxes kept (64 and 100 voxels are above 30 mm³), the speck removed
    assert np.array_equal(labels > 0, box1 | box2)
    assert data.is_dir()


def test_members_without_validation_cases_keep_the_training_lesions_free_size(tmp_path):
    threshold_dataset(tmp_path / "data")
    runs = [threshold_run(tmp_path, "a", 0.25, val=()), threshold_run(tmp_path, "b", 0.4, val=())]
    post = json.loads(create_ensemble(runs, tmp_path / "ens", device="cpu", precision="fp32").read_text())
    post = post["postprocess"]
    # as a single run without validation: half the training lesions' 64 mm³, nothing tuned
    assert post["min_component_mm3"] == 32.0
    assert post["tuned_on"] == []
    assert post["val_lesion_f1"] == {}
    # slice-budget members labelled no whole scan: their scans give no lesion sizes (as a single run)
    sliced = [threshold_run(tmp_path, f"s{i}", 0.25 + 0.1 * i, val=()) for i in range(2)]
    for run in sliced:
        summary = json.loads((run / "summary.json").read_text())
        (run / "summary.json").write_text(json.dumps({**summary, "every_kth_slice": 3}))
    with pytest.raises(ConfigError, match="neither validation cases .* nor whole labelled scans"):
        create_ensemble(sliced, tmp_path / "ens3", device="cpu")
    # with neither validation cases nor labelled scans there is nothing to take a size from
    bare = [threshold_run(tmp_path, "c", 0.25, val=(), train=()), threshold_run(tmp_path, "d", 0.4, val=(), train=())]
    with pytest.raises(ConfigError, match="neither validation cases .* nor whole labelled scans"):
        create_ensemble(bare, tmp_path / "ens2", device="cpu")
    assert not (tmp_path / "ens2").exists()


def test_cli_makes_an_ensemble_and_refuses_bad_requests(tmp_path, capsys):
    threshold_dataset(tmp_path / "data")
    a, b = threshold_run(tmp_path, "a", 0.25), threshold_run(tmp_path, "b", 0.75)
    argv = ["ensemble", "--model", str(a), "--model", str(b), "--device", "cpu", "--precision", "fp32"]
    assert main([*argv, "--out", str(tmp_path / "ens")]) == 0
    assert "2 members, minimum component 30 mm³" in capsys.readouterr().out
    before = (tmp_path / "ens" / "ensemble.json").read_bytes()
    assert main([*argv, "--out", str(tmp_path / "ens")]) == 2  # never written over
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert (tmp_path / "ens" / "ensemble.json").read_bytes() == before
    assert main(["ensemble", "--model", str(a), "--out", str(tmp_path / "one")]) == 2
    assert "an ensemble needs 2 or more runs" in capsys.readouterr().err
    assert main([*argv[:3], "--model", str(a), "--out", str(tmp_path / "twice")]) == 2
    assert "given twice" in capsys.readouterr().err
    assert main([*argv, "--min-component", "-3", "--out", str(tmp_path / "neg")]) == 2
    assert "--min-component" in capsys.readouterr().err
    assert main([*argv, "--min-component", "none", "--out", str(tmp_path / "off")]) == 0
    assert json.loads((tmp_path / "off" / "ensemble.json").read_text())["postprocess"] == {}
    for folder in ("one", "twice", "neg"):
        assert not (tmp_path / folder).exists()  # nothing half-written


def test_members_must_agree_on_labels_channels_and_validation_cases(tmp_path):
    threshold_dataset(tmp_path / "data")
    a = threshold_run(tmp_path, "a", 0.25)
    other_labels = threshold_run(tmp_path, "c", 0.5, labels={"background": 0, "lesion": 2})
    with pytest.raises(ConfigError, match="labels .* differ"):
        create_ensemble([a, other_labels], tmp_path / "e1", device="cpu")
    other_val = threshold_run(tmp_path, "d", 0.5, val=("t0",), train=("v0",))
    with pytest.raises(ConfigError, match="validated on"):
        create_ensemble([a, other_val], tmp_path / "e2", device="cpu")
    leaky = threshold_run(tmp_path, "e", 0.5, train=("t0", "v0"))
    with pytest.raises(ConfigError, match="trained on validation case"):
        create_ensemble([a, leaky], tmp_path / "e3", device="cpu")
    moved = threshold_run(tmp_path, "f", 0.5, data="elsewhere/Dataset")  # trained from another folder
    with pytest.raises(ConfigError, match="names the dataset elsewhere/Dataset, not a folder from here; give --data"):
        create_ensemble([moved, a], tmp_path / "e6", device="cpu")
    assert create_ensemble([moved, a], tmp_path / "e7", data=tmp_path / "data", device="cpu").is_file()
    # bare checkpoints have no split: a fixed size is needed
    bare = tmp_path / "bare.pt"
    shutil.copy(a / "checkpoints" / "checkpoint_last.pt", bare)
    shutil.copy(a / "checkpoints" / "checkpoint_last.pt", tmp_path / "bare2.pt")
    with pytest.raises(DataError, match="no summary.json"):
        create_ensemble([bare, tmp_path / "bare2.pt"], tmp_path / "e4", device="cpu")
    path = create_ensemble([bare, tmp_path / "bare2.pt"], tmp_path / "e5", min_component=12, device="cpu")
    assert json.loads(path.read_text())["postprocess"] == {"min_component_mm3": 12.0}
    assert not any((tmp_path / f"e{i}").exists() for i in (1, 2, 3, 4, 6))


def test_auto_leaves_small_components_alone_when_no_member_removes_them(tmp_path, capsys):
    # brain-mask / anatomy runs train with min_component_mm3 off: the lesion size rule would delete a whole brain
    threshold_dataset(tmp_path / "data")
    runs = [threshold_run(tmp_path, n, t, postprocess=None) for n, t in (("a", 0.25), ("b", 0.4))]
    argv = ["ensemble", "--model", str(runs[0]), "--model", str(runs[1]), "--device", "cpu", "--precision", "fp32"]
    assert main([*argv, "--out", str(tmp_path / "ens")]) == 0
    assert "2 members, no small-component removal" in capsys.readouterr().out
    assert json.loads((tmp_path / "ens" / "ensemble.json").read_text())["postprocess"] == {}
    image, box1, box2 = threshold_image()
    volume = load_nifti(save_nifti(tmp_path / "scan.nii.gz", image, np.eye(4)), dtype="float32")
    labels = load_ensemble(tmp_path / "ens", device="cpu", precision="fp32").predict(volume)
    assert labels[box1].all()  # kept (with auto tuned as for lesions, 30 mm³, the speck would go: it stays here)
    assert labels[box2].all()
    assert labels.sum() == box1.sum() + box2.sum() + 1  # the 1-voxel speck too: nothing removed


def test_members_with_the_same_label_values_but_other_label_names_are_refused(tmp_path):
    threshold_dataset(tmp_path / "data")
    lesion = threshold_run(tmp_path, "a", 0.25)
    brain = threshold_run(tmp_path, "b", 0.4, labels={"background": 0, "brain": 1}, postprocess=None)
    with pytest.raises(
        ConfigError,
        match=r"labels \{'background': 0, 'brain': 1\} differ from .*'lesion': 1\}.* "
        r"\(the same values, other names: another target\)",
    ):
        create_ensemble([lesion, brain], tmp_path / "e", device="cpu")
    assert not (tmp_path / "e").exists()


def test_a_member_changed_after_the_ensemble_was_made_is_refused(tmp_path, capsys):
    threshold_dataset(tmp_path / "data")
    a, b = threshold_run(tmp_path, "a", 0.25), threshold_run(tmp_path, "b", 0.75)
    create_ensemble([a, b], tmp_path / "ens", min_component=None, device="cpu")
    assert len(load_ensemble(tmp_path / "ens", device="cpu").members) == 2
    threshold_run(tmp_path, "b", 0.6)  # retrained in place
    with pytest.raises(DataError, match="changed after the ensemble was made"):
        load_ensemble(tmp_path / "ens", device="cpu")
    image, _, _ = threshold_image()
    save_nifti(tmp_path / "scan.nii.gz", image, np.eye(4))
    argv = ["predict", "--model", str(tmp_path / "ens"), "--input", str(tmp_path / "scan.nii.gz")]
    assert main([*argv, "--output", str(tmp_path / "m.nii.gz")]) == 2
    err = capsys.readouterr().err
    assert "ensemble.json" in err
    assert "SHA-256" in err
    assert "Traceback" not in err
    assert not (tmp_path / "m.nii.gz").exists()
    (tmp_path / "ens" / "ensemble.json").write_text('{"format": "something else"}')
    with pytest.raises(DataError, match="not a medtransfer ensemble record"):
        load_ensemble(tmp_path / "ens", device="cpu")


def test_ensemble_precision_defaults_to_fp32():
    """As a run tunes its own size (fp32), so the stored size does not depend on whether the CPU has bf16."""
    import inspect

    from medtransfer.cli import build_parser

    args = build_parser().parse_args(["ensemble", "--model", "a", "--model", "b", "--out", "e"])
    assert args.precision == "fp32"
    assert inspect.signature(create_ensemble).parameters["precision"].default == "fp32"
