"""Resolve a cell's dataset folder and source model; train grid-level source models once and cache them.

A grid lists the source models it needs under ``defaults.sources``; a ``source`` axis value naming one of them
resolves to its checkpoint::

    sources:
      zoo_mri_seg: {checkpoint: zoo/mri_segmentation.pt}      # a ready checkpoint
      source_domain:                                          # trained by the grid, once per domain
        domain: "{source_domain}"                             # the cell's domain.source (or a fixed domain)
        target: brain                                         # dataset to train on (default: the cell's)
        finetune: {train: {epochs: 10}}                       # FinetuneConfig keys over defaults.finetune

A trained source's settings are the grid's ``defaults.finetune`` with the entry's ``finetune`` over it, never a
cell's overrides: one source serves every cell naming it, whichever runs first.  Trained sources live in
``<results>/<grid>/_sources/<name>[__<domain>]-<fingerprint>/`` (a run_finetune run folder, every label of the
source domain's training subjects, from scratch; the fingerprint hashes what it is trained with, so an edited
entry trains a new source: :class:`SourceRun`).  An exclusive file lock makes concurrent cells wait for the one that
trains it; a finished source (its ``summary.json``) is reused by every later cell and run.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from ..errors import ConfigError, did_you_mean
from ..utils import file_lock

log = logging.getLogger(__name__)

NO_SOURCE = ("none", "scratch", "")
SOURCES_DIR = "_sources"
DATA_KEYS = ("root", "datasets")  # the keys of a cell's `data:` read below
SOURCE_KEYS = ("checkpoint", "domain", "target", "finetune", "seed")  # the keys of a `sources:` entry


def resolve_dataset(config: dict[str, Any], target: str | None = None) -> str:
    """The dataset folder of ``target`` (default: the cell's): ``data.datasets[target]`` under ``data.root``."""
    data = config.get("data") or {}
    if isinstance(data, str):
        data = {"root": data}
    root = data.get("root")
    if not root:
        raise ConfigError("defaults.data.root must name the folder holding the datasets (e.g. a brainshift build)")
    root_dir = Path(str(root)).expanduser()
    if not root_dir.is_dir():
        where = "" if root_dir.is_absolute() else f" (relative to the folder you run from, {Path.cwd()})"
        raise ConfigError(
            f"data.root: the folder {root} does not exist{where}; build the datasets there "
            f"(e.g. medtransfer data build-benchmark --out {root}) or point data.root at the folder holding them"
        )
    target = str(target or config.get("target"))
    datasets = data.get("datasets") or {}
    key = f"data.datasets.{target}" if target in datasets else "target"
    name = str(datasets.get(target, target))
    if why := outside_root(name):
        raise ConfigError(f"{key} {name!r} is outside data.root ({why}); {INSIDE_ROOT}")
    folder = root_dir / name
    if folder.is_dir():
        return str(folder)
    if not datasets and (root_dir / "dataset.json").is_file():
        return str(root)  # data.root is itself the one dataset
    if target in datasets:
        raise ConfigError(f"target {target!r}: its dataset folder {folder} (data.datasets.{target}) does not exist")
    known = sorted(datasets) or sorted(p.name for p in root_dir.glob("*") if p.is_dir())
    raise ConfigError(f"target {target!r}: no dataset folder {folder}; " + did_you_mean(target, known, what="target"))


INSIDE_ROOT = "a dataset is a folder inside data.root: give its path relative to data.root"


def outside_root(name: str) -> str | None:
    """Why a dataset folder named ``name`` (a target, a ``data.datasets`` value) would lie outside ``data.root``:
    an absolute path or a ``..`` component; None when it stays inside (symlinks inside data.root are followed)."""
    path = PurePath(name)
    if path.is_absolute() or name.startswith("~"):
        return "an absolute path"
    if ".." in path.parts:
        return "'..' leaves it"
    return None


def check_datasets_inside(config: dict[str, Any], where: str) -> None:
    """Refuse, when the grid loads, a cell whose datasets would lie outside ``data.root``: its target, the target
    of each grid-trained source and every ``data.datasets`` value (see :func:`outside_root`).

    Raises:
        ConfigError: ``<file>: <key> '<value>' is outside data.root (<why>); ...``.
    """
    if "data" not in config:
        return  # a kind that reads no dataset (e.g. dummy)
    data = config.get("data")
    datasets = (data.get("datasets") if isinstance(data, dict) else None) or {}
    named = [(f"data.datasets.{t}", v) for t, v in datasets.items()]
    targets = [("axes.target", config.get("target"))]
    sources = config.get("sources") or {}
    targets += [(f"sources.{n}.target", e.get("target")) for n, e in sources.items() if isinstance(e, dict)]
    named += [(key, t) for key, t in targets if t is not None and str(t) not in datasets]
    for key, value in named:
        if why := outside_root(str(value)):
            raise ConfigError(f"{where}: {key} {str(value)!r} is outside data.root ({why}); {INSIDE_ROOT}")


def grid_folder(run_dir: Path, config: dict[str, Any]) -> Path:
    """``<results>/<grid>``: the cell's run folder without its cell id."""
    cell_id = str((config.get("grid") or {}).get("cell_id") or "")
    depth = len([p for p in cell_id.split("/") if p])
    return Path(run_dir).parents[depth - 1] if depth else Path(run_dir)


def resolve_source(config: dict[str, Any], run_dir: Path) -> str | None:
    """The checkpoint the cell starts from, or ``None`` (scratch); trains a grid-level source when needed."""
    source = config.get("source") or {"name": "none", "checkpoint": None}
    if source.get("checkpoint"):
        return _existing(str(source["checkpoint"]), config)
    name = str(source.get("name") or "none")
    if name.lower() in NO_SOURCE:
        return None
    sources = config.get("sources") or {}
    if name not in sources:
        raise ConfigError(f"source {name!r} has no checkpoint: " + did_you_mean(name, sources, what="source"))
    entry = sources[name] or {}
    if entry.get("checkpoint"):
        return _existing(str(entry["checkpoint"]), config)
    return train_source(config, name, entry, grid_folder(run_dir, config))


def _existing(path: str, config: dict[str, Any]) -> str:
    candidate = Path(path).expanduser()
    if not candidate.exists():
        root = Path(str((config.get("data") or {}).get("root", ".")))
        if (root / candidate).exists():
            candidate = root / candidate
        else:
            from ..checkpoint import missing_checkpoint_hint  # torch: only on this error path

            hint = missing_checkpoint_hint(candidate) or missing_checkpoint_hint(root / candidate)
            raise ConfigError(f"source checkpoint {path} does not exist (relative paths: cwd or data.root){hint}")
    return str(candidate)


def _source_domain(entry: dict[str, Any], config: dict[str, Any]) -> str | None:
    domain = entry.get("domain")
    if domain is None:
        return None
    pair = config.get("domain") or {}
    text = str(domain)
    if "{source_domain}" in text or "{target_domain}" in text:
        if not pair:
            raise ConfigError(f"source domain {text!r} refers to the domain pair, but the grid has no domains axis")
        text = text.replace("{source_domain}", str(pair["source"])).replace("{target_domain}", str(pair["target"]))
    return text


@dataclass(frozen=True)
class SourceRun:
    """How a grid-trained source is trained: the same for every cell that uses it, whatever the cell's overrides.

    Attributes:
        name: the source's name (a key of ``sources``).
        domain: the domain it trains on (``None``: every case of its dataset).
        target: the dataset it trains on (``sources.<name>.target``, default the cell's target).
        data: that dataset's folder.
        values: its :class:`~medtransfer.finetune.FinetuneConfig` values without ``out``: ``defaults.finetune``
            of the grid with the entry's ``finetune`` over it (:func:`source_finetune`), then every label of the
            domain's training subjects, from scratch, the entry's ``seed``.
        fingerprint: a hash of what it is trained with (name, domain, the dataset's folder below ``data.root``, the
            values less run-only options such as devices and progress bars): its cache folder's suffix.
        out: ``<grid>/_sources/<name>[__<domain>]-<fingerprint>``.
    """

    name: str
    domain: str | None
    target: str
    data: str
    values: dict[str, Any]
    fingerprint: str
    out: Path

    @property
    def legacy_out(self) -> Path:
        """The folder an earlier version trained this source in: ``<name>[__<domain>]`` without a fingerprint."""
        return self.out.with_name(self.out.name.rsplit("-", 1)[0])


def source_finetune(defaults_finetune: Any, entry: Any) -> dict[str, Any]:
    """The ``finetune`` values a grid-trained source trains with: the grid's ``defaults.finetune`` with the entry's
    ``finetune`` merged over it (never a cell's overrides: one source serves cells with different overrides)."""
    from .spec import deep_merge

    base = defaults_finetune if isinstance(defaults_finetune, dict) else {}
    own = (entry or {}).get("finetune") if isinstance(entry, dict) else None
    return deep_merge(base, own if isinstance(own, dict) else {})


def source_run(config: dict[str, Any], name: str, entry: dict[str, Any], grid_dir: Path) -> SourceRun:
    """The :class:`SourceRun` of the cell's grid-trained source ``name`` (see there).

    The cell's ``grid.source_finetune`` (set by :func:`~medtransfer.experiments.spec.expand_grid`) holds its
    ``finetune`` values; a config without it (a direct call) takes the entry's over the cell's ``finetune``.
    """
    import hashlib
    import json

    from ..train.resume import RUN_ONLY_OPTIONS
    from .spec import folder_label

    domain = _source_domain(entry, config)
    target = str(entry.get("target") or config.get("target"))
    data = resolve_dataset(config, target)
    grid = config.get("grid") or {}
    if isinstance(grid.get("source_finetune"), dict):
        values = json.loads(json.dumps(grid["source_finetune"]))
    else:
        values = source_finetune(config.get("finetune"), entry)
    values.update(init=None, strategy="scratch", target_domain=domain)
    values.update(n_labelled="all", every_kth_slice=None, seed=int(entry.get("seed", 0)))
    raw = config.get("data")
    datasets = (raw.get("datasets") if isinstance(raw, dict) else None) or {}

    def run_only_dropped(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: run_only_dropped(v) for k, v in value.items() if k not in RUN_ONLY_OPTIONS}
        return value

    key = {"name": name, "domain": domain, "dataset": str(datasets.get(target, target)), **run_only_dropped(values)}
    fingerprint = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:10]
    folder = folder_label(f"{name}__{domain}" if domain else name)
    out = Path(grid_dir) / SOURCES_DIR / f"{folder}-{fingerprint}"
    return SourceRun(name, domain, target, data, {**values, "data": data}, fingerprint, out)


