"""Toy settings where everything is known exactly (``[rl]`` extra): :mod:`passk_jax.toys.gaussian`
(PKPO's Gaussian toy) and :mod:`passk_jax.toys.bandit` (shared-policy and hard-exploration bandits)."""

__all__ = ["bandit", "gaussian"]
