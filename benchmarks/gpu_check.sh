#!/usr/bin/env bash
# benchmarks/gpu_check.sh: check medtransfer's CUDA paths on a machine with a GPU, in under 10 minutes.
#
#   bash benchmarks/gpu_check.sh [--data BRAINSHIFT]     # on the GPU machine, from the repository root or anywhere
#   bash benchmarks/gpu_check.sh --prepare               # beforehand, where pip reaches an index (see "Offline")
#
# Steps, each under its own time limit; then one JSON summary on stdout, also written to $WORK/gpu_check.json
# and, when the variable OUT is set, to $OUT/gpu_check.json:
#   gpu_tests   pytest -m gpu: auto device and AMP, fp32/bf16/fp16 training with channels_last and the gradient
#               scaler, resume (optimizer, scaler, CUDA RNG) from CPU-loadable checkpoints, DDP over nccl in one
#               process, finetune + predict on the GPU against the CPU            (tests/train/test_gpu_paths.py)
#   throughput  benchmarks/train_throughput.py --device cuda: the trainer's default step (bf16 + channels_last)
#               against MONAI BasicUNet in fp32 and under the same bf16 autocast, on the same GPU
#   grid        `medtransfer grid run` of the quick demo grid (brain extraction + stroke lesions, every strategy)
#               with `precision: auto` and `device: cuda`: every cell must finish, trained in bf16 (fp16 on GPUs
#               without bf16)
#   predict     `medtransfer predict` of a grid cell's test scan with that cell's model, on the GPU and on the
#               CPU: Dice against the reference, and GPU/CPU agreement
#
# Set-up (a fresh copy of the repository is enough; nothing outside $WORK is written):
#   Python   $PYTHON, else the first of .venv/bin/python, python3, python whose PyTorch is a CUDA build; where
#            none is but nvidia-smi sees a GPU, `pip install torch` (CUDA wheels) into $WORK/site.
#   packages what the check imports and that Python lacks (nibabel, monai, connected-components-3d, edt, ...)
#            goes into $WORK/site with `pip install --no-deps --target` (the machine's own torch stays), from
#            the wheels in $GPU_CHECK_WHEELS (default .whl/) when that folder exists, else from the index;
#            versions from requirements/constraints.txt.
#   data     the quick demo's brainshift build: --data DIR, else $WORK/brainshift, else built there (that needs
#            torchio, nilearn and the Debian package mricron-data, as `make setup` installs).
# Offline: on a machine with an index, `bash benchmarks/gpu_check.sh --prepare [--python-version 3.12]`
#   downloads the wheels into .whl/ (for that Python, manylinux x86-64) and builds the data into
#   .gpu-check/brainshift (with .venv: run `make setup` first); copy .whl/ and .gpu-check/brainshift along.
#
# Environment: GPU_CHECK_WORK (the work folder $WORK, default .gpu-check/); GPU_CHECK_ONLY (the grid's cells,
#   a glob of cell ids, default 'brain/*': the 10 brain-extraction cells and their source model);
#   GPU_CHECK_BATCH / GPU_CHECK_SIZE (the throughput batch, default 32 slices of 256x256);
#   GPU_CHECK_DEVICE=cpu runs every step on the CPU instead (a dry run of this script, status "dry_run"; the
#   GPU-only tests skip), with GPU_CHECK_TIME_SCALE=K for K times the time limits on a slow CPU.
# Exit status: 0 every step passed; 1 a step failed or was skipped (the JSON says which and why); 2 the set-up
#   failed (the message says what is missing); 3 no CUDA GPU here, so nothing was checked.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${GPU_CHECK_WORK:-$REPO/.gpu-check}
WHEELS=${GPU_CHECK_WHEELS:-$REPO/.whl}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
DATA=""
PREPARE=0
TARGET_PY=3.12
# import name -> pip name of what the steps import beyond torch (pytest for the tests, monai for the peer)
MODULES=(numpy scipy yaml tqdm nibabel matplotlib cc3d edt skimage h5py monai pytest)
PIP_NAMES=(numpy scipy pyyaml tqdm nibabel matplotlib connected-components-3d edt scikit-image h5py monai pytest)
OFFLINE_WHEELS=(nibabel monai connected-components-3d edt)  # what the CUDA image of this workplace lacks

