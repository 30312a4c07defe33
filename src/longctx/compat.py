"""The one place that touches transformers internals: cache tensors, rotary, attention hooks.

Tested against transformers 5.x (see pyproject.toml for the pinned range). Every other
module goes through these functions, so a change in transformers is fixed here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface, DynamicCache

ATTN_NAME = "longctx_beacon"
STEP_KWARG = "longctx_step"
PROJ_NAMES = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj"}


@dataclass
class Step:
    """What the attention function and a checkpoint replay read of one forward (passed to the
    decoder as the ``longctx_step`` keyword): the explicit mask or None (causal), the flat
    (raw, beacon) row split, and an id when activation checkpointing may replay the step."""

    mask: torch.Tensor | None = None
    rows: tuple[torch.Tensor, torch.Tensor] | None = None
    uid: int | None = None


# ----------------------------------------------------------------------------- model parts
def decoder(model: nn.Module) -> nn.Module:
    """The base decoder (embeddings, layers, final norm) of a causal LM."""
    return model.get_decoder()


def layers(model: nn.Module) -> list[nn.Module]:
    return list(decoder(model).layers)


def attention_modules(model: nn.Module) -> list[nn.Module]:
    return [layer.self_attn for layer in layers(model)]


def embed_tokens(model: nn.Module) -> nn.Module:
    return model.get_input_embeddings()


def lm_head(model: nn.Module) -> nn.Module:
    return model.get_output_embeddings()


def text_config(model: nn.Module) -> Any:
    return model.config.get_text_config(decoder=True)


def model_signature(model: nn.Module) -> dict[str, Any]:
    """Shape facts an adapter or a saved memory must match."""
    c = text_config(model)
    return {
        "model_type": c.model_type,
        "hidden_size": c.hidden_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": getattr(c, "num_key_value_heads", c.num_attention_heads),
        "head_dim": getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads,
    }


def max_positions(model: nn.Module) -> int:
    return int(text_config(model).max_position_embeddings)


# ----------------------------------------------------------------------------- cache
def new_cache() -> DynamicCache:
    return ReplayCache()


class ReplayCache(DynamicCache):
    """A DynamicCache whose update is idempotent per (step, layer).

    Activation checkpointing replays a layer's forward during backward; a plain cache would
    append the window's keys a second time. Here the first update of a step records the prefix
    and appends; a replay of the same step returns ``prefix + new`` without changing the cache.

    Without gradients, appends write into a per-layer buffer with spare room (grown by half when
    full) and the layer's keys/values are views of it, so decoding does not copy the whole cache
    at every token (``torch.cat`` was ~17% of a decode step); a cache replaced by compaction gets
    a new buffer at its next append.
    """

    HEADROOM = 256  # spare rows allocated beyond what an append needs

    def __init__(self) -> None:
        super().__init__()
        self._prefix: dict[tuple[int, int], tuple[torch.Tensor | None, torch.Tensor | None]] = {}
        self._buffers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        step = (kwargs.get("kwargs") or {}).get(STEP_KWARG)
        uid = getattr(step, "uid", None)
        if uid is None:
            if not torch.is_grad_enabled() and layer_idx < len(self.layers) and self.layers[layer_idx].is_initialized:
                return self._append(key_states, value_states, layer_idx)
            return super().update(key_states, value_states, layer_idx, *args, **kwargs)
        key = (uid, layer_idx)
        if key in self._prefix:
            pk, pv = self._prefix[key]
            if pk is None:
                return key_states, value_states
            return torch.cat((pk, key_states), dim=-2), torch.cat((pv, value_states), dim=-2)
        layer = self.layers[layer_idx] if layer_idx < len(self.layers) else None
        held = layer is not None and layer.is_initialized and layer.keys.numel() > 0
        self._prefix[key] = (layer.keys, layer.values) if held else (None, None)
        if held and not torch.is_grad_enabled():
            return self._append(key_states, value_states, layer_idx)
        return super().update(key_states, value_states, layer_idx, *args, **kwargs)

    def _append(self, keys: torch.Tensor, values: torch.Tensor, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        layer = self.layers[index]
        n, m = layer.keys.shape[-2], keys.shape[-2]
        buf = self._buffers.get(index)
        fits = (buf is not None and layer.keys.data_ptr() == buf[0].data_ptr()
                and layer.values.data_ptr() == buf[1].data_ptr() and buf[0].shape[-2] >= n + m
                and buf[0].shape[:2] == keys.shape[:2] and buf[0].dtype == keys.dtype)
        if not fits:  # first append, after compaction replaced the tensors, or full
            cap = n + m + max(self.HEADROOM, (n + m) // 2)
            kb = keys.new_empty(*keys.shape[:2], cap, keys.shape[-1])
            vb = values.new_empty(*values.shape[:2], cap, values.shape[-1])
            kb[:, :, :n].copy_(layer.keys)
            vb[:, :, :n].copy_(layer.values)
            buf = self._buffers[index] = (kb, vb)
        buf[0][:, :, n : n + m].copy_(keys)
        buf[1][:, :, n : n + m].copy_(values)
        layer.keys, layer.values = buf[0][:, :, : n + m], buf[1][:, :, : n + m]
        return layer.keys, layer.values


Scope = Callable[[Step | None], AbstractContextManager]


class CheckpointedLayer(nn.Module):
    """Wraps a decoder layer in non-reentrant activation checkpointing.

    The layer runs, in the first pass and in the replay, inside ``scope(step)`` (the caller's
    per-step state, e.g. which rows are beacons) and ``context()`` (the attention
    implementation of the first pass), so the recomputation sees what the first pass saw.
    """

    def __init__(self, layer: nn.Module, scope: Scope, context):
        super().__init__()
        self.layer = layer
        self.scope = scope
        self.context = context

    def forward(self, hidden_states, *args, **kwargs):
        if not torch.is_grad_enabled():
            return self.layer(hidden_states, *args, **kwargs)
        step = kwargs.get(STEP_KWARG)

        def run(h):
            with self.scope(step), self.context():
                return self.layer(h, *args, **kwargs)

        from torch.utils.checkpoint import checkpoint

        return checkpoint(run, hidden_states, use_reentrant=False)


def set_layer_checkpointing(model: nn.Module, scope: Scope) -> list[tuple[nn.ModuleList, int, nn.Module]]:
    """Wrap every decoder layer in :class:`CheckpointedLayer`; returns what to restore."""
    mods = decoder(model).layers
    saved = []
    for i, layer in enumerate(mods):
        if isinstance(layer, CheckpointedLayer):
            continue
        mods[i] = CheckpointedLayer(layer, scope, lambda: attention_implementation(model))
        saved.append((mods, i, layer))
    return saved


def restore_layers(saved: list[tuple[nn.ModuleList, int, nn.Module]]) -> None:
    for mods, i, layer in saved:
        mods[i] = layer


def cache_from_tensors(kv: list[tuple[torch.Tensor, torch.Tensor]]) -> DynamicCache:
    cache = ReplayCache()
    for i, (k, v) in enumerate(kv):
        cache.update(k, v, i)
    return cache


def cache_kv(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer (keys, values), each ``[batch, kv_heads, seq, head_dim]``."""
    return [(layer.keys, layer.values) for layer in cache.layers if layer.is_initialized]


