"""Provenance of a results folder: versions, git commits, devices, seeds and times from the run folders."""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .document import Table
from .results import CellRecord, read_env

ENV_KEYS = ("medtransfer", "git_commit", "python", "torch", "numpy", "platform", "cpu_model", "cpu_capability")
ENV_KEYS += ("device", "precision", "cuda", "num_threads")


def provenance_table(cells: Sequence[CellRecord], rows: Sequence[dict[str, Any]]) -> Table:
    """What produced the results: one line per property, each distinct value with the number of runs."""
    envs = [env for env in (read_env(c.run_dir) for c in cells) if env]
    body = [("finished cells", str(len(cells))), ("run folders with env.json", str(len(envs)))]
    body += [(key, _values(env.get(key) for env in envs)) for key in ENV_KEYS if any(key in env for env in envs)]
    seeds = sorted({r.get("seed") for r in rows} | {c.columns.get("seed") for c in cells} - {None}, key=str)
    body.append(("seeds", ", ".join(map(str, seeds)) or "—"))
    created = sorted(str(env["created"]) for env in envs if env.get("created"))
    if created:
        body.append(("runs created", f"{created[0]} … {created[-1]}"))
    started = [c.started for c in cells if isinstance(c.started, int | float)]
    finished = [c.finished for c in cells if isinstance(c.finished, int | float)]
    if started and finished:
        body.append(("cells ran", f"{_iso(min(started))} … {_iso(max(finished))}"))
    durations = [c.duration_s for c in cells if isinstance(c.duration_s, int | float)]
    if durations:
        body.append(("total cell time", f"{sum(durations) / 60:.1f} min over {len(durations)} cells"))
    body.append(("report generated", f"{_iso(datetime.now(UTC).timestamp())} by {_reporter()}"))
    return Table("Provenance", ("property", "value (number of runs)"), tuple(body))


def _values(values) -> str:
    counts = Counter(str(v) for v in values if v is not None)
    if not counts:
        return "—"
    if len(counts) == 1:
        return next(iter(counts))
    return "; ".join(f"{value} ({n})" for value, n in counts.most_common())


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def _reporter() -> str:
    from .. import __version__

    commit = None
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        commit = out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return f"medtransfer {__version__}" + (f" (git {commit})" if commit else "")
