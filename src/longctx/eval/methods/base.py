"""What every method of the harness is, the registry of kinds, and helpers they share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from longctx import compat
from longctx.beacon.plan import expected_kv_entries

METHODS: dict[str, type[Method]] = {}  # kind -> class


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make ``cls`` available as ``--methods KIND``."""
    METHODS[cls.kind] = cls
    return cls


def kinds() -> tuple[str, ...]:
    """Registered kinds in table order (by ``rank``)."""
    return tuple(sorted(METHODS, key=lambda k: (METHODS[k].rank, k)))


@dataclass
class Setting:
    """What a method may size itself by: the run's length, beacon window and ratio, adapter, memo."""

    model: Any
    tok: Any
    length: int
    window: int
    ratio: int
    adapter: Any = None
    memo: dict | None = None


def beacon_budget(length: int, window: int, ratio: int, sink: int = 0) -> int:
    """KV entries the beacon holds when the last window of a ``length``-token input is full:
    sink + memory of the finished windows + one window of raw tokens and beacons."""
    full_windows = max(length // window - 1, 0)
    return expected_kv_entries(full_windows * window, window, ratio, sink) + window + (window // ratio if ratio else 0)


def greedy(step, first_logits: torch.Tensor, max_new_tokens: int, eos: set[int]) -> list[int]:
    out: list[int] = []
    logits = first_logits
    for _ in range(max_new_tokens):
        tok = int(logits.argmax(-1))
        out.append(tok)
        if tok in eos:
            break
        logits = step(tok)
    return out


def eos_ids(model) -> set[int]:
    e = getattr(model.generation_config, "eos_token_id", None) or compat.text_config(model).eos_token_id
    return set(e if isinstance(e, (list, tuple)) else [e]) if e is not None else set()


def tail_nll(model, hidden: torch.Tensor, targets: torch.Tensor) -> tuple[float, int]:
    logits = compat.lm_head(model)(hidden).float()
    return float(F.cross_entropy(logits, targets.to(logits.device), reduction="sum")), int(targets.numel())


class Method:
    """A way of reading a long input with the loaded model: ``loss`` over a tail, ``generate``.

    ``kind`` names it on the command line; ``arg`` says what ``KIND:ARG`` sets (``"budget"``,
    ``"ratio"`` or ``None``); ``build`` makes one for a run from its parsed spec.
    """

    name = "method"
    kind = "method"
    arg: str | None = None
    rank = 99  # place in tables: baselines first

    @classmethod
    def build(cls, spec: Any, setting: Setting) -> Method:
        return cls(setting.model, setting.tok)

    def __init__(self, model, tok, **kw: Any):
        self.model, self.tok = model, tok
        self.device = compat.embed_tokens(model).weight.device

    def label(self) -> str:
        return self.name

    def loss(self, ids: torch.Tensor, tail: int) -> tuple[float, int]:
        raise NotImplementedError

    def generate(self, ids: torch.Tensor, max_new_tokens: int) -> list[int]:
        raise NotImplementedError

    def close(self) -> None:
        """Undo anything done to the model."""




class BudgetMethod(Method):
    """A baseline held to a KV budget: ``KIND:B``, or the beacon's own budget at the run's length."""

    arg = "budget"

    def __init__(self, model, tok, budget: int, **kw: Any):
        super().__init__(model, tok)
        self.budget = budget

    @classmethod
    def build(cls, spec: Any, setting: Setting) -> Method:
        budget = spec.budget or beacon_budget(setting.length, setting.window, setting.ratio)
        return cls(setting.model, setting.tok, budget=budget)
