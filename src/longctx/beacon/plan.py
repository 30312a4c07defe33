"""Pure planning of the beacon stream: windows, beacon slots, positions, masks, ratios.

Nothing here touches a model. A window holds ``w`` raw tokens; with ratio ``a`` it gets
``w/a`` beacons (interleaved after every ``a`` raw tokens, or appended after the last);
ratio 0 keeps the window uncompressed. Entries of the open window are described by two
small integer lists: ``kind`` (RAW or BEACON) and ``idx`` (1-based raw index in the
window, or 1-based beacon number).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from longctx.beacon.config import BeaconConfig

RAW, BEACON = 0, 1


@dataclass
class SampleState:
    """Host-side bookkeeping of one sample's stream (changed only by ``BeaconMemory.commit``)."""

    raw_total: int = 0
    raw_in_window: int = 0
    ratio: int | None = None  # ratio of the open window, None until it opens
    windows_done: int = 0
    instance_ratio: int | None = None
    fixed: int = 0  # sink + memory entries
    kind: list[int] = field(default_factory=list)  # open-window entries
    idx: list[int] = field(default_factory=list)
    hold: bool = False  # the open window does not close; raw tokens past its end overflow it
    overflow: list[int] = field(default_factory=list)  # ids of those raw tokens (read again on release)

    @property
    def entries(self) -> int:
        return self.fixed + len(self.kind)


@dataclass(frozen=True)
class Segment:
    """One forward call's worth of rows for one sample: raw tokens and beacons in order."""

    n_raw: int
    kind: tuple[int, ...]
    idx: tuple[int, ...]
    closes: bool

    @property
    def n_rows(self) -> int:
        return len(self.kind)


