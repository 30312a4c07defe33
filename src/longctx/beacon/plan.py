"""Pure planning of the beacon stream: windows, beacon slots, positions, masks, ratios.

Nothing here touches a model. A window holds ``w`` raw tokens; with ratio ``a`` it gets
``w/a`` beacons (interleaved after every ``a`` raw tokens, or appended after the last);
ratio 0 keeps the window uncompressed. Entries of the open window are described by two
small integer lists: ``kind`` (RAW or BEACON) and ``idx`` (1-based raw index in the
window, or 1-based beacon number).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from longctx.beacon.config import BeaconConfig

RAW, BEACON = 0, 1


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
        else:  # append + step-expansion / segmentation (SPEC 2.2)
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


def kv_entries(n: int, window: int, ratio: int, sink: int = 0, placement: str = "interleave") -> int:
    """KV entries per layer held after ``n`` raw tokens at a fixed ratio (SPEC 2.1)."""
    f, r = divmod(n, window)
    held = (sink if f >= 1 else 0) + f * (window // ratio if ratio else window) + r
    if ratio == 0 and f >= 1:
        held -= sink  # the sink tokens are part of the uncompressed first window
    if placement == "interleave" and ratio:
        held += r // ratio
    return held


class RatioChooser:
    """Draws the ratio of each window by the configured mix (SPEC 2.3).

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
