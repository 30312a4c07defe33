"""Shard the frozen base model's decoder layers across ranks (FSDP2, ``torch.distributed.fsdp``).

ZeRO-2 (:mod:`longctx.train.zero`) shards the adapter's gradients and optimizer states, but
every rank still holds a whole copy of the frozen base, which does not fit at 70B. With
``fsdp: true`` each decoder layer's base weights are split over the ranks and gathered for
its forward (and for its backward, which the gradient to earlier windows' beacons needs),
then freed again. The beacon weights inside the layers stay whole on every rank (they are
small and trained through :class:`~longctx.train.zero.GradSync`), and so do the embeddings
and the LM head, which the streaming loop calls directly.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from longctx import compat


def shard_base_layers(model: nn.Module, keep_whole: Iterable[nn.Parameter], world: int) -> None:
    """``fully_shard`` every decoder layer over ``world`` ranks, except the ``keep_whole`` parameters."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    device = compat.embed_tokens(model).weight.device.type
    mesh = init_device_mesh(device, (world,))
    keep = {id(p) for p in keep_whole}
    for layer in compat.layers(model):
        ignored = {p for p in layer.parameters() if id(p) in keep}
        fully_shard(layer, mesh=mesh, ignored_params=ignored)


def local_numel(params: Iterable[torch.Tensor]) -> int:
    """Elements this rank holds: a sharded parameter counts only its local shard."""
    return sum((p.to_local() if hasattr(p, "to_local") else p).numel() for p in params)
