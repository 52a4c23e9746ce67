"""benchmarks/gpu_check.sh where there is no GPU: one clear line, a JSON that says so, exit 3; bad arguments: 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "gpu_check.sh"


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_WORK": str(tmp_path / "work"), "OUT": str(tmp_path)}
    env.pop("GPU_CHECK_DEVICE", None)
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the script would run its checks")
def test_without_a_gpu_nothing_is_checked_and_it_says_so(tmp_path):
    done = _run(tmp_path)
    assert done.returncode == 3, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"gpu_check: no CUDA GPU here ({sys.executable}'s PyTorch {torch.__version__} sees no CUDA device): "
        "nothing was checked; GPU_CHECK_DEVICE=cpu dry-runs the steps on the CPU"
    ]
    summary = json.loads(done.stdout)
    assert summary["status"] == "no_gpu"
    assert json.loads((tmp_path / "gpu_check.json").read_text()) == summary


def test_an_unknown_argument_is_one_line_and_exit_2(tmp_path):
    done = _run(tmp_path, "--gpus", "2")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "gpu_check: unknown argument '--gpus'; allowed: --data DIR, --prepare, --python-version X.Y, --help"
    ]
    assert json.loads(done.stdout)["status"] == "setup_failed"
