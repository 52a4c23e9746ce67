"""benchmarks/domain_shift.py: 2.5D slicing, DART-style scoring on the 1 mm grid, the matrix summaries, grouping
by head (anatomy shift), and a small run that learns."""

from __future__ import annotations

import argparse
import csv
import json

import nibabel as nib
import numpy as np
import pytest
import torch


def test_stack_neighbours_repeats_edge_slices(ds):
    slices = np.arange(3, dtype=np.float32).reshape(3, 1, 1)
    stacked = ds.stack_neighbours(slices, context=1)
    assert stacked.shape == (3, 3, 1, 1)
    assert stacked[:, :, 0, 0].tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 2]]
    assert ds.stack_neighbours(slices, context=0)[:, 0, 0, 0].tolist() == [0, 1, 2]


def test_pad_slices_puts_axial_slices_first_and_zero_pads(ds):
    volume = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    padded = ds.pad_slices(volume, (16, 16))
    assert padded.shape == (4, 16, 16)
    np.testing.assert_array_equal(padded[1, :2, :3], volume[:, :, 1])
    assert padded[:, 2:].sum() == 0
    assert padded[:, :, 3:].sum() == 0


def _sphere(shape, spacing, offset, centre=23.5, radius=15.0):
    """A ball evaluated at the voxel centres ``offset + spacing * index`` (mm)."""
    grid = np.meshgrid(*[offset + spacing * np.arange(n) for n in shape], indexing="ij")
    return (sum((g - centre) ** 2 for g in grid) <= radius**2).astype(np.float32)


class _Echo(torch.nn.Module):
    """A stand-in network whose logits are its centre input channel (optionally moved ``shift`` voxels)."""

    def __init__(self, context: int, shift: int = 0):
        super().__init__()
        self.context, self.shift = context, shift

    def forward(self, x):
        centre = x[:, self.context : self.context + 1]
        return torch.roll((centre - 0.5) * 40, self.shift, dims=-2)


def _case(ds, tmp_path, spacing: float):
    truth = _sphere((48, 48, 48), 1.0, 0.0)
    path = tmp_path / "truth.nii.gz"
    nib.save(nib.Nifti1Image(truth.astype(np.uint8), np.eye(4)), path)
    offset = (spacing - 1) / 2  # the working grid covers the same field of view as the 1 mm grid
    label = _sphere((int(48 / spacing),) * 3, spacing, offset)
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = offset
    return ds.Case("c", "d", label.copy(), label, affine, path)


def test_a_perfect_prediction_at_1mm_scores_one(ds, tmp_path):
    case = _case(ds, tmp_path, 1.0)
    dice, surface = ds.score(_Echo(context=1), case, (48, 48), tta=True, context=1)
    assert dice == pytest.approx(1.0)
    assert surface == pytest.approx(1.0)


def test_a_perfect_prediction_at_2mm_is_scored_on_the_1mm_truth(ds, tmp_path):
    # probabilities resampled linearly to 1 mm recover the ball: the coarse grid costs little at 1 mm tolerance
    case = _case(ds, tmp_path, 2.0)
    dice, surface = ds.score(_Echo(context=0), case, (32, 32), context=0)
    assert dice > 0.95
    assert surface > 0.95


def test_a_1mm_shift_is_within_tolerance_and_a_3mm_shift_scores_like_the_peer(ds, tmp_path):
    case = _case(ds, tmp_path, 1.0)
    dice, surface = ds.score(_Echo(context=0, shift=1), case, (48, 48), context=0)
    assert surface == pytest.approx(1.0)  # every surface point moved by exactly the (inclusive) tolerance
    assert dice < 0.96  # while the overlap already lost a slab one voxel thick on each side
    surface_distance = pytest.importorskip("surface_distance")
    _, surface = ds.score(_Echo(context=0, shift=3), case, (48, 48), context=0)
    truth = _sphere((48, 48, 48), 1.0, 0.0) > 0
    distances = surface_distance.compute_surface_distances(truth, np.roll(truth, 3, axis=0), (1.0, 1.0, 1.0))
    assert surface == pytest.approx(surface_distance.compute_surface_dice_at_tolerance(distances, 1.0))
    assert surface < 0.6


