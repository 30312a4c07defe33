"""BeaconModel: stream a stock causal LM through any length with beacon compression."""

from __future__ import annotations

import copy
import itertools
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from longctx import compat
from longctx.beacon import session
from longctx.beacon.adapter import BeaconAdapter
from longctx.beacon.config import BeaconConfig
from longctx.beacon.memory import BeaconMemory
from longctx.beacon.plan import BEACON, RatioChooser, Segment, StepPlan, plan_rows, plan_step
from longctx.beacon.readout import BeaconOutput, Readout

__all__ = ["BeaconModel", "BeaconOutput"]


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
            self._checkpointed = compat.set_layer_checkpointing(
                self.model, lambda step: self.adapter.routing(step.rows if step is not None else None))
        elif not enabled and self._checkpointed:
            compat.restore_layers(self._checkpointed)
            self._checkpointed = []

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

        Each step is planned on the host (:func:`plan_step`), run through the decoder, and
        committed to the memory (state changes and compaction in :meth:`BeaconMemory.commit`).
        """
        if input_ids.dim() == 1:
            input_ids = input_ids.unsqueeze(0)
        lengths = self._lengths(input_ids, attention_mask)
        input_ids = input_ids.to(self.device)
        out = Readout(compat.lm_head(self.model), lengths, input_ids.shape[1], self.device, labels, logits)
        mem, chooser = self._open_memory(lengths)
        L = input_ids.shape[1]
        cursor = [L - n for n in lengths]
        start = time.perf_counter()
        with tqdm(total=sum(lengths), unit="tok", desc="reading", disable=not progress, leave=False) as bar:
            while any(c < L for c in cursor):
                plan = plan_step(self.config, mem.samples, cursor, L, mem.length, hold=hold,
                                 keep_memory=self.keep_memory,
                                 ratio_of=lambda st: chooser.window_ratio(mem.sequence, st.windows_done, st.instance_ratio))
                hidden = self._run(plan, input_ids)
                mem.commit(plan, input_ids, self.inv_freq)
                out.add(plan, hidden, cursor)
                cursor = [c + (s.n_raw if s is not None else 0) for c, s in zip(cursor, plan.segments)]
                bar.update(plan.n_raw)
        if hold:
            for st in mem.samples:
                st.hold = True
        self._warn_positions()
        self.stats = {"seconds": time.perf_counter() - start, "tokens": float(sum(lengths))}
        return out.result(reduce_loss)

    def _open_memory(self, lengths: list[int]) -> tuple[BeaconMemory, RatioChooser]:
        """The memory this input continues (a new one after :meth:`reset`) and the ratio chooser."""
        chooser = RatioChooser(self.config, compat.max_positions(self.model))
        if self.memory is None:
            self.memory = BeaconMemory(len(lengths), self._sequences)
            self._sequences += 1
            for s, n in zip(self.memory.samples, lengths):
                s.instance_ratio = chooser.instance_ratio(self.memory.sequence, n)
        elif self.memory.batch != len(lengths):
            raise ValueError(f"the memory holds {self.memory.batch} samples but the input has {len(lengths)}; "
                             "call reset()")
        return self.memory, chooser

    def _run(self, plan: StepPlan, input_ids: torch.Tensor) -> torch.Tensor:
        """The decoder over one planned step: raw rows embed their ids, beacon rows the beacon
        embedding and go through the beacon projections. Returns hidden states ``[B, R, H]``."""
        dev = self.device
        src = plan.src.to(dev, non_blocking=True)
        if input_ids.shape[1]:
            ids = torch.where(src >= 0, input_ids.gather(1, src.clamp(min=0)), 0)
        else:
            ids = torch.zeros_like(src)
        embeds = compat.embed_tokens(self.model)(ids)
        rows = plan.routing()
        if rows is not None:
            beacon = plan.beacon.to(dev)
            embeds = embeds.index_put((beacon,), self.adapter.embed.to(embeds.dtype).expand(rows[1].numel(), -1))
            rows = (rows[0].to(dev), rows[1].to(dev))
        replayable = self._checkpointed and torch.is_grad_enabled()
        step = compat.Step(plan.mask.to(dev) if plan.mask is not None else None, rows,
                           next(self._step_ids) if replayable else None)
        with self.adapter.routing(rows):
            return compat.run_decoder(self.model, embeds, plan.positions.to(dev), self.memory.cache, step)

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
        mem.drop_tail([len(o) for o in overflow], self.inv_freq)  # the overflow rows are the last, all raw
        for st in mem.samples:
            st.hold, st.overflow = False, []
        segs: list[Segment | None] = []
        for st in mem.samples:
            full = st.raw_in_window == w
            beacons = w // st.ratio if full and st.ratio and self.config.placement == "append" else 0
            segs.append(Segment(0, (BEACON,) * beacons, tuple(range(1, beacons + 1)), True) if full else None)
        if any(s is not None for s in segs):  # append placement: the beacons still run
            plan = plan_rows(self.config, mem.samples, segs, [st.ratio for st in mem.samples], [0] * B,
                             mem.length, keep_memory=self.keep_memory)
            none = torch.zeros(B, 0, dtype=torch.long)
            if plan.rows:
                self._run(plan, none)
            mem.commit(plan, none, self.inv_freq)
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
                gc.pad_token_id = self._pad_id(self.eos_ids(gc.eos_token_id))
            kwargs["generation_config"] = gc
        else:
            kwargs.update(ours)
            kwargs.setdefault("pad_token_id", self._pad_id(self.eos_ids(kwargs.get("eos_token_id"))))
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

    def eos_ids(self, eos_token_id=None) -> list[int]:
        """The token ids that end generation: ``eos_token_id`` if given, else the model's."""
        if eos_token_id is None:
            gc = getattr(self.model, "generation_config", None)
            eos_token_id = getattr(gc, "eos_token_id", None) or compat.text_config(self.model).eos_token_id
        if eos_token_id is None:
            return []
        return [int(eos_token_id)] if isinstance(eos_token_id, int) else [int(e) for e in eos_token_id]

    def _pad_id(self, eos: list[int]) -> int:
        pad = getattr(self.tokenizer, "pad_token_id", None) if self.tokenizer is not None else None
        return int(pad if pad is not None else (eos[0] if eos else 0))

    # ------------------------------------------------------------------ chat and memory files
    def read(self, context: str, progress: bool = False) -> int:
        """Start a conversation whose first user turn begins with ``context``; returns tokens read."""
        return session.read(self, context, progress)

    def ask(self, question: str, context: str | None = None, progress: bool = False, **gen: Any) -> str:
        """Answer ``question`` about the text read so far (``context`` starts a new conversation);
        the memory keeps the conversation, so later questions reuse it (multi-turn)."""
        return session.ask(self, question, context, progress, **gen)

    def save_memory(self, path: str | Path) -> Path:
        """Save the compressed memory (compress once, ask many)."""
        return session.save_memory(self, path)

    def load_memory(self, path: str | Path) -> None:
        """Load a saved memory made with this adapter and base model (checked)."""
        session.load_memory(self, path)

    def adopt_memory(self, memory: BeaconMemory, config: BeaconConfig) -> None:
        """Continue from ``memory``, made under the beacon settings ``config``."""
        self.memory = memory
        self.adapter.config = config
        self._sequences = max(self._sequences, memory.sequence + 1)
