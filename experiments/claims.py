"""Every claim of both papers on one footing: tiny Gemma-2 on 5x5 text mazes, paired seeds, 95% CIs.

Design (fixed before any run of this study was made):

1. Warm starts: ``--warm`` independent supervised warm starts of the tiny maze model
   (``passk_jax/configs/maze_tiny.py``, seed = warm-start index, ``--sft-steps`` steps).
2. Every method then runs RL from each warm start with the same budget: ``--steps`` steps of 16
   prompts x 16 samples (N = 16 rollouts per prompt for every method, so every comparison is at equal
   sample budget), the config's learning rate (3e-4) unless the method says otherwise, and is
   evaluated once at the end on the 128 held-out 5x5 mazes (16 samples each, unbiased pass@k).
3. RL seed s gives every method the same data order and sampler keys, so runs are paired by
   (warm start, seed); a claim's verdict comes from the paired differences A - B over those pairs:
   a t-based 95% CI (``passk_jax.stats.superiority``: holds / does not hold / inconclusive), or for
   "keeps pass@1" a TOST equivalence test with a margin of ``--margin`` points
   (``passk_jax.stats.equivalence``).
4. Metrics per run: held-out pass@{1,2,4,8,16}; the training pool's cumulative solve rate; the mean
   training reward over all RL steps (area under the training curve: "how fast it learns"); the
   policy entropy and the number of distinct wrong answers per group (``neg_distinct``, Chen et al.'s
   negative-answer diversity), each averaged over the last 10 steps; for the graded runs held-out
   maxg@k of the continuous reward.
5. The continuous-reward study swaps the 0/1 maze reward for ``tasks.maze.score_maze_graded`` (1 for
   a solve, up to 0.5 for progress towards E, 0 for any illegal step) and compares PKPO's maxg@k
   transform at k_opt = 4 with k_opt = 1 on held-out maxg@4 (continuous) and pass@4 (solves).

Readings the papers leave open are the library's (``passk_jax/advantages.py`` documents each):
exceeding Pass@k uses f(N_pos) = 4 / (10 ln(N_pos + 0.5)); entropy-adaptive ranks the prompts of
each batch by mean response entropy; the sequential schedule uses Chen et al.'s Fig. 1 proportions
(Pass@1 for the first 13% of steps, Pass@k until 50%, then Pass@1).

Hardware / time: 2 CPU cores; per-run wall-clock is printed with the plan's estimated total. Runs
are skipped when finished (``final_metrics.json``), so the study resumes; ``--shard i/N`` splits it
across processes; the results file is rewritten after every run.

Command::

    .venv/bin/python experiments/claims.py                  # the full plan (resumable)
    .venv/bin/python experiments/claims.py --quick          # smoke test (seconds per run)

Writes ``runs/claims/`` and ``experiments/results/claims.md`` (+ ``claims.json`` and PNGs in
``experiments/results/claims/``). Nothing is tuned on the held-out mazes.
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

from experiments.unblocking import _base_config, make_warm_start  # noqa: E402
from passk_jax import rl, stats  # noqa: E402

BASE_LR = 3e-4  # maze_tiny's RL learning rate


def _sequential(steps: int) -> list[tuple[int, str, int]]:
    """Chen et al.'s Pass@1 -> Pass@k -> Pass@1 at their Fig. 1 proportions (100 / 370 / 750)."""
    return [
        (max(1, round(0.13 * steps)), "grpo", 1),
        (round(0.5 * steps), "passk", 4),
        (steps, "grpo", 1),
    ]


