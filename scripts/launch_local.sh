#!/usr/bin/env bash
# Runs one multi-host training on this machine: N local processes of `python -m aigc_jax.train`,
# joined by jax.distributed over 127.0.0.1, each with its own CPU devices. The same code path
# as N TPU VM workers or N SLURM tasks, for trying multi-host without a cluster.
#
# Usage: scripts/launch_local.sh N --config=configs/quickstart.py --workdir=DIR [train flags...]
# Environment:
#   DEVICES_PER_PROCESS  CPU devices each process gets (default 2)
#   PORT                 coordinator port (default: a free one)
#   PYTHON               interpreter (default python3)
# If one process fails, the others are stopped and its exit status is returned.
set -euo pipefail

if [[ $# -lt 1 || ! $1 =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 N [aigc_jax.train flags...]" >&2
  exit 2
fi
num_processes=$1
shift
python=${PYTHON:-python3}
devices=${DEVICES_PER_PROCESS:-2}
port=${PORT:-$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}

pids=()
stop_all() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
}
trap stop_all EXIT INT TERM

for ((i = 0; i < num_processes; i++)); do
  JAX_PLATFORMS=cpu \
  XLA_FLAGS="--xla_force_host_platform_device_count=$devices" \
  JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo \
    "$python" -m aigc_jax.train --coordinator_address="127.0.0.1:$port" \
      --num_processes="$num_processes" --process_id="$i" "$@" &
  pids+=("$!")
done

for ((i = 0; i < num_processes; i++)); do
  status=0
  wait -n || status=$?
  if [[ $status -ne 0 ]]; then
    echo "launch_local.sh: a process exited with status $status; stopping the others" >&2
    exit "$status"
  fi
done
