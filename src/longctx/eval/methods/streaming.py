"""StreamingLLM-style: the first ``sink`` tokens plus the most recent, ``budget`` KV entries in all
(keys re-rotated to their positions in the cache)."""

from __future__ import annotations

import torch

from longctx import compat
from longctx.eval.methods.base import BudgetMethod, eos_ids, greedy, register, tail_nll


@register
class Streaming(BudgetMethod):
    """Sink + most recent tokens; after every chunk the cache holds exactly ``budget`` entries."""

    name = kind = "streaming"
    rank = 2

    def __init__(self, model, tok, budget: int, sink: int = 4, chunk: int = 512, **kw):
        super().__init__(model, tok, budget)
        if budget <= sink:
            raise ValueError(f"streaming budget {budget} must exceed the sink {sink}")
        self.budget, self.sink, self.chunk = budget, sink, chunk
        self.inv_freq = compat.rotary_inv_freq(model)

    def label(self):
        return f"streaming-{self.budget}"

    def reset(self):
        self.cache = compat.new_cache()
        self.held = 0

    def _evict(self):
        extra = self.held - self.budget
        if extra <= 0:
            return
        for i, (k, v) in enumerate(compat.cache_kv(self.cache)):
            s = self.sink
            recent_k = compat.rope_rotate(k[:, :, s + extra :], -extra, self.inv_freq.to(k.device))
            compat.set_cache_kv(self.cache, i, torch.cat((k[:, :, :s], recent_k), 2),
                                torch.cat((v[:, :, :s], v[:, :, s + extra :]), 2))
        self.held = self.budget

    def _feed(self, ids: torch.Tensor) -> torch.Tensor:
        """Feed ids ``[1, n]`` in chunks; returns hidden states of every fed token."""
        hs = []
        for start in range(0, ids.shape[1], self.chunk):
            part = ids[:, start : start + self.chunk].to(self.device)
            emb = compat.embed_tokens(self.model)(part)
            pos = torch.arange(self.held, self.held + part.shape[1], device=self.device).unsqueeze(0)
            hs.append(compat.run_decoder(self.model, emb, pos, self.cache, None)[0])
            self.held += part.shape[1]
            self._evict()
        return torch.cat(hs)

    @torch.no_grad()
    def loss(self, ids, tail):
        self.reset()
        L = ids.shape[1]
        h = self._feed(ids)
        return tail_nll(self.model, h[L - tail - 1 : L - 1], ids[0, L - tail :])

    @torch.no_grad()
    def generate(self, ids, max_new_tokens):
        self.reset()
        h = self._feed(ids)
        head = compat.lm_head(self.model)
        return greedy(lambda t: head(self._feed(torch.tensor([[t]]))[-1:])[0], head(h[-1:])[0],
                       max_new_tokens, eos_ids(self.model))