def train_source(config: dict[str, Any], name: str, entry: dict[str, Any], grid_dir: Path) -> str:
    """Train (or reuse) the grid-level source ``name``; returns its checkpoint path.

    The source trains into its fingerprinted folder (:class:`SourceRun`), so a changed entry (or
    ``defaults.finetune``) trains a new source instead of reusing one made with other settings.  A source an earlier
    version trained in ``<name>[__<domain>]`` is reused (linked) when its recorded options are the ones it would
    be trained with now (:func:`_legacy_matches`).  An interrupted source whose dataset moved starts over (its
    training records the scans' paths and would refuse to resume elsewhere).
    """
    from ..finetune import SUMMARY, run_finetune
    from ..infer import find_checkpoint

    run = source_run(config, name, entry, grid_dir)
    out = run.out
    if not (out / SUMMARY).is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(out.with_name(f".{out.name}.lock")):
            if not (out / SUMMARY).is_file() and not _adopt_legacy(run):
                out.mkdir(exist_ok=True)
                resume = _same_data(out, run.data)
                log.info("training source %s on %s (domain %s, every subject) -> %s", name, run.target, run.domain, out)
                run_finetune({**run.values, "out": str(out)}, resume=resume)
    return str(find_checkpoint(out))


def _same_data(out: Path, data: str) -> bool:
    """Whether an interrupted source run in ``out`` (if any) was started on the dataset folder ``data``."""
    import yaml

    try:
        stored = yaml.safe_load((out / "config.yaml").read_text())
    except FileNotFoundError:
        return True
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False  # not a run's config: run_finetune would refuse to resume
    same = isinstance(stored, dict) and str(Path(str(stored.get("data"))).resolve()) == str(Path(data).resolve())
    if not same:
        log.warning("%s: the interrupted source was started on another dataset folder; starting it over", out)
    return same


