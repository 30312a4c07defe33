"""Position-id samplers for context extension by fine-tuning at the original length (docs/cream.md).

Each sampler turns one document (token ids, at least ``N`` long) into a training sample of
exactly ``N`` tokens whose position ids span ``[0, L)``: CREAM (middle-focused), PoSE
(two chunks with a skip), RandPos (random sorted positions) and full-length (no extension).
All draws come from the ``random.Random`` passed in, so a seed reproduces them.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


class PositionError(ValueError):
    """Bad lengths or documents for a position sampler."""


@dataclass(frozen=True)
class Sample:
    input_ids: list[int]
    position_ids: list[int]
    meta: dict


def _check(N: int, L: int, doc: list[int]) -> int:
    if N <= 0 or L < N:
        raise PositionError(f"target length {L} must be at least the training length {N}")
    if L % N:
        raise PositionError(f"target length {L} is not a whole multiple of the training length {N}")
    if len(doc) < N:
        raise PositionError(f"document of {len(doc)} tokens is shorter than the training length {N}")
    return L // N


def truncated_gaussian_ratio(k: int, sigma: float, rng: random.Random, grid_points: int = 1000) -> int:
    """CREAM's ``r``: a Gaussian (mean k+1, std sigma) on the grid [2, 2k] sampled by inverse-CDF
    interpolation of a uniform draw, mass outside the grid clamped to its ends, then floored."""
    lo, hi = 2.0, 2.0 * k
    if hi <= lo:
        return 2
    xs = [lo + (hi - lo) * i / (grid_points - 1) for i in range(grid_points)]
    cdf = [0.5 * (1 + math.erf((x - (k + 1)) / (sigma * math.sqrt(2)))) for x in xs]
    u = rng.random()
    if u <= cdf[0]:
        return int(lo)
    if u >= cdf[-1]:
        return int(hi)
    for i in range(1, grid_points):
        if cdf[i] >= u:
            t = (u - cdf[i - 1]) / (cdf[i] - cdf[i - 1]) if cdf[i] > cdf[i - 1] else 0.0
            return int(math.floor(xs[i - 1] + t * (xs[i] - xs[i - 1])))
    return int(hi)


def cream(doc: list[int], N: int, L: int, rng: random.Random, sigma: float = 3.0) -> Sample:
    """CREAM (Wu et al., 2024, section 3; docs/cream.md): head at ``0..h-1``, tail at ``L-h..L-1``, a middle of ``N-2h`` tokens
    ending at a position drawn to favour the middle of the target context."""
    k = _check(N, L, doc)
    case = "relativity" if rng.random() < 0.5 else "continuity"
    h = N // 3 if case == "relativity" else 4 * k
    m = N - 2 * h
    if m <= 0:
        raise PositionError(f"training length {N} is too short for a head/tail of {h} tokens each")
    r = truncated_gaussian_ratio(k, sigma, rng)
    e_lo = math.floor(h + (m - 1) * r / 2)
    e_hi = math.floor((r / 2) * N - h - 1)
    e = rng.randint(e_lo, max(e_lo, e_hi))
    head = list(range(h))
    middle = list(range(e - m + 1, e + 1))
    tail = list(range(L - h, L))
    if len(doc) > e:
        mid_tokens = doc[e - m + 1 : e + 1]
    else:
        mid_tokens = doc[len(doc) - h - m : len(doc) - h]
    ids = doc[:h] + mid_tokens + doc[len(doc) - h :]
    return Sample(ids, head + middle + tail, {"case": case, "h": h, "m": m, "r": r, "e": e})


def pose(doc: list[int], N: int, L: int, rng: random.Random) -> Sample:
    """PoSE: chunk 1 of length in [1, N/2] at positions from 0; chunk 2 shifted by a skip in [0, L-N]."""
    _check(N, L, doc)
    l1 = rng.randint(1, N // 2)
    skip = rng.randint(0, L - N)
    pos = list(range(l1)) + [p + skip for p in range(l1, N)]
    return Sample(doc[:N], pos, {"l1": l1, "skip": skip})


def randpos(doc: list[int], N: int, L: int, rng: random.Random) -> Sample:
    """RandPos: N distinct positions drawn uniformly from [0, L), sorted."""
    _check(N, L, doc)
    return Sample(doc[:N], sorted(rng.sample(range(L), N)), {})


def full_length(doc: list[int], N: int, L: int, rng: random.Random) -> Sample:
    """No extension: ordinary positions 0..N-1."""
    _check(N, N * max(1, L // N), doc)
    return Sample(doc[:N], list(range(N)), {})


SAMPLERS = {"cream": cream, "pose": pose, "randpos": randpos, "full": full_length}


class PositionCollator:
    """Turns whole documents into ``input_ids``, ``labels`` and ``position_ids`` batches.

    The draw for the i-th sample of a run depends only on (seed, i), so resumed or distributed
    runs reproduce it.
    """

    def __init__(self, method: str, train_length: int, target_length: int, seed: int = 0, sigma: float = 3.0):
        if method not in SAMPLERS:
            raise PositionError(f"unknown position method {method!r}; choose from {sorted(SAMPLERS)}")
        if target_length % train_length:
            raise PositionError(f"target length {target_length} is not a whole multiple of the training length {train_length}")
        self.method, self.N, self.L, self.seed, self.sigma = method, train_length, target_length, seed, sigma
        self.count = 0

    def sample(self, doc: list[int], index: int | None = None) -> Sample:
        i = self.count if index is None else index
        self.count = i + 1
        rng = random.Random(f"{self.seed}/{self.method}/{i}")
        fn = SAMPLERS[self.method]
        return fn(doc, self.N, self.L, rng, self.sigma) if self.method == "cream" else fn(doc, self.N, self.L, rng)

    def __call__(self, docs: list[list[int]], first_index: int | None = None):
        """A batch; samples are numbered from ``first_index`` (default: continue the count)."""
        import torch

        start = self.count if first_index is None else first_index
        samples = [self.sample(d, start + i) for i, d in enumerate(docs)]
        ids = torch.tensor([s.input_ids for s in samples])
        return {"input_ids": ids, "labels": ids.clone(), "position_ids": torch.tensor([s.position_ids for s in samples])}