# name -> (maze_tiny argument, extra settings). Every method sees N = 16 samples per prompt.
METHODS: dict[str, tuple[str, dict]] = {
    "pkpo k1": ("k=1", {}),
    "pkpo k4": ("k=4", {}),
    "pkpo k8": ("k=8", {}),
    "pkpo anneal 8->1": ("anneal", {}),
    "grpo (pass@1)": ("adv=grpo", {}),
    "chen analytical k4": ("adv=passk,k=4", {}),
    "chen bootstrap k4": ("adv=passk_bootstrap,k=4", {}),
    "chen full sampling k4": ("adv=passk_full,k=4", {}),
    "chen sequential 1->4->1": ("adv=grpo", {"phases": _sequential}),
    "chen combination k4": ("adv=passk_combination,k=4", {}),
    "chen entropy-adaptive k4": ("adv=entropy_adaptive,k=4", {}),
    "chen exceeding k4": ("adv=passk_exceeding,k=4", {}),
    "grpo noise 30%": ("adv=grpo_noise30", {}),
    "grpo entropy reg 0.003": ("adv=grpo,ent=0.003", {}),
    "chen analytical k8": ("adv=passk,k=8", {}),
    "chen analytical k8 lr x4": (f"adv=passk,k=8,lr={4 * BASE_LR:g}", {}),
    "graded pkpo k1": ("graded,k=1", {}),
    "graded pkpo k4": ("graded,k=4", {}),
}
PART1 = list(METHODS)
# Part 2 (``--part 2``): the k x learning-rate grid, a stronger entropy bonus, and the matched
# variants of the weighting atlas (Chen's advantage without its 1/sigma; group-centred PKPO).
METHODS |= {
    "chen analytical k4 lr x2": (f"adv=passk,k=4,lr={2 * BASE_LR:g}", {}),
    "chen analytical k8 lr x2": (f"adv=passk,k=8,lr={2 * BASE_LR:g}", {}),
    "grpo entropy reg 0.03": ("adv=grpo,ent=0.03", {}),
    "chen k4 without 1/sigma": ("adv=passk_unnormalised,k=4", {}),
    "pkpo centred k4": ("adv=pkpo_centred,k=4", {}),
}

# The methods of each part of the study. Part 1 is the first study (its results file is
# ``claims.md``); part 2 re-runs its comparators with the newer methods from fresh warm starts, so
# every pair in part 2 comes from one code version (``claims_part2.md``).
PARTS: dict[int, list[str]] = {
    1: PART1,
    2: [
        "grpo (pass@1)",
        "pkpo k4",
        "chen analytical k4",
        "chen analytical k8",
        "chen analytical k4 lr x2",
        "chen analytical k8 lr x2",
        "grpo entropy reg 0.03",
        "chen k4 without 1/sigma",
        "pkpo centred k4",
    ],
}

