"""Batched sampling of n completions per prompt for RL, with per-token log-probs.

Axis legend: ``P`` prompts, ``G`` samples per prompt (= n), ``B = P * G`` decode rows, ``Tp`` prompt
length (padded), ``T`` generated tokens (= ``max_new_tokens``), ``S = Tp + T`` cache slots, ``V`` vocab.

The sampler splits four ways:

1. **Host API** ``sample`` (and the baseline ``sample_reprefill``): validates, picks a token-choice
   strategy, calls the two jitted stages, reshapes to ``[P, G, T]``.
2. **Prefill** ``_prefill`` (jit): runs each prompt **once** into a cache of ``Tp`` slots, takes the
   logits at its last real token, then broadcasts cache, logits and bookkeeping to ``G`` rows per prompt.
3. **Decode loop** ``_decode`` (jit, ``lax.while_loop``s over ``DecodeState``, cache donated off CPU):
   each step picks a token per row, records its log-prob, writes it, and runs the model on it with the
   cache; decoding stops after ``T`` steps or as soon as every row has emitted EOS. Shapes are static:
   the steps run in ``decode_phases`` loops, and before each the cache grows to the ``Tp + t_end``
   slots that phase fills, so early steps do not read empty slots (same samples for any number).
4. **Token-choice strategies**: small frozen dataclasses, ``Greedy()`` and ``Sampling(temperature,
   top_k, top_p)``, mapping logits ``[B, V]`` to ``(token [B], logprob [B])``.

Padding: prompts may be left- or right-padded (any mask works). Slots are storage and positions are
meaning: prompt token ``j`` of a row sits in slot ``j`` with RoPE position ``cumsum(mask) - 1``;
generated token ``t`` sits in slot ``Tp + t`` with position ``prompt_len + t``; pad slots are never
attended. With left padding ``[prompt_tokens | tokens]`` is exactly the sequence whose
``sequence_logits`` reproduce the sampler's logits (see ``recompute_logprobs``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from passk_jax.models.gemma2 import (
    Gemma2Config,
    Params,
    apply_with_cache,
    grow_cache,
    init_cache,
    padded_positions,
    rope_sincos,
    sequence_logits,
)

Array = jax.Array

__all__ = [
    "DecodeState",
    "Greedy",
    "SamplerOutput",
    "Sampling",
    "gumbel_noise",
    "make_strategy",
    "ROLLOUT_LAYOUTS",
    "recompute_logprobs",
    "reshard_for_rollout",
    "rollout_shardings",
    "sample",
    "sample_reprefill",
]


@flax.struct.dataclass
class SamplerOutput:
    """What ``sample`` returns.

    Attributes:
      prompt_tokens: ``[P, Tp]`` int32, as given.
      prompt_mask: ``[P, Tp]`` bool, as given.
      tokens: ``[P, G, T]`` int32 generated tokens; ``pad_id`` after EOS (and after an early stop).
      logprobs: ``[P, G, T]`` float32 log-prob of each generated token under the sampling
        distribution (after temperature / top-k / top-p; for greedy, under the model's own
        temperature-1 distribution); 0 where ``mask`` is False.
      mask: ``[P, G, T]`` bool, True for generated tokens up to and including EOS.
    """

    prompt_tokens: Array
    prompt_mask: Array
    tokens: Array
    logprobs: Array
    mask: Array


# ----------------------------------------------------------------------------------------------------
# Token-choice strategies.


@dataclasses.dataclass(frozen=True)
class Greedy:
    """Arg-max decoding; the reported log-prob is the model's (temperature 1) log-softmax."""

    def log_probs(self, logits_BV: Array) -> Array:
        """Log-probs ``[B, V]`` reported for the chosen tokens (float32)."""
        return jax.nn.log_softmax(logits_BV.astype(jnp.float32), axis=-1)

    def __call__(self, logits_BV: Array, rng: Array) -> tuple[Array, Array]:
        """Returns ``(token [B] int32, logprob [B] float32)``."""
        del rng
        tok_B = _argmax(logits_BV)
        logp_B = jnp.take_along_axis(self.log_probs(logits_BV), tok_B[:, None], axis=-1)[:, 0]
        return tok_B, logp_B