def test_summarise_counts_the_trained_rows_only(ds):
    result = {
        "domains": ["a", "b", "c"],
        "train_domains": ["a", "c"],
        "surface_dice_1mm": [[0.9, 0.5, 0.7], [None, None, None], [0.2, 0.65, 0.95]],
    }
    out = ds.summarise(result)
    assert out["diagonal_surface_dice_min"] == 0.9
    assert out["diagonal_surface_dice_mean"] == 0.925
    assert out["off_diagonal_surface_dice_min"] == 0.2
    assert out["off_diagonal_surface_dice_mean"] == pytest.approx((0.5 + 0.7 + 0.2 + 0.65) / 4, abs=1e-3)
    assert out["off_diagonal_pairs_below_0.6"] == 2


def test_summarise_a_single_domain_run_has_no_off_diagonal(ds):
    out = ds.summarise({"domains": ["a"], "train_domains": ["a"], "surface_dice_1mm": [[0.88]]})
    assert out["diagonal_surface_dice_min"] == 0.88
    assert out["off_diagonal_surface_dice_mean"] is None
    assert out["off_diagonal_pairs_below_0.6"] == 0


def test_merge_takes_each_row_from_the_run_that_trained_it(ds, tmp_path):
    nan = float("nan")
    base = {"domains": ["a", "b"], "total_seconds": 10.0}
    first = {
        **base,
        "train_domains": ["a"],
        "dice": [[0.9, 0.4], [nan, nan]],
        "surface_dice_1mm": [[0.8, 0.3], [nan, nan]],
    }
    second = {
        **base,
        "train_domains": ["b"],
        "dice": [[nan, nan], [0.5, 0.95]],
        "surface_dice_1mm": [[nan, nan], [0.2, 0.9]],
    }
    paths = []
    for name, run in (("first", first), ("second", second)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(run))
    merged = ds.merge([str(p) for p in paths])
    assert merged["surface_dice_1mm"] == [[0.8, 0.3], [0.2, 0.9]]
    assert merged["dice"] == [[0.9, 0.4], [0.5, 0.95]]
    assert merged["train_domains"] == ["a", "b"]
    assert merged["total_seconds"] == 20.0
    assert merged["off_diagonal_pairs_below_0.6"] == 2


@pytest.mark.slow
def test_a_small_run_learns_brain_extraction(ds, tmp_path):
    """Two domains at 4 mm, two subjects each (one to train, one to test), a short run: the in-domain model
    must find the brain (Dice far above an empty or whole-head guess) and the matrix must be complete."""
    args = _args(
        tmp_path / "bs",
        subjects_per_domain=2,
        spacing=4.0,
        steps=300,
        batch=8,
        features=8,
        augment=True,
        tta=True,
        domains=["philips_15t", "siemens_3t"],
        sources=["siemens_3t"],
    )
    result = ds.summarise(ds.run(args))
    assert result["domains"] == ["siemens_3t", "philips_15t"]
    assert result["train_cases_per_domain"] == 1
    assert result["spacing_mm"] == pytest.approx(4.0)
    dice = np.array(result["dice"], dtype=float)
    assert dice[0, 0] > 0.85
    assert np.isnan(dice[1]).all()  # philips_15t was not a training domain
    assert 0 <= result["surface_dice_1mm"][0][1] <= 1
    args.test_per_domain = 2  # nothing left to train on
    with pytest.raises(SystemExit, match="siemens_3t has 2 cases"):
        ds.run(args)
    args.test_per_domain, args.sources = 1, ["ge_3t"]
    with pytest.raises(SystemExit, match="no ge_3t cases"):
        ds.run(args)


def test_a_hold_out_that_leaves_nothing_to_train_stops_before_building(ds, tmp_path):
    args = argparse.Namespace(data=str(tmp_path / "bs"), subjects_per_domain=2, test_per_domain=2, threads=1)
    with pytest.raises(
        SystemExit, match="--subjects-per-domain 2 leaves no training subject after --test-per-domain 2"
    ):
        ds.run(args)
    assert not (tmp_path / "bs").exists()  # nothing built


# Grouping by head (anatomy shift) on a tiny hand-made build: 16 x 16 x 8 volumes at 1 mm, a box of "brain".

DOMAIN_KEYS = [
    "benchmark",
    "data",
    "domains",
    "train_domains",
    "spacing_mm",
    "train_cases_per_domain",
    "test_cases_per_domain",
    "steps",
    "batch",
    "features",
    "augment",
    "tta",
    "context_slices",
    "dice",
    "surface_dice_1mm",
    "build_seconds",
    "total_seconds",
]