def _adopt_legacy(run: SourceRun) -> bool:
    """Link ``run.out`` to the finished source an earlier version trained in ``run.legacy_out`` when that run's
    recorded options (its ``config.yaml``) are the ones ``run`` trains with; True when it did."""
    import os

    import yaml

    from ..finetune import SUMMARY

    legacy = run.legacy_out
    if legacy == run.out or not (legacy / SUMMARY).is_file() or legacy.is_symlink():
        return False
    try:
        stored = yaml.safe_load((legacy / "config.yaml").read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        stored = None
    if not isinstance(stored, dict) or not _legacy_matches(stored, run.values):
        log.warning(
            "%s: a source trained by an earlier version with other options (perhaps those of the first cell that "
            "ran); training it again with the source entry and defaults.finetune into %s",
            legacy,
            run.out,
        )
        return False
    link = run.out.with_name(f".{run.out.name}.link")
    link.unlink(missing_ok=True)
    os.symlink(legacy.name, link)
    os.replace(link, run.out)
    log.info("%s: reusing the source trained by an earlier version in %s (same options)", run.out, legacy)
    return True


def _legacy_matches(stored: dict[str, Any], values: dict[str, Any]) -> bool:
    """Whether a run's recorded ``config.yaml`` (every option resolved) was made with ``values``: every option given
    in ``values`` agrees, and every train / preprocess option not given holds its default (an override of the
    first cell would show there), except what the run derives (``loss`` from the labels, ``seed``,
    ``target_spacing``, the 3D ``patch_size``, the resolved ``n_labelled``)."""
    from ..data.preprocess import PreprocessConfig
    from ..finetune import FinetuneConfig
    from ..train.config import TrainConfig
    from ..train.resume import changed_options

    try:
        wanted = FinetuneConfig.from_dict({**values, "out": "."}).to_dict()
        train_defaults = TrainConfig().to_dict()
        preprocess_defaults = PreprocessConfig().to_dict()
    except (TypeError, ValueError, ConfigError):
        return False
    wanted.pop("n_labelled")
    if wanted.get("patch_size") is None:
        wanted.pop("patch_size")
    given_train = dict(values.get("train") or {})
    wanted["train"] = {**train_defaults, "seed": wanted["seed"], **given_train}
    if "loss" not in given_train:
        wanted["train"].pop("loss")
        if (stored.get("train") or {}).get("loss") not in ("bce", "dice_ce"):  # not a default run_finetune picks
            return False
    given_preprocess = dict(values.get("preprocess") or {})
    wanted["preprocess"] = {**preprocess_defaults, **given_preprocess}
    if "target_spacing" not in given_preprocess:
        wanted["preprocess"].pop("target_spacing")
    return not changed_options(stored, wanted) and stored.get("model_config") == wanted["model_config"]


# --- held-out scans: a grid-trained source never trains on what a cell tests or validates on -----------------

NEEDS_NO_SOURCE = ("scratch", "oracle")  # strategies whose cells never load the source (experiments.cells)


@dataclass(frozen=True)
class _Split:
    """The scans of one split: its dataset folder, the subjects and image files of its parts."""

    data: str
    subjects: dict[str, dict[str, str]]  # part (train, val_used, test, val) -> subject -> one of its case ids
    files: dict[str, dict[int, list[tuple[str, str]]]]  # part -> file size -> (image file, its case id)


def check_source_leaks(to_run: list, cells: list, where: str) -> None:
    """Refuse, before any cell runs, a grid-trained source that would train on a scan a cell of the grid holds out.

    Each grid-trained source used by a cell of ``to_run`` (a strategy that loads it) is split as its training will
    split it (:class:`SourceRun`: its domain, its split options) and compared with the test and validation scans
    of every cell of the grid (``cells``) that reads a dataset: the source may neither train on a subject a cell
    holds out (same dataset folder) nor on an image file of one (any dataset: benchmark builds link one scan into
    several datasets), nor pick its checkpoint on a cell's test subject (its validation scans).  A source without
    ``domain`` in a grid with a domain axis trains on every domain, test scans of the target domain included; so
    does one whose ``finetune`` draws another split (``split_seed``, ``test_fraction``, ...).

    Raises:
        ConfigError: ``<file>: source <name> would train on <n> scan(s) that cell <id> holds out ...: <how to fix>``.
    """
    runs: dict[Path, tuple[SourceRun, Any]] = {}
    for cell in to_run:
        entry = trained_entry(cell.config)
        if entry is None or str(cell.config.get("strategy")) in NEEDS_NO_SOURCE or "data" not in cell.config:
            continue
        try:
            run = source_run(cell.config, str(cell.config["source"]["name"]), entry, Path("."))
        except ConfigError:
            continue  # the cell reports it when it runs
        runs.setdefault(run.out, (run, cell))
    if not runs:
        return
    splits: dict[Any, Any] = {}  # split key -> _Split (None: not drawable), dataset folder -> dataset
    digests: dict[str, str] = {}  # image file -> sha256 (only files of equal size are compared)
    held: list[tuple[Any, _Split]] = []
    for cell in cells:
        if "data" not in cell.config:
            continue
        split = _cell_split(cell.config, splits)
        if split is not None:
            held.append((cell, split))
    for run, user in runs.values():
        own = _split(run.data, run.domain, run.values, splits)
        if own is None:
            continue
        for cell, split in sorted(held, key=lambda pair: pair[0].id != user.id):  # its own cell first
            leaked = _overlap(own, split, digests)
            if leaked:
                raise ConfigError(f"{where}: {_leak_message(run, user, cell, leaked)}")


def trained_entry(config: dict[str, Any]) -> dict[str, Any] | None:
    """The ``sources`` entry of the cell's source when the grid trains it (no checkpoint anywhere), else None."""
    source = config.get("source") or {}
    name = str(source.get("name") or "none")
    sources = config.get("sources") if isinstance(config.get("sources"), dict) else {}
    entry = sources.get(name)
    if source.get("checkpoint") or name.lower() in NO_SOURCE or not isinstance(entry, dict) or entry.get("checkpoint"):
        return None
    return entry


def _cell_split(config: dict[str, Any], splits: dict) -> _Split | None:
    from .cells import target_domain

    try:
        data = resolve_dataset(config)
    except ConfigError:
        return None  # checked for the cells that run (runner.check_datasets); the others cannot run
    finetune = config.get("finetune") if isinstance(config.get("finetune"), dict) else {}
    return _split(data, target_domain(config), finetune, splits)


SPLIT_OPTIONS = ("split_seed", "test_fraction", "val_fraction", "max_val_cases")


def _split(data: str, domain: str | None, values: dict[str, Any], cache: dict) -> _Split | None:
    """The split a run with ``values`` draws from ``data`` (domain ``domain``), as select_cases draws it."""
    key = ("split", data, domain, *(repr(values.get(k)) for k in SPLIT_OPTIONS))
    if key in cache:
        return cache[key]
    from ..data.layouts import load_dataset
    from ..data.splits import split_by_subject
    from ..errors import DataError
    from ..finetune import FinetuneConfig
    from ..finetune.select import target_pool

    options = {k: values[k] for k in SPLIT_OPTIONS if k in values}
    try:
        config = FinetuneConfig.from_dict({"data": data, "out": ".", **options})
        if ("dataset", data) not in cache:
            cache["dataset", data] = load_dataset(data)
        dataset = cache["dataset", data]
        pool = target_pool(dataset, domain)
        split = split_by_subject(
            pool, test_fraction=config.test_fraction, val_fraction=config.val_fraction, seed=config.split_seed
        )
    except (ConfigError, DataError):
        cache[key] = None  # the run reports it itself
        return None
    parts = {
        "train": split.train,
        "val_used": split.val[: config.max_val_cases],
        "test": split.test,
        "val": split.val,
    }
    subjects, files = {}, {}
    for part, ids in parts.items():
        cases = [dataset.get(c) for c in ids]
        subjects[part] = {c.subject: c.case_id for c in cases}
        files[part] = {}
        for case in cases:
            for path in case.images:
                with contextlib.suppress(OSError):
                    files[part].setdefault(os.path.getsize(path), []).append((str(path), case.case_id))
    cache[key] = _Split(str(Path(data).resolve()), subjects, files)
    return cache[key]


def _overlap(source: _Split, cell: _Split, digests: dict[str, str]) -> list[str]:
    """The cell's held-out case ids the source trains on (or, for test cases, picks its checkpoint on): the same
    subject of the same dataset, or the same image (one file, or a byte-identical copy in another dataset)."""
    found: dict[str, None] = {}
    for used, held in (("train", "test"), ("train", "val"), ("val_used", "test")):
        if source.data == cell.data:
            found.update(dict.fromkeys(c for s, c in cell.subjects[held].items() if s in source.subjects[used]))
        for size, images in cell.files[held].items():
            for path, case_id in images:
                if any(_same_image(path, other, digests) for other, _ in source.files[used].get(size, ())):
                    found[case_id] = None
    return sorted(found)


def _same_image(a: str, b: str, digests: dict[str, str]) -> bool:
    """Whether two image files of equal size hold the same bytes (one file, a link, or a copy)."""
    import hashlib

    with contextlib.suppress(OSError):
        if os.path.samefile(a, b):
            return True

    def digest(path: str, whole: bool) -> str | None:
        """SHA-256 of the file's first MiB (``whole=False``: files of one shape differ there, so most pairs are
        told apart without reading whole scans) or of all of it; cached per path."""
        key = f"{path}\0{whole}"
        if key not in digests:
            hasher = hashlib.sha256()
            try:
                with open(path, "rb") as handle:
                    blocks = iter(lambda h=handle: h.read(1 << 20), b"") if whole else [handle.read(1 << 20)]
                    for block in blocks:
                        hasher.update(block)
            except OSError:
                return None
            digests[key] = hasher.hexdigest()
        return digests[key]

    for whole in (False, True):
        first, second = digest(a, whole), digest(b, whole)
        if first is None or first != second:
            return False
    return True


def _leak_message(run: SourceRun, user: Any, cell: Any, leaked: list[str]) -> str:
    shown = ", ".join(leaked[:5]) + (f", ... ({len(leaked)} in all)" if len(leaked) > 5 else "")
    domain = f"domain {run.domain} of " if run.domain else "every domain of "
    cell_domain = (cell.config.get("domain") or {}).get("target")
    if run.domain is None and cell_domain:
        fix = f'give sources.{run.name}.domain a domain the cells do not test on, e.g. "{{source_domain}}"'
    else:
        fix = (
            f"train it on another domain (sources.{run.name}.domain) or target, or give sources.{run.name}.finetune "
            "the cells' split_seed, test_fraction and val_fraction (then it trains on their training subjects only)"
        )
    whose = "the cell" if cell.id == user.id else f"cell {cell.id}"
    return (
        f"source {run.name!r} of cell {user.id} would train on {domain}{run.target} with its own split, which "
        f"holds scans {whose} holds out for test or validation ({shown}): results would be scored on scans the "
        f"source learnt; {fix}"
    )