@dataclasses.dataclass(frozen=True)
class Sampling:
    """Ancestral sampling from ``softmax(logits / temperature)`` restricted by top-k, then top-p.

    ``top_k`` keeps the k largest logits (ties at the k-th value are kept); ``top_p`` then keeps the
    smallest set of most likely tokens whose probability reaches ``top_p`` (renormalised).
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def log_probs(self, logits_BV: Array, keep: Array | None = None) -> Array:
        """Log-probs ``[..., V]`` of the sampling distribution (float32; ``-inf`` outside the support).

        This one function is the sampling specification: the sampler draws from it and the loss
        (``losses.token_logprobs``) recomputes log-probs with it, so on-policy the PPO ratio is 1
        with top-k / top-p set too.

        Args:
          logits_BV: ``[..., V]`` logits (any leading axes).
          keep: optional ``[...]`` int token ids kept in the support whatever the cut-offs say. The
            loss passes the sampled tokens: float round-off between the sampler's cached decode and
            the loss's full forward pass can move a sampled token just below a recomputed cut-off,
            which would give it ``-inf``. The sampler itself never needs it.
        """
        x = logits_BV.astype(jnp.float32) / self.temperature
        x_keep = None
        if keep is not None:
            x_keep = jnp.take_along_axis(x, keep[..., None].astype(jnp.int32), axis=-1)
        if self.top_k is not None and self.top_k < x.shape[-1]:
            kth = lax.top_k(x, self.top_k)[0][..., -1:]
            if x_keep is not None:
                kth = jnp.minimum(kth, x_keep)
            x = jnp.where(x >= kth, x, -jnp.inf)
        if self.top_p is not None and self.top_p < 1.0:
            sorted_x = jnp.sort(x, axis=-1)[..., ::-1]
            probs = jax.nn.softmax(sorted_x, axis=-1)
            mass_before = jnp.cumsum(probs, axis=-1) - probs
            # Smallest kept logit: the last sorted entry whose preceding mass is < top_p.
            n_keep = jnp.sum(mass_before < self.top_p, axis=-1, keepdims=True)
            cutoff = jnp.take_along_axis(sorted_x, jnp.maximum(n_keep - 1, 0), axis=-1)
            if x_keep is not None:
                cutoff = jnp.minimum(cutoff, x_keep)
            x = jnp.where(x >= cutoff, x, -jnp.inf)
        return jax.nn.log_softmax(x, axis=-1)

    def __call__(self, logits_BV: Array, rng: Array) -> tuple[Array, Array]:
        """Returns ``(token [B] int32, logprob [B] float32)``."""
        logp_BV = self.log_probs(logits_BV)
        # Gumbel-max: argmax(log p + g) with i.i.d. standard Gumbel g is a draw from p, with no
        # cumulative sum and so no float32 floor on small probabilities. The only limit is the
        # noise's 23-bit resolution (g within [-2.8, 16.6]; jax.random.gumbel's float32 uniforms
        # give a similar range): a token ~19 nats below the best one cannot win. The noise is one
        # fused kernel, see ``gumbel_noise``.
        tok_B = _argmax(logp_BV + gumbel_noise(rng, logp_BV.shape))
        return tok_B, jnp.take_along_axis(logp_BV, tok_B[:, None], axis=-1)[:, 0]


def _argmax(x_BV: Array) -> Array:
    """First index of the maximum over the last axis, as a max reduction then an index reduction.
    ``int32 [B]``.

    Same result as ``jnp.argmax``. In the decode loop XLA:CPU fuses the Gumbel noise into the
    reduction, and there ``jnp.argmax``'s single variadic (value, index) reduction made the whole
    sampler 1.1x (V = 64) to 4x (V = 32,000) slower than this pair in development A/B runs. On an
    already materialised array it is not faster (two passes instead of one).
    """
    v = x_BV.shape[-1]
    is_max = x_BV == jnp.max(x_BV, axis=-1, keepdims=True)
    return jnp.min(jnp.where(is_max, lax.iota(jnp.int32, v), v), axis=-1).astype(jnp.int32)


def _threefry2x32(k0: Array, k1: Array, x0: Array, x1: Array) -> tuple[Array, Array]:
    """The Threefry-2x32 block cipher (20 rounds; Salmon et al. 2011), written out with uint32
    elementwise ops so that XLA fuses it into its consumer. Bit-identical to JAX's
    ``threefry2x32_p`` (tested); on CPU JAX lowers that primitive to a rolled ``while`` loop, which
    costs a handful of kernel launches per round inside a decode loop."""
    rotations = ((13, 15, 26, 6), (17, 29, 16, 24))
    ks = (k0, k1, k0 ^ k1 ^ np.uint32(0x1BD11BDA))
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for i in range(5):
        for r in rotations[i % 2]:
            x0 = x0 + x1
            x1 = (x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r))
            x1 = x1 ^ x0
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x0, x1


def gumbel_noise(rng: Array, shape: tuple[int, int]) -> Array:
    """Standard Gumbel noise ``[B, V]`` float32 from a PRNG key.

    For two-word keys (the default ``threefry2x32``, typed or raw ``uint32[2]``) element ``(b, v)``
    is ``-log(-log(u))`` with ``u`` the top 23 bits of ``threefry2x32(key, (b, v))`` mapped to the
    open interval ``(0, 1)``; other key types use ``jax.random.gumbel``. Same key, same noise.
    """
    if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
        data = jax.random.key_data(rng)
    else:
        data = rng
    if data.shape != (2,) or data.dtype != jnp.uint32:
        return jax.random.gumbel(rng, shape, jnp.float32)
    b, v = shape
    bits, _ = _threefry2x32(
        data[0], data[1], lax.iota(jnp.uint32, b)[:, None], lax.iota(jnp.uint32, v)[None, :]
    )
    return _gumbel_from_bits(bits)


def _gumbel_from_bits(bits: Array) -> Array:
    """``-log(-log(u))`` with ``u = (top 23 bits + 0.5) / 2^23``: exact in float32 and strictly
    inside ``(0, 1)`` (with 24 bits the top value would round to 1.0 and give ``+inf``)."""
    u = ((bits >> np.uint32(9)).astype(jnp.float32) + 0.5) * np.float32(2.0**-23)
    return -jnp.log(-jnp.log(u))


def make_strategy(
    temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> Greedy | Sampling:
    """``Greedy()`` when ``temperature == 0``, else ``Sampling(...)`` (``ValueError`` on bad values)."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if temperature == 0:
        return Greedy()
    return Sampling(float(temperature), top_k, None if top_p is None else float(top_p))


