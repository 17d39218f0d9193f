"""Tests of MATH / GSM8K: JSONL loading, gold and model answer extraction, math-verify equivalence."""

import json
import threading
import time

import numpy as np
import pytest

pytest.importorskip("math_verify")

from passk_jax.tasks import make_task  # noqa: E402
from passk_jax.tasks.base import Task, fuzz_completions  # noqa: E402
from passk_jax.tasks.math_task import (  # noqa: E402
    MathTask,
    _verify_cached,
    extract_model_answer,
    gold_answer,
    is_explosive,
    math_equal,
)

MATH_ROWS = [
    {"problem": "Compute 1/2.", "solution": "It is $\\boxed{\\frac{1}{2}}$.", "level": "Level 1"},
    {"problem": "Solve x^2 = 4 for x > 0.", "solution": "So $x = \\boxed{2}$."},
    {"problem": "Simplify sqrt(8)/2.", "solution": "$\\boxed{\\sqrt{2}}$"},
    {"problem": "Interval?", "solution": "$\\boxed{(0, 1]}$"},
    {"problem": "MATH-500 style", "solution": "long text \\boxed{3}", "answer": "3"},
]
GSM_ROWS = [
    {"question": "Tom has 3 apples and buys 4. How many?", "answer": "3 + 4 = 7\n#### 7"},
    {"question": "Big number?", "answer": "It is 1,234.\n#### 1,234"},
    {"question": "Half of 5?", "answer": "#### 2.5"},
]


def _write(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    d = tmp_path_factory.mktemp("math")
    m = _write(d / "math.jsonl", MATH_ROWS)
    g = _write(d / "gsm.jsonl", GSM_ROWS)
    out = (
        make_task("math", train_path=m, eval_path=m),
        make_task("gsm8k", train_path=g, eval_path=g),
    )
    for t in out:  # start the scorer processes (the first start preloads sympy)
        t.score_batch(t.prompts("eval")[:1], ["0"])
    yield out
    for t in out:
        t.close_scorers()


def test_loading_and_gold(tasks):
    math_task, gsm = tasks
    assert isinstance(math_task, Task) and isinstance(gsm, Task) and gsm.binary
    assert [p.meta["gold"] for p in math_task.prompts("eval")] == [
        "\\frac{1}{2}",
        "2",
        "\\sqrt{2}",
        "(0, 1]",
        "3",
    ]
    assert [p.meta["gold"] for p in gsm.prompts("eval")] == ["7", "1234", "2.5"]
    assert math_task.prompts("train")[0].text.startswith("Compute 1/2.")
    assert gsm.prompts("eval")[1].uid == "gsm8k/eval/000001"
    assert gold_answer({"answer": "no marker"}, "gsm8k") is None


def test_deterministic_shuffle(tmp_path):
    rows = [{"question": f"q{i}", "answer": f"#### {i}"} for i in range(20)]
    path = _write(tmp_path / "g.jsonl", rows)
    a = MathTask("gsm8k", train_path=path, eval_path=path, shuffle_seed=0).prompts("train")
    b = MathTask("gsm8k", train_path=path, eval_path=path, shuffle_seed=0).prompts("train")
    c = MathTask("gsm8k", train_path=path, eval_path=path, shuffle_seed=1).prompts("train")
    assert a == b and [p.text for p in a] != [p.text for p in c]


def test_model_answer_extraction():
    assert extract_model_answer("so \\boxed{\\frac{a}{b}} and \\boxed{7}") == "7"
    assert extract_model_answer("<answer>\\boxed{5}</answer> \\boxed{6}") == "5"
    assert extract_model_answer("<answer> 12 </answer>") == "12"
    assert extract_model_answer("We get 3, then 1,000 apples.") == "1000"
    assert extract_model_answer("#### 42\nextra 9", "gsm8k") == "42"
    assert extract_model_answer("no digits") is None


def test_verifier_good_and_bad(tasks):
    math_task, gsm = tasks
    p = math_task.prompts("eval")
    good = [
        (p[0], "\\boxed{0.5}"),
        (p[0], "The answer is $\\boxed{\\dfrac{1}{2}}$"),
        (p[1], "x = \\boxed{2}"),
        (p[1], "so the answer is 2"),
        (p[2], "\\boxed{2^{1/2}}"),
        (p[3], "\\boxed{(0,1]}"),
        (p[4], "<answer>3</answer>"),
    ]
    bad = [
        (p[0], "\\boxed{0.25}"),
        (p[1], "\\boxed{-2}"),
        (p[2], "\\boxed{2}"),
        (p[3], "\\boxed{[0,1]}"),
        (p[4], "I think 4"),
        (p[0], ""),
    ]
    for prompt, c in good:
        assert math_task.score(prompt, c) == 1.0, c
    for prompt, c in bad:
        assert math_task.score(prompt, c) == 0.0, c
    for prompt in math_task.prompts("eval"):
        assert math_task.score(prompt, prompt.target) == 1.0
    g = gsm.prompts("eval")
    assert [gsm.score(x, x.target) for x in g] == [1.0, 1.0, 1.0]
    assert gsm.score(g[0], "3+4 is 7.") == 1.0 and gsm.score(g[0], "#### 8") == 0.0
    assert gsm.score(g[1], "\\boxed{1234}") == 1.0 and gsm.score(g[2], "5/2 = 2.50") == 1.0


def test_explosive_inputs_are_rejected_fast(tasks):
    math_task, _ = tasks
    p = math_task.prompts("eval")[2]
    for bomb in ["9^{9^{9^{9}}}", "(10^{10^{10}})!", "9^9^9", "2**3**4", "1000000!", "2^{123456}"]:
        assert is_explosive(bomb)
        start = time.perf_counter()
        assert math_task.score(p, f"\\boxed{{{bomb}}}") == 0.0
        assert time.perf_counter() - start < 1.0
    for fine in ["10^{100}", "x^2 + 1", "\\frac{10!}{2}", "e^{i\\pi}"]:
        assert not is_explosive(fine)


def test_works_in_worker_threads(tasks):
    math_task, _ = tasks
    p = math_task.prompts("eval")
    out = {}

    def worker():
        out["r"] = [math_task.score(p[0], "\\boxed{0.5}"), math_task.score(p[2], "\\boxed{3}")]

    t = threading.Thread(target=worker)
    t.start()
    t.join(timeout=60)
    assert out["r"] == [1.0, 0.0]
    assert math_equal("\\frac{1}{2}", "0.5")


def test_missing_tfds_gives_clear_error():
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="tensorflow-datasets"):
            MathTask("gsm8k", source="tfds")
    with pytest.raises(ValueError, match="tfds_name"):
        MathTask("math", source="tfds")


