"""The whole RL step: its time split (sample / score / learn / eval) and the driver's speed-up.

Runs ``python -m passk_jax.main`` on ``passk_jax/configs/maze_tiny.py`` (the demo's model: 3 layers,
D = 64; 16 prompts x 16 samples x 16 new tokens per step; random initial weights, no warm start:
the step's cost does not depend on the rewards) in fresh processes, interleaving round by round:

* **previous**: the driver as of ``--baseline`` (default: the commit before the learner step moved on
  device), extracted with ``git archive`` into a temporary directory and run from there;
* **current**: this tree's driver (pipelined: step t's metrics are fetched after step t + 1 is
  dispatched);
* **current, synchronised**: the same with ``rl.sync_timing = True``, which blocks after the learner
  step so that sample / score / learn can be timed apart (the split table).

Each run does ``--steps`` RL steps with one evaluation and one checkpoint at the end. Per-step
wall times come from each run's ``metrics.jsonl`` (``time/step_s``: sample + score + learn, eval
excluded); the first ``--skip`` steps (compilation) are dropped and the median over the rest and
over rounds is reported. All runs share one persistent compilation cache.

Run::

    .venv/bin/python benchmarks/rl_step.py                 # ~10 minutes on 2 CPU cores
    .venv/bin/python benchmarks/rl_step.py --rounds 1 --steps 8
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
DEFAULT_BASELINE = "8793a58^"


def _records(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def _run(tree: str, workdir: str, args, extra: list[str], env: dict) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "passk_jax.main",
        f"--config={os.path.join(tree, 'experiments', 'configs', 'maze_tiny.py')}:steps={args.steps}",
        f"--workdir={workdir}",
        "--config.sft.steps=0",
        f"--config.eval.every={10 * args.steps}",
        f"--config.checkpoint_every={10 * args.steps}",
        f"--config.eval.num_prompts={args.eval_prompts}",
        "--config.tensorboard=False",
        *extra,
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"run failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    recs = [r for r in _records(workdir) if "train/reward_mean" in r]
    steps = [r for r in recs if r["step"] > args.skip]
    return {
        "wall": wall,
        "step_s": [r["time/step_s"] for r in steps],
        "records": steps,
        "eval_s": [r["time/eval_s"] for r in _records(workdir) if "time/eval_s" in r],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git revision of 'previous'")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--skip", type=int, default=2, help="first steps dropped (compilation)")
    parser.add_argument("--eval-prompts", type=int, default=32)
    parser.add_argument("--out", default=os.path.join(RESULTS, "rl_step.md"))
    args = parser.parse_args()

    rev = subprocess.run(
        ["git", "rev-parse", "--short", args.baseline], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    tmp = tempfile.mkdtemp(prefix="rl_step_bench_")
    base_tree = os.path.join(tmp, "baseline")
    os.makedirs(base_tree)
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", base_tree], input=archive.stdout, check=True)

    cache = os.path.join(tmp, "jax_cache")
    variants = {
        "previous": (base_tree, []),
        "current": (ROOT, []),
        "current, synchronised": (ROOT, ["--config.rl.sync_timing=True"]),
    }
    results: dict[str, list[dict]] = {k: [] for k in variants}
    for r in range(args.rounds):
        for name, (tree, extra) in variants.items():
            env = {k: v for k, v in os.environ.items() if not k.startswith("PASSK_")}
            env.update(
                PYTHONPATH=tree,  # the baseline imports its own passk_jax
                JAX_PLATFORMS="cpu",
                JAX_COMPILATION_CACHE_DIR=cache,
                JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
            )
            where = subprocess.run(
                [sys.executable, "-c", "import passk_jax; print(passk_jax.__file__)"],
                cwd=tree, env=env, capture_output=True, text=True, check=True,
            ).stdout.strip()  # fmt: skip
            assert where.startswith(tree), f"{name} would import {where}, not {tree}"
            workdir = os.path.join(tmp, f"{name.replace(', ', '_')}_{r}")
            res = _run(tree, workdir, args, extra, env)
            results[name].append(res)
            print(
                f"round {r + 1}/{args.rounds} {name}: median step "
                f"{statistics.median(res['step_s']):.3f} s, run {res['wall']:.0f} s",
                flush=True,
            )

    def med(name: str, key: str = "step_s") -> float:
        return statistics.median([x for res in results[name] for x in res[key]])

    import jax

    from passk_jax.testing import cpu_model

    lines = [
        "## RL step: driver speed-up and time split",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} CPU cores "
        f"(1-minute load average {os.getloadavg()[0]:.1f} at the end), jax {jax.__version__} (cpu). `passk_jax/configs/maze_tiny.py:steps={args.steps}`, "
        "no warm start (random weights), 16 prompts x 16 samples x 16 new tokens per step, "
        f"{args.eval_prompts} eval prompts x 16 samples once at the end. Median of the per-step "
        f"wall times of steps {args.skip + 1}..{args.steps} over {args.rounds} interleaved "
        f"round(s) of fresh processes. previous = commit `{rev}`, current = `{head}` (plus any "
        "uncommitted changes of the working tree).",
        "",
        "| driver | median s / RL step | speed-up |",
        "|---|---:|---:|",
    ]
    base = med("previous")
    for name in variants:
        lines.append(f"| {name} | {med(name):.3f} | {base / med(name):.2f}x |")
    sync = [r for res in results["current, synchronised"] for r in res["records"]]
    parts = {
        "sample (device, incl. transfer of tokens to the host)": "time/sample_s",
        "score (host: detokenise + `task.score_batch`)": "time/score_s",
        "learn (jitted learner step, blocked on)": "time/learn_s",
    }
    split = {k: statistics.median([r[v] for r in sync]) for k, v in parts.items()}
    total = sum(split.values())
    ev = statistics.median([x for res in results["current, synchronised"] for x in res["eval_s"]])
    lines += [
        "",
        "Time split of one RL step (current driver, synchronised run; medians):",
        "",
        "| part | median s | share of sample + score + learn |",
        "|---|---:|---:|",
    ]
    for k, v in split.items():
        lines.append(f"| {k} | {v:.3f} | {v / total:.1%} |")
    lines += [
        f"| sum | {total:.3f} | 100% |",
        f"| eval ({args.eval_prompts} prompts x 16 samples, once per `eval.every` steps) | "
        f"{ev:.3f} | - |",
    ]
    table = "\n".join(lines)
    print(table)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(table + "\n")


if __name__ == "__main__":
    main()
