"""Host malloc settings for XLA:CPU runs: keep freed memory instead of returning it to the kernel.

XLA:CPU allocates a step's temporaries afresh on every execution. Under glibc's defaults the large
ones are ``mmap``'d and ``munmap``'d again, and threads other than the main one allocate from their
own arenas, whose heaps glibc shrinks on free: every step then page-faults its working set in
again and the kernel zeroes each page. :data:`TUNABLES` makes freed memory stay in the process and
be reused: one arena, no ``mmap``'d chunks, no trimming below 1 TiB of free heap (with a 2 GiB
threshold the small benchmark model's step still page-faulted its ~2.6 GB working set in every
step). The price is that the process's resident memory stays at its peak.
``benchmarks/train_step.py --allocators system glibc_reuse`` measures the difference (minor page
faults and seconds per step).

glibc reads the arena limit once, when a thread first needs an arena, so calling ``mallopt`` from
Python is too late (NumPy's and XLA's threads already hold theirs): the settings only take effect
through the ``GLIBC_TUNABLES`` environment variable at process start. :func:`reexec_with_tunables`
therefore re-executes the current command once with it set. The ``passk-train`` / ``python -m
passk_jax.main`` and ``python -m passk_jax.demo`` entry points call it first thing, on CPU-only
hosts (no ``/dev/nvidia*`` or ``/dev/accel*`` device and ``JAX_PLATFORMS`` unset or ``cpu``);
``PASSK_JAX_KEEP_HOST_MEMORY=0`` turns it off, and a ``GLIBC_TUNABLES`` already set is left alone.
"""

from __future__ import annotations

import glob
import os
import platform
import sys

__all__ = ["ENV", "TUNABLES", "cpu_only_host", "reexec_with_tunables", "wanted"]

ENV = "PASSK_JAX_KEEP_HOST_MEMORY"
TUNABLES = (
    "glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1099511627776"
)


def cpu_only_host(environ: dict[str, str] | None = None) -> bool:
    """True when JAX will run on the CPU: ``JAX_PLATFORMS`` is ``cpu``, or unset with no GPU / TPU
    device file (``/dev/nvidia[0-9]*``, ``/dev/accel*``) present."""
    env = os.environ if environ is None else environ
    plats = [p.strip() for p in env.get("JAX_PLATFORMS", "").split(",") if p.strip()]
    if plats:
        return all(p == "cpu" for p in plats)
    return not (glob.glob("/dev/nvidia[0-9]*") or glob.glob("/dev/accel*"))


def wanted(environ: dict[str, str] | None = None) -> bool:
    """Whether :func:`reexec_with_tunables` would re-execute under ``environ`` (default: this one)."""
    env = os.environ if environ is None else environ
    return (
        env.get(ENV, "1").strip() != "0"
        and "GLIBC_TUNABLES" not in env
        and platform.libc_ver()[0] == "glibc"
        and cpu_only_host(env)
    )


def reexec_with_tunables() -> None:
    """Replaces this process by the same command with ``GLIBC_TUNABLES=TUNABLES`` (when
    :func:`wanted`); returns without doing anything otherwise. Call it before any other work: the
    process image is replaced (same pid, same arguments, same environment plus the variable)."""
    if not wanted():
        return
    argv = [sys.executable, *sys.orig_argv[1:]]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, {**os.environ, "GLIBC_TUNABLES": TUNABLES})
