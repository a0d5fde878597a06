#!/usr/bin/env bash
# Creates the TPU VM (or pod slice). COST: billed by the hour from now until delete.sh;
# a v4-8 costs several US dollars an hour, pod slices many times that. Set SPOT=1 for a
# cheaper preemptible VM. Settings: see common.sh.
set -euo pipefail
# shellcheck source=scripts/tpu_vm/common.sh
source "$(dirname "$0")/common.sh"

extra=()
if [[ -n ${SPOT:-} ]]; then
  extra+=(--spot)
fi
gcloud compute tpus tpu-vm create "$TPU_NAME" "${GCLOUD_FLAGS[@]}" \
  --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" "${extra[@]}"
echo "created $TPU_NAME ($ACCELERATOR_TYPE in $ZONE); it is billed until scripts/tpu_vm/delete.sh"
