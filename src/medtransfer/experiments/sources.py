"""Resolve a cell's dataset folder and source model; train grid-level source models once and cache them.

A grid lists the source models it needs under ``defaults.sources``; a ``source`` axis value naming one of them
resolves to its checkpoint::

    sources:
      zoo_mri_seg: {checkpoint: zoo/mri_segmentation.pt}      # a ready checkpoint
      source_domain:                                          # trained by the grid, once per domain
        domain: "{source_domain}"                             # the cell's domain.source (or a fixed domain)
        target: brain                                         # dataset to train on (default: the cell's)
        finetune: {train: {epochs: 10}}                       # FinetuneConfig keys over the cell's `finetune`

Trained sources live in ``<results>/<grid>/_sources/<name>[__<domain>]/`` (a run_finetune run folder, every
label of the source domain's training subjects, from scratch).  An exclusive file lock makes concurrent cells
wait for the one that trains it; a finished source (its ``summary.json``) is reused by every later cell and run.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path, PurePath
from typing import Any

from ..errors import ConfigError, did_you_mean

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


def train_source(config: dict[str, Any], name: str, entry: dict[str, Any], grid_dir: Path) -> str:
    """Train (or reuse) the grid-level source ``name``; returns its checkpoint path."""
    from ..finetune import SUMMARY, run_finetune
    from ..infer import find_checkpoint
    from .spec import deep_merge, folder_label

    domain = _source_domain(entry, config)
    target = entry.get("target") or config.get("target")
    out = grid_dir / SOURCES_DIR / folder_label(f"{name}__{domain}" if domain else name)
    data = resolve_dataset(config, target)
    if not (out / SUMMARY).is_file():
        out.mkdir(parents=True, exist_ok=True)
        with _locked(out / "train.lock"):
            if not (out / SUMMARY).is_file():
                values = deep_merge(config.get("finetune") or {}, entry.get("finetune") or {})
                values.update(data=data, out=str(out), init=None, strategy="scratch", target_domain=domain)
                values.update(n_labelled="all", every_kth_slice=None, seed=int(entry.get("seed", 0)))
                log.info("training source %s on %s (domain %s, every subject) -> %s", name, target, domain, out)
                run_finetune(values, resume=True)
    return str(find_checkpoint(out))


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive advisory lock (``fcntl.flock``) held while the block runs; released if the process dies."""
    import fcntl

    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
