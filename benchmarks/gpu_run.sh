#!/usr/bin/env bash
# One prepared GPU session: CUDA correctness, 8B-shaped inference scale, 1B-shaped training throughput.
# Run from the repo root on a GPU machine; results land in ${OUT:-/tmp/gpu_out}.
set -u
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then   # the machine's transformers may be older than our pinned range
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/env.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/env.txt"
timeout 100 python3 benchmarks/gpu_check.py 2>&1 | tee "$OUT/gpu_check.log"
timeout 260 python3 benchmarks/gpu_scale.py --shape llama3-8b --lengths 32768 65536 131072 \
  --json "$OUT/gpu_scale_llama3-8b.json" 2>&1 | grep -v Warning | tee "$OUT/gpu_scale.log"
timeout 140 python3 benchmarks/bench_train.py --shape llama3.2-1b --device cuda --lengths 8192 16384 \
  --window 2048 --steps 3 --json "$OUT/gpu_train_llama3.2-1b.json" 2>&1 | tee "$OUT/gpu_train.log"
