#!/usr/bin/env bash
# On a lent GPU (H200): train the memory recipe for at most 9 minutes, checkpointing every minute,
# and bring the adapter back in bf16 shards of at most 15 MiB (the device returns files <= 16 MiB).
#   run: bash benchmarks/gpu_train.sh        (carry .cache/models; results under $OUT)
# Back here: copy $OUT/adapter/* into a folder and load it (BeaconAdapter.load reads the shard index).
set -u
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 LONGCTX_CACHE=$PWD/.cache HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/env.txt"
START=${START_ADAPTER:-adapters/smollm2-135m-beacon}
timeout 600 python3 - "$START" "$OUT" <<'PY' 2>&1 | grep -v Warning | tail -60 | tee "$OUT/train.log"
import json, sys, torch
from pathlib import Path
from longctx.train import TrainConfig, train
from longctx.beacon import BeaconAdapter
from longctx.models import load_model
start, out = sys.argv[1], Path(sys.argv[2])
cfg = TrainConfig.from_yaml("recipes/smollm2-135m-beacon-memory-gpu.yaml", adapter=start if Path(start).exists() else None)
model, tok = load_model(cfg.model, dtype="bf16", device="cuda")
run = train(cfg, model, tok)
ad = BeaconAdapter.load(run / "adapter", model)
ad.save(out / "adapter", dtype=torch.bfloat16, max_shard_mb=15)
(out / "log.jsonl").write_text((run / "log.jsonl").read_text())
print(json.dumps({"steps": sum(1 for _ in open(run / "log.jsonl"))}))
PY
ls -la "$OUT" "$OUT/adapter" 2>/dev/null
