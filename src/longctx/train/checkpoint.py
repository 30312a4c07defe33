"""Atomic training checkpoints: trainable weights, optimizer state and counters (safetensors + JSON).

``trainable`` is any module whose parameters train (a beacon adapter, or :class:`TrainableParams`
over a model's unfrozen weights); its ``state_dict`` is what is saved and restored.
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


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _optimizer_tensors(adapter, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    index = {id(p): i for i, p in enumerate(adapter.parameters())}
    state, scalars = {}, {}
    for p, st in optimizer.state.items():
        i = index[id(p)]
        for k, v in st.items():
            if torch.is_tensor(v) and v.dim() > 0:
                state[f"{i}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{i}.{k}"] = float(v)
    return state or {"_empty": torch.zeros(1)}, scalars


def save_checkpoint(out_dir: Path, step: int, adapter, optimizer: torch.optim.Optimizer, extra: dict[str, Any],
                    keep: int = 2, rank: int = 0, world: int = 1, sharded: bool = False) -> Path:
    """Write ``out_dir/checkpoints/step-N`` via a temporary folder renamed into place.

    With ``sharded`` (ZeRO-2 optimizer states) every rank calls this and writes its own
    ``optimizer-rankR`` files; rank 0 writes the weights and renames the folder once all are written.
    Otherwise only rank 0 calls it.
    """
    root = Path(out_dir) / "checkpoints"
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f".tmp-{PREFIX}{step:08d}"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    if sharded:
        _barrier(world)
    state, scalars = _optimizer_tensors(adapter, optimizer)
    groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    suffix = f"-rank{rank}" if sharded else ""
    save_file(state, str(tmp / f"optimizer{suffix}.safetensors"))
    if sharded:
        (tmp / f"optimizer{suffix}.json").write_text(json.dumps({"optimizer_scalars": scalars, "param_groups": groups}))
        _barrier(world)
    if rank == 0:
        save_file({k: v.detach().cpu().contiguous() for k, v in adapter.state_dict().items()},
                  str(tmp / "weights.safetensors"))
        meta = {"step": step, "sharded_world": world if sharded else 1, **extra}
        if not sharded:  # sharded: each rank's scalars and groups live in its optimizer-rankR.json
            meta.update(optimizer_scalars=scalars, param_groups=groups)
        (tmp / "state.json").write_text(json.dumps(meta, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in sorted(root.glob(f"{PREFIX}*"))[:-keep]:
            shutil.rmtree(old)
    if sharded:
        _barrier(world)
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


def load_weights(path: Path, adapter) -> None:
    """Copy a checkpoint's trainable weights into ``adapter`` (no optimizer state)."""
    weights = load_file(str(path / "weights.safetensors"))
    with torch.no_grad():
        for k, p in adapter.state_dict().items():
            p.copy_(weights[k])


def load_checkpoint(path: Path, adapter, optimizer: torch.optim.Optimizer, rank: int = 0,
                    sharded: bool = False) -> dict[str, Any]:
    """Restore adapter weights and (this rank's share of) the optimizer state; returns the counters."""
    load_weights(path, adapter)
    meta = json.loads((path / "state.json").read_text())
    if sharded != (meta.get("sharded_world", 1) > 1):
        raise ValueError(f"{path} was written {'with' if meta.get('sharded_world', 1) > 1 else 'without'} sharded "
                         "optimizer states (zero=2); resume with the same setting")
    suffix = f"-rank{rank}" if sharded else ""
    tensors = load_file(str(path / f"optimizer{suffix}.safetensors"))
    opt_meta = json.loads((path / f"optimizer{suffix}.json").read_text()) if sharded else meta
    params = list(adapter.parameters())
    optimizer.state.clear()
    for key, v in tensors.items():
        if key == "_empty":
            continue
        i, name = key.split(".", 1)
        optimizer.state[params[int(i)]][name] = v.to(params[int(i)].device)
    for key, v in opt_meta["optimizer_scalars"].items():
        i, name = key.split(".", 1)
        optimizer.state[params[int(i)]][name] = torch.tensor(v)
    for g, saved in zip(optimizer.param_groups, opt_meta["param_groups"]):
        g.update(saved)
    return meta


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
