"""Methods compared by the harness, all on the same loaded model; one file per method.

* ``full``: the stock model over the whole input.
* ``truncate``: the model sees only the last ``B`` tokens before each scored chunk.
* ``streaming``: StreamingLLM-style, the first ``sink`` tokens plus the most recent tokens,
  ``B`` KV entries in all (keys re-rotated to their positions in the cache).
* ``beacon``: the beacon adapter at a fixed ratio or ``adapt-K``; ``beacon-nomem`` without its memory.

Equal-budget runs take ``B`` from the beacon's own KV count (:func:`beacon_budget`). A new method
is a ``Method`` subclass with a ``kind``, decorated with ``@register``, in a file of its own here.
"""

from __future__ import annotations

from dataclasses import dataclass

from longctx.eval.methods.base import METHODS, Method, Setting, beacon_budget, kinds, register
from longctx.eval.methods.beacon import Beacon, BeaconNoMemory
from longctx.eval.methods.full import Full
from longctx.eval.methods.streaming import Streaming
from longctx.eval.methods.truncate import Truncate

__all__ = ["METHODS", "Beacon", "BeaconNoMemory", "Full", "Method", "MethodSpec", "Setting", "Streaming",
           "Truncate", "beacon_budget", "make_method", "parse_methods", "register"]


@dataclass
class MethodSpec:
    kind: str
    ratio: int | str | None = None  # None: the run's --ratio
    budget: int | None = None
    model: str | None = None  # run on this model (path or hub id) instead of the loaded one
    name: str | None = None  # label in tables and plots (default: the kind)

    @property
    def display(self) -> str:
        return self.name or self.kind


def parse_methods(text: str) -> list[MethodSpec]:
    """``[NAME=]KIND[:ARG][@MODEL]``, comma separated. KIND is full, truncate, streaming, beacon or
    beacon-nomem (the same adapter and windows with the memory emptied whenever a window closes);
    ARG a budget (``truncate:4096``) or ratio (``beacon:16``, ``beacon:adapt-1024``); ``@MODEL`` runs
    the method on another model (e.g. a context-extended one: ``cream=full@runs/smollm2-cream/model``).
    truncate/streaming without a budget take the beacon's budget."""
    out = []
    for part in text.split(","):
        part = part.strip()
        name, eq, rest = part.partition("=")
        if not eq:
            name, rest = "", part
        rest, _, model = rest.partition("@")
        kind, _, arg = rest.partition(":")
        if kind not in METHODS:
            raise ValueError(f"unknown method {kind!r} in {part!r}; use [NAME=]KIND[:ARG][@MODEL] with KIND one of "
                             f"{', '.join(kinds())}")
        extra = {"model": model or None, "name": name.strip() or None}
        if METHODS[kind].arg == "ratio":
            if arg and not arg.startswith("adapt") and not arg.isdigit():
                raise ValueError(f"method {part!r}: the ratio must be an integer or adapt-K")
            out.append(MethodSpec(kind, ratio=arg if arg.startswith("adapt") else (int(arg) if arg else None), **extra))
        else:
            if arg and not arg.isdigit():
                raise ValueError(f"method {part!r}: the budget must be a positive integer")
            out.append(MethodSpec(kind, budget=int(arg) if arg else None, **extra))
    names = [s.display for s in out]
    if len(set(names)) < len(names) and any(s.name or s.model for s in out):
        raise ValueError(f"methods need distinct names, got {names}; prefix them with NAME=")
    return out


def make_method(spec: MethodSpec, model, tok, length: int, window: int, ratio: int, adapter=None,
                memo: dict | None = None) -> Method:
    """The method ``spec`` names, sized for a run of ``length`` tokens with this window and ratio."""
    return METHODS[spec.kind].build(spec, Setting(model, tok, length, window, ratio, adapter, memo))
