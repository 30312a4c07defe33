"""Training that makes the memory carry information: learnability, objectives, data, measures."""

from __future__ import annotations

import json
import math

import pytest
import torch

from longctx import BeaconAdapter, BeaconConfig, BeaconModel
from longctx.eval.report import recovered_fraction, summary, wilson
from longctx.train.memory_tasks import copy_sequences, recall_sequences
from longctx.train.trainer import distill_loss
from test_train import cfg, small

from tiny import tiny_model

EVAL_WORDING = ("pass key", "special magic number", "grass is green", "secret ingredient")


def _recall_batch(g: torch.Generator, batch: int = 16, window: int = 16, keys: int = 8):
    """Window 1: a key token amid constant filler. Window 2: only a query token, and the target
    at its first position is the key, which therefore lies only in the memory."""
    first = torch.full((batch, window), 12)
    first[:, 4] = torch.randint(3, 3 + keys, (batch,), generator=g)
    ids = torch.cat([first, torch.full((batch, window), 1)], 1)
    labels = torch.full_like(ids, -100)
    labels[:, window + 1] = first[:, 4]
    return ids, labels


def test_gradients_through_the_memory_teach_it_to_carry_a_fact():
    """Learnability: a few dozen steps of a tiny random model. Without memory the key cannot be
    known (loss stays at the uninformed level); with it the loss falls below log(#keys), so the
    memory says *which* key, not just which set."""
    model = tiny_model("llama", initializer_range=0.2)
    adapter = BeaconAdapter.from_model(model, BeaconConfig(window=16, ratios=[4]))
    bm = BeaconModel(model, adapter=adapter)
    bm.freeze_base()
    opt = torch.optim.Adam(adapter.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    held_out = _recall_batch(torch.Generator().manual_seed(99), batch=64)

    def loss(keep: bool) -> float:
        bm.keep_memory = keep
        bm.reset()
        with torch.no_grad():
            value = bm(held_out[0], labels=held_out[1], logits="none").loss.item()
        bm.keep_memory = True
        return value

    for _ in range(150):
        ids, labels = _recall_batch(g)
        bm.reset()
        bm(ids, labels=labels, logits="none").loss.backward()
        opt.step()
        opt.zero_grad()
    with_memory, without = loss(True), loss(False)
    assert with_memory < math.log(8) - 0.3
    assert with_memory < 0.5 * without


def test_recall_sequences_put_the_facts_in_the_memory_and_ask_for_them(tok):
    from longctx.data import moby_dick

    texts = [moby_dick()[:80_000]]
    seqs = recall_sequences(tok, 12, 600, 900, seed=1, texts=texts, open_window=128)
    assert seqs == recall_sequences(tok, 12, 600, 900, seed=1, texts=texts, open_window=128)
    in_memory = 0
    for s in seqs:
        ids, labels = s["input_ids"], s["labels"]
        assert len(ids) == len(labels) and s["kind"] == "recall"
        n = sum(x != -100 for x in labels)
        assert labels[: len(ids) - n] == [-100] * (len(ids) - n) and n > 5  # loss on the answers only
        prompt, answer = tok.decode(ids[: len(ids) - n]), tok.decode(ids[len(ids) - n :])
        assert not any(w in (prompt + answer).lower() for w in EVAL_WORDING)
        values = [part.rsplit(" is ", 1)[1] for part in answer.replace("<|im_end|>", "").strip().split(". ") if " is " in part]
        context = prompt[: prompt.rindex("<|im_start|>user") if prompt.count("<|im_start|>user") > 1 else prompt.rindex("\n\n")]
        assert values and all(v.rstrip(".") in context for v in values)
        last_window = tok.decode(ids[len(ids) - n - 128 : len(ids) - n])
        in_memory += all(v.rstrip(".") not in last_window for v in values)
    assert in_memory >= 6  # most facts lie before the open window


def test_recall_loss_on_values_labels_only_the_values(tok):
    from longctx.data import moby_dick

    texts = [moby_dick()[:80_000]]
    whole = recall_sequences(tok, 6, 600, 900, seed=2, texts=texts, open_window=128)
    vals = recall_sequences(tok, 6, 600, 900, seed=2, texts=texts, open_window=128, loss_on="values")
    for w, v in zip(whole, vals):
        assert w["input_ids"] == v["input_ids"]
        kept = [t for t in v["labels"] if t != -100]
        assert 0 < len(kept) < sum(t != -100 for t in w["labels"])
        answer = tok.decode(w["input_ids"][len(w["input_ids"]) - sum(t != -100 for t in w["labels"]):])
        values = [p.rsplit(" is ", 1)[1].rstrip(".") for p in answer.replace("<|im_end|>", "").strip().split(". ")
                  if " is " in p]
        labelled = tok.decode(kept).replace(" ", "")
        assert all(x.replace(" ", "") in labelled for x in values)  # every value is supervised ...
        assert " is " not in tok.decode(kept) and "The " not in tok.decode(kept)  # ... the template is not
    with pytest.raises(ValueError, match="loss_on"):
        recall_sequences(tok, 1, 600, 900, seed=2, texts=texts, loss_on="all")


def test_copy_sequences_repeat_a_span_of_the_text(tok):
    from longctx.data import moby_dick

    seqs = copy_sequences(tok, 10, 500, 800, seed=2, texts=[moby_dick()[:80_000]], open_window=128)
    assert len(seqs) == 10
    for s in seqs:
        ids, labels = s["input_ids"], s["labels"]
        target = [x for x in labels if x != -100]
        assert len(target) >= 16
        first = labels.index(target[0])
        context = ids[: first - 20]
        # the repeated span occurs earlier in the sequence, outside its last 128 tokens
        hay = ids[: len(ids) - len(target) - 128]
        assert any(hay[i : i + 12] == target[:12] for i in range(len(hay) - 12)) or \
            any(hay[i : i + 12] == target[-12:] for i in range(len(hay) - 12))
        assert len(context) > 0


def test_distill_loss_is_the_mean_kl_over_labelled_positions():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(1, 7, 11, generator=g), torch.randn(1, 7, 11, generator=g)
    labels = torch.tensor([[5, 1, -100, 3, 4, -100, 2]])
    assert distill_loss(t, t, labels).item() == pytest.approx(0.0, abs=1e-6)
    valid = labels[:, 1:] != -100
    ref = torch.nn.functional.kl_div(s[:, :-1][valid].log_softmax(-1), t[:, :-1][valid].log_softmax(-1),
                                     log_target=True, reduction="sum") / valid.sum()
    assert distill_loss(s, t, labels, chunk=2).item() == pytest.approx(ref.item(), rel=1e-5)
    # the chunks are recomputed in backward; the gradient is still (softmax(s) - softmax(t)) / n on labelled rows
    s.requires_grad_(True)
    distill_loss(s, t, labels, chunk=2).backward()
    want = torch.zeros_like(s)
    want[:, :-1][valid] = (s[:, :-1][valid].softmax(-1) - t[:, :-1][valid].softmax(-1)).detach() / valid.sum()
    torch.testing.assert_close(s.grad, want, rtol=1e-5, atol=1e-7)


def test_training_with_memory_objectives(tok, corpus, tmp_path):
    c = cfg(corpus, tmp_path / "m", recall=3, copy=3, distill=0.5, steps=4, save_every=4, sink=2)
    out = train_and_rows(c, tok)
    kinds = {r["kind"] for r in out}
    assert kinds <= {"text", "recall", "copy"} and len(out) == 4
    meta = json.loads((tmp_path / "m" / "adapter" / "adapter_config.json").read_text())
    assert meta["beacon"]["sink"] == 2


def train_and_rows(c, tok):
    from longctx.train import train

    out = train(c, small(tok), tok)
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_wilson_interval():
    lo, hi = wilson(0, 20)
    assert lo == 0.0 and 0.15 < hi < 0.18  # 0/20 does not exclude 16%
    lo, hi = wilson(10, 20)
    assert lo == pytest.approx(0.299, abs=1e-3) and hi == pytest.approx(0.701, abs=1e-3)


def test_recovered_fraction_and_intervals_in_the_summary():
    rows = []
    for d, (full, nomem, beacon) in enumerate([(10.0, 14.0, 12.0), (20.0, 22.0, 21.5)]):
        for kind, p in (("full", full), ("beacon-nomem", nomem), ("beacon", beacon)):
            rows.append({"task": "ppl", "item": f"doc{d}", "method": kind, "kind": kind, "length": 4096,
                         "ppl": p, "nll": math.log(p) * 100, "tokens": 100})
    rf = recovered_fraction(rows)[4096]
    assert rf["documents"] == 2 and rf["min"] == pytest.approx(0.25) and rf["max"] == pytest.approx(0.5)
    assert 0.25 < rf["recovered"] < 0.5
    s = summary(rows)
    assert s[("ppl", "full", 4096)]["min"] == 10.0 and s[("ppl", "full", 4096)]["max"] == 20.0
    acc = summary([{"task": "passkey", "item": str(i), "method": "beacon-4", "kind": "beacon", "length": 2048,
                    "score": float(i < 5)} for i in range(20)])[("passkey", "beacon", 2048)]
    assert acc["score"] == 25.0 and acc["lo"] < 25.0 < acc["hi"]


def test_passkey_in_memory_places_the_key_before_the_last_window(tok):
    from longctx.eval.tasks.synthetic import passkey

    for length in (2048, 2000):
        for item in passkey(tok, length, 6, seed=0, before_last=512):
            needle = tok(" The pass key is", add_special_tokens=False).input_ids
            assert item.meta["needle_offset"] + 30 <= len(item.ids) - 512
            assert item.ids[item.meta["needle_offset"] : item.meta["needle_offset"] + len(needle)] == needle


def test_export_adapter_from_a_checkpoint(tok, corpus, tmp_path):
    from safetensors.torch import load_file

    from longctx.train import train
    from longctx.train.trainer import export_adapter

    model = small(tok)
    run = train(cfg(corpus, tmp_path / "run", steps=2, save_every=2, sink=1), model, tok)
    out = export_adapter(run, tmp_path / "exported", model=model, dtype=None)
    a, b = load_file(str(run / "adapter" / "adapter.safetensors")), load_file(str(out / "adapter.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert BeaconAdapter.load(out, model).config.sink == 1


def test_default_training_texts_leave_out_the_held_out_and_reserved_books():
    from longctx.data import HELDOUT_FROM_YEAR, gutenberg_books
    from longctx.train.data import read_records

    books = {d["id"] for d in gutenberg_books()}
    assert {"chesterton-brown", "carroll-alice", "shakespeare-hamlet"} <= books
    assert not any(b.startswith(("austen", "bible")) or "moby" in b for b in books)  # reserved / duplicate
    recs = list(read_records(["moby-dick", "sotu", "gutenberg"]))
    sources = [r["source"] for r in recs]
    assert sources.count("moby-dick") == 1 and len([s for s in sources if s.startswith("gutenberg/")]) == len(books)
    assert all(len(r["text"]) > 10_000 for r in recs if r["source"].startswith("gutenberg/"))
    held = [s for s in sources if s.startswith("sotu/") and int(s[5:9]) >= HELDOUT_FROM_YEAR]
    assert held  # read_records yields them; the recipes' holdout ["sotu/199", "sotu/20"] drops exactly these
    assert all(("sotu/199" in s or "sotu/20" in s) for s in held)


def test_stream_loss_mixes_distillation_and_next_token_loss(tok):
    from longctx.train.trainer import BeaconStream, teacher_logits

    model = tiny_model(seed=3)
    bm = BeaconModel(model, None, config=BeaconConfig(window=16, ratios=[4], ratio_mix="fixed"))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, model.config.vocab_size, (1, 48), generator=g)
    mask, labels = torch.ones_like(ids), ids.clone()
    labels[:, :8] = -100
    stream = BeaconStream(bm)
    with torch.no_grad():
        kl, ce = (stream(ids, mask, labels, sequence=0, distill=d)[0] for d in (1.0, 0.0))
        half = stream(ids, mask, labels, sequence=0, distill=0.5)[0]
        bm.reset(sequence=0)
        ref = distill_loss(bm(ids, attention_mask=mask, logits="all").logits, teacher_logits(model, ids, mask), labels)
    assert kl.item() == pytest.approx(ref.item(), rel=1e-5) and kl.item() > 0
    assert half.item() == pytest.approx(0.5 * kl.item() + 0.5 * ce.item(), rel=1e-5)
    bm.detach()
