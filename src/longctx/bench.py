"""Side-by-side benchmark: full attention vs beacon, in one process, same input and dtype.

Full attention runs the stock model (SDPA, causal without a materialised mask, logits only
for the last row). Beacon runs the same model with the adapter attached (logits only for
the last raw row). Rows are written as JSON plus a Markdown table; no assertions on time.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from longctx import compat

# Real model shapes for speed/memory benchmarks with random weights (timing needs no trained weights).
SHAPES: dict[str, dict[str, Any]] = {
    "llama3-8b": dict(model_type="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                      num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, rope_theta=500000.0,
                      max_position_embeddings=131072),
    "llama3.2-1b": dict(model_type="llama", vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                        num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, rope_theta=500000.0,
                        max_position_embeddings=131072, tie_word_embeddings=True),
    "qwen2-7b": dict(model_type="qwen2", vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                     num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4, rope_theta=1000000.0,
                     max_position_embeddings=131072),
    "smollm2-135m": dict(model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536,
                         num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, rope_theta=100000.0,
                         max_position_embeddings=8192, tie_word_embeddings=True),
}


def random_model(shape: str, device: str = "cpu", dtype: torch.dtype = torch.bfloat16, attn: str = "sdpa"):
    """A randomly initialised model of one of ``SHAPES``, built directly on ``device``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = dict(SHAPES[shape])
    cfg = AutoConfig.for_model(spec.pop("model_type"), **spec)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation=attn)
    return model.eval()


