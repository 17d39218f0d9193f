"""Unbiased pass@k / maxg@k estimators and PKPO reward transforms, as pure ``jnp`` kernels.

Axis legend (used throughout the package): ``P`` prompts, ``G`` samples per prompt (= n), ``T`` tokens.
Every function takes rewards shaped ``[..., G]``: the last axis holds one prompt's group of samples and
any leading axes are batch. An optional boolean ``mask`` of the same shape marks valid samples, so groups
may be ragged; invalid positions get 0 and do not count in n.

``k`` may be a Python int or a traced integer scalar: the same compiled function serves every k, so
annealing k never recompiles. Python-int arguments are validated eagerly (``ValueError``).

Math (Walder & Karkhanis 2025, "PKPO", arXiv 2505.15201). Sort one group ascending,
``h_1 <= ... <= h_n``, and write ranks ``i = 1..n``. With ``D_i = C(i-1, k-1) / C(n, k)``:

* ``maxg@k = sum_i D_i h_i`` (Eq. 12), pass@k when the rewards are 0/1;
* ``s_i = D_i h_i + sum_{j>i} O_j h_j`` with ``O_j = C(j-2, k-2) / C(n, k) = D_j (k-1)/(j-1)`` (Eq. 19);
* ``rho_{-i}(m) = sum_{j<i} E_j h_j + sum_{j>i} E_{j-1} h_j`` is maxg@m of the group without sample i,
  with ``E_r = C(r-1, m-1) / C(n-1, m)``;
* ``s^(loo)_i = s_i - k/(n-1) rho_{-i}(k)`` (Eq. 29; equals ``s`` at k = n);
* ``s^(loo-1)_i = s_i - k/n rho_{-i}(k-1)`` (Eq. 33); at k = 1 it is defined as the leave-one-out
  centred reward at the family's 1/n scale, ``(g_i - mean_{j != i} g_j) / n`` (PKPO's Eq. 26 baseline).

The weights are computed top-down as products of ratios ``<= 1`` (``D_n = k/n``,
``D_{i-1} = D_i (i-k)/(i-1)``) with one reverse cumulative product, never from binomials or ``lgamma``
differences, so they neither overflow nor underflow where the true value is representable (n = 4096,
k = 2048 is fine in float32). Cost per group: one sort (keys with their indices), O(n) weights, two
cumulative sums and one scatter back: O(n log n).

Edge cases follow the one table in :mod:`passk_jax.validation`, shared with every advantage: a NaN or
inf reward in a *valid* position makes that group's outputs NaN (other groups are unaffected); values
at masked positions are ignored; groups with too few valid samples (fewer than k, or fewer than 2
where a leave-one-out baseline is needed) get NaN estimates and zero weights; a traced k outside
[1, n] gives NaN estimates and zero weights everywhere; a static k must be an integer in [1, n].
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from passk_jax import validation as V

Array = jax.Array

ESTIMATORS = ("s", "sloo", "sloo_minus_one")

__all__ = ["ESTIMATORS", "maxg_at_k", "pass_at_k", "pkpo_rewards"]


# ----------------------------------------------------------------------------------------------------
# Validation: one path for estimators and advantages (``passk_jax.validation``). These aliases keep
# the older private names importable.

_is_static_int = V.is_static_k
_check_k = V.check_k


# ----------------------------------------------------------------------------------------------------
# Sorting and rank weights.


def _sort_group(rewards: Array, mask: Array | None) -> tuple[Array, Array, Array, Array]:
    """Sorts each group ascending, invalid samples first.

    Returns:
      h: sorted rewards ``[..., G]`` (invalid ones are 0 and come first).
      perm: the source index of each sorted position ``[..., G]``.
      rank: 1-based rank among the group's valid samples ``[..., G]`` (<= 0 for invalid positions).
      n: number of valid samples ``[..., 1]`` (float).
    """
    g = rewards.shape[-1]
    dtype = rewards.dtype
    iota = lax.broadcasted_iota(jnp.int32, rewards.shape, rewards.ndim - 1)
    if mask is None:
        h, perm = lax.sort((rewards, iota), dimension=rewards.ndim - 1, num_keys=1)
        pos = jnp.arange(1, g + 1, dtype=dtype)  # static ranks, shared by every group
        n = jnp.full((1,), g, dtype)
        return h, perm, pos, n
    valid = mask.astype(jnp.int32)
    _, h, perm = lax.sort((valid, rewards, iota), dimension=rewards.ndim - 1, num_keys=2)
    n = jnp.sum(mask, axis=-1, keepdims=True).astype(dtype)
    pos = lax.broadcasted_iota(dtype, rewards.shape, rewards.ndim - 1) + 1
    rank = pos - (g - n)
    return h, perm, rank, n


def _rank_weights(rank: Array, n: Array, k: Array) -> Array:
    """``D_r = C(r-1, k-1) / C(n, k)`` for 1-based ranks r (0 for r < k or r < 1), O(n), stable.

    Computed top-down as ``D_n = k/n`` and ``D_{r-1} = D_r (r-k)/(r-1)``: one reverse cumulative product of
    ratios in [0, 1]. ``rank`` must be increasing along the last axis with the top rank n last (as sorted).
    Works for any real 0 <= k <= n (k = 0 gives all zeros).
    """
    k = jnp.asarray(k, rank.dtype)
    ratio = jnp.where(rank > jnp.maximum(k, 1), (rank - k) / jnp.maximum(rank - 1, 1), 0)
    # exclusive reverse cumulative product: prod_{t > r} ratio_t
    incl = lax.cumprod(ratio, axis=ratio.ndim - 1, reverse=True)
    excl = jnp.concatenate([incl[..., 1:], jnp.ones_like(incl[..., :1])], axis=-1)
    top = k / jnp.maximum(n, 1)
    return jnp.where(rank >= 1, top * excl, 0)


def _exclusive_cumsum(x: Array, reverse: bool = False) -> Array:
    """Sum over the strictly earlier (or, with ``reverse``, strictly later) positions of the last axis."""
    incl = lax.cumsum(x, axis=x.ndim - 1, reverse=reverse)
    zero = jnp.zeros_like(incl[..., :1])
    if reverse:
        return jnp.concatenate([incl[..., 1:], zero], axis=-1)
    return jnp.concatenate([zero, incl[..., :-1]], axis=-1)


def _scatter_back(values: Array, perm: Array) -> Array:
    """Inverse of the sort: ``out[..., perm[..., j]] = values[..., j]``."""
    lead = values.shape[:-1]
    g = values.shape[-1]
    flat_v = values.reshape(-1, g)
    flat_p = perm.reshape(-1, g)
    out = jax.vmap(lambda v, p: jnp.zeros_like(v).at[p].set(v, unique_indices=True))(flat_v, flat_p)
    return out.reshape(*lead, g)


def _loo_maxg(h: Array, rank: Array, n: Array, m: Array) -> Array:
    """``rho_{-i}(m)``: maxg@m of each group without sample i, in sorted order, for 1 <= m <= n-1.

    ``sum_{j<i} E_j h_j + sum_{j>i} E_{j-1} h_j`` with ``E_r = C(r-1, m-1)/C(n-1, m) = D^(n,m)_r n/(n-m)``.
    Where m >= n (no size-m subset of n-1 samples) the result is 0.
    """
    m = jnp.asarray(m, h.dtype)
    d = _rank_weights(rank, n, m)
    scale = jnp.where(n > m, n / jnp.maximum(n - m, 1), 0)
    e = d * scale  # E_r at rank r
    # E_{r-1} at rank r: top-down recurrence E_{r-1} = E_r (r-m)/(r-1).
    e_prev = jnp.where(rank > jnp.maximum(m, 1), e * (rank - m) / jnp.maximum(rank - 1, 1), 0)
    below = _exclusive_cumsum(e * h)  # sum_{j<i} E_j h_j
    above = _exclusive_cumsum(e_prev * h, reverse=True)  # sum_{j>i} E_{j-1} h_j
    return below + above


# ----------------------------------------------------------------------------------------------------
# Public estimators.


def _counts(x: Any, what: str) -> Array:
    """A count as a float array (host integers converted exactly), NaN where it is not an integer."""
    values, inexact = V._as_float_array(x, what)
    ok = jnp.isfinite(values) & (values == jnp.floor(values))
    if inexact is not None:
        ok = ok & ~inexact
    return jnp.where(ok, values, jnp.nan)


def pass_at_k(num_correct: Any, num_samples: Any, k: Any) -> Array:
    """Unbiased pass@k estimate ``1 - C(n-c, k) / C(n, k)`` (Chen et al. 2021; PKPO Eq. 3).

    Computed as ``1 - prod_{t<k} (n-c-t)/(n-t)``, a product of ratios in [0, 1] (no large binomials).

    Args:
      num_correct: number of correct samples c, any integer-valued array (broadcasts).
      num_samples: number of samples n (broadcasts with ``num_correct``).
      k: Python / NumPy int, or an integer JAX scalar (may be traced), with 1 <= k <= n.

    Returns:
      Float array of the broadcast shape (float64 only for float64 / x64 input, else float32): the
      estimate; NaN where k > n or k < 1 (traced k), where c or n is not a finite integer, and where
      c < 0 or c > n (undefined).

    Raises:
      ValueError: a static k outside [1, n] (n checked when it is a Python / NumPy int), a k that is
        not an integer (bool, float, str), integer counts beyond exact float range.

    Example:
      >>> float(pass_at_k(2, 8, 4))  # 1 - C(6,4)/C(8,4) = 1 - 15/70
      0.7857142...
    """
    V.check_k(k, int(num_samples) if V.is_static_k(num_samples) else None)
    c = _counts(num_correct, "num_correct")
    n = _counts(num_samples, "num_samples")
    dtype = jnp.promote_types(c.dtype, n.dtype)
    c, n = c.astype(dtype), n.astype(dtype)
    kk = jnp.asarray(k).astype(dtype)
    shape = jnp.broadcast_shapes(c.shape, n.shape, kk.shape)
    c, n, kk = (jnp.broadcast_to(x, shape) for x in (c, n, kk))

    def body(t, prod):
        t = jnp.asarray(t, dtype)
        factor = jnp.clip((n - c - t) / jnp.maximum(n - t, 1), 0, 1)
        return jnp.where(t < kk, prod * factor, prod)

    if V.is_static_k(k):
        bound = int(k)
    elif kk.size:
        # never loop past n: the estimate is NaN for k > n anyway (a huge traced k stays cheap)
        top_n = jnp.max(jnp.where(jnp.isfinite(n), n, 0))
        bound = jnp.clip(jnp.minimum(jnp.max(kk), top_n), 0, None).astype(jnp.int32)
    else:
        bound = 0
    fail = lax.fori_loop(0, bound, body, jnp.ones(shape, dtype))
    ok = (kk >= 1) & (kk <= n) & (c >= 0) & (c <= n)  # NaN counts fail every comparison
    return jnp.where(ok, 1 - fail, jnp.nan)


def maxg_at_k(rewards: Any, k: Any, mask: Any = None) -> Array:
    """Unbiased estimate of maxg@k = E[max of k i.i.d. rewards] from n >= k samples (PKPO Eq. 12).

    ``rho = sum_i D_i h_i`` over the ascending-sorted rewards ``h``, ``D_i = C(i-1, k-1)/C(n, k)``: the
    average of the maximum over all size-k subsets. On 0/1 rewards this is pass@k.

    Args:
      rewards: ``[..., G]`` rewards (int, bool or float); last axis = one prompt's samples.
      k: Python / NumPy int in [1, n], or an integer JAX scalar (may be traced).
      mask: optional bool ``[..., G]``; False entries are ignored (ragged groups).

    Returns:
      ``[...]`` estimates (float32; float64 for float64 input with x64 on). NaN for groups with
      fewer than k valid samples, for groups holding a NaN / inf valid reward, and for every group
      when a traced k lies outside [1, n] (``passk_jax.validation``'s table).

    Example:
      >>> float(maxg_at_k(jnp.array([0.1, 0.5, 0.2, 0.9, 0.3]), 2))
      0.59...
    """
    g_static = V.static_n(rewards)
    V.check_k(k, g_static)
    rewards, mask, bad = V.prepare_rewards(rewards, mask)
    k_ok = V.k_in_range(k, rewards.shape[-1])
    kk = V.safe_k(k, rewards.shape[-1])
    h, _, rank, n = _sort_group(rewards, mask)
    d = _rank_weights(rank, n, kk)
    rho = jnp.sum(d * h, axis=-1)
    k_f = jnp.asarray(kk, h.dtype)
    return V.finish_estimates(jnp.where(n[..., 0] >= k_f, rho, jnp.nan), bad, k_ok)


def pkpo_rewards(
    rewards: Any, k: Any, estimator: str = "sloo_minus_one", mask: Any = None
) -> Array:
    """PKPO effective rewards: per-sample weights whose REINFORCE gradient is unbiased for ∇maxg@k.

    ``sum_i r_i ∇log p(x_i)`` with ``r = pkpo_rewards(g, k, ...)`` is an unbiased estimate of
    ``∇ maxg@k`` (of ``∇ pass@k`` for 0/1 rewards). Estimators (PKPO section 4):

    * ``"s"``: ``s_i = (1/C(n,k)) sum_{|I|=k, i in I} max_I g`` (Eq. 19); no baseline.
    * ``"sloo"``: ``s_i - k/(n-1) * maxg@k(others)`` (Eq. 29); equals ``s`` at k = n; needs n >= 2.
    * ``"sloo_minus_one"`` (default, "PKPO"): ``s_i - k/n * maxg@(k-1)(others)`` (Eq. 33): sample i's
      marginal contribution to each subset's maximum; at k = n it is Tang et al.'s max minus second-max;
      at k = 1 it is ``(g_i - mean_{j != i} g_j) / n``. Constant reward vectors map to 0.

    Args:
      rewards: ``[..., G]`` rewards (int, bool or float); last axis = one prompt's n samples.
      k: Python / NumPy int in [1, n], or an integer JAX scalar (may be traced).
      estimator: one of ``"s"``, ``"sloo"``, ``"sloo_minus_one"``.
      mask: optional bool ``[..., G]``; invalid samples get 0 and do not count in n.

    Returns:
      ``[..., G]`` effective rewards (float32; float64 for float64 input with x64 on). Groups with
      fewer than k valid samples (or fewer than 2 for the leave-one-out estimators) get all zeros;
      groups holding a NaN / inf valid reward get NaN at their valid positions; a traced k outside
      [1, n] gives zeros everywhere (``passk_jax.validation``'s table).

    Example:
      >>> pkpo_rewards(jnp.array([0.1, 0.5, 0.2, 0.9, 0.3]), 2)
      Array([0.  , 0.09, 0.01, 0.25, 0.03], dtype=float32)

    References:
      Walder & Karkhanis, "Pass@K Policy Optimization", arXiv 2505.15201, Theorems 4, 6, 7 and Listing 1.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"`estimator` must be one of {ESTIMATORS}, got {estimator!r}.")
    g_static = V.static_n(rewards)
    V.check_k(k, g_static)
    if estimator != "s" and g_static is not None and g_static < 2:
        raise ValueError(
            f"`rewards` has n = {g_static} samples per group; estimator {estimator!r} needs a "
            "leave-one-out baseline and so n >= 2."
        )
    rewards, mask, bad = V.prepare_rewards(rewards, mask)
    k_ok = V.k_in_range(k, rewards.shape[-1])
    h, perm, rank, n = _sort_group(rewards, mask)
    dt = h.dtype
    kf = jnp.asarray(V.safe_k(k, rewards.shape[-1]), dt)

    d = _rank_weights(rank, n, kf)
    o = jnp.where(rank > 1, d * (kf - 1) / jnp.maximum(rank - 1, 1), 0)
    s = d * h + _exclusive_cumsum(o * h, reverse=True)

    if estimator == "s":
        out = s
        ok = n >= kf
    elif estimator == "sloo":
        out = s - kf / jnp.maximum(n - 1, 1) * _loo_maxg(h, rank, n, kf)
        ok = (n >= kf) & (n >= 2)
    else:
        # k >= 2: marginal-contribution baseline; k == 1: leave-one-out centring at the 1/n scale.
        loo = s - kf / jnp.maximum(n, 1) * _loo_maxg(h, rank, n, kf - 1)
        total = jnp.sum(h, axis=-1, keepdims=True)
        k1 = (h - (total - h) / jnp.maximum(n - 1, 1)) / jnp.maximum(n, 1)
        out = jnp.where(kf == 1, k1, loo)
        ok = (n >= kf) & (n >= 2)
    out = jnp.where(ok & (rank >= 1), out, 0)
    return V.finish_weights(_scatter_back(out, perm), mask, bad, k_ok)
