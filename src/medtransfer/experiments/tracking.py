"""Optional MLflow tracking of finished cells (``medtransfer grid run --mlflow URI``).

MLflow is a mirror, not the record: the run folders are the source of truth.  A cell is logged by the worker
that ran it, right after its ``summary.json`` is written, as one MLflow run named after the cell id, with

- tags ``medtransfer.grid``, ``medtransfer.cell_id`` and ``medtransfer.run_dir``;
- params: the cell's axis labels and its flattened resolved config (``train.lr``, ...);
- metrics: the numeric entries of ``result["metrics"]``, plus ``result["history"]`` (a list of per-epoch
  mappings with an ``epoch`` key) logged with ``step=epoch`` for convergence curves;
- artifacts: ``config.yaml`` and ``summary.json``.

A file store (``file:///abs/mlruns`` or a plain path) is what the user asked for, so the tracker sets
``MLFLOW_ALLOW_FILE_STORE=true`` (unless already set), which MLflow 3 requires for file stores.

A tracking failure (server down, ...) is logged as a warning and never fails the cell.  A cell that is already
done is not logged again by a rerun.  Needs the ``mlflow`` extra (``pip install 'medtransfer[mlflow]'``; the
``mlflow-skinny`` client suffices for file stores and tracking servers).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import ConfigError

log = logging.getLogger(__name__)


class MlflowTracker:
    """Log finished cells to MLflow (picklable: workers import mlflow themselves).

    Args:
        uri: tracking URI, e.g. ``file:///abs/mlruns``, ``http://host:5000``, ``sqlite:///mlflow.db``.
        experiment: MLflow experiment name (the grid name by default in the CLI).
    """

    def __init__(self, uri: str, experiment: str) -> None:
        _import_mlflow()  # fail early, in the dispatcher, with a clear message
        self.uri = uri
        self.experiment = experiment

    def __repr__(self) -> str:
        return f"MlflowTracker({self.uri!r}, experiment={self.experiment!r})"

    def log_cell(self, cell: Any, summary: Mapping[str, Any]) -> None:
        """Log one finished cell; warn instead of raising when MLflow fails."""
        try:
            self._log(cell, summary)
        except Exception as err:  # noqa: BLE001  (tracking must never fail a finished cell)
            log.warning("MLflow logging of cell %s failed: %s: %s", cell.id, type(err).__name__, err)

    def _log(self, cell: Any, summary: Mapping[str, Any]) -> None:
        mlflow = _import_mlflow()
        if "://" not in self.uri or self.uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses file stores unless asked
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_experiment(self.experiment)
        result = summary.get("result") or {}
        with mlflow.start_run(run_name=cell.id):
            mlflow.set_tags(
                {
                    "medtransfer.grid": cell.grid,
                    "medtransfer.cell_id": cell.id,
                    "medtransfer.run_dir": str(cell.run_dir),
                }
            )
            params = {**{f"axis.{k}": v for k, v in cell.axes.items()}, **dict(flatten(cell.config))}
            mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
            mlflow.log_metrics(numeric(result.get("metrics") or {}))
            for entry in result.get("history") or []:
                if isinstance(entry, Mapping) and "epoch" in entry:
                    mlflow.log_metrics(
                        numeric({k: v for k, v in entry.items() if k != "epoch"}), step=int(entry["epoch"])
                    )
            for name in ("config.yaml", "summary.json"):
                if (cell.run_dir / name).is_file():
                    mlflow.log_artifact(str(cell.run_dir / name))


def flatten(config: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``{"train": {"lr": 1}}`` -> ``("train.lr", 1)``; lists and scalars are leaves."""
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from flatten(value, f"{name}.")
        else:
            yield name, value


def numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite numeric entries of a metrics mapping (MLflow rejects NaN on some stores, and strings)."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out[str(key)] = float(value)
    return out


def _import_mlflow():
    try:
        import mlflow
    except ImportError as err:
        raise ConfigError("--mlflow needs MLflow, which is not installed; pip install 'medtransfer[mlflow]'") from err
    return mlflow
