"""Training throughput and memory of beacon training (SmolLM2, bf16, CPU), side by side with a
plain full-model forward+backward over the same tokens.

    .venv/bin/python benchmarks/bench_train.py --lengths 1024 2048 4096 --steps 3 --json docs/bench/train.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from longctx import BeaconAdapter, BeaconConfig, BeaconModel, load_model
from longctx.bench import PeakRSS
from longctx.data import moby_dick


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[2048])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--ratio", type=int, default=8)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    model, tok = load_model("smollm2-135m", dtype="bf16")
    ids_all = tok(moby_dick()[:200_000], return_tensors="pt").input_ids
    rows = []
    for L in args.lengths:
        ids = ids_all[:, :L]
        # plain full-model forward + backward (all weights trainable), the reference point
        model.train()
        for prm in model.parameters():
            prm.requires_grad_(True)
        with PeakRSS() as rss:
            t = time.perf_counter()
            for _ in range(args.steps):
                out = model(input_ids=ids, labels=ids)
                out.loss.backward()
                model.zero_grad(set_to_none=True)
            dt = (time.perf_counter() - t) / args.steps
        rows.append({"method": "full-model fwd+bwd", "length": L, "tokens_per_s": L / dt, "peak_rss_mb": rss.peak_mb})
        print(json.dumps(rows[-1]), flush=True)
        for ckpt in (False, True):
            adapter = BeaconAdapter.from_model(model, BeaconConfig(window=args.window, ratios=[args.ratio]),
                                               dtype=torch.float32)
            bm = BeaconModel(model, tok, adapter)
            bm.freeze_base()
            bm.set_checkpointing(ckpt)
            with PeakRSS() as rss:
                t = time.perf_counter()
                for s in range(args.steps):
                    bm.reset(sequence=s)
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        loss = bm(ids, labels=ids, logits="none").loss
                    loss.backward()
                    adapter.zero_grad(set_to_none=True)
                dt = (time.perf_counter() - t) / args.steps
            bm.detach()
            rows.append({"method": f"beacon{' + checkpointing' if ckpt else ''}", "length": L,
                         "tokens_per_s": L / dt, "peak_rss_mb": rss.peak_mb})
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