# (source, claim, A, B, metric, test): the verdict is on A - B. test: "sup" (A > B), "inf" (A < B)
# or ("equiv", margin in points).
CLAIMS: list[tuple[str, str, str, str, str, object]] = [
    ("PKPO", "k_opt = 4 raises pass@4 over k_opt = 1", "pkpo k4", "pkpo k1", "pass@4", "sup"),
    ("PKPO", "k_opt = 8 raises pass@8 over k_opt = 1", "pkpo k8", "pkpo k1", "pass@8", "sup"),
    (
        "PKPO",
        "k_opt = k_eval is best: k_opt 8 beats 4 on pass@8",
        "pkpo k8",
        "pkpo k4",
        "pass@8",
        "sup",
    ),
    (
        "PKPO",
        "k_opt = k_eval is best: k_opt 4 beats 8 on pass@4",
        "pkpo k4",
        "pkpo k8",
        "pass@4",
        "sup",
    ),
    (
        "PKPO",
        "k_opt = k_eval is best: k_opt 1 beats 4 on pass@1",
        "pkpo k1",
        "pkpo k4",
        "pass@1",
        "sup",
    ),
    (
        "PKPO",
        "larger k_opt explores more: cum. solve, k_opt 8 vs 1",
        "pkpo k8",
        "pkpo k1",
        "cum_solve",
        "sup",
    ),
    (
        "PKPO",
        "larger k_opt explores more: entropy, k_opt 8 vs 1",
        "pkpo k8",
        "pkpo k1",
        "entropy",
        "sup",
    ),
    (
        "PKPO",
        "annealing 8 -> 1 keeps pass@1 (vs k_opt = 1)",
        "pkpo anneal 8->1",
        "pkpo k1",
        "pass@1",
        "equiv",
    ),
    (
        "PKPO",
        "annealing 8 -> 1 raises pass@8 (vs k_opt = 1)",
        "pkpo anneal 8->1",
        "pkpo k1",
        "pass@8",
        "sup",
    ),
    (
        "Chen",
        "Pass@k training raises pass@4 over Pass@1 training",
        "chen analytical k4",
        "grpo (pass@1)",
        "pass@4",
        "sup",
    ),
    (
        "Chen",
        "Pass@k training keeps pass@1 (vs Pass@1 training)",
        "chen analytical k4",
        "grpo (pass@1)",
        "pass@1",
        "equiv",
    ),
    (
        "Chen",
        "analytical > bootstrap (pass@4)",
        "chen analytical k4",
        "chen bootstrap k4",
        "pass@4",
        "sup",
    ),
    (
        "Chen",
        "bootstrap > full sampling (pass@4)",
        "chen bootstrap k4",
        "chen full sampling k4",
        "pass@4",
        "sup",
    ),
    (
        "Chen",
        "analytical > full sampling (pass@4)",
        "chen analytical k4",
        "chen full sampling k4",
        "pass@4",
        "sup",
    ),
    (
        "Chen",
        "Pass@k keeps entropy higher than Pass@1",
        "chen analytical k4",
        "grpo (pass@1)",
        "entropy",
        "sup",
    ),
    (
        "Chen",
        "Pass@k keeps negative-answer diversity higher",
        "chen analytical k4",
        "grpo (pass@1)",
        "neg_distinct",
        "sup",
    ),
    (
        "Chen",
        "larger k learns slower at the base LR (k 8 vs 4)",
        "chen analytical k8",
        "chen analytical k4",
        "train_reward_auc",
        "inf",
    ),
    (
        "Chen",
        "a larger LR speeds up k = 8 (x4 vs x1)",
        "chen analytical k8 lr x4",
        "chen analytical k8",
        "train_reward_auc",
        "sup",
    ),
    (
        "Chen",
        "k = 8 at x4 LR learns faster than k = 4 at x1",
        "chen analytical k8 lr x4",
        "chen analytical k4",
        "train_reward_auc",
        "sup",
    ),
    (
        "Chen",
        "Pass@1 -> Pass@k -> Pass@1 gives the best pass@1 (vs Pass@1)",
        "chen sequential 1->4->1",
        "grpo (pass@1)",
        "pass@1",
        "sup",
    ),
    (
        "Chen",
        "combination beats plain Pass@k on pass@1",
        "chen combination k4",
        "chen analytical k4",
        "pass@1",
        "sup",
    ),
    (
        "Chen",
        "combination beats plain Pass@k on pass@8",
        "chen combination k4",
        "chen analytical k4",
        "pass@8",
        "sup",
    ),
    (
        "Chen",
        "entropy-adaptive beats plain Pass@k on pass@1",
        "chen entropy-adaptive k4",
        "chen analytical k4",
        "pass@1",
        "sup",
    ),
    (
        "Chen",
        "entropy-adaptive beats plain Pass@k on pass@8",
        "chen entropy-adaptive k4",
        "chen analytical k4",
        "pass@8",
        "sup",
    ),
    (
        "Chen",
        "exceeding Pass@k beats plain Pass@k on pass@4",
        "chen exceeding k4",
        "chen analytical k4",
        "pass@4",
        "sup",
    ),
    (
        "Chen",
        "exceeding Pass@k solves more training mazes",
        "chen exceeding k4",
        "chen analytical k4",
        "cum_solve",
        "sup",
    ),
    (
        "Chen",
        "noise rewards (30%) lose to Pass@k (pass@4)",
        "grpo noise 30%",
        "chen analytical k4",
        "pass@4",
        "inf",
    ),
    (
        "Chen",
        "noise rewards (30%) degrade Pass@1 training (pass@1)",
        "grpo noise 30%",
        "grpo (pass@1)",
        "pass@1",
        "inf",
    ),
    (
        "Chen",
        "entropy regularisation (0.003) loses to Pass@k (pass@4)",
        "grpo entropy reg 0.003",
        "chen analytical k4",
        "pass@4",
        "inf",
    ),
    (
        "PKPO",
        "continuous reward: k_opt = 4 raises maxg@4 over k_opt = 1",
        "graded pkpo k4",
        "graded pkpo k1",
        "maxg@4",
        "sup",
    ),
    (
        "PKPO",
        "continuous reward: k_opt = 4 raises pass@4 (solves)",
        "graded pkpo k4",
        "graded pkpo k1",
        "pass@4",
        "sup",
    ),
    (
        "PKPO",
        "continuous reward: k_opt = 4 keeps maxg@1",
        "graded pkpo k4",
        "graded pkpo k1",
        "maxg@1",
        "equiv",
    ),
    # Part 2.
    (
        "Chen",
        "a larger LR speeds up k = 4 (x2 vs x1)",
        "chen analytical k4 lr x2",
        "chen analytical k4",
        "train_reward_auc",
        "sup",
    ),
    (
        "Chen",
        "a larger LR speeds up k = 8 (x2 vs x1)",
        "chen analytical k8 lr x2",
        "chen analytical k8",
        "train_reward_auc",
        "sup",
    ),
    (
        "Chen",
        "a larger LR compensates: k = 8 at x2 LR learns as fast as k = 4 at x1",
        "chen analytical k8 lr x2",
        "chen analytical k4",
        "train_reward_auc",
        "equiv",
    ),
    (
        "Chen",
        "k = 8 at x2 LR keeps pass@4 of k = 4 at x1",
        "chen analytical k8 lr x2",
        "chen analytical k4",
        "pass@4",
        "equiv",
    ),
    (
        "Chen",
        "entropy regularisation (0.03) raises entropy over Pass@1 training",
        "grpo entropy reg 0.03",
        "grpo (pass@1)",
        "entropy",
        "sup",
    ),
    (
        "Chen",
        "entropy regularisation (0.03) loses to Pass@k (pass@4)",
        "grpo entropy reg 0.03",
        "chen analytical k4",
        "pass@4",
        "inf",
    ),
    (
        "atlas",
        "Chen's 1/sigma helps: analytical k4 beats it without 1/sigma (pass@4)",
        "chen analytical k4",
        "chen k4 without 1/sigma",
        "pass@4",
        "sup",
    ),
    (
        "atlas",
        "without 1/sigma, Chen k4 matches PKPO k4 (pass@4)",
        "chen k4 without 1/sigma",
        "pkpo k4",
        "pass@4",
        "equiv",
    ),
    (
        "atlas",
        "group-centred PKPO k4 matches PKPO k4 (pass@4)",
        "pkpo centred k4",
        "pkpo k4",
        "pass@4",
        "equiv",
    ),
    (
        "atlas",
        "PKPO k4 matches Chen analytical k4 (pass@4)",
        "pkpo k4",
        "chen analytical k4",
        "pass@4",
        "equiv",
    ),
]