def set_cache_kv(cache: DynamicCache, index: int, keys: torch.Tensor, values: torch.Tensor) -> None:
    cache.layers[index].keys = keys
    cache.layers[index].values = values


def cache_length(cache: DynamicCache) -> int:
    return cache.get_seq_length() if cache.layers and cache.layers[0].is_initialized else 0


def output_cache(out: Any) -> DynamicCache:
    """The cache a stock model's forward returned (``cache`` in transformers 5, ``past_key_values`` before)."""
    return out.cache if hasattr(out, "cache") else out.past_key_values


def clear_quantization(model: nn.Module) -> None:
    """Drop the markers a GGUF (dequantised) load leaves, so ``save_pretrained`` writes a plain model."""
    model.hf_quantizer = None
    for attr in ("is_quantized", "_is_quantized"):
        if hasattr(model, attr):
            try:
                setattr(model, attr, False)
            except AttributeError:
                pass
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")


def rope_parameters(config: Any) -> dict[str, Any]:
    """The config's RoPE settings as a dict (``rope_parameters`` in transformers 5), theta included."""
    params = dict(getattr(config, "rope_parameters", None) or {"rope_type": "default"})
    params.setdefault("rope_theta", float(getattr(config, "rope_theta", 10000.0)))
    return params


def set_rope_parameters(config: Any, params: dict[str, Any]) -> None:
    config.rope_parameters = params


