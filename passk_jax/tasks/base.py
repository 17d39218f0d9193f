"""The task interface: prompts with metadata for train / eval splits, and a never-raising scorer.

A *task* yields :class:`Prompt` objects for named splits (``"train"``, ``"eval"`` and task-specific
ones such as ``"hard"``), deterministically from the task's seed, and scores a model completion with a
reward in ``[0, 1]``. Scoring is pure Python, fast, and never raises on arbitrary model output: every
scorer is wrapped by :func:`safe_reward`, which turns exceptions, NaN and out-of-range values into a
valid reward.

Shared answer-extraction helpers live here too (``<answer>`` tags, brace-balanced ``\\boxed{...}``), so
every task applies the same rules as Chen et al.'s maze verifier (``spec/passk_training.md`` 3.2).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "Prompt",
    "ScoreTimeout",
    "Task",
    "TaskBase",
    "alarm_timeout",
    "extract_answer",
    "extract_answer_tag",
    "extract_boxed",
    "fuzz_completions",
    "safe_reward",
    "score_batch_serial",
]


@dataclasses.dataclass(frozen=True)
class Prompt:
    """One prompt of a task: conditioning text, a reference answer and what the scorer needs.

    Attributes:
      text: what the model is conditioned on.
      target: one reference answer (used for a supervised warm start), ``None`` if unknown.
      meta: whatever the scorer needs (maze grid, unit tests, gold answer, ...).
      uid: stable id, e.g. ``"maze/train/5x5/000123"``.
    """

    text: str
    target: str | None
    meta: Mapping[str, Any]
    uid: str


@runtime_checkable
class Task(Protocol):
    """Protocol every task implements (see the module docstring)."""

    name: str
    binary: bool
    alphabet: str | None

    def prompts(self, split: str, num: int | None = None) -> list[Prompt]:
        """Return the first ``num`` prompts (all if ``None``) of ``split``, deterministic in the seed."""
        ...

    def score(self, prompt: Prompt, completion: str) -> float:
        """Return the reward of ``completion`` in ``[0, 1]``; never raises."""
        ...

    def score_batch(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> np.ndarray:
        """Return the rewards of paired prompts and completions as a float32 array."""
        ...


def safe_reward(fn: Callable[[], Any]) -> float:
    """Call ``fn()`` and coerce its result to a float in ``[0, 1]``; any failure gives 0.0.

    ``None``, NaN, non-numeric results and every exception (``BaseException`` subclasses raised by
    user-level code such as ``RecursionError`` included, but not ``KeyboardInterrupt`` /
    ``SystemExit``) map to 0.0; finite values are clamped to ``[0, 1]``.
    """
    try:
        value = fn()
        if value is None:
            return 0.0
        value = float(value)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:  # noqa: BLE001 -- the scorer must never raise on model output
        return 0.0
    if math.isnan(value):
        return 0.0
    return min(1.0, max(0.0, value))


class ScoreTimeout(Exception):
    """Raised inside :func:`alarm_timeout` when its time is up."""


@contextlib.contextmanager
def alarm_timeout(seconds: float | None):
    """Interrupt the body with :class:`ScoreTimeout` after ``seconds`` of wall-clock time.

    Uses ``SIGALRM`` (``setitimer``), so it only works in the main thread of a POSIX process; elsewhere
    (worker threads, ``seconds`` None or <= 0) the body runs without a time limit. A timer already
    armed by an outer caller is restored (minus the time spent) afterwards. Pure-Python code is
    interrupted promptly; a long call inside a C extension is interrupted when it returns to Python.
    """
    usable = (
        seconds is not None
        and seconds > 0
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    def _handler(signum, frame):
        raise ScoreTimeout(f"timed out after {seconds} s")

    old_handler = signal.signal(signal.SIGALRM, _handler)
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    start = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if old_delay > 0:
            remaining = max(1e-3, old_delay - (time.monotonic() - start))
            signal.setitimer(signal.ITIMER_REAL, remaining, old_interval)


def score_batch_serial(
    task: Any, prompts: Sequence[Prompt], completions: Sequence[str]
) -> np.ndarray:
    """Score paired ``prompts`` and ``completions`` one by one with ``task.score``."""
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    return np.asarray(
        [task.score(p, c) for p, c in zip(prompts, completions, strict=True)], dtype=np.float32
    )


class TaskBase:
    """Convenience base class: the default ``score_batch`` loop and split/num validation."""

    name: str = "task"
    binary: bool = True
    alphabet: str | None = None
    splits: tuple[str, ...] = ("train", "eval")

    def prompts(self, split: str, num: int | None = None) -> list[Prompt]:
        """Return the first ``num`` prompts of ``split`` (all if ``None``)."""
        items = self._split(self._check_split(split))
        return list(items if num is None else items[: _check_num(num)])

    def _split(self, split: str) -> Sequence[Prompt]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_split(self, split: str) -> str:
        if split not in self.splits:
            raise ValueError(f"{self.name}: unknown split {split!r}; expected one of {self.splits}")
        return split

    def score(self, prompt: Prompt, completion: str) -> float:  # pragma: no cover - abstract
        """Return the reward of ``completion`` in ``[0, 1]``."""
        raise NotImplementedError

    def score_batch(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> np.ndarray:
        """Return the rewards of paired prompts and completions as a float32 array ``[len]``."""
        return score_batch_serial(self, prompts, completions)


def _check_num(num: int) -> int:
    if not isinstance(num, int | np.integer) or num < 0:
        raise ValueError(f"num must be a non-negative int or None, got {num!r}")
    return int(num)


# --------------------------------------------------------------------------------------------------
# Answer extraction.
# --------------------------------------------------------------------------------------------------

_BOXED_RE = re.compile(r"\\boxed\s*\{")


def extract_answer_tag(text: str) -> str | None:
    """Return the text between the last ``<answer>`` ... ``</answer>`` pair, or ``None``.

    "Last pair" means the last ``</answer>`` and the last ``<answer>`` before it (as Chen et al.'s
    verifier, which splits on the closing tag first). Returns ``None`` when either tag is missing.
    """
    if not isinstance(text, str):
        return None
    end = text.rfind("</answer>")
    if end < 0:
        return None
    start = text.rfind("<answer>", 0, end)
    if start < 0:
        return None
    return text[start + len("<answer>") : end]


def extract_boxed(text: str) -> str | None:
    """Return the brace-balanced content of the last ``\\boxed{...}``, or ``None``.

    An unbalanced last box (``\\boxed{abc`` with no closing brace) yields ``None``. Linear time.
    """
    if not isinstance(text, str):
        return None
    last = None
    for m in _BOXED_RE.finditer(text):
        last = m
    if last is None:
        return None
    depth = 1
    i = last.end()
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[last.end() : i]
        i += 1
    return None


def extract_answer(text: str) -> str:
    """Chen et al.'s extraction: last ``<answer>`` pair, else last balanced ``\\boxed{}``, else raw text."""
    if not isinstance(text, str):
        return ""
    tagged = extract_answer_tag(text)
    if tagged is not None:
        return tagged
    if "boxed" in text:
        boxed = extract_boxed(text)
        if boxed is not None:
            return boxed
    return text


# --------------------------------------------------------------------------------------------------
# Fuzzing helper (used by the tests; handy for checking a new verifier).
# --------------------------------------------------------------------------------------------------

_FUZZ_FRAGMENTS = (
    "<answer>",
    "</answer>",
    "<answer></answer>",
    "\\boxed{",
    "\\boxed",
    "{",
    "}",
    "}}",
    "\\frac{1}{2}",
    "####",
    "```python\n",
    "```",
    "\n",
    "LRUD",
    "l",
    "r",
    "u",
    "d",
    "L",
    "R",
    "U",
    "D",
    "0",
    "1",
    "-3.5",
    "1e999",
    "nan",
    "[[1, 2], [3, 4]]",
    "\x00",
    "\u00df",
    "\ufb02",
    "\u0130",
    "\U0001f600",
    " ",
    "\\",
    "$",
    "=",
    "x^2",
    "\\sqrt{2}",
    "1/0",
    "\t",
    "\r\n",
)


def fuzz_completions(seed: int, num: int, max_pieces: int = 12) -> list[str]:
    """Deterministic adversarial completions: random mixes of answer tags, boxes, moves and junk.

    Each string concatenates up to ``max_pieces`` pieces drawn from a list of format fragments
    (``<answer>``, ``\\boxed{``, unbalanced braces, ``####``, code fences, move letters, numbers,
    odd unicode) and random printable / arbitrary code points, so every extraction branch is hit.
    """
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(num):
        pieces = []
        for _ in range(int(rng.integers(0, max_pieces + 1))):
            kind = rng.random()
            if kind < 0.55:
                pieces.append(_FUZZ_FRAGMENTS[int(rng.integers(len(_FUZZ_FRAGMENTS)))])
            elif kind < 0.85:
                pieces.append(
                    "".join(chr(int(x)) for x in rng.integers(32, 127, rng.integers(1, 8)))
                )
            else:
                cps = rng.integers(1, 0x10FFFF, rng.integers(1, 4))
                pieces.append("".join(chr(int(x)) for x in cps if not 0xD800 <= x < 0xE000))
        out.append("".join(pieces))
    return out
