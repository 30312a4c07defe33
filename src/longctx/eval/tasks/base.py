"""Task items of the evaluation harness (prompt builders live in ``longctx.synthetic``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from longctx.synthetic import chat_prompt, fill, insert_at_depths, overhead, rng_for, sentence_tokens

__all__ = ["Item", "chat_prompt", "fill", "insert_at_depths", "overhead", "rng_for", "sentence_tokens"]


@dataclass
class Item:
    """One evaluation example. ``kind`` is ``gen`` (generate and score) or ``ppl`` (loss on a tail)."""

    task: str
    id: str
    length: int
    kind: str
    ids: list[int]
    answer: Any = None
    scorer: str = "contains"
    max_new_tokens: int = 24
    tail: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    answer_prefix: str = ""  # already in the prompt; prepended to the output before scoring
