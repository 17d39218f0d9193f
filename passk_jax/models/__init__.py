"""Model definitions (Flax linen)."""

from passk_jax.models.gemma2 import (
    Gemma2,
    Gemma2Config,
    forward,
    init_cache,
    init_params,
    param_logical_axes,
    sequence_logits,
)

__all__ = [
    "Gemma2",
    "Gemma2Config",
    "forward",
    "init_cache",
    "init_params",
    "param_logical_axes",
    "sequence_logits",
]
