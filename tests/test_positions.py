"""CREAM / PoSE / RandPos samplers and RoPE scaling."""

from __future__ import annotations

import math
import random

import pytest
import torch

from longctx.positions import PositionCollator, PositionError, cream, pose, randpos, scale_rope
from longctx.positions.samplers import truncated_gaussian_ratio

from tiny import tiny_model

N, L = 96, 384  # k = 4


@pytest.mark.parametrize("fn", [cream, pose, randpos])
def test_positions_strictly_increasing_inside_target(fn):
    doc = list(range(1000, 1000 + 2000))
    for i in range(200):
        s = fn(doc, N, L, random.Random(i))
        assert len(s.input_ids) == len(s.position_ids) == N
        assert all(b > a for a, b in zip(s.position_ids, s.position_ids[1:]))
        assert 0 <= s.position_ids[0] and s.position_ids[-1] < L


def test_cream_head_tail_cases_and_segment_lengths():
    doc = list(range(5000))
    cases = {}
    k = L // N
    for i in range(300):
        s = cream(doc, N, L, random.Random(i))
        h, m = s.meta["h"], s.meta["m"]
        cases[s.meta["case"]] = h
        assert s.position_ids[:h] == list(range(h))
        assert s.position_ids[-h:] == list(range(L - h, L))
        assert m == N - 2 * h
        mid = s.position_ids[h : h + m]
        assert mid == list(range(mid[0], mid[0] + m))  # contiguous middle
        # middle tokens come from the document offsets equal to their positions (doc is long)
        assert s.input_ids[h : h + m] == [doc[p] for p in mid]
        assert s.input_ids[:h] == doc[:h] and s.input_ids[-h:] == doc[-h:]
    assert cases == {"relativity": N // 3, "continuity": 4 * k}


def test_cream_middle_tokens_fall_back_before_the_tail_for_short_documents():
    doc = list(range(N))  # exactly N tokens: the middle is the m tokens before the tail
    s = cream(doc, N, L, random.Random(0))
    assert s.input_ids == doc


def test_cream_ratio_follows_the_truncated_gaussian():
    """Fixed seed: the histogram of r matches the spec's clamped, floored Gaussian on [2, 2k]."""
    k, sigma, n = 8, 3.0, 20000
    rng = random.Random(123)
    draws = [truncated_gaussian_ratio(k, sigma, rng) for _ in range(n)]
    assert min(draws) >= 2 and max(draws) <= 2 * k

    def cdf(x):
        return 0.5 * (1 + math.erf((x - (k + 1)) / (sigma * math.sqrt(2))))

    for v in range(2, 2 * k):
        lo = 0.0 if v == 2 else cdf(v)
        hi = cdf(v + 1) if v < 2 * k - 1 else 1.0
        if v == 2 * k - 1:
            hi = cdf(2 * k)
        expected = hi - lo
        observed = draws.count(v) / n
        assert abs(observed - expected) < 4 * math.sqrt(expected * (1 - expected) / n) + 1e-3, (v, observed, expected)
    assert abs(draws.count(2 * k) / n - (1 - cdf(2 * k))) < 0.01


def test_pose_two_chunks():
    s = pose(list(range(500)), N, L, random.Random(5))
    l1, skip = s.meta["l1"], s.meta["skip"]
    assert 1 <= l1 <= N // 2 and 0 <= skip <= L - N
    assert s.position_ids[:l1] == list(range(l1)) and s.position_ids[l1] == l1 + skip


def test_errors():
    with pytest.raises(PositionError, match="whole multiple"):
        cream(list(range(500)), N, 300, random.Random(0))
    with pytest.raises(PositionError, match="shorter"):
        pose(list(range(50)), N, L, random.Random(0))
    with pytest.raises(PositionError, match="whole multiple"):
        PositionCollator("cream", 96, 200)


def test_collator_is_reproducible():
    docs = [list(range(i, i + 400)) for i in range(4)]
    a = PositionCollator("cream", N, L, seed=3)(docs)
    b = PositionCollator("cream", N, L, seed=3)(docs)
    assert torch.equal(a["position_ids"], b["position_ids"]) and torch.equal(a["input_ids"], a["labels"])
    assert a["input_ids"].shape == (4, N)


@pytest.mark.parametrize("method", ["linear", "ntk", "yarn"])
def test_scaled_model_reloads_as_stock_model(tmp_path, method):
    from transformers import AutoModelForCausalLM

    model = tiny_model("llama", max_position_embeddings=128)
    scale_rope(model.config, 512, method)
    assert model.config.max_position_embeddings == 512
    model.save_pretrained(tmp_path)
    fresh = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert type(fresh.model.rotary_emb).__name__ == type(model.model.rotary_emb).__name__
    ids = torch.randint(3, 128, (1, 300))
    with torch.no_grad():
        # rebuild the rotary of the original after changing the config, then compare
        model.model.rotary_emb.__init__(model.config)
        a, b = model(ids).logits, fresh(ids).logits
    assert torch.allclose(a, b, atol=1e-5)
    if method == "linear":
        base = tiny_model("llama", max_position_embeddings=128).model.rotary_emb.inv_freq
        assert torch.allclose(fresh.model.rotary_emb.inv_freq, base / 4)


def test_extension_fine_tuning_saves_a_stock_model_and_resumes(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from longctx.models import smollm2_dir
    from longctx.train.extend import ExtendConfig, extend

    tok = AutoTokenizer.from_pretrained(smollm2_dir())
    text = tmp_path / "doc.txt"
    from longctx.data import moby_dick

    text.write_text(moby_dick()[:3000])

    def run(out, **kw):
        model = tiny_model("llama", vocab_size=len(tok), max_position_embeddings=128)
        cfg = ExtendConfig(method="cream", data=[str(text)], out=str(out), target_length=512, steps=4, lr=1e-3,
                           warmup=1, dtype="fp32", save_every=2, **kw)
        return extend(cfg, model=model, tokenizer=tok), model

    out, model = run(tmp_path / "a")
    logs = [__import__("json").loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert len(logs) == 4 and max(x["positions_max"] for x in logs) < 512
    fresh = AutoModelForCausalLM.from_pretrained(out / "model", dtype=torch.float32).eval()
    assert fresh.config.max_position_embeddings == 512 and fresh.config.rope_parameters["rope_type"] == "linear"
    ids = torch.randint(3, 1000, (1, 300))
    with torch.no_grad():
        assert torch.allclose(fresh(ids).logits, model(ids).logits, atol=1e-5)
    run(tmp_path / "b", stop_after=2)
    with pytest.raises(ValueError, match="other settings \\(method: 'cream' -> 'pose'"):
        extend(ExtendConfig(method="pose", data=[str(text)], out=str(tmp_path / "b"), target_length=512, steps=4,
                            lr=1e-3, warmup=1, dtype="fp32", save_every=2), model=tiny_model("llama", vocab_size=len(tok),
                                                                                         max_position_embeddings=128),
               tokenizer=tok)
    out_b, _ = run(tmp_path / "b")
    logs_b = (out_b / "log.jsonl").read_text().splitlines()
    assert [__import__("json").loads(x)["step"] for x in logs_b] == [1, 2, 3, 4]  # no repeated rows
    a = AutoModelForCausalLM.from_pretrained(out / "model", dtype=torch.float32).state_dict()
    b = AutoModelForCausalLM.from_pretrained(out_b / "model", dtype=torch.float32).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_lora_extension_trains_only_lora_and_merges_into_a_stock_model(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from longctx.data import moby_dick
    from longctx.models import smollm2_dir
    from longctx.train.extend import ExtendConfig, extend

    tok = AutoTokenizer.from_pretrained(smollm2_dir())
    (tmp_path / "doc.txt").write_text(moby_dick()[:3000])
    model = tiny_model("llama", vocab_size=len(tok), max_position_embeddings=128)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = ExtendConfig(method="pose", data=[str(tmp_path / "doc.txt")], out=str(tmp_path / "out"), target_length=512,
                       steps=3, lr=1e-2, warmup=1, dtype="fp32", lora=4, lora_targets=["q_proj", "v_proj"])
    out = extend(cfg, model=model, tokenizer=tok)
    assert (out / "lora" / "adapter_model.safetensors").exists()
    fresh = AutoModelForCausalLM.from_pretrained(out / "model", dtype=torch.float32).eval()
    after = fresh.state_dict()
    assert set(after) == set(before)  # no LoRA leftovers: a plain model
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".q_proj." in k or ".v_proj." in k for k in changed)
    ids = torch.randint(3, 1000, (1, 300))
    with torch.no_grad():
        assert torch.allclose(fresh(ids).logits, model(ids).logits, atol=1e-5)


def test_zero_steps_saves_the_rope_scaled_model_and_a_time_limit_stops_a_run(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from longctx.data import moby_dick
    from longctx.models import smollm2_dir
    from longctx.train.extend import ExtendConfig, extend

    tok = AutoTokenizer.from_pretrained(smollm2_dir())
    (tmp_path / "doc.txt").write_text(moby_dick()[:3000])
    model = tiny_model("llama", vocab_size=len(tok), max_position_embeddings=128)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = extend(ExtendConfig(data=[str(tmp_path / "doc.txt")], out=str(tmp_path / "rope"), target_length=512,
                              steps=0, dtype="fp32"), model=model, tokenizer=tok)
    fresh = AutoModelForCausalLM.from_pretrained(out / "model", dtype=torch.float32)
    assert fresh.config.max_position_embeddings == 512 and fresh.config.rope_parameters["rope_type"] == "linear"
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())  # weights untouched
    with pytest.raises(ValueError, match="steps must be 0"):
        ExtendConfig(steps=-1)
    with pytest.raises(ValueError, match="time_limit must be positive"):
        ExtendConfig(time_limit=0)
    out = extend(ExtendConfig(data=[str(tmp_path / "doc.txt")], out=str(tmp_path / "timed"), target_length=512,
                              steps=50, lr=1e-3, warmup=1, dtype="fp32", time_limit=1e-6),
                 model=tiny_model("llama", vocab_size=len(tok), max_position_embeddings=128), tokenizer=tok)
    assert len((out / "log.jsonl").read_text().splitlines()) == 1 and (out / "model").exists()


def test_training_documents_are_cut_filtered_and_held_out(tmp_path):
    from transformers import AutoTokenizer

    from longctx.models import smollm2_dir
    from longctx.train.extend import ExtendConfig, training_documents

    tok = AutoTokenizer.from_pretrained(smollm2_dir())
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "long.txt").write_text("whale " * 1000)
    (tmp_path / "keep" / "short.txt").write_text("whale " * 10)
    (tmp_path / "keep" / "held.txt").write_text("whale " * 1000)
    cfg = ExtendConfig(data=[str(tmp_path / "keep")], target_length=256, holdout=["held.txt"])
    docs = training_documents(cfg, tok, 64)
    assert all(64 <= len(d) <= 256 for d in docs)
    n = len(tok("whale " * 1000, add_special_tokens=False).input_ids) + 1  # + EOS
    pieces = [n - i for i in range(0, n, 256)]
    # the long text, cut in pieces of the target length (a last piece under 64 dropped); short.txt, held.txt dropped
    assert sorted(len(d) for d in docs) == sorted(min(256, x) for x in pieces if x >= 64)
    with pytest.raises(ValueError, match="no document"):
        training_documents(ExtendConfig(data=[str(tmp_path / "keep" / "short.txt")], target_length=256), tok, 64)


def _extend_rank(rank, world, text, out, tok_dir, port):
    import os

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import torch.distributed as dist
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    from longctx.train.extend import ExtendConfig, extend

    tok = AutoTokenizer.from_pretrained(tok_dir)
    model = tiny_model("llama", vocab_size=len(tok), max_position_embeddings=64)
    extend(ExtendConfig(method="cream", data=[text], out=out, target_length=256, steps=3, lr=1e-3, warmup=1,
                        dtype="fp32", lora=4), model=model, tokenizer=tok)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{out}/rank{rank}.safetensors")
    dist.destroy_process_group()


def test_two_gloo_ranks_extend_like_one_process_with_the_whole_batch(tmp_path):
    """Data parallel: 2 ranks x batch 1 end with the same weights as 1 process x batch 2."""
    import socket

    import torch.multiprocessing as mp
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from longctx.data import moby_dick
    from longctx.models import smollm2_dir
    from longctx.train.extend import ExtendConfig, extend

    text = tmp_path / "doc.txt"
    text.write_text(moby_dick()[:20000])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_extend_rank, args=(2, str(text), str(tmp_path / "dp"), str(smollm2_dir()), port), nprocs=2, join=True)
    a, b = (load_file(str(tmp_path / "dp" / f"rank{r}.safetensors")) for r in (0, 1))
    assert all(torch.equal(a[k], b[k]) for k in a)  # gradients were all-reduced
    assert len((tmp_path / "dp" / "log.jsonl").read_text().splitlines()) == 3  # rank 0 logs
    tok = AutoTokenizer.from_pretrained(smollm2_dir())
    model = tiny_model("llama", vocab_size=len(tok), max_position_embeddings=64)
    extend(ExtendConfig(method="cream", data=[str(text)], out=str(tmp_path / "one"), target_length=256, steps=3,
                        lr=1e-3, warmup=1, dtype="fp32", lora=4, batch_size=2), model=model, tokenizer=tok)
    one = model.state_dict()
    assert all(torch.allclose(a[k], one[k], atol=1e-6) for k in a)
    assert any(not torch.equal(a[k], tiny_model("llama", vocab_size=len(tok), max_position_embeddings=64)
                               .state_dict()[k]) for k in a)  # and they trained


def test_cream_middle_end_follows_the_spec_distribution():
    """Fixed seed: the end ``e`` of the middle matches the mixture over r of uniforms on
    [floor(h + (m-1) r/2), floor((r/2) N - h - 1)], for each case, bin by bin."""
    k, sigma, n = L // N, 3.0, 20000

    def cdf(x):
        return 0.5 * (1 + math.erf((x - (k + 1)) / (sigma * math.sqrt(2))))

    # r = floor(x): mass below the grid clamps to 2, above it to 2k
    p_r = {r: cdf(r + 1) - (0.0 if r == 2 else cdf(r)) for r in range(2, 2 * k)}
    p_r[2 * k] = 1 - cdf(2 * k)
    draws: dict[str, list[int]] = {"relativity": [], "continuity": []}
    doc = list(range(5000))
    for i in range(n):
        s = cream(doc, N, L, random.Random(f"e/{i}"))
        draws[s.meta["case"]].append(s.meta["e"])
    for case, h in (("relativity", N // 3), ("continuity", 4 * k)):
        m = N - 2 * h
        pmf: dict[int, float] = {}
        for r, pr in p_r.items():
            lo, hi = math.floor(h + (m - 1) * r / 2), math.floor((r / 2) * N - h - 1)
            hi = max(lo, hi)
            for e in range(lo, hi + 1):
                pmf[e] = pmf.get(e, 0.0) + pr / (hi - lo + 1)
        es = draws[case]
        assert set(es) <= set(pmf) and all(e < L - h for e in es)  # the middle ends before the tail
        edges = sorted(pmf)
        width = len(edges) // 8 + 1
        bins = [edges[i : i + width] for i in range(0, len(edges), width)]
        for b in bins:
            expected = sum(pmf[e] for e in b)
            observed = sum(1 for e in es if b[0] <= e <= b[-1]) / len(es)
            tol = 4 * math.sqrt(expected * (1 - expected) / len(es)) + 1e-3
            assert abs(observed - expected) < tol, (case, b[0], b[-1], observed, expected)
