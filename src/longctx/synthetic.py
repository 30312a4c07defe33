"""Building blocks of synthetic long-context prompts, shared by evaluation tasks and training data:
sentence tokenisation, filler, inserts at depths, chat prompts, seeded draws, the passkey filler."""

from __future__ import annotations

import random
from typing import Any

from longctx.chat import chat_parts

PASSKEY_FILLER = ("The grass is green. The sky is blue. The sun is yellow. Here we go. "
                  "There and back again. ")
NOUNS = ["saffron", "cinnamon", "juniper", "anchovy", "pepper", "nutmeg", "thyme", "clove", "fennel",
         "mustard", "ginger", "paprika", "oregano", "caraway", "sorrel", "tarragon"]


def sentence_tokens(tok: Any, text: str) -> list[list[int]]:
    """Token ids of each sentence of ``text`` (each with its leading space)."""
    parts = [p.strip() for p in text.replace("\n", " ").split(". ") if p.strip()]
    return [tok(" " + p.rstrip(".") + ".", add_special_tokens=False).input_ids for p in parts]


def fill(sentences: list[list[int]], n_tokens: int, start: int = 0) -> tuple[list[int], list[int]]:
    """Cycle sentences (from ``start``) until ``n_tokens``; returns ids and sentence start offsets."""
    ids: list[int] = []
    bounds: list[int] = []
    i = start
    while len(ids) < n_tokens:
        bounds.append(len(ids))
        ids.extend(sentences[i % len(sentences)])
        i += 1
    return ids[:n_tokens], [b for b in bounds if b < n_tokens] + [n_tokens]


def insert_at_depths(filler: list[int], bounds: list[int], inserts: list[tuple[float, list[int]]]) -> tuple[list[int], list[int]]:
    """Insert token lists at the sentence boundaries nearest each depth (0..1) of the filler.

    Returns the new ids and the offset at which each insert starts (in the new ids).
    """
    n = len(filler)
    where = [min(bounds, key=lambda b, d=d: abs(b - d * n)) for d, _ in inserts]
    order = sorted(range(len(inserts)), key=lambda k: where[k])
    out: list[int] = []
    offsets = [0] * len(inserts)
    prev = 0
    for k in order:
        out.extend(filler[prev : where[k]])
        offsets[k] = len(out)
        out.extend(inserts[k][1])
        prev = where[k]
    out.extend(filler[prev:])
    return out, offsets


def chat_prompt(tok: Any, context_ids: list[int], question: str, answer_prefix: str = "") -> tuple[list[int], int]:
    """Prompt ids ``pre + context + mid + question + post (+ the start of the answer)``;
    returns ids and the context's offset."""
    parts = chat_parts(tok)
    pre = tok(parts["pre"], add_special_tokens=False).input_ids if parts["pre"] else []
    suffix = tok(parts["mid"] + question + parts["post"] + answer_prefix, add_special_tokens=False).input_ids
    return pre + context_ids + suffix, len(pre)


def overhead(tok: Any, question: str, answer_prefix: str = "") -> int:
    """Prompt tokens that are not context."""
    ids, _ = chat_prompt(tok, [], question, answer_prefix)
    return len(ids)


def rng_for(seed: int, *key: Any) -> random.Random:
    return random.Random("/".join(str(k) for k in (seed,) + key))
