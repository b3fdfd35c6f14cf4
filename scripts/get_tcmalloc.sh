#!/usr/bin/env bash
# Install tcmalloc (Debian's libtcmalloc-minimal4) when it is missing, and print its path.
# The Makefile preloads it into the programs and the tests (see README, "Host memory"):
# with glibc's malloc, on a 2-core Intel Xeon, XLA:CPU compiled ~1.7x slower and the steps
# after an in-process compile ran ~1.2x slower. Optional: a machine without it (no apt-get, no root) gets a warning
# on stderr and an empty line, and everything runs on glibc's malloc.
set -euo pipefail

find_lib() {
  local lib
  for lib in /usr/lib/*-linux-gnu/libtcmalloc_minimal.so.4 /usr/lib64/libtcmalloc_minimal.so.4; do
    if [[ -f "$lib" ]]; then
      echo "$lib"
      return 0
    fi
  done
  return 1
}

if find_lib; then
  exit 0
fi
if [[ "$(uname -s)" == Linux ]] && command -v apt-get >/dev/null; then
  sudo=""
  if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null; then sudo="sudo -n"; fi
  if { $sudo apt-get install -y -qq libtcmalloc-minimal4 \
       || { $sudo apt-get update -qq && $sudo apt-get install -y -qq libtcmalloc-minimal4; }; } \
       >/dev/null 2>&1 && find_lib; then
    exit 0
  fi
fi
echo "warning: tcmalloc not found (on Debian/Ubuntu: sudo apt-get install libtcmalloc-minimal4);" \
  "running on glibc's malloc" >&2
echo