def test_fuzz_10000_strings_never_raise(tasks):
    math_task, gsm = tasks
    strings = fuzz_completions(5, 10_000)
    for task in (math_task, gsm):
        prompts = task.prompts("eval")
        start = time.perf_counter()
        rewards = task.score_batch([prompts[i % len(prompts)] for i in range(10_000)], strings)
        assert time.perf_counter() - start < 60
        assert set(np.unique(rewards)) <= {0.0, 1.0}


class _Unfiltered(MathTask):
    """MathTask without its cheap filters: sympy itself sees the pathological answer."""

    def _score(self, prompt, completion):
        return float(_verify_cached(str(prompt.meta["gold"]), extract_model_answer(completion)))


PATHOLOGICAL = [
    "\\boxed{(10^{9999})^{9999}}",
    "\\boxed{9^{9^{9^{9}}}}",
    "\\boxed{" + "{" * 100_000 + "1" + "}" * 100_000 + "}",
    "\\boxed{" + "(" * 5000 + "1" + ")" * 5000 + "}",
    "1" * 1_000_000,
    "\\boxed{" + "x" * 1_000_000 + "}",
    "<answer>" * 200_000 + "</answer>",
    "\\frac{" * 50_000,
    "9" * 1_000_000 + "!",
]


def test_pathological_inputs_score_zero_within_the_deadline(tmp_path):
    rows = [{"problem": "p", "solution": "\\boxed{2}"}]
    path = _write(tmp_path / "m.jsonl", rows)
    task = MathTask("math", train_path=path, eval_path=path, timeout_s=2.0)
    raw = _Unfiltered("math", train_path=path, eval_path=path, timeout_s=2.0)
    p = task.prompts("eval")[0]
    for t in (task, raw):
        t.score_batch([p], ["2"])  # warm scorer processes
    for t in (task, raw):
        for bomb in PATHOLOGICAL[:2] if t is raw else PATHOLOGICAL:
            start = time.perf_counter()
            assert t.score(p, bomb) == 0.0, bomb[:40]
            elapsed = time.perf_counter() - start
            assert elapsed <= t.score_deadline_s + 1.0, (bomb[:40], elapsed)
    assert raw.score(p, "\\boxed{2}") == 1.0 and task.score(p, "2") == 1.0
    # The same inputs in one batch: every item bounded, the batch finishes.
    start = time.perf_counter()
    rewards = raw.score_batch([p] * 4, PATHOLOGICAL[:2] + ["\\boxed{2}", "3"], workers=2)
    assert rewards.tolist() == [0.0, 0.0, 1.0, 0.0]
    assert time.perf_counter() - start <= 2 * (raw.score_deadline_s + 1.0)
    for t in (task, raw):
        t.close_scorers()
