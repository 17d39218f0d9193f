"""NumPy adapter: the estimators and advantages for trainers that are not written in JAX.

Every function has the name and arguments of its counterpart in :mod:`passk_jax.estimators` or
:mod:`passk_jax.advantages`, takes NumPy arrays (or anything ``np.asarray`` accepts) and returns a fresh,
writable NumPy array::

    import numpy as np
    from passk_jax import numpy_api as P

    rewards = np.array([[1, 0, 0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 1]], np.float32)
    w = P.pkpo_rewards(rewards, k=4)               # [2, 8] float32, writable
    a = P.compute_advantages("passk", rewards, k=4)
    p = P.maxg_at_k(rewards, k=4)                  # [2] unbiased pass@4 per prompt

Behaviour (each point is tested in ``tests/test_numpy_api.py``):

* **Jitted and cached.** Each function is compiled once per (function, static arguments such as
  ``estimator`` / ``name`` / ``num_groups``, input shapes and dtypes) and reused; ``k`` is a *traced*
  argument, so annealing k never recompiles.
* **Dtypes.** Floating inputs come back in their own dtype (float16 / bfloat16 are computed in float32
  and cast back; float64 is computed in float64 even when ``jax_enable_x64`` is off). Integer and bool
  rewards give float32.
* **k.** ``k`` must be an integer (a Python / NumPy int or a 0-d integer array; bool and float are
  ``ValueError``). Because k is traced, a k outside ``[1, n]`` (n = size of the samples axis) is not
  refused: estimates (``maxg_at_k``, ``pass_at_k``) come back NaN and weights all 0, and the call is
  *recorded*: an :class:`InvalidKWarning` is issued (turn it into an error with
  ``warnings.simplefilter("error", InvalidKWarning)``) and :func:`k_flags` counts it. Groups that merely
  have fewer *valid* samples than k under a ``mask`` follow the estimators' contract (NaN estimate, 0
  weights) and are not flagged: ragged groups are legitimate.
* **Binary-only methods** (``passk``, ``passk_combination``) check their input on the host and raise
  ``ValueError`` on non-0/1 rewards, as the eager JAX functions do.
* ``key`` (``passk_bootstrap``) may be an int seed or a JAX PRNG key.

The functions run on JAX's default device; inputs and outputs live on the host.
"""

from __future__ import annotations

import functools
import threading
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from passk_jax import advantages as A
from passk_jax import estimators as E

__all__ = [
    "ADVANTAGES",
    "ESTIMATORS",
    "InvalidKWarning",
    "bootstrap_passk_advantages",
    "combination_advantages",
    "compute_advantages",
    "full_sampling_passk_advantages",
    "grpo_advantages",
    "k_flags",
    "maxg_at_k",
    "pass_at_k",
    "passk_advantages",
    "pkpo_rewards",
    "reset_k_flags",
    "rloo_advantages",
    "tang_advantages",
]

ESTIMATORS = E.ESTIMATORS
ADVANTAGES: tuple[str, ...] = tuple(sorted(A.ADVANTAGES))


class InvalidKWarning(RuntimeWarning):
    """A call received a k outside [1, n]: its estimates are NaN and its weights 0."""


# ----------------------------------------------------------------------------------------------------
# Invalid-k record.

_LOCK = threading.Lock()
_FLAGS: dict[str, Any] = {"invalid_k_calls": 0, "last": None}
# Number of times a kernel was traced (compiled); tests use it to show the cache works.
_TRACES = {"count": 0}


def k_flags() -> dict[str, Any]:
    """The invalid-k record: ``{"invalid_k_calls": int, "last": {"function", "k", "n"} or None}``."""
    with _LOCK:
        return {"invalid_k_calls": _FLAGS["invalid_k_calls"], "last": _FLAGS["last"]}


def reset_k_flags() -> None:
    """Clears the invalid-k record."""
    with _LOCK:
        _FLAGS["invalid_k_calls"] = 0
        _FLAGS["last"] = None


def _record_invalid_k(function: str, k: Any, n: Any) -> None:
    k_list = np.asarray(k).tolist()
    n_list = np.asarray(n).tolist()
    with _LOCK:
        _FLAGS["invalid_k_calls"] += 1
        _FLAGS["last"] = {"function": function, "k": k_list, "n": n_list}
    warnings.warn(
        f"{function}: k = {k_list} is outside [1, n] (n = {n_list}); estimates are NaN and weights "
        "are 0 for this call.",
        InvalidKWarning,
        stacklevel=4,
    )


# ----------------------------------------------------------------------------------------------------
# Conversions.


def _is_floating(dtype: np.dtype) -> bool:
    return np.issubdtype(dtype, np.floating) or dtype == jnp.bfloat16


def _out_dtype(x: np.ndarray) -> np.dtype:
    return x.dtype if _is_floating(x.dtype) else np.dtype(np.float32)


