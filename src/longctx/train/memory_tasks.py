"""Training sequences whose loss can only be lowered through the beacon memory.

Plain next-token loss on prose barely needs far context, so the cheapest way to lower it is
to silence the beacons. These generators put information in early windows and ask for it
at the end, so the loss falls only if the memory carries it:

* :func:`recall_sequences`: several facts of several types (numbers, codes, names, words)
  stated with varied templates inside real or synthetic filler; the last turn asks for all
  of them; loss on the answers.
* :func:`copy_sequences`: a span of the text is asked back verbatim after a cue (its first
  words) or simply repeated; loss on the repeated span.

None of them uses the evaluation's own passkey sentence, its filler, or RULER's wording.
Every sequence carries ``kind`` (``recall``/``copy``) so the trainer can weigh them.
"""

from __future__ import annotations

import random
import string
from typing import Any

SUBJECT_ADJ = ["red", "northern", "old", "quiet", "silver", "hidden", "eastern", "tall", "broken", "green",
               "wooden", "narrow", "golden", "distant", "frozen", "crooked", "sunlit", "hollow", "iron", "velvet"]
SUBJECT_NOUN = ["warehouse", "lighthouse", "orchard", "library", "harbour", "bridge", "cellar", "tower", "garden",
                "workshop", "chapel", "station", "archive", "farm", "museum", "observatory", "mill", "bakery",
                "school", "hotel"]
PEOPLE_FIRST = ["Alice", "Bruno", "Clara", "Dmitri", "Elena", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kemal",
                "Lena", "Marco", "Nadia", "Oscar", "Priya", "Quentin", "Rosa", "Samir", "Tilda", "Umar", "Vera"]
PEOPLE_LAST = ["Abbott", "Brandt", "Castillo", "Dunmore", "Eriksen", "Fujita", "Galloway", "Holm", "Ivanova",
               "Jaeger", "Kowalski", "Lindqvist", "Moreau", "Nakamura", "Okafor", "Petrov", "Quist", "Rinaldi"]
WORDS = ["amber", "falcon", "willow", "harbor", "cobalt", "lantern", "meadow", "quartz", "ember", "thistle",
         "glacier", "saddle", "pewter", "orchid", "walrus", "cactus", "marble", "violet", "badger", "canyon",
         "tundra", "copper", "juniper", "magnet", "pebble", "raven", "sapphire", "tulip", "zephyr", "lagoon"]
CITIES = ["Lisbon", "Oslo", "Nairobi", "Kyoto", "Lima", "Tallinn", "Perth", "Quebec", "Seville", "Tbilisi",
          "Hanoi", "Bergen", "Cusco", "Dakar", "Gdansk", "Izmir", "Malmo", "Porto", "Riga", "Turin"]

# attribute, value kind
ATTRIBUTES = [("access code", "number"), ("vault number", "number"), ("ticket number", "number"),
              ("serial code", "code"), ("door code", "number"), ("password", "word"), ("codeword", "word"),
              ("keeper", "name"), ("owner", "name"), ("home city", "city"), ("reference", "code"),
              ("account number", "number"), ("colour word", "word"), ("contact", "name")]

STATEMENTS = [
    "The {attr} of the {subj} is {val}.",
    "Remember this: the {attr} of the {subj} is {val}.",
    "For the record, the {subj} has the {attr} {val}.",
    "Important: {val} is the {attr} of the {subj}.",
    "Write it down, the {attr} for the {subj} is {val}.",
    "According to the ledger, the {subj}'s {attr} is {val}.",
    "({subj}) {attr}: {val}.",
]
QUESTIONS = [
    "What is the {attr} of the {subj}?",
    "According to the text above, what is the {attr} of the {subj}?",
    "Which {attr} does the {subj} have?",
    "Tell me the {attr} of the {subj}.",
]
INSTRUCTIONS = ["Answer from the text above.", "Use only the text above.", "Answer briefly.", ""]

