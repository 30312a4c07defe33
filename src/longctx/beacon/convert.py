"""Import and export of checkpoints in the reference Activation Beacon format (docs/convert.md).

A reference checkpoint is a whole HuggingFace model directory whose state dict also holds
``model.beacon_embed_tokens.weight`` and ``model.layers.{i}.self_attn.beacon_{q,k,v,o}_proj.*``
and whose config holds ``beacon_*`` fields. ``import_reference`` splits it into a longctx
adapter and (optionally) a plain base model; ``export_reference`` does the reverse.
Only safetensors files are read (never pickle); the ``beacon_*`` fields are mapped in
:mod:`longctx.beacon.reference_config`.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from longctx.beacon.adapter import CONFIG_FILE, FORMAT, WEIGHTS_FILE
from longctx.beacon.reference_config import ConversionError, config_from_reference, config_to_reference
from longctx.safefiles import replaced_dir, stream_copy, tensor_checksum, weight_files, write_tensors

__all__ = ["ConversionError", "config_from_reference", "config_to_reference", "export_reference", "import_reference"]

_BEACON_KEY = re.compile(r"^model\.(beacon_embed_tokens\.weight|layers\.(\d+)\.self_attn\.beacon_([qkvo])_proj\.(weight|bias))$")
_STOCK_ARCH = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
               "qwen3": "Qwen3ForCausalLM"}
# config fields that point at remote code or belong to the beacon: never in the plain base config
_DROP = ("auto_map", "custom_pipelines", "enable_beacon", "retrieval_method", "retrieval_topk", "retrieval_key_length")
_TOKENIZER_FILES = ("special_tokens_map.json", "generation_config.json", "chat_template.jinja", "vocab.json",
                    "merges.txt", "added_tokens.json")
BASE_SHARD_MB = 4096  # shards of an exported model (7B: a few files, never one 14 GB file)


def _model_files(directory: Path) -> list[Path]:
    """Only the model's weights: model.safetensors or the shards of model.safetensors.index.json."""
    try:
        files = weight_files(directory, "model")
    except ValueError as e:
        raise ConversionError(str(e)) from e
    if files:
        return files
    if list(directory.glob("*.bin")) or list(directory.glob("*.pt")):
        raise ConversionError(f"{directory} holds only pickle weights (.bin/.pt); longctx reads safetensors only. "
                              "Convert them with a trusted tool first.")
    raise ConversionError(f"no model.safetensors (or model.safetensors.index.json) in {directory}")


