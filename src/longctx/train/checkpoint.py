"""Atomic training checkpoints: trainable weights, optimizer state and counters (safetensors + JSON).

``trainable`` is any module whose parameters train (a beacon adapter, or :class:`TrainableParams`
over a model's unfrozen weights); its ``state_dict`` is what is saved and restored.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

PREFIX = "step-"


def save_checkpoint(out_dir: Path, step: int, adapter, optimizer: torch.optim.Optimizer, extra: dict[str, Any],
                    keep: int = 2) -> Path:
    """Write ``out_dir/checkpoints/step-N`` via a temporary folder renamed into place."""
    root = Path(out_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f".tmp-{PREFIX}{step:08d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in adapter.state_dict().items()}, str(tmp / "weights.safetensors"))
    params = list(adapter.parameters())
    index = {id(p): i for i, p in enumerate(params)}
    state, scalars = {}, {}
    for p, st in optimizer.state.items():
        i = index[id(p)]
        for k, v in st.items():
            if torch.is_tensor(v) and v.dim() > 0:
                state[f"{i}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{i}.{k}"] = float(v)
    save_file(state or {"_empty": torch.zeros(1)}, str(tmp / "optimizer.safetensors"))
    meta = {"step": step, "optimizer_scalars": scalars, "param_groups": [
        {k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups], **extra}
    (tmp / "state.json").write_text(json.dumps(meta, indent=2))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in sorted(root.glob(f"{PREFIX}*"))[:-keep]:
        shutil.rmtree(old)
    return final


class TrainableParams(torch.nn.Module):
    """The trainable parameters of a model, addressed by their names in the model."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.named = {n: p for n, p in model.named_parameters() if p.requires_grad}

    def parameters(self, recurse: bool = True):
        return iter(self.named.values())

    def state_dict(self, *args, **kwargs):
        return dict(self.named)


def latest_checkpoint(out_dir: Path) -> Path | None:
    root = Path(out_dir) / "checkpoints"
    done = sorted(p for p in root.glob(f"{PREFIX}*") if (p / "state.json").exists()) if root.exists() else []
    return done[-1] if done else None


def load_checkpoint(path: Path, adapter, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore adapter weights and optimizer state; returns the saved counters."""
    weights = load_file(str(path / "weights.safetensors"))
    with torch.no_grad():
        for k, p in adapter.state_dict().items():
            p.copy_(weights[k])
    meta = json.loads((path / "state.json").read_text())
    tensors = load_file(str(path / "optimizer.safetensors"))
    params = list(adapter.parameters())
    optimizer.state.clear()
    for key, v in tensors.items():
        if key == "_empty":
            continue
        i, name = key.split(".", 1)
        optimizer.state[params[int(i)]][name] = v.to(params[int(i)].device)
    for key, v in meta["optimizer_scalars"].items():
        i, name = key.split(".", 1)
        optimizer.state[params[int(i)]][name] = torch.tensor(v)
    for g, saved in zip(optimizer.param_groups, meta["param_groups"]):
        g.update(saved)
    return meta
