"""Unblocking experiment: does optimising pass@k (k_opt > 1) solve more *hard* training mazes when
easy and hard prompts compete for one policy?

Design (fixed before any result was seen):

1. Warm starts: ``--warm`` independent supervised warm starts of the tiny maze model
   (``passk_jax/configs/maze_tiny.py``, seed = warm-start index, ``--sft-steps`` steps: shorter than
   the config's 600 so that many 5x5 mazes are still hard for the model).
2. Selection, on the **training pool only** (never on held-out mazes): each warm-started model draws
   16 samples for each of the first ``--scan`` training mazes; c = number of solving samples.
   *Hard* = 1 <= c <= 3 (small but non-zero success), *easy* = c >= 6. The hard subset keeps at most
   ``--max-hard`` mazes, the easy subset as many as the hard one (fewer if there are not enough).
   (A first launch used easy = c >= 8 and at most 96 hard mazes; its selection histograms left only
   15 / 34 easy mazes against 96 hard ones, so it was stopped and relaunched with these thresholds
   after one RL run, whose outcome was not looked at.)
3. Training pools: **mixture** = easy + hard (shuffled by the RL data order), **all-hard control** =
   the hard subset alone. Each warm start gets its own subsets (selected with its own model).
4. RL: PKPO ``sloo_minus_one`` with k_opt in {1, 4, 8}, ``--steps`` steps, seeds 0 .. ``--seeds``-1;
   seed s gives every k the same data order and sampler keys, so runs are paired by (warm, seed).
5. Reported: the hard subset's cumulative solve rate (fraction of its mazes solved at least once during
   training), its pass@1 after training (16 samples per maze, unbiased), held-out pass@1 / pass@8;
   paired differences k_opt = K minus k_opt = 1 over (warm start, seed) pairs with t-based 95% CIs and
   verdicts from ``passk_jax.stats``.

Hardware / time: 2 CPU cores; the per-run wall-clock is printed, and the plan's total estimated from
the first run. Runs are skipped when finished (``final_metrics.json``), so the study resumes; ``--shard
i/N`` splits it across processes; the results file is rewritten after every run.

Command::

    .venv/bin/python experiments/unblocking.py                  # the full plan (resumable)
    .venv/bin/python experiments/unblocking.py --quick          # smoke test (seconds per run)

Writes ``runs/unblocking/`` and ``experiments/results/unblocking.md`` (+ ``unblocking.json``, a PNG).
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

from passk_jax import rl, stats  # noqa: E402
from passk_jax.configs import maze_tiny  # noqa: E402

KS = (1, 4, 8)
POOLS = ("mixture", "all_hard")
HARD_SPLIT = "hard_subset"
SCAN_SAMPLES = 16  # samples per training maze when counting the warm start's successes


def _base_config(args, extra: str = ""):
    parts = [a for a in ["quick" if args.quick else "", extra] if a]
    return maze_tiny.get_config(",".join(parts))


def make_warm_start(args, w: int) -> str:
    """Supervised warm start ``w`` of the tiny maze model under ``args.out`` (reused if there; the
    claims study shares this with the unblocking experiment)."""
    path = os.path.join(args.out, f"warm{w}", "params")
    cfg = _base_config(args, f"seed={w}")
    cfg.sft.steps = args.sft_steps
    t0 = time.time()
    rl.warm_start(cfg, path)
    print(f"warm start {w}: {time.time() - t0:.0f}s", flush=True)
    return path


def select_subsets(args, w: int, warm: str) -> dict:
    """Success counts of warm start ``w`` on the first ``--scan`` training mazes -> subsets (cached)."""
    path = os.path.join(args.out, f"warm{w}", "subsets.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    from passk_jax import evaluate as EV

    cfg = _base_config(args)
    parts = EV.build_parts(cfg)
    params = EV.load_params(warm, parts.model_config)
    n = SCAN_SAMPLES
    out_dir = os.path.join(args.out, f"warm{w}", "scan")
    EV.evaluate(
        params,
        parts,
        split="train",
        num_samples=n,
        num_prompts=args.scan,
        batch_prompts=32,
        max_new_tokens=cfg.rl.max_new_tokens,
        seed=10_000 + w,  # not any RL seed
        out_dir=out_dir,
    )
    counts: dict[str, int] = {}
    with open(os.path.join(out_dir, "completions.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            counts[r["uid"]] = counts.get(r["uid"], 0) + int(r["passed"])
    uids = list(counts)  # pool order
    lo, hi = args.hard_range
    hard = [u for u in uids if lo <= counts[u] <= hi][: args.max_hard]
    easy = [u for u in uids if counts[u] >= args.easy_min][: len(hard)]
    c = np.asarray([counts[u] for u in uids])
    sub = {
        "warm": w,
        "scanned": len(uids),
        "samples": n,
        "count_histogram": np.bincount(c, minlength=n + 1).tolist(),
        "hard": hard,
        "easy": easy,
        "hard_mean_rate": float(np.mean([counts[u] for u in hard]) / n) if hard else float("nan"),
        "easy_mean_rate": float(np.mean([counts[u] for u in easy]) / n) if easy else float("nan"),
    }
    with open(path, "w") as f:
        json.dump(sub, f)
    return sub


def run_one(args, w: int, warm: str, sub: dict, pool: str, k: int, seed: int) -> str:
    run_dir = os.path.join(args.out, f"w{w}_{pool}_k{k}_s{seed}")
    if os.path.exists(os.path.join(run_dir, "final_metrics.json")):
        return run_dir
    cfg = _base_config(args, f"k={k},seed={seed},steps={args.steps}")
    cfg.model.checkpoint = {"format": "orbax", "path": warm}
    cfg.sft.steps = 0
    train = sub["hard"] + (sub["easy"] if pool == "mixture" else [])
    cfg.task.subset = {"train": train, "splits": {HARD_SPLIT: sub["hard"]}}
    cfg.eval.splits = ("eval", HARD_SPLIT)
    cfg.eval.every = args.steps
    cfg.checkpoint_every = args.steps
    cfg.tensorboard = False
    t0 = time.time()
    rl.train_and_evaluate(cfg, run_dir)
    print(f"  warm {w} {pool} k_opt={k} seed {seed}: {time.time() - t0:.0f}s", flush=True)
    return run_dir


def _load(run_dir: str, hard: list[str]) -> dict | None:
    p = os.path.join(run_dir, "final_metrics.json")
    if not os.path.exists(p):
        return None
    with open(p) as f:
        fin = json.load(f)
    with open(os.path.join(run_dir, "train_solved.json")) as f:
        solved = set(json.load(f)["solved"])
    return {
        "hard_cum_solve": len(solved & set(hard)) / len(hard),
        "hard_pass@1": fin.get(f"eval_{HARD_SPLIT}/pass@1"),
        "eval_pass@1": fin.get("eval/pass@1"),
        "eval_pass@8": fin.get("eval/pass@8"),
    }


METRICS = ("hard_cum_solve", "hard_pass@1", "eval_pass@1", "eval_pass@8")


def write_results(args, subsets: dict, results_md: str) -> str:
    table = {}  # (pool, k) -> {(w, s): metrics}
    for pool in POOLS:
        for k in KS:
            cell = {}
            for w, sub in subsets.items():
                for s in range(args.seeds):
                    m = _load(os.path.join(args.out, f"w{w}_{pool}_k{k}_s{s}"), sub["hard"])
                    if m is not None:
                        cell[(w, s)] = m
            table[(pool, k)] = cell
    rl_cfg = _base_config(args).rl
    lo, hi = args.hard_range
    lines = [
        "# Unblocking experiment (`experiments/unblocking.py`)",
        "",
        "Written by the script from the runs it made"
        + (" (**quick smoke mode: not a result**)" if args.quick else "")
        + f". Tiny Gemma-2 on 5x5 text mazes; {len(subsets)} independent warm starts "
        f"({args.sft_steps} SFT steps each); hard subset = training mazes the warm start solved in "
        f"{lo}-{hi} of {SCAN_SAMPLES} samples, easy = >= {args.easy_min} of {SCAN_SAMPLES}, "
        f"selected on the training pool only. PKPO `sloo_minus_one`, {args.steps} RL steps, "
        f"{rl_cfg.prompts_per_step} prompts x {rl_cfg.num_samples} samples per step. Pairs = "
        "(warm start, seed); differences are k_opt = K minus k_opt = 1 in percentage points, "
        "t-based 95% CI over pairs (`passk_jax.stats.superiority`).",
        "",
        "## Selected subsets",
        "",
        "| warm start | scanned | hard | easy | hard success (warm) | easy success (warm) |",
        "|---|---|---|---|---|---|",
    ]
    for w, sub in subsets.items():
        lines.append(
            f"| {w} | {sub['scanned']} | {len(sub['hard'])} | {len(sub['easy'])} | "
            f"{100 * sub['hard_mean_rate']:.1f}% | {100 * sub['easy_mean_rate']:.1f}% |"
        )
    lines += [
        "",
        "## Means over pairs",
        "",
        "| pool | k_opt | pairs | hard cum. solve | hard pass@1 | held-out pass@1 | held-out pass@8 |",
        "|---|---|---|---|---|---|---|",
    ]
    for (pool, k), cell in table.items():
        if not cell:
            continue
        vals = [
            100 * np.mean([m[key] for m in cell.values() if m[key] is not None]) for key in METRICS
        ]
        lines.append(
            f"| {pool} | {k} | {len(cell)} | " + " | ".join(f"{v:.1f}" for v in vals) + " |"
        )
    lines += [
        "",
        "## Verdicts (paired over (warm start, seed))",
        "",
        "| pool | comparison | metric | pairs | difference [95% CI] | verdict |",
        "|---|---|---|---|---|---|",
    ]
    verdicts = []
    for pool in POOLS:
        base = table[(pool, 1)]
        for k in (4, 8):
            other = table[(pool, k)]
            for key in ("hard_cum_solve", "hard_pass@1"):
                a, b, pairs = stats.align_pairs(
                    {p: m[key] for p, m in other.items()}, {p: m[key] for p, m in base.items()}
                )
                if len(pairs) < 2:
                    continue
                r = stats.superiority(a, b)
                verdicts.append(
                    {"pool": pool, "k": k, "metric": key, **r.as_dict(), "pairs": len(pairs)}
                )
                lines.append(
                    f"| {pool} | k_opt={k} > k_opt=1 | {key} | {len(pairs)} | "
                    f"{r.interval(1, 100)} | **{r.verdict}** |"
                )
    _plot(table, os.path.join(os.path.dirname(results_md), "unblocking.png"))
    lines += ["", "![hard subset cumulative solve](unblocking.png)"]
    text = "\n".join(lines) + "\n"
    tmp = f"{results_md}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, results_md)
    with open(results_md[:-3] + ".json", "w") as f:
        json.dump(
            {
                "subsets": {
                    str(w): {k: v for k, v in s.items() if k not in ("hard", "easy")}
                    for w, s in subsets.items()
                },
                "runs": {
                    f"{pool}/k{k}": {f"w{w}_s{s}": m for (w, s), m in cell.items()}
                    for (pool, k), cell in table.items()
                },
                "verdicts": verdicts,
            },
            f,
            indent=1,
        )
    return text


def _plot(table, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4), sharey=True)
    for ax, pool in zip(axes, POOLS):
        for i, k in enumerate(KS):
            cell = table[(pool, k)]
            ys = [100 * m["hard_cum_solve"] for m in cell.values()]
            ax.scatter(
                np.full(len(ys), i) + np.linspace(-0.15, 0.15, max(len(ys), 1))[: len(ys)], ys, s=10
            )
            if ys:
                ax.hlines(np.mean(ys), i - 0.25, i + 0.25, color="k")
        ax.set(title=pool, xticks=range(len(KS)), xticklabels=[f"k_opt={k}" for k in KS])
    axes[0].set_ylabel("hard subset cum. solve (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true")
    p.add_argument("--warm", type=int, default=2, help="independent warm starts")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--steps", type=int, default=60, help="RL steps per run")
    p.add_argument("--sft-steps", type=int, default=250)
    p.add_argument("--scan", type=int, default=512, help="training mazes scanned for selection")
    p.add_argument("--max-hard", type=int, default=64)
    p.add_argument("--hard-range", default="1,3", help="hard = solved in lo..hi of 16 samples")
    p.add_argument("--easy-min", type=int, default=6, help="easy = solved in >= this many of 16")
    p.add_argument("--pools", default=",".join(POOLS))
    p.add_argument("--shard", default="0/1", help="i/N: every N-th run starting at i")
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "unblocking"))
    p.add_argument(
        "--results",
        default=None,
        help="default experiments/results/unblocking.md (quick: inside the quick run directory)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.out += "_quick"
        args.steps, args.sft_steps, args.scan, args.seeds = 2, 20, 64, 2
        args.hard_range, args.easy_min = "0,0", 1  # a barely trained model: any split will do
    if args.results is None:
        args.results = (
            os.path.join(args.out, "unblocking.md")
            if args.quick
            else os.path.join(ROOT, "experiments", "results", "unblocking.md")
        )
    args.hard_range = tuple(int(x) for x in args.hard_range.split(","))
    logging.set_verbosity(logging.WARNING)
    os.makedirs(args.out, exist_ok=True)
    subsets, warms = {}, {}
    for w in range(args.warm):
        warms[w] = make_warm_start(args, w)
        subsets[w] = select_subsets(args, w, warms[w])
        sub = subsets[w]
        print(f"warm start {w}: {len(sub['hard'])} hard, {len(sub['easy'])} easy", flush=True)
        if len(sub["hard"]) < 2 or not sub["easy"]:
            raise SystemExit(
                f"warm start {w}: too few hard/easy mazes selected ({sub['count_histogram']})"
            )
    pools = [x for x in args.pools.split(",") if x]
    jobs = [  # seed-major: partial results are paired across k early
        (w, pool, k, s)
        for s in range(args.seeds)
        for pool in pools
        for w in range(args.warm)
        for k in KS
    ]
    shard, num = (int(x) for x in args.shard.split("/"))
    mine = jobs[shard::num]
    print(f"{len(mine)} runs in this shard", flush=True)
    t_start = time.time()
    for i, (w, pool, k, s) in enumerate(mine):
        run_one(args, w, warms[w], subsets[w], pool, k, s)
        el = time.time() - t_start
        print(
            f"  [{i + 1}/{len(mine)}] elapsed {el / 60:.1f} min, est. total "
            f"{el / (i + 1) * len(mine) / 60:.1f} min",
            flush=True,
        )
        write_results(args, subsets, args.results)
    print(write_results(args, subsets, args.results))


if __name__ == "__main__":
    main()
