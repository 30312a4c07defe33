"""Chat helpers: template pieces, multi-turn reuse of the memory."""

from __future__ import annotations

import pytest

from longctx import BeaconConfig, BeaconModel
from longctx.chat import chat_parts

from tiny import tiny_model


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from longctx.models import smollm2_dir

    return AutoTokenizer.from_pretrained(smollm2_dir())


def test_template_pieces_reassemble_the_template(tok):
    p = chat_parts(tok)
    whole = tok.apply_chat_template([{"role": "user", "content": "CTX\n\nQ?"}], tokenize=False,
                                    add_generation_prompt=True)
    assert p["pre"] + "CTX" + p["mid"] + "Q?" + p["post"] == whole
    assert "user" in p["next_pre"]


def test_multi_turn_reuses_the_memory(tok):
    model = tiny_model("llama", vocab_size=len(tok), max_position_embeddings=2048)
    bm = BeaconModel(model, tok, config=BeaconConfig(window=64, ratios=[4]))
    bm.ask("First question?", context="A long context. " * 60, max_new_tokens=5)
    after_first = bm.tokens_read()[0]
    kv_first = bm.kv_entries()[0]
    bm.ask("Second question?", max_new_tokens=5)
    assert bm.memory.meta["turns"] == 2
    second_turn = tok(chat_parts(tok)["next_pre"] + "Second question?" + chat_parts(tok)["post"],
                      add_special_tokens=False).input_ids
    grown = bm.tokens_read()[0] - after_first
    assert len(second_turn) - 2 <= grown <= len(second_turn) + 5  # the new turn (+ answer), not the context again
    assert bm.kv_entries()[0] > kv_first
    bm.ask("Fresh?", context="Other text.", max_new_tokens=2)  # a context starts a new conversation
    assert bm.memory.meta["turns"] == 1 and bm.tokens_read()[0] < after_first
