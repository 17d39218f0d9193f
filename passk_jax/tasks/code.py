"""Python coding problems (MBPP / HumanEval style) with PKPO's reward: the fraction of unit tests passed.

Model code runs **only** in the sandbox of :mod:`passk_jax.tasks.sandbox` (separate process, resource
limits, no network, private temporary directory, unprivileged uid, read-only filesystem elsewhere).

Data: JSONL files, one problem per line, in any of three layouts (detected per row):

* HumanEval: ``prompt`` (signature + docstring), ``test`` (defines ``check(candidate)``),
  ``entry_point``. Every top-level statement of ``check`` that contains an ``assert`` is one unit test;
  the other statements, and the rest of ``test``, are setup. ``candidate`` is bound to the entry point.
* MBPP: ``text`` (or ``prompt``), ``test_list`` (one assert per test), optional ``test_setup_code``
  and ``code`` (the reference solution, used as ``target``). The prompt shows the first test.
* Generic: ``prompt``, ``tests`` (list of statements), optional ``setup``, ``entry_point``,
  ``solution``.

Extraction: the last fenced code block (```` ```python ... ``` ````, an unclosed last fence runs to
the end), else the raw completion. If the problem has an entry point that the extracted code does not
define, the code is treated as a continuation of the prompt (HumanEval style) and appended to it.

Harness: the program executes the solution, then each test in its own ``try`` (with a per-test
``signal.alarm``), printing a line with a per-run random nonce for every test that passes; the reward is
``passed / total``. Tests that ran before a crash or timeout keep their credit. Limitation: the
solution runs in the same interpreter as the harness, so a deliberately adversarial solution could
find the nonce and forge passes; this guards against accidents, not against reward hacking.
"""

from __future__ import annotations

import ast
import concurrent.futures
import json
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from passk_jax.tasks.base import Prompt, TaskBase, safe_reward
from passk_jax.tasks.sandbox import SandboxLimits, SandboxResult, run_python

__all__ = [
    "DEFAULT_LIMITS",
    "CodeTask",
    "build_program",
    "count_passed",
    "extract_code",
    "problem_from_row",
    "run_tests",
]

DEFAULT_LIMITS = SandboxLimits(timeout_s=10.0, cpu_s=10)
_FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)
_HARNESS = """
import signal as __passk_signal
def __passk_alarm(signum, frame):
    raise TimeoutError("test timed out")
__passk_signal.signal(__passk_signal.SIGALRM, __passk_alarm)
__passk_tests = {tests}
__passk_ns = {{"__name__": "__main__"}}
try:
    exec(compile({setup}, "setup.py", "exec"), __passk_ns)
    exec(compile({solution}, "solution.py", "exec"), __passk_ns)
    __passk_ok = True
except BaseException:
    __passk_ok = False
if __passk_ok:
    if {entry_point} is not None and {entry_point} in __passk_ns:
        __passk_ns["candidate"] = __passk_ns[{entry_point}]
    for __passk_i, __passk_src in enumerate(__passk_tests):
        try:
            __passk_signal.alarm({per_test_s})
            exec(compile(__passk_src, "test_%d.py" % __passk_i, "exec"), __passk_ns)
            __passk_signal.alarm(0)
            print("\\n{nonce} PASS %d" % __passk_i, flush=True)
        except BaseException:
            __passk_signal.alarm(0)
"""


def extract_code(completion: str) -> str:
    """The last fenced code block of ``completion`` (unclosed last fence: to the end), else the text."""
    if not isinstance(completion, str):
        return ""
    blocks = _FENCE.findall(completion)
    return blocks[-1] if blocks else completion


def _defines(code: str, name: str) -> bool:
    return (
        re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(name)}\s*\(", code, re.MULTILINE) is not None
    )


def _split_check(test_code: str) -> tuple[str, list[str]]:
    """HumanEval ``test`` source -> (setup source, one source string per assert-bearing statement)."""
    module = ast.parse(test_code)
    setup_nodes, tests = [], []
    for node in module.body:
        if isinstance(node, ast.FunctionDef) and node.name == "check":
            body_setup = []
            for stmt in node.body:
                if any(isinstance(n, ast.Assert) for n in ast.walk(stmt)):
                    tests.append(ast.unparse(stmt))
                else:
                    body_setup.append(ast.unparse(stmt))
            setup_nodes.append("\n".join(body_setup))
        else:
            setup_nodes.append(ast.unparse(node))
    return "\n".join(setup_nodes), tests


