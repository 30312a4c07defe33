"""The compressed memory: a stock cache holding ``[sink | beacon memory | open window]``.

Per sample it tracks how many entries are fixed (sink + memory) and what the open window
holds. Compaction keeps the sink and the beacons of a closed window and re-rotates each
moved key by the change of its position (RoPE rotations compose). In a batch, each
sample's entries are right-aligned in the cache; entries to their left are padding.
A memory can be saved to one safetensors file (state in its header) and loaded later.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from longctx import compat
from longctx.beacon.config import BeaconConfig
from longctx.beacon.plan import SampleState, StepPlan
from longctx.safefiles import atomic_save

FORMAT = "longctx-memory/2"
FORMAT_V1 = "longctx-memory/1"


class MemoryFileError(ValueError):
    """A saved memory that does not fit the model or adapter."""


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

    def commit(self, plan: StepPlan, input_ids: torch.Tensor, inv_freq: torch.Tensor) -> None:
        """Apply a step that has run: every per-sample state change, then the cache rebuild
        (compaction of closed windows, removal of padding) the plan prescribes."""
        for b, (seg, st) in enumerate(zip(plan.segments, self.samples)):
            if seg is None:
                continue
            lo, hi = plan.overflow[b]
            if hi > lo:
                st.overflow += input_ids[b, lo:hi].tolist()
            st.ratio = plan.ratios[b]
            st.kind.extend(seg.kind)
            st.idx.extend(seg.idx)
            st.raw_in_window += seg.n_raw
            st.raw_total += seg.n_raw
            if seg.closes:
                st.fixed = plan.fixed_after[b]
                st.kind, st.idx = [], []
                st.raw_in_window = 0
                st.windows_done += 1
                st.ratio = None
        if plan.keep is not None:
            self.repack(plan.keep, plan.delta, inv_freq)

    def drop_tail(self, counts: list[int], inv_freq: torch.Tensor) -> None:
        """Remove each sample's last ``counts[b]`` entries (raw rows of its open window)."""
        if not any(counts):
            return
        S, n_prev = self.length, self.kv_entries()
        keep = []
        for st, n, have in zip(self.samples, counts, n_prev):
            keep.append(list(range(S - have, S - n)))
            if n:
                st.kind, st.idx = st.kind[:-n], st.idx[:-n]
                st.raw_in_window -= n
                st.raw_total -= n
        self.repack(keep, [[0] * len(k) for k in keep], inv_freq)

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
    def save(self, path: str | Path, config: BeaconConfig, signature: dict[str, Any],
             identity: dict[str, str] | None = None) -> Path:
        """Write ``path``: one safetensors file with the per-layer keys/values and, in its header,
        the stream state, the beacon settings, the model's shape and ``identity`` (fingerprints
        of the adapter and the base model). Written beside ``path`` and moved into place, so a
        crash leaves the previous file."""
        tensors = {}
        for i, (k, v) in enumerate(compat.cache_kv(self.cache)):
            tensors[f"layers.{i}.keys"] = k.detach().contiguous().cpu()
            tensors[f"layers.{i}.values"] = v.detach().contiguous().cpu()
        state = {
            "format": FORMAT,
            "sequence": self.sequence,
            "samples": [asdict(s) for s in self.samples],
            "beacon": config.to_dict(),
            "base_model": signature,
            "identity": identity or {},
            "dtype": str(next(iter(tensors.values())).dtype).removeprefix("torch.") if tensors else None,
            "meta": self.meta,
        }
        return atomic_save(tensors, path, {"format": FORMAT, "state": json.dumps(state)})

    @classmethod
    def load(cls, path: str | Path, signature: dict[str, Any], device: torch.device | str = "cpu",
             identity: dict[str, str] | None = None,
             dtype: torch.dtype | None = None) -> tuple[BeaconMemory, BeaconConfig]:
        """Read a saved memory and the beacon settings it was made with, checked against the
        model's shape and, where both are known, the adapter's and model's fingerprints."""
        path = Path(path)
        tensors, state = _read_memory_file(path)
        where = f"memory {path}"
        if state.get("format") not in (FORMAT, FORMAT_V1):
            raise MemoryFileError(f"{path} is not a longctx memory (format {state.get('format')!r})")
        unknown = sorted(set(state) - STATE_KEYS)
        if unknown:
            raise MemoryFileError(f"{where}: unknown fields {unknown} in its state")
        if state.get("base_model") != signature:
            raise MemoryFileError(f"{where} was made with another base model: {state.get('base_model')} vs {signature}")
        for key, mine in (identity or {}).items():
            theirs = state.get("identity", {}).get(key)
            if theirs is not None and theirs != mine:
                raise MemoryFileError(f"{where} was made with another {key} (fingerprint {theirs} vs {mine}); "
                                      f"compress the text again with this {key}")
        try:
            mem_cfg = BeaconConfig.from_dict(state["beacon"])
            samples = [SampleState(**s) for s in state["samples"]]
        except (KeyError, TypeError, ValueError) as e:
            raise MemoryFileError(f"{where}: malformed state ({e})") from e
        if not samples:
            raise MemoryFileError(f"{where} holds no samples")
        layers = signature["num_hidden_layers"]
        expected = {f"layers.{i}.{kv}" for i in range(layers) for kv in ("keys", "values")}
        if set(tensors) != expected:
            missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
            raise MemoryFileError(f"{where} does not hold {layers} layers of keys/values: missing {missing[:4]}, "
                                  f"unexpected {extra[:4]}")
        need = max(s.entries for s in samples)
        shape = None
        for name, t in tensors.items():
            want = (len(samples), signature["num_key_value_heads"], signature["head_dim"])
            if t.dim() != 4 or (t.shape[0], t.shape[1], t.shape[3]) != want:
                raise MemoryFileError(f"{where}: {name} has shape {tuple(t.shape)}, expected "
                                      f"[{want[0]}, {want[1]}, length, {want[2]}]")
            if shape is not None and t.shape != shape:
                raise MemoryFileError(f"{where}: {name} has shape {tuple(t.shape)}, other layers {tuple(shape)}")
            shape = t.shape
            if not torch.isfinite(t).all():
                raise MemoryFileError(f"{where}: {name} holds non-finite values")
        if shape[2] < need:
            raise MemoryFileError(f"{where}: its state counts {need} entries but the tensors hold {shape[2]}")
        mem = cls(len(samples), state["sequence"])
        mem.samples = samples
        mem.meta = state.get("meta", {})
        mem.cache = compat.cache_from_tensors(
            [(tensors[f"layers.{i}.keys"].to(device=device, dtype=dtype),
              tensors[f"layers.{i}.values"].to(device=device, dtype=dtype)) for i in range(layers)]
        )
        return mem, mem_cfg


STATE_KEYS = {"format", "sequence", "samples", "beacon", "base_model", "identity", "dtype", "meta"}


def _read_memory_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and state of a memory file (the state in its header; older files: ``path.json``)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        raw = header.get("state")
        if raw is None:  # longctx-memory/1: state in a sidecar file
            raw = Path(str(path) + ".json").read_text()
        state = json.loads(raw)
    except (OSError, ValueError, SafetensorError) as e:
        raise MemoryFileError(f"cannot read saved memory {path}: {e}") from e
    if not isinstance(state, dict):
        raise MemoryFileError(f"cannot read saved memory {path}: its state is not a JSON object")
    return tensors, state