# ----------------------------------------------------------------------------------------------------
# Prefill and decode.


@flax.struct.dataclass
class DecodeState:
    """The ``lax.while_loop`` carry of the decode stage (``B`` rows, ``S`` slots, ``T`` new tokens).

    Attributes:
      step: ``[]`` int32, tokens generated so far (also the next column of ``tokens``).
      logits: ``[B, V]`` float32 logits predicting the next token.
      cache: the model's KV cache (``S`` slots; ``cache["index"] == Tp + step``).
      key_valid: ``[B, S]`` bool, slots holding a real token (prompt non-pads and generated tokens).
      next_pos: ``[B]`` int32 RoPE position of the next token.
      done: ``[B]`` bool, row has emitted EOS.
      tokens: ``[B, T]`` int32 output buffer (``pad_id`` prefilled).
      logprobs: ``[B, T]`` float32 output buffer (0 prefilled).
      mask: ``[B, T]`` bool output buffer.
      step_keys: ``[T]`` PRNG keys, ``fold_in(rng, t)`` for step ``t`` (made before the loop).
    """

    step: Array
    logits: Array
    cache: Any
    key_valid: Array
    next_pos: Array
    done: Array
    tokens: Array
    logprobs: Array
    mask: Array
    step_keys: Array


@functools.partial(jax.jit, static_argnames=("config", "num_samples", "max_new_tokens", "mesh"))
def _prefill(
    params: Params,
    prompt_tokens: Array,
    prompt_mask: Array,
    rng: Array,
    *,
    config: Gemma2Config,
    num_samples: int,
    max_new_tokens: int,
    pad_id: Array,
    mesh: Any = None,
) -> DecodeState:
    """Runs every prompt once, then repeats its state ``num_samples`` times (rows ``p * G + g``).

    The cache has just the ``Tp`` prompt slots; ``_decode`` grows it as it generates. With a
    ``mesh`` the repeated rows (and their cache) are sharded over its batch axes.
    """
    p, tp = prompt_tokens.shape
    prompt_mask = prompt_mask.astype(bool)
    cache = init_cache(config, p, tp)
    key_valid_PS = prompt_mask
    slots = jnp.arange(tp)
    attn_mask_PTS = key_valid_PS[:, None, :] & (slots[None, :] <= slots[:, None])[None]
    positions_PT = padded_positions(prompt_mask)
    last_P = tp - 1 - jnp.argmax(prompt_mask[:, ::-1], axis=-1)
    # Only the last real prompt token is unembedded: [P, V], never [P, Tp, V].
    logits_P1V, cache = apply_with_cache(
        params,
        config,
        prompt_tokens.astype(jnp.int32),
        positions_PT,
        attn_mask_PTS,
        cache,
        gather=last_P[:, None],
    )
    logits_PV = logits_P1V[:, 0]
    prompt_len_P = jnp.sum(prompt_mask, axis=-1).astype(jnp.int32)

    rep = lambda x: jnp.repeat(x, num_samples, axis=0) if jnp.ndim(x) else x
    b = p * num_samples
    state = DecodeState(
        step=jnp.zeros((), jnp.int32),
        logits=rep(logits_PV),
        cache=jax.tree.map(rep, cache),
        key_valid=rep(key_valid_PS),
        next_pos=rep(prompt_len_P),
        done=jnp.zeros((b,), bool),
        tokens=jnp.full((b, max_new_tokens), pad_id, jnp.int32),
        logprobs=jnp.zeros((b, max_new_tokens), jnp.float32),
        mask=jnp.zeros((b, max_new_tokens), bool),
        step_keys=jax.vmap(lambda t: jax.random.fold_in(rng, t))(jnp.arange(max_new_tokens)),
    )
    return _constrain_rows(state, mesh)


