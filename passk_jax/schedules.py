"""k schedules, advantage phases and Chen et al.'s entropy-adaptive rule.

A k schedule is a pure function ``step -> k`` (int32 scalar; ``step`` may be traced), so annealing k
inside a jitted loop never recompiles. Built from a plain dict / ConfigDict by :func:`make_k_schedule`:

* ``{"kind": "constant", "k": 4}``
* ``{"kind": "step", "k_start": 8, "k_end": 1, "at": 1500}``: PKPO's anneal (k = 8 until step 1500).
* ``{"kind": "linear", "k_start": 8, "k_end": 1, "steps": 1000}``: linear interpolation, rounded.

Advantage phases (Chen et al.'s Pass@1 -> Pass@k -> Pass@1 "transfer" schedule) are a list of
``(until_step, advantage_name, k)``; :func:`phase_index` picks the phase of a (traced) step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from passk_jax import advantages as A

Array = jax.Array

__all__ = [
    "adaptive_advantages",
    "constant",
    "linear",
    "make_k_schedule",
    "phase_index",
    "step_anneal",
]


def constant(k: int) -> Callable[[Any], Array]:
    """``k`` at every step."""
    _check(k)
    return lambda step: jnp.asarray(k, jnp.int32)


def step_anneal(k_start: int, k_end: int, at: int) -> Callable[[Any], Array]:
    """``k_start`` before step ``at``, ``k_end`` from step ``at`` on (PKPO Fig. 3: 8 -> 1 at 1500)."""
    _check(k_start)
    _check(k_end)
    return lambda step: jnp.where(jnp.asarray(step) < at, k_start, k_end).astype(jnp.int32)


def linear(k_start: int, k_end: int, steps: int) -> Callable[[Any], Array]:
    """Linear from ``k_start`` at step 0 to ``k_end`` at ``steps`` (rounded; constant afterwards)."""
    _check(k_start)
    _check(k_end)
    if steps < 1:
        raise ValueError(f"`steps` must be >= 1, got {steps}.")

    def fn(step):
        frac = jnp.clip(jnp.asarray(step, jnp.float32) / steps, 0.0, 1.0)
        return jnp.round(k_start + frac * (k_end - k_start)).astype(jnp.int32)

    return fn


def _check(k: Any) -> None:
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k in a schedule must be an int >= 1, got {k!r}.")


def make_k_schedule(spec: Mapping[str, Any]) -> Callable[[Any], Array]:
    """Builds a k schedule from ``{"kind": ..., ...}`` (see the module docstring)."""
    kind = spec.get("kind", "constant")
    if kind == "constant":
        return constant(int(spec["k"]))
    if kind == "step":
        return step_anneal(int(spec["k_start"]), int(spec["k_end"]), int(spec["at"]))
    if kind == "linear":
        return linear(int(spec["k_start"]), int(spec["k_end"]), int(spec["steps"]))
    raise ValueError(f"unknown k schedule kind {kind!r}; use 'constant', 'step' or 'linear'.")


def phase_index(phases: Sequence[tuple[int, str, int]], step: Any) -> Array:
    """Index of the phase holding ``step``: the first with ``step < until_step`` (else the last)."""
    ends = jnp.asarray([p[0] for p in phases], jnp.int32)
    idx = jnp.sum(jnp.asarray(step, jnp.int32) >= ends)
    return jnp.minimum(idx, len(phases) - 1)


def adaptive_advantages(
    rewards: Any, k: Any, entropy_P: Any, mask: Any = None, fraction: float = 0.5
) -> Array:
    """Chen et al.'s entropy-adaptive training (§4.2.3): per prompt, Pass@1 or Pass@k advantages.

    Prompts are ranked by the mean entropy of their sampled responses *within the batch*: the top
    ``fraction`` (high exploration) use GRPO (Pass@1) advantages, the rest (low exploration) use the
    analytical Pass@k advantages.

    Args:
      rewards: ``[P, G]`` binary rewards. k: int or traced scalar.
      entropy_P: ``[P]`` mean response entropy per prompt.
      mask: optional bool ``[P, G]``. fraction: share of prompts (by entropy rank) on Pass@1.

    Returns:
      ``[P, G]`` advantages.
    """
    entropy_P = jnp.asarray(entropy_P)
    p = entropy_P.shape[0]
    rank = jnp.argsort(jnp.argsort(-entropy_P))  # 0 = highest entropy
    high = rank < int(round(fraction * p))
    a1 = A.grpo_advantages(rewards, mask)
    ak = A.passk_advantages(rewards, k, mask)
    return jnp.where(high[:, None], a1, ak)
