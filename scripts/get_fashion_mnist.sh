#!/usr/bin/env bash
# Make sure the four Fashion-MNIST IDX files are on this machine.
# Usage: scripts/get_fashion_mnist.sh [--optional] [DIR]
# With --optional, a machine where they cannot be had is reported, not an error.
set -euo pipefail

optional=0
if [[ "${1:-}" == "--optional" ]]; then
  optional=1
  shift
fi
dir="${1:-/usr/share/datasets/fashion-mnist}"
files=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)

have_all() {
  local f
  for f in "${files[@]}"; do
    [[ -f "$dir/$f.gz" || -f "$dir/$f" ]] || return 1
  done
}

if have_all; then
  exit 0
fi
if [[ "$dir" == /usr/share/datasets/fashion-mnist ]] && command -v apt-get >/dev/null; then
  sudo=""
  if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null; then sudo="sudo -n"; fi
  echo "Installing Fashion-MNIST from Debian (package dataset-fashion-mnist)..."
  if { $sudo apt-get update -qq && $sudo apt-get install -y -qq dataset-fashion-mnist; } >/dev/null 2>&1 \
      && have_all; then
    exit 0
  fi
fi
msg="Fashion-MNIST IDX files not found in $dir. Install them with
  sudo apt-get install dataset-fashion-mnist
or download the four files from https://github.com/zalandoresearch/fashion-mnist into a folder
and pass --config.data.manual_dir=/that/folder."
if [[ $optional -eq 1 ]]; then
  echo "warning: $msg" >&2
  exit 0
fi
echo "error: $msg" >&2
exit 1
