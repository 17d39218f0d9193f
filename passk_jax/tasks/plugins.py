"""Plug-in tasks and rewards named ``module:attr`` in a config.

* ``task.name = "my_pkg.tasks:make"``: the object at ``make`` is a :class:`~passk_jax.tasks.Task`
  (used as is) or a factory of one (called with ``task.kwargs``); it must have ``prompts``,
  ``score_batch``, ``binary`` and ``splits``.
* ``task.reward = "my_pkg.rewards:score"``: a callable ``(prompt, completion) -> float`` that replaces
  the task's own reward (:class:`RewardPlugin`). ``prompt`` is the :class:`~passk_jax.tasks.Prompt`
  (``.text``, ``.target``, ``.meta``, ``.uid``), ``completion`` the decoded text.

A plug-in reward runs in the scorer processes under the task's enforced deadline like every scorer
(``score_deadline_s``, default 10 s per completion: a completion whose scoring overruns is killed and
gets ``on_error``); an exception, ``None``, NaN or an infinite value also gives ``on_error`` (default
0.0). Continuous rewards (``binary=False``, the default) are passed on unclamped, so the estimators
see the reward's own scale (maxg@k methods; validation refuses binary-only weightings for them). A
binary plug-in's values must be 0 or 1: anything else is a :class:`ScorerConfigError` (the reward
function is wrong, not the completion), and the run stops.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from passk_jax.tasks.base import Prompt, ScorerConfigError, TaskBase

__all__ = ["RewardPlugin", "SubsetTask", "is_plugin_spec", "load_object", "make_plugin_task"]


def is_plugin_spec(name: Any) -> bool:
    """``True`` for a ``"module:attr"`` string."""
    if not isinstance(name, str):
        return False
    module, sep, attr = name.partition(":")
    return bool(sep and module and attr)


def load_object(spec: str) -> Any:
    """``"pkg.module:attr[.attr]"`` -> that object; ``ValueError`` naming what was not found."""
    if not is_plugin_spec(spec):
        raise ValueError(f"a plug-in is named 'module:attr', got {spec!r}")
    module_name, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"plug-in {spec!r}: cannot import module {module_name!r} ({e})") from e
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"plug-in {spec!r}: module {module_name!r} has no {attr!r}") from None
    return obj


def make_plugin_task(spec: str, **kwargs: Any) -> Any:
    """The task named by ``spec`` (``module:attr``): a task object, or a factory called with
    ``kwargs``."""
    obj = load_object(spec)
    task = obj
    if not _looks_like_task(obj):
        if not callable(obj):
            raise ValueError(f"plug-in task {spec!r} is neither a task nor a factory of one")
        task = obj(**kwargs)
    elif kwargs:
        raise ValueError(f"plug-in task {spec!r} is a task object; it takes no task.kwargs")
    if not _looks_like_task(task):
        missing = [a for a in _TASK_ATTRS if not hasattr(task, a)]
        raise ValueError(
            f"plug-in task {spec!r} built {type(task).__name__}, which lacks {missing}"
        )
    return task


_TASK_ATTRS = ("prompts", "score_batch", "binary", "name")


def _looks_like_task(obj: Any) -> bool:
    return not isinstance(obj, type) and all(hasattr(obj, a) for a in _TASK_ATTRS)


class RewardPlugin(TaskBase):
    """The prompts (splits, targets, alphabet) of ``base``, scored by ``reward(prompt, completion)``.

    Args:
      base: the task whose prompts are used.
      reward: a ``module:attr`` string (imported where it is used, in the scorer processes too) or a
        picklable callable ``(prompt, completion) -> float``.
      binary: the reward is 0 / 1 (then pass@k-only weightings are allowed and values other than
        0 / 1 stop the run); default continuous and unclamped.
      on_error: the reward of a completion whose scoring failed or overran its deadline.
      deadline_s: per-completion scoring deadline (default: ``base``'s, else 10 s).
    """

    def __init__(
        self,
        base: Any,
        reward: str | Callable[[Prompt, str], float],
        *,
        binary: bool = False,
        on_error: float = 0.0,
        deadline_s: float | None = None,
    ):
        if isinstance(reward, str):
            load_object(reward)  # fail now, with a clear message, not in a scorer process
        elif not callable(reward):
            raise TypeError(f"reward must be 'module:attr' or a callable, got {type(reward)}")
        self.base = base
        self.reward = reward
        label = reward if isinstance(reward, str) else getattr(reward, "__qualname__", "reward")
        self.name = f"{getattr(base, 'name', 'task')}+{label}"
        self.binary = bool(binary)
        self.alphabet = getattr(base, "alphabet", None)
        self.splits = tuple(getattr(base, "splits", ("train", "eval")))
        self.reward_bounds = (0.0, 1.0) if binary else None
        self.reward_on_error = float(on_error)
        self.score_deadline_s = float(
            deadline_s if deadline_s is not None else getattr(base, "score_deadline_s", 10.0)
        )

    def prompts(self, split: str, num: int | None = None) -> list[Prompt]:
        return self.base.prompts(split, num)

    def _reward_fn(self) -> Callable[[Prompt, str], float]:
        fn = self.__dict__.get("_fn")
        if fn is None:
            fn = load_object(self.reward) if isinstance(self.reward, str) else self.reward
            self.__dict__["_fn"] = fn
        return fn

    def _score(self, prompt: Prompt, completion: str) -> float:
        value = self._reward_fn()(prompt, completion)
        if self.binary and value is not None:
            v = float(value)  # a non-number is a failed score (on_error), as for any scorer
            if v not in (0.0, 1.0):
                raise ScorerConfigError(
                    f"reward {self.reward!r} is declared binary but returned {value!r} "
                    f"(prompt {prompt.uid}); set reward_binary off for continuous rewards"
                )
        return value

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_fn", None)
        return state


class SubsetTask:
    """``base`` with its ``train`` split restricted to chosen prompts, plus named subsets as splits.

    For experiments that select training prompts by a model's measured success (e.g. a hard subset
    of the training pool): ``train`` becomes the prompts of ``base``'s train split whose uids are in
    ``train`` (in that order), and each ``splits[name]`` (uids of the same pool) becomes an extra
    split, so a run can evaluate on it. Scoring is ``base``'s, unchanged.

    Raises ``ValueError`` naming the first uid that is not in ``base``'s train split or is listed
    twice, and on an empty subset or a split name that ``base`` already has.
    """

    def __init__(self, base: Any, train: Any, splits: dict[str, Any] | None = None):
        pool = {p.uid: p for p in base.prompts("train")}
        self.base = base
        self._subsets: dict[str, list[Prompt]] = {}
        named = {"train": list(train), **{k: list(v) for k, v in (splits or {}).items()}}
        for name, uids in named.items():
            if name != "train" and name in tuple(getattr(base, "splits", ())):
                raise ValueError(f"subset split {name!r} already exists in {base.name}")
            if not uids:
                raise ValueError(f"subset {name!r} is empty")
            if len(set(uids)) != len(uids):
                dup = next(u for u in uids if uids.count(u) > 1)
                raise ValueError(f"subset {name!r}: uid {dup!r} is listed more than once")
            missing = [u for u in uids if u not in pool]
            if missing:
                raise ValueError(
                    f"subset {name!r}: uid {missing[0]!r} is not in {base.name}'s train split "
                    f"({len(missing)} of {len(uids)} missing)"
                )
            self._subsets[name] = [pool[u] for u in uids]
        extra = tuple(k for k in self._subsets if k != "train")
        self.splits = tuple(getattr(base, "splits", ("train", "eval"))) + extra
        self.name = f"{base.name}[subset {len(self._subsets['train'])}]"
        for attr in ("binary", "alphabet", "reward_bounds", "reward_on_error", "score_deadline_s"):
            if hasattr(base, attr):
                setattr(self, attr, getattr(base, attr))

    def prompts(self, split: str, num: int | None = None) -> list[Prompt]:
        if split in self._subsets:
            items = self._subsets[split]
            return list(items if num is None else items[: int(num)])
        return self.base.prompts(split, num)

    def score(self, prompt: Prompt, completion: str) -> float:
        return self.base.score(prompt, completion)

    def score_batch(self, prompts: Any, completions: Any, workers: int | None = None) -> Any:
        return self.base.score_batch(prompts, completions, workers=workers)

    def close_scorers(self) -> None:
        close = getattr(self.base, "close_scorers", None)
        if close is not None:
            close()

    def __getattr__(self, name: str) -> Any:  # other task attributes (e.g. target helpers)
        if name.startswith("__") or name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)
