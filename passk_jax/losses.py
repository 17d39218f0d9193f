"""Policy-gradient losses: token log-probs, REINFORCE / PPO-clip surrogates, KL, entropy, aggregation.

Axis legend: ``B`` sequences (= P x G samples), ``T`` completion tokens, ``V`` vocabulary.

Every per-sample weighting in the package (PKPO transforms, Chen et al. advantages, GRPO, ...) enters
the loss as one scalar ``weights [B]`` per sequence, broadcast over the sequence's tokens.

**Aggregation.** ``"seq_mean_token_sum"`` is the default: ``-(1/B) sum_b w_b sum_t log p(y_bt)`` is
exactly the REINFORCE estimator ``sum_i r_i ∇ log p(x_i)`` for which PKPO's transforms are *unbiased*
(up to the constant 1/B). ``"token_mean"`` (DAPO's token-level loss, used by Chen et al.) divides by
the batch's total token count, which reweights samples by length; ``"seq_mean_token_mean"`` (GRPO's
original) divides each sequence by its own length. Both are available for reproductions; both bias the
pass@k gradient whenever lengths vary.

To make micro-batch gradient accumulation exact, the loss functions return *sums* already divided by
a normaliser computed on the whole batch (:func:`normaliser`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum")
POLICY_LOSSES = ("reinforce", "ppo")
KL_ESTIMATORS = ("k1", "k3")
# How train_step splits a batch into gradient-accumulation micro-batches (train.micro_layout).
MICRO_SPLITS = ("auto", "strided", "contiguous")

__all__ = [
    "AGGREGATIONS",
    "KL_ESTIMATORS",
    "POLICY_LOSSES",
    "aggregate",
    "kl_penalty",
    "logprobs_and_entropy",
    "normaliser",
    "policy_surrogate",
    "token_entropy",
    "token_logprobs",
]


def _spec(temperature: float, top_k: int | None, top_p: float | None):
    from passk_jax import sampler  # the sampling specification lives with the sampler

    if not temperature > 0:
        raise ValueError(f"the loss needs a sampling temperature > 0, got {temperature}.")
    return sampler.Sampling(float(temperature), top_k, None if top_p is None else float(top_p))


def token_logprobs(
    logits_BTV: Array,
    targets_BT: Array,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> Array:
    """Log-probabilities of ``targets`` under the sampling distribution, in float32.

    The distribution is the sampler's (``sampler.Sampling(temperature, top_k, top_p).log_probs``):
    ``softmax(logits / temperature)`` restricted to the top-k / top-p support, so log-probs of the
    sampler's own tokens recomputed here equal the sampler's (PPO ratio 1 on-policy). A target just
    outside a recomputed cut-off (float round-off) is kept in the support instead of getting -inf.

    Args:
      logits_BTV: ``[B, T, V]`` logits (any float dtype).
      targets_BT: ``[B, T]`` int token ids.
      temperature: sampling temperature the tokens were drawn with (> 0).
      top_k / top_p: the sampler's truncation (None: none).

    Returns:
      ``[B, T]`` float32 log-probs.
    """
    return logprobs_and_entropy(logits_BTV, targets_BT, temperature, top_k, top_p)[0]


def logprobs_and_entropy(
    logits_BTV: Array,
    targets_BT: Array,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> tuple[Array, Array]:
    """``(log p(target) [B, T], entropy [B, T])`` of the sampling distribution, from one log-softmax.

    See :func:`token_logprobs`; the entropy is that of the same (truncated) distribution.
    """
    targets = targets_BT.astype(jnp.int32)
    if top_k is None and top_p is None:
        x = logits_BTV.astype(jnp.float32) / temperature if temperature != 1.0 else logits_BTV
        logp_BTV = jax.nn.log_softmax(x.astype(jnp.float32), axis=-1)
        ent = -jnp.sum(jnp.exp(logp_BTV) * logp_BTV, axis=-1)
    else:
        logp_BTV = _spec(temperature, top_k, top_p).log_probs(logits_BTV, keep=targets)
        # exp(-inf) * -inf is NaN: outside the support the summand (and its gradient) is 0.
        safe = jnp.where(jnp.isfinite(logp_BTV), logp_BTV, 0.0)
        ent = -jnp.sum(jnp.exp(logp_BTV) * safe, axis=-1)
    # A one-hot select rather than a gather: it fuses with the log-softmax, and its gradient is
    # elementwise (a gather's is a scatter-add, slow on XLA:CPU).
    hot = targets[..., None] == jax.lax.broadcasted_iota(
        jnp.int32, logp_BTV.shape, logp_BTV.ndim - 1
    )
    picked = jnp.sum(jnp.where(hot, logp_BTV, 0.0), axis=-1)
    return picked, ent


def token_entropy(
    logits_BTV: Array,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> Array:
    """Entropy of the sampling distribution per token, float32 ``[B, T]`` (see token_logprobs)."""
    if top_k is None and top_p is None:
        logp = jax.nn.log_softmax(logits_BTV.astype(jnp.float32) / temperature, axis=-1)
        return -jnp.sum(jnp.exp(logp) * logp, axis=-1)
    logp = _spec(temperature, top_k, top_p).log_probs(logits_BTV)
    return -jnp.sum(jnp.exp(logp) * jnp.where(jnp.isfinite(logp), logp, 0.0), axis=-1)


def normaliser(mask_BT: Array, aggregation: str) -> Array:
    """The whole batch's denominator for ``aggregation`` (token count, or number of sequences)."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"`aggregation` must be one of {AGGREGATIONS}, got {aggregation!r}.")
    if aggregation == "token_mean":
        return jnp.maximum(jnp.sum(mask_BT.astype(jnp.float32)), 1.0)
    return jnp.asarray(mask_BT.shape[0], jnp.float32)


