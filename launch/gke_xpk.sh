#!/usr/bin/env bash
# Train on a TPU slice in GKE with xpk (https://github.com/AI-Hypercomputer/xpk): xpk
# builds an image from this checkout and runs the same jaxgen-train command on every
# host of the slice through a JobSet; jax.distributed.initialize() is called by
# jaxgen-train from the TPU environment.
#
#   launch/gke_xpk.sh --cluster my-cluster --workload c10-run --tpu-type v5litepod-16 \
#       [--num-slices 1] [--dry-run] -- --config=configs/ddpm_cifar10.py --workdir=gs://my-bucket/runs/c10
set -euo pipefail

cluster="" workload="" tpu_type="v5litepod-16" num_slices=1 dry_run=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cluster) cluster="$2"; shift 2 ;;
    --workload) workload="$2"; shift 2 ;;
    --tpu-type) tpu_type="$2"; shift 2 ;;
    --num-slices) num_slices="$2"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    --) shift; break ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
if [[ -z "$cluster" || -z "$workload" ]]; then
  echo "usage: $0 --cluster C --workload W [--tpu-type T] [--num-slices N] -- flags" >&2
  exit 2
fi
train_args=$(printf '%q ' "$@")
cmd=(xpk workload create --cluster="$cluster" --workload="$workload" --tpu-type="$tpu_type"
     --num-slices="$num_slices" --base-docker-image=python:3.11-slim --script-dir=.
     --command="pip install -q -e '.[gcs]' 'jax[tpu]==0.10.2' && jaxgen-train $train_args")
if [[ $dry_run -eq 1 ]]; then
  printf '%q ' "${cmd[@]}"
  printf '\n'
  exit 0
fi
"${cmd[@]}"
