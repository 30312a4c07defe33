"""Window attention variants on CPU (issue 16): where a beacon prefill's attention time goes.

One layer's window step at the shape of SmolLM2 (9 query heads, 3 KV heads, head 64) with
w=1024 at ratio 8 (1,152 queries: 1,024 raw + 128 beacons) over memories of several lengths:

  now      two flash calls (memory unmasked, window causal), grouped heads not repeated, lerp merge
  repeat   the same with K/V repeated to every query head and an exp-weighted merge (the old code)
  blocked  queries in blocks, each one unmasked call over memory + earlier blocks and one causal call
  matmul   bf16 QK^T, fp32 softmax, in chunks of query rows

Also the window's causal square alone against the unmasked square. Each variant's max error
against an fp32 masked softmax is printed beside its time.

  .venv/bin/python benchmarks/attention_kernels.py
"""

from __future__ import annotations

import argparse
import time

import torch

from longctx import compat

FLASH = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu


def repeat(query, key, value, scale):
    g = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(g, 1), value.repeat_interleave(g, 1)
    p = key.shape[2] - query.shape[2]
    o1, l1 = FLASH(query, key[:, :, :p], value[:, :, :p], 0.0, False, scale=scale)[:2]
    o2, l2 = FLASH(query, key[:, :, p:], value[:, :, p:], 0.0, True, scale=scale)[:2]
    m = torch.maximum(l1, l2)
    w1, w2 = (l1 - m).exp(), (l2 - m).exp()
    return o1 * (w1 / (w1 + w2)).unsqueeze(-1).to(o1.dtype) + o2 * (w2 / (w1 + w2)).unsqueeze(-1).to(o2.dtype)


def blocked(query, key, value, scale, block):
    q = query.shape[2]
    p = key.shape[2] - q
    out = torch.empty_like(query)
    for s in range(0, q, block):
        e = min(q, s + block)
        qi = query[:, :, s:e]
        o2, l2 = FLASH(qi, key[:, :, p + s : p + e], value[:, :, p + s : p + e], 0.0, True, scale=scale)[:2]
        if p + s == 0:
            out[:, :, s:e] = o2
            continue
        o1, l1 = FLASH(qi, key[:, :, : p + s], value[:, :, : p + s], 0.0, False, scale=scale)[:2]
        torch.lerp(o1, o2, torch.sigmoid(l2 - l1).unsqueeze(-1).to(o1.dtype), out=out[:, :, s:e])
    return out


def matmul(query, key, value, scale, chunk):
    B, H, n, D = query.shape
    KH = key.shape[1]
    G = H // KH
    p = key.shape[2] - n
    qs = (query * scale).reshape(B, KH, G * n, D)
    rows = torch.arange(G * n) % n  # query position of each stacked row
    allowed = torch.arange(key.shape[2])[None, :] <= (p + rows)[:, None]
    out = torch.empty_like(qs)
    kt = key.transpose(-1, -2)
    for s in range(0, G * n, chunk):
        sc = torch.matmul(qs[:, :, s : s + chunk], kt).float().masked_fill(~allowed[s : s + chunk], float("-inf"))
        out[:, :, s : s + chunk] = torch.matmul(sc.softmax(-1).to(value.dtype), value)
    return out.view(B, H, n, D)


def reference(query, key, value, scale):
    g = query.shape[1] // key.shape[1]
    q, k, v = query.float(), key.float().repeat_interleave(g, 1), value.float().repeat_interleave(g, 1)
    n, kv = q.shape[2], k.shape[2]
    allowed = torch.ones(n, kv, dtype=torch.bool).tril(kv - n)
    return ((q @ k.transpose(-1, -2)) * scale).masked_fill(~allowed, float("-inf")).softmax(-1) @ v


def timed(fn, repeats: int) -> float:
    """Fastest of ``repeats`` calls in ms (robust to another process taking the cores for a moment)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--memory", type=int, nargs="+", default=[1024, 2048, 3968], help="memory lengths (keys)")
    p.add_argument("--queries", type=int, default=1152)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    args = p.parse_args()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    torch.manual_seed(0)
    n, scale = args.queries, 0.125
    print(f"{compat.__name__}: CPU capability {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads, "
          f"{args.dtype}; fastest ms per call (max abs error vs fp32 masked softmax)")
    with torch.no_grad():
        q = torch.randn(1, 9, n, 64, dtype=dtype)
        k, v = torch.randn(2, 1, 3, n, 64, dtype=dtype)
        print(f"window square {n}x{n}: causal {timed(lambda: FLASH(q, k, v, 0.0, True, scale=scale), args.repeats):.1f} ms, "
              f"unmasked {timed(lambda: FLASH(q, k, v, 0.0, False, scale=scale), args.repeats):.1f} ms")
        variants = {"now": compat._prefix_causal, "repeat": repeat,
                    "blocked 288": lambda *a: blocked(*a, 288), "blocked 576": lambda *a: blocked(*a, 576),
                    "matmul 512": lambda *a: matmul(*a, 512)}
        for m in args.memory:
            k, v = torch.randn(2, 1, 3, m + n, 64, dtype=dtype)
            ref = reference(q, k, v, scale)
            cells = []
            for name, fn in variants.items():
                err = (fn(q, k, v, scale).float() - ref).abs().max().item()
                cells.append(f"{name} {timed(lambda fn=fn, k=k, v=v: fn(q, k, v, scale), args.repeats):.1f} ({err:.4f})")
            print(f"memory {m}: " + ", ".join(cells))


if __name__ == "__main__":
    main()