def aggregate(values_BT: Array, mask_BT: Array, aggregation: str, norm: Array) -> Array:
    """Reduces per-token values to a scalar with ``aggregation``, divided by the batch ``norm``.

    Args:
      values_BT: ``[B, T]`` per-token values.
      mask_BT: ``[B, T]`` bool, tokens that count.
      aggregation: one of ``AGGREGATIONS``.
      norm: from :func:`normaliser` on the *whole* batch (so micro-batches add up exactly).

    Returns:
      A float32 scalar.
    """
    m = mask_BT.astype(jnp.float32)
    v = values_BT.astype(jnp.float32) * m
    if aggregation == "seq_mean_token_mean":
        per_seq = jnp.sum(v, axis=-1) / jnp.maximum(jnp.sum(m, axis=-1), 1.0)
        return jnp.sum(per_seq) / norm
    if aggregation in AGGREGATIONS:
        return jnp.sum(v) / norm
    raise ValueError(f"`aggregation` must be one of {AGGREGATIONS}, got {aggregation!r}.")


def policy_surrogate(
    logp_BT: Array,
    old_logp_BT: Array,
    weights_B: Array,
    *,
    kind: str = "reinforce",
    clip_low: float = 0.2,
    clip_high: float = 0.28,
) -> tuple[Array, dict[str, Array]]:
    """Per-token policy-gradient loss (to be minimised) and diagnostics.

    * ``"reinforce"``: ``-w_b * log p(y_bt)`` (on-policy; ``old_logp`` only feeds diagnostics).
    * ``"ppo"``: ``-min(ratio * w, clip(ratio, 1 - clip_low, 1 + clip_high) * w)`` with
      ``ratio = exp(logp - old_logp)`` against the sampler's log-probs; ``clip_high > clip_low`` is
      DAPO's clip-higher (0.2 / 0.28 in Chen et al.).

    Args:
      logp_BT: ``[B, T]`` log-probs under the current parameters (differentiable).
      old_logp_BT: ``[B, T]`` log-probs of the sampling policy.
      weights_B: ``[B]`` per-sequence weights (advantages / transformed rewards).
      kind: ``"reinforce"`` or ``"ppo"``.
      clip_low, clip_high: PPO clip range.

    Returns:
      ``(loss_BT, aux)`` with ``aux`` holding ``[B, T]`` ``ratio`` and ``clipped`` (float 0/1).
    """
    w = weights_B.astype(jnp.float32)[:, None]
    log_ratio = logp_BT - old_logp_BT
    ratio = jnp.exp(log_ratio)
    if kind == "reinforce":
        loss = -w * logp_BT
        clipped = jnp.zeros_like(logp_BT)
    elif kind == "ppo":
        unclipped = ratio * w
        clipped_obj = jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high) * w
        loss = -jnp.minimum(unclipped, clipped_obj)
        clipped = (clipped_obj < unclipped).astype(jnp.float32)
    else:
        raise ValueError(f"`kind` must be one of {POLICY_LOSSES}, got {kind!r}.")
    return loss, {"ratio": jax.lax.stop_gradient(ratio), "clipped": clipped}


def kl_penalty(logp_BT: Array, ref_logp_BT: Array, estimator: str = "k3") -> Array:
    """Per-token estimate of KL(pi || pi_ref) from sampled tokens.

    ``"k1"``: ``logp - ref_logp`` (unbiased, high variance, can be negative).
    ``"k3"``: ``exp(ref - logp) - (ref - logp) - 1`` (unbiased, non-negative, low variance; Schulman's).
    """
    if estimator == "k1":
        return logp_BT - ref_logp_BT
    if estimator == "k3":
        d = ref_logp_BT - logp_BT
        return jnp.exp(d) - d - 1.0
    raise ValueError(f"`estimator` must be one of {KL_ESTIMATORS}, got {estimator!r}.")


def check_options(kind: str, aggregation: str, kl_estimator: str) -> None:
    """Raises ``ValueError`` naming the bad option (called once, outside ``jit``)."""
    if kind not in POLICY_LOSSES:
        raise ValueError(f"`policy_loss` must be one of {POLICY_LOSSES}, got {kind!r}.")
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"`aggregation` must be one of {AGGREGATIONS}, got {aggregation!r}.")
    if kl_estimator not in KL_ESTIMATORS:
        raise ValueError(f"`kl_estimator` must be one of {KL_ESTIMATORS}, got {kl_estimator!r}.")
