"""``medtransfer predict`` on real NIfTI files: input geometry kept exactly, object found in the right place."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from medtransfer.checkpoint import save_checkpoint
from medtransfer.cli import main
from medtransfer.data.io import save_nifti
from medtransfer.models import list_models, register_model

THRESHOLD = "test_threshold_net"


class ThresholdNet(nn.Module):
    """A hand-built "trained" model: logit = 40 * (x - 0.5) on the [0, 1]-scaled image (2D or 3D)."""

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1) -> None:
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.conv = conv(in_channels, 1, 1)
        with torch.no_grad():
            self.conv.weight.fill_(40.0 / in_channels)
            self.conv.bias.fill_(-20.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


if THRESHOLD not in list_models():
    register_model(THRESHOLD, "test-only threshold network")(ThresholdNet)


def _run(tmp_path, spatial_dims=2, in_channels=1, inference=None):
    model = ThresholdNet(spatial_dims, in_channels)
    meta = {
        "preprocess": {"target_spacing": [1.0, 1.0, 1.0], "clip_percentiles": [0.0, 100.0]},
        "labels": {"background": 0, "lesion": 3},
        "inference": inference or {"divisor": 4},
    }
    spec = {"name": THRESHOLD, "config": {"spatial_dims": spatial_dims, "in_channels": in_channels}}
    save_checkpoint(
        tmp_path / "run" / "checkpoints" / "checkpoint_best.pt",
        {"model": spec, "state_dict": model.state_dict(), "meta": meta},
    )
    return tmp_path / "run"


def _scan():
    """A (30, 20, 12) LPI-like, anisotropic (0.8, 1.5, 2.5 mm), oblique-free scan with a bright box."""
    rng = np.random.default_rng(0)
    array = rng.normal(0.0, 0.05, (30, 20, 12)).astype(np.float32)
    box = np.zeros(array.shape, bool)
    box[8:20, 5:14, 3:9] = True
    array[box] += 1.0
    affine = np.array([[0, 0, -2.5, 10.0], [-0.8, 0, 0, 20.0], [0, 1.5, 0, -5.0], [0, 0, 0, 1]])
    return array, affine, box


def _dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize(
    ("spatial_dims", "inference"), [(2, {"divisor": 4, "slice_axis": 1}), (3, {"patch_size": [8, 8, 8]})]
)
def test_predict_keeps_input_grid_and_finds_the_object(tmp_path, spatial_dims, inference):
    run = _run(tmp_path, spatial_dims, inference=inference)
    array, affine, box = _scan()
    save_nifti(tmp_path / "scan.nii.gz", array, affine)
    assert (
        main(
            [
                "predict",
                "--model",
                str(run),
                "--input",
                str(tmp_path / "scan.nii.gz"),
                "--output",
                str(tmp_path / "mask.nii.gz"),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    out = nib.load(tmp_path / "mask.nii.gz")
    assert out.shape == array.shape
    assert np.allclose(out.affine, affine)
    labels = np.asarray(out.dataobj)
    assert set(np.unique(labels)) == {0, 3}
    assert _dice(labels == 3, box) > 0.9


def test_predict_folder_of_two_channel_cases(tmp_path):
    run = _run(tmp_path, in_channels=2)
    array, affine, box = _scan()
    (tmp_path / "in").mkdir()
    for case in ("a", "b"):
        for c in range(2):
            save_nifti(tmp_path / "in" / f"{case}_{c:04d}.nii.gz", array, affine)
    assert (
        main(["predict", "--model", str(run), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")]) == 0
    )
    for case in ("a", "b"):
        labels = np.asarray(nib.load(tmp_path / "out" / f"{case}.nii.gz").dataobj)
        assert _dice(labels == 3, box) > 0.9


def test_a_case_whose_channel_files_are_not_0000_to_c_is_refused_the_rest_predicted(tmp_path, capsys):
    """c_0000 + c_0002 (or h_0001 + h_0002) are two files but not channels 0 and 1: predicted, the second channel
    would hold the wrong scan. Each such case is one error naming what is missing; the good case is written."""
    run = _run(tmp_path, in_channels=2)
    array, affine, box = _scan()
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a_0000", "a_0001", "c_0000", "c_0002", "h_0001", "h_0002", "m_0000"):
        save_nifti(folder / f"{name}.nii.gz", array, affine)
    argv = ["predict", "--model", str(run), "--input", str(folder), "--output", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    for line in (
        f"error: {folder / 'c'}: the case's channel files are c_0000.nii.gz, c_0002.nii.gz; the 2-channel model "
        "needs c_0000 to c_0001 (c_0001 missing; c_0002.nii.gz beyond them)",
        f"error: {folder / 'h'}: the case's channel files are h_0001.nii.gz, h_0002.nii.gz; the 2-channel model "
        "needs h_0000 to h_0001 (h_0000 missing; h_0002.nii.gz beyond them)",
        f"error: {folder / 'm'}: the case's channel files are m_0000.nii.gz; the 2-channel model needs m_0000 to "
        "m_0001 (m_0001 missing)",
    ):
        assert line in err.splitlines()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.nii.gz"]
    assert _dice(np.asarray(nib.load(tmp_path / "out" / "a.nii.gz").dataobj) == 3, box) > 0.9


def test_a_two_channel_case_stored_also_as_one_file_is_named(tmp_path, capsys):
    run = _run(tmp_path, in_channels=2)
    array, affine, _ = _scan()
    (tmp_path / "in").mkdir()
    for name in ("a_0000.nii", "a_0001.nii", "a.nii"):
        save_nifti(tmp_path / "in" / name, array, affine)
    argv = ["predict", "--model", str(run), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'in' / 'a.nii'}: a_0000.nii is the same case 'a' (a case is one file named a.nii or "
        "files named a_0000, a_0001, ..., not both); keep one of them in the folder\n"
    )
    assert not (tmp_path / "out").exists()


def test_a_second_channel_file_is_refused_by_a_one_channel_model(tmp_path, capsys):
    """``p_0000`` and ``p_0001`` are channels 0 and 1 of case ``p`` (a T1 and a FLAIR, say): a 1-channel model
    would otherwise predict the FLAIR as a case of its own.  A lone ``q_0001`` (no ``q_0000``) stays a case."""
    run = _run(tmp_path)
    array, affine, _ = _scan()
    (tmp_path / "in").mkdir()
    for name in ("p_0000.nii.gz", "p_0001.nii.gz"):
        save_nifti(tmp_path / "in" / name, array, affine)
    argv = ["predict", "--model", str(run), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'in' / 'p_0001.nii.gz'}: beside p_0000.nii.gz this is another channel")
    assert "but the model takes 1 channel" in err
    assert err.count("\n") == 1
    assert not (tmp_path / "out").exists()
    (tmp_path / "in" / "p_0000.nii.gz").rename(tmp_path / "in" / "q_0001.nii.gz")
    assert main(argv) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p_0001.nii.gz", "q_0001.nii.gz"]


def test_a_scan_that_is_not_nifti_is_refused(tmp_path, capsys):
    """nibabel reads Analyze and MGH too, but predict's inputs are NIfTI (a folder skips other files already)."""
    run = _run(tmp_path)
    array, affine, _ = _scan()
    scan = tmp_path / "scan.mgz"
    nib.save(nib.MGHImage(array, affine), scan)
    argv = ["predict", "--model", str(run), "--input", str(scan), "--output", str(tmp_path / "out.nii.gz")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {scan}: not a NIfTI file (allowed: .nii, .nii.gz); convert it first")
    assert err.count("\n") == 1
    assert not (tmp_path / "out.nii.gz").exists()


def test_a_missing_input_is_named_before_the_model_is_loaded(tmp_path, capsys, monkeypatch):
    import medtransfer.infer as infer

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(infer, "load_predictor", no_load)
    missing = tmp_path / "nothing.nii.gz"
    argv = ["predict", "--model", str(tmp_path / "run"), "--input", str(missing), "--output", str(tmp_path / "o")]
    assert main(argv) == 2
    assert (
        capsys.readouterr().err == f"error: {missing}: input not found (give a .nii/.nii.gz file or a folder of them)\n"
    )


def test_bad_inputs_give_clear_errors(tmp_path, capsys):
    run = _run(tmp_path)
    save_nifti(tmp_path / "flat.nii.gz", np.zeros((4, 5), np.float32), np.eye(4))
    (tmp_path / "junk.nii.gz").write_bytes(b"not a nifti")
    array, affine, _ = _scan()
    save_nifti(tmp_path / "two.nii.gz", np.stack([array, array], -1), affine)
    cases = {"flat.nii.gz": "expected a 3D image", "junk.nii.gz": "unreadable", "two.nii.gz": "takes 1 channel"}
    for name, message in cases.items():
        argv = ["predict", "--model", str(run), "--input", str(tmp_path / name), "--output", str(tmp_path / "o.nii.gz")]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err
        assert name in err
    assert (
        main(["predict", "--model", str(tmp_path), "--input", str(tmp_path / "two.nii.gz"), "--output", "y.nii.gz"])
        == 2
    )
    assert "no checkpoint found" in capsys.readouterr().err


def _predict(run, source, output, *extra):
    return main(["predict", "--model", str(run), "--input", str(source), "--output", str(output), *extra])


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_predict_never_writes_over_its_input_scan(tmp_path, capsys):
    run = _run(tmp_path)
    array, affine, _ = _scan()
    scan = save_nifti(tmp_path / "scans" / "scan.nii.gz", array, affine)
    (tmp_path / "scans" / "symlink.nii.gz").symlink_to(scan)
    (tmp_path / "scans" / "hardlink.nii.gz").hardlink_to(scan)
    before = _snapshot(tmp_path / "scans")
    expected = {
        scan: f"{scan}: the output is the input scan; predict never writes over an input: give another --output file",
        tmp_path / "scans" / "symlink.nii.gz": f"the output is the same file as the input scan {scan};",
        tmp_path / "scans" / "hardlink.nii.gz": f"the output is the same file as the input scan {scan};",
        tmp_path
        / "scans"
        / ".."
        / "scans"
        / "scan.nii.gz": "scans/../scans/scan.nii.gz: the output is the input scan;",
    }
    for output, message in expected.items():
        assert _predict(run, scan, output) == 2
        err = capsys.readouterr().err
        assert message in err
        assert err.count("\n") == 1
    assert _snapshot(tmp_path / "scans") == before


def test_predict_folder_refuses_an_output_folder_whose_names_collide_with_inputs(tmp_path, capsys):
    run = _run(tmp_path)
    array, affine, _ = _scan()
    for name in ("a", "b_0000", "c"):  # a and c would be written as a.nii.gz and c.nii.gz: over the inputs
        save_nifti(tmp_path / "in" / f"{name}.nii.gz", array, affine)
    (tmp_path / "alias").symlink_to(tmp_path / "in")
    before = _snapshot(tmp_path / "in")
    for output in ("in", "alias"):
        assert _predict(run, tmp_path / "in", tmp_path / output) == 2
        err = capsys.readouterr().err
        assert f"{tmp_path / output / 'a.nii.gz'}: the output " in err
        assert (
            "(and 1 more output(s) would overwrite inputs); predict never writes over an input: give an --output "
            "folder other than the input folder" in err
        )
    assert _snapshot(tmp_path / "in") == before  # nothing predicted, not even b
    (tmp_path / "in" / "a.nii.gz").unlink()
    (tmp_path / "in" / "c.nii.gz").unlink()
    assert _predict(run, tmp_path / "in", tmp_path / "in") == 0  # no collision: b_0000 -> b.nii.gz next to it
    assert sorted(_snapshot(tmp_path / "in")) == ["b.nii.gz", "b_0000.nii.gz"]


@pytest.mark.parametrize(
    ("affine", "message"),
    [
        (np.zeros((4, 4)), "the voxel-to-world affine is zero"),
        (np.diag([1.0, 1.0, 0.0, 1.0]), "the voxel-to-world affine is singular"),
    ],
)
def test_predict_on_a_zero_or_singular_affine_is_one_error_line(tmp_path, capsys, write_raw_affine, affine, message):
    run = _run(tmp_path)
    array, _, _ = _scan()
    scan = write_raw_affine(tmp_path / "scan.nii.gz", array, affine)
    assert _predict(run, scan, tmp_path / "mask.nii.gz") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {scan}: {message}")
    assert err.count("\n") == 1
    assert not (tmp_path / "mask.nii.gz").exists()


def test_predict_refuses_nan_voxels_unless_allowed_and_then_warns(tmp_path, capsys, caplog):
    run = _run(tmp_path)
    array, affine, box = _scan()
    array[0, 0, :7] = np.nan
    scan = save_nifti(tmp_path / "nan.nii.gz", array, affine)
    mask = tmp_path / "mask.nii.gz"
    assert _predict(run, scan, mask) == 2
    assert capsys.readouterr().err == (
        f"error: {scan}: 7 NaN voxel(s) of 7200; scans with missing intensities are refused: pass --allow-nan to "
        "predict them with NaN read as background (the lowest clipped intensity)\n"
    )
    assert not mask.exists()
    with caplog.at_level("WARNING", logger="medtransfer.infer.io"):
        assert _predict(run, scan, mask, "--allow-nan") == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [f"{scan}: 7 NaN voxel(s) of 7200, predicted with NaN read as background (--allow-nan)"]
    assert _dice(np.asarray(nib.load(mask).dataobj) == 3, box) > 0.9
    empty = save_nifti(tmp_path / "empty.nii.gz", np.full_like(array, np.nan), affine)
    assert _predict(run, empty, mask, "--allow-nan", "--overwrite") == 2
    assert f"error: {empty}: all 7200 voxels are NaN or infinite" in capsys.readouterr().err
    # +inf inside the object reads as the brightest intensity: the object is still found
    bright = array.copy()
    bright[12:16, 8:12, 5:8] = np.inf  # 48 voxels inside the box
    infinite = save_nifti(tmp_path / "inf.nii.gz", bright, affine)
    caplog.clear()
    with caplog.at_level("WARNING", logger="medtransfer.infer.io"):
        assert _predict(run, infinite, mask, "--allow-nan", "--overwrite") == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        f"{infinite}: 7 NaN and 48 infinite voxel(s) of 7200, predicted with NaN read as background, +inf as the "
        "highest and -inf as the lowest clipped intensity (--allow-nan)"
    ]
    assert _dice(np.asarray(nib.load(mask).dataobj) == 3, box) > 0.9


