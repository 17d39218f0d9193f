"""Tests of the code task: test splitting, extraction, fractional rewards in the sandbox, fuzzing."""

import json
import time

import numpy as np
import pytest

from passk_jax.tasks import make_task
from passk_jax.tasks.base import Task, fuzz_completions
from passk_jax.tasks.code import (
    CandidateError,
    CodeTask,
    _defines,
    build_program,
    decode_value,
    encode_value,
    extract_code,
    problem_from_row,
)
from passk_jax.tasks.sandbox import SandboxLimits

HUMANEVAL = {
    "task_id": "Toy/0",
    "prompt": 'def add(a, b):\n    """Return a + b."""\n',
    "canonical_solution": "    return a + b\n",
    "entry_point": "add",
    "test": (
        "METADATA = {'author': 'toy'}\n\n\ndef check(candidate):\n"
        "    assert candidate(1, 2) == 3\n    assert candidate(0, 0) == 0\n"
        "    assert candidate(-1, 1) == 0\n    assert candidate(2, 2) == 4\n"
    ),
}
MBPP = {
    "task_id": 1,
    "text": "Write a function sq(x) that squares x.",
    "code": "def sq(x):\n    return x * x",
    "test_list": ["assert sq(2) == 4", "assert sq(3) == 9"],
    "test_setup_code": "",
}
LIMITS = SandboxLimits(timeout_s=5.0, cpu_s=3)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    d = tmp_path_factory.mktemp("code")
    (d / "mbpp.jsonl").write_text(json.dumps(MBPP) + "\n")
    (d / "he.jsonl").write_text(json.dumps(HUMANEVAL) + "\n")
    return make_task(
        "code", train_path=d / "mbpp.jsonl", eval_path=d / "he.jsonl", limits=LIMITS, max_workers=2
    )


def test_problem_parsing_and_determinism(task):
    he = problem_from_row(HUMANEVAL)
    assert he["tests"] == [
        "assert candidate(1, 2) == 3",
        "assert candidate(0, 0) == 0",
        "assert candidate(-1, 1) == 0",
        "assert candidate(2, 2) == 4",
    ]
    assert "METADATA" in he["setup"]
    mb = problem_from_row(MBPP)
    assert mb["tests"] == MBPP["test_list"] and "assert sq(2) == 4" in mb["prompt"]
    again = CodeTask(problems={"train": [MBPP], "eval": [HUMANEVAL]})
    assert again.prompts("eval")[0].text == task.prompts("eval")[0].text
    assert task.prompts("eval")[0].uid == "code/eval/000000"
    assert not task.binary and isinstance(task, Task)


def test_extract_code():
    assert extract_code("text\n```python\nx = 1\n```\nmore\n```py\ny = 2\n```") == "y = 2\n"
    assert extract_code("```python\nz = 3\n") == "z = 3\n"  # unclosed last fence
    assert extract_code("plain = 1") == "plain = 1"


def test_rewards_are_fraction_of_tests_passed(task):
    he, mb = task.prompts("eval")[0], task.prompts("train")[0]
    half = "```python\ndef add(a, b):\n    return a + b if a > 0 else 999\n```"
    cases = [
        (he, he.target, 1.0),  # continuation of the signature
        (he, "```python\ndef add(a, b):\n    return b + a\n```", 1.0),  # full function
        (he, half, 0.5),
        (he, "    return 0\n", 0.5),
        (mb, mb.target, 1.0),
        (mb, "def sq(x):\n    return 4", 0.5),
        (mb, "def sq(x):\n    raise ValueError", 0.0),
        (mb, "this is not python (((", 0.0),
        (mb, "import sys\nsys.exit(0)", 0.0),
        (mb, "import os\nos._exit(0)", 0.0),
        (mb, "", 0.0),
    ]
    rewards = task.score_batch([p for p, _, _ in cases], [c for _, c, _ in cases])
    np.testing.assert_allclose(rewards, [r for _, _, r in cases])


