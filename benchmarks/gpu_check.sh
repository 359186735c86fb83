#!/usr/bin/env bash
# The GPU check of pearl-cl, one script, about 5 minutes on one GPU:
#   benchmarks/gpu_check.sh [OUT_DIR]
# 1. sets up: the repo's .venv when it exists and sees CUDA; else the machine's python3 (which
#    must hold a CUDA PyTorch) with the other dependencies installed from wheels in .whl/ when
#    that folder exists (for a machine without internet: `pip download` them into .whl/ first);
# 2. runs the test tier that exercises devices, image files and uint8 storage;
# 3. runs benchmarks/gpu_check.py: the demo on CUDA in fp32 and bf16 against a CPU run of the
#    same seed (within 0.5 point), run seconds, peak GPU memory, images/s GPU vs CPU and the
#    share of a GPU epoch spent producing batches.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-/tmp/gpu_check}}"
mkdir -p "$out"
if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    py=.venv/bin/python
else
    py=python3
    if [ -d .whl ]; then
        "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/pearl-site .whl/*.whl
        export PYTHONPATH="/tmp/pearl-site:${PYTHONPATH:-}"
    fi
    export PYTHONPATH="$PWD/src:${PYTHONPATH:-}"
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$py" -m pytest -q -p no:cacheprovider tests/test_device.py tests/test_files.py tests/test_pixels.py
"$py" benchmarks/gpu_check.py out="$out" | tee "$out/gpu_check.txt"
