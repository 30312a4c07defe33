"""Full attention: the stock model over the whole input."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from longctx import compat
from longctx.eval.methods.base import Method, Setting, eos_ids, greedy, register


@register
class Full(Method):
    """The stock model over the whole input. Per-token losses of the last input are kept, so a
    shorter prefix of it (perplexity at 16K after 32K of the same document) costs no forward:
    with causal attention its losses are exactly those of the longer pass. Pass the same ``memo``
    dict to the instances that should share them (the harness does, per method and run)."""

    name = kind = "full"
    rank = 0

    @classmethod
    def build(cls, spec, setting: Setting) -> Full:
        return cls(setting.model, setting.tok, memo=setting.memo)

    def __init__(self, model, tok, memo: dict | None = None, **kw):
        super().__init__(model, tok)
        self.memo = {} if memo is None else memo

    @torch.no_grad()
    def loss(self, ids, tail):
        L = ids.shape[1]
        seen = self.memo.get("nll")
        if seen is None or seen[0].shape[1] < L or not torch.equal(seen[0][:, :L], ids):
            h = compat.decoder(self.model)(input_ids=ids.to(self.device)).last_hidden_state[0]
            head = compat.lm_head(self.model)
            nll = torch.cat([F.cross_entropy(head(h[i : min(i + 2048, L - 1)]).float(),
                                             ids[0, i + 1 : i + 2049].to(h.device), reduction="none").cpu()
                             for i in range(0, L - 1, 2048)])
            seen = self.memo["nll"] = (ids.clone(), nll)
        return float(seen[1][L - tail - 1 : L - 1].double().sum()), tail

    @torch.no_grad()
    def generate(self, ids, max_new_tokens):
        out = self.model(input_ids=ids.to(self.device), use_cache=True, logits_to_keep=1)
        cache = compat.output_cache(out)

        def step(tok):
            o = self.model(input_ids=torch.tensor([[tok]], device=self.device), cache=cache, use_cache=True)
            return o.logits[0, -1]

        return greedy(step, out.logits[0, -1], max_new_tokens, eos_ids(self.model))
