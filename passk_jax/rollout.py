"""The rollout: what one RL step's sampling produced, as one typed object that stays on device.

Axis legend: ``P`` prompts, ``G`` samples per prompt, ``Tp`` prompt tokens, ``T`` completion tokens,
``B = P * G`` sequences of the learner's flattened batch.

The RL loop (``rl.py``) keeps a :class:`Rollout` on the accelerator: only ``tokens`` and ``mask`` go
to the host (:func:`completions_to_host`) to be detokenised and scored; the learner step
(``train.learner_step``) takes the rollout and the ``[P, G]`` rewards and builds its batch on device
with :func:`flatten`.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

__all__ = ["Rollout", "completions_to_host", "flatten", "from_sampler"]


@flax.struct.dataclass
class Rollout:
    """Sampled completions of ``P`` prompts, ``G`` each.

    Attributes:
      prompt_tokens: ``[P, Tp]`` int32 (left padded).
      prompt_mask: ``[P, Tp]`` bool, real prompt tokens.
      tokens: ``[P, G, T]`` int32 completion tokens.
      logprobs: ``[P, G, T]`` float32 log-probs under the sampling distribution (0 where masked).
      mask: ``[P, G, T]`` bool, tokens that count (up to and including EOS).
    """

    prompt_tokens: Array
    prompt_mask: Array
    tokens: Array
    logprobs: Array
    mask: Array

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(P, G, T)``."""
        return tuple(self.tokens.shape)


def from_sampler(out: Any) -> Rollout:
    """A :class:`Rollout` from a ``sampler.SamplerOutput`` (no copies)."""
    return Rollout(
        prompt_tokens=out.prompt_tokens,
        prompt_mask=out.prompt_mask,
        tokens=out.tokens,
        logprobs=out.logprobs,
        mask=out.mask,
    )


def flatten(rollout: Rollout, weights_PG: Array) -> dict[str, Array]:
    """The learner's batch (``train.BATCH_KEYS``, leading axis ``B = P * G``), built with ``jnp``
    so that under ``jit`` it never leaves the device. Prompts are repeated ``G`` times."""
    p, g, t = rollout.tokens.shape
    return {
        "prompt_tokens": jnp.repeat(rollout.prompt_tokens.astype(jnp.int32), g, axis=0),
        "prompt_mask": jnp.repeat(rollout.prompt_mask.astype(bool), g, axis=0),
        "tokens": rollout.tokens.reshape(p * g, t).astype(jnp.int32),
        "mask": rollout.mask.reshape(p * g, t).astype(bool),
        "old_logp": rollout.logprobs.reshape(p * g, t).astype(jnp.float32),
        "weights": weights_PG.reshape(p * g).astype(jnp.float32),
    }


def completions_to_host(rollout: Rollout) -> tuple[np.ndarray, np.ndarray]:
    """``(tokens, mask)`` ``[P, G, T]`` as host numpy arrays: all the host needs to score.

    With several processes each gets the whole (gathered) arrays, as every process scores."""
    return _to_host(rollout.tokens), _to_host(rollout.mask)


def _to_host(x: Any) -> np.ndarray:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
