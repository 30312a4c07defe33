"""Training throughput and memory of beacon training, side by side with a plain full-model
forward+backward over the same tokens (the issue's reference point), in one run.

    .venv/bin/python benchmarks/bench_train.py --lengths 1024 2048 4096 --steps 3 --json docs/bench/train.json
    python benchmarks/bench_train.py --shape llama3.2-1b --device cuda --lengths 8192 16384   # GPU, random weights
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from longctx import BeaconAdapter, BeaconConfig, BeaconModel, load_model
from longctx.bench import SHAPES, PeakRSS, random_model


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(fn, steps: int, device: str) -> tuple[float, float]:
    """Seconds per step and peak memory (GPU memory on CUDA, process RSS on CPU) in MiB."""
    fn(-1)  # warm-up
    _sync(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with PeakRSS() if device == "cpu" else nullcontext() as rss:
        t = time.perf_counter()
        for s in range(steps):
            fn(s)
        _sync(device)
        dt = (time.perf_counter() - t) / steps
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else rss.peak_mb
    return dt, peak


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[2048])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--ratio", type=int, default=8)
    p.add_argument("--shape", default=None, choices=sorted(SHAPES), help="random weights of this shape (default: SmolLM2)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-full", action="store_true", help="skip the full-model fwd+bwd reference")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    dev = args.device
    if args.shape:
        model = random_model(args.shape, dev, torch.bfloat16)
        vocab = model.config.vocab_size
        ids_all = torch.randint(3, vocab, (1, max(args.lengths)), generator=torch.Generator().manual_seed(0))
    else:
        from longctx.data import moby_dick

        model, tok = load_model("smollm2-135m", dtype="bf16", device=dev)
        ids_all = tok(moby_dick()[:400_000], return_tensors="pt").input_ids
    ids_all = ids_all.to(dev)
    env = {"model": args.shape or "smollm2-135m", "device": torch.cuda.get_device_name() if dev == "cuda" else "cpu",
           "torch": torch.__version__, "window": args.window, "ratio": args.ratio}
    print("# env", json.dumps(env), flush=True)
    rows = []

    def emit(row):
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({"env": env, "rows": rows}, indent=2))

    for L in args.lengths:
        ids = ids_all[:, :L]
        if not args.no_full:
            model.train()
            for prm in model.parameters():
                prm.requires_grad_(True)

            def full_step(_s, ids=ids):
                out = model(input_ids=ids, labels=ids)
                out.loss.backward()
                model.zero_grad(set_to_none=True)

            try:
                dt, peak = measure(full_step, args.steps, dev)
                emit({"method": "full-model fwd+bwd", "length": L, "tokens_per_s": L / dt, "peak_mb": peak})
            except torch.OutOfMemoryError:
                print(f"# full-model fwd+bwd at {L}: out of memory", flush=True)
            model.zero_grad(set_to_none=True)
            if dev == "cuda":
                torch.cuda.empty_cache()
        for ckpt in (False, True):
            adapter = BeaconAdapter.from_model(model, BeaconConfig(window=args.window, ratios=[args.ratio]),
                                               dtype=torch.float32)
            bm = BeaconModel(model, adapter=adapter)
            bm.freeze_base()
            bm.set_checkpointing(ckpt)

            def beacon_step(s, bm=bm, ids=ids, adapter=adapter):
                bm.reset(sequence=s)
                with torch.autocast(dev, dtype=torch.bfloat16):
                    loss = bm(ids, labels=ids, logits="none").loss
                loss.backward()
                adapter.zero_grad(set_to_none=True)

            try:
                dt, peak = measure(beacon_step, args.steps, dev)
                emit({"method": f"beacon{' + checkpointing' if ckpt else ''}", "length": L,
                      "tokens_per_s": L / dt, "peak_mb": peak})
            except torch.OutOfMemoryError:
                print(f"# beacon (checkpointing={ckpt}) at {L}: out of memory", flush=True)
            finally:
                bm.detach()
                if dev == "cuda":
                    torch.cuda.empty_cache()
    print("\n| method | length | tokens/s | peak MiB |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['length']} | {r['tokens_per_s']:.0f} | {r['peak_mb']:.0f} |")


if __name__ == "__main__":
    main()
