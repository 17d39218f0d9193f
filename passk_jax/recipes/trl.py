"""TRL recipe: a ``GRPOTrainer`` whose advantages are any passk_jax weighting.

TRL's ``GRPOTrainer._generate_and_score_completions`` gathers every process's rewards
(``_calculate_rewards`` returns ``rewards_per_func [B_global, num_funcs]``), sums them with
``reward_weights``, z-scores them per group of ``num_generations`` consecutive completions, and keeps
this process's slice as ``output["advantages"]``. :class:`PassKGRPOMixin` keeps everything else and
recomputes that slice with :func:`passk_jax.torch_api.compute_advantages` on the same gathered rewards::

    from trl import GRPOTrainer
    from passk_jax.recipes.trl import PassKGRPOMixin

    class PassKGRPOTrainer(PassKGRPOMixin, GRPOTrainer):
        passk_method = "pkpo_sloo_minus_one"
        passk_k = 4                      # or a callable global_step -> k, to anneal

    trainer = PassKGRPOTrainer(model=..., reward_funcs=..., args=GRPOConfig(num_generations=16), ...)

The mixin only relies on the two methods named above and on ``num_generations``, ``reward_weights``,
``accelerator.process_index`` and ``state.global_step``; if a TRL release renames them the mixin fails
loudly (AttributeError) rather than training with GRPO's advantages. TRL's logged ``reward_std`` and
similar metrics are still GRPO's; the weights actually used are stored in ``output["advantages"]``.
Invalid k values are recorded by :func:`passk_jax.torch_api.k_flags`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["PassKGRPOMixin", "passk_advantages_for_slice"]


def passk_advantages_for_slice(
    rewards_global: Any,
    num_generations: int,
    method: str,
    k: int | None,
    start: int,
    length: int,
    key: Any = None,
):
    """Weights of ``rewards_global [B_global]`` (groups of ``num_generations`` consecutive samples),
    restricted to ``[start, start + length)``; a float32 tensor on ``rewards_global``'s device."""
    from passk_jax import torch_api

    grouped = rewards_global.detach().float().reshape(-1, num_generations)
    w = torch_api.compute_advantages(method, grouped, k=k, key=key).reshape(-1)
    return w[start : start + length]


class PassKGRPOMixin:
    """Mix in before TRL's ``GRPOTrainer`` (see the module docstring)."""

    passk_method: str = "pkpo_sloo_minus_one"
    passk_k: int | Callable[[int], int] | None = 4
    passk_seed: int = 0

    def _calculate_rewards(self, *args: Any, **kwargs: Any):
        rewards_per_func = super()._calculate_rewards(*args, **kwargs)
        self._passk_rewards_per_func = rewards_per_func
        return rewards_per_func

    def _generate_and_score_completions(self, *args: Any, **kwargs: Any):
        self._passk_rewards_per_func = None
        output = super()._generate_and_score_completions(*args, **kwargs)
        rpf = self._passk_rewards_per_func
        if rpf is None:
            raise RuntimeError(
                "PassKGRPOMixin: GRPOTrainer did not call _calculate_rewards; this TRL version is not "
                "supported by the recipe."
            )
        weights = self.reward_weights.to(rpf.device).unsqueeze(0)
        rewards = (rpf * weights).nansum(dim=1)
        step = int(getattr(getattr(self, "state", None), "global_step", 0) or 0)
        k = self.passk_k(step) if callable(self.passk_k) else self.passk_k
        local = output["advantages"]
        start = self.accelerator.process_index * local.shape[0]
        from passk_jax.advantages import NEEDS_KEY

        key = self.passk_seed + step if self.passk_method in NEEDS_KEY else None
        adv = passk_advantages_for_slice(
            rewards, self.num_generations, self.passk_method, k, start, local.shape[0], key
        )
        output["advantages"] = adv.to(device=local.device, dtype=local.dtype)
        return output
