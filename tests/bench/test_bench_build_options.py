"""Options a build refuses (duplicates, workers), the CLI's order of checks, and builds sharing one folder."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from medtransfer.bench import DATASETS, BenchmarkConfig, Target, build_benchmark, get_profile
from medtransfer.cli import main
from medtransfer.errors import ConfigError


def _build(out, atlas, **overrides):
    options = {"seed": 3, "subjects_per_domain": 1, "spacing": 4.0, "natural_count": 8, "sources": False}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("medtransfer.bench.build.load_head_atlas", lambda head="colin27": atlas)
        return build_benchmark(BenchmarkConfig(out=out, **{**options, **overrides}))


def _rows(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"domains": ("siemens_3t", "ge_15t", "siemens_3t")}, r"--domains: 'siemens_3t' is given twice"),
        ({"targets": ("anatomy", "brain_extraction", "anatomy")}, r"--targets: 'anatomy' is given twice"),
        ({"targets": (Target.ANATOMY, "anatomy")}, r"--targets: 'anatomy' is given twice"),
        ({"workers": 0}, r"workers must be >= 1 \(1 = in this process\), got 0"),
        ({"workers": -3}, r"workers must be >= 1 \(1 = in this process\), got -3"),
    ],
)
def test_config_refuses_duplicates_and_bad_workers(tmp_path, options, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        BenchmarkConfig(out=tmp_path, **options)
    assert "\n" not in str(info.value)


def test_duplicate_message_names_what_is_allowed(tmp_path):
    with pytest.raises(ConfigError) as info:
        BenchmarkConfig(out=tmp_path, domains=("ge_3t", "ge_3t"))
    assert "allowed: " in str(info.value)
    assert all(name in str(info.value) for name in ("siemens_3t", "philips_15t"))


def test_unknown_names_have_a_separator_before_allowed():
    with pytest.raises(ConfigError) as info:
        get_profile("foo")
    assert str(info.value).startswith("unknown scanner profile 'foo'. Allowed: ")
    with pytest.raises(
        ConfigError, match=r"unknown scanner profile 'siemens_7t'; did you mean 'siemens_3t'.*\? Allowed: "
    ):
        get_profile("siemens_7t")
    with pytest.raises(ConfigError, match=r"unknown target 'xyz'\. Allowed: anatomy, brain_extraction"):
        BenchmarkConfig(out=".", targets=("xyz",))


def _cli(out, *options):
    return main(["data", "build-benchmark", "--out", str(out), "--subjects-per-domain", "1", *options])


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--workers", "-3"], "--workers must be >= 0 (0: one per core, at most 4), got -3"),
        (["--domains", "ge_3t", "ge_3t"], "--domains: 'ge_3t' is given twice"),
        (["--targets", "anatomy", "anatomy"], "--targets: 'anatomy' is given twice"),
        (["--domains", "foo"], "unknown scanner profile 'foo'. Allowed: "),
    ],
)
def test_cli_checks_options_before_the_folder(tmp_path, capsys, options, expected, monkeypatch):
    monkeypatch.setattr("medtransfer.bench.build_benchmark", lambda config: pytest.fail("the build started"))
    full = tmp_path / "full"
    full.mkdir()
    (full / "something").write_text("x")
    for out in (tmp_path / "new", full):  # the option's message, whatever the folder holds
        assert _cli(out, *options) == 2
        err = capsys.readouterr().err
        assert expected in err
        assert "not empty" not in err
    assert not (tmp_path / "new").exists()


def test_cli_still_refuses_a_non_empty_folder_with_good_options(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("medtransfer.bench.build_benchmark", lambda config: pytest.fail("the build started"))
    (tmp_path / "something").write_text("x")
    assert _cli(tmp_path, "--workers", "1") == 2
    assert "exists and is not empty" in capsys.readouterr().err


def test_second_build_into_one_folder_keeps_the_top_level_metadata_of_both(tmp_path, tiny_atlas):
    """As the demo does: a lesion build (sources on, no healthy cohort), then brain extraction on two domains.

    The MRI classification source has heads of its own, so a build without a healthy cohort writes it too."""
    _build(tmp_path, tiny_atlas, targets=("ms_lesion",), domains=("siemens_3t",), sources=True)
    assert set(np.load(tmp_path / "sources" / "mri_classification.npz")["subjects"]) == {"source_siemens_3t_000"}
    assert (tmp_path / "sources" / "natural_ssl.npz").is_file()
    _build(tmp_path, tiny_atlas, targets=("brain_extraction",), domains=("siemens_3t", "ge_15t"))
    rows = _rows(tmp_path / "metadata.csv")
    pairs = [(r["dataset"], r["case"]) for r in rows]
    ms, brain = DATASETS[Target.MS_LESION].folder, DATASETS[Target.BRAIN_EXTRACTION].folder
    assert pairs == [(brain, "siemens_3t_000"), (brain, "ge_15t_000"), (ms, "siemens_3t_000")]
    assert len(set(pairs)) == len(pairs)
    for row in rows:  # each row is its dataset's row, with the dataset in front
        dataset_rows = _rows(tmp_path / row["dataset"] / "metadata.csv")
        assert {k: v for k, v in row.items() if k != "dataset"} in dataset_rows
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([brain, ms, "metadata.csv", "sources"])
