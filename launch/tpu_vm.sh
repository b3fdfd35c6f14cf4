#!/usr/bin/env bash
# Train on a Cloud TPU VM (single- or multi-host): optionally create it, copy this
# checkout to every worker, install, run the same jaxgen-train command on --worker=all
# (logs of all workers stream here), optionally delete it.
#
#   launch/tpu_vm.sh --name my-tpu --zone us-central2-b --accelerator-type v4-8 --create \
#       [--project P] [--version tpu-ubuntu2204-base] [--delete] [--dry-run] \
#       -- --config=configs/ddpm_cifar10.py --workdir=gs://my-bucket/runs/c10
#
# On TPU VMs jaxgen-train calls jax.distributed.initialize() itself when there is more
# than one worker (TPU_WORKER_HOSTNAMES); no coordinator flags are needed.
set -euo pipefail

name="" zone="" project="" accelerator="v4-8" version="tpu-ubuntu2204-base"
create=0 delete=0 dry_run=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) name="$2"; shift 2 ;;
    --zone) zone="$2"; shift 2 ;;
    --project) project="$2"; shift 2 ;;
    --accelerator-type) accelerator="$2"; shift 2 ;;
    --version) version="$2"; shift 2 ;;
    --create) create=1; shift ;;
    --delete) delete=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    --) shift; break ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
if [[ -z "$name" || -z "$zone" ]]; then
  echo "usage: $0 --name NAME --zone ZONE [options] -- jaxgen-train flags" >&2
  exit 2
fi

run() {
  if [[ $dry_run -eq 1 ]]; then
    printf '%q ' "$@"
    printf '\n'
  else
    "$@"
  fi
}

gcloud_tpu=(gcloud compute tpus tpu-vm)
where=(--zone="$zone")
if [[ -n "$project" ]]; then where+=(--project="$project"); fi
train_args=$(printf '%q ' "$@")
archive=/tmp/jaxgen-src.tar.gz

if [[ $create -eq 1 ]]; then
  run "${gcloud_tpu[@]}" create "$name" "${where[@]}" --accelerator-type="$accelerator" \
    --version="$version"
fi
run git archive --format=tar.gz -o "$archive" HEAD
run "${gcloud_tpu[@]}" scp "$archive" "$name:jaxgen-src.tar.gz" "${where[@]}" --worker=all
run "${gcloud_tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command="mkdir -p jaxgen && tar -xzf jaxgen-src.tar.gz -C jaxgen && cd jaxgen && python3 -m venv .venv && .venv/bin/pip install -q -e '.[gcs]' 'jax[tpu]==0.10.2'"
run "${gcloud_tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command="cd jaxgen && .venv/bin/jaxgen-train $train_args"
if [[ $delete -eq 1 ]]; then
  run "${gcloud_tpu[@]}" delete "$name" "${where[@]}" --quiet
fi
