"""Beacon training: loss goes down, resume is exact, ranks agree, data handling."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from longctx.beacon import BeaconConfig
from longctx.train import TrainConfig, train
from longctx.train.data import chat_example, group_by_windows, make_sequences, retrieval_sequences

from tiny import tiny_model


def small(tok, **kw):
    return tiny_model("llama", vocab_size=len(tok), max_position_embeddings=2048, **kw)


BEACON_KEYS = ("window", "ratios", "ratio_mix", "sink", "placement", "scheme", "projections", "embed_init", "attend_prev")


def cfg(corpus, out, **kw):
    """A tiny run; beacon settings (window=..., sink=...) go to its beacon section."""
    beacon = {"window": 64, "ratios": [2, 4, 8], "ratio_mix": "step-random"}
    beacon.update({k: kw.pop(k) for k in BEACON_KEYS if k in kw})
    base = dict(data=[str(corpus)], out=str(out), min_length=200, max_length=256,
                steps=6, lr=3e-3, warmup=2, dtype="fp32", beacon_dtype="fp32", save_every=2, seed=0)
    base.update(kw)
    return TrainConfig(beacon=BeaconConfig(**beacon), **base)


def test_training_lowers_the_loss(tok, corpus, tmp_path):
    import json

    out = train(cfg(corpus, tmp_path, steps=24, lr=1e-2), model=small(tok), tokenizer=tok)
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    first, last = sum(r["loss"] for r in rows[:4]) / 4, sum(r["loss"] for r in rows[-4:]) / 4
    assert last < first - 0.05
    assert (out / "adapter" / "adapter.safetensors").exists()
    assert all(set(r["ratios"]) <= {2, 4, 8} for r in rows)


def test_resume_after_interruption_matches_an_uninterrupted_run(tok, corpus, tmp_path):
    whole = train(cfg(corpus, tmp_path / "a"), model=small(tok), tokenizer=tok)
    train(cfg(corpus, tmp_path / "b", stop_after=3), model=small(tok), tokenizer=tok)
    assert not (tmp_path / "b" / "adapter").exists()  # interrupted: no final adapter yet
    resumed = train(cfg(corpus, tmp_path / "b"), model=small(tok), tokenizer=tok)
    a = load_file(str(whole / "adapter" / "adapter.safetensors"))
    b = load_file(str(resumed / "adapter" / "adapter.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    logs = (tmp_path / "b" / "log.jsonl").read_text().splitlines()
    assert [int(__import__("json").loads(x)["step"]) for x in logs] == [1, 2, 3, 4, 5, 6]  # none lost or repeated


def test_frozen_base_model_is_unchanged(tok, corpus, tmp_path):
    model = small(tok)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(cfg(corpus, tmp_path, steps=2), model=model, tokenizer=tok)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def _rank_main(rank, world, corpus, out, tok_dir, port, kw=None):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    kw = kw or dict(out=f"{out}/rank{rank}", save_every=100, every_rank_writes=True)
    train(cfg(corpus, kw.pop("out", out), steps=3, **kw), model=small(tok), tokenizer=tok)
    import torch.distributed as dist

    dist.destroy_process_group()


def _spawn(corpus, out, kw=None):
    import socket

    import torch.multiprocessing as mp

    from longctx.models import smollm2_dir

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank_main, args=(2, str(corpus), str(out), str(smollm2_dir()), port, kw), nprocs=2, join=True)


def test_zero2_shards_optimizer_states_and_matches_replicated_training(tok, corpus, tmp_path):
    _spawn(corpus, tmp_path / "plain", dict(save_every=2))
    _spawn(corpus, tmp_path / "zero", dict(save_every=2, zero=2))
    _spawn(corpus, tmp_path / "resumed", dict(save_every=1, zero=2, stop_after=2))  # killed after step 2 ...
    _spawn(corpus, tmp_path / "resumed", dict(save_every=1, zero=2))  # ... and resumed
    plain, zero, resumed = (load_file(str(tmp_path / n / "adapter" / "adapter.safetensors"))
                            for n in ("plain", "zero", "resumed"))
    assert all(torch.allclose(plain[k], zero[k], atol=1e-6) for k in plain)
    assert all(torch.equal(zero[k], resumed[k]) for k in zero)
    step = tmp_path / "zero" / "checkpoints" / "step-00000003"
    shards = [load_file(str(step / f"optimizer-rank{r}.safetensors")) for r in (0, 1)]
    n_params = len(plain)
    held = [{k.split(".")[0] for k in sh} for sh in shards]
    assert held[0] and held[1] and not held[0] & held[1]  # each state lives on exactly one rank
    assert len(held[0] | held[1]) == n_params


def test_two_gloo_ranks_draw_the_same_ratios_and_end_identical(tok, corpus, tmp_path):
    import json

    _spawn(corpus, tmp_path)
    logs = [[json.loads(x) for x in (tmp_path / f"rank{r}" / "log.jsonl").read_text().splitlines()] for r in (0, 1)]
    assert len(logs[0]) == len(logs[1]) == 3
    assert [x["ratios"] for x in logs[0]] == [x["ratios"] for x in logs[1]]
    assert [x["loss"] for x in logs[0]] != [x["loss"] for x in logs[1]]  # each rank read different data
    a = load_file(str(tmp_path / "rank0" / "adapter" / "adapter.safetensors"))
    b = load_file(str(tmp_path / "rank1" / "adapter" / "adapter.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # gradients were all-reduced


def test_chat_labels_only_on_assistant_turns(tok):
    msgs = [{"role": "user", "content": "Who hunts the whale?"}, {"role": "assistant", "content": "Ahab."}]
    ids, labels = chat_example(tok, msgs)
    kept = tok.decode([i for i, lab in zip(ids, labels) if lab != -100])
    assert "Ahab." in kept and "hunts" not in kept
    assert len(ids) == len(labels)


def test_sequences_and_window_groups(tok):
    recs = iter([{"text": "word " * 700}, {"text": "short"}])
    seqs = make_sequences(recs, tok, min_length=100, max_length=300)
    total = len(tok("word " * 700, add_special_tokens=False).input_ids) + 1  # EOS appended
    assert [len(s["input_ids"]) for s in seqs] == [300, 300, total - 600]  # "short" dropped
    assert seqs[-1]["input_ids"][-1] == tok.eos_token_id
    batches = group_by_windows([300, 290, 101, 120, 64], window=128, batch_size=2, seed=0)
    lens = [300, 290, 101, 120, 64]
    for b in batches:
        assert len({-(-lens[i] // 128) for i in b}) == 1
    assert batches == group_by_windows(lens, window=128, batch_size=2, seed=0)
    lens = [130 + 7 * i for i in range(6)] + [300 + 5 * i for i in range(6)] + [60, 70]
    ranked = group_by_windows(lens, window=128, batch_size=1, seed=1, world=2)
    assert len(ranked) % 2 == 0
    for i in range(0, len(ranked), 2):  # the two ranks of a step read sequences of equal window counts
        assert -(-lens[ranked[i][0]] // 128) == -(-lens[ranked[i + 1][0]] // 128)


def test_retrieval_sequences_hide_the_answer_in_the_context(tok):
    from longctx.data import moby_dick

    seqs = retrieval_sequences(tok, 6, 300, 500, seed=3, texts=[moby_dick()[:50_000]])
    assert seqs == retrieval_sequences(tok, 6, 300, 500, seed=3, texts=[moby_dick()[:50_000]])
    for s in seqs:
        ids, labels = s["input_ids"], s["labels"]
        assert 300 <= len(ids) <= 500 and len(ids) == len(labels)
        n_answer = sum(lab != -100 for lab in labels)
        assert labels[: len(ids) - n_answer] == [-100] * (len(ids) - n_answer)  # loss on the answer only
        key = tok.decode(ids[len(ids) - n_answer :]).strip(" .")
        assert key.isdigit() and len(key) == 5
        prompt = tok.decode(ids[: len(ids) - n_answer])
        question_at = prompt.rindex("\n\n")  # context, blank line, question
        assert key in prompt[:question_at] and key not in prompt[question_at:]  # the fact sits in the context


def test_training_with_retrieval_data(tok, corpus, tmp_path):
    c = cfg(corpus, tmp_path / "r", retrieval=4, steps=2, save_every=2)
    out = train(c, small(tok), tok)
    assert (out / "adapter" / "adapter.safetensors").exists()


def _fsdp_rank_main(rank, world, corpus, out, tok_dir, port):
    """One rank of FSDP training; also records how much of the base layers this rank holds."""
    import json

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from transformers import AutoTokenizer

    from longctx import compat
    from longctx.train.fsdp import local_numel

    tok = AutoTokenizer.from_pretrained(tok_dir)
    model = small(tok)
    whole = sum(p.numel() for layer in compat.layers(model) for p in layer.parameters())
    train(cfg(corpus, f"{out}/rank{rank}", steps=3, save_every=100, every_rank_writes=True, fsdp=True,
              checkpointing=True), model=model, tokenizer=tok)
    base = [p for layer in compat.layers(model) for p in layer.parameters()]  # adapter detached again
    (Path(out) / f"held{rank}.json").write_text(json.dumps({"whole": whole, "local": local_numel(base)}))
    import torch.distributed as dist

    dist.destroy_process_group()


def test_fsdp_shards_the_base_layers_and_trains_like_replicated_ranks(tok, corpus, tmp_path):
    import json
    import socket

    import torch.multiprocessing as mp

    from longctx.models import smollm2_dir

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_fsdp_rank_main, args=(2, str(corpus), str(tmp_path / "fsdp"), str(smollm2_dir()), port), nprocs=2,
             join=True)
    _spawn(corpus, tmp_path / "plain")
    for r in (0, 1):
        held = json.loads((tmp_path / "fsdp" / f"held{r}.json").read_text())
        assert held["local"] <= held["whole"] // 2 + 64  # each rank holds about half of the layers' weights
        plain = load_file(str(tmp_path / "plain" / f"rank{r}" / "adapter" / "adapter.safetensors"))
        fsdp = load_file(str(tmp_path / "fsdp" / f"rank{r}" / "adapter" / "adapter.safetensors"))
        assert all(torch.allclose(plain[k], fsdp[k], atol=1e-5) for k in plain)


def test_resume_refuses_other_settings_and_redoes_steps_after_the_checkpoint(tok, corpus, tmp_path):
    import json
    import shutil

    train(cfg(corpus, tmp_path, stop_after=3), model=small(tok), tokenizer=tok)
    with pytest.raises(ValueError, match="beacon.window: 64 -> 32"):
        train(cfg(corpus, tmp_path, window=32), model=small(tok), tokenizer=tok)
    shutil.rmtree(sorted((tmp_path / "checkpoints").iterdir())[-1])  # killed after step 3, last checkpoint at 2
    train(cfg(corpus, tmp_path), model=small(tok), tokenizer=tok)
    steps = [json.loads(x)["step"] for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
