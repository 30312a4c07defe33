"""RoPE scaling written into a model config in the form transformers reads (docs/cream.md).

The saved model then reloads as a stock model with no custom code.
"""

from __future__ import annotations

from typing import Any

from longctx import compat

METHODS = ("linear", "ntk", "yarn")


def scale_rope(config: Any, target_length: int, method: str = "linear") -> Any:
    """Set ``config`` for ``target_length`` positions: linear interpolation (default), static
    NTK (``theta * s^(d/(d-2))``) or YaRN; ``max_position_embeddings`` becomes the target."""
    if method not in METHODS:
        raise ValueError(f"unknown RoPE scaling {method!r}; choose from {METHODS}")
    original = int(config.max_position_embeddings)
    if target_length % original:
        raise ValueError(f"target length {target_length} is not a whole multiple of the model's {original} positions")
    factor = target_length / original
    params = compat.rope_parameters(config)
    theta = float(params["rope_theta"])
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    if method == "linear":
        params.update(rope_type="linear", factor=factor, rope_theta=theta)
    elif method == "ntk":
        params.update(rope_type="default", rope_theta=theta * factor ** (head_dim / (head_dim - 2)))
        params.pop("factor", None)
    else:
        params.update(rope_type="yarn", factor=factor, original_max_position_embeddings=original, rope_theta=theta)
    compat.set_rope_parameters(config, params)
    config.max_position_embeddings = target_length
    return config
