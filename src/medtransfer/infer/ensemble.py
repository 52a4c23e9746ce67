"""Ensembles: trained runs that label a scan together, their class probabilities averaged.

nnU-Net's practice (its ``2d`` + ``3d_fullres`` ensemble, Isensee et al. 2021): each member predicts the scan
with its own preprocessing, working spacing, 2.5D stacking and mirroring; its probabilities are restored onto the
input's grid; the members' probabilities are averaged with equal weights and the ensemble's own post-processing
is applied to the argmax.  Members whose errors differ (a 2D network that misses small lesions but adds few false
ones, a 3D network that finds more of both) can then keep what each does well.

The members' own minimum component sizes were tuned for each alone, so an ensemble tunes its own
(``min_component_mm3: auto``, :func:`~medtransfer.infer.postprocess.tune_on_validation`) on the validation cases the
members share, which none of them trained on; members trained without validation cases (every labelled scan
trained) keep, as each would alone, the free size of their training lesions.  An ensemble is a folder holding
``ensemble.json``::

    {"format": "medtransfer-ensemble", "version": 1,
     "members": [{"checkpoint": "/abs/run_a/checkpoints/checkpoint_last.pt", "sha256": "..."}, ...],
     "labels": [0, 1], "in_channels": 1,
     "postprocess": {"min_component_mm3": 40.0, "tuned_on": [...], "val_lesion_f1": {...}, ...}}

:func:`~medtransfer.infer.predictor.load_predictor` (and so ``medtransfer predict --model FOLDER``) loads it like a
run.  A member checkpoint that changed after the ensemble was made (its SHA-256 differs) is refused: the tuned
post-processing belongs to the members as they were.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.io import Volume
from ..errors import ConfigError, DataError
from .postprocess import (
    MIN_COMPONENT_KEY,
    check_min_component,
    log_lesion_prior,
    recorded_lesion_volumes,
    tune_on_validation,
)
from .predictor import Predictor, _as_channels, brain_mask_postprocess, find_checkpoint, label_array

logger = logging.getLogger(__name__)

ENSEMBLE_FILE = "ensemble.json"
FORMAT = "medtransfer-ensemble"
VERSION = 1


@dataclass
class Ensemble:
    """Members that predict together (their probabilities averaged); used like a
    :class:`~medtransfer.infer.predictor.Predictor`.

    Attributes:
        members: the trained models; every one has the same label values and input channels.
        checkpoints: each member's checkpoint file.
        postprocess: the ensemble's own, applied to the argmax of the mean probabilities.
    """

    members: list[Predictor]
    checkpoints: list[Path]
    postprocess: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.members) < 2:
            raise ConfigError(f"an ensemble needs at least 2 members, got {len(self.members)}")
        first, name = self.members[0], self.checkpoints[0]
        for member, path in zip(self.members[1:], self.checkpoints[1:], strict=True):
            if member.label_values != first.label_values:
                raise ConfigError(
                    f"{path}: labels {member.label_values} differ from {first.label_values} of {name}; ensemble "
                    "members must be trained on the same labels"
                )
            names = [getattr(m, "label_names", None) for m in (first, member)]
            if None not in names and names[0] != names[1]:
                raise ConfigError(
                    f"{path}: labels {names[1]} differ from {names[0]} of {name} (the same values, other names: "
                    "another target); ensemble members must be trained on the same labels"
                )
            if member.in_channels != first.in_channels:
                raise ConfigError(
                    f"{path}: takes {member.in_channels} input channel(s), {name} takes {first.in_channels}; "
                    "ensemble members must take the same channels"
                )

    @property
    def label_values(self) -> list[int]:
        return self.members[0].label_values

    @property
    def in_channels(self) -> int:
        return self.members[0].in_channels

    @property
    def brain_mask(self) -> bool:
        return all(m.brain_mask for m in self.members)

    def predict_proba(self, channels: list[Volume] | Volume, source: str = "input") -> np.ndarray:
        """The members' class probabilities ``(K, X, Y, Z)`` on the input's grid, averaged."""
        channels = _as_channels(channels, source)
        total = None
        for i, member in enumerate(self.members):
            logger.debug("%s: ensemble member %d of %d", source, i + 1, len(self.members))
            probs = member.predict_proba(channels, source)
            total = probs if total is None else total + probs
        return total / len(self.members)

    def predict(self, channels: list[Volume] | Volume, source: str = "input") -> np.ndarray:
        """Label map with exactly the input's shape: the argmax of the mean probabilities, post-processed."""
        from .postprocess import apply_postprocess

        channels = _as_channels(channels, source)
        probs = self.predict_proba(channels, source)
        classes = apply_postprocess(probs.argmax(0), channels[0].spacing[:3], self.postprocess)
        if self.brain_mask:
            classes = brain_mask_postprocess(classes).astype(classes.dtype)
        return label_array(classes, self.label_values)


