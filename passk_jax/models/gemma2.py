"""Gemma-2 in Flax linen, with an explicit KV cache and the official checkpoint parameter layout.

Axis legend (used in shapes, einsum strings and local-name suffixes):
``B`` batch, ``T`` query length, ``S`` key / cache length, ``N`` query heads, ``K`` kv heads,
``R`` query heads per kv head (``N = K * R``, grouped-query attention), ``H`` head dim,
``D`` model (embed) dim, ``F`` feed-forward dim, ``V`` vocabulary.

Architecture (Gemma Team 2024, "Gemma 2"): tied embeddings scaled by ``sqrt(D)`` (in the compute
dtype), ``num_layers`` blocks alternating local sliding-window attention (even layers) and global
attention (odd layers), GQA with RoPE (base 10000, half-split rotation), queries scaled by
``query_pre_attn_scalar ** -0.5``, attention logits soft-capped (``cap * tanh(x / cap)``, cap 50),
RMSNorm with ``(1 + scale)`` before *and* after both the attention and the GeGLU feed-forward
(gelu tanh approximation), a final RMSNorm, and final logits soft-capped at 30. Softmax, norms and
returned logits are float32 whatever the compute dtype.

Parameter tree (exactly the released Gemma-2 Flax checkpoint's ``transformer`` subtree)::

    embedder/input_embedding                 [V, D]
    layer_{i}/pre_attention_norm/scale       [D]
    layer_{i}/attn/q_einsum/w                [N, D, H]
    layer_{i}/attn/kv_einsum/w               [2, K, D, H]     (0 = keys, 1 = values)
    layer_{i}/attn/attn_vec_einsum/w         [N, H, D]
    layer_{i}/post_attention_norm/scale      [D]
    layer_{i}/pre_ffw_norm/scale             [D]
    layer_{i}/mlp/gating_einsum              [2, F, D]        (0 = gelu gate, 1 = linear up)
    layer_{i}/mlp/linear                     [F, D]
    layer_{i}/post_ffw_norm/scale            [D]
    final_norm/scale                         [D]

Logical axis names (see ``param_logical_axes``; map them to mesh axes with one rules table):
``"vocab"``, ``"embed"``, ``"heads"``, ``"kv_heads"``, ``"head_dim"``, ``"mlp"``, and ``None`` for the
small stacking axis of ``kv_einsum`` / ``gating_einsum`` (never sharded).

KV cache (``init_cache``), a plain dict::

    cache["index"]          []            int32  next cache slot to write (shared by all rows)
    cache["positions"]      [B, S]        int32  RoPE position of the key stored in each slot
    cache["layer_{i}"]["k"] [B, K, H, S]  keys   (after RoPE), compute dtype
    cache["layer_{i}"]["v"] [B, K, S, H]  values, compute dtype

The layouts are the ones the attention products read without a transpose: batch dims (B, K) leading,
keys ``[H, S]`` and values ``[S, H]`` as the right-hand matrices of q.k and p.v. With ``[B, S, K, H]``
every decode step transposed every layer's whole cache, twice.

``grow_cache`` appends empty slots (the sampler grows the cache as it decodes). A call with ``T``
new tokens writes their keys into slots ``[index, index + T)`` with one
``lax.dynamic_update_slice`` per tensor and advances ``index`` by ``T``. Slots are storage, positions
are meaning: ``positions`` (per row) drive RoPE and the sliding window, so left / right padding and
rows of different lengths share one slot counter. The caller's ``attn_mask [B, T, S]`` says which slots
each query may read (real and already written keys at or before it); the local layers additionally
drop keys with ``q_pos - k_pos >= sliding_window`` (the same window convention as the release and HF).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array
Params = dict[str, Any]
Cache = dict[str, Any]

__all__ = [
    "Gemma2",
    "Gemma2Config",
    "forward",
    "grow_cache",
    "init_cache",
    "init_params",
    "param_logical_axes",
    "rope_sincos",
    "sequence_logits",
]

# Rematerialisation policies for the decoder blocks of the training forward pass (``Gemma2Config.remat``):
# "none" keeps every activation for the backward pass; "full" recomputes each block from its input
# (only the residual stream between blocks is stored); the others are ``jax.checkpoint_policies``
# that save some intermediates (e.g. every matmul output) and recompute the rest.
REMAT_POLICIES: dict[str, Any] = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "save_dots": jax.checkpoint_policies.dots_saveable,
    "save_dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "everything_saveable": jax.checkpoint_policies.everything_saveable,
}


def constrain(x: Array, batch_axes: tuple[str, ...] | None) -> Array:
    """Pins an activation's leading (batch) axis to ``batch_axes`` of the mesh in context.

    A no-op when ``batch_axes`` is None, when no mesh is set (``jax.set_mesh``), or when the batch
    does not divide evenly over those axes. Without such constraints XLA may keep the residual
    stream split along the model dimension, so that every device computes the whole batch.
    """
    if not batch_axes:
        return x
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    axes = tuple(a for a in batch_axes if a in mesh.axis_names)
    size = math.prod(mesh.shape[a] for a in axes) if axes else 1
    if size <= 1 or x.shape[0] % size:
        return x
    spec = jax.sharding.PartitionSpec(axes, *([None] * (x.ndim - 1)))
    return lax.with_sharding_constraint(x, spec)


# A large finite negative (not -inf) so a fully masked row gives a uniform softmax, never NaN.
_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


@dataclasses.dataclass(frozen=True)
class Gemma2Config:
    """Gemma-2 architecture hyper-parameters (hashable, so usable as a static ``jit`` argument).

    Layer ``i`` uses local sliding-window attention when ``i`` is even and global attention when ``i``
    is odd, as in the release (HF ``layer_types`` = sliding, full, sliding, ...).
    """

    vocab_size: int
    num_layers: int
    embed_dim: int
    hidden_dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    query_pre_attn_scalar: float
    sliding_window: int
    attn_logit_softcap: float | None = 50.0
    final_logit_softcap: float | None = 30.0
    dtype: str = "float32"
    param_dtype: str = "float32"
    rms_norm_eps: float = 1e-6
    rope_base_frequency: float = 10_000.0
    # Memory levers (no effect on the function computed; see ``REMAT_POLICIES`` / ``constrain``).
    remat: str = "none"
    activation_batch_axes: tuple[str, ...] | None = None
    # True: the matmuls with hand-written gradients (attention projections of multi-token passes as
    # 2-D matmuls on [in, out] weight views, the stacked GeGLU gate / up, the tied unembedding),
    # which are faster on XLA:CPU; False: plain einsums on the stored layouts with autodiff
    # gradients. Same function either way (tests/test_gemma2.py); the pod plans compare them in
    # benchmarks/results/plan.md.
    matmul_projections: bool = True

    def __post_init__(self):
        if self.remat not in REMAT_POLICIES:
            raise ValueError(
                f"remat={self.remat!r} is not a rematerialisation policy; choose one of "
                f"{sorted(REMAT_POLICIES)}."
            )
        if self.activation_batch_axes is not None and not (
            isinstance(self.activation_batch_axes, tuple)
            and all(isinstance(a, str) for a in self.activation_batch_axes)
        ):
            raise ValueError(
                "activation_batch_axes must be None or a tuple of mesh axis names, got "
                f"{self.activation_batch_axes!r}."
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even (RoPE)")

    def is_sliding(self, layer: int) -> bool:
        """Whether layer ``layer`` uses local sliding-window attention (even layers)."""
        return layer % 2 == 0

    @classmethod
    def gemma2_2b(cls, **overrides) -> Gemma2Config:
        """Gemma-2 2B (2,614,341,888 parameters with the HF 256,000-token vocabulary)."""
        kw = dict(
            vocab_size=256_000,
            num_layers=26,
            embed_dim=2304,
            hidden_dim=9216,
            num_heads=8,
            num_kv_heads=4,
            head_dim=256,
            query_pre_attn_scalar=256.0,
            sliding_window=4096,
        )
        return cls(**{**kw, **overrides})

    @classmethod
    def gemma2_9b(cls, **overrides) -> Gemma2Config:
        """Gemma-2 9B."""
        kw = dict(
            vocab_size=256_000,
            num_layers=42,
            embed_dim=3584,
            hidden_dim=14336,
            num_heads=16,
            num_kv_heads=8,
            head_dim=256,
            query_pre_attn_scalar=256.0,
            sliding_window=4096,
        )
        return cls(**{**kw, **overrides})

    @classmethod
    def gemma2_27b(cls, **overrides) -> Gemma2Config:
        """Gemma-2 27B (queries scaled by (embed_dim / num_heads) ** -0.5 = 144 ** -0.5)."""
        kw = dict(
            vocab_size=256_000,
            num_layers=46,
            embed_dim=4608,
            hidden_dim=36864,
            num_heads=32,
            num_kv_heads=16,
            head_dim=128,
            query_pre_attn_scalar=144.0,
            sliding_window=4096,
        )
        return cls(**{**kw, **overrides})

    @classmethod
    def tiny(cls, vocab_size: int = 64, **overrides) -> Gemma2Config:
        """A CPU-test-sized model: 3 layers, D=64, 4 query / 2 kv heads, H=16, F=128, window 8."""
        kw = dict(
            vocab_size=vocab_size,
            num_layers=3,
            embed_dim=64,
            hidden_dim=128,
            num_heads=4,
            num_kv_heads=2,
            head_dim=16,
            query_pre_attn_scalar=16.0,
            sliding_window=8,
        )
        return cls(**{**kw, **overrides})


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _matmul_wt(x_ND: Array, w_FD: Array, out_dtype: Any) -> Array:
    """``x @ w.T`` over the last axis of both (``[..., D] x [F..., D] -> [..., F...]``).

    ``w`` may carry leading stacking axes (the GeGLU ``[2, F, D]`` gate / up pair): they become
    trailing output axes, and the product is a single matmul of width ``prod(F...)``, so the gate and
    up projections cost one dot forward and one per gradient backward instead of two each.

    Same values and gradients as ``jnp.einsum("...D,FD->...F")``; the backward pass computes the weight
    gradient as ``(x^T g)^T`` so that the transposed operand is ``x`` (width D) rather than the
    incoming gradient (width F >= D): on XLA:CPU the transposed copy of the wide gradient (the GeGLU
    hidden width, or the vocabulary for the tied unembedding) cost about a third of a train step.
    """
    return lax.dot_general(
        x_ND,
        w_FD,
        (((x_ND.ndim - 1,), (w_FD.ndim - 1,)), ((), ())),
        preferred_element_type=out_dtype,
    )


def _matmul_wt_fwd(x, w, out_dtype):
    return _matmul_wt(x, w, out_dtype), (x, w)


def _matmul_wt_bwd(out_dtype, res, g):
    x, w = res
    nf = w.ndim - 1  # the weight's output axes, trailing in g
    contract = tuple(range(g.ndim - nf, g.ndim))
    dx = lax.dot_general(
        g,
        w.astype(g.dtype),
        ((contract, tuple(range(nf))), ((), ())),
        preferred_element_type=jnp.float32,
    )
    x2 = x.reshape(-1, x.shape[-1])
    g2 = g.reshape(x2.shape[0], -1)
    dw_DF = jnp.einsum("ND,NF->DF", x2.astype(g.dtype), g2, preferred_element_type=jnp.float32)
    return dx.astype(x.dtype), dw_DF.T.reshape(w.shape).astype(w.dtype)


_matmul_wt.defvjp(_matmul_wt_fwd, _matmul_wt_bwd)


@jax.custom_vjp
def _matmul_w(x_NF: Array, w_FD: Array) -> Array:
    """``x @ w`` over the last axis of ``x`` (``[..., F] x [F, D] -> [..., D]``), the GeGLU output
    projection; the weight gradient is computed as ``(g^T x)^T`` (transposing the narrow ``g``)."""
    return jnp.einsum("...F,FD->...D", x_NF, w_FD)


def _matmul_w_fwd(x, w):
    return _matmul_w(x, w), (x, w)


def _matmul_w_bwd(res, g):
    x, w = res
    dx = jnp.einsum("...D,FD->...F", g, w.astype(g.dtype))
    x2 = x.reshape(-1, x.shape[-1])
    g2 = g.reshape(-1, g.shape[-1])
    dw_DF = jnp.einsum("ND,NF->DF", g2, x2.astype(g.dtype), preferred_element_type=jnp.float32)
    return dx.astype(x.dtype), dw_DF.T.astype(w.dtype)


_matmul_w.defvjp(_matmul_w_fwd, _matmul_w_bwd)


def _softcap(x: Array, cap: float | None) -> Array:
    return x if cap is None else cap * jnp.tanh(x / cap)


def _masked_softmax(logits: Array, cap: float | None) -> Array:
    """Softmax over the last axis of soft-capped, masked (``_MASK_VALUE``) attention logits.

    With a soft-cap <= 80 every logit is at most ``cap``, so ``exp`` cannot overflow float32 and the
    usual max subtraction (one more reduction per layer and step) is skipped; masked entries give
    exactly 0. A row with every key masked gives zeros (not NaN). Without a cap: ``jax.nn.softmax``.
    """
    if cap is None or cap > 80:
        return jax.nn.softmax(logits, axis=-1)
    e = jnp.exp(logits)
    return e / jnp.maximum(jnp.sum(e, axis=-1, keepdims=True), jnp.finfo(e.dtype).tiny)


def rope_sincos(positions: Array, config: Gemma2Config) -> tuple[Array, Array]:
    """``(sin, cos)`` of the RoPE angles of ``positions``: float32, shape ``positions.shape + (H/2,)``.

    The model computes these once per call and shares them across layers. A caller that decodes
    step by step can compute a table for every position once (``rope_sincos(jnp.arange(S), c)``)
    and pass ``(sin[pos], cos[pos])`` to ``apply_with_cache(..., rope=...)``: on XLA:CPU the sin /
    cos otherwise end up fused into (and re-evaluated per element of) every layer's key-cache write.
    """
    h = config.head_dim
    fraction = 2.0 * jnp.arange(h // 2, dtype=jnp.float32) / h
    timescale = config.rope_base_frequency**fraction
    angle = positions[..., None].astype(jnp.float32) / timescale
    return jnp.sin(angle), jnp.cos(angle)


def _apply_rope(x_BTNH: Array, sin_BTh: Array, cos_BTh: Array) -> Array:
    """Rotary embedding with the half-split convention of the release (and HF ``rotate_half``)."""
    # Written over a [2, H/2] view of the head axis, (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin)
    # is x * cos + flip(x) * (-sin, +sin): no split / concatenate, which XLA:CPU emitted as slow
    # concatenate fusions (forward and backward, q and k, every layer).
    b, t, n, h = x_BTNH.shape
    x_BTNCh = x_BTNH.astype(jnp.float32).reshape(b, t, n, 2, h // 2)
    cos_BT1Ch = cos_BTh[:, :, None, None, :]
    sin_BT1Ch = jnp.stack([-sin_BTh, sin_BTh], axis=-2)[:, :, None]
    out = x_BTNCh * cos_BT1Ch + jnp.flip(x_BTNCh, axis=-2) * sin_BT1Ch
    return out.reshape(b, t, n, h).astype(x_BTNH.dtype)


def _param(module: nn.Module, name: str, shape, names, init, config: Gemma2Config) -> Array:
    return module.param(
        name, nn.with_logical_partitioning(init, names), shape, jnp.dtype(config.param_dtype)
    )


class RMSNorm(nn.Module):
    """RMSNorm with ``(1 + scale)``, computed in float32, cast back to the input dtype."""

    config: Gemma2Config

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c = self.config
        scale = _param(self, "scale", (x.shape[-1],), ("embed",), nn.initializers.zeros, c)
        x32 = x.astype(jnp.float32)
        var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
        y = x32 * lax.rsqrt(var + c.rms_norm_eps) * (1.0 + scale.astype(jnp.float32))
        return y.astype(x.dtype)


class Weight(nn.Module):
    """A projection weight ``w`` of a fixed shape (its own module, so the parameter path is
    ``<name>/w`` as in the official checkpoint); the caller applies it."""

    config: Gemma2Config
    shape: tuple[int, ...]
    names: tuple[str | None, ...]

    @nn.compact
    def __call__(self) -> Array:
        init = nn.initializers.normal(stddev=0.02)
        return _param(self, "w", self.shape, self.names, init, self.config)


class Attention(nn.Module):
    """GQA self-attention with RoPE, logit soft-cap, optional sliding window and a KV cache."""

    config: Gemma2Config
    sliding: bool

    @nn.compact
    def __call__(
        self,
        x_BTD: Array,
        q_pos_BT: Array,
        rope: tuple[Array, Array],
        k_pos_BS: Array,
        attn_mask_BTS: Array,
        layer_cache: dict[str, Array] | None,
        write_index: Array | None,
    ) -> tuple[Array, dict[str, Array] | None]:
        """Attends ``T`` queries to ``S`` keys (the cache, or the ``T`` tokens themselves)."""
        c = self.config
        n, k, h, d = c.num_heads, c.num_kv_heads, c.head_dim, c.embed_dim
        # The projections are single 2-D matmuls through ``_matmul_w`` on the weights reshaped to
        # [in, out] (a transpose of a small weight): the weight gradients are then ``x^T g``
        # contracted over the token axis in place, where the per-einsum gradients made XLA:CPU
        # copy each [B*T, D] activation to [D, B*T] first (about a tenth of a small-config step).
        b, t = x_BTD.shape[:2]
        dt = x_BTD.dtype
        w_NDH = Weight(c, (n, d, h), ("heads", "embed", "head_dim"), name="q_einsum")()
        w_CKDH = Weight(
            c, (2, k, d, h), (None, "kv_heads", "embed", "head_dim"), name="kv_einsum"
        )()
        w_NHD = Weight(c, (n, h, d), ("heads", "head_dim", "embed"), name="attn_vec_einsum")()
        einsums = t == 1 or not c.matmul_projections
        if einsums:  # the weights as stored (decode: no per-token weight transposes)
            q_BTNH = jnp.einsum("BTD,NDH->BTNH", x_BTD, w_NDH.astype(dt))
            k_BTKH, v_BTKH = jnp.einsum("BTD,CKDH->CBTKH", x_BTD, w_CKDH.astype(dt))
        else:
            w_q = jnp.transpose(w_NDH, (1, 0, 2)).reshape(d, n * h).astype(dt)
            w_kv = jnp.transpose(w_CKDH, (2, 0, 1, 3)).reshape(d, 2 * k * h).astype(dt)
            q_BTNH = _matmul_w(x_BTD, w_q).reshape(b, t, n, h)
            kv_BTCKH = _matmul_w(x_BTD, w_kv).reshape(b, t, 2, k, h)
            k_BTKH, v_BTKH = kv_BTCKH[:, :, 0], kv_BTCKH[:, :, 1]
        q_BTNH = _apply_rope(q_BTNH, *rope)
        k_BTKH = _apply_rope(k_BTKH, *rope)
        q_BTNH = q_BTNH * jnp.asarray(c.query_pre_attn_scalar**-0.5, q_BTNH.dtype)

        k_BKHT = jnp.transpose(k_BTKH, (0, 2, 3, 1))
        v_BKTH = jnp.swapaxes(v_BTKH, 1, 2)
        if layer_cache is None:
            k_BKHS, v_BKSH, new_cache = k_BKHT, v_BKTH, None
        else:
            k_BKHS = lax.dynamic_update_slice(
                layer_cache["k"], k_BKHT.astype(layer_cache["k"].dtype), (0, 0, 0, write_index)
            )
            v_BKSH = lax.dynamic_update_slice(
                layer_cache["v"], v_BKTH.astype(layer_cache["v"].dtype), (0, 0, write_index, 0)
            )
            new_cache = {"k": k_BKHS, "v": v_BKSH}
            k_BKHS, v_BKSH = k_BKHS.astype(x_BTD.dtype), v_BKSH.astype(x_BTD.dtype)

        q_BTKRH = q_BTNH.reshape(b, t, k, n // k, h)
        if t == 1:
            # Decode: drop the length-1 T axis so both products are plain batched matmuls over
            # (B, K) on the cache as stored ([R, H] x [H, S], then [R, S] x [S, H]); the general
            # T-axis einsum makes XLA:CPU take a ~3x slower path for the decode step.
            logits_BKRS = jnp.einsum(
                "BKRH,BKHS->BKRS", q_BTKRH[:, 0], k_BKHS, preferred_element_type=jnp.float32
            )
            logits_BKRTS = logits_BKRS[:, :, :, None, :]
        else:
            logits_BKRTS = jnp.einsum(
                "BTKRH,BKHS->BKRTS", q_BTKRH, k_BKHS, preferred_element_type=jnp.float32
            )
        logits_BKRTS = _softcap(logits_BKRTS, c.attn_logit_softcap)
        mask_BTS = attn_mask_BTS
        if self.sliding:
            mask_BTS = mask_BTS & ((q_pos_BT[:, :, None] - k_pos_BS[:, None, :]) < c.sliding_window)
        logits_BKRTS = jnp.where(mask_BTS[:, None, None], logits_BKRTS, _MASK_VALUE)
        probs_BKRTS = _masked_softmax(logits_BKRTS, c.attn_logit_softcap).astype(v_BKSH.dtype)
        if t == 1:
            enc_BKRH = jnp.einsum("BKRS,BKSH->BKRH", probs_BKRTS[:, :, :, 0], v_BKSH)
            enc_BTKRH = enc_BKRH[:, None]
        else:
            enc_BTKRH = jnp.einsum("BKRTS,BKSH->BTKRH", probs_BKRTS, v_BKSH)
        if einsums:
            return jnp.einsum(
                "BTNH,NHD->BTD", enc_BTKRH.reshape(b, t, n, h), w_NHD.astype(dt)
            ), new_cache
        enc_BTF = enc_BTKRH.reshape(b, t, n * h)
        return _matmul_w(enc_BTF, w_NHD.reshape(n * h, d).astype(dt)), new_cache


class FeedForward(nn.Module):
    """GeGLU feed-forward: ``(gelu_tanh(x W_gate) * (x W_up)) W_down``."""

    config: Gemma2Config

    @nn.compact
    def __call__(self, x_BTD: Array) -> Array:
        c = self.config
        init = nn.initializers.normal(stddev=0.02)
        gating = _param(
            self, "gating_einsum", (2, c.hidden_dim, c.embed_dim), (None, "mlp", "embed"), init, c
        )
        linear = _param(self, "linear", (c.hidden_dim, c.embed_dim), ("mlp", "embed"), init, c)
        gating, linear = gating.astype(x_BTD.dtype), linear.astype(x_BTD.dtype)
        if c.matmul_projections:  # gate and up as one dot, hand-written gradients
            gate_up_BTCF = _matmul_wt(x_BTD, gating, x_BTD.dtype)
            gate_BTF, up_BTF = gate_up_BTCF[..., 0, :], gate_up_BTCF[..., 1, :]
        else:  # plain einsums, gate and up apart, autodiff gradients
            gate_BTF = jnp.einsum("BTD,FD->BTF", x_BTD, gating[0])
            up_BTF = jnp.einsum("BTD,FD->BTF", x_BTD, gating[1])
        act_BTF = jax.nn.gelu(gate_BTF, approximate=True) * up_BTF
        if c.matmul_projections:
            return _matmul_w(act_BTF, linear)
        return jnp.einsum("BTF,FD->BTD", act_BTF, linear)


class Embedder(nn.Module):
    """Holds the tied ``input_embedding [V, D]`` table."""

    config: Gemma2Config

    @nn.compact
    def __call__(self) -> Array:
        c = self.config
        init = nn.initializers.normal(stddev=c.embed_dim**-0.5)
        return _param(
            self, "input_embedding", (c.vocab_size, c.embed_dim), ("vocab", "embed"), init, c
        )


class Block(nn.Module):
    """One decoder layer: pre/post-normed attention, then pre/post-normed GeGLU, both residual."""

    config: Gemma2Config
    layer: int

    @nn.compact
    def __call__(self, x_BTD, q_pos_BT, rope, k_pos_BS, attn_mask_BTS, layer_cache, write_index):
        c = self.config
        h = RMSNorm(c, name="pre_attention_norm")(x_BTD)
        h, new_cache = Attention(c, c.is_sliding(self.layer), name="attn")(
            h, q_pos_BT, rope, k_pos_BS, attn_mask_BTS, layer_cache, write_index
        )
        x_BTD = x_BTD + RMSNorm(c, name="post_attention_norm")(h)
        h = RMSNorm(c, name="pre_ffw_norm")(x_BTD)
        h = FeedForward(c, name="mlp")(h)
        x_BTD = x_BTD + RMSNorm(c, name="post_ffw_norm")(h)
        return x_BTD, new_cache


class Gemma2(nn.Module):
    """The Gemma-2 decoder (parameters in the official Flax checkpoint layout)."""

    config: Gemma2Config

    @nn.compact
    def __call__(
        self,
        tokens: Array,
        positions: Array,
        attn_mask: Array,
        cache: Cache | None = None,
        rope: tuple[Array, Array] | None = None,
        gather: Array | None = None,
        train: bool | None = None,
    ) -> tuple[Array, Cache | None]:
        """Runs the decoder on ``T`` new tokens per row.

        Args:
          tokens: ``[B, T]`` int32 token ids.
          positions: ``[B, T]`` int32 RoPE positions of the tokens (per row; padding may reuse any).
          attn_mask: ``[B, T, S]`` bool, True where query ``t`` may attend to key ``s``. Without a
            cache ``S = T`` (the keys are the tokens themselves); with a cache ``S`` is the cache
            length and slot ``s`` means cache slot ``s`` *after* this call's write.
          cache: None, or the dict of ``init_cache`` (see the module docstring); the new keys are
            written at slots ``[cache["index"], cache["index"] + T)``.
          rope: optional precomputed ``rope_sincos(positions, config)`` (``[B, T, H/2]`` each);
            computed here when None.
          gather: optional ``[B, K]`` int32 token indices: only those positions are unembedded
            (logits ``[B, K, V]``), so the ``[B, T, V]`` logits of positions nobody reads are never
            formed (at a 256k vocabulary they dominate the step's memory).
          train: whether this is a forward pass to be differentiated (``config.remat`` applies);
            None means "when there is no cache".

        Returns:
          ``(logits [B, T, V] (or [B, K, V]) float32, new_cache or None)``.
        """
        c = self.config
        dtype = jnp.dtype(c.dtype)
        emb_VD = Embedder(c, name="embedder")()
        x_BTD = jnp.take(emb_VD, tokens, axis=0).astype(dtype)
        x_BTD = x_BTD * jnp.asarray(math.sqrt(c.embed_dim), dtype)

        if cache is None:
            k_pos_BS, write_index, new_cache = positions, None, None
        else:
            write_index = cache["index"]
            k_pos_BS = lax.dynamic_update_slice(
                cache["positions"], positions.astype(jnp.int32), (0, write_index)
            )
            new_cache = {"index": write_index + tokens.shape[1], "positions": k_pos_BS}

        if rope is None:
            rope = rope_sincos(positions, c)
        block = Block
        if train is None:
            train = cache is None
        if train and c.remat != "none":  # training forward: recompute blocks in backward
            block = nn.remat(Block, policy=REMAT_POLICIES[c.remat], prevent_cse=True)
        x_BTD = constrain(x_BTD, c.activation_batch_axes)
        for i in range(c.num_layers):
            name = f"layer_{i}"
            layer_cache = None if cache is None else cache[name]
            x_BTD, layer_new = block(c, i, name=name)(
                x_BTD, positions, rope, k_pos_BS, attn_mask, layer_cache, write_index
            )
            x_BTD = constrain(x_BTD, c.activation_batch_axes)
            if new_cache is not None:
                new_cache[name] = layer_new

        x_BTD = RMSNorm(c, name="final_norm")(x_BTD)
        if gather is not None:
            x_BTD = jnp.take_along_axis(x_BTD, gather[:, :, None].astype(jnp.int32), axis=1)
            x_BTD = constrain(x_BTD, c.activation_batch_axes)
        if c.matmul_projections:
            logits_BTV = _matmul_wt(x_BTD, emb_VD.astype(dtype), jnp.float32)
        else:
            logits_BTV = jnp.einsum(
                "BTD,VD->BTV", x_BTD, emb_VD.astype(dtype), preferred_element_type=jnp.float32
            )
        return _softcap(logits_BTV.astype(jnp.float32), c.final_logit_softcap), new_cache


# ----------------------------------------------------------------------------------------------------
# Functional API.


def init_params(config: Gemma2Config, rng: Array) -> Params:
    """Randomly initialises the parameters (norm scales 0, i.e. identity norms).

    Args:
      config: the architecture.
      rng: a PRNG key.

    Returns:
      The parameter tree (plain nested dict of arrays, no ``"params"`` wrapper; layout in the module
      docstring). Apply with ``Gemma2(config).apply({"params": params}, ...)``.
    """
    tokens = jnp.zeros((1, 1), jnp.int32)
    mask = jnp.ones((1, 1, 1), bool)
    variables = jax.jit(Gemma2(config).init)(rng, tokens, tokens, mask)
    return nn.meta.unbox(variables["params"])


def param_logical_axes(config: Gemma2Config) -> Any:
    """Logical axis names of every parameter, computed without allocating anything.

    Args:
      config: the architecture.

    Returns:
      A tree with the structure of ``init_params(config, rng)`` whose leaves are tuples of logical
      axis names (``"vocab"``, ``"embed"``, ``"heads"``, ``"kv_heads"``, ``"head_dim"``, ``"mlp"``, or
      ``None`` for an axis that is never sharded), one name per array dimension. Use it as the second
      tree of ``jax.tree.map(f, params, axes)``.
    """
    tokens = jnp.zeros((1, 1), jnp.int32)
    mask = jnp.ones((1, 1, 1), bool)
    boxed = jax.eval_shape(Gemma2(config).init, jax.random.key(0), tokens, tokens, mask)["params"]
    is_box = lambda x: isinstance(x, nn.LogicallyPartitioned)
    return jax.tree.map(lambda b: tuple(b.names), boxed, is_leaf=is_box)


def _apply(
    params: Params,
    config: Gemma2Config,
    tokens,
    positions,
    attn_mask,
    cache=None,
    rope=None,
    gather=None,
    train=None,
):
    return Gemma2(config).apply(
        {"params": params}, tokens, positions, attn_mask, cache, rope, gather, train
    )


@functools.partial(jax.jit, static_argnames="config")
def forward(params: Params, tokens: Array, config: Gemma2Config) -> Array:
    """Logits of plain unpadded sequences (positions ``0..T-1``, causal attention).

    Args:
      params: the parameter tree.
      tokens: ``[B, T]`` int32.
      config: the architecture (static).

    Returns:
      ``[B, T, V]`` float32 logits; ``logits[:, t]`` predicts token ``t + 1``.
    """
    b, t = tokens.shape
    positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    causal = jnp.tril(jnp.ones((t, t), bool))
    logits, _ = _apply(params, config, tokens, positions, jnp.broadcast_to(causal, (b, t, t)))
    return logits


def padded_positions(input_mask: Array) -> Array:
    """RoPE positions of padded rows: ``cumsum(mask) - 1``, clipped at 0 (pads reuse a neighbour's).

    Args:
      input_mask: ``[B, T]`` bool, True for real tokens.

    Returns:
      ``[B, T]`` int32 positions; the first real token of each row has position 0.
    """
    return jnp.maximum(jnp.cumsum(input_mask.astype(jnp.int32), axis=-1) - 1, 0)


@functools.partial(jax.jit, static_argnames="config")
def sequence_logits(
    params: Params,
    tokens: Array,
    input_mask: Array,
    config: Gemma2Config,
    gather: Array | None = None,
) -> Array:
    """Logits of padded sequences (e.g. left-padded prompts followed by sampled completions).

    Positions are ``cumsum(input_mask) - 1``; a query attends to the real keys at or before it (and,
    in local layers, within the sliding window). Rows of pads only attend uniformly to nothing real
    and their logits are meaningless but finite.

    Args:
      params: the parameter tree.
      tokens: ``[B, T]`` int32 (pad ids anywhere; they are masked out as keys).
      input_mask: ``[B, T]`` bool, True for real tokens.
      config: the architecture (static).
      gather: optional ``[B, K]`` int32 positions whose logits are wanted (the others are never
        unembedded).

    Returns:
      ``[B, T, V]`` float32 logits, ``logits[:, t]`` predicting token ``t + 1``; with ``gather``,
      ``[B, K, V]``, row ``k`` being position ``gather[:, k]``'s.
    """
    t = tokens.shape[1]
    input_mask = input_mask.astype(bool)
    positions = padded_positions(input_mask)
    attn_mask = jnp.tril(jnp.ones((t, t), bool))[None] & input_mask[:, None, :]
    logits, _ = _apply(params, config, tokens, positions, attn_mask, gather=gather)
    return logits


def init_cache(config: Gemma2Config, batch_size: int, max_len: int, dtype: Any = None) -> Cache:
    """An empty KV cache (layout in the module docstring).

    Args:
      config: the architecture.
      batch_size: ``B``.
      max_len: ``S``, the number of slots (prompt + generated tokens).
      dtype: storage dtype of keys / values; defaults to the compute dtype ``config.dtype``.

    Returns:
      ``{"index": int32 [], "positions": int32 [B, S], "layer_{i}": {"k": [B, K, H, S], "v": [B, K, S, H]}}``.
    """
    dtype = jnp.dtype(config.dtype if dtype is None else dtype)
    k_shape = (batch_size, config.num_kv_heads, config.head_dim, max_len)
    v_shape = (batch_size, config.num_kv_heads, max_len, config.head_dim)
    cache: Cache = {
        "index": jnp.zeros((), jnp.int32),
        "positions": jnp.zeros((batch_size, max_len), jnp.int32),
    }
    for i in range(config.num_layers):
        cache[f"layer_{i}"] = {"k": jnp.zeros(k_shape, dtype), "v": jnp.zeros(v_shape, dtype)}
    return cache


def grow_cache(cache: Cache, max_len: int) -> Cache:
    """The same cache with ``max_len`` slots (new slots empty, appended after the existing ones).

    Args:
      cache: a cache of ``init_cache`` layout with ``S <= max_len`` slots.
      max_len: the new number of slots.

    Returns:
      The padded cache (``index`` unchanged); the old slots keep their contents and meaning.
    """
    s = cache["positions"].shape[1]
    if max_len < s:
        raise ValueError(f"cannot shrink a cache of {s} slots to {max_len}")
    extra = max_len - s
    grown: Cache = {
        "index": cache["index"],
        "positions": jnp.pad(cache["positions"], ((0, 0), (0, extra))),
    }
    for name, layer in cache.items():
        if name.startswith("layer_"):
            grown[name] = {
                "k": jnp.pad(layer["k"], ((0, 0), (0, 0), (0, 0), (0, extra))),
                "v": jnp.pad(layer["v"], ((0, 0), (0, 0), (0, extra), (0, 0))),
            }
    return grown


def apply_with_cache(
    params: Params,
    config: Gemma2Config,
    tokens: Array,
    positions: Array,
    attn_mask: Array,
    cache: Cache,
    rope: tuple[Array, Array] | None = None,
    gather: Array | None = None,
    train: bool = False,
) -> tuple[Array, Cache]:
    """Runs ``T`` new tokens per row through the model, reading and writing ``cache``.

    Args:
      params: the parameter tree.
      config: the architecture.
      tokens: ``[B, T]`` int32.
      positions: ``[B, T]`` int32 RoPE positions.
      attn_mask: ``[B, T, S]`` bool over cache slots (after this call's write).
      cache: the cache dict (``S`` slots).
      rope: optional ``rope_sincos(positions, config)``, e.g. gathered from a table made once
        before a decode loop; computed from ``positions`` when None.
      gather: optional ``[B, K]`` int32 token indices: only those positions are unembedded (a
        prefill needs the last prompt token's logits only).
      train: True for a pass that will be differentiated (``config.remat`` then applies, as in
        the cache-free training forward).

    Returns:
      ``(logits [B, T, V] float32, new_cache)``; with ``gather``, ``[B, K, V]``.
    """
    return _apply(params, config, tokens, positions, attn_mask, cache, rope, gather, train)
