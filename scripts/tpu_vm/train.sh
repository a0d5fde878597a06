#!/usr/bin/env bash
# Starts training on every worker at once; they join through jax.distributed (JAX finds the
# other workers itself). Extra arguments go to aigc_jax.train, e.g.
#   scripts/tpu_vm/train.sh --config.train.num_steps=20000
# Re-running it resumes from the latest checkpoint in WORKDIR. Settings: see common.sh.
set -euo pipefail
# shellcheck source=scripts/tpu_vm/common.sh
source "$(dirname "$0")/common.sh"

if [[ $WORKDIR != gs://* ]]; then
  echo "note: WORKDIR=$WORKDIR is on the worker's disk: fine for one host (v4-8), but a pod" \
    "slice needs a gs:// WORKDIR that all workers share" >&2
fi
args=(--distributed --config="$CONFIG" --workdir="$WORKDIR" "$@")
on_all_workers "cd $CLONE_DIR && python3 -m aigc_jax.train $(printf '%q ' "${args[@]}")"