def _constrain_rows(state: DecodeState, mesh: Any) -> DecodeState:
    """Every per-row field of ``state`` (the KV cache included) sharded over the mesh's batch axes
    ``("data", "fsdp")``, so each device decodes and caches only its rows; unchanged without a
    mesh or when the rows do not divide evenly over those axes."""
    if mesh is None:
        return state
    from passk_jax import sharding as S

    b = state.done.shape[0]
    if b % _batch_ways(mesh):
        return state

    def rows(x):
        if jnp.ndim(x) == 0 or x.shape[0] != b:
            return x
        return lax.with_sharding_constraint(x, S.batch_sharding(mesh, x.ndim))

    per_row = {f: rows(getattr(state, f)) for f in _ROW_FIELDS}
    cache = {k: (v if k == "index" else jax.tree.map(rows, v)) for k, v in state.cache.items()}
    return state.replace(cache=cache, **per_row)


_ROW_FIELDS = ("logits", "key_valid", "next_pos", "done", "tokens", "logprobs", "mask")


def _batch_ways(mesh: Any) -> int:
    from passk_jax import sharding as S

    return int(np.prod([mesh.shape[a] for a in S.BATCH_AXES if a in mesh.shape]))


def _phase_ends(max_new_tokens: int, phases: int) -> list[int]:
    """Token counts at which the decode phases end: ``ceil(T * j / phases)``, deduplicated."""
    return sorted({-(-max_new_tokens * j // phases) for j in range(1, phases + 1)})


def _decode(
    params: Params,
    state: DecodeState,
    *,
    config: Gemma2Config,
    strategy: Greedy | Sampling,
    eos_id: Array,
    pad_id: Array,
    phases: int,
    mesh: Any = None,
) -> DecodeState:
    """Generates until ``T`` tokens or every row hit EOS (rows sharded as in ``_prefill``).

    The steps run in ``phases`` consecutive ``lax.while_loop``s over ``DecodeState``; before each,
    the cache grows (``grow_cache``) to just the slots that phase can fill, ``Tp + t_end``. Every
    step's attention reads the whole cache, so early steps no longer read empty slots: with 4
    phases, 16-token prompts and 64 new tokens a decode reads 30% fewer cache slots than one loop
    over ``S = Tp + T`` slots, at the price of compiling 4 loop bodies. Done rows stay done.
    """
    max_new = state.tokens.shape[1]
    prompt_slots = state.key_valid.shape[1]
    # RoPE sin / cos for every position a decode step can have (< Tp + T), made once.
    sin_SH, cos_SH = rope_sincos(jnp.arange(prompt_slots + max_new), config)

    def cond(end: int, st: DecodeState) -> Array:
        return (st.step < end) & ~jnp.all(st.done)

    def body(s: int, st: DecodeState) -> DecodeState:
        tok_B, logp_B = strategy(st.logits, st.step_keys[st.step])
        live_B = ~st.done
        tok_B = jnp.where(live_B, tok_B, pad_id)
        logp_B = jnp.where(live_B, logp_B, 0.0)
        col = (0, st.step)
        tokens = lax.dynamic_update_slice(st.tokens, tok_B[:, None], col)
        logprobs = lax.dynamic_update_slice(st.logprobs, logp_B[:, None], col)
        mask = lax.dynamic_update_slice(st.mask, live_B[:, None], col)
        slot = prompt_slots + st.step
        key_valid = lax.dynamic_update_slice(st.key_valid, live_B[:, None], (0, slot))
        attn_mask_B1S = (key_valid & (jnp.arange(s) <= slot)[None])[:, None, :]
        pos_B1 = st.next_pos[:, None]
        rope = (sin_SH[pos_B1], cos_SH[pos_B1])
        logits_B1V, cache = apply_with_cache(
            params, config, tok_B[:, None], pos_B1, attn_mask_B1S, st.cache, rope
        )
        new = DecodeState(
            step=st.step + 1,
            logits=logits_B1V[:, 0],
            cache=cache,
            key_valid=key_valid,
            next_pos=st.next_pos + 1,
            done=st.done | (tok_B == eos_id),
            tokens=tokens,
            logprobs=logprobs,
            mask=mask,
            step_keys=st.step_keys,
        )
        return _constrain_rows(new, mesh)

    for end in _phase_ends(max_new, phases):
        s = prompt_slots + end
        extra = s - state.key_valid.shape[1]
        state = state.replace(
            cache=grow_cache(state.cache, s),
            key_valid=jnp.pad(state.key_valid, ((0, 0), (0, extra))),
        )
        state = _constrain_rows(state, mesh)
        state = lax.while_loop(functools.partial(cond, end), functools.partial(body, s), state)
    return state


_DECODE_STATIC = ("config", "strategy", "phases", "mesh")
_decode_jit = jax.jit(_decode, static_argnames=_DECODE_STATIC)
_decode_jit_donated = jax.jit(_decode, static_argnames=_DECODE_STATIC, donate_argnames="state")


def _run(
    params,
    config,
    prompt_tokens,
    prompt_mask,
    *,
    num_samples,
    max_new_tokens,
    rng,
    temperature,
    top_k,
    top_p,
    eos_id,
    pad_id,
    decode_phases,
    reprefill: bool,
    mesh: Any = None,
) -> SamplerOutput:
    if num_samples < 1 or max_new_tokens < 1 or decode_phases < 1:
        raise ValueError("num_samples, max_new_tokens and decode_phases must be >= 1")
    prompt_tokens = jnp.asarray(prompt_tokens, jnp.int32)
    prompt_mask = jnp.asarray(prompt_mask, bool)
    if prompt_tokens.ndim != 2 or prompt_tokens.shape != prompt_mask.shape:
        raise ValueError(
            f"prompt_tokens {prompt_tokens.shape} and prompt_mask {prompt_mask.shape} must be "
            "equal [P, Tp] shapes"
        )
    if not bool(np.all(np.asarray(prompt_mask).any(axis=-1))):
        raise ValueError("every prompt needs at least one real token")
    strategy = make_strategy(temperature, top_k, top_p)
    # Traced, so new special ids do not recompile.
    eos_id, pad_id = jnp.int32(eos_id), jnp.int32(pad_id)
    p, g = prompt_tokens.shape[0], num_samples
    if reprefill:  # baseline: every copy is its own prompt.
        state = _prefill(
            params,
            jnp.repeat(prompt_tokens, g, axis=0),
            jnp.repeat(prompt_mask, g, axis=0),
            rng,
            config=config,
            num_samples=1,
            max_new_tokens=max_new_tokens,
            pad_id=pad_id,
            mesh=mesh,
        )
    else:
        state = _prefill(
            params,
            prompt_tokens,
            prompt_mask,
            rng,
            config=config,
            num_samples=g,
            max_new_tokens=max_new_tokens,
            pad_id=pad_id,
            mesh=mesh,
        )
    decode = _decode_jit if jax.default_backend() == "cpu" else _decode_jit_donated
    state = decode(
        params,
        state,
        config=config,
        strategy=strategy,
        eos_id=eos_id,
        pad_id=pad_id,
        phases=int(decode_phases),
        mesh=mesh,
    )
    shape = (p, g, max_new_tokens)
    return SamplerOutput(
        prompt_tokens=prompt_tokens,
        prompt_mask=prompt_mask,
        tokens=state.tokens.reshape(shape),
        logprobs=state.logprobs.reshape(shape),
        mask=state.mask.reshape(shape),
    )


# Parameter layouts for rollout (``reshard_for_rollout``): "training" keeps the train state's (FSDP)
# shardings, "replicated" puts a whole copy on every device, "tensor" shards the heads / MLP /
# vocabulary axes over every device of the mesh and keeps the embedding axis whole (no FSDP).
ROLLOUT_LAYOUTS = ("training", "replicated", "tensor")


def rollout_shardings(config: Gemma2Config, mesh: Any, layout: str = "replicated") -> Any:
    """The parameter shardings of a rollout ``layout`` (one of ``ROLLOUT_LAYOUTS``) on ``mesh``."""
    from passk_jax import sharding as S

    if layout == "training":
        return S.param_shardings(config, mesh)
    if layout == "replicated":
        rep = S.replicated(mesh)
        return jax.tree.map(lambda _: rep, S.param_shardings(config, mesh))
    if layout == "tensor":
        every = tuple(a for a in mesh.axis_names if mesh.shape[a] > 1) or None
        rules = {**S.DEFAULT_RULES, "embed": None}
        rules.update({a: every for a in ("heads", "kv_heads", "mlp", "vocab")})
        return S.param_shardings(config, mesh, rules)
    raise ValueError(f"unknown rollout layout {layout!r}; choose one of {ROLLOUT_LAYOUTS}")


def reshard_for_rollout(
    params: Params, config: Gemma2Config, mesh: Any, layout: str = "replicated"
) -> Params:
    """``params`` moved to a rollout layout (one jitted identity with the layout's out-shardings;
    the training copy is untouched). Decoding with FSDP-sharded parameters gathers every weight on
    every generated token; resharding once per RL step pays that transfer once instead
    (``benchmarks/rollout_layout.py`` measures both)."""
    shardings = rollout_shardings(config, mesh, layout)
    return jax.jit(lambda p: p, out_shardings=shardings)(params)


def sample(
    params: Params,
    config: Gemma2Config,
    prompt_tokens: Any,
    prompt_mask: Any,
    *,
    num_samples: int,
    max_new_tokens: int,
    rng: Array,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int,
    pad_id: int,
    decode_phases: int = 4,
    mesh: Any = None,
) -> SamplerOutput:
    """Samples ``num_samples`` completions per prompt, prefilling each prompt once.

    Args:
      params: model parameters.
      config: the model config (static; one compilation per config / shape / strategy).
      prompt_tokens: ``[P, Tp]`` int token ids (left padding recommended; any padding works).
      prompt_mask: ``[P, Tp]`` bool, True on real prompt tokens (each row needs at least one).
      num_samples: ``G``, completions per prompt.
      max_new_tokens: ``T``, generated tokens per completion (at most).
      rng: PRNG key; the same key gives the same samples.
      temperature: softmax temperature; 0 means greedy.
      top_k: keep the ``top_k`` most likely tokens (None = all).
      top_p: nucleus mass (None = 1).
      eos_id: stop token (kept in the output, with ``mask`` True).
      pad_id: written after EOS.
      decode_phases: the decode runs in this many loops, each with a cache just long enough for
        its steps (fewer empty slots read; one compiled loop body per phase). 1 = one loop over
        a ``Tp + T``-slot cache. The samples do not depend on it.
      mesh: optional device mesh (e.g. the training mesh): the ``P * G`` decode rows and their
        KV cache are sharded over its batch axes ``("data", "fsdp")`` when they divide evenly
        (otherwise replicated). The samples do not depend on it.

    Returns:
      ``SamplerOutput`` with ``tokens`` / ``logprobs`` / ``mask`` of shape ``[P, G, T]``; row ``g``
      of prompt ``p`` is sample ``g``. Example::

        out = sample(params, cfg, toks, mask, num_samples=16, max_new_tokens=64,
                     rng=jax.random.key(0), eos_id=tok.eos_id, pad_id=tok.pad_id)
    """
    return _run(
        params,
        config,
        prompt_tokens,
        prompt_mask,
        num_samples=num_samples,
        max_new_tokens=max_new_tokens,
        rng=rng,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        eos_id=eos_id,
        pad_id=pad_id,
        decode_phases=decode_phases,
        reprefill=False,
        mesh=mesh,
    )


def sample_reprefill(
    params: Params,
    config: Gemma2Config,
    prompt_tokens: Any,
    prompt_mask: Any,
    *,
    num_samples: int,
    max_new_tokens: int,
    rng: Array,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int,
    pad_id: int,
    decode_phases: int = 4,
    mesh: Any = None,
) -> SamplerOutput:
    """Baseline for benchmarks: like ``sample`` but prefills each of the ``P * G`` copies separately.

    Arguments and output as ``sample``; with the same key it returns the same samples.
    """
    return _run(
        params,
        config,
        prompt_tokens,
        prompt_mask,
        num_samples=num_samples,
        max_new_tokens=max_new_tokens,
        rng=rng,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        eos_id=eos_id,
        pad_id=pad_id,
        decode_phases=decode_phases,
        reprefill=True,
        mesh=mesh,
    )


@functools.partial(jax.jit, static_argnames=("config", "temperature", "top_k", "top_p"))
def recompute_logprobs(
    params: Params,
    config: Gemma2Config,
    out: SamplerOutput,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> Array:
    """Log-probs of the sampled tokens recomputed by one cache-free ``sequence_logits`` pass.

    The sequence of row ``(p, g)`` is ``[prompt_tokens[p] | tokens[p, g]]`` with mask
    ``[prompt_mask[p] | mask[p, g]]``; generated token 0 is predicted by the last real prompt token
    and token ``t > 0`` by token ``t - 1``. The same strategy transform as ``sample`` is applied.

    Args:
      params: model parameters.
      config: the model config.
      out: a ``SamplerOutput``.
      temperature / top_k / top_p: the values given to ``sample``.

    Returns:
      ``[P, G, T]`` float32 log-probs, 0 where ``out.mask`` is False.
    """
    p, g, t = out.tokens.shape
    tp = out.prompt_tokens.shape[1]
    seq = jnp.concatenate(
        [jnp.repeat(out.prompt_tokens, g, axis=0), out.tokens.reshape(p * g, t)], axis=1
    )
    seq_mask = jnp.concatenate(
        [jnp.repeat(out.prompt_mask, g, axis=0), out.mask.reshape(p * g, t)], axis=1
    )
    logits = sequence_logits(params, seq, seq_mask, config)
    last_prompt = tp - 1 - jnp.argmax(jnp.repeat(out.prompt_mask, g, axis=0)[:, ::-1], axis=-1)
    idx = jnp.concatenate(
        [last_prompt[:, None], jnp.broadcast_to(tp + jnp.arange(t - 1), (p * g, t - 1))], axis=1
    )
    logits_BTV = jnp.take_along_axis(logits, idx[:, :, None], axis=1)
    logp_BTV = make_strategy(temperature, top_k, top_p).log_probs(logits_BTV.reshape(p * g * t, -1))
    logp = jnp.take_along_axis(logp_BTV, out.tokens.reshape(-1, 1), axis=-1).reshape(p, g, t)
    return jnp.where(out.mask, logp, 0.0)
