"""Beacon generation runs on transformers' own generate: with no compression (ratio 0) it
equals ``model.generate`` token for token and score for score, for every decoding option."""

from __future__ import annotations

import pytest
import torch

from longctx import BeaconConfig, BeaconModel

from tiny import tiny_model


@pytest.fixture(scope="module")
def pair(tok):
    model = tiny_model("llama", vocab_size=len(tok), max_position_embeddings=256)
    return model, tok


def _both(model, tok, ids, **kw):
    torch.manual_seed(7)
    ref = model.generate(ids, attention_mask=torch.ones_like(ids), return_dict_in_generate=True, output_scores=True,
                         pad_token_id=tok.pad_token_id, **kw)
    bm = BeaconModel(model, tok, config=BeaconConfig(window=16, ratios=[0]))
    try:
        torch.manual_seed(7)
        out = bm.generate(ids, return_dict_in_generate=True, output_scores=True, **kw)
    finally:
        bm.detach()
    return ref, out


@pytest.mark.parametrize("kw", [
    dict(max_new_tokens=12, do_sample=False, eos_token_id=[]),
    dict(max_new_tokens=12, do_sample=True, top_k=30, top_p=0.9, temperature=0.7, eos_token_id=[]),
    dict(max_new_tokens=12, do_sample=False, repetition_penalty=1.5, no_repeat_ngram_size=2, eos_token_id=[]),
    dict(max_new_tokens=12, min_new_tokens=6, do_sample=False),
])
def test_equals_stock_generate_without_compression(pair, kw):
    model, tok = pair
    ids = torch.randint(3, len(tok), (1, 45))
    ref, out = _both(model, tok, ids, **kw)
    assert torch.equal(ref.sequences, out.sequences)
    assert len(ref.scores) == len(out.scores)
    for a, b in zip(ref.scores, out.scores):  # processed scores; -inf where a processor masked a token
        assert torch.equal(torch.isinf(a), torch.isinf(b))
        fin = torch.isfinite(a)
        assert (a[fin] - b[fin]).abs().max().item() < 1e-4


def test_stop_strings_stop_as_in_stock_generate(pair):
    model, tok = pair
    ids = torch.randint(3, len(tok), (1, 30))
    free = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False,
                          eos_token_id=[], pad_token_id=tok.pad_token_id)
    stop = tok.decode(free[0, 33:35])  # a string the free run produces: both must stop there
    ref, out = _both(model, tok, ids, max_new_tokens=10, do_sample=False, eos_token_id=[], stop_strings=[stop],
                     tokenizer=tok)
    assert torch.equal(ref.sequences, out.sequences)
    assert out.sequences.shape[1] < free.shape[1]


def test_text_streamers_receive_the_answer(pair):
    from transformers import TextIteratorStreamer

    model, tok = pair
    ids = torch.randint(3, len(tok), (1, 40))
    bm = BeaconModel(model, tok, config=BeaconConfig(window=16, ratios=[4]))
    try:
        streamer = TextIteratorStreamer(tok, skip_prompt=True)
        new = bm.generate(ids, max_new_tokens=8, eos_token_id=[], streamer=streamer)
        assert "".join(streamer) == tok.decode(new[0])
        assert bm.kv_entries()[0] < 48  # compressed: the memory is the cache
    finally:
        bm.detach()


def test_output_scores_are_the_logits_that_chose_each_token(pair):
    model, tok = pair
    ids = torch.randint(3, len(tok), (1, 40))
    bm = BeaconModel(model, tok, config=BeaconConfig(window=16, ratios=[4]))
    try:
        out = bm.generate(ids, max_new_tokens=6, eos_token_id=[], return_dict_in_generate=True, output_logits=True)
        picked = torch.stack([lg.argmax(-1) for lg in out.logits], dim=1)
        assert torch.equal(picked, out.sequences[:, 40:])
        assert len(out.logits) == 6 and out.logits[0].shape == (1, len(tok))
    finally:
        bm.detach()


def test_generation_config_object(pair):
    from transformers import GenerationConfig

    model, tok = pair
    ids = torch.randint(3, len(tok), (1, 35))
    gc = GenerationConfig(max_new_tokens=9, do_sample=False, repetition_penalty=1.3, eos_token_id=[],
                          pad_token_id=tok.pad_token_id)
    ref = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=gc)
    bm = BeaconModel(model, tok, config=BeaconConfig(window=16, ratios=[0]))
    try:
        new = bm.generate(ids, generation_config=gc)
    finally:
        bm.detach()
    assert torch.equal(ref[:, 35:], new)
    before = gc.to_dict()
    bm = BeaconModel(model, tok, config=BeaconConfig(window=16, ratios=[0]))
    try:
        bm.generate(ids, generation_config=gc, return_dict_in_generate=True)
    finally:
        bm.detach()
    assert gc.to_dict() == before  # the caller's config is not changed