# ----------------------------------------------------------------------------- generation
@contextmanager
def stream_generation(model: nn.Module, step) -> Iterator[None]:
    """Within the block, the stock ``model.generate`` decodes through ``step``: the model's
    forward hands the ids the generation loop feeds it (the whole prompt first, then each new
    token; the loop slices them as for any cache) and its attention mask to ``step(ids, mask)``,
    which returns logits ``[B, n, V]`` (the beacon stream); the cache generate carries is passed
    back untouched (the beacon memory is the real cache). Logits processors, stopping criteria,
    streamers, scores and generation configs all work as in stock transformers."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    def forward(input_ids=None, attention_mask=None, cache=None, **_: Any):
        return CausalLMOutputWithPast(logits=step(input_ids, attention_mask), cache=cache)

    model.forward = forward  # an instance attribute: nn.Module.__call__ uses it
    try:
        yield
    finally:
        del model.forward


# ----------------------------------------------------------------------------- rotary
# families whose RoPE rotates interleaved pairs (x0,x1),(x2,x3).. instead of halves: re-rotating
# their cached keys with the half-split rule would be silently wrong
INTERLEAVED_ROPE = ("cohere", "cohere2", "gptj", "codegen", "glm", "chatglm", "glm4")
TESTED = ("llama", "mistral", "qwen2", "qwen3")


def check_beacon_support(model: nn.Module) -> None:
    """Refuse a model the beacon stream cannot serve; warn for an untested RoPE family."""
    import warnings

    mtype = getattr(text_config(model), "model_type", "?")
    if mtype in INTERLEAVED_ROPE:
        raise ValueError(f"model type {mtype!r} uses interleaved RoPE; longctx re-rotates cached keys with the "
                         f"half-split layout of {', '.join(TESTED)} and cannot serve it")
    try:
        attention_modules(model)
        rot = decoder(model).rotary_emb
        rot.inv_freq  # noqa: B018 - the attribute must exist
    except AttributeError as e:
        raise ValueError(f"model type {mtype!r} has no rotary position embedding (RoPE) that longctx can use; "
                         f"beacon compression re-positions keys and needs a RoPE decoder ({', '.join(TESTED)})") from e
    if mtype not in TESTED:
        warnings.warn(f"model type {mtype!r} is untested with longctx (tested: {', '.join(TESTED)})", stacklevel=3)


def rotary_inv_freq(model: nn.Module) -> torch.Tensor:
    """Inverse frequencies of the model's RoPE (after any static scaling), fp32."""
    rot = decoder(model).rotary_emb
    if getattr(rot, "rope_type", "default") == "dynamic":
        raise NotImplementedError("dynamic NTK RoPE changes with length; beacon needs a static RoPE")
    return rot.inv_freq.detach().float()


def refresh_rotary(model: nn.Module) -> None:
    """Rebuild the model's rotary embedding from its (changed) config, e.g. after RoPE scaling."""
    dec = decoder(model)
    old = dec.rotary_emb
    dec.rotary_emb = type(old)(config=text_config(model)).to(old.inv_freq.device)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


def rope_rotate(keys: torch.Tensor, positions: torch.Tensor | int, inv_freq: torch.Tensor) -> torch.Tensor:
    """Rotate keys ``[B, H, S, D]`` by ``positions`` ``[B, S]`` (any integers, may be negative), or
    all of them by one integer ``positions`` (one cos/sin row instead of one per key).

    Uses the half-split RoPE layout of Llama/Mistral/Qwen; RoPE rotations compose, so a key
    rotated at position p and then by d equals the key rotated at p + d. Computed in fp32.
    """
    rot_dim = inv_freq.numel() * 2
    if isinstance(positions, int):
        freqs = inv_freq.float() * positions  # [rot/2], broadcast over every key
    else:
        freqs = (positions.to(inv_freq.device).float().unsqueeze(-1) * inv_freq).unsqueeze(1)  # [B, 1, S, rot/2]
    emb = torch.cat((freqs, freqs), dim=-1)
    k = keys.float()
    k_rot, k_pass = k[..., :rot_dim], k[..., rot_dim:]
    k_rot = k_rot * emb.cos() + _rotate_half(k_rot) * emb.sin()
    return torch.cat((k_rot, k_pass), dim=-1).to(keys.dtype) if k_pass.numel() else k_rot.to(keys.dtype)


# ----------------------------------------------------------------------------- attention
def _flash_with_lse(query: torch.Tensor):
    """The flash kernel that also returns the log-sum-exp: CPU any dtype, CUDA fp16/bf16 only."""
    if query.device.type == "cpu":
        return getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if query.device.type == "cuda" and query.dtype in (torch.float16, torch.bfloat16) and query.shape[-1] <= 256:
        return getattr(torch.ops.aten, "_scaled_dot_product_flash_attention", None)
    return None