def _as_k(k: Any, name: str = "k") -> np.ndarray:
    """Validates the type of k (an integer, possibly an integer array) and returns it as int32."""
    if isinstance(k, (bool, np.bool_)):
        raise ValueError(f"`{name}` must be an integer, got bool {k}.")
    if isinstance(k, float):
        raise ValueError(f"`{name}` must be an integer, got float {k}.")
    arr = np.asarray(k)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"`{name}` must be an integer, got {arr.dtype} {arr.tolist()}.")
    return arr.astype(np.int32)


def _as_rewards(rewards: Any) -> np.ndarray:
    x = np.asarray(rewards)
    if x.dtype == object:
        raise ValueError("`rewards` must be a numeric array.")
    return x


def _as_mask(mask: Any) -> np.ndarray | None:
    return None if mask is None else np.asarray(mask).astype(bool)


def _as_key(key: Any) -> jax.Array | None:
    if key is None:
        return None
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return jax.random.key(int(key))
    return key


def _x64(enabled: bool):
    ctx = getattr(jax, "enable_x64", None)
    if ctx is None:  # older / newer jax spellings
        from jax.experimental import enable_x64 as ctx  # type: ignore[no-redef]
    return ctx(enabled) if enabled else _nullcontext()


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _check_binary_host(name: str, rewards: np.ndarray, mask: np.ndarray | None) -> None:
    vals = rewards if mask is None else rewards[np.broadcast_to(mask, rewards.shape)]
    vals = vals.astype(np.float64)
    bad = vals[(vals != 0) & (vals != 1)]
    if bad.size:
        raise ValueError(
            f"`rewards` passed to {name} must be binary (exactly 0 or 1); found non-binary values such "
            f"as {bad[:5].tolist()}. Use a PKPO transform (pkpo_rewards) for continuous rewards."
        )


# ----------------------------------------------------------------------------------------------------
# Compiled kernels, one per (kind, static arguments); jax.jit then caches per shape and dtype.


def _kernel(kind: str, static: dict[str, Any]) -> Callable[..., jax.Array]:
    if kind == "maxg_at_k":
        return lambda r, m, k, key: E.maxg_at_k(r, k, m)
    if kind == "pkpo_rewards":
        return lambda r, m, k, key: E.pkpo_rewards(r, k, static["estimator"], m)
    if kind == "bootstrap":
        return lambda r, m, k, key: A.bootstrap_passk_advantages(
            r, k, key, num_groups=static["num_groups"], mask=m
        )
    if kind == "advantage":
        name = static["name"]
        return lambda r, m, k, key: A.compute_advantages(name, r, k=k, mask=m, key=key)
    raise KeyError(kind)


@functools.cache
def _compiled(kind: str, static_items: tuple[tuple[str, Any], ...], estimate: bool):
    fn = _kernel(kind, dict(static_items))

    def run(rewards, mask, k, key):
        _TRACES["count"] += 1
        out = fn(rewards, mask, k, key)
        if k is None:
            return out, None
        ok = (k >= 1) & (k <= rewards.shape[-1])
        fill = jnp.nan if estimate else 0
        return jnp.where(ok, out, jnp.asarray(fill, out.dtype)), ok

    return jax.jit(run)


def _call(
    function: str,
    kind: str,
    rewards: Any,
    *,
    k: Any = None,
    mask: Any = None,
    key: Any = None,
    estimate: bool = False,
    **static: Any,
) -> np.ndarray:
    x = _as_rewards(rewards)
    m = _as_mask(mask)
    kk = None if k is None else _as_k(k)
    if kk is not None and kk.ndim:
        raise ValueError(f"`k` must be a scalar for {function}, got shape {kk.shape}.")
    out_dtype = _out_dtype(x)
    wide = x.dtype == np.float64
    if x.dtype == jnp.bfloat16 or x.dtype == np.float16:
        x = x.astype(np.float32)
    fn = _compiled(kind, tuple(sorted(static.items())), estimate)
    with _x64(wide):
        out, ok = fn(x, m, kk, _as_key(key))
        out = np.array(out)
    if ok is not None and not bool(ok):
        _record_invalid_k(function, kk, x.shape[-1] if x.ndim else None)
    return out.astype(out_dtype, copy=False)


# ----------------------------------------------------------------------------------------------------
# Public functions (same names and arguments as passk_jax.estimators / passk_jax.advantages).


@functools.cache
def _compiled_pass_at_k():
    def run(c, n, k):
        _TRACES["count"] += 1
        out = E.pass_at_k(c, n, k)
        ok = jnp.all((k >= 1) & (k <= n))
        return out, ok

    return jax.jit(run)


def pass_at_k(num_correct: Any, num_samples: Any, k: Any) -> np.ndarray:
    """Unbiased pass@k ``1 - C(n-c, k) / C(n, k)`` (see :func:`passk_jax.estimators.pass_at_k`).

    Args:
      num_correct: integer array c (broadcasts). num_samples: integer array n. k: integer (array).

    Returns:
      Float32 array of the broadcast shape (float64 if ``num_correct`` or ``num_samples`` is float64);
      NaN where k is outside [1, n] (recorded, see the module docstring).
    """
    kk = _as_k(k)
    c = np.asarray(num_correct)
    n = np.asarray(num_samples)
    wide = np.float64 in (c.dtype, n.dtype)
    with _x64(wide):
        out, ok = _compiled_pass_at_k()(c, n, kk)
        out = np.array(out)
    if not bool(ok):
        _record_invalid_k("pass_at_k", kk, n)
    return out.astype(np.float64 if wide else np.float32, copy=False)


