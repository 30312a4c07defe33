"""Tasks over real text: long-text perplexity (docs/eval.md) and LongBench-format jsonl readers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from longctx.eval.tasks.base import Item, chat_prompt


def default_documents() -> list[tuple[str, str]]:
    """Held-out long documents: the novel from its start and from its midpoint."""
    from longctx.data import moby_dick

    text = moby_dick()
    return [("moby-dick-start", text), ("moby-dick-middle", text[len(text) // 2 :])]


def ppl(tok: Any, length: int, documents: list[tuple[str, str]] | None = None, tail: int = 2048) -> list[Item]:
    """Loss on the last ``tail`` tokens of each document's first ``length`` tokens (docs/eval.md).

    Documents shorter than ``length`` are skipped; for short lengths the tail is half the length.
    """
    documents = documents or default_documents()
    tail = min(tail, length // 2)
    items = []
    for name, text in documents:
        ids = tok(text[: length * 8], add_special_tokens=False).input_ids
        if len(ids) < length:
            continue
        items.append(Item("ppl", f"ppl-{length}-{name}", length, "ppl", ids[:length], tail=tail, scorer="ppl",
                          meta={"document": name}))
    return items


LONGBENCH_SCORERS = {"narrativeqa": "f1", "qasper": "f1", "multifieldqa_en": "f1", "hotpotqa": "f1",
                     "2wikimqa": "f1", "musique": "f1", "gov_report": "rouge_l", "qmsum": "rouge_l",
                     "multi_news": "rouge_l", "trec": "contains", "triviaqa": "f1", "samsum": "rouge_l",
                     "passage_count": "exact", "passage_retrieval_en": "contains", "lcc": "rouge_l",
                     "repobench-p": "rouge_l"}


def longbench(tok: Any, path: str, max_length: int, samples: int | None = None) -> list[Item]:
    """Items from a LongBench-format jsonl (``context``, ``input``, ``answers``); the context is
    truncated in the middle to ``max_length`` tokens, as LongBench does."""
    name = Path(path).stem
    scorer = LONGBENCH_SCORERS.get(name, "f1")
    items = []
    for i, line in enumerate(Path(path).read_text().splitlines()):
        if not line.strip():
            continue
        if samples is not None and len(items) >= samples:
            break
        row = json.loads(line)
        ctx = tok(row["context"], add_special_tokens=False).input_ids
        question = f"Question: {row['input']}\nAnswer:" if row.get("input") else "Answer:"
        room = max_length - len(chat_prompt(tok, [], question)[0])
        if len(ctx) > room:
            ctx = ctx[: room // 2] + ctx[len(ctx) - (room - room // 2) :]
        ids, _ = chat_prompt(tok, ctx, question)
        answers = row["answers"] if isinstance(row["answers"], list) else [row["answers"]]
        items.append(Item(f"longbench-{name}", f"longbench-{name}-{max_length}-{i}", max_length, "gen", ids, answers,
                          scorer, 64, meta={"dataset": name}))
    return items
