"""Tiny random models of each supported family for fast tests."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

FAMILIES = ("llama", "mistral", "qwen2", "qwen3")


def tiny_config(family: str = "llama", **over):
    common = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=512, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                  tie_word_embeddings=False)
    common.update(over)
    if family == "llama":
        return LlamaConfig(**common)
    if family == "mistral":
        return MistralConfig(sliding_window=None, **common)
    if family == "qwen2":
        return Qwen2Config(**common)
    if family == "qwen3":
        return Qwen3Config(head_dim=16, **common)
    raise ValueError(family)


def tiny_model(family: str = "llama", seed: int = 0, dtype=torch.float32, **over):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, **over), attn_implementation="sdpa", dtype=dtype)
    return model.eval()


def perturb_adapter(adapter, seed: int = 1, scale: float = 0.05):
    """Make beacon weights differ from the copies so routing mistakes show in outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype) * scale)
    return adapter
