"""The beacon adapter at a fixed ratio or ``adapt-K``, and the same without its memory."""

from __future__ import annotations

from typing import Any

import torch

from longctx.beacon import BeaconAdapter, BeaconConfig, BeaconModel
from longctx.beacon.config import TRAIN_RATIOS
from longctx.eval.methods.base import Method, Setting, register


@register
class Beacon(Method):
    name = kind = "beacon"
    rank = 3
    arg = "ratio"
    keeps_memory = True

    @classmethod
    def build(cls, spec, setting: Setting) -> Beacon:
        return cls(setting.model, setting.tok, adapter=setting.adapter, ratio=spec.ratio or setting.ratio,
                   window=setting.window, keep_memory=cls.keeps_memory)

    def __init__(self, model, tok, adapter: BeaconAdapter | None = None, ratio: int | str = 8,
                 window: int | None = None, keep_memory: bool = True, **kw):
        super().__init__(model, tok)
        self.keep_memory = keep_memory
        adapter = adapter or BeaconAdapter.from_model(model, BeaconConfig(window=window or 1024))
        changes: dict[str, Any] = {"window": window}
        if isinstance(ratio, str) and ratio.startswith("adapt"):
            changes.update(ratio_mix=ratio, ratios=list(TRAIN_RATIOS))
        else:
            changes.update(ratio_mix="fixed", ratios=[int(ratio)])
        adapter.config = adapter.config.override(**changes)
        self.ratio = ratio
        self.bm = BeaconModel(model, tok, adapter, keep_memory=keep_memory)

    def label(self):
        return f"beacon-{self.ratio}" if self.keep_memory else f"beacon-nomem-{self.ratio}"

    @torch.no_grad()
    def loss(self, ids, tail):
        self.bm.reset()
        labels = ids.clone()
        labels[:, : ids.shape[1] - tail] = -100
        out = self.bm(ids.to(self.device), labels=labels, logits="none", reduce_loss=False)
        return float(out.loss), out.n_tokens

    def generate(self, ids, max_new_tokens):
        self.bm.reset()
        return self.bm.generate(ids.to(self.device), max_new_tokens=max_new_tokens)[0].tolist()

    def close(self):
        self.bm.detach()


@register
class BeaconNoMemory(Beacon):
    """The same adapter and windows with the memory emptied whenever a window closes (the ablation
    that shows what the memory contributes)."""

    name = kind = "beacon-nomem"
    rank = 4
    keeps_memory = False
