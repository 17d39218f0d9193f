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

import collections
import contextlib
import dataclasses
import importlib
import math
import multiprocessing
import multiprocessing.connection
import os
import pickle
import re
import signal
import sys
import threading
import time
import types
import uuid
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "Prompt",
    "ScoreTimeout",
    "ScorerConfigError",
    "ScorerPool",
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


def safe_reward(
    fn: Callable[[], Any],
    bounds: tuple[float, float] | None = (0.0, 1.0),
    on_error: float = 0.0,
) -> float:
    """Call ``fn()`` and coerce its result to a float; any failure gives ``on_error`` (0.0).

    ``None``, NaN, +-inf, non-numeric results and every exception (``BaseException`` subclasses
    raised by user-level code such as ``RecursionError`` included, but not ``KeyboardInterrupt`` /
    ``SystemExit`` / :class:`ScorerConfigError`) map to ``on_error``; finite values are clamped to
    ``bounds`` (``[0, 1]`` by default; ``None``: not clamped, for continuous plug-in rewards).
    """
    try:
        value = fn()
        if value is None:
            return float(on_error)
        value = float(value)
    except (KeyboardInterrupt, SystemExit, ScorerConfigError):
        raise
    except BaseException:  # noqa: BLE001 -- the scorer must never raise on model output
        return float(on_error)
    if not math.isfinite(value):
        return float(on_error)
    if bounds is None:
        return value
    return min(float(bounds[1]), max(float(bounds[0]), value))


class ScorerConfigError(RuntimeError):
    """A scorer cannot score at all (e.g. the sandbox lacks the required isolation).

    Raised for the deployment, never for model output: :func:`safe_reward` lets it through so a
    misconfigured run fails loudly instead of training on all-zero rewards.
    """


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
    """Convenience base class: split/num validation and scoring under enforced deadlines.

    A task implements its scorer either as ``_score(prompt, completion)`` (then ``score`` and
    ``score_batch`` run it in worker processes with an enforced deadline, ``score_deadline_s`` per
    completion: a worker that overruns is killed and that completion scores 0.0), or, for scorers
    that are linear-time by construction (maze, ARC), by overriding ``score`` itself, which then runs
    in the caller's process while ``score_batch`` still uses the workers.
    """

    name: str = "task"
    binary: bool = True
    alphabet: str | None = None
    splits: tuple[str, ...] = ("train", "eval")
    score_deadline_s: float = 10.0
    score_workers: int | None = None
    # What safe_reward does with the scorer's value: clamp to these bounds (None: keep any finite
    # value), and the reward of a completion whose scoring failed.
    reward_bounds: tuple[float, float] | None = (0.0, 1.0)
    reward_on_error: float = 0.0

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

    def _score(self, prompt: Prompt, completion: str) -> float:
        """The task's own scorer (may be slow or hang: it runs in a worker under a deadline)."""
        if type(self).score is TaskBase.score:  # pragma: no cover - a task must define one
            raise NotImplementedError(f"{type(self).__name__} defines neither _score nor score")
        return self.score(prompt, completion)

    def score(self, prompt: Prompt, completion: str) -> float:
        """Return the reward of ``completion`` in ``[0, 1]``, within ``score_deadline_s`` (+1 s)."""
        if _IN_WORKER:
            return safe_reward(
                lambda: self._score(prompt, completion), self.reward_bounds, self.reward_on_error
            )
        return float(self.score_batch([prompt], [completion], workers=1)[0])

    def score_batch(
        self,
        prompts: Sequence[Prompt],
        completions: Sequence[str],
        workers: int | None = None,
    ) -> np.ndarray:
        """Rewards of paired prompts and completions, float32 ``[len]``, scored in parallel.

        Runs in ``workers`` processes (default ``score_workers``, else the CPUs this process may
        use, at most 16), each completion under the enforced deadline ``score_deadline_s``.
        """
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        if not len(prompts):
            return np.zeros(0, np.float32)
        if _IN_WORKER:
            return score_batch_serial(self, prompts, completions)
        pool = _pool_for(self)
        if pool is None:  # the task cannot be sent to a scorer process
            return score_batch_serial(self, prompts, completions)
        n = workers or self.score_workers or _default_workers()
        return pool.map(prompts, completions, max(1, min(int(n), len(prompts))))

    def close_scorers(self) -> None:
        """Stop this task's scorer processes (they are also stopped at exit)."""
        pool = self.__dict__.pop("_scorer_pool", None)
        if pool is not None and pool is not _NO_POOL:
            pool.close()

    def __getstate__(self) -> dict[str, Any]:
        """Picklable state for the scorer processes (no pool; modules by name)."""
        state = dict(self.__dict__)
        state.pop("_scorer_pool", None)
        modules = {k: v.__name__ for k, v in state.items() if isinstance(v, types.ModuleType)}
        for k in modules:
            del state[k]
        state["_pickled_modules"] = modules
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        modules = state.pop("_pickled_modules", {})
        self.__dict__.update(state)
        for k, name in modules.items():
            self.__dict__[k] = importlib.import_module(name)