def _prefix_causal(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float) -> torch.Tensor:
    """Queries are the last rows of the keys: full attention to the prefix, causal on the rest.

    Without gradients (CPU, or CUDA in half precision), two flash calls (prefix unmasked,
    square causal) merged by their log-sum-exp skip the masked half instead of computing a
    masked rectangle.
    """
    q_len, kv_len = query.shape[2], key.shape[2]
    groups = query.shape[1] // key.shape[1]
    flash = _flash_with_lse(query)
    if flash is not None and not torch.is_grad_enabled():
        if groups > 1 and query.device.type != "cpu":  # the CPU kernel maps grouped heads itself
            key = key.repeat_interleave(groups, dim=1)
            value = value.repeat_interleave(groups, dim=1)
        p = kv_len - q_len
        o1, l1 = flash(query, key[:, :, :p], value[:, :, :p], 0.0, False, scale=scale)[:2]
        o2, l2 = flash(query, key[:, :, p:], value[:, :, p:], 0.0, True, scale=scale)[:2]
        # softmax-weighted merge: o1 * e^l1 / (e^l1 + e^l2) + o2 * e^l2 / (...) = lerp(o1, o2, sigmoid(l2 - l1))
        return torch.lerp(o1, o2, torch.sigmoid(l2 - l1).unsqueeze(-1).to(o1.dtype))
    if query.device.type == "cuda":
        # lower-right causal bias: the memory-efficient kernel applies it without a dense mask
        from torch.nn.attention.bias import causal_lower_right

        if groups > 1:
            key = key.repeat_interleave(groups, dim=1)
            value = value.repeat_interleave(groups, dim=1)
        return F.scaled_dot_product_attention(query, key, value, attn_mask=causal_lower_right(q_len, kv_len), scale=scale)
    mask = torch.ones(q_len, kv_len, dtype=torch.bool, device=query.device).tril(kv_len - q_len)
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scale, enable_gqa=groups > 1)


def _matmul_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float,
                      mask: torch.Tensor | None) -> torch.Tensor:
    """Two batched matmuls with an fp32 softmax, causal over the last ``q`` keys unless ``mask``.

    Used for a few queries (decoding: the CPU flash kernel is slow for q=1) and for training
    windows on CPU, where the flash kernel's backward is several times slower than matmuls.
    """
    B, H, q, D = query.shape
    KH, kv = key.shape[1], key.shape[2]
    G = H // KH
    scores = torch.matmul((query * scale).reshape(B, KH, G * q, D), key.transpose(-1, -2)).view(B, KH, G, q, kv)
    if mask is not None:
        scores = scores.masked_fill(~mask.view(B, 1, 1, q, kv), float("-inf"))
    elif q > 1:
        causal = torch.ones(q, kv, dtype=torch.bool, device=query.device).tril(kv - q)
        scores = scores.masked_fill(~causal, float("-inf"))
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype).view(B, KH, G * q, kv)
    return torch.matmul(probs, value).view(B, H, q, D)


SMALL_QUERY = 16
MATMUL_TRAIN_SCORES = 2**26  # score elements per batch row under which CPU training uses matmul attention


def beacon_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention for beacon streaming: causal over ``[sink | memory | window]`` by default.

    The step may carry an explicit bool mask ``[B, 1, q, kv]`` (True = may attend) for
    padded batches and for the step-expansion / segmentation schemes.
    """
    step = kwargs.get(STEP_KWARG)
    mask = step.mask if step is not None else attention_mask
    if mask is not None and mask.device != query.device:
        mask = mask.to(query.device)
    q_len, kv_len = query.shape[2], key.shape[2]
    gqa = query.shape[1] != key.shape[1]
    small = q_len <= SMALL_QUERY or (
        query.device.type == "cpu" and torch.is_grad_enabled() and query.shape[1] * q_len * kv_len <= MATMUL_TRAIN_SCORES)
    if small and (mask is None or mask.shape[0] == query.shape[0]):
        out = _matmul_attention(query, key, value, scaling if scaling is not None else query.shape[-1] ** -0.5, mask)
    elif mask is not None:
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling, enable_gqa=gqa)
    elif q_len == kv_len:
        out = F.scaled_dot_product_attention(query, key, value, is_causal=q_len > 1, scale=scaling, enable_gqa=gqa)
    else:
        out = _prefix_causal(query, key, value, scaling if scaling is not None else query.shape[-1] ** -0.5)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTN_NAME, beacon_attention)


@contextmanager
def attention_implementation(model: nn.Module, name: str = ATTN_NAME) -> Iterator[None]:
    """Temporarily route the model's attention layers through ``name``."""
    configs = {id(c): c for c in (model.config, text_config(model))}
    saved = {k: c._attn_implementation_internal for k, c in configs.items()}
    try:
        for c in configs.values():
            c._attn_implementation_internal = name
        yield
    finally:
        for k, c in configs.items():
            c._attn_implementation_internal = saved[k]


def run_decoder(model: nn.Module, embeds: torch.Tensor, positions: torch.Tensor, cache: DynamicCache,
                step: Step) -> torch.Tensor:
    """One forward of the base decoder over ``embeds`` with a cache; returns last hidden states."""
    with attention_implementation(model):
        out = decoder(model)(
            inputs_embeds=embeds, position_ids=positions, cache=cache, use_cache=True, **{STEP_KWARG: step}
        )
    return out.last_hidden_state
