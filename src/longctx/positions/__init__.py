"""Context extension by position ids (CREAM, PoSE, RandPos) and RoPE scaling."""

from longctx.positions.rope import scale_rope
from longctx.positions.samplers import SAMPLERS, PositionCollator, PositionError, cream, pose, randpos

__all__ = ["SAMPLERS", "PositionCollator", "PositionError", "cream", "pose", "randpos", "scale_rope"]
