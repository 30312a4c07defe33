"""BeaconModel: stream a stock causal LM through any length with beacon compression."""

from __future__ import annotations

import copy
import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from longctx import compat
from longctx.beacon.adapter import BeaconAdapter
from longctx.beacon.config import BeaconConfig
from longctx.beacon.memory import BeaconMemory
from longctx.beacon.plan import (
    BEACON,
    RAW,
    RatioChooser,
    Segment,
    compaction_keep,
    entry_positions,
    next_segment,
    window_mask,
)
from longctx.chat import chat_parts
from longctx.safefiles import module_fingerprint, tensor_checksum


@dataclass
class Step:
    """What the attention function (and a checkpoint replay) needs to know about one forward."""

    mask: torch.Tensor | None = None
    rows: tuple[torch.Tensor, torch.Tensor] | None = None  # (raw, beacon) flat row indices
    uid: int | None = None  # set when activation checkpointing may replay this step


@dataclass
class BeaconOutput:
    logits: torch.Tensor | None
    loss: torch.Tensor | None
    n_tokens: int  # valid label tokens counted in the loss
    loss_sum: torch.Tensor | None = None


class BeaconModel(nn.Module):
    """A causal LM with a beacon adapter attached.

    ``forward`` streams raw tokens window by window, inserting beacons, compacting closed
    windows into the memory (kept until :meth:`reset`), and returns logits/loss for raw
    tokens only. ``generate`` decodes with the same memory.
    """

    def __init__(self, model: nn.Module, tokenizer: Any = None, adapter: BeaconAdapter | None = None,
                 config: BeaconConfig | None = None, keep_memory: bool = True):
        """``keep_memory=False`` empties the memory whenever a window closes (only the sink
        survives): the same adapter and windows without memory, the ablation that shows what
        the memory contributes."""
        super().__init__()
        self.keep_memory = keep_memory
        if adapter is None:
            adapter = BeaconAdapter.from_model(model, config or BeaconConfig())
        elif config is not None and config != adapter.config:
            adapter.config = config
        self.model = model
        self.tokenizer = tokenizer
        self.adapter = adapter
        adapter.attach(model)
        self.inv_freq = compat.rotary_inv_freq(model)
        self.memory: BeaconMemory | None = None
        self._sequences = 0
        self._checkpointed: list = []
        self._step_ids = itertools.count()
        self.stats: dict[str, float] = {}

    # ------------------------------------------------------------------ basics
    @property
    def config(self) -> BeaconConfig:
        return self.adapter.config

    def set_config(self, **changes: Any) -> None:
        """Change inference settings (ratios, mix, ...); resets the memory."""
        self.adapter.config = self.config.replace(**changes)
        self.reset()

    @property
    def device(self) -> torch.device:
        return compat.embed_tokens(self.model).weight.device

    def set_checkpointing(self, enabled: bool = True) -> None:
        """Non-reentrant activation checkpointing of every decoder layer (training).

        Only each layer's input is kept per window; the layer is recomputed in backward, with
        the window's beacon routing restored and the cache update replayed without appending.
        """
        if enabled and not self._checkpointed:
            self._checkpointed = compat.set_layer_checkpointing(self.model, self._route)
        elif not enabled and self._checkpointed:
            compat.restore_layers(self._checkpointed)
            self._checkpointed = []

    def _route(self, step: Step | None) -> None:
        rows = step.rows if step is not None else None
        self.adapter.router.set(*(rows or (None, None)))

    def detach(self) -> nn.Module:
        """Remove the adapter; returns the model exactly as it was."""
        self.set_checkpointing(False)
        self.adapter.detach()
        self.memory = None
        return self.model

    def freeze_base(self) -> int:
        """Freeze every base-model weight; only beacon parameters train. Returns their count."""
        mine = {id(p) for p in self.adapter.parameters()}
        for p in self.model.parameters():
            if id(p) not in mine:
                p.requires_grad_(False)
        for p in self.adapter.parameters():
            p.requires_grad_(True)
        return self.adapter.num_parameters()

    def reset(self, sequence: int | None = None) -> None:
        """Forget the memory. The next call starts a new sequence, numbered ``sequence`` if
        given (random ratio draws depend on the seed, the sequence number and the window)."""
        if self.memory is not None:
            self._sequences = max(self._sequences, self.memory.sequence + 1)
        if sequence is not None:
            self._sequences = sequence
        self.memory = None

    def kv_entries(self) -> list[int]:
        """Per sample, the KV entries held in each layer's cache: sink + beacon memory + the
        raw tokens of the open window (the number full attention would hold is ``tokens_read``)."""
        return self.memory.kv_entries() if self.memory else []

    def _warn_positions(self) -> None:
        """Warn once when the memory plus the open window run past the model's positions."""
        limit = compat.max_positions(self.model)
        used = max((s.entries for s in self.memory.samples), default=0) if self.memory else 0
        if used > limit and not getattr(self, "_warned_positions", False):
            import warnings

            self._warned_positions = True
            warnings.warn(f"the compressed input uses {used} positions, more than the model's {limit} "
                          "(max_position_embeddings): quality will drop; use a higher ratio or ratio_mix "
                          "'adapt-K'", stacklevel=3)

    def tokens_read(self) -> list[int]:
        return [s.raw_total for s in self.memory.samples] if self.memory else []

    # ------------------------------------------------------------------ streaming forward
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, logits: str = "all", progress: bool = False,
                reduce_loss: bool = True, hold: bool = False) -> BeaconOutput:
        """Feed ``input_ids`` ``[B, L]`` (left-padded where ``attention_mask`` is 0).

        logits: ``"all"`` (every raw token, ``[B, L, V]``), ``"last"`` (``[B, 1, V]``) or
        ``"none"``. labels: aligned with input_ids (-100 = ignore), shifted inside.
        hold: the window open at the end of this input stays open (later tokens overflow it
        raw) until :meth:`release_hold`, so the input's tail is never compressed before it is used.
        """
        if logits not in ("all", "last", "none"):
            raise ValueError(f"logits must be 'all', 'last' or 'none', got {logits!r}")
        if input_ids.dim() == 1:
            input_ids = input_ids.unsqueeze(0)
        lengths = self._lengths(input_ids, attention_mask)
        B, L = input_ids.shape
        if self.memory is None:
            self.memory = BeaconMemory(B, self._sequences)
            self._sequences += 1
            chooser = RatioChooser(self.config, compat.max_positions(self.model))
            for s, n in zip(self.memory.samples, lengths):
                s.instance_ratio = chooser.instance_ratio(self.memory.sequence, n)
        elif self.memory.batch != B:
            raise ValueError(f"the memory holds {self.memory.batch} samples but the input has {B}; call reset()")
        mem = self.memory
        chooser = RatioChooser(self.config)
        cursor = [L - n for n in lengths]
        ids_cpu = input_ids.cpu()
        head = compat.lm_head(self.model)
        want_all, want_last = logits == "all", logits == "last"
        all_logits = [[] for _ in range(B)]
        last_hidden: list[torch.Tensor | None] = [None] * B
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float32)
        n_loss = 0
        bar = tqdm(total=sum(lengths), unit="tok", desc="reading", disable=not progress, leave=False)
        start = time.perf_counter()
        while any(c < L for c in cursor):
            segs: list[Segment | None] = []
            for b, st in enumerate(mem.samples):
                if cursor[b] >= L:
                    segs.append(None)
                    continue
                if st.ratio is None:
                    st.ratio = chooser.window_ratio(mem.sequence, st.windows_done, st.instance_ratio)
                held = st.hold or (hold and L - cursor[b] <= self.config.window - st.raw_in_window)
                segs.append(next_segment(self.config, st.ratio, st.raw_in_window, L - cursor[b], hold=held))
            before = [st.raw_in_window for st in mem.samples]
            hidden, raw_rows = self._step(segs, ids_cpu, cursor)
            w = self.config.window
            for b, (seg, st) in enumerate(zip(segs, mem.samples)):
                if seg is not None and st.raw_in_window > w:  # raw tokens past a held window's end
                    new_over = st.raw_in_window - max(before[b], w)
                    st.overflow += ids_cpu[b, cursor[b] + seg.n_raw - new_over : cursor[b] + seg.n_raw].tolist()
            for b, seg in enumerate(segs):
                if seg is None or seg.n_raw == 0:
                    continue
                h = hidden[b].index_select(0, raw_rows[b].to(hidden.device)).to(head.weight.device)
                lo, hi = cursor[b], cursor[b] + seg.n_raw
                if labels is not None:
                    tgt = labels[b, lo + 1 : hi + 1].to(h.device)
                    if tgt.shape[0] < h.shape[0]:
                        tgt = F.pad(tgt, (0, h.shape[0] - tgt.shape[0]), value=-100)
                    keep = tgt != -100
                    if keep.any():
                        lg = head(h[keep]).float()
                        loss_sum = loss_sum + F.cross_entropy(lg, tgt[keep], reduction="sum").to(loss_sum.device)
                        n_loss += int(keep.sum())
                if want_all:
                    all_logits[b].append(head(h))
                elif want_last:
                    last_hidden[b] = h[-1:]
                cursor[b] = hi
            bar.update(sum(s.n_raw for s in segs if s is not None))
        bar.close()
        if hold:
            for st in mem.samples:
                st.hold = True
        self._warn_positions()
        self.stats = {"seconds": time.perf_counter() - start, "tokens": float(sum(lengths))}
        out_logits = None
        if want_all:
            V = head.weight.shape[0]
            out_logits = torch.zeros(B, L, V, dtype=head.weight.dtype, device=self.device)
            for b in range(B):
                if all_logits[b]:
                    out_logits[b, L - lengths[b] :] = torch.cat(all_logits[b]).to(self.device)
        elif want_last:
            rows = [h if h is not None else torch.zeros(1, head.weight.shape[1], dtype=head.weight.dtype,
                                                        device=self.device) for h in last_hidden]
            out_logits = head(torch.stack([r.to(self.device) for r in rows]))
        loss = None
        if labels is not None:
            loss = loss_sum / max(n_loss, 1) if reduce_loss else loss_sum
        return BeaconOutput(out_logits, loss, n_loss, loss_sum if labels is not None else None)

    def _lengths(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> list[int]:
        if input_ids.dtype not in (torch.long, torch.int, torch.int16, torch.uint8):
            raise ValueError(f"input_ids must be integer token ids, got dtype {input_ids.dtype}")
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
        B, L = input_ids.shape
        vocab = compat.embed_tokens(self.model).weight.shape[0]
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab):
            raise ValueError(f"input_ids hold ids outside the vocabulary [0, {vocab}): "
                             f"min {int(input_ids.min())}, max {int(input_ids.max())}")
        if attention_mask is None:
            return [L] * B
        if tuple(attention_mask.shape) != (B, L):
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids {(B, L)}")
        m = attention_mask.bool().cpu()
        lengths = m.sum(1).tolist()
        for b, n in enumerate(lengths):
            if not m[b, L - n :].all():
                raise ValueError("attention_mask must be left-padded (ones at the end of each row)")
        return lengths

    def _step(self, segs: list[Segment | None], ids: torch.Tensor, cursor: list[int]):
        """One forward over every sample's next segment; then compaction where windows close."""
        cfg, mem = self.config, self.memory
        B = len(segs)
        R = max(s.n_rows if s else 0 for s in segs)
        S = mem.length
        n_prev = mem.kv_entries()
        row_ids = torch.zeros(B, R, dtype=torch.long)
        is_bcn = torch.zeros(B, R, dtype=torch.bool)
        pos = torch.zeros(B, R, dtype=torch.long)
        raw_rows = []
        pads = []
        for b, (seg, st) in enumerate(zip(segs, mem.samples)):
            n = seg.n_rows if seg else 0
            pads.append(R - n)
            if not n:
                raw_rows.append(torch.empty(0, dtype=torch.long))
                continue
            kind = torch.tensor(seg.kind, dtype=torch.long)
            raw_pos = (kind == RAW).nonzero().flatten() + (R - n)
            row_ids[b, raw_pos] = ids[b, cursor[b] : cursor[b] + seg.n_raw]
            is_bcn[b, R - n :] = kind == BEACON
            pos[b, R - n :] = torch.tensor(entry_positions(cfg, st.ratio, st.fixed, seg.kind, seg.idx))
            raw_rows.append(raw_pos)
        padded = any(pads) or (S > 0 and mem.padded())
        mask = self._mask(segs, S, R, n_prev) if (padded or cfg.needs_mask) else None
        dev = self.device
        embeds = compat.embed_tokens(self.model)(row_ids.to(dev))
        flat_bcn = is_bcn.flatten().nonzero().flatten()
        step = Step(mask, uid=next(self._step_ids) if self._checkpointed and torch.is_grad_enabled() else None)
        if flat_bcn.numel():
            embeds = embeds.index_put((is_bcn.to(dev),), self.adapter.embed.to(embeds.dtype).expand(int(flat_bcn.numel()), -1))
            step.rows = ((~is_bcn).flatten().nonzero().flatten().to(dev), flat_bcn.to(dev))
        self._route(step)
        try:
            hidden = compat.run_decoder(self.model, embeds, pos.to(dev), mem.cache, step)
        finally:
            self.adapter.router.set(None, None)
        # bookkeeping, then compaction / removal of padding
        closes = False
        for seg, st in zip(segs, mem.samples):
            if seg:
                st.kind.extend(seg.kind)
                st.idx.extend(seg.idx)
                st.raw_in_window += seg.n_raw
                st.raw_total += seg.n_raw
                closes = closes or seg.closes
        if closes or padded:
            self._compact(segs, S, R, n_prev, pads)
        return hidden, raw_rows

    def _compact(self, segs, S: int, R: int, n_prev: list[int], pads: list[int]) -> None:
        mem, cfg = self.memory, self.config
        keep_all, delta_all = [], []
        for b, (seg, st) in enumerate(zip(segs, mem.samples)):
            # cache indices of this sample's entries, in order: previous entries, then new rows
            where = list(range(S - n_prev[b], S)) + list(range(S + pads[b], S + R))
            if seg is not None and seg.closes:
                old = entry_positions(cfg, st.ratio, st.fixed, st.kind, st.idx)
                kept = compaction_keep(cfg.sink, st.windows_done == 0, st.ratio, st.kind, st.idx)
                head = st.fixed  # sink + memory entries ahead of the window
                if not self.keep_memory:  # forget the memory: only the sink survives
                    head = min(st.fixed, cfg.sink)
                    n_sink = sum(1 for t, i in zip(st.kind, st.idx) if t == RAW and i <= cfg.sink)
                    kept = kept[:n_sink] if st.windows_done == 0 else []
                keep = where[:head] + [where[st.fixed + e] for e in kept]
                delta = [0] * head + [head + r - old[e] for r, e in enumerate(kept)]
                st.fixed = head + len(kept)
                st.kind, st.idx = [], []
                st.raw_in_window = 0
                st.windows_done += 1
                st.ratio = None
            else:
                keep, delta = where, [0] * len(where)
            keep_all.append(keep)
            delta_all.append(delta)
        mem.repack(keep_all, delta_all, self.inv_freq)

    def _mask(self, segs, S: int, R: int, n_prev: list[int]) -> torch.Tensor:
        """Explicit bool mask ``[B, 1, R, S + R]`` for padded batches and non-default schemes."""
        cfg, mem = self.config, self.memory
        B = len(segs)
        mask = torch.zeros(B, 1, R, S + R, dtype=torch.bool)
        for b, (seg, st) in enumerate(zip(segs, mem.samples)):
            n = seg.n_rows if seg else 0
            pad = R - n
            mask[b, 0, torch.arange(pad), S + torch.arange(pad)] = True  # padding rows see themselves
            if not n:
                continue
            q = slice(pad, R)
            first = S - n_prev[b]
            mask[b, 0, q, first : first + st.fixed] = True
            keys_kind = st.kind + list(seg.kind)
            keys_idx = st.idx + list(seg.idx)
            wm = window_mask(cfg, st.ratio, seg.kind, seg.idx, keys_kind, keys_idx)
            n_open = len(st.kind)
            mask[b, 0, q, S - n_open : S] = wm[:, :n_open]
            mask[b, 0, q, S + pad :] = wm[:, n_open:]
        return mask.to(self.device)

    @torch.no_grad()
    def release_hold(self) -> None:
        """End hold mode: a held window that is full closes exactly as it would have without
        the hold, and the tokens that overflowed it are read again, so the memory equals the
        one a plain forward over the same tokens builds."""
        mem = self.memory
        if mem is None or not any(st.hold for st in mem.samples):
            return
        w, B = self.config.window, mem.batch
        overflow = [list(st.overflow) for st in mem.samples]
        S, n_prev = mem.length, mem.kv_entries()
        keep = []
        for b, st in enumerate(mem.samples):
            n = len(overflow[b])  # the overflow rows are the last rows of the sample, all raw
            keep.append(list(range(S - n_prev[b], S - n)))
            if n:
                st.kind, st.idx = st.kind[:-n], st.idx[:-n]
                st.raw_in_window -= n
                st.raw_total -= n
            st.hold, st.overflow = False, []
        if any(overflow):
            mem.repack(keep, [[0] * len(k) for k in keep], self.inv_freq)
        segs: list[Segment | None] = []
        for st in mem.samples:
            full = st.raw_in_window == w
            beacons = w // st.ratio if full and st.ratio and self.config.placement == "append" else 0
            segs.append(Segment(0, (BEACON,) * beacons, tuple(range(1, beacons + 1)), True) if full else None)
        if any(s is not None for s in segs):
            if any(s is not None and s.n_rows for s in segs):  # append placement: the beacons still run
                self._step(segs, torch.zeros(B, 0, dtype=torch.long), [0] * B)
            else:
                self._compact(segs, mem.length, 0, mem.kv_entries(), [0] * B)
        if any(overflow):
            n = max(map(len, overflow))
            ids = torch.zeros(B, n, dtype=torch.long)
            mask = torch.zeros(B, n, dtype=torch.long)
            for b, o in enumerate(overflow):
                if o:
                    ids[b, n - len(o) :] = torch.tensor(o)
                    mask[b, n - len(o) :] = 1
            self.forward(ids.to(self.device), attention_mask=mask.to(self.device), logits="none")

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                 progress: bool = False, raw_tail: bool = True, return_dict_in_generate: bool = False,
                 **kwargs: Any) -> Any:
        """Read ``input_ids`` into the memory and decode with transformers' own ``generate``.

        Every option of ``model.generate`` works as in stock transformers (``generation_config``,
        the model's ``generation_config.json``, ``max_new_tokens``, sampling, logits processors
        such as ``repetition_penalty``, ``stop_strings`` (with ``tokenizer=``), streamers,
        ``output_scores``/``output_logits``), with the beacon memory as the cache. Returns the new
        tokens ``[B, n]``; with ``return_dict_in_generate=True`` the stock output object (its
        ``sequences`` hold prompt + new tokens, as in transformers). Stopping: the model's EOS
        ids by default; ``eos_token_id=[]`` switches EOS stopping off. Every generated token is
        fed back into the memory, so a later call continues the same conversation.

        raw_tail: the window open at the end of the prompt is not compressed while the answer
        is decoded (the question is read raw, even when the prompt ends exactly at a window
        boundary); afterwards the memory is rebuilt as the reference would have built it.
        ``False`` is the reference procedure (windows close as soon as they are full).
        """
        if input_ids.dim() == 1:
            input_ids = input_ids.unsqueeze(0)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        times = {"prefill_s": 0.0, "decode_s": 0.0}
        calls = [0]

        def step(ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
            t = time.perf_counter()
            first = calls[0] == 0
            calls[0] += 1
            if first:
                out = self.forward(ids, mask, logits="last", progress=progress, hold=raw_tail).logits
            else:
                out = self.forward(ids, logits="last").logits
            times["prefill_s" if first else "decode_s"] += time.perf_counter() - t
            return out

        gc = kwargs.pop("generation_config", None)
        ours = {"use_cache": True, "return_dict_in_generate": return_dict_in_generate}
        if gc is not None:  # our settings go into (a copy of) the user's config, not beside it
            gc = copy.deepcopy(gc)
            gc.update(**ours)
            if gc.pad_token_id is None:
                gc.pad_token_id = self._pad_id(self._eos_ids(gc.eos_token_id))
            kwargs["generation_config"] = gc
        else:
            kwargs.update(ours)
            kwargs.setdefault("pad_token_id", self._pad_id(self._eos_ids(kwargs.get("eos_token_id"))))
        stops = kwargs.get("stop_strings") or getattr(gc, "stop_strings", None)
        if self.tokenizer is not None and stops:
            kwargs.setdefault("tokenizer", self.tokenizer)
        with compat.stream_generation(self.model, step):
            res = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        sequences = res.sequences if return_dict_in_generate else res
        new = sequences[:, input_ids.shape[1]:]
        if new.shape[1]:
            t = time.perf_counter()
            self.forward(new[:, -1:], logits="none")  # the loop never feeds its last token back
            times["decode_s"] += time.perf_counter() - t
        self.release_hold()
        self.stats = {**times, "new_tokens": float(new.shape[1]), "prompt_tokens": float(input_ids.shape[1])}
        return res if return_dict_in_generate else new

    def _eos_ids(self, eos_token_id) -> list[int]:
        if eos_token_id is None:
            gc = getattr(self.model, "generation_config", None)
            eos_token_id = getattr(gc, "eos_token_id", None) or compat.text_config(self.model).eos_token_id
        if eos_token_id is None:
            return []
        return [int(eos_token_id)] if isinstance(eos_token_id, int) else [int(e) for e in eos_token_id]

    def _pad_id(self, eos: list[int]) -> int:
        pad = getattr(self.tokenizer, "pad_token_id", None) if self.tokenizer is not None else None
        return int(pad if pad is not None else (eos[0] if eos else 0))

    # ------------------------------------------------------------------ chat
    def _template(self) -> dict[str, str]:
        return chat_parts(self._need_tokenizer())

    def _feed_text(self, text: str, progress: bool = False) -> None:
        tok = self._need_tokenizer()
        ids = tok(text, return_tensors="pt", add_special_tokens=False).input_ids.to(self.device)
        with torch.no_grad():
            self.forward(ids, logits="none", progress=progress)

    def read(self, context: str, progress: bool = False) -> int:
        """Start a conversation whose first user turn begins with ``context``; returns tokens read."""
        self.reset()
        self._feed_text(self._template()["pre"] + context, progress=progress)
        self.memory.meta["turns"] = 0
        return self.tokens_read()[0]

    def ask(self, question: str, context: str | None = None, progress: bool = False, **gen: Any) -> str:
        """Answer ``question`` about the text read so far (``context`` starts a new conversation).

        The memory keeps the conversation, so later questions reuse it (multi-turn).
        """
        tok = self._need_tokenizer()
        parts = self._template()
        if context is not None or self.memory is None:
            self.read(context or "", progress=progress)
        turns = self.memory.meta.get("turns", 0)
        if turns == 0:
            text = parts["mid"] + question + parts["post"] if self.tokens_read()[0] > 0 else question + parts["post"]
        else:
            sep = parts["next_pre"]
            eos_text = tok.decode([self.memory.meta["last_token"]]) if "last_token" in self.memory.meta else ""
            if eos_text and sep.startswith(eos_text) and self.memory.meta.get("ended_with_eos"):
                sep = sep[len(eos_text):]
            text = sep + question + parts["post"]
        ids = tok(text, return_tensors="pt", add_special_tokens=False).input_ids.to(self.device)
        new = self.generate(ids, progress=progress, **gen)[0]
        eos = self._eos_ids(gen.get("eos_token_id"))
        self.memory.meta.update(turns=turns + 1, last_token=int(new[-1]) if new.numel() else None,
                                ended_with_eos=bool(new.numel() and int(new[-1]) in eos))
        return tok.decode(new, skip_special_tokens=True).strip()

    def _need_tokenizer(self):
        if self.tokenizer is None:
            raise ValueError("this BeaconModel has no tokenizer; pass one to use text helpers")
        return self.tokenizer

    # ------------------------------------------------------------------ memory files
    def save_memory(self, path: str | Path) -> Path:
        """Save the compressed memory (compress once, ask many)."""
        if self.memory is None:
            raise ValueError("nothing to save: the memory is empty")
        return self.memory.save(path, self.config, compat.model_signature(self.model), self._identity())

    def _identity(self) -> dict[str, str]:
        """Fingerprints a saved memory records: the adapter's weights and the base model's."""
        weights = {k: v for k, v in self.adapter.state_dict().items()}
        return {"base model": module_fingerprint(self.model, exclude=self.adapter), "adapter": tensor_checksum(weights)[:32]}

    def load_memory(self, path: str | Path) -> None:
        """Load a saved memory made with this adapter and base model (checked); its beacon
        settings (window, ratios, ...) become the current ones, its tensors the model's dtype."""
        dtype = compat.embed_tokens(self.model).weight.dtype
        self.memory, cfg = BeaconMemory.load(path, compat.model_signature(self.model), self.device,
                                             identity=self._identity(), dtype=dtype)
        self.adapter.config = cfg
        self._sequences = max(self._sequences, self.memory.sequence + 1)