def _signature(cfg: dict[str, Any]) -> dict[str, Any]:
    missing = [k for k in ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads") if k not in cfg]
    if missing:
        raise ConversionError(f"config.json lacks {missing}")
    heads = cfg["num_attention_heads"]
    return {"model_type": cfg["model_type"], "hidden_size": cfg["hidden_size"],
            "num_hidden_layers": cfg["num_hidden_layers"], "num_attention_heads": heads,
            "num_key_value_heads": cfg.get("num_key_value_heads") or heads,
            "head_dim": cfg.get("head_dim") or cfg["hidden_size"] // heads}


def _expected_shape(sig: dict[str, Any], proj: str, kind: str) -> tuple[int, ...]:
    hidden, d = sig["hidden_size"], sig["head_dim"]
    out_in = {"q": (sig["num_attention_heads"] * d, hidden), "k": (sig["num_key_value_heads"] * d, hidden),
              "v": (sig["num_key_value_heads"] * d, hidden), "o": (hidden, sig["num_attention_heads"] * d)}[proj]
    return out_in if kind == "weight" else out_in[:1]


def _check_output(ref: Path, out: Path, force: bool) -> None:
    r, o = ref.resolve(), out.resolve()
    if o == r or r in o.parents or o in r.parents:
        raise ConversionError(f"the output {out} must lie outside the reference checkpoint {ref} (and not contain it)")
    if out.exists():
        if not out.is_dir():
            raise ConversionError(f"the output {out} is a file")
        if any(out.iterdir()) and not force:
            raise ConversionError(f"the output {out} is not empty; choose a new folder or pass --force to replace it")


def _read_beacon(files: list[Path], sig: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The beacon tensors only (the base weights are not read here), checked for shape and values."""
    beacon: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as st:
                for key in st.keys():
                    m = _BEACON_KEY.match(key)
                    if not m:
                        continue
                    t = st.get_tensor(key)
                    if m.group(1) == "beacon_embed_tokens.weight":
                        name, shape = "embed", (1, sig["hidden_size"])
                    else:
                        layer = int(m.group(2))
                        if layer >= sig["num_hidden_layers"]:
                            raise ConversionError(f"{key}: layer {layer} does not exist (the model has "
                                                  f"{sig['num_hidden_layers']} layers)")
                        name = f"layers.{layer}.{m.group(3)}.{m.group(4)}"
                        shape = _expected_shape(sig, m.group(3), m.group(4))
                    if tuple(t.shape) != shape:
                        raise ConversionError(f"{key} has shape {tuple(t.shape)}, expected {shape}")
                    if t.is_floating_point() and not torch.isfinite(t).all():
                        raise ConversionError(f"{key} holds non-finite values (NaN or inf)")
                    beacon[name] = t
        except SafetensorError as e:
            raise ConversionError(f"cannot read {f}: {e}") from e
    return beacon


def import_reference(ref_dir: str | Path, out_dir: str | Path, write_base: bool = False,
                     dtype: torch.dtype | None = None, force: bool = False) -> Path:
    """Write a longctx adapter (and, with ``write_base``, a plain base model in ``out_dir/base``).

    Reads only the model's weights; the base is copied tensor by tensor into shards that mirror
    the input's, so about one tensor is held at a time; the output folder appears whole or not at all; an existing non-empty output is
    replaced only with ``force``.
    """
    ref, out = Path(ref_dir), Path(out_dir)
    if not (ref / "config.json").is_file():
        raise ConversionError(f"{ref} has no config.json: not a checkpoint folder")
    try:
        cfg = json.loads((ref / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConversionError(f"cannot read {ref / 'config.json'}: {e}") from e
    if not isinstance(cfg, dict):
        raise ConversionError(f"{ref / 'config.json'} is not a JSON object")
    config = config_from_reference(cfg)
    files = _model_files(ref)
    sig = _signature(cfg)
    _check_output(ref, out, force)
    tokenizer_files = _tokenizer_files(ref) if write_base else []
    beacon = _read_beacon(files, sig)
    if "embed" not in beacon:
        raise ConversionError("the checkpoint has no model.beacon_embed_tokens.weight")
    for i in range(sig["num_hidden_layers"]):
        for p in config.projections:
            if f"layers.{i}.{p}.weight" not in beacon:
                raise ConversionError(f"layer {i} has no beacon_{p}_proj.weight although beacon_param lists {p!r}")
    stray = sorted({k.split(".")[2] for k in beacon if k.startswith("layers.")} - set(config.projections))
    if stray:
        raise ConversionError(f"the checkpoint holds beacon projections {stray} that beacon_param does not list")
    if dtype is not None:
        beacon = {k: v.to(dtype) for k, v in beacon.items()}
    with replaced_dir(out) as tmp:
        write_tensors(beacon, tmp, WEIGHTS_FILE.removesuffix(".safetensors"), metadata={"format": FORMAT})
        meta = {"format": FORMAT, "beacon": config.to_dict(), "base_model": sig, "checksum": tensor_checksum(beacon),
                "converted_from": str(ref), "base_model_path": str(out / "base") if write_base else str(ref)}
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
        if write_base:
            _write_plain_model(cfg, files, tokenizer_files, tmp / "base", dtype)
    return out


def _tokenizer_files(ref: Path) -> list[Path]:
    """Tokenizer files to copy: real files, or links into the hub cache's own blob store."""
    out = []
    root = ref.resolve()
    blobs = ref.parent.parent / "blobs" if ref.parent.name == "snapshots" else None
    for f in sorted(ref.iterdir()):
        if not (f.name.startswith("tokenizer") or f.name in _TOKENIZER_FILES) or f.is_dir():
            continue
        if f.is_symlink():
            target = f.resolve()
            inside = root in target.parents or (blobs is not None and blobs.resolve() in target.parents)
            if not inside:
                raise ConversionError(f"{f} is a link to {target}, outside the checkpoint; copy the real file there")
        if f.is_file():
            out.append(f)
    return out


def _write_plain_model(cfg: dict[str, Any], files: list[Path], tokenizer_files: list[Path], out: Path,
                       dtype: torch.dtype | None) -> None:
    """The base model without beacon tensors: each input shard's base tensors become one output
    shard, copied tensor by tensor (at most one tensor in memory)."""
    out.mkdir(parents=True, exist_ok=True)
    parts = []
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            keys = [k for k in st.keys() if not _BEACON_KEY.match(k)]
        if keys:
            parts.append((f, keys))
    names = (["model.safetensors"] if len(parts) == 1
             else [f"model-{i + 1:05d}-of-{len(parts):05d}.safetensors" for i in range(len(parts))])
    weight_map, total = {}, 0
    for name, (f, keys) in zip(names, parts):
        total += stream_copy(f, keys, out / name, dtype, {"format": "pt"})
        weight_map.update(dict.fromkeys(keys, name))
    if len(parts) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    plain = {k: v for k, v in cfg.items() if not k.startswith("beacon_") and k not in _DROP}
    if plain["model_type"] in _STOCK_ARCH:
        plain["architectures"] = [_STOCK_ARCH[plain["model_type"]]]
    (out / "config.json").write_text(json.dumps(plain, indent=2))
    for f in tokenizer_files:
        if f.name == "tokenizer_config.json":
            try:
                tc = json.loads(f.read_text())
            except json.JSONDecodeError as e:
                raise ConversionError(f"cannot read {f}: {e}") from e
            tc.pop("auto_map", None)
            (out / f.name).write_text(json.dumps(tc, indent=2))
        else:
            shutil.copyfile(f, out / f.name)


def export_reference(adapter, model, out_dir: str | Path, tokenizer: Any = None, force: bool = False,
                     shard_mb: float = BASE_SHARD_MB) -> Path:
    """Write ``model`` + ``adapter`` as one reference-format checkpoint directory (a non-empty
    ``out_dir`` is replaced only with ``force``)."""
    from longctx import compat

    adapter.check(model)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not force)):
        raise ConversionError(f"the output {out} exists; choose a new folder or pass --force to replace it")
    if adapter.attached:
        raise ConversionError("detach the adapter before exporting (the model's own weights are written)")
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if compat.text_config(model).tie_word_embeddings:
        tensors.pop("lm_head.weight", None)
    for k, v in adapter.state_dict().items():
        if k == "embed":
            tensors["model.beacon_embed_tokens.weight"] = v.detach().cpu().contiguous()
        else:
            _, i, p, kind = k.split(".")
            tensors[f"model.layers.{i}.self_attn.beacon_{p}_proj.{kind}"] = v.detach().cpu().contiguous()
    cfg = model.config.to_dict()
    cfg.update(config_to_reference(adapter.config))
    with replaced_dir(out) as tmp:
        write_tensors(tensors, tmp, "model", shard_mb, {"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, default=str))
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return out