def test_partial_credit_survives_a_hanging_test():
    problem = {
        "prompt": "",
        "tests": ["assert f(1) == 1", "assert f(2) == 2", "assert f(3) == 3"],
        "setup": "",
        "entry_point": None,
    }
    t = CodeTask(problems={"train": [problem]}, limits=SandboxLimits(timeout_s=4.0), per_test_s=1)
    code = "def f(x):\n    while x == 2:\n        pass\n    return x\n"
    assert t.score(t.prompts("train")[0], code) == pytest.approx(2 / 3)


def test_values_cross_as_data_only():
    for v in [
        None,
        True,
        0,
        -(2**80),
        1.5,
        float("inf"),
        1 + 2j,
        "s",
        b"\x00",
        [1, (2, {3})],
        {"k": frozenset({1})},
        {(1, 2): [None]},
    ]:
        back = decode_value(encode_value(v))
        assert back == v and type(back) is type(v)
    assert decode_value(encode_value(True)) is True
    for bad in [["x"], ["d", [1]], ["s", ["l"]], {"a": 1}, ["f", "nope"], 1.5]:
        with pytest.raises(CandidateError):
            decode_value(bad)
    deep = 1
    for _ in range(1000):
        deep = ["l", deep]
    with pytest.raises(CandidateError):
        decode_value(deep)
    with pytest.raises(TypeError):
        encode_value(object())


def test_candidate_exceptions_and_argument_mutation(task):
    problem = {
        "prompt": "",
        "tests": [
            "try:\n    f(-1)\n    assert False\nexcept ValueError:\n    pass",
            "xs = [3, 1, 2]\nf(xs)\nassert xs == [1, 2, 3]",
            "assert list(g(3)) == [0, 1, 2]",
            "assert h('aab') == {'a': 2, 'b': 1} and type(h('a')) is dict",  # Counter arrives a dict
        ],
        "setup": "",
        "entry_point": None,
    }
    code = (
        "def f(x):\n    if x == -1:\n        raise ValueError('neg')\n    x.sort()\n"
        "def g(n):\n    yield from range(n)\n"
        "import collections\ndef h(s):\n    return collections.Counter(s)\n"
    )
    he_setup = {
        "prompt": "def g(n):\n",
        "entry_point": "g",
        "test": "def check(candidate):\n    out = list(candidate(2))\n    assert out == [0, 1]\n",
    }
    t = CodeTask(problems={"train": [problem, he_setup]}, limits=LIMITS, max_workers=1)
    ps = t.prompts("train")
    assert t.score(ps[0], code) == 1.0
    assert t.score(ps[1], "    yield from range(n)\n") == 1.0  # setup statements call it too
    assert t.score(ps[1], "    yield 7\n") == 0.0
    t.close_scorers()


def test_defines_is_linear_on_blank_lines():
    code = "\n" * 40_000 + "def add(a, b):\n    return a + b\n"
    start = time.perf_counter()
    assert _defines(code, "add") and not _defines("\n" * 40_000, "add")
    assert _defines("    async   def add (x):", "add") and not _defines("# def add(", "add")
    assert time.perf_counter() - start < 0.5


def test_fuzz_10000_strings_build_and_sample_run(task):
    """The pure-Python part sees 10,000 strings; a sample also runs in the sandbox."""
    strings = fuzz_completions(3, 10_000)
    problem = task.prompts("eval")[0].meta["problem"]
    start = time.perf_counter()
    for s in strings:
        extract_code(s)
        build_program(problem, s)
    assert time.perf_counter() - start < 10
    sample = strings[:16]
    rewards = task.score_batch([task.prompts("eval")[0]] * len(sample), sample)
    assert rewards.shape == (16,) and np.all((rewards >= 0) & (rewards <= 1))


@pytest.mark.slow
def test_fuzz_sandbox_500_strings(task):
    strings = fuzz_completions(4, 500)
    rewards = task.score_batch([task.prompts("train")[0]] * len(strings), strings)
    assert np.all((rewards >= 0) & (rewards <= 1))
