"""verl recipe: a passk_jax weighting as a verl advantage estimator.

verl's PPO trainer looks an estimator up by name (``algorithm.adv_estimator``) in the registry filled by
``verl.trainer.ppo.core_algos.register_adv_est`` and calls it with keyword arguments::

    advantages, returns = fn(token_level_rewards=[B, T], response_mask=[B, T], index=uids[B],
                             config=algo_config)

where ``index`` holds each response's prompt uid (the n responses of a prompt share it). Usage, in the
driver process before the trainer is built::

    from passk_jax.recipes import verl as passk_verl
    passk_verl.register("pkpo_k4", method="pkpo_sloo_minus_one", k=4)
    # then: python -m verl.trainer.main_ppo algorithm.adv_estimator=pkpo_k4 \\
    #         actor_rollout_ref.rollout.n=16 ...

The estimator sums each response's token rewards into one outcome reward, groups responses by uid (group
sizes may differ: a group is masked, not padded with fake samples), computes the per-response weights
with :func:`passk_jax.torch_api.compute_advantages` and broadcasts each weight over its response's
tokens (0 on padding). ``returns`` equals ``advantages``, as for verl's own outcome estimators.

``k`` may be a zero-argument callable (read at every call) to anneal it. A group with fewer responses than
k gets 0 weights (the estimators' contract); a k outside [1, n] for the largest group is recorded by
:func:`passk_jax.torch_api.k_flags`. Scale: PKPO weights are on the reward's scale times about k/n, not
z-scored like GRPO's; retune the learning rate when switching (see the README).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["make_estimator", "register"]


def make_estimator(
    method: str = "pkpo_sloo_minus_one", k: int | Callable[[], int] | None = 4, seed: int = 0
) -> Callable[..., tuple[Any, Any]]:
    """A verl-compatible outcome advantage estimator computing passk_jax's ``method``.

    Args:
      method: a key of :data:`passk_jax.advantages.ADVANTAGES`.
      k: the k of pass@k methods (ignored by ``grpo`` / ``rloo`` / ``tang``), or a callable giving it.
      seed: base seed of ``passk_bootstrap`` (each call uses the next one).

    Returns:
      ``fn(token_level_rewards, response_mask, index=None, config=None, **unused) -> (adv, returns)``.
    """
    from passk_jax import advantages as A

    if method not in A.ADVANTAGES:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(A.ADVANTAGES)}")
    calls = {"n": 0}

    def estimator(token_level_rewards, response_mask, index=None, config=None, **unused):
        import torch

        from passk_jax import torch_api

        del config, unused
        scores = token_level_rewards.detach().float().sum(dim=-1)  # [B]
        b = scores.shape[0]
        if index is None:
            raise ValueError("the passk_jax estimators need `index` (prompt uids) to form groups")
        uids = np.asarray(index)
        _, group = np.unique(uids, return_inverse=True)  # group id per response
        group = group.reshape(-1)
        num_groups = int(group.max()) + 1 if b else 0
        pos = np.zeros(b, np.int64)  # position of each response inside its group
        counts = np.zeros(num_groups, np.int64)
        for i, gi in enumerate(group):
            pos[i] = counts[gi]
            counts[gi] += 1
        width = int(counts.max()) if b else 0
        rewards = torch.zeros(num_groups, width, dtype=torch.float32)
        mask = torch.zeros(num_groups, width, dtype=torch.bool)
        g_t, p_t = torch.as_tensor(group), torch.as_tensor(pos)
        rewards[g_t, p_t] = scores.cpu()
        mask[g_t, p_t] = True
        kk = k() if callable(k) else k
        key = seed + calls["n"] if method in A.NEEDS_KEY else None
        calls["n"] += 1
        w = torch_api.compute_advantages(
            method, rewards, k=kk, mask=mask, key=key
        )  # [groups, width]
        per_response = w[g_t, p_t].to(device=token_level_rewards.device)  # [B]
        adv = per_response.unsqueeze(-1) * response_mask.to(per_response.dtype)
        adv = adv.to(token_level_rewards.dtype)
        return adv, adv

    estimator.__name__ = f"passk_jax_{method}"
    return estimator


def register(
    name: str,
    method: str = "pkpo_sloo_minus_one",
    k: int | Callable[[], int] | None = 4,
    seed: int = 0,
    register_adv_est: Callable[[str], Callable] | None = None,
) -> Callable[..., tuple[Any, Any]]:
    """Registers :func:`make_estimator` ``(method, k)`` with verl under ``name``; returns it.

    Args:
      name: the ``algorithm.adv_estimator`` value that selects it.
      method / k / seed: see :func:`make_estimator`.
      register_adv_est: verl's decorator factory; defaults to
        ``verl.trainer.ppo.core_algos.register_adv_est`` (imported here, so verl must be installed).
    """
    if register_adv_est is None:
        from verl.trainer.ppo.core_algos import register_adv_est
    fn = make_estimator(method, k, seed)
    return register_adv_est(name)(fn)
