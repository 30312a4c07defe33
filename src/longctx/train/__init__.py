"""Training beacon adapters."""

from longctx.train.trainer import TrainConfig, train

__all__ = ["TrainConfig", "train"]
