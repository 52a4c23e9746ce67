"""``build_zoo``: the six source checkpoints (classification, segmentation, restoration x natural, MRI) and the
scratch control, all on the one default architecture, with one call (``medtransfer pretrain --task zoo``).

Files written into ``out``::

    natural_classification.pt  natural_segmentation.pt  natural_restoration.pt
    mri_classification.pt      mri_segmentation.pt      mri_restoration.pt
    scratch.pt                 the same architecture, seeded random initialisation (the control)
    zoo.json                   name -> checkpoint, task, domain, steps, seconds and source metrics

Finished checkpoints are kept (re-running resumes), so an interrupted zoo continues where it stopped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..checkpoint import load_checkpoint, save_checkpoint
from ..errors import ConfigError, DataError
from ..models import create_model
from ..train.rng import seed_everything
from ..utils import write_json_atomic
from .config import PretrainConfig
from .options import SourceDomain, SourceTask
from .run import CHECKPOINT_KIND, run_pretrain, source_meta

log = logging.getLogger(__name__)

ZOO_TASKS = (SourceTask.CLASSIFICATION, SourceTask.SEGMENTATION, SourceTask.RESTORATION)
ZOO_DOMAINS = (SourceDomain.NATURAL, SourceDomain.MRI)
SCRATCH = "scratch"


def build_zoo(
    out: str | Path,
    data: str | Path | None,
    *,
    tasks: Sequence[str] = ZOO_TASKS,
    domains: Sequence[str] = ZOO_DOMAINS,
    **options: Any,
) -> dict[str, dict[str, Any]]:
    """Pretrain every ``task x domain`` source into ``out`` plus ``scratch.pt``; returns the ``zoo.json`` content.

    Args:
        out: folder of the checkpoints.
        data: brainshift folder (needed by the MRI sources).
        tasks, domains: the grid (default: the six sources of the study).
        options: further :class:`PretrainConfig` fields shared by every run (``epochs``, ``steps_per_epoch``,
            ``size``, ``count``, ``seed``, ``device``, ...).
    """
    out = Path(out)
    expected = {f"{SourceDomain(d).value}_{SourceTask(t).value}" for d in domains for t in tasks} | {SCRATCH}
    if out.is_dir():
        ours = {f"{n}.pt" for n in expected} | {f"{n}.pt.run" for n in expected} | {"zoo.json"}
        foreign = sorted(p.name for p in out.iterdir() if p.name not in ours)
        if foreign:
            raise ConfigError(
                f"{out}: holds files the zoo does not write ({', '.join(foreign[:3])}); give --out a new or empty "
                "folder (an earlier zoo there is continued)"
            )
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, dict[str, Any]] = {}
    for domain in domains:
        for task in tasks:
            name = f"{SourceDomain(domain).value}_{SourceTask(task).value}"
            config = PretrainConfig(task=task, domain=domain, out=str(out / f"{name}.pt"), data=_str(data), **options)
            start = time.perf_counter()
            path = run_pretrain(config, resume=True)
            summary[name] = _entry(path, time.perf_counter() - start)
            log.info("zoo: %s done (%s)", name, summary[name]["metrics"])
            write_json_atomic(out / "zoo.json", summary)
    base = PretrainConfig(task=SourceTask.CLASSIFICATION, out=str(out / f"{SCRATCH}.pt"), data=_str(data), **options)
    summary[SCRATCH] = _entry(write_scratch(base), 0.0)
    write_json_atomic(out / "zoo.json", summary)
    return summary


def write_scratch(config: PretrainConfig) -> Path:
    """The control: the shared architecture with a segmentation head, seeded random weights, no source."""
    seed_everything(config.seed)
    model = create_model(config.model, **{**config.model_config, "head": "segmentation"})
    spec = {"name": model.model_name, "config": dict(model.model_config)}
    meta = source_meta(config, spec, model.stage_names(), None)
    meta.update(source_task=SCRATCH, source_domain="none", transfers="nothing", steps=0, metrics={})
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return save_checkpoint(config.out, {"model": spec, "state_dict": state, "meta": meta})


def _entry(path: Path, seconds: float) -> dict[str, Any]:
    meta = load_checkpoint(path).get("meta") or {}
    if meta.get("kind") != CHECKPOINT_KIND:
        raise DataError(f"{path}: exists but is not a medtransfer source checkpoint; move it away and re-run")
    return {
        "checkpoint": path.name,
        "task": meta.get("source_task"),
        "domain": meta.get("source_domain"),
        "steps": meta.get("steps", 0),
        "seconds": round(float(meta.get("seconds", seconds)), 1),  # the training run's, also when reused
        "data": (meta.get("data") or {}).get("source"),
        "metrics": meta.get("metrics", {}),
    }


def _str(data: str | Path | None) -> str | None:
    return None if data is None else str(data)
