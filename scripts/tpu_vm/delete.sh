#!/usr/bin/env bash
# Deletes the TPU VM, which stops its billing. A gs:// WORKDIR stays (storage is billed
# separately); copy it back first (copy_back.sh) if the run lived on the VM's disk.
# Settings: see common.sh.
set -euo pipefail
# shellcheck source=scripts/tpu_vm/common.sh
source "$(dirname "$0")/common.sh"

gcloud compute tpus tpu-vm delete "$TPU_NAME" "${GCLOUD_FLAGS[@]}" --quiet
