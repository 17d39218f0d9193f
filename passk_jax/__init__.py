"""passk_jax: pass@k policy optimisation for language models in JAX.

The core install (``pip install passk_jax``: jax and numpy only) gives the estimator kernels and the
adapters for non-JAX trainers:

* ``passk_jax.estimators``: unbiased pass@k / maxg@k and PKPO's reward transforms (pure ``jnp``);
* ``passk_jax.advantages``: GRPO, RLOO, Tang et al. and Chen et al.'s Pass@k Training advantages,
  and the ``ADVANTAGES`` registry by name;
* ``passk_jax.numpy_api`` / ``passk_jax.torch_api``: the same functions, jitted and cached, taking
  and returning NumPy arrays / torch tensors (torch is optional);
* ``passk_jax.schedules``: k schedules (constant, anneal, linear, phases).

The ``[rl]`` extra adds the Flax Gemma-2 (``passk_jax.models.gemma2``), the sampler, the sharded train
step, the RL loop (``passk_jax.rl``), checkpoints, the toy settings (``passk_jax.toys``) and the
``passk-train`` / ``passk-eval`` / ``passk-export`` commands; ``[tasks]`` the verifiable tasks' extra
dependencies.

Submodules load on first attribute access, so ``import passk_jax`` is cheap and never imports flax::

    import passk_jax
    passk_jax.estimators.pass_at_k(3, 16, 8)
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__: str = version("passk_jax")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

# Submodules reachable as attributes (imported lazily, on first access).
_SUBMODULES = (
    "advantages",
    "checkpoints",
    "config_lib",
    "estimators",
    "evaluate",
    "export",
    "losses",
    "metrics",
    "models",
    "numpy_api",
    "recipes",
    "rl",
    "sampler",
    "schedules",
    "sharding",
    "tasks",
    "testing",
    "tokenizers",
    "torch_api",
    "toys",
    "train",
)

__all__ = ["__version__", *_SUBMODULES]


def __getattr__(name: str) -> Any:
    # Any submodule (listed or added later) loads on first access; other names are errors.
    if name in _SUBMODULES or (
        not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None
    ):
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULES))
