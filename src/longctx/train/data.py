"""Training data: local text files and folders (.txt, .jsonl), chat data, packing and grouping."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def read_records(paths: list[str]) -> Iterator[dict[str, Any]]:
    """Records ``{"text": ...}`` or ``{"messages": [...]}`` from files and folders (.txt, .jsonl),
    the default texts (``moby-dick``, ``sotu``, ``gutenberg``), or a ``datasets`` name (``hf:NAME[:split]``)."""
    for source in paths:
        if source == "moby-dick":
            from longctx.data import moby_dick

            yield {"text": moby_dick(), "source": source}
        elif source == "sotu":
            from longctx.data import sotu_addresses

            for d in sotu_addresses():
                yield {"text": d["text"], "source": f"sotu/{d['id']}"}
        elif source == "gutenberg":
            from longctx.data import gutenberg_books

            for d in gutenberg_books():
                yield {"text": d["text"], "source": f"gutenberg/{d['id']}"}
        elif source.startswith("hf:"):
            from datasets import load_dataset  # optional, for real users with hub access

            name, _, split = source[3:].partition(":")
            for row in load_dataset(name, split=split or "train"):
                yield dict(row)
        else:
            path = Path(source)
            if not path.exists():
                raise FileNotFoundError(f"no training data at {source}")
            files = sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".jsonl")) if path.is_dir() else [path]
            for f in files:
                if f.suffix == ".txt":
                    yield {"text": f.read_text(encoding="utf-8"), "source": str(f)}
                else:
                    for line in f.read_text(encoding="utf-8").splitlines():
                        if line.strip():
                            yield json.loads(line)


def chat_example(tok: Any, messages: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """Token ids of a rendered conversation and labels that keep only the assistant turns."""
    ids: list[int] = []
    labels: list[int] = []
    rendered = ""
    for i in range(len(messages)):
        text = tok.apply_chat_template(messages[: i + 1], tokenize=False)
        if not text.startswith(rendered):
            raise ValueError("the chat template does not render conversations incrementally")
        piece = tok(text[len(rendered) :], add_special_tokens=False).input_ids
        ids += piece
        labels += piece if messages[i]["role"] == "assistant" else [-100] * len(piece)
        rendered = text
    return ids, labels


def make_sequences(records: Iterator[dict[str, Any]], tok: Any, min_length: int, max_length: int) -> list[dict]:
    """Tokenise (EOS appended to plain text), cut long documents into ``max_length`` pieces and
    drop pieces shorter than ``min_length``. Each sequence: ``input_ids``, ``labels``."""
    eos = tok.eos_token_id
    out = []
    for rec in records:
        if "messages" in rec:
            ids, labels = chat_example(tok, rec["messages"])
        else:
            ids = tok(rec["text"], add_special_tokens=False).input_ids + ([eos] if eos is not None else [])
            labels = list(ids)
        for start in range(0, len(ids), max_length):
            piece, lab = ids[start : start + max_length], labels[start : start + max_length]
            if len(piece) >= min_length and any(x != -100 for x in lab[1:]):
                out.append({"input_ids": piece, "labels": lab, "source": rec.get("source", "")})
    return out


def group_by_windows(lengths: list[int], window: int, batch_size: int, seed: int, world: int = 1) -> list[list[int]]:
    """Batches of sequence indices with the same number of windows, in a seeded order.

    Consecutive runs of ``world`` batches come from the same window count, so the ranks of a
    step (``batches[step * world + rank]``) all do the same number of window steps, which
    sharded (FSDP) layers need: each window step is a collective on every rank.
    """
    buckets: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        buckets.setdefault(-(-n // window), []).append(i)
    rng = random.Random(seed)
    groups = []
    for _, idx in sorted(buckets.items()):
        rng.shuffle(idx)
        batches = [idx[i : i + batch_size] for i in range(0, len(idx) - batch_size + 1, batch_size)]
        groups += [batches[i : i + world] for i in range(0, len(batches) - world + 1, world)]
    rng.shuffle(groups)
    return [b for g in groups for b in g]


RETRIEVAL_TEMPLATES = [  # (needle, question, answer prefix); {k} is the value, {n} a name
    (" The pass key is {k}. Remember it. {k} is the pass key.",
     "There is a pass key hidden in the text above. What is the pass key? Answer with the number only.",
     "The pass key is"),
    (" The special magic number for {n} is {k}.",
     "What is the special magic number for {n} mentioned in the text above?",
     "The special magic number for {n} is"),
    (" Note: the code for the {n} locker is {k}.",
     "What is the code for the {n} locker? Answer with the number only.",
     "The code for the {n} locker is"),
]


def retrieval_sequences(tok: Any, n: int, min_length: int, max_length: int, seed: int,
                        texts: list[str]) -> list[dict]:
    """Synthetic retrieval examples: a fact hidden at a random depth of filler (repeated plain
    sentences or a slice of ``texts``), a question at the end as a chat turn, loss on the answer
    only. Lengths are drawn in ``[min_length, max_length]`` so the fact mostly lies outside the
    last window and can only be recalled through the compressed memory."""
    from longctx import synthetic as syn

    plain = syn.sentence_tokens(tok, syn.PASSKEY_FILLER)
    out = []
    for i in range(n):
        r = syn.rng_for(seed, "retrieval", i)
        needle_t, question_t, prefix_t = r.choice(RETRIEVAL_TEMPLATES)
        name, key = r.choice(syn.NOUNS), str(r.randint(10000, 99999))
        needle = tok(needle_t.format(k=key, n=name), add_special_tokens=False).input_ids
        question, prefix = question_t.format(n=name), prefix_t.format(n=name)
        answer = tok(f" {key}.", add_special_tokens=False).input_ids
        length = r.randint(min_length, max_length)
        n_ctx = length - syn.overhead(tok, question, prefix) - len(needle) - len(answer)
        if texts and r.random() < 0.5:
            text = r.choice(texts)
            start = r.randrange(max(1, len(text) - 8 * n_ctx))
            sents = syn.sentence_tokens(tok, text[start : start + 8 * n_ctx])
        else:
            sents = plain
        filler, bounds = syn.fill(sents, n_ctx, start=r.randrange(len(sents)))
        ctx, _ = syn.insert_at_depths(filler, bounds, [(r.uniform(0.0, 0.9), needle)])
        ids, _ = syn.chat_prompt(tok, ctx, question, prefix)
        out.append({"input_ids": ids + answer, "labels": [-100] * len(ids) + answer, "source": "retrieval"})
    return out