SYNTHETIC_SENTENCES = [
    "The train left the station a little after noon.", "A light rain fell on the empty market square.",
    "Nobody remembered who had planted the row of poplars.", "The kettle whistled twice and then fell silent.",
    "Several boats were tied up along the eastern pier.", "The committee postponed its decision until spring.",
    "A dog barked somewhere beyond the hedge.", "Old maps of the valley hung in the corridor.",
    "The shop on the corner sold buttons, thread and string.", "Clouds gathered slowly over the hills.",
    "She folded the letter and put it back in the drawer.", "The road curved gently towards the coast.",
    "Every evening the lamps were lit one by one.", "The bread was still warm when it reached the table.",
    "A narrow path led down through the ferns to the stream.", "The clock in the hall had stopped years ago.",
]


def _value(r: random.Random, kind: str) -> str:
    if kind == "number":
        digits = r.randint(3, 7)
        return str(r.randint(10 ** (digits - 1), 10**digits - 1))
    if kind == "code":
        letters = string.ascii_uppercase
        return "".join(r.choice(letters) for _ in range(2)) + "-" + str(r.randint(10, 9999))
    if kind == "name":
        return f"{r.choice(PEOPLE_FIRST)} {r.choice(PEOPLE_LAST)}"
    if kind == "city":
        return r.choice(CITIES)
    return r.choice(WORDS)


VALUE_KINDS = ("number", "code", "name", "city", "word")


def _facts(r: random.Random, n: int, kinds: tuple[str, ...] | None = None) -> list[dict[str, str]]:
    attributes = [a for a in ATTRIBUTES if kinds is None or a[1] in kinds]
    subjects: set[str] = set()
    out = []
    while len(out) < n:
        subj = f"{r.choice(SUBJECT_ADJ)} {r.choice(SUBJECT_NOUN)}"
        if subj in subjects:
            continue
        subjects.add(subj)
        attr, kind = r.choice(attributes)
        out.append({"subj": subj, "attr": attr, "val": _value(r, kind)})
    return out


def _filler(tok: Any, r: random.Random, texts: list[str], n_tokens: int) -> tuple[list[int], list[int]]:
    """Filler ids of ``n_tokens`` and the sentence starts within it: a slice of a training text
    (most of the time) or shuffled plain sentences."""
    from longctx.synthetic import fill, sentence_tokens

    if texts and r.random() < 0.75:
        text = r.choice(texts)
        start = r.randrange(max(1, len(text) - 6 * n_tokens))
        sents = sentence_tokens(tok, text[start : start + 6 * n_tokens + 200])
    else:
        pool = list(SYNTHETIC_SENTENCES)
        r.shuffle(pool)
        sents = sentence_tokens(tok, " ".join(pool))
    if not sents:
        sents = sentence_tokens(tok, " ".join(SYNTHETIC_SENTENCES))
    return fill(sents, n_tokens, start=r.randrange(len(sents)))


def recall_sequences(tok: Any, n: int, min_length: int, max_length: int, seed: int, texts: list[str],
                     max_facts: int = 6, open_window: int = 0, kinds: list[str] | None = None,
                     loss_on: str = "answer") -> list[dict]:
    """Several facts hidden in filler, all asked for at the end (loss on the answers only).

    ``loss_on="values"`` puts the loss on the value tokens alone: the answer's template words
    ("The access code of the red tower is") can be copied from the question in the open window,
    so on the whole answer most of the gradient goes to text that does not need the memory.

    With ``open_window`` > 0 the facts are placed before the last ``open_window`` tokens of the
    context most of the time (so only the memory holds them), sometimes anywhere. ``kinds``
    restricts the value kinds (:data:`VALUE_KINDS`; default all).
    """
    from longctx.synthetic import chat_prompt, insert_at_depths, overhead

    if kinds is not None:
        unknown = sorted(set(kinds) - set(VALUE_KINDS))
        if unknown or not kinds:
            raise ValueError(f"recall kinds {unknown or kinds} are not a non-empty subset of {VALUE_KINDS}")
    if max_facts < 1:
        raise ValueError(f"recall max_facts must be at least 1, got {max_facts}")
    if loss_on not in RECALL_LOSS:
        raise ValueError(f"recall loss_on must be one of {RECALL_LOSS}, got {loss_on!r}")
    out = []
    for i in range(n):
        r = random.Random(f"{seed}/recall/{i}")
        facts = _facts(r, r.randint(1, max_facts), tuple(kinds) if kinds else None)
        stmts = [tok(" " + r.choice(STATEMENTS).format(**f), add_special_tokens=False).input_ids for f in facts]
        order = list(range(len(facts)))
        r.shuffle(order)
        q_tpl = r.choice(QUESTIONS)
        question = " ".join([r.choice(INSTRUCTIONS)] + [q_tpl.format(**facts[k]) for k in order]).strip()
        answer, answer_labels = _answer(tok, [facts[k] for k in order], loss_on)
        eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
        length = r.randint(min_length, max_length)
        n_ctx = length - overhead(tok, question) - sum(map(len, stmts)) - len(answer) - len(eos)
        n_ctx = max(n_ctx, 16)
        filler, bounds = _filler(tok, r, texts, n_ctx)
        hi = 1.0
        if open_window and r.random() < 0.85 and n_ctx > open_window:
            hi = (n_ctx - open_window) / n_ctx
        ctx, _ = insert_at_depths(filler, bounds, [(r.uniform(0.0, hi), s) for s in stmts])
        ids, _ = chat_prompt(tok, ctx, question)
        eos_labels = eos if loss_on == "answer" else [-100] * len(eos)
        out.append({"input_ids": ids + answer + eos, "labels": [-100] * len(ids) + answer_labels + eos_labels,
                    "source": "recall", "kind": "recall"})
    return out


