"""Generated retrieval tasks: passkey, needle in a real text, RULER-style, lines, key-value."""

from __future__ import annotations

import json
import uuid
from typing import Any

from longctx.eval.tasks.base import Item
from longctx.synthetic import (
    NOUNS,
    PASSKEY_FILLER,
    chat_prompt,
    fill,
    insert_at_depths,
    overhead,
    rng_for,
    sentence_tokens,
)


def passkey(tok: Any, length: int, samples: int, seed: int, depths: list[float] | None = None,
            before_last: int = 0) -> list[Item]:
    """A random 5-digit number hidden at a depth of repeated filler (exact-match scoring).

    ``before_last`` > 0 maps the depths into the part of the prompt before its last
    ``before_last`` tokens, so with that beacon window the key lies only in the compressed
    memory when the question is read.
    """
    question = ("There is a pass key hidden in the text above. What is the pass key? "
                "Answer with the number only.")
    prefix = "The pass key is"
    sents = sentence_tokens(tok, PASSKEY_FILLER)
    items = []
    depths = depths or [round(i / max(samples - 1, 1), 3) for i in range(samples)]
    for s, d in enumerate(depths):
        r = rng_for(seed, "passkey", length, s)
        key = str(r.randint(10000, 99999))
        needle = tok(f" The pass key is {key}. Remember it. {key} is the pass key.", add_special_tokens=False).input_ids
        n_ctx = length - overhead(tok, question, prefix) - len(needle)
        filler, bounds = fill(sents, n_ctx)
        at = d
        if before_last:
            pre = chat_prompt(tok, [], question, prefix)[1]
            room = length - before_last - pre - len(needle) - 24  # 24: snapping to a sentence start
            if room <= 0:
                raise ValueError(f"passkey at {length} tokens has no room before the last {before_last}")
            at = d * room / n_ctx
        ctx, offs = insert_at_depths(filler, bounds, [(at, needle)])
        ids, base = chat_prompt(tok, ctx, question, prefix)
        if before_last and base + offs[0] + len(needle) > len(ids) - before_last:
            raise AssertionError("passkey needle reached the last window")  # guarded by the margin above
        items.append(Item("passkey", f"passkey-{length}-{s}", length, "gen", ids, key, "contains", 12,
                          meta={"depth": d, "needle_offset": base + offs[0], "context_tokens": len(ctx)},
                          answer_prefix=prefix))
    return items


def needle(tok: Any, length: int, samples: int, seed: int, text: str | None = None,
           depths: list[float] | None = None) -> list[Item]:
    """A fact hidden in a real long text (default: Moby-Dick) over depths; ROUGE-L recall / exact."""
    if text is None:
        from longctx.data import moby_dick

        text = moby_dick()
    sents = sentence_tokens(tok, text[: max(200_000, length * 6)])
    question = "What is the secret ingredient of the cook's chowder, according to the text above?"
    prefix = "The secret ingredient of the cook's chowder is"
    depths = depths or [round(i / max(samples - 1, 1), 3) for i in range(samples)]
    items = []
    for s, d in enumerate(depths):
        r = rng_for(seed, "needle", length, s)
        word = r.choice(NOUNS)
        fact = f" The secret ingredient of the cook's chowder is {word}."
        answer = f"The secret ingredient of the cook's chowder is {word}."
        nid = tok(fact, add_special_tokens=False).input_ids
        n_ctx = length - overhead(tok, question, prefix) - len(nid)
        filler, bounds = fill(sents, n_ctx, start=r.randrange(len(sents)))
        ctx, offs = insert_at_depths(filler, bounds, [(d, nid)])
        ids, base = chat_prompt(tok, ctx, question, prefix)
        items.append(Item("needle", f"needle-{length}-{s}", length, "gen", ids, answer, "rouge_l_recall", 24,
                          meta={"depth": d, "word": word, "needle_offset": base + offs[0]}, answer_prefix=prefix))
    return items


def _magic(r) -> str:
    return str(r.randint(1_000_000, 9_999_999))


