"""Stream N tokens through beacon compression and record memory against length.

Peak resident memory should stay flat in length apart from the compressed KV itself
(n/ratio entries). By default a small random Llama with SmolLM2's vocabulary is used so
that a million tokens stream in minutes on a 2-core CPU; ``--model smollm2-135m`` uses the
real model (much slower: its attention over the growing memory dominates).

    .venv/bin/python benchmarks/stream_memory.py --tokens 1000000 --ratio 32 --json docs/bench/stream_1m.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from longctx import BeaconConfig, BeaconModel
from longctx.bench import PeakRSS


def small_model(vocab: int = 49152):
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(vocab_size=vocab, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=65536)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation="sdpa").eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokens", type=int, default=1_000_000)
    p.add_argument("--ratio", type=int, default=32)
    p.add_argument("--window", type=int, default=1024)
    p.add_argument("--chunk", type=int, default=16384, help="tokens fed per call")
    p.add_argument("--every", type=int, default=65536, help="record a row every this many tokens")
    p.add_argument("--model", default=None, help="a model name for load_model (default: small random Llama)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.model:
        from longctx import load_model

        model, _ = load_model(args.model)
    else:
        model = small_model()
    vocab = model.config.vocab_size
    bm = BeaconModel(model, config=BeaconConfig(window=args.window, ratios=[args.ratio]))
    g = torch.Generator().manual_seed(0)
    rows = []
    fed, t0 = 0, time.perf_counter()
    with torch.no_grad(), PeakRSS() as rss:
        while fed < args.tokens:
            n = min(args.chunk, args.tokens - fed)
            bm(torch.randint(3, vocab, (1, n), generator=g), logits="none")
            fed += n
            if fed % args.every == 0 or fed == args.tokens:
                row = {"tokens": fed, "kv_entries": bm.kv_entries()[0], "kv_mb": bm.memory.kv_bytes() / 2**20,
                       "rss_mb": PeakRSS.current_mb(), "peak_rss_mb_so_far": rss.peak_mb,
                       "seconds": time.perf_counter() - t0}
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