# --------------------------------------------------------------------------------------------------
# Scorer processes with enforced deadlines.
# --------------------------------------------------------------------------------------------------

_IN_WORKER = False


def _default_workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(16, n))


_PRELOAD = [
    "passk_jax.tasks.base",
    "passk_jax.tasks.maze",
    "passk_jax.tasks.arc",
    "passk_jax.tasks.math_task",
    "passk_jax.tasks.code",
    "math_verify",
    "sympy",
    "passk_jax.tasks._scorer_warmup",
]
_ctx_lock = threading.Lock()
_ctx: list[Any] = []


def _context() -> Any:
    """A forkserver context (workers start from a clean, preloaded process, not from the trainer)."""
    with _ctx_lock:
        if not _ctx:
            if "forkserver" in multiprocessing.get_all_start_methods():
                ctx = multiprocessing.get_context("forkserver")
                import importlib.util

                preload = []
                for m in _PRELOAD:
                    try:
                        if importlib.util.find_spec(m) is not None:
                            preload.append(m)
                    except (ImportError, ValueError):
                        pass
                ctx.set_forkserver_preload(preload)
            else:  # pragma: no cover - non-POSIX
                ctx = multiprocessing.get_context("spawn")
            _ctx.append(ctx)
        return _ctx[0]


def _worker_main(conn: Any) -> None:
    """Scorer process: receive the task once, then items; send one result per item as it is done."""
    global _IN_WORKER
    _IN_WORKER = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    task = None
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg[0] == "task":
            task = pickle.loads(msg[1])
        elif msg[0] == "items":
            for idx, prompt, completion in msg[1]:
                try:
                    reward = safe_reward(
                        lambda t=task, p=prompt, c=completion: t._score(p, c),
                        getattr(task, "reward_bounds", (0.0, 1.0)),
                        getattr(task, "reward_on_error", 0.0),
                    )
                    conn.send(("ok", idx, reward))
                except ScorerConfigError as e:
                    conn.send(("error", idx, str(e)))
        else:
            return


_main_lock = threading.Lock()


@contextlib.contextmanager
def _main_hidden():
    """Hide ``__main__`` while a worker starts, so that it does not re-run the caller's script.

    (multiprocessing's spawn / forkserver preparation re-imports the main module in the child; the
    workers need only this module.)
    """
    import types

    with _main_lock:
        real = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            if real is not None:
                sys.modules["__main__"] = real


class _Worker:
    def __init__(self, ctx: Any):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child,), daemon=True)
        with _main_hidden():
            self.proc.start()
        child.close()
        self.task_token: str | None = None
        self.pending: collections.deque[int] = collections.deque()
        self.started = 0.0

    def kill(self) -> None:
        try:
            self.proc.kill()
        except (OSError, ValueError, AttributeError):
            pass
        try:
            self.conn.close()
        except OSError:
            pass
        pid = self.proc.pid
        threading.Thread(target=_reap, args=(self.proc, pid), daemon=True).start()


def _reap(proc: Any, pid: int | None) -> None:
    try:
        proc.join(timeout=30)
    except (OSError, ValueError, AssertionError):
        pass
    sandbox = sys.modules.get("passk_jax.tasks.sandbox")
    if sandbox is not None and pid is not None:
        try:
            sandbox.reap_leftovers(pid)
        except Exception:  # noqa: BLE001 -- best-effort clean-up in a background thread
            pass


