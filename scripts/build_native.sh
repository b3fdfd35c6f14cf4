#!/usr/bin/env bash
# Build jaxgen/native/libjaxgen_onednn.so: the oneDNN convolutions XLA:CPU calls through
# its FFI (jaxgen/models/onednn.py; on a 2-core Intel Xeon they made the DDPM CIFAR-10
# training step ~1.35x faster, README "CPU convolutions"). Installs Debian's libdnnl-dev
# when it is missing.
#
#   scripts/build_native.sh PYTHON [--require]
#
# Optional by default: where it cannot be built (no apt-get, no root, no C++ compiler, not
# x86-64 Linux) it warns on stderr and jaxgen runs XLA's own convolutions. --require (the
# tests) fails instead.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:?usage: scripts/build_native.sh PYTHON [--require]}
require=${2:-}
src=jaxgen/native/onednn_conv.cc
out=jaxgen/native/libjaxgen_onednn.so

give_up() {
  if [[ "$require" == --require ]]; then
    echo "error: $1" >&2
    exit 1
  fi
  echo "warning: $1; jaxgen uses XLA's convolutions on the CPU" >&2
  exit 0
}

if [[ "$(uname -s)" != Linux || "$(uname -m)" != x86_64 ]]; then
  give_up "the oneDNN convolutions are built for x86-64 Linux only"
fi
missing=()
[[ -f /usr/include/oneapi/dnnl/dnnl.hpp ]] || missing+=(libdnnl-dev)
command -v g++ >/dev/null || missing+=(g++)
if (( ${#missing[@]} )); then
  sudo=""
  if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null; then sudo="sudo -n"; fi
  command -v apt-get >/dev/null || give_up "missing ${missing[*]} (and no apt-get to install them)"
  { $sudo apt-get install -y -qq "${missing[@]}" \
      || { $sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}"; }; } \
      >/dev/null 2>&1 || give_up "could not install ${missing[*]} (sudo apt-get install ${missing[*]})"
fi
include=$("$python" -c 'import jax; print(jax.ffi.include_dir())')
# Rebuilt when the source or JAX (its FFI headers) changes.
stamp="$out.$(sha256sum "$src" | cut -c1-16).$("$python" -c 'import jaxlib; print(jaxlib.__version__)')"
if [[ -f "$out" && -f "$stamp" ]]; then
  exit 0
fi
rm -f "$out" "$out".*
g++ -O2 -std=c++17 -shared -fPIC -fopenmp -w -I"$include" "$src" -o "$out.tmp" -ldnnl \
  || give_up "compiling $src failed"
mv "$out.tmp" "$out"
touch "$stamp"