log() { echo "gpu_check: $*" >&2; }
finish_early() {  # finish_early EXIT STATUS REASON: one line on stderr, a small JSON on stdout (and in $OUT)
  local json
  json=$(printf '{"status": "%s", "reason": "%s"}' "$2" "$(printf '%s' "$3" | tr '"\\' "''")")
  log "$3"
  echo "$json"
  if [ -n "${OUT:-}" ]; then mkdir -p "$OUT" && echo "$json" >"$OUT/gpu_check.json"; fi
  exit "$1"
}
die() { finish_early 2 setup_failed "$*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --data) DATA=${2:?--data needs a folder}; shift 2 ;;
    --prepare) PREPARE=1; shift ;;
    --python-version) TARGET_PY=${2:?--python-version needs a version like 3.12}; shift 2 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1'; allowed: --data DIR, --prepare, --python-version X.Y, --help" ;;
  esac
done
case "$DEVICE" in cuda|cpu) ;; *) die "GPU_CHECK_DEVICE='$DEVICE'; allowed: cuda, cpu" ;; esac
mkdir -p "$WORK" || die "cannot create the work folder $WORK"
SITE=$WORK/site
export PYTHONPATH="$REPO/src:$SITE${PYTHONPATH:+:$PYTHONPATH}"

pinned() {  # the version requirements/constraints.txt pins for pip name $1 (empty if none)
  sed -n "s/^$1==\(.*\)/\1/p" "$REPO/requirements/constraints.txt" | head -1
}

with_pins() {  # pip name -> name==version where the constraints pin one
  local name version
  for name in "$@"; do
    version=$(pinned "$name")
    if [ -n "$version" ]; then echo "$name==$version"; else echo "$name"; fi
  done
}

if [ "$PREPARE" = 1 ]; then
  PY=${PYTHON:-}
  if [ -z "$PY" ]; then
    for candidate in "$REPO/.venv/bin/python" python3 python; do
      command -v "$candidate" >/dev/null 2>&1 && { PY=$candidate; break; }
    done
  fi
  [ -n "$PY" ] || die "no Python found; set PYTHON"
  mkdir -p "$WHEELS"
  platforms=()
  for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
  done
  # shellcheck disable=SC2046
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$TARGET_PY" --implementation cp \
    "${platforms[@]}" -d "$WHEELS" $(with_pins "${OFFLINE_WHEELS[@]}") ||
    die "pip download failed (no index reachable?); wheels wanted: ${OFFLINE_WHEELS[*]}"
  "$PY" - "$WORK/brainshift" <<'EOF' || die "building the quick demo's brainshift failed (run 'make setup' first)"
import sys
from pathlib import Path

from medtransfer.experiments.demo import QUICK, build_demo_benchmark

build_demo_benchmark(Path(sys.argv[1]), QUICK, workers=2)
EOF
  log "prepared: wheels in $WHEELS ($(ls "$WHEELS" | wc -l) files), data in $WORK/brainshift"
  log "copy both with the repository and run: bash benchmarks/gpu_check.sh"
  exit 0
fi

# ------------------------------------------------------------------------------------------- Python, GPU
usable() {  # usable PYTHON: it imports torch, a CUDA build of it unless this is a CPU dry run
  "$1" -c "import sys, torch; sys.exit(0 if '$DEVICE' == 'cpu' or torch.version.cuda else 1)" >/dev/null 2>&1
}
gpu_listed() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; }

PY=""
if [ -n "${PYTHON:-}" ]; then
  PY=$PYTHON
else
  for candidate in "$REPO/.venv/bin/python" python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 && usable "$candidate"; then
      PY=$candidate
      break
    fi
  done
fi
no_gpu() {
  finish_early 3 no_gpu "no CUDA GPU here ($1): nothing was checked; GPU_CHECK_DEVICE=cpu dry-runs the steps on the CPU"
}
if [ -z "$PY" ]; then
  gpu_listed || no_gpu "no nvidia-smi GPU and no Python with a CUDA build of PyTorch"
  PY=$(command -v python3 || command -v python) || die "a GPU is here but no Python; install Python 3.11+"
  log "no Python with a CUDA build of PyTorch: pip install torch into $SITE"
  "$PY" -m pip install -q --target "$SITE" torch || die "pip install torch failed; set PYTHON to a Python with CUDA PyTorch"
