"""Scorers: exact match, substring match, ROUGE-L recall and LongBench-style token F1."""

from __future__ import annotations

import re
import string
from collections import Counter

_PUNCT = set(string.punctuation)


def normalize(text: str) -> str:
    """Lower-case, drop punctuation and articles, collapse whitespace (SQuAD/LongBench style)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answer: str) -> float:
    return float(normalize(prediction) == normalize(answer))


def contains(prediction: str, answer: str) -> float:
    """1 if the normalised answer occurs in the normalised prediction (passkey, needles)."""
    return float(normalize(answer) in normalize(prediction)) if normalize(answer) else 0.0


def f1(prediction: str, answer: str) -> float:
    p, a = normalize(prediction).split(), normalize(answer).split()
    common = Counter(p) & Counter(a)
    same = sum(common.values())
    if not p or not a or same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(a)
    return 2 * precision * recall / (precision + recall)


def _lcs(a: list[str], b: list[str]) -> int:
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l_recall(prediction: str, answer: str) -> float:
    """Longest common subsequence of words over the answer's length."""
    a = normalize(answer).split()
    return _lcs(normalize(prediction).split(), a) / len(a) if a else 0.0


def rouge_l_f(prediction: str, answer: str) -> float:
    p, a = normalize(prediction).split(), normalize(answer).split()
    lcs = _lcs(p, a)
    if not lcs:
        return 0.0
    r, q = lcs / len(a), lcs / len(p)
    return 2 * r * q / (r + q)


def all_of(prediction: str, answers: list[str]) -> float:
    """Fraction of answers found in the prediction (multi-value needles, word extraction)."""
    return sum(contains(prediction, a) for a in answers) / len(answers) if answers else 0.0


SCORERS = {"exact": exact_match, "contains": contains, "f1": f1, "rouge_l_recall": rouge_l_recall,
           "rouge_l": rouge_l_f}
