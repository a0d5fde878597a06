# Shared settings of the TPU VM scripts, read from the environment; sourced, not run.
#   TPU_NAME          TPU VM name (default aigc-jax)
#   ZONE              zone with quota for the accelerator (default us-central2-b)
#   ACCELERATOR_TYPE  v4-8 (one host), v4-16 / v4-32 ... (pod slices: several hosts) (default v4-8)
#   RUNTIME_VERSION   TPU VM software image (default tpu-ubuntu2204-base)
#   PROJECT           Google Cloud project (default: gcloud's configured project)
#   REPO_URL, REPO_REF  where install.sh clones aigc_jax from (default: GitHub, main)
#   CONFIG            config file, relative to the clone (default configs/quickstart.py)
#   WORKDIR           run directory; gs://BUCKET/PATH for pod slices, which need one shared
#                     place for checkpoints (default gs://$BUCKET/aigc_jax/$TPU_NAME if BUCKET
#                     is set, else aigc_jax_runs/$TPU_NAME in the clone on each worker)
# shellcheck shell=bash
TPU_NAME=${TPU_NAME:-aigc-jax}
ZONE=${ZONE:-us-central2-b}
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v4-8}
RUNTIME_VERSION=${RUNTIME_VERSION:-tpu-ubuntu2204-base}
REPO_URL=${REPO_URL:-https://github.com/aigc-jax/aigc_jax.git}
REPO_REF=${REPO_REF:-main}
CONFIG=${CONFIG:-configs/quickstart.py}
if [[ -n ${BUCKET:-} ]]; then
  WORKDIR=${WORKDIR:-gs://$BUCKET/aigc_jax/$TPU_NAME}
else
  WORKDIR=${WORKDIR:-aigc_jax_runs/$TPU_NAME}
fi
# shellcheck disable=SC2034  # used by the scripts that source this file
CLONE_DIR=aigc_jax

GCLOUD_FLAGS=(--zone="$ZONE")
if [[ -n ${PROJECT:-} ]]; then
  GCLOUD_FLAGS+=(--project="$PROJECT")
fi

# Runs a shell command on every worker of the TPU VM.
on_all_workers() {
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${GCLOUD_FLAGS[@]}" --worker=all --command="$1"
}