def test_predict_folder_predicts_every_readable_scan_then_lists_the_failures(tmp_path, capsys, write_raw_affine):
    run = _run(tmp_path)
    array, affine, box = _scan()
    inputs = tmp_path / "in"
    for name in ("a_0000", "c_0000", "e_0000"):
        save_nifti(inputs / f"{name}.nii.gz", array, affine)
    (inputs / "b_0000.nii.gz").write_bytes(b"not a nifti")
    write_raw_affine(inputs / "d_0000.nii.gz", array, np.zeros((4, 4)))
    assert _predict(run, inputs, tmp_path / "out") == 2
    captured = capsys.readouterr()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.nii.gz", "c.nii.gz", "e.nii.gz"]
    for name in ("a", "c", "e"):
        assert _dice(np.asarray(nib.load(tmp_path / "out" / f"{name}.nii.gz").dataobj) == 3, box) > 0.9
    assert captured.out.split() == [str(tmp_path / "out" / f"{n}.nii.gz") for n in ("a", "c", "e")]
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 3
    assert errors[0].startswith(f"error: {inputs / 'b_0000.nii.gz'}: unreadable or corrupt NIfTI file")
    assert errors[1].startswith(f"error: {inputs / 'd_0000.nii.gz'}: the voxel-to-world affine is zero")
    assert errors[2] == (
        f"error: {inputs}: 2 of 5 scan(s) could not be predicted (listed above); the other 3 were written to "
        f"{tmp_path / 'out'}"
    )


def test_predict_into_a_read_only_folder_fails_before_any_work(tmp_path, capsys, read_only_dir, monkeypatch):
    import medtransfer.infer as infer

    run = _run(tmp_path)
    array, affine, _ = _scan()
    scan = save_nifti(tmp_path / "scan.nii.gz", array, affine)
    monkeypatch.setattr(infer, "load_predictor", lambda *a, **k: pytest.fail("the model was loaded"))
    for output in (read_only_dir / "mask.nii.gz", read_only_dir / "masks"):
        assert _predict(run, scan if output.name.endswith(".gz") else tmp_path, output) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {read_only_dir}: cannot write here (Permission denied), so {output} cannot")
        assert err.count("\n") == 1
    assert list(read_only_dir.iterdir()) == []
