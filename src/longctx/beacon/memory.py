"""The compressed memory: a stock cache holding ``[sink | beacon memory | open window]``.

Per sample it tracks how many entries are fixed (sink + memory) and what the open window
holds. Compaction keeps the sink and the beacons of a closed window and re-rotates each
moved key by the change of its position (RoPE rotations compose). In a batch, each
sample's entries are right-aligned in the cache; entries to their left are padding.
A memory can be saved to a safetensors file plus JSON and loaded later.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from longctx import compat
from longctx.beacon.config import BeaconConfig

FORMAT = "longctx-memory/1"


class MemoryFileError(ValueError):
    """A saved memory that does not fit the model or adapter."""


@dataclass
class SampleState:
    """Host-side bookkeeping of one sample's stream."""

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


class BeaconMemory:
    """KV cache plus stream state for a batch; persists across calls until reset."""

    def __init__(self, batch: int, sequence: int = 0):
        self.cache = compat.new_cache()
        self.samples = [SampleState() for _ in range(batch)]
        self.sequence = sequence
        self.meta: dict[str, Any] = {}  # JSON-able extras saved with the memory (chat turns, ...)

    @property
    def batch(self) -> int:
        return len(self.samples)

    @property
    def length(self) -> int:
        """Cache length including left padding."""
        return compat.cache_length(self.cache)

    def kv_entries(self) -> list[int]:
        """KV entries held per layer, per sample."""
        return [s.entries for s in self.samples]

    def kv_bytes(self) -> int:
        """Bytes of keys and values actually held (padding excluded), all layers."""
        kv = compat.cache_kv(self.cache)
        if not kv:
            return 0
        k = kv[0][0]
        per_entry = k.shape[1] * k.shape[3] * k.element_size() * 2 * len(kv)
        return per_entry * sum(self.kv_entries())

    def padded(self) -> bool:
        n = self.kv_entries()
        return min(n) != max(n) or (self.length and max(n) != self.length)

    def repack(self, keep: list[list[int]], delta: list[list[int]], inv_freq: torch.Tensor) -> None:
        """Rebuild the cache: per sample, the entries at ``keep`` (cache indices) in order,
        right-aligned, with keys rotated by ``delta`` positions."""
        new_len = max(len(k) for k in keep)
        kv = compat.cache_kv(self.cache)
        rot_from = new_len
        if self.batch == 1:
            index = torch.tensor(keep[0], dtype=torch.long)
            d = torch.tensor(delta[0], dtype=torch.long).unsqueeze(0)
            nz = torch.nonzero(d[0]).flatten()
            rot_from = int(nz[0]) if nz.numel() else new_len
        else:
            index = torch.zeros(self.batch, new_len, dtype=torch.long)
            d = torch.zeros(self.batch, new_len, dtype=torch.long)
            for b, (kb, db) in enumerate(zip(keep, delta)):
                if kb:
                    index[b, new_len - len(kb) :] = torch.tensor(kb)
                    d[b, new_len - len(kb) :] = torch.tensor(db)
            cols = torch.nonzero(d.any(0)).flatten()
            rot_from = int(cols[0]) if cols.numel() else new_len
        for i, (k, v) in enumerate(kv):
            dev = k.device
            if self.batch == 1:
                idx = index.to(dev)
                k, v = k.index_select(2, idx), v.index_select(2, idx)
            else:
                g = index.to(dev)[:, None, :, None].expand(-1, k.shape[1], -1, k.shape[3])
                k, v = k.gather(2, g), v.gather(2, g)
            if rot_from < new_len:
                moved = compat.rope_rotate(k[:, :, rot_from:], d[:, rot_from:].to(dev), inv_freq.to(dev))
                k = torch.cat((k[:, :, :rot_from], moved), dim=2)
            compat.set_cache_kv(self.cache, i, k, v)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, config: BeaconConfig, signature: dict[str, Any]) -> Path:
        """Write ``path`` (safetensors: per-layer keys/values) and ``path.json`` (state)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for i, (k, v) in enumerate(compat.cache_kv(self.cache)):
            tensors[f"layers.{i}.keys"] = k.detach().contiguous().cpu()
            tensors[f"layers.{i}.values"] = v.detach().contiguous().cpu()
        save_file(tensors, str(path), metadata={"format": FORMAT})
        state = {
            "format": FORMAT,
            "sequence": self.sequence,
            "samples": [asdict(s) for s in self.samples],
            "beacon": config.to_dict(),
            "base_model": signature,
            "meta": self.meta,
        }
        Path(str(path) + ".json").write_text(json.dumps(state))
        return path

    @classmethod
    def load(cls, path: str | Path, signature: dict[str, Any],
             device: torch.device | str = "cpu") -> tuple[BeaconMemory, BeaconConfig]:
        """Read a saved memory and the beacon settings it was made with."""
        path = Path(path)
        try:
            state = json.loads(Path(str(path) + ".json").read_text())
            tensors = load_file(str(path))
        except Exception as e:  # noqa: BLE001 - any read failure is reported the same way
            raise MemoryFileError(f"cannot read saved memory {path}: {e}") from e
        if state.get("format") != FORMAT:
            raise MemoryFileError(f"{path} is not a longctx memory")
        if state["base_model"] != signature:
            raise MemoryFileError(f"memory {path} was made with another base model: {state['base_model']} vs {signature}")
        mem_cfg = BeaconConfig.from_dict(state["beacon"])
        mem = cls(len(state["samples"]), state["sequence"])
        mem.samples = [SampleState(**s) for s in state["samples"]]
        mem.meta = state.get("meta", {})
        n_layers = len([k for k in tensors if k.endswith(".keys")])
        mem.cache = compat.cache_from_tensors(
            [(tensors[f"layers.{i}.keys"].to(device), tensors[f"layers.{i}.values"].to(device)) for i in range(n_layers)]
        )
        return mem, mem_cfg
