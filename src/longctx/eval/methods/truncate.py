"""Truncation: the model sees only the last ``budget`` tokens."""

from __future__ import annotations

import torch

from longctx import compat
from longctx.eval.methods.base import BudgetMethod, register, tail_nll
from longctx.eval.methods.full import Full


@register
class Truncate(BudgetMethod):
    """Plain truncation: each scored chunk sees only the ``budget`` tokens before it."""

    name = kind = "truncate"
    rank = 1

    def __init__(self, model, tok, budget: int, chunk: int = 512, **kw):
        super().__init__(model, tok, budget)
        self.budget, self.chunk = budget, chunk
        self.full = Full(model, tok)

    def label(self):
        return f"truncate-{self.budget}"

    @torch.no_grad()
    def loss(self, ids, tail):
        L = ids.shape[1]
        nll, n = 0.0, 0
        for start in range(L - tail, L, self.chunk):
            end = min(start + self.chunk, L)
            lo = max(0, start - self.budget)
            h = compat.decoder(self.model)(input_ids=ids[:, lo:end].to(self.device)).last_hidden_state[0]
            a, b = start - lo, end - lo
            x, y = tail_nll(self.model, h[a - 1 : b - 1], ids[0, start:end])
            nll, n = nll + x, n + y
        return nll, n

    def generate(self, ids, max_new_tokens):
        return self.full.generate(ids[:, -self.budget :], max_new_tokens)
