"""``env.json`` of a run folder: versions, git commit, device, seed."""

from __future__ import annotations

import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch


def git_commit(path: Path | None = None) -> str | None:
    """Commit of the medtransfer source tree (``None`` outside a git checkout)."""
    path = path or Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The processor's model name (``/proc/cpuinfo``'s first ``model name``; else :func:`platform.processor`).

    Recorded because fp32 training is deterministic on one machine but not across processors: their math
    libraries order floating-point sums differently, and a short run on few scans can end far apart.
    """
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def environment(device: str, seed: int, precision: str | None = None) -> dict[str, Any]:
    """What produced a run: library versions, git commit, hardware, device, precision, seed and time."""
    from .. import __version__

    return {
        "medtransfer": __version__,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "num_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "device": device,
        "precision": precision,
        "seed": seed,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
