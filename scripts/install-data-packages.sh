#!/usr/bin/env bash
# Installs the Debian data packages that medtransfer's embedded benchmark is built from (DESIGN.md):
#   mricron-data          Colin27 T1 (ch2), its skull-stripped copy (ch2bet) and the AAL atlas
#   dataset-fashion-mnist Fashion-MNIST idx files (natural-image classification source)
# As root: apt-get install.  Without root: apt-get download + dpkg-deb -x into a cache folder that
# medtransfer searches ($MEDTRANSFER_DEBIAN_ROOT, default ~/.cache/medtransfer/debian).
# Idempotent: does nothing when the files are already present.
set -euo pipefail
PACKAGES=(mricron-data dataset-fashion-mnist)
MARKERS=(/usr/share/mricron/templates/ch2.nii.gz /usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz)
CACHE="${MEDTRANSFER_DEBIAN_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/medtransfer/debian}"

missing=()
for i in "${!PACKAGES[@]}"; do
  if [ ! -f "${MARKERS[$i]}" ] && [ ! -f "$CACHE${MARKERS[$i]}" ]; then missing+=("${PACKAGES[$i]}"); fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  echo "installing Debian data packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
else
  echo "no root: extracting Debian data packages ${missing[*]} into $CACHE"
  mkdir -p "$CACHE"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && apt-get download "${missing[@]}")
  for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$CACHE"; done
fi
