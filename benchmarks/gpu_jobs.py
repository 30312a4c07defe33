"""The training jobs of one GPU lease (benchmarks/gpu_train.sh train), under one time budget.

Jobs (``JOBS``, default ``beacon cream pose``):

* ``beacon``: recipes/smollm2-135m-beacon-memory-gpu.yaml for ``BEACON_MIN`` minutes (issue 12);
  the adapter comes back as bf16 shards of at most 15 MiB in ``OUT`` plus its config and index
  in the bundle.
* ``cream`` / ``pose``: recipes/smollm2-135m-cream-gpu.yaml (8K -> 32K, linear RoPE, LoRA) for
  ``CREAM_MIN`` / ``POSE_MIN`` minutes each (issue 17); each LoRA comes back as one tar (bf16).

Every job checkpoints by time (``save_minutes``) and stops at its limit with its result saved.
Small files (logs, settings, the adapter's index) go to ``BUNDLE`` for the shell to tar.
``SMOKE=1`` shrinks every job (lengths, data, minutes) so the path can be tested on a CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tarfile
import time
import traceback
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from longctx.beacon import BeaconAdapter
from longctx.models import load_model
from longctx.train import TrainConfig, train
from longctx.train.extend import ExtendConfig, extend

OUT = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/gpu_out")
BUNDLE = Path(os.environ.get("BUNDLE", "/tmp/longctx-gpu/bundle"))
RUNS = Path(os.environ.get("RUNS", "/tmp/longctx-gpu/runs"))
SMOKE = os.environ.get("SMOKE") == "1"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def minutes(name: str, default: float) -> float:
    return float(os.environ.get(name, 0.2 if SMOKE else default))


def beacon_job() -> dict:
    small = dict(min_length=520, max_length=1100, recall=16, copy=4, text_sequences=8, batch_size=2) if SMOKE else {}
    cfg = TrainConfig.from_yaml("recipes/smollm2-135m-beacon-memory-gpu.yaml", out=str(RUNS / "beacon"),
                                time_limit=minutes("BEACON_MIN", 5.0), **small)
    model, tok = load_model(cfg.model, dtype=cfg.dtype, device=DEVICE)
    run = train(cfg, model, tok)
    adapter = BeaconAdapter.load(run / "adapter", model)
    staged = RUNS / "beacon-export"
    adapter.save(staged, dtype=torch.bfloat16, max_shard_mb=15)
    (BUNDLE / "beacon-adapter").mkdir(parents=True, exist_ok=True)
    for f in staged.iterdir():
        dest = OUT if f.name.endswith(".safetensors") else BUNDLE / "beacon-adapter"
        shutil.move(str(f), dest / f.name)
    for name in ("log.jsonl", "train_config.json"):
        shutil.copy(run / name, BUNDLE / f"beacon-{name}")
    return {"steps": sum(1 for _ in open(run / "log.jsonl"))}


def extend_job(method: str) -> dict:
    small = dict(train_length=512, target_length=2048, batch_size=1) if SMOKE else {}
    cfg = ExtendConfig.from_yaml("recipes/smollm2-135m-cream-gpu.yaml", method=method, out=str(RUNS / method),
                                 time_limit=minutes(f"{method.upper()}_MIN", 1.5), **small)
    model, tok = (load_model(cfg.model, dtype=cfg.dtype, device=DEVICE) if SMOKE else (None, None))
    if SMOKE:  # a short window so the smoke test's samples fit
        model.config.max_position_embeddings = cfg.train_length
    run = extend(cfg, model, tok)
    lora = run / "lora"
    weights = lora / "adapter_model.safetensors"
    save_file({k: v.to(torch.bfloat16) for k, v in load_file(weights).items()}, weights)
    with tarfile.open(OUT / f"{method}-lora.tar", "w") as tf:
        tf.add(lora, arcname=f"{method}-lora")
    for name in ("log.jsonl", "extend_config.json"):
        shutil.copy(run / name, BUNDLE / f"{method}-{name}")
    return {"steps": sum(1 for _ in open(run / "log.jsonl"))}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    BUNDLE.mkdir(parents=True, exist_ok=True)
    jobs = os.environ.get("JOBS", "beacon cream pose").split()
    summary = {"device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu", "smoke": SMOKE,
               "torch": torch.__version__}
    for job in jobs:
        t = time.time()
        print(f"== job {job} on {DEVICE}", flush=True)
        try:
            result = beacon_job() if job == "beacon" else extend_job(job)
        except Exception as e:  # one job failing must not cost the others their minutes
            traceback.print_exc()
            result = {"error": f"{type(e).__name__}: {e}"}
        result["seconds"] = round(time.time() - t, 1)
        summary[job] = result
        print(f"== job {job}: {json.dumps(result)}", flush=True)
        (BUNDLE / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
