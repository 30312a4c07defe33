"""Beacon training: loss goes down, resume is exact, ranks agree, data handling."""

from __future__ import annotations

import os
import re
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


ACCELERATE = Path(__file__).resolve().parents[1] / "recipes" / "accelerate"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(config: str, recipe: Path, out: Path, *extra: str) -> str:
    """``accelerate launch --config_file recipes/accelerate/<config> -m longctx.cli train``."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch", "--config_file",
           str(ACCELERATE / config), "--main_process_port", str(_free_port()), "-m", "longctx.cli", "train",
           "--recipe", str(recipe), "--out", str(out), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return r.stdout + r.stderr


@pytest.fixture(scope="module")
def tiny_run(tok, corpus, tmp_path_factory):
    """A tiny model saved to disk and a recipe for it (3 steps, global batch 2)."""
    import yaml

    d = tmp_path_factory.mktemp("tiny_run")
    small(tok).save_pretrained(d / "model")
    tok.save_pretrained(d / "model")
    recipe = dict(model=str(d / "model"), data=[str(corpus)], min_length=200, max_length=256, steps=3, lr=3e-3,
                  warmup=2, dtype="fp32", beacon_dtype="fp32", save_every=100, seed=0, checkpointing=True,
                  beacon={"window": 64, "ratios": [2, 4, 8], "ratio_mix": "step-random"})
    (d / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return d


def _adapter(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "adapter" / "adapter.safetensors"))


def test_accelerate_ddp_and_fsdp_launches_train_like_one_process(tiny_run, tmp_path):
    """2 processes x batch 1 (DDP, then FSDP2 with base layers and adapter sharded) end with the
    adapter of 1 process x batch 2; an FSDP run stopped after step 2 and resumed ends identical."""
    from longctx.typed import read_yaml

    one = train(TrainConfig.from_dict({**read_yaml(tiny_run / "recipe.yaml"), "out": str(tmp_path / "one"),
                                       "batch_size": 2}))
    _launch("ddp-2cpu.yaml", tiny_run / "recipe.yaml", tmp_path / "ddp")
    said = _launch("fsdp-2cpu.yaml", tiny_run / "recipe.yaml", tmp_path / "fsdp")
    # "fsdp2: rank R holds A of B frozen layer weights and C of D trainable ones", one per rank; the two
    # ranks write to one pipe, so their lines may run together: match the pattern, not whole lines
    held = re.findall(r"fsdp2: rank (\d) holds ([\d,]+) of ([\d,]+) frozen layer weights and ([\d,]+) of ([\d,]+) "
                      r"trainable ones", said)
    assert sorted(h[0] for h in held) == ["0", "1"], said[-3000:]
    for _, *nums in held:
        a, b, c, d = (int(n.replace(",", "")) for n in nums)
        assert a <= b // 2 + 64 and c <= d // 2 + 64 and c > 0  # about half of each on each rank
    ref = _adapter(one)
    for name in ("ddp", "fsdp"):
        got = _adapter(tmp_path / name)
        assert got.keys() == ref.keys()
        assert all(torch.allclose(ref[k], got[k], atol=1e-5) for k in ref), name
    assert any(not torch.allclose(ref[k], v) for k, v in _adapter_init(tiny_run).items())  # and it trained
    _launch("fsdp-2cpu.yaml", tiny_run / "recipe.yaml", tmp_path / "resumed", "--stop-after", "2",
            "--save-every", "1")
    assert not (tmp_path / "resumed" / "adapter").exists()
    _launch("fsdp-2cpu.yaml", tiny_run / "recipe.yaml", tmp_path / "resumed", "--save-every", "1")
    whole, resumed = _adapter(tmp_path / "fsdp"), _adapter(tmp_path / "resumed")
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def _adapter_init(tiny_run: Path) -> dict[str, torch.Tensor]:
    from longctx.beacon import BeaconAdapter
    from longctx.models import load_model

    model, _ = load_model(str(tiny_run / "model"), dtype="fp32", with_tokenizer=False)
    cfg = BeaconConfig(window=64, ratios=[2, 4, 8], ratio_mix="step-random")
    return dict(BeaconAdapter.from_model(model, cfg, dtype=torch.float32).state_dict())


def test_accelerate_configs_are_valid():
    """Every shipped launch config loads in accelerate, with the strategy its name says."""
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {"cpu": "NO", "ddp-2cpu": "MULTI_GPU", "fsdp-2cpu": "FSDP", "ddp-8gpu": "MULTI_GPU",
             "fsdp-8gpu": "FSDP", "zero2-8gpu": "DEEPSPEED"}
    assert {p.stem for p in ACCELERATE.glob("*.yaml")} == set(kinds)
    for stem, kind in kinds.items():
        c = load_config_from_file(str(ACCELERATE / f"{stem}.yaml"))
        assert str(c.distributed_type).split(".")[-1] == kind, stem
        assert c.num_processes == (8 if "8gpu" in stem else 2 if "2cpu" in stem else 1)
        if kind == "FSDP":
            assert c.fsdp_config["fsdp_version"] == 2
    import json

    ds = load_config_from_file(str(ACCELERATE / "zero2-8gpu.yaml")).deepspeed_config
    assert json.loads((ACCELERATE.parents[1] / ds["deepspeed_config_file"]).read_text())["zero_optimization"][
        "stage"] == 2


def test_old_zero_key_is_refused_with_the_launch_to_use():
    from longctx.train.trainer import upgrade_saved

    with pytest.raises(ValueError, match="zero2-8gpu.yaml"):
        upgrade_saved({"zero": 2, "steps": 3})
    assert "zero" not in upgrade_saved({"zero": 0, "steps": 3})


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