def problem_from_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Normalise one JSONL row to ``{prompt, tests, setup, entry_point, solution}``."""
    if "test" in row and "entry_point" in row:  # HumanEval
        setup, tests = _split_check(row["test"])
        # check() bodies may use names bound by the test module (e.g. METADATA) and "candidate".
        return {
            "prompt": row["prompt"],
            "tests": tests,
            "setup": setup,
            "entry_point": row["entry_point"],
            "solution": row["prompt"] + row["canonical_solution"]
            if "canonical_solution" in row
            else None,
            "continuation": True,
        }
    if "test_list" in row:  # MBPP
        tests = list(row["test_list"])
        text = row.get("text", row.get("prompt", ""))
        prompt = f"{text}\nYour code should pass this test:\n{tests[0]}\n" if tests else text
        return {
            "prompt": prompt,
            "tests": tests,
            "setup": row.get("test_setup_code", "") or "",
            "entry_point": None,
            "solution": row.get("code"),
            "continuation": False,
        }
    return {
        "prompt": row["prompt"],
        "tests": list(row["tests"]),
        "setup": row.get("setup", "") or "",
        "entry_point": row.get("entry_point"),
        "solution": row.get("solution"),
        "continuation": bool(row.get("continuation", False)),
    }


def build_program(
    problem: Mapping[str, Any], completion: str, nonce: str, per_test_s: int = 5
) -> str:
    """The sandbox program: setup, the extracted solution, then every test under its own ``try``."""
    code = extract_code(completion)
    entry = problem.get("entry_point")
    if entry and not _defines(code, entry):
        code = problem["prompt"] + completion  # HumanEval continuation of the signature
    return _HARNESS.format(
        tests=repr(list(problem["tests"])),
        setup=repr(problem.get("setup", "") or ""),
        solution=repr(code),
        entry_point=repr(entry),
        per_test_s=int(per_test_s),
        nonce=nonce,
    )


def count_passed(stdout: str, nonce: str, num_tests: int) -> int:
    """Distinct test indices reported as passed with ``nonce`` in ``stdout``."""
    passed = set()
    for m in re.finditer(rf"^{re.escape(nonce)} PASS (\d+)$", stdout, re.MULTILINE):
        i = int(m.group(1))
        if 0 <= i < num_tests:
            passed.add(i)
    return len(passed)


def run_tests(
    problem: Mapping[str, Any],
    completion: str,
    limits: SandboxLimits = DEFAULT_LIMITS,
    per_test_s: int = 5,
) -> tuple[float, SandboxResult | None]:
    """Run ``completion`` against ``problem``'s tests in the sandbox; ``(fraction passed, result)``."""
    tests = list(problem["tests"])
    if not tests or not isinstance(completion, str) or not completion.strip():
        return 0.0, None
    nonce = secrets.token_hex(16)
    result = run_python(build_program(problem, completion, nonce, per_test_s), limits)
    return count_passed(result.stdout, nonce, len(tests)) / len(tests), result


class CodeTask(TaskBase):
    """Coding problems from JSONL, rewarded by the fraction of unit tests passed in the sandbox."""

    binary = False
    alphabet = None

    def __init__(
        self,
        train_path: str | os.PathLike | None = None,
        eval_path: str | os.PathLike | None = None,
        name: str = "code",
        limits: SandboxLimits = DEFAULT_LIMITS,
        per_test_s: int = 5,
        max_workers: int | None = None,
        problems: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    ):
        """Build the task.

        Args:
          train_path, eval_path: JSONL files (e.g. MBPP for train, HumanEval for eval, as PKPO).
          name: task name used in uids.
          limits: sandbox limits of one scoring run.
          per_test_s: ``signal.alarm`` seconds per unit test inside the sandbox.
          max_workers: parallel sandboxes in ``score_batch`` (default: CPU count).
          problems: rows given directly, ``{"train": [...], "eval": [...]}`` (instead of files).
        """
        self.name = name
        self.limits, self.per_test_s = limits, int(per_test_s)
        self.max_workers = max_workers or os.cpu_count() or 1
        rows: dict[str, list[Mapping[str, Any]]] = {"train": [], "eval": []}
        for split, path in (("train", train_path), ("eval", eval_path)):
            if path is not None:
                with open(path, encoding="utf-8") as f:
                    rows[split] = [json.loads(line) for line in f if line.strip()]
        for split, given in (problems or {}).items():
            rows[split] = list(given)
        self._prompts = {split: self._make(split, r) for split, r in rows.items()}

    def _make(self, split: str, rows: Sequence[Mapping[str, Any]]) -> list[Prompt]:
        out = []
        for i, row in enumerate(rows):
            problem = problem_from_row(row)
            solution = problem["solution"]
            if solution is not None and problem.get("continuation"):
                solution = solution[len(problem["prompt"]) :]
            out.append(
                Prompt(
                    text=problem["prompt"],
                    target=solution,
                    meta={"problem": problem},
                    uid=f"{self.name}/{split}/{i:06d}",
                )
            )
        return out

    def _split(self, split: str) -> Sequence[Prompt]:
        return self._prompts[split]

    def score(self, prompt: Prompt, completion: str) -> float:
        """Fraction of the prompt's unit tests that ``completion`` passes in the sandbox."""
        return safe_reward(
            lambda: run_tests(prompt.meta["problem"], completion, self.limits, self.per_test_s)[0]
        )

    def score_batch(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> np.ndarray:
        """Score pairs in parallel sandboxes (``max_workers`` at a time)."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        with concurrent.futures.ThreadPoolExecutor(self.max_workers) as pool:
            rewards = list(pool.map(self.score, prompts, completions))
        return np.asarray(rewards, dtype=np.float32)
