"""Tests of the shared task machinery: registry, extraction helpers, safe rewards, timeouts."""

import math
import os
import re
import signal
import threading
import time

import numpy as np
import pytest

from passk_jax.tasks import TASKS, make_task
from passk_jax.tasks.base import (
    Prompt,
    ScorerConfigError,
    ScoreTimeout,
    TaskBase,
    alarm_timeout,
    extract_answer,
    extract_answer_tag,
    extract_boxed,
    fuzz_completions,
    safe_reward,
    score_batch_serial,
)


def test_registry_names():
    assert set(TASKS) == {"maze", "reasoning_gym", "arc", "math", "gsm8k", "code"}
    with pytest.raises(ValueError, match="unknown task"):
        make_task("nope")


def test_extraction_helpers():
    assert extract_answer_tag("<answer>a</answer><answer>b</answer>") == "b"
    assert extract_answer_tag("<answer>a") is None and extract_answer_tag("a</answer>") is None
    assert extract_answer_tag("</answer><answer>x") is None  # no opening tag before the last close
    assert extract_boxed("\\boxed{1} \\boxed {a{b}{c}}") == "a{b}{c}"
    assert extract_boxed("\\boxed{open") is None and extract_boxed("none") is None
    assert extract_answer("x \\boxed{y}") == "y" and extract_answer("plain") == "plain"
    assert extract_answer(None) == ""


def test_safe_reward():
    assert safe_reward(lambda: 0.25) == 0.25
    assert safe_reward(lambda: 7) == 1.0 and safe_reward(lambda: -3) == 0.0
    assert safe_reward(lambda: math.nan) == 0.0 and safe_reward(lambda: None) == 0.0
    assert safe_reward(lambda: "abc") == 0.0
    assert safe_reward(lambda: 1 / 0) == 0.0

    def deep(n=0):
        return deep(n + 1)

    assert safe_reward(deep) == 0.0  # RecursionError
    # An infinite "score" is a failure, not a full reward.
    assert safe_reward(lambda: math.inf) == 0.0 and safe_reward(lambda: -math.inf) == 0.0
    # Unclamped (continuous plug-in rewards) and a chosen failure value.
    assert safe_reward(lambda: 7.5, None) == 7.5 and safe_reward(lambda: -3, None) == -3.0
    assert safe_reward(lambda: 1 / 0, None, on_error=-1.0) == -1.0
    assert safe_reward(lambda: math.inf, (0.0, 1.0), on_error=-2.0) == -2.0


def test_alarm_timeout_main_thread_and_threads():
    start = time.perf_counter()
    with pytest.raises(ScoreTimeout):
        with alarm_timeout(0.2):
            while True:
                pass
    assert time.perf_counter() - start < 2
    assert signal.getitimer(signal.ITIMER_REAL)[0] == 0.0
    with alarm_timeout(1.0):
        pass  # no exception, timer cleared
    assert signal.getitimer(signal.ITIMER_REAL)[0] == 0.0
    out = []
    t = threading.Thread(target=lambda: out.append(_run_in_thread()))
    t.start()
    t.join()
    assert out == ["ran"]


def _run_in_thread():
    with alarm_timeout(0.1):  # silently no limit outside the main thread
        return "ran"


def test_fuzz_generator_is_deterministic():
    a, b = fuzz_completions(0, 100), fuzz_completions(0, 100)
    assert a == b and a != fuzz_completions(1, 100)
    assert any("<answer>" in s for s in a) and any("\\boxed" in s for s in a)


class _Hanging(TaskBase):
    """A task whose scorer hangs on some inputs (pure Python, or inside C code)."""

    name = "hanging"
    score_deadline_s = 2.0  # generous: the CI machine is shared

    def _split(self, split):
        return [Prompt(text="p", target=None, meta={}, uid="hanging/0")]

    def _score(self, prompt, completion):
        if completion == "loop":
            while True:
                pass
        if completion == "c-regex":  # catastrophic backtracking inside the C regex engine
            return float(re.match(r"(a+)+$", "a" * 64 + "b") is not None)
        if completion == "config":
            raise ScorerConfigError("no sandbox here")
        if completion == "die":
            os._exit(3)
        return 1.0


