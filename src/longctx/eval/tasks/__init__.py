"""Evaluation tasks: each builds a list of :class:`Item` for a context length."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from longctx.eval.tasks.base import Item
from longctx.eval.tasks.synthetic import kv, lines, needle, passkey, ruler
from longctx.eval.tasks.text import longbench, ppl

TASKS: dict[str, Callable[..., list[Item]]] = {
    "ppl": lambda tok, L, n, seed, **kw: ppl(tok, L, kw.get("documents")),
    "passkey": lambda tok, L, n, seed, **kw: passkey(tok, L, n, seed, kw.get("depths"), kw.get("before_last", 0)),
    "needle": lambda tok, L, n, seed, **kw: needle(tok, L, n, seed, kw.get("text"), kw.get("depths")),
    "lines": lambda tok, L, n, seed, **kw: lines(tok, L, n, seed, kw.get("positions")),
    "kv": lambda tok, L, n, seed, **kw: kv(tok, L, n, seed, kw.get("positions")),
    **{f"ruler-{t}": partial(lambda t, tok, L, n, seed, **kw: ruler(tok, L, n, seed, t), t)
       for t in ("multikey", "multivalue", "vartrack", "cwe", "fwe")},
    "longbench": lambda tok, L, n, seed, **kw: longbench(tok, kw["data"], L, n),
}


def build(task: str, tok: Any, length: int, samples: int, seed: int, **kw: Any) -> list[Item]:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {sorted(TASKS)}")
    if task == "longbench" and not kw.get("data"):
        raise ValueError("the longbench task needs --data PATH.jsonl (LongBench format: context, input, answers)")
    return TASKS[task](tok, length, samples, seed, **kw)


__all__ = ["TASKS", "Item", "build"]
