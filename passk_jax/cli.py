"""Console-script entry points (``[project.scripts]`` in ``pyproject.toml``).

``passk-train`` runs :mod:`passk_jax.main` (absl flags: ``--config NAME_OR_FILE[:ARG] --workdir DIR``);
``passk-eval`` and ``passk-export`` point straight at :func:`passk_jax.evaluate.main` and
:func:`passk_jax.export.main`.
"""

from __future__ import annotations


def train() -> None:
    """``passk-train --config NAME_OR_FILE[:ARG] --workdir DIR``: see :mod:`passk_jax.main`.

    On a CPU-only glibc host this first re-executes itself with :data:`passk_jax.hostmem.TUNABLES`
    (``PASSK_JAX_KEEP_HOST_MEMORY=0`` turns that off).
    """
    from passk_jax import hostmem

    hostmem.reexec_with_tunables()
    from passk_jax import main as main_module

    main_module.run()
