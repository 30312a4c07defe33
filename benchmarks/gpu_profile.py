"""Where the time of a beacon prefill goes on a GPU (random weights): torch profiler tables.

    python benchmarks/gpu_profile.py --shape llama3-8b --length 32768
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from longctx import BeaconAdapter, BeaconConfig, BeaconModel
from longctx.bench import SHAPES, random_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", default="llama3-8b", choices=sorted(SHAPES))
    p.add_argument("--length", type=int, default=32768)
    p.add_argument("--window", type=int, default=2048)
    p.add_argument("--ratio", type=int, default=8)
    args = p.parse_args()
    model = random_model(args.shape, "cuda", torch.bfloat16)
    ids = torch.randint(3, model.config.vocab_size, (1, args.length), device="cuda")
    bm = BeaconModel(model, adapter=BeaconAdapter.from_model(model, BeaconConfig(window=args.window, ratios=[args.ratio])))
    with torch.no_grad():
        bm(ids[:, :8192], logits="last")
        bm.reset()
        torch.cuda.synchronize()
        t = time.perf_counter()
        bm(ids, logits="last")
        torch.cuda.synchronize()
        print(f"# beacon prefill {args.length}: {time.perf_counter() - t:.2f} s", flush=True)
        bm.reset()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            bm(ids, logits="last")
            torch.cuda.synchronize()
    avg = prof.key_averages()
    print(avg.table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=60))
    print(avg.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=60))


if __name__ == "__main__":
    main()
