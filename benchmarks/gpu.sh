#!/usr/bin/env bash
# One prepared command for an accelerator host (e.g. one H100 / H200 with jax[cuda], flax, optax):
# the 2B train step at the largest batch that fits, and the sampler, with random weights.
# Writes benchmarks/results/gpu.md (and .json). About 5-8 minutes on one H100 / H200.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.95}"
python -c "import jax; print(jax.__version__, jax.devices())"
python benchmarks/accelerator.py --model 2b --prompt-len 512 --completion-len 512 \
  --max-batch 64 --repeats 3 --sampler-prompts 16 --sampler-samples 16 \
  --out benchmarks/results/gpu.md "$@"