RECALL_LOSS = ("answer", "values")


def _answer(tok: Any, facts: list[dict[str, str]], loss_on: str) -> tuple[list[int], list[int]]:
    """Answer ids for ``facts`` and their labels: all of them, or only the tokens that overlap
    a value's characters (character offsets of one tokenisation of the whole answer)."""
    text, spans = "", []
    for f in facts:
        text += ("" if not text else " ") + f"The {f['attr']} of the {f['subj']} is "
        spans.append((len(text), len(text) + len(f["val"])))
        text += f["val"] + "."
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=loss_on == "values")
    ids = list(enc.input_ids)
    if loss_on == "answer":
        return ids, ids
    labels = [t if any(a < e and b > s for s, e in spans) else -100 for t, (a, b) in zip(ids, enc.offset_mapping)]
    return ids, labels


def copy_sequences(tok: Any, n: int, min_length: int, max_length: int, seed: int, texts: list[str],
                   span: tuple[int, int] = (24, 96), open_window: int = 0) -> list[dict]:
    """A span of real text asked back verbatim (cued by its first words, as a chat turn) or
    simply repeated at the end of the text; loss on the repeated span (after the cue)."""
    from longctx.synthetic import chat_prompt, overhead

    if not texts:
        raise ValueError("copy sequences need training texts")
    out = []
    for i in range(n):
        r = random.Random(f"{seed}/copy/{i}")
        length = r.randint(min_length, max_length)
        k = r.randint(*span)
        cued = r.random() < 0.6
        question = "Repeat, word for word, the passage of the text above that begins with the words given below."
        n_ctx = length - k - (overhead(tok, question) + 12 if cued else 0)
        n_ctx = max(n_ctx, k + 16)
        text = r.choice(texts)
        start = r.randrange(max(1, len(text) - 6 * n_ctx))
        ctx = tok(text[start : start + 6 * n_ctx + 200], add_special_tokens=False).input_ids[:n_ctx]
        if len(ctx) < k + 16:
            continue
        last = len(ctx) - k
        if open_window and len(ctx) - open_window > k:
            last = len(ctx) - open_window - k  # the span lies before the open window
        s = r.randrange(0, max(1, last))
        piece = ctx[s : s + k]
        if cued:
            cue = tok.decode(piece[:6])
            ids, _ = chat_prompt(tok, ctx, question + "\n" + cue.strip())
            body = piece
            out.append({"input_ids": ids + body, "labels": [-100] * len(ids) + body, "source": "copy", "kind": "copy"})
        else:
            ids = ctx + tok("\n\n", add_special_tokens=False).input_ids
            labels = [-100] * (len(ids) + 4) + piece[4:]
            out.append({"input_ids": ids + piece, "labels": labels, "source": "copy", "kind": "copy"})
    return out