def _fake_build(root, domains, subjects, heads=None):
    """Dataset001 with ``subjects`` cases per domain (metadata in the builder's order: domain, then index); with
    ``heads``, subject ``i`` has head ``heads[i % len(heads)]`` and metadata.csv a last column ``head``."""
    from medtransfer.bench import DATASETS, LABELS_1MM, Target

    folder = root / DATASETS[Target.BRAIN_EXTRACTION].folder
    for sub in ("imagesTr", "labelsTr", LABELS_1MM):
        (folder / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    label = np.zeros((16, 16, 8), dtype=np.uint8)
    label[4:12, 4:12, 2:6] = 1
    rows = []
    for domain in domains:
        for i in range(subjects):
            case = f"{domain}_{i:03d}"
            image = label * 100.0 + rng.normal(0, 5, label.shape)
            nib.save(nib.Nifti1Image(image.astype(np.float32), np.eye(4)), folder / "imagesTr" / f"{case}_0000.nii.gz")
            for sub in ("labelsTr", LABELS_1MM):
                nib.save(nib.Nifti1Image(label, np.eye(4)), folder / sub / f"{case}.nii.gz")
            row = {"case": case, "subject": f"healthy_{case}", "domain": domain}
            if heads:
                row["head"] = heads[i % len(heads)]
            rows.append(row)
    with (folder / "metadata.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder


def _args(data, **overrides):
    args = dict(
        data=str(data),
        seed=0,
        subjects_per_domain=4,
        test_per_domain=1,
        spacing=1.0,
        steps=2,
        batch=2,
        features=4,
        augment=False,
        context=1,
        tta=False,
        threads=1,
        workers=1,
        domains=None,
        sources=None,
        by="domain",
        heads=None,
    )
    return argparse.Namespace(**{**args, **overrides})


def test_cases_group_by_the_head_column_in_metadata_order(ds, tmp_path):
    _fake_build(tmp_path, ["siemens_3t", "ge_15t"], 4, heads=("colin27", "icbm152_2009c"))
    groups = ds.load_cases(tmp_path, by="head")
    assert ds.group_order(groups, "head") == ["colin27", "icbm152_2009c"]
    ids = {head: [c.case_id for c in cases] for head, cases in groups.items()}
    assert ids == {
        "colin27": ["siemens_3t_000", "siemens_3t_002", "ge_15t_000", "ge_15t_002"],
        "icbm152_2009c": ["siemens_3t_001", "siemens_3t_003", "ge_15t_001", "ge_15t_003"],
    }
    train, test = ds.split(groups["icbm152_2009c"], 2)
    assert [c.case_id for c in test] == ["ge_15t_001", "ge_15t_003"]  # the last ones of the group, as by domain
    assert not {c.subject for c in train} & {c.subject for c in test}
    by_domain = ds.load_cases(tmp_path)  # the default still groups by scanner, head column or not
    assert ds.group_order(by_domain, "domain") == ["siemens_3t", "ge_15t"]
    assert [c.case_id for c in by_domain["ge_15t"]] == [f"ge_15t_{i:03d}" for i in range(4)]


def test_a_split_that_holds_out_a_training_subject_is_refused(ds, tmp_path):
    _fake_build(tmp_path, ["siemens_3t"], 2, heads=("colin27",))
    cases = ds.load_cases(tmp_path, by="head")["colin27"]
    cases[1].subject = cases[0].subject
    with pytest.raises(SystemExit, match="subjects both trained on and held out: healthy_siemens_3t_000"):
        ds.split(cases, 1)


def test_by_head_refuses_data_without_a_head_column_in_one_line(ds, tmp_path):
    folder = _fake_build(tmp_path, ["siemens_3t"], 2)
    with pytest.raises(SystemExit) as stop:
        ds.run(_args(tmp_path, by="head"))
    assert str(stop.value) == (f"{folder}/metadata.csv has no head column: build with --heads colin27 icbm152_2009c")


def test_default_by_domain_keeps_its_json_keys(ds, tmp_path):
    _fake_build(tmp_path, ["siemens_3t", "ge_15t"], 2, heads=("colin27", "icbm152_2009c"))
    result = ds.run(_args(tmp_path, sources=["ge_15t"]))
    assert list(result) == DOMAIN_KEYS
    assert result["domains"] == ["siemens_3t", "ge_15t"]
    assert result["train_domains"] == ["ge_15t"]
    assert np.isnan(np.array(result["dice"], dtype=float)[0]).all()
    assert not np.isnan(np.array(result["dice"], dtype=float)[1]).any()
    assert "by" not in ds.summarise(result)


def test_by_head_matrices_are_heads_and_the_json_says_so(ds, tmp_path):
    _fake_build(tmp_path, ["siemens_3t", "ge_15t"], 2, heads=("colin27", "icbm152_2009c"))
    result = ds.summarise(ds.run(_args(tmp_path, by="head", sources=["icbm152_2009c"])))
    assert list(result)[: len(DOMAIN_KEYS) + 3] == [
        "benchmark",
        "data",
        "by",
        "groups",
        "train_groups",
        *DOMAIN_KEYS[2:],
    ]
    assert result["by"] == "head"
    assert result["groups"] == ["colin27", "icbm152_2009c"]
    assert result["train_groups"] == ["icbm152_2009c"]
    assert result["domains"] == ["siemens_3t", "ge_15t"]
    assert result["train_domains"] == ["siemens_3t"]  # icbm152_2009c's test case is ge_15t_001, the last
    assert result["train_cases_per_domain"] == 1
    dice = np.array(result["dice"], dtype=float)
    assert dice.shape == (2, 2)
    assert np.isnan(dice[0]).all()
    assert not np.isnan(dice[1]).any()
    assert result["off_diagonal_surface_dice_min"] == result["surface_dice_1mm"][1][0]
    with pytest.raises(SystemExit, match="no siemens_3t cases to train on \\(heads in the data: colin27, icbm"):
        ds.run(_args(tmp_path, by="head", sources=["siemens_3t"]))


def test_merge_of_head_runs_reads_groups(ds, tmp_path):
    nan = float("nan")
    base = {"by": "head", "groups": ["colin27", "icbm152_2009c"], "domains": ["siemens_3t"], "total_seconds": 1.0}
    runs = [
        {**base, "train_groups": ["colin27"], "train_domains": ["siemens_3t"], "dice": [[0.9, 0.5], [nan, nan]]},
        {**base, "train_groups": ["icbm152_2009c"], "train_domains": ["siemens_3t"], "dice": [[nan, nan], [0.4, 0.8]]},
    ]
    paths = []
    for k, run in enumerate(runs):
        run["surface_dice_1mm"] = run["dice"]
        paths.append(tmp_path / f"{k}.json")
        paths[-1].write_text(json.dumps(run))
    merged = ds.merge([str(p) for p in paths])
    assert merged["surface_dice_1mm"] == [[0.9, 0.5], [0.4, 0.8]]
    assert merged["train_groups"] == ["colin27", "icbm152_2009c"]
    assert merged["train_domains"] == ["siemens_3t"]
    assert merged["diagonal_surface_dice_mean"] == 0.85
    assert merged["off_diagonal_pairs_below_0.6"] == 2
    paths[1].write_text(json.dumps({**runs[1], "by": "domain"}))
    with pytest.raises(SystemExit, match="group cases differently"):
        ds.merge([str(p) for p in paths])


def test_a_head_build_that_leaves_a_head_nothing_to_train_stops_before_building(ds, tmp_path):
    args = _args(tmp_path / "bs", by="head", domains=["siemens_3t"], subjects_per_domain=8, test_per_domain=4)
    with pytest.raises(
        SystemExit,
        match="--subjects-per-domain 8 over 2 heads gives a head 4 cases: none left to train after --test-per-domain 4",
    ):
        ds.run(args)
    args.heads = ["colin27"]
    with pytest.raises(SystemExit, match="--by head compares heads: give two or more --heads"):
        ds.run(args)
    assert not (tmp_path / "bs").exists()


def test_build_heads_defaults(ds):
    assert ds.build_heads(argparse.Namespace(by="head", heads=None)) == ("colin27", "icbm152_2009c")
    assert ds.build_heads(argparse.Namespace(by="domain", heads=None)) == ("colin27",)
    assert ds.build_heads(argparse.Namespace()) == ("colin27",)
    assert ds.build_heads(argparse.Namespace(by="domain", heads=["icbm152_2009c"])) == ("icbm152_2009c",)


def test_too_few_steps_for_the_one_cycle_warm_up_is_refused_in_one_line(ds, monkeypatch, capsys):
    # OneCycleLR(total_steps=5, pct_start=0.2) divides by zero at the first step: refused by the parser instead
    monkeypatch.setattr("sys.argv", ["domain_shift.py", "--steps", "5"])
    with pytest.raises(SystemExit) as exit_info:
        ds.main()
    assert exit_info.value.code == 2
    assert "--steps must be >= 10" in capsys.readouterr().err
