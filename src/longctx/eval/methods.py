"""Methods compared by the harness, all on the same loaded model.

* ``full``: the stock model over the whole input.
* ``truncate``: the model sees only the last ``B`` tokens before each scored chunk.
* ``streaming``: StreamingLLM-style, the first ``sink`` tokens plus the most recent tokens,
  ``B`` KV entries in all (keys re-rotated to their positions in the cache).
* ``beacon``: the beacon adapter at a fixed ratio or ``adapt-K``.

Equal-budget runs take ``B`` from the beacon's own KV count (:func:`beacon_budget`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from longctx import compat
from longctx.beacon import BeaconAdapter, BeaconConfig, BeaconModel
from longctx.beacon.plan import expected_kv_entries


def beacon_budget(length: int, window: int, ratio: int, sink: int = 0) -> int:
    """KV entries the beacon holds when the last window of a ``length``-token input is full:
    sink + memory of the finished windows + one window of raw tokens and beacons."""
    full_windows = max(length // window - 1, 0)
    return expected_kv_entries(full_windows * window, window, ratio, sink) + window + (window // ratio if ratio else 0)


def _greedy(step, first_logits: torch.Tensor, max_new_tokens: int, eos: set[int]) -> list[int]:
    out: list[int] = []
    logits = first_logits
    for _ in range(max_new_tokens):
        tok = int(logits.argmax(-1))
        out.append(tok)
        if tok in eos:
            break
        logits = step(tok)
    return out


def _eos(model) -> set[int]:
    e = getattr(model.generation_config, "eos_token_id", None) or compat.text_config(model).eos_token_id
    return set(e if isinstance(e, (list, tuple)) else [e]) if e is not None else set()


def _tail_nll(model, hidden: torch.Tensor, targets: torch.Tensor) -> tuple[float, int]:
    logits = compat.lm_head(model)(hidden).float()
    return float(F.cross_entropy(logits, targets.to(logits.device), reduction="sum")), int(targets.numel())


class Method:
    name = "method"

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


class Full(Method):
    """The stock model over the whole input. Per-token losses of the last input are kept, so a
    shorter prefix of it (perplexity at 16K after 32K of the same document) costs no forward:
    with causal attention its losses are exactly those of the longer pass. Pass the same ``memo``
    dict to the instances that should share them (the harness does, per method and run)."""

    name = "full"

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
        cache = out.cache if hasattr(out, "cache") else out.past_key_values

        def step(tok):
            o = self.model(input_ids=torch.tensor([[tok]], device=self.device), cache=cache, use_cache=True)
            return o.logits[0, -1]

        return _greedy(step, out.logits[0, -1], max_new_tokens, _eos(self.model))


class Truncate(Method):
    """Plain truncation: each scored chunk sees only the ``budget`` tokens before it."""

    name = "truncate"

    def __init__(self, model, tok, budget: int, chunk: int = 512, **kw):
        super().__init__(model, tok)
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
            x, y = _tail_nll(self.model, h[a - 1 : b - 1], ids[0, start:end])
            nll, n = nll + x, n + y
        return nll, n

    def generate(self, ids, max_new_tokens):
        return self.full.generate(ids[:, -self.budget :], max_new_tokens)


class Streaming(Method):
    """Sink + most recent tokens; after every chunk the cache holds exactly ``budget`` entries."""

    name = "streaming"

    def __init__(self, model, tok, budget: int, sink: int = 4, chunk: int = 512, **kw):
        super().__init__(model, tok)
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
            recent_k = compat.rope_rotate(k[:, :, s + extra :], torch.full((k.shape[0], k.shape[2] - s - extra), -extra,
                                                                            dtype=torch.long), self.inv_freq.to(k.device))
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
        return _tail_nll(self.model, h[L - tail - 1 : L - 1], ids[0, L - tail :])

    @torch.no_grad()
    def generate(self, ids, max_new_tokens):
        self.reset()
        h = self._feed(ids)
        head = compat.lm_head(self.model)
        return _greedy(lambda t: head(self._feed(torch.tensor([[t]]))[-1:])[0], head(h[-1:])[0],
                       max_new_tokens, _eos(self.model))


class Beacon(Method):
    name = "beacon"

    def __init__(self, model, tok, adapter: BeaconAdapter | None = None, ratio: int | str = 8,
                 window: int | None = None, keep_memory: bool = True, **kw):
        super().__init__(model, tok)
        self.keep_memory = keep_memory
        adapter = adapter or BeaconAdapter.from_model(model, BeaconConfig(window=window or 1024))
        changes: dict[str, Any] = {"window": window}
        if isinstance(ratio, str) and ratio.startswith("adapt"):
            changes.update(ratio_mix=ratio, ratios=[2, 4, 8, 16, 32])
        else:
            changes.update(ratio_mix="fixed", ratios=[int(ratio)])
        adapter.config = adapter.config.replace(**changes)
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


KINDS = ("full", "truncate", "streaming", "beacon", "beacon-nomem")


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
        if kind not in KINDS:
            raise ValueError(f"unknown method {kind!r} in {part!r}; use [NAME=]KIND[:ARG][@MODEL] with KIND one of "
                             f"{', '.join(KINDS)}")
        extra = {"model": model or None, "name": name.strip() or None}
        if kind in ("beacon", "beacon-nomem"):
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
    if spec.kind == "full":
        return Full(model, tok, memo=memo)
    if spec.kind in ("beacon", "beacon-nomem"):
        return Beacon(model, tok, adapter=adapter, ratio=spec.ratio or ratio, window=window,
                      keep_memory=spec.kind == "beacon")
    budget = spec.budget or beacon_budget(length, window, ratio)
    return (Truncate if spec.kind == "truncate" else Streaming)(model, tok, budget=budget)
