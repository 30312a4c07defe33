"""Peak memory of converting a sharded reference checkpoint (issue 14).

Builds a random 1B-shaped Llama checkpoint in the reference layout (TinyLlama-1.1B shape by
default: hidden 2048, 22 layers, 32 heads / 4 KV heads, vocab 32000; bf16; base weights in
shards of --shard-mb plus one shard of beacon q/k/v/o tensors; index file), then converts it
with ``--write-base`` in a fresh process and prints that process's peak RSS beside the largest
shard and the whole checkpoint.

    .venv/bin/python benchmarks/convert_memory.py [--layers 22] [--shard-mb 500] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file


def build(ref: Path, hidden: int, layers: int, heads: int, kv_heads: int, inter: int, vocab: int,
          shard_mb: float) -> tuple[int, int]:
    """Write the checkpoint shard by shard (never the whole model in memory); returns
    (total bytes, largest shard bytes)."""
    ref.mkdir(parents=True)
    d = hidden // heads
    g = torch.Generator().manual_seed(0)

    def rnd(*shape):
        return (torch.randn(*shape, generator=g) * 0.02).to(torch.bfloat16)

    def tensors():
        yield "model.embed_tokens.weight", rnd(vocab, hidden)
        for i in range(layers):
            p = f"model.layers.{i}."
            yield p + "self_attn.q_proj.weight", rnd(heads * d, hidden)
            yield p + "self_attn.k_proj.weight", rnd(kv_heads * d, hidden)
            yield p + "self_attn.v_proj.weight", rnd(kv_heads * d, hidden)
            yield p + "self_attn.o_proj.weight", rnd(hidden, heads * d)
            yield p + "mlp.gate_proj.weight", rnd(inter, hidden)
            yield p + "mlp.up_proj.weight", rnd(inter, hidden)
            yield p + "mlp.down_proj.weight", rnd(hidden, inter)
            yield p + "input_layernorm.weight", torch.ones(hidden, dtype=torch.bfloat16)
            yield p + "post_attention_layernorm.weight", torch.ones(hidden, dtype=torch.bfloat16)
        yield "model.norm.weight", torch.ones(hidden, dtype=torch.bfloat16)
        yield "lm_head.weight", rnd(vocab, hidden)

    shards, cur, size, weight_map, total, largest = [], {}, 0, {}, 0, 0

    def flush():
        nonlocal cur, size, largest
        name = f"model-base-{len(shards) + 1:05d}.safetensors"
        save_file(cur, str(ref / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(cur, name))
        shards.append(name)
        largest = max(largest, size)
        cur, size = {}, 0

    for k, t in tensors():
        n = t.numel() * 2
        if cur and size + n > shard_mb * 2**20:
            flush()
        cur[k] = t
        size += n
        total += n
    flush()
    beacon = {"model.beacon_embed_tokens.weight": rnd(1, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}.self_attn.beacon_"
        beacon.update({p + "q_proj.weight": rnd(heads * d, hidden), p + "k_proj.weight": rnd(kv_heads * d, hidden),
                       p + "v_proj.weight": rnd(kv_heads * d, hidden), p + "o_proj.weight": rnd(hidden, heads * d)})
    save_file(beacon, str(ref / "model-beacon.safetensors"), metadata={"format": "pt"})
    size = sum(t.numel() * 2 for t in beacon.values())
    total += size
    largest = max(largest, size)
    weight_map.update(dict.fromkeys(beacon, "model-beacon.safetensors"))
    (ref / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                  "weight_map": weight_map}))
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
           "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
           "num_key_value_heads": kv_heads, "vocab_size": vocab, "max_position_embeddings": 2048,
           "rms_norm_eps": 1e-5, "torch_dtype": "bfloat16", "tie_word_embeddings": False,
           "bos_token_id": 1, "eos_token_id": 2,
           "beacon_window": 1024, "beacon_stride": 1024, "beacon_attn": "full-coverage",
           "beacon_ratio": [2, 4, 8], "beacon_ratio_mix": "step-random", "beacon_param": ["q", "k", "v", "o"],
           "beacon_embed_init": "eos", "beacon_sink_size": 0, "beacon_attend_prev": True,
           "beacon_pos": "interleave", "beacon_parallel_window": 1,
           "auto_map": {"AutoModelForCausalLM": "modeling_llama.LlamaForCausalLM"}}
    (ref / "config.json").write_text(json.dumps(cfg, indent=2))
    return total, largest


# peak RSS from VmHWM: per address space, so it starts afresh in the child (ru_maxrss can carry
# the parent's high-water mark across fork+exec)
HWM = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) * 1024"
CHILD = f"""
import sys, threading, time
from longctx.beacon.convert import import_reference
peak = {{"RssAnon": 0, "RssFile": 0}}
done = False
def sample():
    while not done:
        for line in open('/proc/self/status'):
            k = line.split(':')[0]
            if k in peak:
                peak[k] = max(peak[k], int(line.split()[1]) * 1024)
        time.sleep(0.005)
th = threading.Thread(target=sample); th.start()
t = time.perf_counter()
import_reference(sys.argv[1], sys.argv[2], write_base=True)
secs = time.perf_counter() - t
done = True; th.join()
print(secs, {HWM}, peak["RssAnon"], peak["RssFile"])
"""
IMPORT_ONLY = f"""
import longctx.beacon.convert  # noqa: F401
print({HWM})
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=22)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=5632)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--shard-mb", type=float, default=500)
    ap.add_argument("--keep", default=None, help="build here and keep the files (default: a temporary folder)")
    args = ap.parse_args()
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="convert-memory-"))
    ref, out = tmp / "ref", tmp / "out"
    t = time.perf_counter()
    total, largest = build(ref, args.hidden, args.layers, args.heads, args.kv_heads, args.intermediate, args.vocab,
                           args.shard_mb)
    print(f"built a {total / 2**30:.2f} GiB reference checkpoint ({len(list(ref.glob('*.safetensors')))} shards, "
          f"largest {largest / 2**20:.0f} MiB) in {time.perf_counter() - t:.0f} s", flush=True)
    base_rss = int(subprocess.check_output([sys.executable, "-c", IMPORT_ONLY], text=True).strip())
    secs, rss, anon, mapped = subprocess.check_output([sys.executable, "-c", CHILD, str(ref), str(out)],
                                                      text=True).split()
    rss, anon, mapped = int(rss), int(anon), int(mapped)
    written = sum(f.stat().st_size for f in (out / "base").glob("*.safetensors"))
    print(f"converted in {float(secs):.0f} s; wrote {written / 2**30:.2f} GiB of base shards "
          f"({len(list((out / 'base').glob('*.safetensors')))} files)")
    print(f"peak RSS of the converting process : {rss / 2**20:,.0f} MiB")
    print(f"  of which the interpreter + imports: {base_rss / 2**20:,.0f} MiB")
    print(f"  conversion itself                 : {(rss - base_rss) / 2**20:,.0f} MiB "
          f"= {(rss - base_rss) / largest:.2f}x the largest shard, {(rss - base_rss) / total:.2f}x the checkpoint")
    print(f"peak anonymous memory (owned)       : {anon / 2**20:,.0f} MiB; peak file pages mapped (the input "
          f"shard, reclaimable page cache): {mapped / 2**20:,.0f} MiB (sampled every 5 ms)")
    if not args.keep:
        import shutil

        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
