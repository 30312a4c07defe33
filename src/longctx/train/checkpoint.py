"""Atomic training checkpoints: trainable weights, optimizer state and counters (safetensors + JSON).

The saved module is any module whose parameters train (a beacon adapter, or
:class:`TrainableParams` over a model's unfrozen weights); its ``state_dict`` is what is saved
and restored. :mod:`longctx.train.engine` gathers sharded tensors whole before saving.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

PREFIX = "step-"


def save_checkpoint(out_dir: Path, step: int, weights: dict[str, torch.Tensor], optimizer: dict[str, Any],
                    extra: dict[str, Any], keep: int = 2) -> Path:
    """Write ``out_dir/checkpoints/step-N`` via a temporary folder renamed into place: the
    trainable ``weights``, the optimizer state (``tensors``, ``scalars`` and ``param_groups``,
    keyed by parameter index) and ``extra`` counters. The last ``keep`` checkpoints are kept."""
    root = Path(out_dir) / "checkpoints"
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f".tmp-{PREFIX}{step:08d}"
    root.mkdir(parents=True, exist_ok=True)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file(optimizer["tensors"] or {"_empty": torch.zeros(1)}, str(tmp / "optimizer.safetensors"))
    save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(tmp / "weights.safetensors"))
    meta = {"step": step, **extra, "optimizer_scalars": optimizer["scalars"], "param_groups": optimizer["param_groups"]}
    (tmp / "state.json").write_text(json.dumps(meta, indent=2))
    return publish(tmp, final, keep)


def publish(tmp: Path, final: Path, keep: int = 2) -> Path:
    """Rename a fully written checkpoint folder into place and drop all but the last ``keep``."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in sorted(final.parent.glob(f"{PREFIX}*"))[:-keep]:
        shutil.rmtree(old)
    return final


def whole(t: torch.Tensor) -> torch.Tensor:
    """A sharded (DTensor) tensor gathered whole (a collective); any other tensor as it is."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def optimizer_state(state: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """AdamW's state by parameter index in ``state``, whole tensors (a collective under FSDP)."""
    index = {id(p): i for i, p in enumerate(state.parameters())}
    tensors, scalars = {}, {}
    for p, st in optimizer.state.items():
        i = index[id(p)]
        for k, v in st.items():
            if torch.is_tensor(v) and v.dim() > 0:
                tensors[f"{i}.{k}"] = whole(v).detach().cpu().contiguous()
            else:
                scalars[f"{i}.{k}"] = float(whole(v)) if torch.is_tensor(v) else float(v)
    groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    return {"tensors": tensors, "scalars": scalars, "param_groups": groups}


class TrainableParams(torch.nn.Module):
    """The trainable parameters of a model, addressed by their names in the model (looked up
    on every call, so parameters replaced by sharding are the ones seen)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        object.__setattr__(self, "model", model)  # not a submodule: only a view of its weights
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]

    @property
    def named(self) -> dict[str, torch.nn.Parameter]:
        return {n: self.model.get_parameter(n) for n in self.names}

    def parameters(self, recurse: bool = True):
        return iter(self.named.values())

    def state_dict(self, *args, **kwargs):
        return self.named


def latest_checkpoint(out_dir: Path) -> Path | None:
    root = Path(out_dir) / "checkpoints"
    done = sorted(p for p in root.glob(f"{PREFIX}*") if (p / "state.json").exists()) if root.exists() else []
    return done[-1] if done else None


def load_weights(path: Path, adapter) -> None:
    """Copy a checkpoint's trainable weights into ``adapter`` (no optimizer state)."""
    weights = load_file(str(path / "weights.safetensors"))
    with torch.no_grad():
        for k, p in adapter.state_dict().items():
            _put(p, weights[k])


def load_checkpoint(path: Path, adapter, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore trainable weights and the optimizer state; returns the counters. Sharded
    (FSDP) parameters and states take this rank's part of the saved whole tensors."""
    load_weights(path, adapter)
    meta = json.loads((path / "state.json").read_text())
    tensors = load_file(str(path / "optimizer.safetensors"))
    params = list(adapter.parameters())
    optimizer.state.clear()
    for key, v in tensors.items():
        if key == "_empty":
            continue
        i, name = key.split(".", 1)
        optimizer.state[params[int(i)]][name] = _like(params[int(i)], v)
    for key, v in meta["optimizer_scalars"].items():
        i, name = key.split(".", 1)
        optimizer.state[params[int(i)]][name] = torch.tensor(v)
    for g, saved in zip(optimizer.param_groups, meta["param_groups"]):
        g.update(saved)
    return meta


def _like(p: torch.Tensor, whole: torch.Tensor) -> torch.Tensor:
    """``whole`` laid out like ``p``: on its device, and sharded the same way if ``p`` is a DTensor."""
    if hasattr(p, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(whole.to(p.dtype), p.device_mesh, p.placements, src_data_rank=None)
    return whole.to(p.device)


def _put(p: torch.Tensor, whole: torch.Tensor) -> None:
    if hasattr(p, "device_mesh"):
        p.to_local().copy_(_like(p, whole).to_local())
    else:
        p.copy_(whole)


def check_resumable(config_file: Path, now: dict[str, Any], may_change: set[str],
                    upgrade: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
    """Refuse to resume a run whose saved settings (``config_file``, brought to today's shape by
    ``upgrade``) differ from ``now`` outside ``may_change`` (it would mix two runs)."""
    if not config_file.exists():
        return
    try:
        before = json.loads(config_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"cannot read {config_file}: {e}") from e
    if upgrade is not None:
        before = upgrade(before)
    before, now = _flat(before), _flat(now)
    differ = sorted(k for k in set(before) | set(now)
                    if k not in may_change and before.get(k, now.get(k)) != now.get(k, before.get(k)))
    if differ:
        shown = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in differ)
        raise ValueError(f"{config_file.parent} holds a run with other settings ({shown}); use a new --out, or "
                         f"delete {config_file.parent} to start over")


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections as dotted keys (``beacon.window``), so a difference names the one setting."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def truncate_log(log: Path, step: int) -> None:
    """Drop the rows a resumed run will redo (logged after the checkpoint at ``step``)."""
    if log.exists():
        kept = [ln for ln in log.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
        log.write_text("".join(ln + "\n" for ln in kept))