METRICS = (
    "pass@1", "pass@2", "pass@4", "pass@8", "pass@16", "maxg@1", "maxg@4",
    "cum_solve", "train_reward_auc", "entropy", "neg_distinct",
)  # fmt: skip
SHOWN = (
    "pass@1",
    "pass@4",
    "pass@8",
    "pass@16",
    "cum_solve",
    "train_reward_auc",
    "entropy",
    "neg_distinct",
)
LAST = 10  # steps averaged for entropy / diversity


def _slug(name: str) -> str:
    keep = "".join(ch if ch.isalnum() else "_" for ch in name)
    return "_".join(filter(None, keep.split("_")))


def run_dir(args, name: str, w: int, s: int) -> str:
    return os.path.join(args.out, f"w{w}_{_slug(name)}_s{s}")


def run_one(args, name: str, w: int, warm: str, s: int) -> float:
    """Runs one (method, warm start, seed); returns its wall-clock seconds (0 when already done)."""
    d = run_dir(args, name, w, s)
    if os.path.exists(os.path.join(d, "final_metrics.json")):
        return 0.0
    arg, extra = METHODS[name]
    cfg = _base_config(args, f"{arg},seed={s},steps={args.steps}")
    cfg.model.checkpoint = {"format": "orbax", "path": warm}
    cfg.sft.steps = 0
    if "phases" in extra:
        cfg.phases = extra["phases"](args.steps)
    cfg.eval.every = args.steps
    cfg.checkpoint_every = args.steps
    cfg.tensorboard = False
    t0 = time.time()
    rl.train_and_evaluate(cfg, d)
    dt = time.time() - t0
    print(f"  {name} warm {w} seed {s}: {dt:.0f}s", flush=True)
    return dt


