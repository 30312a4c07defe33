"""Reading rate (issue 16): beacon streaming against the stock forward over the same tokens.

Both run in this one process, on the same machine, dtype and tokens (the start of Moby-Dick):
the stock model's forward over the text in 4K-token chunks (no cache, logits for the last token
only) and the beacon model reading the whole text (logits for none). Prints tokens/s of each
and their ratio; ``--profile`` adds the top operators of one beacon read.

  .venv/bin/python benchmarks/reading_rate.py                      # the demo's settings (shipped adapter)
  .venv/bin/python benchmarks/reading_rate.py --window 1024 --ratios 8 --tokens 32768
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from longctx import BeaconAdapter, BeaconModel, load_model
from longctx.data import moby_dick
from longctx.models import cpu_line, describe_dtype

ROOT = Path(__file__).resolve().parents[1]


def stock_rate(model, ids: torch.Tensor, chunk: int) -> float:
    t = time.perf_counter()
    with torch.no_grad():
        for i in range(0, ids.shape[1], chunk):
            model(input_ids=ids[:, i : i + chunk], use_cache=False, logits_to_keep=1)
    return ids.shape[1] / (time.perf_counter() - t)


def beacon_rate(bm: BeaconModel, ids: torch.Tensor) -> float:
    bm.reset()
    t = time.perf_counter()
    with torch.no_grad():
        bm(ids, logits="none")
    return ids.shape[1] / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=16384)
    p.add_argument("--chunk", type=int, default=4096, help="stock forward chunk length")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--adapter", default=str(ROOT / "adapters" / "smollm2-135m-beacon"))
    p.add_argument("--window", type=int, default=None)
    p.add_argument("--ratios", type=int, nargs="+", default=None)
    p.add_argument("--repeat", type=int, default=2, help="alternating measurements of each; the best is kept")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args()

    model, tok = load_model("smollm2-135m", dtype=args.dtype)
    dtype = next(model.parameters()).dtype
    adapter = BeaconAdapter.load(args.adapter, model)
    adapter.config = adapter.config.override(window=args.window, ratios=args.ratios,
                                             ratio_mix="step-random" if args.ratios else None)
    ids = tok(moby_dick(), return_tensors="pt").input_ids[:, : args.tokens]
    with torch.no_grad():  # warm-up of both paths
        model(input_ids=ids[:, :512], use_cache=False, logits_to_keep=1)
    bm = BeaconModel(model, tok, adapter)
    beacon_rate(bm, ids[:, : 2 * bm.config.window])
    stock, beacon = [], []
    for _ in range(args.repeat):
        bm.adapter.detach()
        stock.append(stock_rate(model, ids, args.chunk))
        bm.adapter.attach(model)
        beacon.append(beacon_rate(bm, ids))
    row = {"cpu": cpu_line(), "dtype": describe_dtype(dtype, asked=args.dtype), "tokens": ids.shape[1],
           "window": bm.config.window, "ratios": bm.config.ratios, "ratio_mix": bm.config.ratio_mix,
           "stock_chunk": args.chunk, "stock_tokens_per_s": max(stock), "beacon_tokens_per_s": max(beacon),
           "ratio": max(beacon) / max(stock), "all_stock": stock, "all_beacon": beacon}
    print(json.dumps(row, indent=2))
    print(f"reading rate: beacon {row['beacon_tokens_per_s']:.0f} tok/s, stock forward ({args.chunk}-token chunks) "
          f"{row['stock_tokens_per_s']:.0f} tok/s: ratio {row['ratio']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(row, indent=2))
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        bm.reset()
        with profile(activities=[ProfilerActivity.CPU]) as prof, torch.no_grad():
            bm(ids[:, : min(ids.shape[1], 8192)], logits="none")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))


if __name__ == "__main__":
    main()
