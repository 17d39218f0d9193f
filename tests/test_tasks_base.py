"""Tests of the shared task machinery: registry, extraction helpers, safe rewards, timeouts."""

import math
import signal
import threading
import time

import pytest

from passk_jax.tasks import TASKS, make_task
from passk_jax.tasks.base import (
    ScoreTimeout,
    alarm_timeout,
    extract_answer,
    extract_answer_tag,
    extract_boxed,
    fuzz_completions,
    safe_reward,
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
