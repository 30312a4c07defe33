"""What the streaming forward returns, gathered step by step from the raw rows' hidden states."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from longctx.beacon.plan import StepPlan


@dataclass
class BeaconOutput:
    logits: torch.Tensor | None
    loss: torch.Tensor | None
    n_tokens: int  # valid label tokens counted in the loss
    loss_sum: torch.Tensor | None = None


class Readout:
    """Logits of raw tokens (``"all"`` ``[B, L, V]``, ``"last"`` ``[B, 1, V]`` or ``"none"``) and the
    summed next-token loss against ``labels`` (aligned with the input, -100 = ignore)."""

    def __init__(self, head: nn.Module, lengths: list[int], width: int, device: torch.device,
                 labels: torch.Tensor | None, logits: str):
        if logits not in ("all", "last", "none"):
            raise ValueError(f"logits must be 'all', 'last' or 'none', got {logits!r}")
        self.head, self.lengths, self.width, self.device = head, lengths, width, device
        self.labels, self.mode = labels, logits
        B = len(lengths)
        self.pieces: list[list[torch.Tensor]] = [[] for _ in range(B)]
        self.last: list[torch.Tensor | None] = [None] * B
        self.loss_sum = torch.zeros((), device=device, dtype=torch.float32)
        self.n_loss = 0

    def add(self, plan: StepPlan, hidden: torch.Tensor, cursor: list[int]) -> None:
        """Take the raw rows of one step (``cursor``: each sample's input column before it)."""
        for b, seg in enumerate(plan.segments):
            if seg is None or seg.n_raw == 0:
                continue
            h = hidden[b].index_select(0, plan.raw_rows[b].to(hidden.device)).to(self.head.weight.device)
            if self.labels is not None:
                lo = cursor[b]
                tgt = self.labels[b, lo + 1 : lo + seg.n_raw + 1].to(h.device)
                if tgt.shape[0] < h.shape[0]:
                    tgt = F.pad(tgt, (0, h.shape[0] - tgt.shape[0]), value=-100)
                keep = tgt != -100
                if keep.any():
                    lg = self.head(h[keep]).float()
                    self.loss_sum = self.loss_sum + F.cross_entropy(lg, tgt[keep], reduction="sum").to(self.device)
                    self.n_loss += int(keep.sum())
            if self.mode == "all":
                self.pieces[b].append(self.head(h))
            elif self.mode == "last":
                self.last[b] = h[-1:]

    def result(self, reduce_loss: bool = True) -> BeaconOutput:
        w = self.head.weight
        logits = None
        if self.mode == "all":
            B, L = len(self.lengths), self.width
            logits = torch.zeros(B, L, w.shape[0], dtype=w.dtype, device=self.device)
            for b, parts in enumerate(self.pieces):
                if parts:
                    logits[b, L - self.lengths[b] :] = torch.cat(parts).to(self.device)
        elif self.mode == "last":
            rows = [h.to(self.device) if h is not None else torch.zeros(1, w.shape[1], dtype=w.dtype, device=self.device)
                    for h in self.last]
            logits = self.head(torch.stack(rows))
        if self.labels is None:
            return BeaconOutput(logits, None, 0)
        loss = self.loss_sum / max(self.n_loss, 1) if reduce_loss else self.loss_sum
        return BeaconOutput(logits, loss, self.n_loss, self.loss_sum)
