"""torch adapter: the estimators and advantages on ``torch.Tensor`` inputs, for PyTorch trainers.

The same names and arguments as :mod:`passk_jax.numpy_api` (and so as :mod:`passk_jax.estimators` /
:mod:`passk_jax.advantages`), taking and returning tensors::

    import torch
    from passk_jax import torch_api as T

    rewards = torch.tensor([[1., 0., 0., 1.], [0., 0., 0., 1.]], dtype=torch.bfloat16)
    w = T.pkpo_rewards(rewards, k=2)     # bfloat16 [2, 4], on rewards.device, no grad

torch is optional: it is imported on the first call, not when this module is imported (``pip install
torch`` if it is missing). Contract (tested in ``tests/test_torch_api.py``):

* outputs are new tensors (writable, not sharing memory with the inputs) with the input's floating dtype
  (float32 for integer / bool rewards) on the input's device: CPU in, CPU out;
* bfloat16 / float16 are computed in float32; float64 in float64;
* inputs that ``requires_grad`` are accepted; outputs are detached (weights are constants in a
  policy-gradient loss: ``loss = -(w * logp).sum()``);
* ``k`` may be an int or a 0-d integer tensor; a k outside [1, n] gives NaN estimates / 0 weights and is
  recorded (:func:`k_flags`, :class:`InvalidKWarning`), as in :mod:`passk_jax.numpy_api`.

The computation runs in JAX (jitted, cached per shape and static arguments) on host copies of the
inputs: for a ``[P, G]`` reward matrix that copy is negligible next to a training step.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from passk_jax import numpy_api as _np_api
from passk_jax.numpy_api import ADVANTAGES, ESTIMATORS, InvalidKWarning, k_flags, reset_k_flags

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


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - exercised in a subprocess test
        raise ImportError(
            "passk_jax.torch_api needs torch, which is not installed (pip install torch)."
        ) from e
    return torch


def _to_numpy(x: Any) -> tuple[np.ndarray, Any, Any]:
    """``(host array, dtype to return, device to return)`` for a tensor or array-like."""
    torch = _torch()
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    t = x.detach()
    dtype = t.dtype if t.is_floating_point() else torch.float32
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.float()
    return t.cpu().numpy(), dtype, x.device


def _mask(mask: Any) -> np.ndarray | None:
    if mask is None:
        return None
    torch = _torch()
    if isinstance(mask, torch.Tensor):
        return mask.detach().cpu().numpy().astype(bool)
    return np.asarray(mask).astype(bool)


def _k(k: Any) -> Any:
    torch = _torch()
    if isinstance(k, torch.Tensor):
        if k.dtype == torch.bool or k.is_floating_point():
            raise ValueError(f"`k` must be an integer, got a {k.dtype} tensor.")
        return k.detach().cpu().numpy()
    return k


def _back(out: np.ndarray, dtype: Any, device: Any):
    torch = _torch()
    return torch.from_numpy(np.ascontiguousarray(out)).to(device=device, dtype=dtype)


def _rewards_call(fn, rewards: Any, *args: Any, mask: Any = None, **kw: Any):
    x, dtype, device = _to_numpy(rewards)
    return _back(fn(x, *args, mask=_mask(mask), **kw), dtype, device)


def pass_at_k(num_correct: Any, num_samples: Any, k: Any):
    """Unbiased pass@k (see :func:`passk_jax.numpy_api.pass_at_k`); float32 tensor (float64 if an
    input is float64) on ``num_correct``'s device when it is a tensor, else on the CPU."""
    torch = _torch()
    device = num_correct.device if isinstance(num_correct, torch.Tensor) else torch.device("cpu")
    c = num_correct.detach().cpu().numpy() if isinstance(num_correct, torch.Tensor) else num_correct
    n = num_samples.detach().cpu().numpy() if isinstance(num_samples, torch.Tensor) else num_samples
    out = _np_api.pass_at_k(c, n, _k(k))
    return torch.from_numpy(np.ascontiguousarray(out)).to(device)


def maxg_at_k(rewards: Any, k: Any, mask: Any = None):
    """Unbiased maxg@k per group ``[..., G] -> [...]`` (see :func:`passk_jax.numpy_api.maxg_at_k`)."""
    return _rewards_call(_np_api.maxg_at_k, rewards, _k(k), mask=mask)


def pkpo_rewards(rewards: Any, k: Any, estimator: str = "sloo_minus_one", mask: Any = None):
    """PKPO effective rewards ``[..., G]`` (see :func:`passk_jax.numpy_api.pkpo_rewards`)."""
    return _rewards_call(_np_api.pkpo_rewards, rewards, _k(k), estimator, mask=mask)


def passk_advantages(rewards: Any, k: Any, mask: Any = None):
    """Chen et al.'s analytical Pass@k advantages (binary rewards)."""
    return _rewards_call(_np_api.passk_advantages, rewards, _k(k), mask=mask)


def combination_advantages(rewards: Any, k: Any, mask: Any = None):
    """Chen et al.'s Pass@1 / Pass@k combination (binary rewards)."""
    return _rewards_call(_np_api.combination_advantages, rewards, _k(k), mask=mask)


def full_sampling_passk_advantages(rewards: Any, k: Any, mask: Any = None):
    """Chen et al.'s full-sampling Pass@k advantages."""
    return _rewards_call(_np_api.full_sampling_passk_advantages, rewards, _k(k), mask=mask)


def bootstrap_passk_advantages(
    rewards: Any, k: Any, key: Any, num_groups: int | None = None, mask: Any = None
):
    """Chen et al.'s bootstrap Pass@k advantages; ``key`` is an int seed or a JAX key."""
    return _rewards_call(
        _np_api.bootstrap_passk_advantages, rewards, _k(k), key, num_groups, mask=mask
    )


def grpo_advantages(rewards: Any, mask: Any = None):
    """GRPO advantages (population std)."""
    return _rewards_call(_np_api.grpo_advantages, rewards, mask=mask)


def rloo_advantages(rewards: Any, mask: Any = None):
    """RLOO advantages."""
    return _rewards_call(_np_api.rloo_advantages, rewards, mask=mask)


def tang_advantages(rewards: Any, mask: Any = None):
    """Tang et al.'s k = n advantages."""
    return _rewards_call(_np_api.tang_advantages, rewards, mask=mask)


def compute_advantages(name: str, rewards: Any, k: Any = None, mask: Any = None, key: Any = None):
    """Per-sample weights by registry name (see :func:`passk_jax.numpy_api.compute_advantages`)."""
    kk = None if k is None else _k(k)
    x, dtype, device = _to_numpy(rewards)
    out = _np_api.compute_advantages(name, x, k=kk, mask=_mask(mask), key=key)
    return _back(out, dtype, device)
