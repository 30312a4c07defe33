"""Pieces of a tokenizer's chat template around a long context and a question."""

from __future__ import annotations

from typing import Any


def chat_parts(tokenizer: Any) -> dict[str, str]:
    """``pre + context + mid + question + post`` renders one user turn and the assistant prompt;
    ``next_pre`` opens a later user turn after an assistant answer."""
    if getattr(tokenizer, "chat_template", None) is None:
        return {"pre": "", "mid": "\n\n", "post": "\n", "next_pre": "\n\n"}
    msgs = [{"role": "user", "content": "\x00C\x00\n\n\x00Q\x00"}]
    text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    pre, rest = text.split("\x00C\x00")
    mid, post = rest.split("\x00Q\x00")
    msgs = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "\x00A\x00"},
            {"role": "user", "content": "\x00Q\x00"}]
    text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    next_pre = text.split("\x00A\x00")[1].split("\x00Q\x00")[0]
    return {"pre": pre, "mid": mid, "post": post, "next_pre": next_pre}
