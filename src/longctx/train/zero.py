"""Gradient and optimizer-state sharding across ranks (ZeRO stage 2 semantics) for the adapter.

Each trainable parameter gets one owner rank (greedy by size). After the backward pass a
parameter's gradient is *reduced* to its owner only (other ranks drop theirs), each rank's
AdamW holds the states of the parameters it owns, the global gradient norm is all-reduced for
clipping, and owners broadcast the updated weights. Memory per rank for gradients and optimizer
states falls by about the world size; the frozen base model stays replicated.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class GradSync:
    """Plain data parallel (``zero=0``: all-reduce, every rank updates everything) or ZeRO-2."""

    def __init__(self, params: list[torch.nn.Parameter], rank: int, world: int, zero: int = 0):
        if zero not in (0, 2):
            raise ValueError(f"zero: 0 (replicated optimizer) or 2 (sharded gradients and states), not {zero}")
        self.params, self.rank, self.world = params, rank, world
        self.sharded = zero == 2 and world > 1
        loads = [0] * world
        self.owner: list[int] = []
        for p in params:  # params arrive in a fixed order on every rank, so owners agree
            r = min(range(world), key=lambda i: loads[i])
            self.owner.append(r)
            loads[r] += p.numel()

    def local(self) -> list[torch.nn.Parameter]:
        """The parameters this rank's optimizer updates."""
        if not self.sharded:
            return self.params
        return [p for p, r in zip(self.params, self.owner) if r == self.rank]

    def reduce(self) -> None:
        if self.world == 1:
            return
        for p, r in zip(self.params, self.owner):
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            if self.sharded:
                dist.reduce(p.grad, dst=r, op=dist.ReduceOp.SUM)
                if r != self.rank:
                    p.grad = None
                    continue
            else:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= self.world

    def clip(self, max_norm: float) -> float:
        """Clip by the global gradient norm; returns the norm before clipping."""
        grads = [p.grad for p in self.local() if p.grad is not None]
        sq = torch.stack([g.detach().float().pow(2).sum() for g in grads]).sum() if grads else torch.zeros(())
        if self.sharded:
            sq = sq.to(self.params[0].device)
            dist.all_reduce(sq, op=dist.ReduceOp.SUM)
        norm = float(sq.sqrt())
        if max_norm and norm > max_norm:
            for g in grads:
                g.mul_(max_norm / (norm + 1e-6))
        return norm

    def broadcast(self) -> None:
        if self.sharded:
            for p, r in zip(self.params, self.owner):
                dist.broadcast(p.data, src=r)
