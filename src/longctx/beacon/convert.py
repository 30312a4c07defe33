"""Import and export of checkpoints in the reference Activation Beacon format (SPEC 2.5).

A reference checkpoint is a whole HuggingFace model directory whose state dict also holds
``model.beacon_embed_tokens.weight`` and ``model.layers.{i}.self_attn.beacon_{q,k,v,o}_proj.*``
and whose config holds ``beacon_*`` fields. ``import_reference`` splits it into a longctx
adapter and (optionally) a plain base model; ``export_reference`` does the reverse.
Only safetensors files are read (never pickle).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from longctx.beacon.adapter import CONFIG_FILE, FORMAT, WEIGHTS_FILE
from longctx.beacon.config import BeaconConfig, BeaconConfigError

_BEACON_KEY = re.compile(r"^model\.(beacon_embed_tokens\.weight|layers\.(\d+)\.self_attn\.beacon_([qkvo])_proj\.(weight|bias))$")
_STOCK_ARCH = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
               "qwen3": "Qwen3ForCausalLM"}
_SCHEMES = {"full-coverage": "full-coverage", "step-expansion": "step-expansion", "segmentation": "segmentation"}
_FIELDS = ("beacon_window", "beacon_stride", "beacon_attn", "beacon_ratio", "beacon_ratio_mix", "beacon_param",
           "beacon_embed_init", "beacon_sink_size", "beacon_attend_prev", "beacon_pos")


class ConversionError(ValueError):
    """A reference checkpoint longctx cannot represent, or a malformed one."""


def config_from_reference(cfg: dict[str, Any]) -> BeaconConfig:
    """Map the reference ``beacon_*`` config fields to a :class:`BeaconConfig`."""
    if "beacon_window" not in cfg:
        raise ConversionError("config.json has no beacon_window: not a reference beacon checkpoint")
    window = int(cfg["beacon_window"])
    stride = int(cfg.get("beacon_stride", window))
    if stride != window:
        raise ConversionError(f"beacon_stride={stride} differs from beacon_window={window}; longctx supports stride == window")
    attn = cfg.get("beacon_attn", "full-coverage")
    if attn not in _SCHEMES:
        raise ConversionError(f"beacon_attn={attn!r} is not supported (supported: {sorted(_SCHEMES)})")
    ratios = cfg.get("beacon_ratio", [8])
    ratios = [int(r) for r in (ratios if isinstance(ratios, list) else [ratios])]
    params = cfg.get("beacon_param", ["q", "k", "v"])
    params = [params] if isinstance(params, str) else list(params)
    extra = sorted(k for k in cfg if k.startswith("beacon_") and k not in _FIELDS)
    if extra:
        raise ConversionError(f"unsupported reference config fields: {extra}")
    try:
        return BeaconConfig(
            window=window, ratios=ratios, ratio_mix=cfg.get("beacon_ratio_mix", "step-random"),
            placement=cfg.get("beacon_pos", "interleave"), scheme=_SCHEMES[attn], projections=params,
            embed_init=cfg.get("beacon_embed_init", "eos"), sink=int(cfg.get("beacon_sink_size", 0)),
            attend_prev=bool(cfg.get("beacon_attend_prev", True)),
        )
    except BeaconConfigError as e:
        raise ConversionError(f"reference config cannot be represented: {e}") from e


def config_to_reference(config: BeaconConfig) -> dict[str, Any]:
    return {"beacon_window": config.window, "beacon_stride": config.window, "beacon_attn": config.scheme,
            "beacon_ratio": list(config.ratios), "beacon_ratio_mix": config.ratio_mix,
            "beacon_param": list(config.projections), "beacon_embed_init": config.embed_init,
            "beacon_sink_size": config.sink, "beacon_attend_prev": config.attend_prev, "beacon_pos": config.placement}


def _weight_files(directory: Path) -> list[Path]:
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        if list(directory.glob("*.bin")) or list(directory.glob("*.pt")):
            raise ConversionError(f"{directory} holds only pickle weights (.bin/.pt); longctx reads safetensors only. "
                                  "Convert them with a trusted tool first.")
        raise ConversionError(f"no .safetensors weights in {directory}")
    return files


def _signature(cfg: dict[str, Any]) -> dict[str, Any]:
    heads = cfg["num_attention_heads"]
    return {"model_type": cfg["model_type"], "hidden_size": cfg["hidden_size"],
            "num_hidden_layers": cfg["num_hidden_layers"], "num_attention_heads": heads,
            "num_key_value_heads": cfg.get("num_key_value_heads", heads),
            "head_dim": cfg.get("head_dim") or cfg["hidden_size"] // heads}


def import_reference(ref_dir: str | Path, out_dir: str | Path, write_base: bool = False,
                     dtype: torch.dtype | None = None) -> Path:
    """Write a longctx adapter (and, with ``write_base``, a plain base model in ``out_dir/base``)."""
    ref, out = Path(ref_dir), Path(out_dir)
    cfg = json.loads((ref / "config.json").read_text())
    config = config_from_reference(cfg)
    beacon: dict[str, torch.Tensor] = {}
    base: dict[str, torch.Tensor] = {}
    for f in _weight_files(ref):
        with safe_open(str(f), framework="pt") as st:
            for key in st.keys():
                t = st.get_tensor(key)
                m = _BEACON_KEY.match(key)
                if not m:
                    base[key] = t
                elif m.group(1) == "beacon_embed_tokens.weight":
                    beacon["embed"] = t
                else:
                    beacon[f"layers.{m.group(2)}.{m.group(3)}.{m.group(4)}"] = t
    if "embed" not in beacon:
        raise ConversionError("the checkpoint has no model.beacon_embed_tokens.weight")
    if beacon["embed"].dim() != 2 or beacon["embed"].shape[0] != 1:
        raise ConversionError(f"beacon embedding has shape {tuple(beacon['embed'].shape)}, expected [1, hidden]")
    n_layers = cfg["num_hidden_layers"]
    for i in range(n_layers):
        for p in config.projections:
            if f"layers.{i}.{p}.weight" not in beacon:
                raise ConversionError(f"layer {i} has no beacon_{p}_proj.weight although beacon_param lists {p!r}")
    stray = sorted({k.split(".")[2] for k in beacon if k.startswith("layers.")} - set(config.projections))
    if stray:
        raise ConversionError(f"the checkpoint holds beacon projections {stray} that beacon_param does not list")
    if dtype is not None:
        beacon = {k: v.to(dtype) for k, v in beacon.items()}
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in beacon.items()}, str(out / WEIGHTS_FILE), metadata={"format": FORMAT})
    meta = {"format": FORMAT, "beacon": config.to_dict(), "base_model": _signature(cfg),
            "converted_from": str(ref), "base_model_path": str(out / "base") if write_base else str(ref)}
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
    if write_base:
        _write_plain_model(ref, cfg, base, out / "base")
    return out


def _write_plain_model(ref: Path, cfg: dict[str, Any], tensors: dict[str, torch.Tensor], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    plain = {k: v for k, v in cfg.items() if not k.startswith("beacon_") and k != "auto_map"}
    if plain["model_type"] in _STOCK_ARCH:
        plain["architectures"] = [_STOCK_ARCH[plain["model_type"]]]
    (out / "config.json").write_text(json.dumps(plain, indent=2))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "model.safetensors"), metadata={"format": "pt"})
    for name in ref.iterdir():
        if name.is_file() and (name.name.startswith("tokenizer") or name.name in (
                "special_tokens_map.json", "generation_config.json", "chat_template.jinja", "vocab.json", "merges.txt")):
            shutil.copy(name, out / name.name)


def export_reference(adapter, model, out_dir: str | Path, tokenizer: Any = None) -> Path:
    """Write ``model`` + ``adapter`` as one reference-format checkpoint directory."""
    from longctx import compat

    adapter.check(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
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
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    cfg = model.config.to_dict()
    cfg.update(config_to_reference(adapter.config))
    (out / "config.json").write_text(json.dumps(cfg, indent=2, default=str))
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out