fi
probe=$("$PY" -c 'import sys, torch; print(sys.version.split()[0], torch.__version__, torch.version.cuda,
  int(torch.cuda.is_available()))' 2>/dev/null) || die "$PY cannot import torch; set PYTHON to a Python with (CUDA) PyTorch"
read -r py_version torch_version torch_cuda cuda_ok <<<"$probe"
if [ "$DEVICE" = cuda ] && [ "$cuda_ok" != 1 ]; then
  if [ "$torch_cuda" = None ] && gpu_listed; then
    die "nvidia-smi lists a GPU but $PY's PyTorch $torch_version is a CPU build; set PYTHON to one with CUDA PyTorch"
  fi
  no_gpu "$PY's PyTorch $torch_version sees no CUDA device"
fi
log "python: $PY ($py_version, torch $torch_version)"

# ------------------------------------------------------------------------------------------- packages
absent=" $("$PY" -c 'import importlib.util as u, sys; print(*(m for m in sys.argv[1:] if not u.find_spec(m)))' \
  "${MODULES[@]}") "
missing=()
for i in "${!MODULES[@]}"; do
  [[ "$absent" == *" ${MODULES[$i]} "* ]] && missing+=("${PIP_NAMES[$i]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  source_args=()
  [ -d "$WHEELS" ] && source_args=(--no-index --find-links "$WHEELS")
  log "installing into $SITE: ${missing[*]} (${source_args[*]:-from the package index})"
  # shellcheck disable=SC2046
  "$PY" -m pip install -q --no-deps --no-compile --target "$SITE" "${source_args[@]}" $(with_pins "${missing[@]}") ||
    die "could not install ${missing[*]}; offline, run 'bash benchmarks/gpu_check.sh --prepare' where pip reaches an index and copy .whl/ along"
fi
"$PY" -c "import medtransfer.cli, $(IFS=,; echo "${MODULES[*]}")" 2>"$WORK/import_error.txt" ||
  die "imports still fail after the set-up: $(tail -1 "$WORK/import_error.txt")"

# ------------------------------------------------------------------------------------------- steps
STEPS=$WORK/steps
rm -rf "$STEPS" && mkdir -p "$STEPS"
export GPU_CHECK_DEVICE=$DEVICE REPO WORK STEPS PY DEVICE DATA
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} PYTHONUNBUFFERED=1
unset MEDTRANSFER_PRECISION  # the check is about what `auto` does on this machine
START=$(date +%s)

record() {  # record STEP STATUS SECONDS EXTRA_JSON_FILE LOG: the step's JSON (with the log's tail if it failed)
  "$PY" - "$@" <<'EOF'
import json
import os
import sys

step, status, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
extra = {}
if len(sys.argv) > 4 and os.path.isfile(sys.argv[4]):
    try:
        extra = json.loads(open(sys.argv[4]).read())
    except ValueError as err:
        extra = {"unreadable": f"{sys.argv[4]}: {err}"}
out = {"status": status, "seconds": round(seconds, 1), **extra}
if status != "passed" and os.path.isfile(sys.argv[5]):
    out["log_tail"] = open(sys.argv[5], errors="replace").read().splitlines()[-8:]
open(os.path.join(os.environ["STEPS"], f"{step}.json"), "w").write(json.dumps(out))
EOF
}

run_step() {  # run_step NAME LIMIT_S COMMAND...: status from the exit code (124: past its limit)
  local name=$1 limit=$(( $2 * ${GPU_CHECK_TIME_SCALE:-1} )) t0 rc status
  shift 2
  log "step $name (at most ${limit}s)"
  t0=$(date +%s)
  timeout "$limit" bash -c "$*" >"$STEPS/$name.log" 2>&1  # a step is an exported function; timeout kills its group
  rc=$?
  case $rc in 0) status=passed ;; 124) status="failed: over its ${limit}s limit" ;; *) status="failed: exit $rc" ;; esac
  [ $rc -eq 0 ] || tail -15 "$STEPS/$name.log" >&2
  if declare -F "${name}_report" >/dev/null; then "${name}_report" >"$STEPS/$name.out.json"; fi  # untimed
  record "$name" "$status" "$(( $(date +%s) - t0 ))" "$STEPS/$name.out.json" "$STEPS/$name.log"
}

