#!/usr/bin/env bash
# N jaxgen-train processes on this machine, joined by jax.distributed over localhost:
# the multi-host code path on one host (what the multi-process tests run).
#
#   launch/local_multiprocess.sh [--dry-run] [--port P] [--devices-per-process D] \
#       [--logdir DIR] N -- --config=configs/ddpm_fashion_mnist.py:tiny --workdir=runs/mp
#
# Every process gets the same flags plus --coordinator_address/--num_processes/--process_id.
# Logs go to DIR/process_<i>.log (default: logs/). If one process fails, the rest are
# killed and the script exits non-zero.
set -euo pipefail

dry_run=0
port=12355
devices=""
logdir=logs
num_processes=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) dry_run=1; shift ;;
    --port) port="$2"; shift 2 ;;
    --devices-per-process) devices="$2"; shift 2 ;;
    --logdir) logdir="$2"; shift 2 ;;
    --) shift; break ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) num_processes="$1"; shift ;;
  esac
done
if [[ -z "$num_processes" || ! "$num_processes" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 [--dry-run] [--port P] [--devices-per-process D] N -- jaxgen-train flags" >&2
  exit 2
fi
train="${JAXGEN_TRAIN:-jaxgen-train}"

pids=()
for ((i = 0; i < num_processes; i++)); do
  cmd=("$train" "$@" "--coordinator_address=127.0.0.1:$port"
       "--num_processes=$num_processes" "--process_id=$i")
  if [[ -n "$devices" ]]; then cmd+=("--num_cpu_devices=$devices"); fi
  if [[ $dry_run -eq 1 ]]; then
    printf '%q ' "${cmd[@]}"
    printf '\n'
    continue
  fi
  mkdir -p "$logdir"
  "${cmd[@]}" >"$logdir/process_$i.log" 2>&1 &
  pids+=("$!")
done
[[ $dry_run -eq 1 ]] && exit 0

status=0
for pid in "${pids[@]}"; do
  if ! wait "$pid"; then
    status=1
    kill "${pids[@]}" 2>/dev/null || true
  fi
done
tail -n 3 "$logdir/process_0.log"
exit "$status"