class ScorerPool:
    """Worker processes running one task's ``_score`` with an enforced per-completion deadline.

    Each completion is scored in a worker process; when one takes longer than ``deadline_s`` the
    worker is killed (SIGKILL), that completion scores 0.0 and a fresh worker takes over the rest.
    The caller therefore waits at most ``deadline_s`` plus the time to notice and kill (well under a
    second) for any one completion.
    """

    def __init__(self, task: Any, deadline_s: float):
        self.deadline_s = float(deadline_s)
        self._task_bytes = pickle.dumps(task)
        self._token = uuid.uuid4().hex
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self.timeouts = 0

    def _spawn(self) -> _Worker:
        w = _Worker(_context())
        self._workers.append(w)
        return w

    def _assign(self, w: _Worker, items: list[tuple[int, Any, Any]]) -> None:
        if w.task_token != self._token:
            w.conn.send(("task", self._task_bytes))
            w.task_token = self._token
        if not w.pending:  # the deadline runs for the item at the head of the queue
            w.started = time.monotonic()
        w.conn.send(("items", items))
        w.pending.extend(i for i, _, _ in items)

    def map(self, prompts: Sequence[Any], completions: Sequence[str], workers: int) -> np.ndarray:
        """Rewards of the pairs, float32; raises :class:`ScorerConfigError` if a scorer did."""
        with self._lock:
            return self._map(prompts, completions, workers)

    def _map(self, prompts: Sequence[Any], completions: Sequence[str], workers: int) -> np.ndarray:
        n = len(prompts)
        out = np.zeros(n, np.float32)
        todo = collections.deque(range(n))
        chunk = max(1, min(64, n // (workers * 4) or 1))
        while len(self._workers) < workers:
            self._spawn()
        active = self._workers[:workers]
        busy: list[_Worker] = []
        error: str | None = None

        def feed(w: _Worker) -> None:
            items = []
            while todo and len(items) < chunk:
                i = todo.popleft()
                items.append((i, prompts[i], completions[i]))
            if items:
                try:
                    self._assign(w, items)
                    if w not in busy:
                        busy.append(w)
                except (OSError, ValueError, pickle.PicklingError):
                    todo.extendleft(reversed([i for i, _, _ in items]))
                    replace(w)

        def replace(w: _Worker) -> _Worker:
            w.kill()
            if w in busy:
                busy.remove(w)
            k = self._workers.index(w)
            fresh = _Worker(_context())
            self._workers[k] = fresh
            active[active.index(w)] = fresh
            return fresh

        for w in active:
            feed(w)
        while busy:
            now = time.monotonic()
            wait_s = max(0.0, min(w.started + self.deadline_s for w in busy) - now)
            ready = multiprocessing.connection.wait([w.conn for w in busy], timeout=wait_s)
            for w in list(busy):
                if w.conn in ready:
                    died = False
                    while True:  # every result already waiting, then one wait() again
                        try:
                            kind, idx, value = w.conn.recv()
                        except (EOFError, OSError):  # the worker died: its current item scores 0
                            died = True
                            break
                        if w.pending and w.pending[0] == idx:
                            w.pending.popleft()
                        if kind == "ok":
                            out[idx] = value
                        else:
                            error = value
                        w.started = time.monotonic()
                        if not w.pending:
                            break
                        try:
                            if not w.conn.poll():
                                break
                        except (EOFError, OSError):
                            died = True
                            break
                    if died:
                        if w.pending:
                            w.pending.popleft()
                        todo.extendleft(reversed(w.pending))
                        w.pending.clear()
                        feed(replace(w))
                        continue
                    if len(w.pending) <= chunk:  # keep a second chunk queued: no idle round trip
                        if not w.pending:
                            busy.remove(w)
                        if todo:
                            feed(w)
                elif time.monotonic() >= w.started + self.deadline_s:
                    self.timeouts += 1
                    w.pending.popleft()  # the overrunning item scores 0
                    todo.extendleft(reversed(w.pending))
                    w.pending.clear()
                    feed(replace(w))
        if error is not None:
            raise ScorerConfigError(error)
        return out

    def close(self) -> None:
        """Stop every worker."""
        for w in self._workers:
            try:
                w.conn.send(("stop",))
            except (OSError, ValueError):
                pass
            w.kill()
        self._workers = []


_pools_lock = threading.Lock()
_NO_POOL: Any = object()


def _pool_for(task: Any) -> ScorerPool | None:
    """The task's scorer pool; ``None`` (with a warning, once) if the task cannot be pickled."""
    with _pools_lock:
        pool = task.__dict__.get("_scorer_pool")
        if pool is None:
            try:
                pool = ScorerPool(task, task.score_deadline_s)
            except (pickle.PicklingError, TypeError, AttributeError) as e:
                if type(task).score is TaskBase.score:
                    raise ScorerConfigError(
                        f"{type(task).__name__} cannot be sent to a scorer process ({e}); its "
                        "_score cannot run under an enforced deadline"
                    ) from e
                warnings.warn(
                    f"{type(task).__name__} cannot be pickled ({e}); score_batch runs its score "
                    "in this process, without an enforced deadline",
                    RuntimeWarning,
                    stacklevel=3,
                )
                task.__dict__["_scorer_pool"] = pool = _NO_POOL
            else:
                task.__dict__["_scorer_pool"] = pool
                weakref.finalize(task, pool.close)
        if pool is _NO_POOL:
            return None
        return pool


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
