"""Group advantages: GRPO, RLOO, Tang et al. (k = n), and Chen et al.'s Pass@k Training variants.

Axis legend: ``P`` prompts, ``G`` samples per prompt (= n). Every function maps rewards ``[..., G]`` to
per-sample advantages ``[..., G]`` (float32, or float64 for float64 input); leading axes are batch. An
optional bool ``mask`` marks valid samples: invalid ones get 0 and do not count in n. ``k`` may be a
Python int (validated eagerly) or a traced integer scalar (no recompilation when it changes).

Conventions chosen here (Chen et al. 2025, arXiv 2508.10751):

* **GRPO uses the population std** (ddof = 0): ``(r - mean) / std``. This is Chen et al.'s Eq. 1-3
  and makes the analytical Pass@k advantage at k = 1 *exactly* GRPO. Groups with zero std get 0
  (verl adds 1e-6 to the std instead, which gives 0 there too, and uses ddof = 1; multiply by
  ``sqrt((n-1)/n)`` to convert).
* **Pass@k advantages (analytical)** are the response-level Eqs. 14-15, zero-sum per prompt, computed
  ε-free from ``1 - R = C(n-c, k)/C(n, k)`` as ``A_pos = sqrt((1-R)/R)``, ``A_neg = -(c/(n-c)) A_pos``;
  saturated groups (c = 0, c = n, n - c < k) get exactly 0.
* **Binary inputs** (Pass@k Training variants) must be exactly 0/1. Concrete arrays with other finite
  values raise ``ValueError``; under ``jit`` the check cannot raise, so a group holding a non-binary
  valid reward gets NaN advantages (caught by the RL loop's non-finite check) instead of a silent
  pass-through.
* **Every other edge case** (k type and range, static or traced; NaN / inf rewards; masks; too few
  valid samples; integer range; dtypes) follows the one table in :mod:`passk_jax.validation`, for
  every method alike. Methods that take no k (``grpo``, ``rloo``, ``tang``) validate and apply a k
  passed to them through the registry like every other method.

Registry: ``ADVANTAGES[name](rewards, *, k, mask, key)``; configs store the name. PKPO's transforms
(``pkpo_s``, ``pkpo_sloo``, ``pkpo_sloo_minus_one``) are registered here too, so a trainer needs one
lookup for every per-sample weighting.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from passk_jax import estimators as E
from passk_jax import validation as V

Array = jax.Array

__all__ = [
    "ADVANTAGES",
    "BINARY_ONLY",
    "K_FREE",
    "NEEDS_KEY",
    "bootstrap_passk_advantages",
    "centred_pkpo_advantages",
    "combination_advantages",
    "compute_advantages",
    "exceeding_passk_advantages",
    "expected_weight",
    "advantage_mass",
    "surrogate_objective",
    "full_sampling_passk_advantages",
    "grpo_advantages",
    "noisy_reward_advantages",
    "passk_advantages",
    "rloo_advantages",
    "tang_advantages",
    "unnormalised_passk_advantages",
]


# ----------------------------------------------------------------------------------------------------
# Shared helpers.


def _valid_count(mask: Array | None, rewards: Array) -> Array:
    if mask is None:
        return jnp.full(rewards.shape[:-1] + (1,), rewards.shape[-1], rewards.dtype)
    return jnp.sum(mask, axis=-1, keepdims=True).astype(rewards.dtype)


_static_n = V.static_n


def _require_n(rewards: Any, at_least: int, what: str) -> None:
    n = _static_n(rewards)
    if n is not None and n < at_least:
        raise ValueError(f"`rewards` has n = {n} samples per group; {what} needs n >= {at_least}.")


def _check_binary(rewards: Array, mask: Array | None, name: str) -> Array:
    """Returns a ``[..., 1]`` bool "group is binary"; raises eagerly on concrete non-binary input."""
    is01 = (rewards == 0) | (rewards == 1)  # non-finite values were zeroed by prepare_rewards
    if mask is not None:
        is01 = is01 | ~mask
    ok = jnp.all(is01, axis=-1, keepdims=True)
    try:
        concrete = np.asarray(ok)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return ok
    if not concrete.all():
        bad = np.asarray(rewards)[~np.asarray(is01)]
        raise ValueError(
            f"`rewards` passed to {name} must be binary (exactly 0 or 1); found non-binary values such as "
            f"{bad[:5].tolist()}. Use a PKPO transform (pkpo_rewards) for continuous rewards."
        )
    return ok


def _masked_mean_std(x: Array, mask: Array | None) -> tuple[Array, Array, Array]:
    n = _valid_count(mask, x)
    w = jnp.ones_like(x) if mask is None else mask.astype(x.dtype)
    mean = jnp.sum(x * w, axis=-1, keepdims=True) / jnp.maximum(n, 1)
    var = jnp.sum(w * (x - mean) ** 2, axis=-1, keepdims=True) / jnp.maximum(n, 1)
    return mean, jnp.sqrt(var), n


def _finish(adv: Array, mask: Array | None) -> Array:
    return adv if mask is None else jnp.where(mask, adv, 0)


def _zscore(x: Array, mask: Array | None) -> Array:
    mean, std, _ = _masked_mean_std(x, mask)
    # Constant groups, detected exactly: the mean's round-off can leave a tiny non-zero std there,
    # which would blow (x - mean) up into large advantages.
    valid = jnp.ones(x.shape, bool) if mask is None else mask
    hi = jnp.max(jnp.where(valid, x, -jnp.inf), axis=-1, keepdims=True)
    lo = jnp.min(jnp.where(valid, x, jnp.inf), axis=-1, keepdims=True)
    zero = (hi <= lo) | (std == 0)
    safe = jnp.where(zero, 1, std)
    return _finish(jnp.where(zero, 0, (x - mean) / safe), mask)


# ----------------------------------------------------------------------------------------------------
# Pass@1 baselines.


def grpo_advantages(rewards: Any, mask: Any = None) -> Array:
    """GRPO advantages ``(r_i - mean) / std`` per group, population std (ddof = 0).

    Args:
      rewards: ``[..., G]`` rewards. mask: optional bool ``[..., G]``.

    Returns:
      ``[..., G]`` advantages; 0 for groups whose valid rewards are all equal.

    Example:
      >>> grpo_advantages(jnp.array([1., 0., 0., 1.]))
      Array([ 1., -1., -1.,  1.], dtype=float32)
    """
    rewards, mask, bad = V.prepare_rewards(rewards, mask)
    return V.finish_weights(_zscore(rewards, mask), mask, bad)


def rloo_advantages(rewards: Any, mask: Any = None) -> Array:
    """RLOO advantages ``r_i - mean_{j != i} r_j`` (leave-one-out baseline; unbiased for pass@1).

    Args:
      rewards: ``[..., G]`` rewards, n >= 2. mask: optional bool ``[..., G]``.

    Returns:
      ``[..., G]`` advantages; 0 for groups with fewer than 2 valid samples.
    """
    _require_n(rewards, 2, "rloo_advantages")
    rewards, mask, bad = V.prepare_rewards(rewards, mask)
    n = _valid_count(mask, rewards)
    total = jnp.sum(rewards, axis=-1, keepdims=True)
    adv = rewards - (total - rewards) / jnp.maximum(n - 1, 1)
    return V.finish_weights(jnp.where(n >= 2, adv, 0), mask, bad)


def tang_advantages(rewards: Any, mask: Any = None) -> Array:
    """Tang et al. (2025) pass@n / max@n advantages: top sample gets ``max - second max``, others 0.

    This is PKPO's ``sloo_minus_one`` at k = n. With a tie at the top every sample gets 0. No std
    normalisation (verl's optional division by the group std is not applied).

    Args:
      rewards: ``[..., G]`` rewards, n >= 2. mask: optional bool ``[..., G]``.

    Returns:
      ``[..., G]`` advantages.
    """
    _require_n(rewards, 2, "tang_advantages")
    rewards, mask, bad = V.prepare_rewards(rewards, mask)
    neg = jnp.asarray(-jnp.inf, rewards.dtype)
    x = rewards if mask is None else jnp.where(mask, rewards, neg)
    top2, idx = lax.top_k(x, 2)
    gap = top2[..., 0:1] - top2[..., 1:2]
    gap = jnp.where(jnp.isfinite(gap), gap, 0)  # fewer than 2 valid samples
    is_top = jnp.arange(x.shape[-1]) == idx[..., 0:1]
    return V.finish_weights(jnp.where(is_top, gap, 0), mask, bad)


# ----------------------------------------------------------------------------------------------------
# Chen et al. Pass@k Training.


def _passk_stats(c: Array, n: Array, k: Any, bound: int) -> Array:
    """``1 - R = C(n-c, k)/C(n, k) = prod_{t<k} (n-c-t)/(n-t)`` with t over a static range [0, bound)."""
    t = jnp.arange(bound, dtype=c.dtype)
    kf = jnp.asarray(k, c.dtype)
    factor = jnp.clip((n - c - t) / jnp.maximum(n - t, 1), 0, 1)
    return jnp.prod(jnp.where(t < kf, factor, 1), axis=-1, keepdims=True)


def passk_advantages(rewards: Any, k: Any, mask: Any = None) -> Array:
    """Chen et al.'s analytical Pass@k advantages (response level, Eqs. 14-15), binary rewards.

    With ``R = 1 - C(n-c, k)/C(n, k)`` (the mean group reward over all size-k subsets) and
    ``sigma = sqrt(R (1 - R))``: ``A_pos = (1 - R)/sigma``, ``A_neg = (1 - R - q)/sigma``,
    ``q = C(n-c-1, k-1)/C(n-1, k-1)``. Equivalent, cancellation-free forms used here:
    ``A_pos = sqrt((1-R)/R)`` and ``A_neg = -(c/(n-c)) A_pos`` (zero-sum per group).

    Args:
      rewards: ``[..., G]`` binary (0/1) rewards.
      k: Python / NumPy int in [1, n], or an integer JAX scalar (may be traced); a traced k
        outside [1, n] gives all-zero advantages.
      mask: optional bool ``[..., G]``.

    Returns:
      ``[..., G]`` advantages; 0 for groups with c = 0, c = n or n - c < k (saturated), and for groups
      with fewer than k valid samples. k = 1 gives GRPO with population std.

    Example:
      >>> passk_advantages(jnp.array([1, 0, 0, 0, 0, 0, 0, 0]), 4)  # R = 0.5
      Array([ 1.        , -0.14285715, ...], dtype=float32)
    """
    V.check_k(k, _static_n(rewards))
    rewards, mask, bad = V.prepare_rewards(rewards, mask)
    g = rewards.shape[-1]
    adv = _passk_core(rewards, mask, V.safe_k(k, g), "passk_advantages")
    return V.finish_weights(adv, mask, bad, V.k_in_range(k, g))


def _passk_core(rewards: Array, mask: Array | None, k: Any, name: str) -> Array:
    """Analytical Pass@k advantages of prepared rewards, for a k already in [1, G]."""
    binary = _check_binary(rewards, mask, name)
    n = _valid_count(mask, rewards)
    c = jnp.sum(rewards, axis=-1, keepdims=True)
    fail = _passk_stats(c, n, k, rewards.shape[-1])  # 1 - R
    r_bar = 1 - fail
    a_pos = jnp.sqrt(jnp.where(r_bar > 0, fail / jnp.where(r_bar > 0, r_bar, 1), 0))
    a_neg = -c / jnp.maximum(n - c, 1) * a_pos
    adv = jnp.where(rewards == 1, a_pos, a_neg)
    adv = jnp.where(n >= jnp.asarray(k, n.dtype), adv, 0)
    return _finish(jnp.where(binary, adv, jnp.nan), mask)


def _valid_rank(mask: Array | None, shape: tuple[int, ...]) -> Array:
    """0-based position of each sample among the valid samples of its group (in original order)."""
    if mask is None:
        return jnp.broadcast_to(jnp.arange(shape[-1]), shape)
    return jnp.cumsum(mask, axis=-1) - 1


def full_sampling_passk_advantages(rewards: Any, k: Any, mask: Any = None) -> Array:
    """Chen et al.'s full-sampling Pass@k advantages (Alg. 1), any rewards (group reward = max).

    The valid samples are split *in order* into ``floor(n/k)`` disjoint groups of k; each group's reward
    is its members' maximum; group rewards are z-scored (population std) across the prompt's groups and
    every member inherits its group's advantage. The ``n mod k`` leftover samples get 0.

    Args:
      rewards: ``[..., G]`` rewards.
      k: Python / NumPy int in [1, n], or an integer JAX scalar (may be traced); a traced k
        outside [1, n] gives all-zero advantages. mask: optional bool.

    Returns:
      ``[..., G]`` advantages.
    """
    V.check_k(k, _static_n(rewards))
    rewards, mask, bad = V.prepare_rewards(rewards, mask)
    g = rewards.shape[-1]
    n = _valid_count(mask, rewards)
    kk = jnp.asarray(V.safe_k(k, g), jnp.int32)
    num_groups = n.astype(jnp.int32) // kk  # [..., 1]
    group = _valid_rank(mask, rewards.shape) // kk  # [..., G]
    member = group < num_groups
    if mask is not None:
        member = member & mask
    # one-hot membership over at most G groups: [..., groups=G, G]
    onehot = (group[..., None, :] == jnp.arange(g)[:, None]) & member[..., None, :]
    neg = jnp.asarray(-jnp.inf, rewards.dtype)
    group_reward = jnp.max(jnp.where(onehot, rewards[..., None, :], neg), axis=-1)  # [..., G]
    group_valid = jnp.arange(g) < num_groups
    group_reward = jnp.where(group_valid, group_reward, 0)
    group_adv = _zscore(group_reward, group_valid)
    adv = jnp.take_along_axis(group_adv, jnp.clip(group, 0, g - 1), axis=-1)
    return V.finish_weights(jnp.where(member, adv, 0), mask, bad, V.k_in_range(k, g))


def bootstrap_passk_advantages(
    rewards: Any, k: Any, key: Array, num_groups: int | None = None, mask: Any = None
) -> Array:
    """Chen et al.'s bootstrap Pass@k advantages (Alg. 2, Eq. 6), any rewards (group reward = max).

    Draws ``num_groups`` groups per prompt, each of k *distinct* valid samples uniformly at random
    (independently across groups); z-scores the group rewards (population std) across the prompt's
    groups; a sample's advantage is the **sum** of the advantages of the groups containing it (0 if in
    none). Its expectation is about ``num_groups * k / n`` times :func:`passk_advantages`.

    Args:
      rewards: ``[..., G]`` rewards.
      k: Python / NumPy int in [1, n], or an integer JAX scalar (may be traced); a traced k
        outside [1, n] gives all-zero advantages.
      key: PRNG key. num_groups: static number of groups per prompt (default n = G).
      mask: optional bool ``[..., G]``.

    Returns:
      ``[..., G]`` advantages.
    """
    V.check_k(k, _static_n(rewards))
    if num_groups is not None and (not V.is_static_k(num_groups) or int(num_groups) < 1):
        raise ValueError(f"`num_groups` must be an integer >= 1, got {num_groups!r}.")
    rewards, mask, bad = V.prepare_rewards(rewards, mask)
    g = rewards.shape[-1]
    m = g if num_groups is None else int(num_groups)
    kk = V.safe_k(k, g)
    shape = rewards.shape[:-1] + (m, g)
    u = jax.random.uniform(key, shape, rewards.dtype)
    if mask is not None:
        u = jnp.where(mask[..., None, :], u, 2)  # invalid samples are never among the k smallest
    # rank of each sample's key within its group draw; members = the k smallest keys (uniform k-subset)
    order = jnp.argsort(u, axis=-1)
    ranks = jnp.argsort(order, axis=-1)
    member = ranks < jnp.asarray(kk, ranks.dtype)
    if mask is not None:
        member = member & mask[..., None, :]
    neg = jnp.asarray(-jnp.inf, rewards.dtype)
    group_reward = jnp.max(jnp.where(member, rewards[..., None, :], neg), axis=-1)  # [..., m]
    n = _valid_count(mask, rewards)
    ok = n >= jnp.asarray(kk, n.dtype)  # [..., 1]
    group_reward = jnp.where(ok, group_reward, 0)
    group_adv = _zscore(group_reward, None)  # [..., m]
    adv = jnp.sum(jnp.where(member, group_adv[..., None], 0), axis=-2)
    return V.finish_weights(jnp.where(ok, adv, 0), mask, bad, V.k_in_range(k, g))


def combination_advantages(rewards: Any, k: Any, mask: Any = None) -> Array:
    """Chen et al.'s Pass@1 / Pass@k combination (Eq. 18), binary rewards.

    ``A = (c/n) A_pass@k + (1 - c/n) A_pass@1``, with ``A_pass@1`` = :func:`grpo_advantages`: hard
    prompts (low pass rate) are driven mostly by Pass@1, easy ones by Pass@k (which tends to 0).
    Zero-sum per group.

    Args:
      rewards: ``[..., G]`` binary rewards.
      k: Python / NumPy int in [1, n], or an integer JAX scalar (may be traced); a traced k
        outside [1, n] gives all-zero advantages. mask: optional bool.

    Returns:
      ``[..., G]`` advantages; 0 for groups with fewer than k valid samples (like every pass@k
      method, although the Pass@1 part alone would be defined there).
    """
    V.check_k(k, _static_n(rewards))
    rewards, mask, bad = V.prepare_rewards(rewards, mask)
    g = rewards.shape[-1]
    a_k = _passk_core(rewards, mask, V.safe_k(k, g), "combination_advantages")
    a_1 = _zscore(rewards, mask)
    n = _valid_count(mask, rewards)
    p = jnp.sum(rewards, axis=-1, keepdims=True) / jnp.maximum(n, 1)
    adv = jnp.where(n >= jnp.asarray(V.safe_k(k, g), n.dtype), p * a_k + (1 - p) * a_1, 0)
    return V.finish_weights(adv, mask, bad, V.k_in_range(k, g))


def exceeding_passk_advantages(rewards: Any, k: Any, mask: Any = None) -> Array:
    """Chen et al.'s "Exceeding Pass@k" advantages (Eq. 17): ``f(c) * A_pass@k``, binary rewards.

    The paper's ``f`` reads, from its text, as ``f(c) = 4 / (10 log(c + 0.5))``; the log's base is not
    recoverable. Read here as the natural log, ``f(c) = 0.4 / ln(c + 0.5)`` (f(1) = 0.99, f(8) = 0.19),
    which moves the peak of the advantage mass eta to c = 1, the stated aim (a log10 reading does too).
    Groups with c = 0 get 0 (the Pass@k advantage is 0 there, and f(0) < 0).

    Args:
      rewards: ``[..., G]`` binary rewards.
      k: Python / NumPy int in [1, n], or an integer JAX scalar (may be traced); a traced k
        outside [1, n] gives all-zero advantages.
      mask: optional bool ``[..., G]``.

    Returns:
      ``[..., G]`` advantages (zero-sum per group).
    """
    V.check_k(k, _static_n(rewards))
    rewards, mask, bad = V.prepare_rewards(rewards, mask)
    g = rewards.shape[-1]
    adv = _passk_core(rewards, mask, V.safe_k(k, g), "exceeding_passk_advantages")
    c = jnp.sum(rewards, axis=-1, keepdims=True)
    f = jnp.where(c >= 1, 0.4 / jnp.log(jnp.maximum(c, 1) + 0.5), 0)
    return V.finish_weights(f * adv, mask, bad, V.k_in_range(k, g))


def noisy_reward_advantages(rewards: Any, key: Array, flip_rate: float, mask: Any = None) -> Array:
    """Chen et al.'s noise-reward baseline: GRPO on rewards whose negatives are flipped at random.

    Each valid reward equal to 0 becomes 1 with probability ``flip_rate`` (independently), then
    :func:`grpo_advantages` applies. Chen et al. flip 10%, 30% and 50% of negative rewards.

    Args:
      rewards: ``[..., G]`` binary rewards. key: PRNG key. flip_rate: probability in [0, 1].
      mask: optional bool ``[..., G]``.

    Returns:
      ``[..., G]`` advantages.
    """
    if not isinstance(flip_rate, (int, float)) or not 0 <= flip_rate <= 1:
        raise ValueError(f"`flip_rate` must be a probability in [0, 1], got {flip_rate!r}.")
    rewards, mask, bad = V.prepare_rewards(rewards, mask)
    _check_binary(rewards, mask, "noisy_reward_advantages")
    flip = jax.random.uniform(key, rewards.shape) < flip_rate
    noisy = jnp.where((rewards == 0) & flip, 1.0, rewards).astype(rewards.dtype)
    return V.finish_weights(_zscore(noisy, mask), mask, bad)


# ----------------------------------------------------------------------------------------------------
# Matched variants: each isolates one difference between PKPO and Chen et al.


def centred_pkpo_advantages(rewards: Any, k: Any, mask: Any = None) -> Array:
    """PKPO ``sloo_minus_one`` minus its mean over the group's valid samples (zero-sum per group).

    Chen et al.'s analytical advantage is this centred transform times a factor that depends on the
    group's count of correct samples (``lambda(c)``, 6.3-42.7 over c at n = 16, k = 4); comparing the
    two separates the weighting from that per-group step size. Any rewards (continuous too).

    Args:
      rewards: ``[..., G]`` rewards. k: as for :func:`passk_jax.estimators.pkpo_rewards`.
      mask: optional bool ``[..., G]``.

    Returns:
      ``[..., G]`` advantages (edge cases as in :mod:`passk_jax.validation`).
    """
    w = E.pkpo_rewards(rewards, k, "sloo_minus_one", mask)
    valid = (
        jnp.ones(w.shape, bool)
        if mask is None
        else jnp.broadcast_to(jnp.asarray(mask, bool), w.shape)
    )
    n = jnp.sum(valid, axis=-1, keepdims=True)
    mean = jnp.sum(jnp.where(valid, w, 0), axis=-1, keepdims=True) / jnp.maximum(n, 1)
    return jnp.where(valid, w - mean, 0)


def unnormalised_passk_advantages(rewards: Any, k: Any, mask: Any = None) -> Array:
    """Chen et al.'s analytical Pass@k advantages without the division by the group std ``sigma``.

    ``A_pos = 1 - R``, ``A_neg = -(c / (n - c)) (1 - R)``: :func:`passk_advantages` times
    ``sigma = sqrt(R (1 - R))``. Binary rewards; zero-sum per group.

    Args:
      rewards: ``[..., G]`` binary rewards.
      k: Python / NumPy int in [1, n], or an integer JAX scalar (may be traced); a traced k
        outside [1, n] gives all-zero advantages.
      mask: optional bool ``[..., G]``.

    Returns:
      ``[..., G]`` advantages; 0 for saturated groups and groups with fewer than k valid samples.
    """
    V.check_k(k, _static_n(rewards))
    rewards, mask, bad = V.prepare_rewards(rewards, mask)
    g = rewards.shape[-1]
    kk = V.safe_k(k, g)
    binary = _check_binary(rewards, mask, "unnormalised_passk_advantages")
    n = _valid_count(mask, rewards)
    c = jnp.sum(rewards, axis=-1, keepdims=True)
    fail = _passk_stats(c, n, kk, g)  # 1 - R
    a_pos = jnp.where((c > 0) & (n - c >= jnp.asarray(kk, n.dtype)), fail, 0)
    adv = jnp.where(rewards == 1, a_pos, -c / jnp.maximum(n - c, 1) * a_pos)
    adv = jnp.where(n >= jnp.asarray(kk, n.dtype), adv, 0)
    adv = _finish(jnp.where(binary, adv, jnp.nan), mask)
    return V.finish_weights(adv, mask, bad, V.k_in_range(k, g))


# ----------------------------------------------------------------------------------------------------
# Registry.


def _pkpo(estimator: str) -> Callable[..., Array]:
    def fn(rewards, *, k, mask=None, key=None):
        del key
        return E.pkpo_rewards(rewards, k, estimator, mask)

    fn.__name__ = f"pkpo_{estimator}"
    fn.__doc__ = f"PKPO ``{estimator}`` transform (see :func:`passk_jax.estimators.pkpo_rewards`)."
    return fn


def _k_free(method: Callable[..., Array]) -> Callable[..., Array]:
    """Registry entry for a method without k, called as ``method(rewards, mask, key)``: a k given
    to it is validated and applied as for every other method."""

    def fn(rewards, *, k=None, mask=None, key=None):
        if k is not None:
            V.check_k(k, V.static_n(rewards))
        out = method(rewards, mask, key)
        k_ok = True if k is None else V.k_in_range(k, out.shape[-1])
        return out if k_ok is True else jnp.where(k_ok, out, 0)

    fn.__name__ = method.__name__
    fn.__doc__ = method.__doc__
    return fn


def _keyless(method: Callable[..., Array]) -> Callable[..., Array]:
    fn = lambda rewards, mask, key: method(rewards, mask)
    fn.__name__, fn.__doc__ = method.__name__, method.__doc__
    return fn


def _noisy(rate: float) -> Callable[..., Array]:
    fn = lambda rewards, mask, key: noisy_reward_advantages(rewards, key, rate, mask)
    fn.__name__ = f"grpo_noise{round(rate * 100)}"
    fn.__doc__ = (
        f"GRPO after flipping {rate:.0%} of negative rewards (:func:`noisy_reward_advantages`)."
    )
    return fn


ADVANTAGES: dict[str, Callable[..., Array]] = {
    "grpo": _k_free(_keyless(grpo_advantages)),
    "rloo": _k_free(_keyless(rloo_advantages)),
    "tang": _k_free(_keyless(tang_advantages)),
    "passk": lambda rewards, *, k, mask=None, key=None: passk_advantages(rewards, k, mask),
    "passk_bootstrap": lambda rewards, *, k, mask=None, key: bootstrap_passk_advantages(
        rewards, k, key, mask=mask
    ),
    "passk_full": lambda rewards, *, k, mask=None, key=None: full_sampling_passk_advantages(
        rewards, k, mask
    ),
    "passk_combination": lambda rewards, *, k, mask=None, key=None: combination_advantages(
        rewards, k, mask
    ),
    "pkpo_s": _pkpo("s"),
    "pkpo_sloo": _pkpo("sloo"),
    "pkpo_sloo_minus_one": _pkpo("sloo_minus_one"),
    "passk_exceeding": lambda rewards, *, k, mask=None, key=None: exceeding_passk_advantages(
        rewards, k, mask
    ),
    **{fn.__name__: _k_free(fn) for fn in map(_noisy, (0.1, 0.3, 0.5))},
    "pkpo_centred": lambda rewards, *, k, mask=None, key=None: centred_pkpo_advantages(
        rewards, k, mask
    ),
    "passk_unnormalised": lambda rewards, *, k, mask=None, key=None: unnormalised_passk_advantages(
        rewards, k, mask
    ),
}
_NOISE = tuple(name for name in ADVANTAGES if name.startswith("grpo_noise"))
K_FREE = frozenset({"grpo", "rloo", "tang", *_NOISE})
NEEDS_KEY = frozenset({"passk_bootstrap", *_NOISE})
BINARY_ONLY = frozenset(
    {"passk", "passk_combination", "passk_unnormalised", "passk_exceeding", *_NOISE}
)


def compute_advantages(
    name: str, rewards: Any, k: Any = None, mask: Any = None, key: Array | None = None
) -> Array:
    """Per-sample advantages by registry name (``ADVANTAGES``); the config stores ``name``.

    Args:
      name: a key of ``ADVANTAGES``. rewards: ``[..., G]``. k: needed by every pass@k method.
      mask: optional bool ``[..., G]``. key: PRNG key, needed by ``passk_bootstrap``.

    Returns:
      ``[..., G]`` advantages.
    """
    if name not in ADVANTAGES:
        raise ValueError(f"unknown advantage `name` {name!r}; choose one of {sorted(ADVANTAGES)}.")
    if name in NEEDS_KEY and key is None:
        raise ValueError(f"advantage {name!r} samples groups at random and needs a PRNG `key`.")
    if k is None and name not in K_FREE:
        raise ValueError(f"advantage {name!r} needs `k`.")
    return ADVANTAGES[name](rewards, k=k, mask=mask, key=key)


# ----------------------------------------------------------------------------------------------------
# The weighting atlas: what each method's expected gradient is, on binary rewards.
#
# With n i.i.d. samples of success probability p and any weighting w(x) of the group x in {0,1}^n,
# E[sum_i w_i grad log pi(x_i)] = m(p) grad p, because grad log pi(x_i) = (x_i - p) / (p (1 - p)) grad p
# for the success event. Grouping by the count c of correct samples, with W+(c) (W-(c)) the expected
# total weight on the correct (wrong) samples of a group with c correct ones:
#     m(p) = sum_{c>=1} C(n,c) p^(c-1) (1-p)^(n-c) W+(c) - sum_{c<=n-1} C(n,c) p^c (1-p)^(n-c-1) W-(c),
# exact at p = 0 and 1. The implied surrogate objective F (F' = m, F(0) = 0) integrates term by term:
#     F(p) = sum_{c>=1} W+(c)/c I_p(c, n-c+1) - sum_{c<=n-1} W-(c)/(n-c) I_p(c+1, n-c),
# with I the regularised incomplete beta function. For PKPO's unbiased transforms F is pass@k itself.

ORDER_DEPENDENT = frozenset({"passk_full"})  # disjoint groups taken in sample order


def _count_weights(
    name: str, n: int, k: int, num_draws: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``W+(c)``, ``W-(c)`` and ``E[sum_i |w_i|]`` for c = 0..n (float64 arrays of length n + 1).

    Permutation-equivariant deterministic methods: one group per count, exact. ``passk_full``
    (order-dependent): every arrangement of the c correct samples, exact, for n <= 16; ``num_draws``
    random arrangements per count above that. ``passk_bootstrap``: the average over ``num_draws``
    independent draws of its random subsets per count (a Monte-Carlo estimate).
    """
    counts = np.arange(n + 1)
    if name in ORDER_DEPENDENT:
        if n <= 16:
            bits = (np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1
        else:
            rng = np.random.default_rng(seed)
            rows = []
            for c in counts:
                base = (np.arange(n) < c).astype(np.int64)
                rows.append(np.stack([rng.permutation(base) for _ in range(num_draws)]))
            bits = np.concatenate(rows)
        x = bits.astype(np.float32)
    elif name in NEEDS_KEY:
        x = np.repeat((np.arange(n)[None, :] < counts[:, None]).astype(np.float32), num_draws, 0)
    else:
        x = (np.arange(n)[None, :] < counts[:, None]).astype(np.float32)
    key = jax.random.key(seed)
    w = np.asarray(compute_advantages(name, x, k=k, key=key), np.float64)
    c_of = x.sum(-1).astype(np.int64)
    pos = np.bincount(c_of, (w * x).sum(-1), n + 1)
    neg = np.bincount(c_of, (w * (1 - x)).sum(-1), n + 1)
    mass = np.bincount(c_of, np.abs(w).sum(-1), n + 1)
    rows = np.maximum(np.bincount(c_of, minlength=n + 1), 1)
    return pos / rows, neg / rows, mass / rows


def _binom_coef(n: int) -> np.ndarray:
    return np.array([math.comb(n, c) for c in range(n + 1)], np.float64)


def expected_weight(
    name: str, p: Any, n: int, k: int | None = None, *, num_draws: int = 4096, seed: int = 0
) -> np.ndarray:
    """The expected per-prompt weight ``m(p)`` of a method's binary-reward policy gradient.

    ``E[sum_i w_i grad log pi(x_i)] = m(p) grad p`` for a prompt solved with probability p, n samples
    and the method's per-sample weights ``w`` (``ADVANTAGES[name]``); computed by summing over the
    binomial count of correct samples (see the comment above). For PKPO's unbiased transforms
    ``m(p) = k (1 - p)^(k - 1)``, the derivative of pass@k. Exact for every deterministic method
    (``passk_full`` by enumerating arrangements up to n = 16); ``passk_bootstrap`` averages
    ``num_draws`` draws of its random subsets per count (Monte Carlo).

    Args:
      name: a key of ``ADVANTAGES``. p: success probabilities in [0, 1], any shape.
      n: samples per group. k: the method's k (ignored by k-free methods).
      num_draws: random draws per count where the method is random (or order-dependent, n > 16).
      seed: seed for those draws.

    Returns:
      float64 array of p's shape.
    """
    p = np.asarray(p, np.float64)
    if np.any((p < 0) | (p > 1)) or not np.all(np.isfinite(p)):
        raise ValueError("`p` must hold probabilities in [0, 1].")
    pos, neg, _ = _count_weights(name, n, k, num_draws, seed)
    coef = _binom_coef(n)
    out = np.zeros_like(p)
    for c in range(n + 1):
        if c >= 1:
            out += coef[c] * np.power(p, c - 1) * np.power(1 - p, n - c) * pos[c]
        if c <= n - 1:
            out -= coef[c] * np.power(p, c) * np.power(1 - p, n - c - 1) * neg[c]
    return out


def surrogate_objective(
    name: str, p: Any, n: int, k: int | None = None, *, num_draws: int = 4096, seed: int = 0
) -> np.ndarray:
    """The objective ``F(p)`` a method ascends on one prompt: ``F' = m`` (:func:`expected_weight`), F(0) = 0.

    Exact (a finite sum of incomplete beta functions). For PKPO's unbiased transforms it is pass@k,
    ``1 - (1 - p)^k``; GRPO's and Chen et al.'s normalised advantages ascend other functions of p.

    Returns:
      float64 array of p's shape.
    """
    from scipy.special import betainc  # scipy: only this analysis helper needs it

    p = np.asarray(p, np.float64)
    pos, neg, _ = _count_weights(name, n, k, num_draws, seed)
    out = np.zeros_like(p)
    for c in range(n + 1):
        if c >= 1:
            out += pos[c] / c * betainc(c, n - c + 1, p)
        if c <= n - 1:
            out -= neg[c] / (n - c) * betainc(c + 1, n - c, p)
    return out


def advantage_mass(
    name: str, n: int, k: int | None = None, *, num_draws: int = 4096, seed: int = 0
) -> np.ndarray:
    """Chen et al.'s ``eta``: the expected sum of absolute advantages of a group, per count c = 0..n.

    Returns:
      float64 array ``[n + 1]``.
    """
    return _count_weights(name, n, k, num_draws, seed)[2]