def maxg_at_k(rewards: Any, k: Any, mask: Any = None) -> np.ndarray:
    """Unbiased maxg@k per group, ``[..., G] -> [...]`` (see :func:`passk_jax.estimators.maxg_at_k`).

    NaN for groups with fewer than k valid samples, and for every group when k is outside [1, G]
    (recorded).
    """
    return _call("maxg_at_k", "maxg_at_k", rewards, k=k, mask=mask, estimate=True)


def pkpo_rewards(
    rewards: Any, k: Any, estimator: str = "sloo_minus_one", mask: Any = None
) -> np.ndarray:
    """PKPO effective rewards ``[..., G]`` (see :func:`passk_jax.estimators.pkpo_rewards`).

    All 0 when k is outside [1, G] (recorded).
    """
    return _call("pkpo_rewards", "pkpo_rewards", rewards, k=k, mask=mask, estimator=estimator)


def passk_advantages(rewards: Any, k: Any, mask: Any = None) -> np.ndarray:
    """Chen et al.'s analytical Pass@k advantages, binary rewards (see
    :func:`passk_jax.advantages.passk_advantages`)."""
    return compute_advantages("passk", rewards, k=k, mask=mask)


def combination_advantages(rewards: Any, k: Any, mask: Any = None) -> np.ndarray:
    """Chen et al.'s Pass@1 / Pass@k combination, binary rewards (see
    :func:`passk_jax.advantages.combination_advantages`)."""
    return compute_advantages("passk_combination", rewards, k=k, mask=mask)


def full_sampling_passk_advantages(rewards: Any, k: Any, mask: Any = None) -> np.ndarray:
    """Chen et al.'s full-sampling Pass@k advantages (see
    :func:`passk_jax.advantages.full_sampling_passk_advantages`)."""
    return compute_advantages("passk_full", rewards, k=k, mask=mask)


def bootstrap_passk_advantages(
    rewards: Any, k: Any, key: Any, num_groups: int | None = None, mask: Any = None
) -> np.ndarray:
    """Chen et al.'s bootstrap Pass@k advantages (see
    :func:`passk_jax.advantages.bootstrap_passk_advantages`); ``key`` may be an int seed."""
    if key is None:
        raise ValueError("bootstrap_passk_advantages samples groups at random and needs a `key`.")
    ng = None if num_groups is None else int(num_groups)
    return _call(
        "bootstrap_passk_advantages", "bootstrap", rewards, k=k, mask=mask, key=key, num_groups=ng
    )


def grpo_advantages(rewards: Any, mask: Any = None) -> np.ndarray:
    """GRPO advantages, population std (see :func:`passk_jax.advantages.grpo_advantages`)."""
    return compute_advantages("grpo", rewards, mask=mask)


def rloo_advantages(rewards: Any, mask: Any = None) -> np.ndarray:
    """RLOO advantages (see :func:`passk_jax.advantages.rloo_advantages`)."""
    return compute_advantages("rloo", rewards, mask=mask)


def tang_advantages(rewards: Any, mask: Any = None) -> np.ndarray:
    """Tang et al.'s k = n advantages (see :func:`passk_jax.advantages.tang_advantages`)."""
    return compute_advantages("tang", rewards, mask=mask)


def compute_advantages(
    name: str, rewards: Any, k: Any = None, mask: Any = None, key: Any = None
) -> np.ndarray:
    """Per-sample weights by registry name (see :func:`passk_jax.advantages.compute_advantages`).

    Args:
      name: one of ``ADVANTAGES``. rewards: ``[..., G]``. k: integer, needed by every pass@k method.
      mask: optional bool ``[..., G]``. key: int seed or JAX key, needed by the random
        methods (``advantages.NEEDS_KEY``: ``passk_bootstrap``, the noise-reward baselines).

    Returns:
      ``[..., G]`` weights, writable, in the rewards' floating dtype (float32 for int / bool rewards).
    """
    if name not in A.ADVANTAGES:
        raise ValueError(
            f"unknown advantage `name` {name!r}; choose one of {sorted(A.ADVANTAGES)}."
        )
    if name in A.NEEDS_KEY and key is None:
        raise ValueError(f"advantage {name!r} samples groups at random and needs a `key`.")
    if k is None and name not in A.K_FREE:
        raise ValueError(f"advantage {name!r} needs `k`.")
    if name in A.K_FREE:
        k = None  # these ignore k: no validity flag either
    if name in A.BINARY_ONLY:
        _check_binary_host(name, _as_rewards(rewards), _as_mask(mask))
    return _call(name, "advantage", rewards, k=k, mask=mask, key=key, name=name)
