#!/usr/bin/env bash
# Copies the run (checkpoints, TensorBoard events, samples) to LOCAL_DIR on this machine
# (default ./runs/$TPU_NAME): from GCS when WORKDIR is gs://, else from worker 0's disk.
# Settings: see common.sh.
set -euo pipefail
# shellcheck source=scripts/tpu_vm/common.sh
source "$(dirname "$0")/common.sh"

local_dir=${LOCAL_DIR:-runs/$TPU_NAME}
mkdir -p "$local_dir"
if [[ $WORKDIR == gs://* ]]; then
  gcloud storage cp --recursive "$WORKDIR/*" "$local_dir/"
else
  remote=$WORKDIR
  if [[ $remote != /* ]]; then
    remote=$CLONE_DIR/$WORKDIR  # train.sh runs inside the clone
  fi
  gcloud compute tpus tpu-vm scp "${GCLOUD_FLAGS[@]}" --worker=0 --recurse \
    "$TPU_NAME:$remote/*" "$local_dir/"
fi
echo "copied to $local_dir (tensorboard --logdir=$local_dir)"