# 1. the gpu-marked tests
gpu_tests() {
  local files
  files=$(cd "$REPO" && grep -rlE 'pytest\.mark\.gpu|pytestmark = pytest\.mark\.gpu' tests --include='test_*.py')
  [ -n "$files" ] || { echo "no gpu-marked tests found" >&2; return 1; }
  # shellcheck disable=SC2086
  (cd "$REPO" && MEDTRANSFER_TEST_DEVICE=$DEVICE "$PY" -m pytest -m gpu -p no:cacheprovider -q -rs \
    --junitxml="$STEPS/gpu_tests.xml" $files)
  local rc=$?
  "$PY" - "$STEPS/gpu_tests.xml" >"$STEPS/gpu_tests.out.json" <<'EOF'
import json
import sys
import xml.etree.ElementTree as ET

suite = ET.parse(sys.argv[1]).getroot()
suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
failed = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None or c.find("error") is not None]
print(json.dumps({**counts, "failed_tests": failed}))
EOF
  return $rc
}
export -f gpu_tests
run_step gpu_tests 150 gpu_tests

# 2. training throughput against MONAI on the same device
throughput() {
  "$PY" "$REPO/benchmarks/train_throughput.py" --device "$DEVICE" --threads "$OMP_NUM_THREADS" --no-compile \
    --batch "${GPU_CHECK_BATCH:-32}" --size "${GPU_CHECK_SIZE:-256}" --rounds 10 >"$STEPS/throughput.full.json" || return 1
  "$PY" - "$STEPS/throughput.full.json" >"$STEPS/throughput.out.json" <<'EOF'
import json
import sys

report = json.load(open(sys.argv[1]))
run = report["by_threads"][0]
keep = ("step_ms", "images_per_s", "speedup_vs_monai", "speedup_vs_monai_bf16", "fraction_of_bf16_peak")
print(json.dumps({
    "device": report["device"],
    "batch": report["batch"],
    "image_size": report["image_size"],
    "trainer_default_plan": run["trainer_default_plan"],
    "bf16_matmul_peak_tflops": round(run["bf16_matmul_peak_gflops"] / 1e3, 1),
    "runs": {name: {k: v[k] for k in keep if k in v} for name, v in run["runs"].items()},
}))
EOF
}
export -f throughput
run_step throughput 120 throughput

# 3. a short grid run of the demo grid on the device
find_data() {
  local dir
  for dir in "$DATA" "$WORK/brainshift"; do
    [ -n "$dir" ] && [ -f "$dir/.demo-built" ] && { echo "$dir"; return 0; }
  done
  [ -n "$DATA" ] && { echo "--data $DATA is not a finished demo build (no .demo-built)" >&2; return 1; }
  "$PY" - "$WORK/brainshift" >&2 <<'EOF' || return 1
import sys
from pathlib import Path

from medtransfer.experiments.demo import QUICK, build_demo_benchmark

build_demo_benchmark(Path(sys.argv[1]), QUICK, workers=2)
EOF
  echo "$WORK/brainshift"
}
grid() {
  local data
  data=$(find_data) || { echo "no brainshift build; pass --data or see --prepare" >&2; return 1; }
  rm -rf "$WORK/results"
  "$PY" - "$data" "$WORK/grid.yaml" <<'EOF' || return 1
import os
import sys
from pathlib import Path

import yaml

from medtransfer.experiments.demo import QUICK, demo_grid

grid = demo_grid(Path(sys.argv[1]), QUICK)
train = grid["defaults"]["finetune"]["train"]
train.pop("precision", None)  # the demo pins fp32 (same numbers on every CPU); here `auto` is under test
train["device"] = os.environ["GPU_CHECK_DEVICE"]
grid["defaults"]["resources"] = {"num_cpus": 4}
Path(sys.argv[2]).write_text(yaml.safe_dump(grid, sort_keys=False))
EOF
  "$PY" -c 'import sys; from medtransfer.cli import main; sys.exit(main(sys.argv[1:]))' \
    grid run "$WORK/grid.yaml" --results "$WORK/results" --only "${GPU_CHECK_ONLY:-brain/*}" || return 1
  [ -z "$(find "$WORK/results/demo" -name error.json)" ]
}
grid_report() {  # what the grid run left, also after its time limit
  "$PY" - "$WORK/results/demo" <<'EOF'
import json
import sys
from pathlib import Path

from medtransfer.experiments.collect import collect_cells

root = Path(sys.argv[1])
cells = collect_cells(root) if root.is_dir() else []
errors = sorted(str(p.parent.relative_to(root)) for p in root.rglob("error.json")) if root.is_dir() else []
precisions, devices = set(), set()
for path in root.rglob("train/summary.json") if root.is_dir() else []:
    precisions.add(json.loads(path.read_text()).get("precision"))
for path in root.rglob("env.json") if root.is_dir() else []:
    devices.add(json.loads(path.read_text()).get("device"))
dice = {c["cell_id"]: round(c["dice"], 3) for c in cells if isinstance(c.get("dice"), float)}
print(json.dumps({
    "cells_done": len(cells),
    "cells_failed": errors,
    "trained_in": sorted(p for p in precisions if p),
    "devices": sorted(d for d in devices if d),
    "dice": dice,
}))
EOF
}
export -f find_data grid
run_step grid 210 grid

