"""The beacon adapter: a beacon embedding plus per-layer beacon projections.

``attach`` wraps the model's q/k/v/o projections in :class:`RoutedLinear` so beacon rows go
through the beacon copies and raw rows through the model's own weights; ``detach`` puts the
original modules back, so the model is restored bit for bit. Adapters are saved as a
directory with ``adapter_config.json`` and ``adapter.safetensors`` (beacon weights only).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from longctx import compat
from longctx.beacon.config import BeaconConfig
from longctx.safefiles import replaced_dir, tensor_checksum, weight_files, write_tensors

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter.safetensors"
INDEX_FILE = "adapter.safetensors.index.json"
FORMAT = "longctx-beacon/1"


class AdapterError(ValueError):
    """An adapter that cannot serve this model, or a damaged adapter file."""


class Router:
    """Which rows of the current forward are beacons; shared by all routed projections and set
    only through :meth:`BeaconAdapter.routing`."""

    def __init__(self) -> None:
        self.rows: tuple[torch.Tensor, torch.Tensor] | None = None  # (raw_idx, beacon_idx), flat


class RoutedLinear(nn.Module):
    """``base`` on raw rows, ``beacon`` on beacon rows; each runs only on its own rows."""

    def __init__(self, base: nn.Module, beacon: nn.Linear, router: Router):
        super().__init__()
        self.base = base
        self.beacon = beacon
        self.router = router

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = self.router.rows
        if rows is None:
            return self.base(x)
        raw, bcn = rows
        if raw.device != x.device:  # a model split over devices (device_map)
            raw, bcn = raw.to(x.device), bcn.to(x.device)
        flat = x.reshape(-1, x.shape[-1])
        out = flat.new_empty(flat.shape[0], self.beacon.out_features)
        if raw.numel():
            out.index_copy_(0, raw, self.base(flat.index_select(0, raw)).to(out.dtype))
        b = self.beacon(flat.index_select(0, bcn).to(self.beacon.weight.dtype))
        out.index_copy_(0, bcn, b.to(out.dtype))
        return out.view(*x.shape[:-1], -1)


def _copy_linear(base: nn.Module, dtype: torch.dtype | None) -> nn.Linear:
    weight = base.weight
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=getattr(base, "bias", None) is not None)
    layer = layer.to(device=weight.device, dtype=dtype or weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if layer.bias is not None:
            layer.bias.copy_(base.bias)
    return layer


class BeaconAdapter(nn.Module):
    """Beacon embedding ``[1, hidden]`` and, per layer, beacon copies of chosen projections."""

    def __init__(self, config: BeaconConfig, signature: dict[str, Any], embed: torch.Tensor, layers: list[dict[str, nn.Linear]]):
        super().__init__()
        self.config = config
        self.signature = dict(signature)
        self.embed = nn.Parameter(embed)
        self.layers = nn.ModuleList(nn.ModuleDict(d) for d in layers)
        self._attached: list[tuple[nn.Module, str, nn.Module]] = []
        self.router = Router()

    # ------------------------------------------------------------------ creation
    @classmethod
    def from_model(cls, model: nn.Module, config: BeaconConfig, dtype: torch.dtype | None = None) -> BeaconAdapter:
        """Copy-initialise: beacon projections copy the model's, the embedding copies EOS/BOS."""
        compat.check_beacon_support(model)
        if any(isinstance(m, RoutedLinear) for m in model.modules()):
            raise RuntimeError("the model already carries a beacon adapter; detach it first")
        emb = compat.embed_tokens(model).weight
        cfg = compat.text_config(model)
        token = cfg.eos_token_id if config.embed_init == "eos" else cfg.bos_token_id
        if isinstance(token, (list, tuple)):
            token = token[0]
        if token is None:
            raise AdapterError(f"the model config has no {config.embed_init}_token_id to initialise the beacon embedding")
        embed = emb[token : token + 1].detach().clone().to(dtype or emb.dtype)
        layers = []
        for attn in compat.attention_modules(model):
            layers.append({p: _copy_linear(getattr(attn, compat.PROJ_NAMES[p]), dtype) for p in config.projections})
        return cls(config, compat.model_signature(model), embed, layers)

    # ------------------------------------------------------------------ attach / detach
    @property
    def attached(self) -> bool:
        return bool(self._attached)

    def attach(self, model: nn.Module) -> None:
        """Route the model's projections through the beacon copies (weights untouched)."""
        if self.attached:
            raise RuntimeError("adapter is already attached; detach it first")
        self.check(model)
        for attn, projs in zip(compat.attention_modules(model), self.layers):
            for p, beacon in projs.items():
                name = compat.PROJ_NAMES[p]
                base = getattr(attn, name)
                if isinstance(base, RoutedLinear):
                    raise RuntimeError("the model already carries a beacon adapter")
                setattr(attn, name, RoutedLinear(base, beacon, self.router))
                self._attached.append((attn, name, base))

    def detach(self) -> None:
        """Put the original projection modules back."""
        for attn, name, base in self._attached:
            setattr(attn, name, base)
        self._attached = []
        self.router.rows = None

    @contextmanager
    def routing(self, rows: tuple[torch.Tensor, torch.Tensor] | None) -> Iterator[None]:
        """Within the block, the flat rows ``rows = (raw, beacon)`` of the forward go through the
        model's projections and the beacon copies respectively (``None``: every row is raw).
        Used by the streaming forward and by the activation-checkpoint replay of a layer."""
        saved = self.router.rows
        self.router.rows = None if rows is None or rows[1].numel() == 0 else rows
        try:
            yield
        finally:
            self.router.rows = saved

    def check(self, model: nn.Module) -> None:
        """Refuse a model whose shape differs from the one this adapter was made for."""
        theirs = compat.model_signature(model)
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim"):
            if self.signature.get(key) != theirs.get(key):
                raise AdapterError(
                    f"adapter was made for a model with {key}={self.signature.get(key)}, "
                    f"but this model has {key}={theirs.get(key)}"
                )

    # ------------------------------------------------------------------ save / load
    def save(self, directory: str | Path, dtype: torch.dtype | None = None, max_shard_mb: float | None = None) -> Path:
        """Write ``adapter_config.json`` and the weights (in ``dtype`` if given): one
        ``adapter.safetensors``, or shards of at most ``max_shard_mb`` MiB listed in
        ``adapter.safetensors.index.json``. The folder is replaced as a whole (a crash leaves the
        previous adapter intact); a folder holding other files is refused."""
        out = Path(directory)
        if out.exists():
            if not out.is_dir():
                raise AdapterError(f"cannot save an adapter to {out}: it is a file")
            foreign = sorted(p.name for p in out.iterdir() if not _is_adapter_file(p.name))
            if foreign:
                raise AdapterError(f"{out} holds files that are not part of an adapter ({foreign[:5]}); "
                                   "save into a new or an adapter folder")
        tensors = {k: v.detach().to(dtype or v.dtype).contiguous().cpu() for k, v in self.state_dict().items()}
        with replaced_dir(out) as tmp:
            write_tensors(tensors, tmp, WEIGHTS_FILE.removesuffix(".safetensors"), max_shard_mb, {"format": FORMAT})
            meta = {"format": FORMAT, "beacon": self.config.to_dict(), "base_model": self.signature,
                    "checksum": tensor_checksum(tensors)}
            (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
        return out

    @classmethod
    def load(cls, source: str | Path, model: nn.Module, dtype: torch.dtype | None = None) -> BeaconAdapter:
        """Load from a local directory or a hub id (safetensors only) and check it fits ``model``."""
        directory = _resolve(source)
        meta = _read_meta(directory)
        config = BeaconConfig.from_dict(meta["beacon"])
        tensors = _read_weights(directory)
        if "checksum" in meta and tensor_checksum(tensors) != meta["checksum"]:
            raise AdapterError(f"adapter weights in {directory} do not match the checksum in its {CONFIG_FILE}: "
                               "the files are damaged or come from different saves")
        adapter = cls.from_model(model, config, dtype=dtype)
        adapter.signature = dict(meta["base_model"])
        adapter.check(model)
        expected = adapter.state_dict()
        missing = sorted(set(expected) - set(tensors))
        extra = sorted(set(tensors) - set(expected))
        if missing or extra:
            raise AdapterError(f"adapter weights do not match its config: missing {missing[:5]}, unexpected {extra[:5]}")
        for k, v in tensors.items():
            if v.shape != expected[k].shape:
                raise AdapterError(f"adapter tensor {k} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}")
            if not torch.isfinite(v).all():
                raise AdapterError(f"adapter tensor {k} holds non-finite values")
        with torch.no_grad():
            for k, p in adapter.state_dict().items():
                p.copy_(tensors[k])
        return adapter

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def saved_config(source: str | Path) -> BeaconConfig:
    """The beacon settings an adapter (directory or hub id) was saved with, without its weights."""
    return BeaconConfig.from_dict(_read_meta(_resolve(source))["beacon"])


def _read_meta(directory: Path) -> dict[str, Any]:
    """``adapter_config.json`` of an adapter folder, checked for its format and sections."""
    try:
        meta = json.loads((directory / CONFIG_FILE).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise AdapterError(f"cannot read {directory / CONFIG_FILE}: {e}") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        fmt = meta.get("format") if isinstance(meta, dict) else None
        raise AdapterError(f"{directory} is not a longctx beacon adapter (format {fmt!r})")
    if not isinstance(meta.get("beacon"), dict) or not isinstance(meta.get("base_model"), dict):
        raise AdapterError(f"{directory / CONFIG_FILE} lacks its 'beacon' or 'base_model' section")
    return meta


def _is_adapter_file(name: str) -> bool:
    return name in (CONFIG_FILE, WEIGHTS_FILE, INDEX_FILE) or (name.startswith("adapter-") and name.endswith(".safetensors"))


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """The adapter's tensors from ``adapter.safetensors`` or from the shards its index lists."""
    try:
        files = weight_files(directory, WEIGHTS_FILE.removesuffix(".safetensors"))
    except ValueError as e:
        raise AdapterError(str(e)) from e
    if not files:
        raise AdapterError(f"no {WEIGHTS_FILE} (or {INDEX_FILE}) in {directory}")
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            tensors.update(load_file(str(f)))
        except (SafetensorError, OSError, ValueError) as e:
            raise AdapterError(f"cannot read adapter weights {f}: {e}") from e
    return tensors


def _resolve(source: str | Path) -> Path:
    path = Path(source)
    if path.exists():
        return path
    if str(source).count("/") == 1 and not str(source).startswith((".", "/")):
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(source), allow_patterns=[CONFIG_FILE, WEIGHTS_FILE, INDEX_FILE, "adapter-*.safetensors"]))
    raise AdapterError(f"no adapter at {source}: not a directory and not a hub id")
