"""Test doubles: a tiny Gemma-2 config, a tiny tokenizer, random tiny models and prompts; the
``transformers`` twin of a config and an interleaved timer for parity tests and benchmarks.

Everything here is small enough for a 2-core CPU and needs no network. Other modules' tests may add
helpers here (fake rollout batches, ...).
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from passk_jax.models.gemma2 import Gemma2Config, Params, init_params
from passk_jax.tokenizers import CharTokenizer, pad_batch

__all__ = [
    "TINY_ALPHABET",
    "hf_gemma2",
    "interleaved_medians",
    "random_params",
    "random_prompts",
    "random_rollout_arrays",
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


def random_rollout_arrays(
    seed: int = 0, p: int = 4, g: int = 4, tp: int = 6, t: int = 8, vocab: int = 64
) -> tuple[np.ndarray, ...]:
    """A random ``[P, G, T]`` rollout, in the argument order of ``train.make_batch``.

    Prompt row 1 is left-padded by 2; completion lengths are random in ``[1, T]``; the sampler's
    log-probs are around -3 on real tokens and 0 elsewhere; the weights are standard normal.

    Returns:
      ``(prompt [P, Tp], prompt_mask, tokens [P, G, T], mask, old_logp, weights [P, G])``.
    """
    rng = np.random.default_rng(seed)
    prompt = rng.integers(3, vocab, (p, tp)).astype(np.int32)
    pmask = np.ones((p, tp), bool)
    pmask[1, :2] = False  # left padding
    tokens = rng.integers(3, vocab, (p, g, t)).astype(np.int32)
    lengths = rng.integers(1, t + 1, (p, g))
    mask = np.arange(t)[None, None] < lengths[..., None]
    old_logp = np.where(mask, rng.normal(-3.0, 0.3, (p, g, t)), 0).astype(np.float32)
    weights = rng.normal(size=(p, g)).astype(np.float32)
    return prompt, pmask, tokens, mask, old_logp, weights


def as_jnp(tree: Any) -> Any:
    """``jnp.asarray`` on every leaf."""
    return jax.tree.map(jnp.asarray, tree)


def hf_gemma2(
    config: Gemma2Config,
    seed: int = 0,
    *,
    max_positions: int = 4096,
    special_ids: tuple[int, int, int] = (0, 1, 2),
    eager: bool = True,
):
    """A ``transformers.Gemma2ForCausalLM`` with ``config``'s sizes and random (seeded) weights.

    Needs torch and transformers (the ``parity`` extra). ``special_ids`` are (pad, eos, bos). Save it
    with ``save_pretrained`` and load it back with ``checkpoints.load_hf_gemma2`` to get the same
    weights in this package's layout.
    """
    import torch
    import transformers

    torch.manual_seed(seed)
    pad, eos, bos = special_ids
    hf_config = transformers.Gemma2Config(
        vocab_size=config.vocab_size,
        hidden_size=config.embed_dim,
        intermediate_size=config.hidden_dim,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        head_dim=config.head_dim,
        query_pre_attn_scalar=int(config.query_pre_attn_scalar),
        sliding_window=config.sliding_window,
        max_position_embeddings=max_positions,
        pad_token_id=pad,
        eos_token_id=eos,
        bos_token_id=bos,
        **({"attn_implementation": "eager"} if eager else {}),
    )
    return transformers.Gemma2ForCausalLM(hf_config)


def cpu_model() -> str:
    """The CPU's ``model name`` from /proc/cpuinfo (e.g. ``AMD EPYC``), else ``platform.machine()``.

    Recorded with every CPU timing: XLA:CPU's and torch's matmul kernels rank differently on
    different hosts of the same size, so a ratio is only meaningful together with the host.
    """
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.startswith("model name"):
                    return ln.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def interleaved_medians(
    fns: Sequence[Callable[[], Any]], repeats: int, warmup: int = 1
) -> list[float]:
    """Median wall seconds of each function over ``repeats`` rounds, each round running all of them.

    Interleaving puts every contender under the same background load (a shared machine's load drifts
    over seconds), so ratios compare like with like. Each function runs ``warmup`` times first
    (compilation, caches) and must block until its work is done.
    """
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]
