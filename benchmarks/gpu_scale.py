"""Beacon vs full attention at 7B/8B scale on one GPU (randomly initialised weights; timing needs none).

Prefill at each length for full attention (SDPA; flash-attention-2 too if installed) and for
beacon (ratio 8, window 2048), then decode latency; time, peak GPU memory and KV bytes, side
by side in one run. Prints JSON rows and a Markdown table.

    python benchmarks/gpu_scale.py --shape llama3-8b --lengths 32768 65536 131072 --json out.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from longctx import BeaconAdapter, BeaconConfig, BeaconModel
from longctx.bench import SHAPES, bench_beacon, bench_full, markdown_table, random_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", default="llama3-8b", choices=sorted(SHAPES))
    p.add_argument("--lengths", type=int, nargs="+", default=[32768, 65536, 131072])
    p.add_argument("--ratio", type=int, default=8)
    p.add_argument("--window", type=int, default=2048)
    p.add_argument("--decode-tokens", type=int, default=16)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="bf16")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    attns = ["sdpa"]
    try:
        import flash_attn  # noqa: F401

        attns.append("flash_attention_2")
    except ImportError:
        print("# flash_attn is not installed: full attention measured with SDPA only", flush=True)
    t = time.perf_counter()
    model = random_model(args.shape, args.device, dtype, "sdpa")
    env = {"shape": args.shape, "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
           "torch": torch.__version__, "dtype": args.dtype, "init_s": round(time.perf_counter() - t, 1)}
    print("# env", json.dumps(env), flush=True)
    vocab = model.config.vocab_size
    rows = []

    def emit(row):
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({"env": env, "rows": rows}, indent=2))

    g = torch.Generator().manual_seed(0)
    warm = torch.randint(3, vocab, (1, 4096), generator=g).to(args.device)
    bench_full(model, warm, 2)
    adapter = BeaconAdapter.from_model(model, BeaconConfig(window=args.window, ratios=[args.ratio]))
    for length in args.lengths:
        ids = torch.randint(3, vocab, (1, length), generator=g).to(args.device)
        for attn in attns:
            model.set_attn_implementation(attn)
            try:
                r = bench_full(model, ids, args.decode_tokens)
                emit({"method": "full" if attn == "sdpa" else f"full-{attn}", "ratio": None, "window": args.window,
                      "length": length, **r})
            except torch.OutOfMemoryError as e:
                print(f"# full attention ({attn}) at {length}: out of memory: {str(e)[:120]}", flush=True)
            torch.cuda.empty_cache() if args.device == "cuda" else None
        model.set_attn_implementation("sdpa")
        bm = BeaconModel(model, adapter=adapter)
        try:
            r = bench_beacon(bm, ids, args.decode_tokens)
        finally:
            bm.detach()
        emit({"method": "beacon", "ratio": args.ratio, "window": args.window, "length": length, **r})
        if args.device == "cuda":
            torch.cuda.empty_cache()
    print(markdown_table(rows))
    gpu = [r for r in rows if r.get("peak_gpu_mb")]
    if gpu:
        print("\n| method | length | peak GPU MiB |\n|---|---|---|")
        for r in gpu:
            print(f"| {r['method']} | {r['length']} | {r['peak_gpu_mb']:.0f} |")


if __name__ == "__main__":
    main()
