"""Tests of the reasoning-gym wrapper: seeded splits without overlap, the dataset's scorer, fuzzing."""

import time

import numpy as np
import pytest

pytest.importorskip("reasoning_gym")

from passk_jax.tasks import make_task  # noqa: E402
from passk_jax.tasks.base import Prompt, Task, fuzz_completions  # noqa: E402
from passk_jax.tasks.reasoning_gym_task import ReasoningGymTask, extract_rg_answer  # noqa: E402


@pytest.fixture(scope="module")
def task():
    return make_task("reasoning_gym", dataset="chain_sum", seed=0, num_train=100, num_eval=30)


def test_deterministic_and_seed_dependent(task):
    assert isinstance(task, Task)
    again = ReasoningGymTask("chain_sum", seed=0, num_train=100, num_eval=30)
    other = ReasoningGymTask("chain_sum", seed=1, num_train=100, num_eval=30)
    for split in ("train", "eval"):
        assert [p.text for p in task.prompts(split)] == [p.text for p in again.prompts(split)]
        assert not {p.text for p in task.prompts(split)} & {p.text for p in other.prompts(split)}
    assert len(task.prompts("train")) == 100 and len(task.prompts("eval", 5)) == 5
    assert task.prompts("eval")[2].uid == "reasoning_gym/chain_sum/eval/000002"


def test_train_and_eval_do_not_overlap():
    # A small question space (one-digit sums of two terms) forces duplicates; train drops them.
    cfg = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
    t = ReasoningGymTask("chain_sum", seed=0, num_train=50, num_eval=20, config=cfg)
    train = [p.text for p in t.prompts("train")]
    assert len(train) == 50 and not set(train) & {p.text for p in t.prompts("eval")}


def test_scorer_accepts_good_and_rejects_bad(task):
    for p in task.prompts("eval", 10):
        assert task.score(p, p.target) == 1.0
        assert task.score(p, f"thinking...<answer>{p.target}</answer>") == 1.0
        assert task.score(p, f"<answer>{int(p.target) + 1}</answer>") == 0.0
        assert task.score(p, f"<answer>{p.target}</answer> <answer>nope</answer>") == 0.0
    assert extract_rg_answer("a <answer> 7 </answer>") == "7"
    assert extract_rg_answer("raw 7") == "raw 7"
    assert not task.binary


def test_continuous_rewards_and_clamping(task):
    p = task.prompts("eval")[0]
    # The default reasoning-gym scorer gives partial credit when the answer is contained.
    r = task.score(p, f"<answer>x{p.target}</answer>")
    assert 0.0 < r < 1.0
    broken = Prompt(text="", target=None, meta={"entry": None}, uid="x")
    assert task.score(broken, "1") == 0.0


def test_fuzz_10000_strings_never_raise(task):
    prompts = task.prompts("eval")
    strings = fuzz_completions(1, 10_000)
    start = time.perf_counter()
    rewards = task.score_batch([prompts[i % len(prompts)] for i in range(10_000)], strings)
    assert time.perf_counter() - start < 20
    assert rewards.shape == (10_000,) and np.all((rewards >= 0) & (rewards <= 1))
