"""Recipes: pass@k weightings inside other RL trainers, through :mod:`passk_jax.torch_api`.

* :mod:`passk_jax.recipes.verl`: registers a passk_jax method as a verl advantage estimator
  (``register_adv_est``), selected with ``algorithm.adv_estimator=<name>``;
* :mod:`passk_jax.recipes.trl`: a mixin for TRL's ``GRPOTrainer`` that replaces its group-normalised
  advantages by any passk_jax weighting (PKPO, Chen et al., RLOO, ...).

Neither module imports verl or TRL at import time; both are tested against small stand-ins of the
interfaces they use (``tests/test_recipes.py``), not against the real libraries.
"""

__all__ = ["trl", "verl"]
