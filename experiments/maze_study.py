"""Reproduction study at tiny scale: pass@k RL methods on text mazes, several seeds, one sample budget.

Question: at laptop scale, do PKPO's claims hold? (1) training with k_opt = k_eval maximises held-out
pass@k_eval; (2) annealing k 8 -> 1 keeps pass@1 while raising pass@8; (3) on a hard split, where
pass@1 training stalls, k_opt >= 4 reaches a higher cumulative solve rate.

Set-up (``passk_jax/configs/maze_tiny.py``): a tiny Gemma-2 (char tokenizer) gets one supervised warm
start on 5x5 mazes, shared by every run; then each method runs RL with the same budget (steps x prompts x
samples) and is evaluated on held-out 5x5 mazes (pass@{1,2,4,8,16} from 16 samples per maze, unbiased
estimator). Methods: PKPO ``sloo_minus_one`` with k_opt in {1, 2, 4, 8}, k annealed 8 -> 1, Chen et
al.'s analytical Pass@k advantages (k = 4), GRPO, and Tang et al. (k = n = 16). The hard split trains
from the same warm start on 7x7 mazes (never seen in the warm start) with k_opt in {1, 4, 8}.

Hardware / time: 2 CPU cores, roughly 2-4 minutes per run; the full study (33 runs) takes 1.5-2 hours.
Runs are independent and skipped when already finished, so the study can run in pieces, and the
results file is rewritten after every run.

Command::

    .venv/bin/python experiments/maze_study.py            # everything (resumable)
    .venv/bin/python experiments/maze_study.py --seeds 3 --only main   # or: --only hard
    .venv/bin/python experiments/maze_study.py --quick    # smoke test (seconds per run)

Writes ``runs/maze_study/<method>_s<seed>/`` and ``experiments/results/maze_tiny.md`` (+ PNGs in
``experiments/results/maze_tiny/``). Nothing is tuned on the held-out mazes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import logging  # noqa: E402

from passk_jax import metrics as M  # noqa: E402
from passk_jax import rl  # noqa: E402
from passk_jax import stats as ST  # noqa: E402
from passk_jax.configs import maze_tiny  # noqa: E402

MAIN = {  # name -> maze_tiny arg
    "pkpo k_opt=1": "k=1",
    "pkpo k_opt=2": "k=2",
    "pkpo k_opt=4": "k=4",
    "pkpo k_opt=8": "k=8",
    "pkpo anneal 8->1": "anneal",
    "chen passk k=4": "k=4,adv=passk",
    "grpo": "adv=grpo",
    "tang k=n": "adv=tang",
}
HARD = {"hard k_opt=1": "k=1", "hard k_opt=4": "k=4", "hard k_opt=8": "k=8"}
KS = (1, 2, 4, 8, 16)


def _slug(name: str) -> str:
    return name.replace(" ", "_").replace(">", "").replace("=", "").replace("-", "_")


def run_one(name: str, arg: str, seed: int, warm: str, out_root: str, quick: bool, hard: bool):
    run_dir = os.path.join(out_root, f"{_slug(name)}_s{seed}")
    final_path = os.path.join(run_dir, "final_metrics.json")
    if os.path.exists(final_path):
        return run_dir
    parts = [a for a in ["quick" if quick else "", arg, f"seed={seed}"] if a]
    cfg = maze_tiny.get_config(",".join(parts))
    cfg.model.checkpoint = {"format": "orbax", "path": warm}
    cfg.sft.steps = 0
    if hard:  # train on the larger mazes, evaluate on held-out larger mazes
        cfg.task.kwargs.sizes = (7,)
        cfg.task.kwargs.hard_sizes = (9,)
    t0 = time.time()
    rl.train_and_evaluate(cfg, run_dir)
    print(f"  {name} seed {seed}: {time.time() - t0:.0f}s", flush=True)
    return run_dir


def _mean_se(values):
    v = np.asarray([x for x in values if x is not None], np.float64)
    if v.size == 0:
        return float("nan"), float("nan"), 0
    se = v.std(ddof=1) / np.sqrt(v.size) if v.size > 1 else float("nan")
    return float(v.mean()), float(se), int(v.size)


def _fmt(m, se):
    return f"{100 * m:.1f} ± {100 * se:.1f}" if np.isfinite(se) else f"{100 * m:.1f}"


def collect(out_root: str, names, seeds):
    table = {}
    for name in names:
        finals, curves = [], []
        for s in seeds:
            d = os.path.join(out_root, f"{_slug(name)}_s{s}")
            p = os.path.join(d, "final_metrics.json")
            if os.path.exists(p):
                with open(p) as f:
                    finals.append({**json.load(f), "_seed": s})
                curves.append(M.read_jsonl(os.path.join(d, "metrics.jsonl")))
        if finals:
            table[name] = (finals, curves)
    return table


def _plot(table, key, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, (_, curves) in table.items():
        series = []
        for recs in curves:
            pts = {r["step"]: r[key] for r in recs if r.get(key) is not None}
            series.append(pts)
        steps = sorted(set.intersection(*(set(s) for s in series))) if series else []
        if not steps:
            continue
        ys = np.asarray([[s[t] for t in steps] for s in series])
        ax.plot(steps, ys.mean(0), label=name)
    ax.set(title=title, xlabel="RL step")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_results(out_root: str, seeds, results_md: str, quick: bool) -> str:
    img_dir = os.path.join(os.path.dirname(results_md), "maze_tiny")
    os.makedirs(img_dir, exist_ok=True)
    main = collect(out_root, MAIN, seeds)
    hard = collect(out_root, HARD, seeds)
    lines = [
        "# Maze study at tiny scale (`experiments/maze_study.py`)",
        "",
        "Written by the script; every number below was measured by it"
        + (" (**quick smoke mode: not a result**)" if quick else "")
        + ". Held-out 5x5 mazes, unbiased pass@k (%) from 16 samples per maze, mean ± standard "
        "error over seeds (RL seeds; one shared supervised warm start). Same sample budget for every "
        "method.",
        "",
        "| method | seeds | " + " | ".join(f"pass@{k}" for k in KS) + " | cum. solve (train) |",
        "|---|---|" + "---|" * (len(KS) + 1),
    ]
    for name, (finals, _) in main.items():
        row = {}
        for k in KS:
            row[k] = _mean_se([f.get(f"eval/pass@{k}") for f in finals])
        row["cum"] = _mean_se([f.get("train/cum_solve_rate") for f in finals])
        lines.append(
            f"| {name} | {len(finals)} | "
            + " | ".join(_fmt(*row[k][:2]) for k in KS)
            + f" | {_fmt(*row['cum'][:2])} |"
        )
    if main:
        _plot(
            main,
            "train/cum_solve_rate",
            os.path.join(img_dir, "cum_solve.png"),
            "cumulative solve rate (train)",
        )
        _plot(
            main,
            "train/entropy",
            os.path.join(img_dir, "entropy.png"),
            "policy entropy (nats/token)",
        )
        _plot(main, "eval/pass@1", os.path.join(img_dir, "pass1.png"), "held-out pass@1")
        _plot(main, "eval/pass@8", os.path.join(img_dir, "pass8.png"), "held-out pass@8")
        lines += [
            "",
            "![cumulative solve rate](maze_tiny/cum_solve.png) ![entropy](maze_tiny/entropy.png)",
            "![pass@1](maze_tiny/pass1.png) ![pass@8](maze_tiny/pass8.png)",
        ]
    if hard:
        lines += [
            "",
            "## Hard split: RL on 7x7 mazes from the 5x5 warm start",
            "",
            "| method | seeds | cum. solve (train) | reward (last step) | held-out 7x7 pass@1 | pass@16 |",
            "|---|---|---|---|---|---|",
        ]
        for name, (finals, _) in hard.items():
            cum = _mean_se([f.get("train/cum_solve_rate") for f in finals])
            rew = _mean_se([f.get("train/reward_mean") for f in finals])
            p1 = _mean_se([f.get("eval/pass@1") for f in finals])
            p16 = _mean_se([f.get("eval/pass@16") for f in finals])
            lines.append(
                f"| {name} | {len(finals)} | {_fmt(*cum[:2])} | {_fmt(*rew[:2])} | "
                f"{_fmt(*p1[:2])} | {_fmt(*p16[:2])} |"
            )
        _plot(
            hard,
            "train/cum_solve_rate",
            os.path.join(img_dir, "hard_cum_solve.png"),
            "hard split: cumulative solve rate",
        )
        lines += ["", "![hard cumulative solve](maze_tiny/hard_cum_solve.png)"]
    lines += ["", "## Claims (paired over seeds)", ""] + _claims(main, hard)
    text = "\n".join(lines) + "\n"
    tmp = f"{results_md}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, results_md)  # several shards may write concurrently
    return text


PASS1_MARGIN = 0.03  # "keeps pass@1": within 3 points, by a two-one-sided test (passk_jax.stats)


def _paired(table, a: str, b: str, key: str):
    """Per-seed values of ``key`` for runs ``a`` and ``b``, on the seeds both finished."""
    if a not in table or b not in table:
        return None, None

    def by_seed(name):
        return {f["_seed"]: f.get(key) for f in table[name][0]}

    xa, xb, _ = ST.align_pairs(by_seed(a), by_seed(b))
    return (xa, xb) if len(xa) >= 2 else (None, None)


def _claims(main, hard) -> list[str]:
    """Verdicts from paired per-seed differences (``passk_jax.stats``), 95% t intervals, in points."""
    out = []

    def sup(table, a, b, key, label):
        xa, xb = _paired(table, a, b, key)
        if xa is None:
            out.append(f"- {label}: fewer than 2 paired seeds finished.")
            return
        r = ST.superiority(xa, xb)
        out.append(
            f"- {label}: **{r.verdict}** ({len(xa)} paired seeds, {a} minus {b}: "
            f"{r.interval(1, 100)} points, 95% CI)."
        )

    for ke in (2, 4, 8):
        for ko in (1, 2, 4, 8):
            if ko != ke:
                sup(
                    main,
                    f"pkpo k_opt={ke}",
                    f"pkpo k_opt={ko}",
                    f"eval/pass@{ke}",
                    f"k_opt={ke} beats k_opt={ko} at pass@{ke}",
                )
    xa, xb = _paired(main, "pkpo anneal 8->1", "pkpo k_opt=1", "eval/pass@1")
    if xa is not None:
        r = ST.equivalence(xa, xb, PASS1_MARGIN)
        out.append(
            f"- anneal 8->1 keeps pass@1 of k_opt=1 within {100 * PASS1_MARGIN:.0f} points "
            f"(TOST): **{r.verdict}** ({len(xa)} paired seeds, difference "
            f"{r.interval(1, 100)} points, 90% CI)."
        )
    sup(
        main,
        "pkpo anneal 8->1",
        "pkpo k_opt=1",
        "eval/pass@8",
        "anneal 8->1 raises pass@8 over k_opt=1",
    )
    for k in (4, 8):
        sup(
            hard,
            f"hard k_opt={k}",
            "hard k_opt=1",
            "train/cum_solve_rate",
            f"hard split, k_opt={k} beats k_opt=1 in cumulative solve rate",
        )
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", choices=("main", "hard"), default=None)
    parser.add_argument("--shard", default="0/1", help="i/N: run every N-th run starting at i")
    parser.add_argument("--out", default=os.path.join(ROOT, "runs", "maze_study"))
    parser.add_argument(
        "--results", default=os.path.join(ROOT, "experiments", "results", "maze_tiny.md")
    )
    args = parser.parse_args(argv)
    logging.set_verbosity(logging.WARNING)
    out_root = args.out + ("_quick" if args.quick else "")
    os.makedirs(out_root, exist_ok=True)
    warm = os.path.join(out_root, "warm_start")
    rl.warm_start(maze_tiny.get_config("quick" if args.quick else ""), warm)
    seeds = list(range(args.seeds))
    groups = []
    if args.only in (None, "main"):
        groups.append((MAIN, False))
    if args.only in (None, "hard"):
        groups.append((HARD, True))
    shard, num_shards = (int(x) for x in args.shard.split("/"))
    jobs = [  # seed-major order: partial results cover every method early
        (name, arg, seed, hard)
        for seed in seeds
        for methods, hard in groups
        for name, arg in methods.items()
    ]
    for name, arg, seed, hard in jobs[shard::num_shards]:
        run_one(name, arg, seed, warm, out_root, args.quick, hard)
        write_results(out_root, seeds, args.results, args.quick)
    print(write_results(out_root, seeds, args.results, args.quick))


if __name__ == "__main__":
    main()