def is_ensemble(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an ensemble folder (holds ``ensemble.json``)."""
    return (Path(path) / ENSEMBLE_FILE).is_file()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _run_summary(checkpoint: Path) -> dict[str, Any]:
    """The ``summary.json`` of the run a checkpoint belongs to (``RUN/checkpoints/NAME.pt`` or ``RUN/NAME.pt``),
    with ``data`` (the dataset) from the run's ``config.yaml`` when it has one."""
    from ..utils import read_yaml_mapping

    for folder in (checkpoint.parent.parent, checkpoint.parent):
        if (folder / "summary.json").is_file():
            try:
                summary = json.loads((folder / "summary.json").read_text())
            except (OSError, ValueError) as err:
                raise DataError(f"{folder / 'summary.json'}: cannot be read ({err})") from None
            if not isinstance(summary, dict):
                raise DataError(f"{folder / 'summary.json'}: not a run summary (a JSON mapping)")
            if (folder / "config.yaml").is_file():
                summary["data"] = read_yaml_mapping(folder / "config.yaml", what="run config").get("data")
            return summary
    raise DataError(
        f"{checkpoint}: no summary.json in its run folder, so its validation cases are unknown; give "
        "--min-component a size in mm³ (or none) to make an ensemble of bare checkpoints"
    )


def _shared_split(checkpoints: Sequence[Path]) -> tuple[list[str], list[str], str | None]:
    """The validation cases every member shares, the union of their training cases, and their dataset.

    Raises:
        ConfigError: members validated on different cases, or one trained on another's validation case.
    """
    summaries = [_run_summary(c) for c in checkpoints]
    val = list(summaries[0].get("val_cases") or [])
    for path, summary in zip(checkpoints[1:], summaries[1:], strict=True):
        if sorted(summary.get("val_cases") or []) != sorted(val):
            raise ConfigError(
                f"{path}: validated on {sorted(summary.get('val_cases') or [])}, {checkpoints[0]} on {sorted(val)}; "
                "an ensemble tunes its post-processing on validation cases its members share (train them on one "
                "split), or give --min-component a size in mm³"
            )
    # whole labelled scans only: a slice-budget member's scans hold lesions nobody labelled (as a single run)
    train = list(
        dict.fromkeys(c for s in summaries if not s.get("every_kth_slice") for c in s.get("labelled_cases") or [])
    )
    leaked = sorted(set(train) & set(val))
    if leaked:
        raise ConfigError(
            f"a member trained on validation case(s) {leaked}: they cannot tune the ensemble's post-processing"
        )
    data = summaries[0].get("data")
    return val, train, str(data) if data else None


def create_ensemble(
    runs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    data: str | os.PathLike | None = None,
    checkpoint: str = "last",
    min_component: Any = "auto",
    device: str = "auto",
    precision: str = "fp32",
) -> Path:
    """Make an ensemble folder of trained runs (2 or more), its post-processing tuned on their validation cases.

    Args:
        runs: run folders (or checkpoint files) trained on the same labels and split.
        out: the ensemble folder to create (must not exist, or be empty: nothing is overwritten).
        data: the dataset the runs were trained on (default: the first run's, from its ``config.yaml``); its
            validation cases tune ``min_component: auto``.
        checkpoint: ``last`` or ``best`` in each run folder.
        min_component: ``auto`` (tuned on the shared validation cases; without any, the training lesions' free
            size; off when no member removes small components, as runs of brain masks and anatomy do not), a size
            in mm³, or ``None`` (off).
        device, precision: where and how the members predict the validation cases that tune ``min_component``
            (fp32 by default, as :func:`medtransfer.finetune.segment.tune_postprocess` tunes a single run, so the
            size does not depend on whether the CPU has bf16).

    Returns:
        ``out / ensemble.json``.
    """
    from ..data.layouts import load_dataset
    from ..utils import write_json_atomic
    from .predictor import load_predictor

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: exists and is not an empty folder; an ensemble is written to a new folder")
    size = check_min_component(min_component, "--min-component")
    paths = [find_checkpoint(r, checkpoint) for r in runs]
    if len(set(p.resolve() for p in paths)) != len(paths):
        raise ConfigError(f"the same checkpoint is given twice among {[str(p) for p in paths]}")
    members = [load_predictor(p, device=device, precision=precision) for p in paths]
    ensemble = Ensemble(members, paths)
    postprocess: dict[str, Any] = {}
    if size == "auto" and not any(MIN_COMPONENT_KEY in m.postprocess for m in members):
        # no member removes small components (their runs had min_component_mm3 off: a brain mask, anatomy), so
        # neither does the ensemble; a lesion run records its tuned size
        logger.info("no member removes small components (min_component_mm3 off in their runs): neither does this")
        size = None
    if size == "auto":
        val, train, recorded = _shared_split(paths)
        if not val and not train:
            raise ConfigError(
                f"{paths[0]}: its run has neither validation cases to tune the ensemble's post-processing on nor "
                "whole labelled scans to take the training lesions' sizes from; give --min-component a size in mm³ "
                "(or none)"
            )
        if data is None and (recorded is None or not Path(recorded).is_dir()):
            why = "names no dataset" if recorded is None else f"names the dataset {recorded}, not a folder from here"
            raise ConfigError(f"{paths[0]}: its run's config.yaml {why}; give --data (the dataset the runs used)")
        dataset = load_dataset(data if data is not None else recorded)
        if val:
            logger.info("tuning the ensemble's minimum component size on %d validation case(s)", len(val))
        else:  # every labelled scan trained, as a single run without validation: the free size of their lesions
            logger.info("no validation cases: the minimum component size is the training lesions' free size")
        # the lesion prior the members were tuned with, where they agree (else auto)
        modes = {(m.postprocess.get("lesion_prior") or {}).get("mode") for m in members}
        mode = modes.pop() if len(modes) == 1 and None not in modes else "auto"
        tests = list(dict.fromkeys(c for p in paths for c in _run_summary(p).get("test_cases") or []))
        postprocess = tune_on_validation(
            ensemble.predict if val else None, dataset, val, train, _source_volumes(members), mode, tests
        )
        log_lesion_prior(postprocess["lesion_prior"], hint="")
    elif size is not None:
        postprocess = {MIN_COMPONENT_KEY: float(size)}
    record = {
        "format": FORMAT,
        "version": VERSION,
        "members": [{"checkpoint": str(p.resolve()), "sha256": _sha256(p)} for p in paths],
        "labels": ensemble.label_values,
        "in_channels": ensemble.in_channels,
        "postprocess": postprocess,
    }
    out.mkdir(parents=True, exist_ok=True)
    target = out / ENSEMBLE_FILE
    write_json_atomic(target, record)
    return target


def _source_volumes(members) -> dict[str, list[float]] | None:
    """The ``{case: lesion volumes}`` the members' caps came from, merged (a case once, however many members
    recorded it): the ensemble offers them as its source's, and :func:`~.postprocess.lesion_size_prior` counts
    the ensemble's own training cases among them once, as training cases.  ``None`` where no member records any."""
    merged: dict[str, list[float]] = {}
    for member in members:
        merged.update(recorded_lesion_volumes(member.postprocess) or {})
    return merged or None


def load_ensemble(folder: str | os.PathLike, *, device: str = "auto", precision: str = "auto") -> Ensemble:
    """The ensemble of a folder made by :func:`create_ensemble`.

    Raises:
        DataError: ``ensemble.json`` unreadable or not an ensemble record, a member missing or changed since.
    """
    from .predictor import load_predictor

    path = Path(folder) / ENSEMBLE_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot be read as JSON ({err})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise DataError(f"{path}: not a medtransfer ensemble record (format {FORMAT!r} expected)")
    members = record.get("members")
    if record.get("version") != VERSION:
        raise DataError(f"{path}: ensemble format version {record.get('version')!r}; this medtransfer reads {VERSION}")
    if not isinstance(members, list) or len(members) < 2:
        raise DataError(f"{path}: 'members' must list at least 2 checkpoints")
    checkpoints = []
    for i, member in enumerate(members):
        if not isinstance(member, dict) or not isinstance(member.get("checkpoint"), str):
            raise DataError(f"{path}: member {i + 1} has no 'checkpoint' path")
        file = Path(member["checkpoint"])
        if not file.is_file():
            raise DataError(f"{path}: member {i + 1}, {file}, does not exist; make the ensemble again")
        if member.get("sha256") != _sha256(file):
            raise DataError(
                f"{path}: member {i + 1}, {file}, changed after the ensemble was made (SHA-256 differs); its "
                "post-processing was tuned for the old weights: make the ensemble again"
            )
        checkpoints.append(file)
    postprocess = record.get("postprocess") or {}
    if not isinstance(postprocess, dict):
        raise DataError(f"{path}: 'postprocess' must be a mapping")
    size = postprocess.get(MIN_COMPONENT_KEY)
    if size is not None and (isinstance(size, bool) or not isinstance(size, int | float) or not size >= 0):
        raise DataError(f"{path}: postprocess.{MIN_COMPONENT_KEY} must be a volume in mm³ >= 0, got {size!r}")
    loaded = [load_predictor(c, device=device, precision=precision) for c in checkpoints]
    return Ensemble(loaded, checkpoints, dict(postprocess))
