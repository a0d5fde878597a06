#!/usr/bin/env bash
# Installs JAX for TPU and aigc_jax (a clone of REPO_URL at REPO_REF) on every worker.
# Settings: see common.sh.
set -euo pipefail
# shellcheck source=scripts/tpu_vm/common.sh
source "$(dirname "$0")/common.sh"

on_all_workers "set -e
if [ -d $CLONE_DIR ]; then git -C $CLONE_DIR fetch -q origin $(printf %q "$REPO_REF") && git -C $CLONE_DIR checkout -q FETCH_HEAD;
else git clone -q --branch $(printf %q "$REPO_REF") $(printf %q "$REPO_URL") $CLONE_DIR; fi
python3 -m pip install -q -U pip
python3 -m pip install -q 'jax[tpu]' -e $CLONE_DIR
python3 -c 'import aigc_jax, jax; print(\"aigc_jax installed, jax\", jax.__version__)'"