def test_score_batch_enforces_deadlines_in_parallel():
    task = _Hanging()
    p = task.prompts("train")[0]
    task.score_batch([p], ["warm"])  # start the scorer processes outside the timing
    items = ["ok", "loop", "ok", "c-regex", "die", "ok"]
    start = time.perf_counter()
    rewards = task.score_batch([p] * len(items), items, workers=2)
    elapsed = time.perf_counter() - start
    np.testing.assert_array_equal(rewards, [1, 0, 1, 0, 0, 1])
    assert rewards.dtype == np.float32
    assert elapsed < 2 * (task.score_deadline_s + 1) + 1, elapsed  # two overruns, in parallel
    for bad in ("loop", "c-regex"):  # one call: at most the deadline plus 1 s
        start = time.perf_counter()
        assert task.score(p, bad) == 0.0
        assert time.perf_counter() - start <= task.score_deadline_s + 1.0
    assert task.score(p, "ok") == 1.0
    task.score_batch([p, p], ["ok", "ok"], workers=2)  # replacements started (busy machines)
    with pytest.raises(ScorerConfigError, match="no sandbox"):
        task.score_batch([p, p], ["ok", "config"])
    with pytest.raises(ValueError, match="prompts but"):
        task.score_batch([p], ["a", "b"])
    assert task.score_batch([], []).shape == (0,)
    task.close_scorers()


def test_parallel_equals_serial_on_a_real_task():
    from passk_jax.tasks.maze import MazeTask

    maze = MazeTask(sizes=5, num_train=8, num_eval=8, seed=0)
    prompts = maze.prompts("eval") * 4
    completions = [p.target if i % 3 else "<answer>LL</answer>" for i, p in enumerate(prompts)]
    serial = score_batch_serial(maze, prompts, completions)
    parallel = maze.score_batch(prompts, completions, workers=2)
    np.testing.assert_array_equal(serial, parallel)
    assert 0 < parallel.sum() < len(prompts)
    # The scorer processes are started once per task and reused by later calls (they were once
    # re-created on every call).
    pool = maze.__dict__["_scorer_pool"]
    pids = sorted(w.proc.pid for w in pool._workers)
    np.testing.assert_array_equal(maze.score_batch(prompts, completions, workers=2), serial)
    assert maze.__dict__["_scorer_pool"] is pool
    assert sorted(w.proc.pid for w in pool._workers) == pids
    maze.close_scorers()
    assert "_scorer_pool" not in maze.__dict__


def test_subset_task_restricts_train_and_adds_splits(tmp_path):
    """``task.subset`` (dict or JSON path): train = the chosen uids in order, named subsets become
    splits, scoring is the base task's, and a uid outside the train pool is refused by name."""
    import json

    import ml_collections

    from passk_jax.tasks import build_task

    base = make_task("maze", sizes=(5,), num_train=40, num_eval=4, num_hard=4, seed=3)
    pool = base.prompts("train")
    chosen = [pool[7].uid, pool[2].uid, pool[30].uid]
    spec = {"train": chosen, "splits": {"hard_subset": chosen[:2]}}
    path = tmp_path / "subset.json"
    path.write_text(json.dumps(spec))
    for subset in (spec, str(path)):
        cfg = ml_collections.ConfigDict(
            {
                "name": "maze",
                "kwargs": {"sizes": (5,), "num_train": 40, "num_eval": 4, "num_hard": 4, "seed": 3},
                "subset": subset,
            }
        )
        task = build_task(cfg)
        assert [p.uid for p in task.prompts("train")] == chosen
        assert [p.uid for p in task.prompts("hard_subset")] == chosen[:2]
        assert [p.uid for p in task.prompts("eval")] == [p.uid for p in base.prompts("eval")]
        assert "hard_subset" in task.splits and task.binary and task.alphabet == base.alphabet
        p = task.prompts("train")[0]
        assert task.score(p, p.target) == 1.0 and task.score(p, "") == 0.0
        assert list(task.score_batch([p, p], [p.target, "LLLL"])) == [1.0, 0.0]
    from passk_jax.tasks.plugins import SubsetTask

    with pytest.raises(ValueError, match="nope"):
        SubsetTask(base, [pool[0].uid, "nope"])
    with pytest.raises(ValueError, match="empty"):
        SubsetTask(base, [])
    with pytest.raises(ValueError, match="already exists"):
        SubsetTask(base, [pool[0].uid], {"eval": [pool[1].uid]})
    with pytest.raises(ValueError, match="more than once"):
        SubsetTask(base, [pool[0].uid, pool[1].uid, pool[0].uid])
    bad = ml_collections.ConfigDict({"name": "maze", "kwargs": cfg.kwargs, "subset": {"hard": []}})
    with pytest.raises(ValueError, match="'train'"):
        build_task(bad)