# 4. predict a test scan with a grid cell's model, on the device and on the CPU
predict() {
  local cell
  cell=$(find "$WORK/results/demo" -path '*__full/*' -name summary.json -not -path '*/train/*' 2>/dev/null | sort | head -1)
  [ -n "$cell" ] || { echo '{"reason": "no finished full fine-tuning cell of the grid"}' >"$STEPS/predict.out.json"; return 1; }
  "$PY" - "$(dirname "$cell")" "$STEPS/predict.out.json" <<'EOF'
import json
import os
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from medtransfer.cli import main

cell = Path(sys.argv[1])
image = sorted((cell / "images").glob("*_0000.nii.gz"))[0]
reference = np.asarray(nib.load(cell / "reference" / image.name.replace("_0000", "")).dataobj) > 0
out, masks = {"cell": os.path.relpath(cell, Path(os.environ["WORK"]) / "results"), "scan": image.name}, {}
for device in dict.fromkeys([os.environ["GPU_CHECK_DEVICE"], "cpu"]):
    mask = cell.parent / f"gpu_check_{device}.nii.gz"
    start = time.perf_counter()
    code = main(["predict", "--model", str(cell / "train"), "--input", str(image), "--output", str(mask), "--device", device])
    masks[device] = np.asarray(nib.load(mask).dataobj) > 0 if code == 0 else None
    dice = None
    if code == 0:
        both = masks[device].sum() + reference.sum()
        dice = round(float(2 * (masks[device] & reference).sum() / both), 3) if both else 1.0
    out[device] = {"exit": code, "seconds": round(time.perf_counter() - start, 1), "dice": dice}
if len(masks) == 2 and all(m is not None for m in masks.values()):
    a, b = masks.values()
    out["gpu_cpu_voxel_agreement"] = round(float(np.mean(a == b)), 5)
Path(sys.argv[2]).write_text(json.dumps(out))  # not stdout: predict prints there too
sys.exit(0 if all(m is not None for m in masks.values()) and out.get("gpu_cpu_voxel_agreement", 1) > 0.98 else 1)
EOF
}
export -f predict
run_step predict 60 predict

# ------------------------------------------------------------------------------------------- summary
"$PY" - "$(( $(date +%s) - START ))" "$PY" >"$WORK/gpu_check.json" <<'EOF'
import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

import torch

steps_dir = Path(os.environ["STEPS"])
steps = {name: json.loads((steps_dir / f"{name}.json").read_text()) for name in ("gpu_tests", "throughput", "grid", "predict")}
device = os.environ["GPU_CHECK_DEVICE"]
passed = all(s["status"] == "passed" for s in steps.values())
summary = {
    "status": ("passed" if passed else "failed") if device == "cuda" else ("dry_run" if passed else "dry_run_failed"),
    "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    "device": torch.cuda.get_device_name() if device == "cuda" else f"cpu ({platform.processor() or platform.machine()})",
    "torch": torch.__version__,
    "cuda": torch.version.cuda,
    "bf16_supported": torch.cuda.is_bf16_supported() if device == "cuda" else None,
    "python": sys.argv[2],
    "seconds": int(sys.argv[1]),
    "steps": steps,
}
print(json.dumps(summary, indent=2))
sys.exit(0 if passed else 1)
EOF
rc=$?
cat "$WORK/gpu_check.json"
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT" && cp "$WORK/gpu_check.json" "$OUT/gpu_check.json"
  for f in "$STEPS"/*.log; do echo "===== $f"; cat "$f"; done >"$OUT/gpu_check.log"
fi
exit $rc
