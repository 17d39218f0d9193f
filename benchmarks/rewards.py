"""Reward throughput: completions scored per second for maze, math and code, serial vs parallel.

Contenders, per task, on the same completions:

* ``serial``: the task's own scorer called in this process, one completion after the other (no
  deadline: what scoring cost before scorers ran in worker processes);
* ``pool x1``: ``task.score_batch(..., workers=1)``: one scorer process, enforced deadlines;
* ``pool xN``: ``task.score_batch(..., workers=N)`` with N = the CPU count (the RL loop's default).

Workloads (synthetic, deterministic): maze: 2048 completions on 5x5 mazes (reference paths and
corrupted ones); math: 512 distinct answers (``\\boxed`` fractions, decimals, roots; ~half correct),
math-verify equivalence; code: 48 MBPP-style completions (correct, wrong, crashing) each run in the
sandbox at full isolation with a function server and 3 unit tests.

Timing: one warm-up round (scorer processes started, sympy imported), then ``--rounds`` rounds that
run the three contenders in turn (same background load); the table reports the median rate. math-
verify results are memoised per (gold, answer), so every round scores fresh answers. Writes the table
to ``benchmarks/results/rewards.md``.

Run::

    .venv/bin/python benchmarks/rewards.py            # ~2-4 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

from passk_jax.tasks.code import CodeTask
from passk_jax.tasks.math_task import MathTask
from passk_jax.tasks.maze import MazeTask
from passk_jax.tasks.sandbox import SandboxLimits


def maze_workload(n: int):
    task = MazeTask(sizes=5, num_train=64, num_eval=64, seed=0)
    prompts = task.prompts("eval")
    ps, cs = [], []
    for i in range(n):
        p = prompts[i % len(prompts)]
        ps.append(p)
        cs.append(p.target if i % 2 else f"<answer>{'LR' * (i % 7)}U</answer>")
    return task, lambda _round: (ps, cs)


def math_workload(n: int, tmp: str):
    import json

    rows = []
    for i in range(64):
        a, b = i + 2, 2 * i + 3
        rows.append({"problem": f"q{i}", "solution": f"$\\boxed{{\\frac{{{a}}}{{{b}}}}}$"})
    path = os.path.join(tmp, "math.jsonl")
    with open(path, "w") as f:
        f.write("\n".join(json.dumps(r) for r in rows) + "\n")
    task = MathTask("math", train_path=path, eval_path=path)
    prompts = task.prompts("eval")

    def make(round_):
        ps, cs = [], []
        for i in range(n):
            k = i % len(prompts)
            a, b = k + 2, 2 * k + 3
            scale = 7 + round_ * n + i  # fresh answers every round (math-verify memoises)
            forms = [
                f"\\boxed{{\\frac{{{a * scale}}}{{{b * scale}}}}}",  # correct, not reduced
                f"\\boxed{{\\frac{{{a * scale + 1}}}{{{b * scale}}}}}",  # wrong
                f"\\boxed{{\\sqrt{{{scale}}} - \\sqrt{{{scale}}} + \\frac{{{a}}}{{{b}}}}}",  # correct
                f"\\boxed{{{scale}.5}}",  # wrong, numeric
            ]
            ps.append(prompts[k])
            cs.append(forms[i % len(forms)])
        return ps, cs

    return task, make


CODE_PROBLEMS = [
    {
        "text": "square",
        "code": "def sq(x):\n    return x * x",
        "test_list": ["assert sq(2) == 4", "assert sq(3) == 9", "assert sq(-1) == 1"],
    },
    {
        "text": "reverse",
        "code": "def rev(s):\n    return s[::-1]",
        "test_list": ["assert rev('ab') == 'ba'", "assert rev('') == ''", "assert rev('x') == 'x'"],
    },
    {
        "text": "sum of list",
        "code": "def total(xs):\n    return sum(xs)",
        "test_list": [
            "assert total([1, 2]) == 3",
            "assert total([]) == 0",
            "assert total([5]) == 5",
        ],
    },
]
CODE_VARIANTS = [
    lambda p: p["code"],
    lambda p: p["code"].replace("return", "return 1 +"),
    lambda p: "def nothing():\n    pass\n",
    lambda p: p["code"] + "\nprint('x' * 100000)\n",
]


def code_workload(n: int):
    task = CodeTask(
        problems={"train": CODE_PROBLEMS}, limits=SandboxLimits(timeout_s=10.0, cpu_s=5)
    )
    prompts = task.prompts("train")
    ps, cs = [], []
    for i in range(n):
        k = i % len(prompts)
        ps.append(prompts[k])
        cs.append(CODE_VARIANTS[(i // len(prompts)) % len(CODE_VARIANTS)](CODE_PROBLEMS[k]))
    return task, lambda _round: (ps, cs)


def serial(task, ps, cs):
    return np.asarray([task._score(p, c) for p, c in zip(ps, cs, strict=True)], np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--maze", type=int, default=2048)
    parser.add_argument("--math", type=int, default=512)
    parser.add_argument("--code", type=int, default=48)
    parser.add_argument(
        "--out", default=os.path.join(os.path.dirname(__file__), "results", "rewards.md")
    )
    args = parser.parse_args()
    import tempfile

    workers = os.cpu_count() or 1
    tmp = tempfile.mkdtemp()
    workloads = {
        "maze": maze_workload(args.maze),
        "math": math_workload(args.math, tmp),
        "code": code_workload(args.code),
    }
    contenders = {
        "serial": serial,
        "pool x1": lambda t, ps, cs: t.score_batch(ps, cs, workers=1),
        f"pool x{workers}": lambda t, ps, cs: t.score_batch(ps, cs, workers=workers),
    }
    rates: dict[tuple[str, str], list[float]] = {}
    agree: dict[str, bool] = {}
    for name, (task, make) in workloads.items():
        ps, cs = make(-1)
        for fn in contenders.values():  # warm-up: scorer processes started, imports done
            fn(task, ps[: max(4, workers)], cs[: max(4, workers)])
        results = {}
        for r in range(args.rounds):
            for cname, fn in contenders.items():
                ps, cs = make(r * len(contenders) + list(contenders).index(cname))
                start = time.perf_counter()
                out = fn(task, ps, cs)
                rates.setdefault((name, cname), []).append(len(ps) / (time.perf_counter() - start))
                results[cname] = out
        vals = [np.asarray(v) for v in results.values()]
        agree[name] = all(np.array_equal(vals[0], v) for v in vals[1:])
        print(name, {k: round(statistics.median(v), 1) for (t, k), v in rates.items() if t == name})
        task.close_scorers()
    load = os.getloadavg()
    lines = [
        "# Reward throughput (`benchmarks/rewards.py`)",
        "",
        f"Machine: {platform.machine()}, {workers} CPU cores (shared), Python "
        f"{platform.python_version()}; load average at the end {load[0]:.1f} / {load[1]:.1f} / "
        f"{load[2]:.1f} (1 / 5 / 15 min). Completions scored per second, median of {args.rounds} "
        "interleaved rounds; speed-up relative to `serial`.",
        "",
        "| task | completions | " + " | ".join(contenders) + f" | x{workers} / serial |",
        "|---|---|" + "---|" * (len(contenders) + 1),
    ]
    sizes = {"maze": args.maze, "math": args.math, "code": args.code}
    for name in workloads:
        med = [statistics.median(rates[(name, c)]) for c in contenders]
        lines.append(
            f"| {name} | {sizes[name]} | "
            + " | ".join(f"{m:,.1f}" for m in med)
            + f" | {med[-1] / med[0]:.2f}x |"
        )
    lines += [
        "",
        "Same rewards from every contender: "
        + ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in agree.items() if k != "math")
        + " (math is not compared: each call scores fresh answers, math-verify memoises).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