def next_segment(cfg: BeaconConfig, ratio: int, raw_in_window: int, available: int, hold: bool = False) -> Segment:
    """Rows for up to ``available`` new raw tokens, stopping where the open window closes.

    ``hold``: the window does not close; raw tokens past its end overflow it as plain raw
    rows (no beacons), so text read at the end of a prompt stays raw while an answer is
    decoded (see ``BeaconModel.generate(raw_tail=True)``).
    """
    w, a, r = cfg.window, ratio, raw_in_window
    take = available if hold else min(available, w - r)
    kind: list[int] = []
    idx: list[int] = []
    for j in range(r + 1, r + take + 1):
        kind.append(RAW)
        idx.append(j)
        if cfg.placement == "interleave" and a and j % a == 0 and j <= w:
            kind.append(BEACON)
            idx.append(j // a)
    closes = r + take == w and not hold
    if closes and cfg.placement == "append" and a:
        kind.extend([BEACON] * (w // a))
        idx.extend(range(1, w // a + 1))
    return Segment(take, tuple(kind), tuple(idx), closes)


def entry_positions(cfg: BeaconConfig, ratio: int, fixed: int, kind, idx) -> list[int]:
    """Rotary positions of open-window entries, given ``fixed`` sink+memory entries ahead."""
    a, w = ratio, cfg.window
    out = []
    for t, i in zip(kind, idx):
        if cfg.placement == "interleave":
            pos = i - 1 + ((i - 1) // a if a else 0) if t == RAW else i * a + i - 1
        elif t == RAW:
            pos = i - 1
        elif cfg.scheme == "full-coverage":
            pos = w + i - 1
        else:  # append + step-expansion / segmentation (docs/beacon.md, "Settings")
            pos = i * a - 1 + (i if cfg.attend_prev else 1)
        out.append(fixed + pos)
    return out


def window_mask(cfg: BeaconConfig, ratio: int, q_kind, q_idx, k_kind, k_idx) -> torch.Tensor:
    """Which open-window keys each query row sees, for schemes other than full-coverage.

    Queries are the last ``len(q_kind)`` of the keys. Returns bool ``[q, k]``.
    """
    qk = torch.tensor(q_kind).unsqueeze(1)
    qi = torch.tensor(q_idx).unsqueeze(1)
    kk = torch.tensor(k_kind).unsqueeze(0)
    ki = torch.tensor(k_idx).unsqueeze(0)
    nq, nk = qk.shape[0], kk.shape[1]
    order = torch.arange(nk).unsqueeze(0) <= (torch.arange(nq) + nk - nq).unsqueeze(1)
    if cfg.scheme == "full-coverage":
        return order
    a = ratio
    raw_q, bcn_q = qk == RAW, qk == BEACON
    raw_k, bcn_k = kk == RAW, kk == BEACON
    raw_sees = raw_q & raw_k & (ki <= qi)
    if cfg.scheme == "step-expansion":
        bcn_raw = ki <= qi * a
    else:  # segmentation
        bcn_raw = (ki > (qi - 1) * a) & (ki <= qi * a)
    prev = (ki < qi) if cfg.attend_prev else torch.zeros_like(ki < qi)
    bcn_sees = bcn_q & ((raw_k & bcn_raw) | (bcn_k & ((ki == qi) | prev)))
    return raw_sees | bcn_sees


def compaction_keep(sink: int, first_window: bool, ratio: int, kind, idx) -> list[int]:
    """Indices of open-window entries kept when the window closes: sink raws, then beacons.

    Ratio 0 keeps every raw entry (no compression).
    """
    sink_rows = [e for e, (t, i) in enumerate(zip(kind, idx)) if first_window and t == RAW and i <= sink]
    taken = set(sink_rows)
    want = RAW if ratio == 0 else BEACON
    rest = [e for e, t in enumerate(kind) if t == want and e not in taken]
    return sink_rows + rest


def expected_kv_entries(n: int, window: int, ratio: int, sink: int = 0, placement: str = "interleave") -> int:
    """The formula: KV entries per layer held after ``n`` raw tokens at a fixed ratio
    (``BeaconModel.kv_entries()`` counts what a memory actually holds)."""
    f, r = divmod(n, window)
    held = (sink if f >= 1 else 0) + f * (window // ratio if ratio else window) + r
    if ratio == 0 and f >= 1:
        held -= sink  # the sink tokens are part of the uncompressed first window
    if placement == "interleave" and ratio:
        held += r // ratio
    return held


class RatioChooser:
    """Draws the ratio of each window by the configured mix (docs/beacon.md, "Settings").

    Draws depend only on (seed, sequence number, window number), so every process of a
    distributed run and every re-run with the same seed draws the same ratios.
    """

    def __init__(self, cfg: BeaconConfig, max_positions: int | None = None):
        self.cfg = cfg
        self.max_positions = max_positions

    def instance_ratio(self, sequence: int, length: int | None) -> int | None:
        cfg = self.cfg
        if cfg.ratio_mix == "instance-random":
            return random.Random(f"{cfg.seed}/seq/{sequence}").choice(cfg.ratios)
        k = cfg.adapt_margin
        if k is None:
            return None
        if length is None or self.max_positions is None:
            raise ValueError("adapt-K needs the input length and the model's usable positions")
        usable = sorted(r for r in cfg.ratios if r > 0)
        for a in usable:
            if (self.max_positions - cfg.window) * a + cfg.window >= length + k:
                return a
        return usable[-1] if usable else 0

    def window_ratio(self, sequence: int, window: int, instance: int | None) -> int:
        cfg = self.cfg
        if instance is not None:
            return instance
        if cfg.ratio_mix == "step-random":
            return random.Random(f"{cfg.seed}/seq/{sequence}/win/{window}").choice(cfg.ratios)
        if cfg.ratio_mix == "sequence":
            return cfg.ratios[window % len(cfg.ratios)]
        return cfg.ratios[0]


# ----------------------------------------------------------------------------- one step
@dataclass
class StepPlan:
    """One forward over a batch, planned on the host before any model code runs.

    Rows are right-aligned per sample (``R - n_rows`` padding rows on the left). ``src`` maps
    each raw row to its column in the caller's ``input_ids`` (-1 for beacon and padding rows).
    ``keep``/``delta`` (``None``: the cache is not rebuilt) say which cache entries survive the
    step, per sample in order, and by how many positions each kept key moves.
    """

    segments: list[Segment | None]
    ratios: list[int | None]  # ratio of each sample's open window during the step
    cache_len: int  # cache length (padding included) before the step
    src: torch.Tensor  # [B, R] long
    beacon: torch.Tensor  # [B, R] bool
    positions: torch.Tensor  # [B, R] long
    mask: torch.Tensor | None  # [B, 1, R, cache_len + R] bool (True = may attend), or None: causal
    raw_rows: list[torch.Tensor]  # per sample, row indices of its raw tokens, in order
    keep: list[list[int]] | None = None
    delta: list[list[int]] | None = None
    fixed_after: list[int | None] = field(default_factory=list)  # sink + memory after a window closes
    overflow: list[tuple[int, int]] = field(default_factory=list)  # input columns past a held window's end

    @property
    def rows(self) -> int:
        return self.src.shape[1]

    @property
    def n_raw(self) -> int:
        return sum(s.n_raw for s in self.segments if s is not None)

    def routing(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Flat (raw, beacon) row indices for the beacon projections, or None without beacons."""
        flat = self.beacon.flatten()
        if not bool(flat.any()):
            return None
        return (~flat).nonzero().flatten(), flat.nonzero().flatten()


def plan_step(cfg: BeaconConfig, states: Sequence[SampleState], cursor: Sequence[int], length: int,
              cache_len: int, ratio_of: Callable[[SampleState], int], *, hold: bool = False,
              keep_memory: bool = True) -> StepPlan:
    """Plan the next forward: each sample reads its next segment from ``cursor[b]`` up to the end of
    its open window (or of the input, ``length``); ``ratio_of`` gives the ratio of a window that opens.

    hold: a window still open at the end of this input stays open (see ``next_segment``).
    keep_memory=False: a closing window keeps only the sink (the no-memory ablation).
    """
    segments: list[Segment | None] = []
    ratios: list[int | None] = []
    for st, c in zip(states, cursor):
        if c >= length:
            segments.append(None)
            ratios.append(st.ratio)
            continue
        ratio = st.ratio if st.ratio is not None else ratio_of(st)
        held = st.hold or (hold and length - c <= cfg.window - st.raw_in_window)
        segments.append(next_segment(cfg, ratio, st.raw_in_window, length - c, hold=held))
        ratios.append(ratio)
    return plan_rows(cfg, states, segments, ratios, cursor, cache_len, keep_memory=keep_memory)


def plan_rows(cfg: BeaconConfig, states: Sequence[SampleState], segments: Sequence[Segment | None],
              ratios: Sequence[int | None], cursor: Sequence[int], cache_len: int, *,
              keep_memory: bool = True) -> StepPlan:
    """The rows, positions, mask and compaction of a step whose segments are given."""
    B, S = len(segments), cache_len
    R = max((s.n_rows for s in segments if s is not None), default=0)
    n_prev = [st.entries for st in states]
    src = torch.full((B, R), -1, dtype=torch.long)
    beacon = torch.zeros(B, R, dtype=torch.bool)
    positions = torch.zeros(B, R, dtype=torch.long)
    raw_rows, pads, overflow = [], [], []
    for b, (seg, st) in enumerate(zip(segments, states)):
        n = seg.n_rows if seg is not None else 0
        pads.append(R - n)
        overflow.append((0, 0))
        if not n:
            raw_rows.append(torch.empty(0, dtype=torch.long))
            continue
        kind = torch.tensor(seg.kind, dtype=torch.long)
        at = (kind == RAW).nonzero().flatten() + (R - n)
        src[b, at] = torch.arange(cursor[b], cursor[b] + seg.n_raw)
        beacon[b, R - n :] = kind == BEACON
        positions[b, R - n :] = torch.tensor(entry_positions(cfg, ratios[b], st.fixed, seg.kind, seg.idx))
        raw_rows.append(at)
        after = st.raw_in_window + seg.n_raw
        if after > cfg.window:  # raw tokens past a held window's end
            new_over = after - max(st.raw_in_window, cfg.window)
            overflow[b] = (cursor[b] + seg.n_raw - new_over, cursor[b] + seg.n_raw)
    padded = any(pads) or (S > 0 and (min(n_prev) != max(n_prev) or max(n_prev) != S))
    mask = step_mask(cfg, states, segments, ratios, S, R, n_prev) if (padded or cfg.needs_mask) else None
    plan = StepPlan(list(segments), list(ratios), S, src, beacon, positions, mask, raw_rows, overflow=overflow,
                    fixed_after=[None] * B)
    if padded or any(s is not None and s.closes for s in segments):
        _plan_compaction(plan, cfg, states, n_prev, pads, keep_memory)
    return plan


def _plan_compaction(plan: StepPlan, cfg: BeaconConfig, states: Sequence[SampleState], n_prev: list[int],
                     pads: list[int], keep_memory: bool) -> None:
    S, R = plan.cache_len, plan.rows
    plan.keep, plan.delta = [], []
    for b, (seg, st) in enumerate(zip(plan.segments, states)):
        # cache indices of this sample's entries, in order: previous entries, then new rows
        where = list(range(S - n_prev[b], S)) + list(range(S + pads[b], S + R))
        if seg is None or not seg.closes:
            plan.keep.append(where)
            plan.delta.append([0] * len(where))
            continue
        ratio = plan.ratios[b]
        kind, idx = st.kind + list(seg.kind), st.idx + list(seg.idx)
        old = entry_positions(cfg, ratio, st.fixed, kind, idx)
        kept = compaction_keep(cfg.sink, st.windows_done == 0, ratio, kind, idx)
        head = st.fixed  # sink + memory entries ahead of the window
        if not keep_memory:  # forget the memory: only the sink survives
            head = min(st.fixed, cfg.sink)
            n_sink = sum(1 for t, i in zip(kind, idx) if t == RAW and i <= cfg.sink)
            kept = kept[:n_sink] if st.windows_done == 0 else []
        plan.keep.append(where[:head] + [where[st.fixed + e] for e in kept])
        plan.delta.append([0] * head + [head + r - old[e] for r, e in enumerate(kept)])
        plan.fixed_after[b] = head + len(kept)


def step_mask(cfg: BeaconConfig, states: Sequence[SampleState], segments: Sequence[Segment | None],
              ratios: Sequence[int | None], S: int, R: int, n_prev: Sequence[int]) -> torch.Tensor:
    """Explicit bool mask ``[B, 1, R, S + R]`` for padded batches and non-default schemes."""
    B = len(segments)
    mask = torch.zeros(B, 1, R, S + R, dtype=torch.bool)
    for b, (seg, st) in enumerate(zip(segments, states)):
        n = seg.n_rows if seg is not None else 0
        pad = R - n
        mask[b, 0, torch.arange(pad), S + torch.arange(pad)] = True  # padding rows see themselves
        if not n:
            continue
        q = slice(pad, R)
        first = S - n_prev[b]
        mask[b, 0, q, first : first + st.fixed] = True
        wm = window_mask(cfg, ratios[b], seg.kind, seg.idx, st.kind + list(seg.kind), st.idx + list(seg.idx))
        n_open = len(st.kind)
        mask[b, 0, q, S - n_open : S] = wm[:, :n_open]
        mask[b, 0, q, S + pad :] = wm[:, n_open:]
    return mask
