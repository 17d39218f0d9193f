"""Every scorer finishes within its deadline on fuzz and pathological inputs; none raises.

Scorers that run in worker processes (math, code, and any task defining ``_score``) are killed at
``score_deadline_s``; the maze scorer runs in the caller's process because it is linear-time, which
the timings below check on the same inputs.
"""

import os
import time

import numpy as np
import pytest

from passk_jax.tasks.base import fuzz_completions
from passk_jax.tasks.maze import MazeTask

PATHOLOGICAL = [
    "x" * 1_000_000,
    "<answer>" + "L" * 1_000_000 + "</answer>",
    "\\boxed{" * 100_000,
    "{" * 200_000 + "}" * 200_000,
    "<answer>" * 100_000 + "</answer>" * 100_000,
    "\n" * 40_000 + "def f(",
    "(" * 100_000,
    "```python\n" * 20_000,
    "\\boxed{(10^{9999})^{9999}}",
    "\x00\ud7ff\U0010ffff" * 100_000,
]


def test_maze_scorer_is_bounded_in_process():
    task = MazeTask(sizes=5, num_train=4, num_eval=4, seed=0)
    p = task.prompts("eval")[0]
    for s in PATHOLOGICAL:
        start = time.perf_counter()
        assert task.score(p, s) in (0.0, 1.0)
        assert time.perf_counter() - start < min(1.0, task.score_deadline_s)
    strings = fuzz_completions(11, 10_000)
    start = time.perf_counter()
    rewards = task.score_batch([p] * len(strings), strings, workers=2)
    assert time.perf_counter() - start < 30 and set(np.unique(rewards)) <= {0.0, 1.0}
    task.close_scorers()


def test_code_scorer_pathological_completions_within_deadline():
    if os.uname().sysname != "Linux":
        pytest.skip("Linux sandbox")
    from passk_jax.tasks.code import CodeTask, build_program
    from passk_jax.tasks.sandbox import SandboxLimits

    problem = {
        "prompt": 'def add(a, b):\n    """a + b"""\n',
        "tests": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"],
        "entry_point": "add",
        "continuation": True,
    }
    task = CodeTask(
        problems={"train": [problem]},
        limits=SandboxLimits(timeout_s=3.0, cpu_s=3),
        per_test_s=1,
        max_workers=2,
        deadline_s=5.0,
    )
    p = task.prompts("train")[0]
    start = time.perf_counter()
    for s in fuzz_completions(12, 10_000) + PATHOLOGICAL:
        build_program(p.meta["problem"], s)  # the scorer's own text processing: linear
    assert time.perf_counter() - start < 20
    bad = PATHOLOGICAL + ["    return [[[[[[" * 50_000]
    start = time.perf_counter()
    rewards = task.score_batch([p] * len(bad), bad)
    elapsed = time.perf_counter() - start
    assert rewards.tolist() == [0.0] * len(bad)
    assert elapsed <= len(bad) / 2 * (task.score_deadline_s + 1), elapsed
    for s in bad[:3]:
        start = time.perf_counter()
        assert task.score(p, s) == 0.0
        assert time.perf_counter() - start <= task.score_deadline_s + 1.0
    assert task.score(p, "    return a + b\n") == 1.0
    task.close_scorers()