def ruler(tok: Any, length: int, samples: int, seed: int, subtask: str) -> list[Item]:
    """RULER-style tasks: multikey, multivalue, vartrack, cwe (common words), fwe (frequent words)."""
    sents = sentence_tokens(tok, PASSKEY_FILLER)
    items = []
    for s in range(samples):
        r = rng_for(seed, "ruler", subtask, length, s)
        inserts: list[tuple[float, str]] = []
        if subtask == "multikey":
            keys = [f"{r.choice(NOUNS)}-{r.randint(100, 999)}" for _ in range(4)]
            vals = [_magic(r) for _ in keys]
            inserts = [(r.random(), f" One of the special magic numbers for {k} is: {v}.") for k, v in zip(keys, vals)]
            target = r.randrange(len(keys))
            question = f"What is the special magic number for {keys[target]}? Answer with the number only."
            answer, scorer = vals[target], "contains"
        elif subtask == "multivalue":
            key = f"{r.choice(NOUNS)}-{r.randint(100, 999)}"
            vals = [_magic(r) for _ in range(4)]
            inserts = [(r.random(), f" One of the special magic numbers for {key} is: {v}.") for v in vals]
            question = f"What are all the special magic numbers for {key}? List them."
            answer, scorer = vals, "all_of"
        elif subtask == "vartrack":
            value = str(r.randint(10000, 99999))
            names = [f"V{r.randint(1000, 9999)}" for _ in range(4)]
            chain = [f" VAR {names[0]} = {value}."] + [f" VAR {names[i]} = VAR {names[i - 1]}." for i in range(1, 4)]
            ds = sorted(r.random() for _ in chain)
            inserts = list(zip(ds, chain))
            question = f"Find all variables that are assigned the value {value}. Answer with the variable names."
            answer, scorer = names, "all_of"
        elif subtask in ("cwe", "fwe"):
            vocab = [f"w{r.randint(10000, 99999)}" for _ in range(60)]
            top = vocab[:3] if subtask == "fwe" else vocab[:5]
            weights = [30 if w in top else 3 for w in vocab] if subtask == "cwe" else [1 / (i + 1) for i in range(60)]
            words = []
            budget = length - overhead(tok, "x" * 80) - 16
            while True:
                w = r.choices(vocab, weights)[0]
                words.append(w)
                if len(words) % 64 == 0 and len(tok(" ".join(words), add_special_tokens=False).input_ids) > budget:
                    break
            ctx = tok(" ".join(words), add_special_tokens=False).input_ids[:budget]
            k = len(top)
            question = f"What are the {k} most frequent words in the list above? Answer with the words only."
            ids, _ = chat_prompt(tok, ctx, question)
            items.append(Item(f"ruler-{subtask}", f"ruler-{subtask}-{length}-{s}", length, "gen", ids, top, "all_of",
                              40, meta={}))
            continue
        else:
            raise ValueError(f"unknown RULER subtask {subtask!r}")
        ins = [(d, tok(t, add_special_tokens=False).input_ids) for d, t in inserts]
        n_ctx = length - overhead(tok, question) - sum(len(t) for _, t in ins)
        filler, bounds = fill(sents, n_ctx)
        ctx, _ = insert_at_depths(filler, bounds, ins)
        ids, _ = chat_prompt(tok, ctx, question)
        items.append(Item(f"ruler-{subtask}", f"ruler-{subtask}-{length}-{s}", length, "gen", ids, answer, scorer,
                          40, meta={"depths": [d for d, _ in inserts]}))
    return items


def lines(tok: Any, length: int, samples: int, seed: int, positions: list[float] | None = None) -> list[Item]:
    """LongChat-Lines: many ``line NAME: REGISTER_CONTENT is <N>`` lines; retrieve one by name."""
    positions = positions or [round(i / max(samples - 1, 1), 3) for i in range(samples)]
    items = []
    for s, pos in enumerate(positions):
        r = rng_for(seed, "lines", length, s)
        probe = tok(" line tidy-ocean: REGISTER_CONTENT is <12345>\n", add_special_tokens=False).input_ids
        question = "What is the <REGISTER_CONTENT> in line {name}? Answer with the number only."
        n = max(2, (length - overhead(tok, question.format(name="tidy-ocean-xx")) - 8) // (len(probe) + 1))
        names = [f"{r.choice(NOUNS)}-{r.choice(NOUNS)}-{i}" for i in range(n)]
        values = [r.randint(1000, 49999) for _ in range(n)]
        text = "".join(f"line {a}: REGISTER_CONTENT is <{v}>\n" for a, v in zip(names, values))
        ctx = tok(text, add_special_tokens=False).input_ids
        while len(ctx) + overhead(tok, question.format(name=names[0]), f"The <REGISTER_CONTENT> in line {names[0]} is <") > length and n > 2:
            n -= max(1, n // 50)
            text = "".join(f"line {a}: REGISTER_CONTENT is <{v}>\n" for a, v in zip(names[:n], values[:n]))
            ctx = tok(text, add_special_tokens=False).input_ids
        k = min(n - 1, round(pos * (n - 1)))
        prefix = f"The <REGISTER_CONTENT> in line {names[k]} is <"
        ids, _ = chat_prompt(tok, ctx, question.format(name=names[k]), prefix)
        items.append(Item("lines", f"lines-{length}-{s}", length, "gen", ids, str(values[k]), "contains", 12,
                          meta={"position": k / max(n - 1, 1), "n_lines": n}, answer_prefix=prefix))
    return items


def kv(tok: Any, length: int, samples: int, seed: int, positions: list[float] | None = None) -> list[Item]:
    """JSON key-value retrieval with the queried key at chosen positions ("lost in the middle")."""
    positions = positions or [round(i / max(samples - 1, 1), 3) for i in range(samples)]
    items = []
    for s, pos in enumerate(positions):
        r = rng_for(seed, "kv", length, s)
        pair = len(tok(json.dumps({str(uuid.UUID(int=1)): str(uuid.UUID(int=2))}), add_special_tokens=False).input_ids)
        question = "What is the value of key \"{k}\" in the JSON object above? Answer with the value only."
        n = max(2, (length - overhead(tok, question.format(k=uuid.UUID(int=3)))) // pair)
        while True:
            keys = [str(uuid.UUID(int=r.getrandbits(128), version=4)) for _ in range(n)]
            vals = [str(uuid.UUID(int=r.getrandbits(128), version=4)) for _ in range(n)]
            ctx = tok("JSON data:\n" + json.dumps(dict(zip(keys, vals)), indent=1), add_special_tokens=False).input_ids
            if len(ctx) + overhead(tok, question.format(k=keys[0]), f'The value of key "{keys[0]}" is "') <= length or n <= 2:
                break
            n -= max(1, n // 20)
        k = min(n - 1, round(pos * (n - 1)))
        prefix = f'The value of key "{keys[k]}" is "'
        ids, _ = chat_prompt(tok, ctx, question.format(k=keys[k]), prefix)
        items.append(Item("kv", f"kv-{length}-{s}", length, "gen", ids, vals[k], "contains", 40,
                          meta={"position": k / max(n - 1, 1), "n_pairs": n}, answer_prefix=prefix))
    return items
