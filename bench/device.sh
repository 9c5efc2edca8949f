#!/usr/bin/env bash
# GPU benchmarks in one call on a lent accelerator machine (NVIDIA H200).
#
# That machine has JAX with CUDA but no network; the project's other pure-Python
# dependencies travel as wheels in .whl/ (ignored by git), made here with:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl pydantic pydantic-core annotated-types typing-inspection
# and the call carries it:  run(command="bash bench/device.sh", carry=[".whl"])
set -euo pipefail
cd "$(dirname "$0")/.."
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# One rollout at ~500,000 GPUs (Fairwater scaled), rack and per-GPU granularity.
python3 bench/model.py --gpus 500000 --rack-seconds 3600 --gpu-seconds 3600 2>&1 \
  | tee "${OUT:-/tmp}/bench-model.txt"
# What-if studies of the seeded Fairwater site, up to 16,384 variants of one day each.
python3 bench/whatif.py --variants 1,16,128,1024,16384 2>&1 | tee "${OUT:-/tmp}/bench-whatif.txt"
