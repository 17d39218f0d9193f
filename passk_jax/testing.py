"""Test doubles: a tiny Gemma-2 config, a tiny tokenizer, random tiny models and prompts.

Everything here is small enough for a 2-core CPU and needs no network. Other modules' tests may add
helpers here (fake rollout batches, ...).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from passk_jax.models.gemma2 import Gemma2Config, Params, init_params
from passk_jax.tokenizers import CharTokenizer, pad_batch

__all__ = [
    "TINY_ALPHABET",
    "random_params",
    "random_prompts",
    "tiny_config",
    "tiny_model",
    "tiny_tokenizer",
]

# Digits, a few operators and lower-case letters: enough for synthetic arithmetic / maze tasks.
TINY_ALPHABET = "0123456789+-*=()<>?., abcdefghijklmnopqrstuvwxyz\n"


def tiny_tokenizer() -> CharTokenizer:
    """A char tokenizer over ``TINY_ALPHABET`` (pad 0, bos 1, eos 2, unk 3; vocab 54 <= 64)."""
    return CharTokenizer(TINY_ALPHABET)


def tiny_config(**overrides) -> Gemma2Config:
    """``Gemma2Config.tiny()`` (vocab 64, 3 layers, D 64, 4/2 heads, H 16, F 128, window 8)."""
    return Gemma2Config.tiny(**overrides)


def random_params(config: Gemma2Config, seed: int = 0, scale: float = 1.0) -> Params:
    """Random parameters with non-trivial norm scales, so every parameter matters in a test.

    Args:
      config: the architecture.
      seed: PRNG seed.
      scale: multiplies the default init spread of the projections (and of the norm scales, which
        are drawn from ``N(0, 0.2 * scale)`` instead of the default 0).

    Returns:
      The parameter tree (float32 unless ``config.param_dtype`` says otherwise).
    """
    # Shapes from eval_shape (nothing compiled), draws from numpy: fast on a small CPU.
    shapes = jax.eval_shape(lambda: init_params(config, jax.random.key(0)))
    leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    rng = np.random.RandomState(seed)
    out = []
    for path, leaf in leaves:
        name = jax.tree_util.keystr(path)
        noise = rng.standard_normal(leaf.shape).astype(np.float32)
        if "norm" in name:
            std = 0.2 * scale
        elif "input_embedding" in name:
            std = config.embed_dim**-0.5
        elif "attn_vec" in name:
            std = scale * (config.num_heads * config.head_dim) ** -0.5
        elif name.endswith("['linear']"):
            std = scale * config.hidden_dim**-0.5
        else:
            std = scale * config.embed_dim**-0.5
        out.append(jnp.asarray(std * noise, leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, out)


def tiny_model(seed: int = 0, **overrides) -> tuple[Gemma2Config, Params]:
    """``(tiny_config(**overrides), random_params(config, seed))``."""
    config = tiny_config(**overrides)
    return config, random_params(config, seed)


def random_prompts(
    num_prompts: int,
    *,
    min_len: int,
    max_len: int,
    vocab_size: int,
    seed: int = 0,
    low: int = 3,
    side: str = "left",
) -> tuple[np.ndarray, np.ndarray]:
    """Random token prompts of varied lengths, padded with id 0.

    Args:
      num_prompts: ``P``.
      min_len / max_len: inclusive length range.
      vocab_size: ids are drawn from ``[low, vocab_size)`` (avoids pad / bos / eos by default).
      seed: numpy seed.
      low: smallest id drawn.
      side: ``"left"`` or ``"right"`` padding.

    Returns:
      ``(tokens int32 [P, max_len_drawn], mask bool [P, max_len_drawn])``.
    """
    rng = np.random.RandomState(seed)
    lens = rng.randint(min_len, max_len + 1, size=num_prompts)
    ids = [list(rng.randint(low, vocab_size, size=n)) for n in lens]
    return pad_batch(ids, pad_id=0, side=side)


def as_jnp(tree: Any) -> Any:
    """``jnp.asarray`` on every leaf."""
    return jax.tree.map(jnp.asarray, tree)
