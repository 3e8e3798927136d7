#!/usr/bin/env bash
# What the CPU machines cannot check, on one NVIDIA GPU in under ten minutes (see benchmarks/gpu_check.py): the SST-2
# and CIFAR-10 pairings in bf16, a bf16 teacher, the attribution loss, DeepSpeed ZeRO-3 and FSDP on one process, and
# batched integrated gradients against a per-example captum loop; one table.
#
#   bash benchmarks/gpu_check.sh [--offline] [--output_dir DIR]
#
# Needs the pinned stack (`make setup`) with a CUDA build of torch 2.13 in place of the CPU wheel, from pytorch.org's
# index for the machine's CUDA version, e.g.
#   .venv/bin/pip install --force-reinstall --no-deps torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128
# With the Hub reachable it distils the recipes' own teachers on slices of SST-2 and CIFAR-10; without it (or with
# --offline), config-built models of the same shapes on synthetic data.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "benchmarks/gpu_check.sh: no CUDA device visible to $PYTHON's torch; install a CUDA build (see the header)." >&2
    exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec "$PYTHON" benchmarks/gpu_check.py "$@"
