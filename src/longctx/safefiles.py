"""Safetensors files written the careful way: sharded where large, streamed tensor by tensor,
and a whole folder replaced at once so a crash never leaves half a new version.

* :class:`ShardWriter` collects tensors and writes a shard whenever the next one would pass the
  limit: ``{stem}.safetensors``, or ``{stem}-0000i-of-0000n.safetensors`` listed in
  ``{stem}.safetensors.index.json`` (the layout transformers reads).
* :func:`weight_files` lists the files of one such layout (never a file outside the folder).
* :func:`replaced_dir` yields a fresh temporary folder beside the target; when the block ends
  without an error it takes the target's place, otherwise it is removed and the target is left
  as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import save_file

HEADER_RESERVE = 2**16  # bytes kept free in each shard for its header


class ShardWriter:
    """Write tensors as one file or as shards of at most ``max_shard_mb`` MiB (None: one file)."""

    def __init__(self, directory: str | Path, stem: str, max_shard_mb: float | None = None,
                 metadata: dict[str, str] | None = None):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.stem = stem
        self.limit = None if max_shard_mb is None else max(1, int(max_shard_mb * 2**20) - HEADER_RESERVE)
        self.metadata = metadata or {}
        self.pending: dict[str, torch.Tensor] = {}
        self.size = 0
        self.parts: list[tuple[Path, list[str]]] = []
        self.total = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        if name in self.pending or any(name in keys for _, keys in self.parts):
            raise ValueError(f"tensor {name!r} written twice")
        n = tensor.numel() * tensor.element_size()
        if self.limit is not None and self.pending and self.size + n > self.limit:
            self._flush()
        self.pending[name] = tensor.detach().contiguous().cpu()
        self.size += n
        self.total += n

    def _flush(self) -> None:
        path = self.directory / f".{self.stem}-part{len(self.parts):05d}.tmp"
        save_file(self.pending, str(path), metadata=self.metadata)
        self.parts.append((path, list(self.pending)))
        self.pending, self.size = {}, 0

    def close(self) -> list[str]:
        """Write what is left and name the files; returns the file names."""
        if self.pending or not self.parts:
            self._flush()
        if len(self.parts) == 1:
            name = f"{self.stem}.safetensors"
            os.replace(self.parts[0][0], self.directory / name)
            return [name]
        n = len(self.parts)
        names, weight_map = [], {}
        for i, (path, keys) in enumerate(self.parts):
            name = f"{self.stem}-{i + 1:05d}-of-{n:05d}.safetensors"
            os.replace(path, self.directory / name)
            names.append(name)
            weight_map.update(dict.fromkeys(keys, name))
        index = {"metadata": {"total_size": self.total}, "weight_map": weight_map}
        (self.directory / f"{self.stem}.safetensors.index.json").write_text(json.dumps(index, indent=2))
        return names


def write_tensors(tensors: dict[str, torch.Tensor], directory: str | Path, stem: str,
                  max_shard_mb: float | None = None, metadata: dict[str, str] | None = None) -> list[str]:
    writer = ShardWriter(directory, stem, max_shard_mb, metadata)
    for k, v in tensors.items():
        writer.add(k, v)
    return writer.close()


_ST_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.float64: "F64",
              torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
              torch.bool: "BOOL"}
_ST_TORCH = {v: k for k, v in _ST_DTYPES.items()}
_ST_SIZES = {"F32": 4, "BF16": 2, "F16": 2, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def stream_copy(src: str | Path, keys: list[str], dst: str | Path, dtype: torch.dtype | None = None,
                metadata: dict[str, str] | None = None) -> int:
    """Copy ``keys`` of safetensors file ``src`` into a new file ``dst``, one tensor at a time
    (floating tensors cast to ``dtype`` if given): the header is written from the shapes first,
    then each tensor's bytes, so only one tensor is ever held in memory. Returns bytes written."""
    from safetensors import safe_open

    dst = Path(dst)
    with safe_open(str(src), framework="pt") as f:
        entries, offset = {}, 0
        for k in keys:
            sl = f.get_slice(k)
            code, shape = sl.get_dtype(), list(sl.get_shape())
            if dtype is not None and code in ("F32", "BF16", "F16", "F64"):
                code = _ST_DTYPES[dtype]
            n = _ST_SIZES[code]
            for d in shape:
                n *= d
            entries[k] = {"dtype": code, "shape": shape, "data_offsets": [offset, offset + n]}
            offset += n
        header = {"__metadata__": metadata or {}, **entries} if metadata else dict(entries)
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        tmp = dst.parent / f".{dst.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            with tmp.open("wb") as out:
                out.write(len(raw).to_bytes(8, "little"))
                out.write(raw)
                for k in keys:
                    t = f.get_tensor(k)
                    if t.dtype != _ST_TORCH[entries[k]["dtype"]]:
                        t = t.to(_ST_TORCH[entries[k]["dtype"]])
                    out.write(memoryview(t.contiguous().reshape(-1).view(torch.uint8).numpy()))
                    del t
            os.replace(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)
    return offset


def weight_files(directory: str | Path, stem: str) -> list[Path]:
    """The files of ``{stem}.safetensors`` or of the shards its index lists; [] if neither.
    Raises ValueError for an unreadable index or one naming files outside the folder."""
    directory = Path(directory)
    single = directory / f"{stem}.safetensors"
    if single.is_file():
        return [single]
    index = directory / f"{stem}.safetensors.index.json"
    if not index.exists():
        return []
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        names = sorted(set(weight_map.values()))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"cannot read {index}: {e}") from e
    if any(not isinstance(n, str) or Path(n).name != n or not n.endswith(".safetensors") for n in names):
        raise ValueError(f"{index} names files outside its folder: {names}")
    missing = [n for n in names if not (directory / n).is_file()]
    if missing:
        raise ValueError(f"{index} lists shards that are not there: {missing}")
    return [directory / n for n in names]


@contextmanager
def replaced_dir(target: str | Path) -> Iterator[Path]:
    """A temporary folder that replaces ``target`` when the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def tensor_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of ``tensors`` (in name order)."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().contiguous().cpu()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def module_fingerprint(module: torch.nn.Module, sample: int = 256, exclude: torch.nn.Module | None = None) -> str:
    """A cheap identity of a model's weights: sha256 over every parameter's name and shape and
    ``sample`` evenly spaced values of it, rounded to bf16 so the same model in another dtype
    matches (a same-shape model with other weights differs). Parameters of ``exclude`` (an
    attached adapter) are left out, so the identity is the same attached or not."""
    skip = {id(p) for p in exclude.parameters()} if exclude is not None else set()
    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in module.named_parameters():
            if id(p) in skip:
                continue
            name = name.replace(".base.", ".")  # a projection wrapped by the adapter
            flat = p.detach().reshape(-1)
            k = min(sample, flat.numel())
            idx = (torch.arange(k, device=flat.device) * (flat.numel() - 1)) // max(k - 1, 1)
            h.update(f"{name}|{tuple(p.shape)}|".encode())
            h.update(memoryview(flat.index_select(0, idx).to(torch.bfloat16).float().cpu().numpy()))
    return h.hexdigest()[:32]


def atomic_save(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str]) -> Path:
    """One safetensors file written beside ``path`` and moved into place (all or nothing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
