"""The input contract shared by every estimator and advantage: one validation path, applied alike.

Every public function of :mod:`passk_jax.estimators` and :mod:`passk_jax.advantages` goes through
these helpers, so every registered method follows the same rules (``n`` = length of the last axis):

=============================================  ======================  ==============================
input                                          estimates               per-sample weights
                                               (``pass_at_k``,         (``pkpo_rewards``, every
                                               ``maxg_at_k``)          ``ADVANTAGES`` entry)
=============================================  ======================  ==============================
static ``k`` (Python / NumPy integer) outside  ``ValueError``          ``ValueError``
[1, n]
``k`` that is a bool, float, str, or any       ``ValueError``          ``ValueError``
other non-integer; a JAX array ``k`` of
non-integer dtype or non-scalar shape
JAX-array ``k`` (traced or concrete) outside   NaN in every group      0 everywhere
[1, n]
NaN, +inf or -inf reward at a valid position   NaN for that group      NaN at that group's valid
                                                                       positions (0 at masked ones)
any value at a masked (invalid) position       ignored                 ignored; the weight there is 0
group with fewer valid samples than k (or      NaN                     0 for the whole group
than 2 where a leave-one-out baseline is
needed)
integer reward not exactly representable in    ``ValueError`` (host    ``ValueError`` (host or
the output float (beyond +-2**24 for float32,  or concrete input);     concrete input); NaN group
+-2**53 for float64)                           NaN group (traced)      (traced)
=============================================  ======================  ==============================

Precedence, when several rules apply: an out-of-range traced ``k`` first (it concerns every group),
then a non-finite or non-representable reward (that group is NaN), then too few valid samples.
No value of one group ever reaches another group's outputs.

Output dtype: float64 when the rewards are float64, or int64 / uint64 with ``jax_enable_x64`` on;
float32 otherwise. Without ``jax_enable_x64`` JAX itself stores float64 input as float32 (values
beyond float32's range become inf, and so make their group NaN), so "float64 in, float64 out" needs
``jax.config.update("jax_enable_x64", True)``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

__all__ = [
    "check_k",
    "finish_estimates",
    "finish_weights",
    "is_static_k",
    "k_in_range",
    "output_dtype",
    "prepare_rewards",
    "safe_k",
    "static_n",
]

# Largest integer magnitude below which every integer is exactly representable.
_EXACT_INT = {np.dtype(np.float32): 2**24, np.dtype(np.float64): 2**53}


def static_n(rewards: Any) -> int | None:
    """Length of the samples (last) axis, or None for a 0-d input."""
    return jnp.shape(rewards)[-1] if jnp.ndim(rewards) else None


def is_static_k(k: Any) -> bool:
    """True for a Python / NumPy integer ``k`` (checked eagerly); bools are not integers here."""
    if isinstance(k, (bool, np.bool_)):
        return False
    if isinstance(k, (int, np.integer)):
        return True
    return isinstance(k, np.ndarray) and k.ndim == 0 and np.issubdtype(k.dtype, np.integer)


def check_k(k: Any, n: int | None, *, name: str = "k") -> None:
    """Validates ``k`` as far as it can be checked without its value being known.

    * A Python / NumPy integer must lie in ``[1, n]`` (``n`` None skips the upper bound).
    * A JAX array (traced or not) must be an integer scalar; its value is checked on device, by
      :func:`k_in_range`, and an out-of-range value gives NaN estimates and zero weights.
    * Anything else (bool, float, str, None, lists, NumPy arrays of other dtypes) is refused.

    Raises:
      ValueError: naming ``name``, with the value or type that was refused.
    """
    if is_static_k(k):
        k = int(k)
        if k < 1:
            raise ValueError(f"`{name}` must be >= 1, got {k}.")
        if n is not None and k > n:
            raise ValueError(
                f"`{name}` = {k} exceeds the number of samples per group n = {n} (last axis); "
                "an unbiased estimate needs n >= k."
            )
        return
    if isinstance(k, jax.Array):  # tracers included
        if k.ndim != 0:
            raise ValueError(f"`{name}` must be a scalar, got an array of shape {k.shape}.")
        if not jnp.issubdtype(k.dtype, jnp.integer):
            raise ValueError(f"`{name}` must have an integer dtype, got {k.dtype}.")
        return
    raise ValueError(
        f"`{name}` must be an integer (Python int, NumPy integer or integer JAX scalar), got "
        f"{type(k).__name__} {k!r}."
    )


def k_in_range(k: Any, n: Any) -> Array | bool:
    """``1 <= k <= n``: a Python bool for a static ``k`` (already checked), else a bool array.

    Args:
      k: a ``k`` accepted by :func:`check_k`.
      n: the static number of samples per group (or an array of counts, broadcasting with ``k``).
    """
    if is_static_k(k):
        return True
    return (k >= 1) & (k <= n)


def safe_k(k: Any, n: int) -> Any:
    """``k`` itself when static, else ``k`` clipped into ``[1, n]`` for computing (the result is
    then discarded through ``k_ok``), so an out-of-range traced k never divides by zero."""
    if is_static_k(k):
        return int(k)
    return jnp.clip(k, 1, max(int(n), 1))


def output_dtype(dtype: Any) -> np.dtype:
    """The float dtype the estimators compute and return in for inputs of ``dtype``."""
    dtype = np.dtype(dtype)
    x64 = bool(jax.config.jax_enable_x64)
    if dtype == np.float64 or (x64 and dtype in (np.dtype(np.int64), np.dtype(np.uint64))):
        return np.dtype(np.float64) if x64 else np.dtype(np.float32)
    return np.dtype(np.float32)


def _is_tracer(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)


def _host_integers(x: np.ndarray, what: str) -> np.ndarray:
    """Converts a host integer array to the output float dtype, refusing inexact values."""
    target = output_dtype(x.dtype)
    limit = _EXACT_INT[target]
    if x.size and (int(x.max()) > limit or int(x.min()) < -limit):
        bad = x[(x > limit) | (x < -limit)]
        raise ValueError(
            f"`{what}` holds integers such as {bad.ravel()[:3].tolist()} beyond +-2**"
            f"{int(np.log2(limit))}, which {target} cannot represent exactly; pass floats"
            + ("" if target == np.float64 else ", or int64 / float64 with jax_enable_x64 on")
            + "."
        )
    return x.astype(target)


def _as_float_array(x: Any, what: str) -> tuple[Array, Array | None]:
    """``x`` as a float JAX array, plus a per-element "not exactly representable" flag (or None).

    Host input (NumPy, Python scalars and lists) is converted on the host, so no integer wraps
    around on its way to the device; integer JAX arrays are checked on device (and eagerly when
    concrete).
    """
    if not isinstance(x, jax.Array):
        host = np.asarray(x)
        if host.dtype == object:
            raise ValueError(
                f"`{what}` could not be read as a numeric array (dtype object); integers beyond "
                "int64 or mixed types are not accepted."
            )
        if np.issubdtype(host.dtype, np.integer):
            host = _host_integers(host, what)
        elif not (np.issubdtype(host.dtype, np.floating) or host.dtype == np.bool_):
            raise ValueError(f"`{what}` must be numeric or bool, got dtype {host.dtype}.")
        x = jnp.asarray(host)
    if not (jnp.issubdtype(x.dtype, jnp.number) or x.dtype == jnp.bool_):
        raise ValueError(f"`{what}` must be numeric or bool, got dtype {x.dtype}.")
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        raise ValueError(f"`{what}` must be real, got dtype {x.dtype}.")
    target = output_dtype(x.dtype)
    inexact = None
    if jnp.issubdtype(x.dtype, jnp.integer) and jnp.iinfo(x.dtype).max > _EXACT_INT[target]:
        limit = _EXACT_INT[target]
        inexact = x > limit
        if jnp.issubdtype(x.dtype, jnp.signedinteger):
            inexact = inexact | (x < -limit)
        if not _is_tracer(x):
            _host_integers(np.asarray(x), what)  # raises with the offending values
    return x.astype(target), inexact


def prepare_rewards(rewards: Any, mask: Any = None) -> tuple[Array, Array | None, Array]:
    """Rewards as floats with every value that must not enter a computation replaced by 0.

    Args:
      rewards: ``[..., G]`` int, bool or float rewards (host or JAX).
      mask: optional ``[..., G]`` (or broadcastable) validity mask, cast to bool.

    Returns:
      ``(values, mask, bad)``: ``values`` ``[..., G]`` float with masked positions and non-finite or
      non-representable valid rewards set to 0; ``mask`` bool ``[..., G]`` or None; ``bad``
      ``[..., 1]`` bool, True for groups holding such a valid reward (their outputs become NaN
      through :func:`finish_weights` / :func:`finish_estimates`).

    Raises:
      ValueError: for a 0-d input, a mask that does not broadcast, non-numeric rewards, or host /
        concrete integer rewards beyond exact float range.
    """
    if jnp.ndim(rewards) < 1:
        raise ValueError(
            f"`rewards` must have a samples axis (shape [..., n]); got shape {jnp.shape(rewards)}."
        )
    values, inexact = _as_float_array(rewards, "rewards")
    if mask is not None:
        mask = jnp.asarray(mask)
        try:
            mask = jnp.broadcast_to(mask, values.shape)
        except ValueError:
            raise ValueError(
                f"`mask` shape {mask.shape} does not match (or broadcast to) `rewards` shape "
                f"{values.shape}."
            ) from None
        mask = mask.astype(bool)
    broken = ~jnp.isfinite(values)
    if inexact is not None:
        broken = broken | inexact
    if mask is not None:
        broken = broken & mask
    bad = jnp.any(broken, axis=-1, keepdims=True)
    keep = ~broken if mask is None else (mask & ~broken)
    return jnp.where(keep, values, 0), mask, bad


def finish_weights(out: Array, mask: Array | None, bad: Array, k_ok: Array | bool = True) -> Array:
    """Applies the table's rules to per-sample weights ``[..., G]``: k range, NaN groups, masks."""
    out = jnp.where(bad, jnp.nan, out)
    if k_ok is not True:
        out = jnp.where(k_ok, out, 0)
    if mask is not None:
        out = jnp.where(mask, out, 0)
    return out


def finish_estimates(est: Array, bad: Array, k_ok: Array | bool = True) -> Array:
    """Applies the table's rules to per-group estimates ``[...]`` (``bad`` is ``[..., 1]``)."""
    est = jnp.where(bad[..., 0], jnp.nan, est)
    if k_ok is not True:
        est = jnp.where(k_ok, est, jnp.nan)
    return est