def load(d: str) -> dict | None:
    p = os.path.join(d, "final_metrics.json")
    if not os.path.exists(p):
        return None
    with open(p) as f:
        fin = json.load(f)
    rows = []
    with open(os.path.join(d, "metrics.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            if "train/reward_mean" in r:
                rows.append(r)

    def last(key):
        v = [r[key] for r in rows[-LAST:] if key in r and np.isfinite(r[key])]
        return float(np.mean(v)) if v else None

    out = {m: fin.get(f"eval/{m}") for m in METRICS if m.startswith(("pass@", "maxg@"))}
    out.update(
        cum_solve=fin.get("train/cum_solve_rate"),
        train_reward_auc=float(np.mean([r["train/reward_mean"] for r in rows])),
        entropy=last("train/entropy"),
        neg_distinct=last("train/neg_distinct"),
        curve_reward=[r["train/reward_mean"] for r in rows],
        curve_entropy=[r["train/entropy"] for r in rows],
    )
    return out


def _points(metric: str) -> float:
    """Display scale: rates in percentage points, the rest as they are."""
    return 1.0 if metric in ("entropy", "neg_distinct") else 100.0


def _verdict(test, a: list[float], b: list[float], margin: float):
    if isinstance(test, tuple) or test == "equiv":
        return stats.equivalence(a, b, margin=margin)
    return stats.superiority(a, b, higher_is_better=(test == "sup"))


def write_results(args, results_md: str) -> str:
    table = {}  # name -> {(w, s): metrics}
    for name in PARTS[args.part]:
        cell = {}
        for w in range(args.warm):
            for s in range(args.seeds):
                m = load(run_dir(args, name, w, s))
                if m is not None:
                    cell[(w, s)] = m
        table[name] = cell
    title = "Every claim on one footing" + (f", part {args.part}" if args.part > 1 else "")
    lines = [
        f"# {title} (`experiments/claims.py"
        + (f" --part {args.part}`)" if args.part > 1 else "`)"),
        "",
        "Written by the script from the runs it made"
        + (" (**quick smoke mode: not a result**)" if args.quick else "")
        + f". Tiny Gemma-2 on 5x5 text mazes, {args.warm} independent supervised warm starts "
        f"({args.sft_steps} steps each), then {args.steps} RL steps of 16 prompts x 16 samples for "
        "every method (equal sample budget), RL learning rate 3e-4 unless the method says otherwise; "
        "held-out pass@k from 16 samples on each of the 128 held-out 5x5 mazes. Pairs = (warm start, "
        "seed): seed s gives every method the same data order and sampler keys. Differences are "
        "A - B in percentage points (entropy in nats, diversity in distinct wrong answers per group), "
        "with t-based 95% CIs over pairs (`passk_jax.stats`); 'keeps' claims are TOST equivalence "
        f"tests with a margin of {args.margin:g} points (holds: the 90% CI lies inside the margin).",
        "",
        "## Claims",
        "",
        "| source | claim | A - B | metric | pairs | difference [95% CI] | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for source, claim, a_name, b_name, metric, test in CLAIMS:
        if a_name not in table or b_name not in table:
            continue  # a claim of the other part
        a, b, pairs = stats.align_pairs(
            {p: m[metric] for p, m in table[a_name].items()},
            {p: m[metric] for p, m in table[b_name].items()},
        )
        if len(pairs) < 2:
            continue
        scale = _points(metric)
        margin = args.margin / scale
        r = _verdict(test, a, b, margin)
        verdicts.append(
            {"source": source, "claim": claim, "a": a_name, "b": b_name, "metric": metric}
            | r.as_dict()
            | {"pairs": len(pairs), "test": test if isinstance(test, str) else "equiv"}
        )
        lines.append(
            f"| {source} | {claim} | {a_name} - {b_name} | {metric} | {len(pairs)} | "
            f"{r.interval(2 if scale == 1 else 1, scale)}"
            + (" (90%, TOST)" if r.level < 0.94 else "")
            + f" | **{r.verdict}** |"
        )
    counts = {
        v: sum(1 for x in verdicts if x["verdict"] == v)
        for v in ("holds", "does not hold", "inconclusive")
    }
    lines += [
        "",
        f"Tally: {counts['holds']} hold, {counts['does not hold']} do not hold, "
        f"{counts['inconclusive']} inconclusive (of {len(verdicts)} with >= 2 pairs).",
        "",
        "## Means over pairs",
        "",
        "| method | pairs | " + " | ".join(SHOWN) + " | maxg@4 | min / run |",
        "|---|---|" + "---|" * (len(SHOWN) + 2),
    ]
    for name, cell in table.items():
        if not cell:
            continue
        vals = []
        for key in (*SHOWN, "maxg@4"):
            v = [m[key] for m in cell.values() if m.get(key) is not None]
            vals.append(
                f"{_points(key) * np.mean(v):.{2 if _points(key) == 1 else 1}f}" if v else "-"
            )
        times = [_wall(run_dir(args, name, w, s)) for (w, s) in cell]
        times = [t for t in times if t]
        lines.append(
            f"| {name} | {len(cell)} | " + " | ".join(vals) + f" | {np.mean(times) / 60:.1f} |"
            if times
            else f"| {name} | {len(cell)} | " + " | ".join(vals) + " | - |"
        )
    fig_dir = os.path.splitext(results_md)[0]  # claims.md -> claims/
    fig_rel = os.path.basename(fig_dir)
    os.makedirs(fig_dir, exist_ok=True)
    groups = CURVE_GROUPS if args.part == 1 else CURVE_GROUPS_2
    _plot_curves(table, os.path.join(fig_dir, "curves.png"), groups)
    _plot_verdicts(verdicts, os.path.join(fig_dir, "verdicts.png"))
    lines += [
        "",
        f"![training curves]({fig_rel}/curves.png)",
        "",
        f"![claims: paired differences with 95% CIs]({fig_rel}/verdicts.png)",
    ]
    text = "\n".join(lines) + "\n"
    tmp = f"{results_md}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, results_md)
    with open(results_md[:-3] + ".json", "w") as f:
        json.dump(
            {
                "runs": {
                    name: {
                        f"w{w}_s{s}": {k: v for k, v in m.items() if not k.startswith("curve_")}
                        for (w, s), m in cell.items()
                    }
                    for name, cell in table.items()
                },
                "verdicts": verdicts,
            },
            f,
            indent=1,
        )
    return text


def _wall(d: str) -> float | None:
    """Seconds between the run's first and last file writes (a lower bound on its wall-clock)."""
    try:
        t0 = os.path.getmtime(os.path.join(d, "run_config.json"))
        t1 = os.path.getmtime(os.path.join(d, "final_metrics.json"))
    except OSError:
        return None
    return max(t1 - t0, 0.0)


CURVE_GROUPS = {
    "PKPO k_opt": ["pkpo k1", "pkpo k4", "pkpo k8", "pkpo anneal 8->1"],
    "Chen estimators": ["grpo (pass@1)", "chen analytical k4", "chen bootstrap k4", "chen full sampling k4"],
    "Chen variants": ["chen sequential 1->4->1", "chen combination k4", "chen entropy-adaptive k4", "chen exceeding k4"],
    "baselines, k / LR": ["grpo noise 30%", "grpo entropy reg 0.003", "chen analytical k8", "chen analytical k8 lr x4"],
}  # fmt: skip
CURVE_GROUPS_2 = {
    "k x learning rate": ["chen analytical k4", "chen analytical k8", "chen analytical k4 lr x2", "chen analytical k8 lr x2"],
    "entropy bonus": ["grpo (pass@1)", "grpo entropy reg 0.03", "chen analytical k4"],
    "matched variants": ["chen analytical k4", "chen k4 without 1/sigma", "pkpo k4", "pkpo centred k4"],
}  # fmt: skip


def _plot_curves(table, path: str, groups: dict[str, list[str]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(groups), figsize=(4 * len(groups), 6.4), sharex=True)
    for j, (title, names) in enumerate(groups.items()):
        for name in names:
            cell = table.get(name) or {}
            for i, key in enumerate(("curve_reward", "curve_entropy")):
                curves = [m[key] for m in cell.values() if m.get(key)]
                if not curves:
                    continue
                n = min(len(c) for c in curves)
                mean = np.mean([c[:n] for c in curves], axis=0)
                axes[i, j].plot(np.arange(1, n + 1), mean, label=f"{name} ({len(curves)})")
        axes[0, j].set(title=title, ylabel="train reward (pass@1)" if j == 0 else None)
        axes[1, j].set(xlabel="RL step", ylabel="entropy (nats)" if j == 0 else None)
        if axes[0, j].lines:
            axes[0, j].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _plot_verdicts(verdicts, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not verdicts:
        return
    colour = {"holds": "tab:green", "does not hold": "tab:red", "inconclusive": "tab:gray"}
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(verdicts) + 1))
    for i, v in enumerate(verdicts):
        s = _points(v["metric"])
        lo, hi = s * v["lo"], s * v["hi"]
        ax.plot([lo, hi], [i, i], color=colour[v["verdict"]], lw=2)
        ax.plot([s * v["mean"]], [i], "o", color=colour[v["verdict"]])
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(verdicts)))
    ax.set_yticklabels([f"{v['claim']} [{v['metric']}]" for v in verdicts], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("A - B (points; entropy nats; diversity answers), 95% CI")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true")
    p.add_argument(
        "--part",
        type=int,
        default=1,
        choices=sorted(PARTS),
        help="1: the first study (claims.md); 2: k x LR grid, entropy bonus, matched variants",
    )
    p.add_argument("--warm", type=int, default=2, help="independent warm starts")
    p.add_argument("--seeds", type=int, default=4, help="RL seeds per warm start")
    p.add_argument("--steps", type=int, default=60, help="RL steps per run")
    p.add_argument("--sft-steps", type=int, default=250)
    p.add_argument("--margin", type=float, default=3.0, help="equivalence margin, points")
    p.add_argument(
        "--methods", default="", help="comma-separated subset of the methods (default all)"
    )
    p.add_argument("--shard", default="0/1", help="i/N: every N-th run starting at i")
    p.add_argument("--out", default=None, help="default runs/claims (part 2: runs/claims_part2)")
    p.add_argument(
        "--results",
        default=None,
        help="default experiments/results/claims.md (quick: inside the quick run directory)",
    )
    args = p.parse_args(argv)
    stem = "claims" + ("" if args.part == 1 else f"_part{args.part}")
    if args.out is None:
        args.out = os.path.join(ROOT, "runs", stem)
    if args.quick:
        args.out += "_quick"
        args.steps, args.sft_steps, args.seeds = 4, 20, 2
    if args.results is None:
        args.results = (
            os.path.join(args.out, f"{stem}.md")
            if args.quick
            else os.path.join(ROOT, "experiments", "results", f"{stem}.md")
        )
    part = PARTS[args.part]
    names = [n for n in args.methods.split(",") if n] or list(part)
    unknown = [n for n in names if n not in part]
    if unknown:
        raise SystemExit(f"unknown methods {unknown} for part {args.part}; known: {part}")
    logging.set_verbosity(logging.WARNING)
    os.makedirs(args.out, exist_ok=True)
    warms = {w: make_warm_start(args, w) for w in range(args.warm)}
    jobs = [  # seed-major: partial results are paired across methods early
        (name, w, s) for s in range(args.seeds) for w in range(args.warm) for name in names
    ]
    shard, num = (int(x) for x in args.shard.split("/"))
    mine = jobs[shard::num]
    todo = [
        j for j in mine if not os.path.exists(os.path.join(run_dir(args, *j), "final_metrics.json"))
    ]
    print(f"{len(mine)} runs in this shard, {len(todo)} to do", flush=True)
    t_start, done = time.time(), 0
    for name, w, s in todo:
        done += run_one(args, name, w, warms[w], s) > 0
        el = time.time() - t_start
        print(
            f"  [{done}/{len(todo)}] elapsed {el / 60:.1f} min, est. total "
            f"{el / max(done, 1) * len(todo) / 60:.1f} min",
            flush=True,
        )
        write_results(args, args.results)
    print(write_results(args, args.results))


if __name__ == "__main__":
    main()