class PeakRSS:
    """Samples the process's resident memory in a thread; ``peak_mb`` after the block."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak_mb = 0.0

    @staticmethod
    def current_mb() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def __enter__(self):
        self._stop = threading.Event()
        self.peak_mb = self.current_mb()

        def loop():
            while not self._stop.is_set():
                self.peak_mb = max(self.peak_mb, self.current_mb())
                time.sleep(self.interval)

        self._t = threading.Thread(target=loop, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak_mb = max(self.peak_mb, self.current_mb())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@contextmanager
def _peak_gpu(device: torch.device):
    box = {"mb": None}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    yield box
    if device.type == "cuda":
        box["mb"] = torch.cuda.max_memory_allocated() / 2**20


def cache_bytes(cache) -> int:
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in compat.cache_kv(cache))


@torch.no_grad()
def bench_full(model, ids: torch.Tensor, decode_tokens: int) -> dict[str, Any]:
    device = ids.device
    with PeakRSS() as rss, _peak_gpu(device) as gpu:
        _sync(device)
        t = time.perf_counter()
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        _sync(device)
        prefill = time.perf_counter() - t
        cache = compat.output_cache(out)
        kv_entries = compat.cache_length(cache)
        kv_bytes = cache_bytes(cache)
        tok = out.logits[:, -1].argmax(-1, keepdim=True)
        t = time.perf_counter()
        for _ in range(decode_tokens):
            out = model(input_ids=tok, cache=cache, use_cache=True, logits_to_keep=1)
            tok = out.logits[:, -1].argmax(-1, keepdim=True)
        _sync(device)
        decode = (time.perf_counter() - t) / max(decode_tokens, 1)
        # the same cache decoded through longctx's attention kernel (matmul path for one query)
        t = time.perf_counter()
        with compat.attention_implementation(model):
            for _ in range(decode_tokens):
                out = model(input_ids=tok, cache=cache, use_cache=True, logits_to_keep=1)
                tok = out.logits[:, -1].argmax(-1, keepdim=True)
        _sync(device)
        decode_mm = (time.perf_counter() - t) / max(decode_tokens, 1)
    del out, cache
    return {"prefill_s": prefill, "decode_ms_per_token": 1000 * decode,
            "decode_ms_per_token_longctx_kernel": 1000 * decode_mm, "kv_entries": kv_entries,
            "kv_bytes": kv_bytes, "peak_rss_mb": rss.peak_mb, "peak_gpu_mb": gpu["mb"]}


@torch.no_grad()
def bench_beacon(bm, ids: torch.Tensor, decode_tokens: int) -> dict[str, Any]:
    device = ids.device
    bm.reset()
    with PeakRSS() as rss, _peak_gpu(device) as gpu:
        _sync(device)
        t = time.perf_counter()
        out = bm(ids, logits="last")
        _sync(device)
        prefill = time.perf_counter() - t
        kv_entries, kv_bytes = bm.kv_entries()[0], bm.memory.kv_bytes()
        tok = out.logits[:, -1].argmax(-1, keepdim=True)
        t = time.perf_counter()
        for _ in range(decode_tokens):
            out = bm(tok, logits="last")
            tok = out.logits[:, -1].argmax(-1, keepdim=True)
        _sync(device)
        decode = (time.perf_counter() - t) / max(decode_tokens, 1)
    bm.reset()
    return {"prefill_s": prefill, "decode_ms_per_token": 1000 * decode, "kv_entries": kv_entries,
            "kv_bytes": kv_bytes, "peak_rss_mb": rss.peak_mb, "peak_gpu_mb": gpu["mb"]}


def bench_ids(tokenizer, length: int, vocab: int, device) -> torch.Tensor:
    """The first ``length`` tokens of the default novel (repeated if needed), or random ids."""
    try:
        from longctx.data import moby_dick

        ids = tokenizer(moby_dick(), return_tensors="pt").input_ids[0]
        reps = -(-length // ids.numel())
        ids = ids.repeat(reps)[:length]
    except Exception:  # noqa: BLE001 - no text available: random tokens time the same
        ids = torch.randint(100, vocab - 1, (length,))
    return ids.unsqueeze(0).to(device)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = "| method | ratio | window | length | prefill s | decode ms/tok | KV entries | KV MiB | peak RSS MiB | prefill speed-up | decode speed-up | KV reduction |"
    lines = [head, "|" + "---|" * 12]
    full = {r["length"]: r for r in rows if r["method"] == "full"}
    for r in rows:
        f = full.get(r["length"]) if r["method"] != "full" else None
        pre, dec = (f"{f[k] / r[k]:.2f}x" if f else "" for k in ("prefill_s", "decode_ms_per_token"))
        kv = f"{f['kv_bytes'] / r['kv_bytes']:.1f}x" if f else ""
        lines.append(
            f"| {r['method']} | {r['ratio'] if r['ratio'] is not None else '-'} | {r['window']} | {r['length']} | "
            f"{r['prefill_s']:.2f} | {r['decode_ms_per_token']:.1f} | {r['kv_entries']} | {r['kv_bytes'] / 2**20:.1f} | "
            f"{r['peak_rss_mb']:.0f} | {pre} | {dec} | {kv} |")
    return "\n".join(lines)


def run_bench(args) -> list[dict[str, Any]]:
    from longctx import BeaconAdapter, BeaconConfig, BeaconModel, load_model
    from longctx.models import cpu_line, parse_dtype, resolve

    if args.random_init:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        path = resolve(args.model)
        config = AutoConfig.from_pretrained(path)
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = AutoModelForCausalLM.from_config(config, dtype=parse_dtype(args.dtype), attn_implementation=args.attn)
        model = model.to(device).eval()
        tok = AutoTokenizer.from_pretrained(path)
    else:
        model, tok = load_model(args.model, dtype=args.dtype, device=args.device, attn_implementation=args.attn)
    device = compat.embed_tokens(model).weight.device
    vocab = compat.text_config(model).vocab_size
    rows: list[dict[str, Any]] = []
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
            "device": str(device), "dtype": str(model.dtype), "model": args.model, "attn": args.attn,
            "random_init": bool(args.random_init), "cpu": cpu_line() if device.type == "cpu" else None}
    print(f"# bench: {meta}", flush=True)

    def emit(row):
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
            Path(args.json).with_suffix(".md").write_text(
                f"Environment: {json.dumps(meta)}\n\n" + markdown_table(rows) + "\n")

    proj = {"projections": list(args.projections)} if getattr(args, "projections", None) else {}
    adapter = BeaconAdapter.from_model(model, BeaconConfig(window=args.window, ratios=[args.ratios[0]], **proj))
    # warm-up (kernel initialisation) so the first measured row is not penalised
    warm = bench_ids(tok, min(2 * args.window, 2048), vocab, device)
    bench_full(model, warm, 2)
    adapter.config = BeaconConfig(window=args.window, ratios=[args.ratios[0]], **proj)
    bm = BeaconModel(model, tok, adapter)
    bench_beacon(bm, warm, 2)
    bm.detach()
    for length in args.lengths:
        ids = bench_ids(tok, length, vocab, device)
        if not args.no_full and (args.max_full_length is None or length <= args.max_full_length):
            gc.collect()
            r = bench_full(model, ids, args.decode_tokens)
            emit({"method": "full", "ratio": None, "window": args.window, "length": length, **r})
        for ratio in args.ratios:
            gc.collect()
            adapter.config = BeaconConfig(window=args.window, ratios=[ratio], **proj)
            bm = BeaconModel(model, tok, adapter)
            try:
                r = bench_beacon(bm, ids, args.decode_tokens)
            finally:
                bm.detach()
            emit({"method": "beacon", "ratio": ratio, "window": args.window, "length": length, **r})
    if args.json:
        print(f"# wrote {args.json} and {Path(args.json).with_suffix('.md')}")
    print(markdown_table(rows))
    return rows
