"""Toy bandits showing why optimising pass@k differs from optimising pass@1.

Question: with binary rewards, what do the library's pass@k estimators (PKPO, Chen et al.) do that
pass@1 methods (GRPO, RLOO) do not? Two bandits, each trained with REINFORCE on transformed rewards,
vmapped over seeds, with exact (not sampled) evaluation of pass@k from the policy probabilities.

(a) Shared-policy bandit. Each problem has one correct arm out of A = 8; arm a is the correct one for
    a fraction q_a of problems (q_a proportional to 0.6^a). One softmax policy pi over the arms is
    shared by every problem, so pass@k(pi) = sum_a q_a (1 - (1 - pi_a)^k), a concave function of pi.
    Its exact maximiser is water-filling on the KKT conditions q_a k (1 - pi_a)^(k-1) = lambda
    (pi_a > 0): pass@1 puts all mass on the most frequent arm, larger k spreads mass. Policies trained
    with k_opt in {1, 2, 4, 8, 16} (PKPO sloo_minus_one, n = 32, 128 problems per step, Adam) are
    evaluated at k_eval in {1, 2, 4, 8, 16} against the exact optima.

(b) Hard-exploration bandit (designed before any result was seen). A = 64 arms, 128 problems, full
    batch, n = 16 samples per problem per step, 400 steps of SGD (lr 0.05, loss summed over problems).
    Contextual logits: logits[p, a] = b[a] + u[p, a], a shared bias b plus a per-problem table u.
    Half the problems are "easy" (correct arm 0), half "hard" (correct arm uniform on 1..63, one per
    problem). At initialisation pi(arm 0) = 0.9 and every other arm has 0.1/63 = 0.0016, so a hard
    problem is solved in a step with probability about 2.5%. The mechanism under test: pass@1 keeps
    sharpening the shared arm-0 bias on easy problems, which squashes the hard problems' arms
    ("stalls"); pass@k saturates on easy problems (c = n gives zero PKPO reward), so it stops
    sharpening, and it also gives a lone success a larger reward (k/n instead of 1/n). To separate
    the two effects, an ablation runs PKPO with rewards multiplied by n/k at k = 1, 4 and 8 (a lone
    success then gets reward 1 at every k, so differences between these runs are not a step-size
    effect). (The first full run had only k = 4, 8 rescaled, which compares them with an unscaled
    k = 1 and so is confounded by step size; the rescaled k = 1 control was added after that run.)
    k annealing: k_opt = 8 for the first half, then 1. Cumulative solve rate is compared at the end
    of training and at a quarter of it (the end value saturates at 1 for large k).

(c) Comparison: PKPO s / sloo / sloo_minus_one, Chen et al. analytical / bootstrap / full sampling /
    combination, GRPO, RLOO and Tang et al. (k = n) on both bandits.

Scale convention (so one learning rate serves every method): PKPO and Tang et al. weights are
unbiased gradient weights of pass@k, used as ``sum_i w_i grad log pi(a_i)``; per-sample advantages
(GRPO, RLOO, Chen et al.) are used as ``mean_i A_i grad log pi(a_i)``, i.e. w = A / n, the usual
GRPO-style loss normalisation. With this convention PKPO at k = 1 (LOO-centred reward / n) equals
RLOO exactly. Chen's bootstrap advantage is about k times the analytical one in expectation (sum over
about k groups per sample), so it is divided by k. Nothing else is normalised.

Hardware: CPU (2 cores). Wall-clock: full run a few minutes, ``--quick`` seconds. Command::

    .venv/bin/python -m experiments.toy_bandit            # full run, writes experiments/results/
    .venv/bin/python -m experiments.toy_bandit --quick --outdir /tmp/toys
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.toy_gaussian import DEFAULT_OUTDIR, rounded, write_toys_md

# The toy itself lives in the package (notebooks import it from there); re-exported here.
from passk_jax.toys.bandit import (
    K_EVAL,
    METHODS,
    arm_frequencies,
    exact_optimum,
    hard_init_bias,
    hard_problem_set,
    sample_arms,
    sample_weights,
    shared_passk,
    train_hard,
    train_shared,
)

__all__ = [
    "K_EVAL",
    "METHODS",
    "arm_frequencies",
    "exact_optimum",
    "hard_init_bias",
    "hard_problem_set",
    "main",
    "run",
    "sample_arms",
    "sample_weights",
    "shared_passk",
    "train_hard",
    "train_shared",
]


def _config(quick):
    if quick:
        return dict(
            shared_steps=300,
            shared_problems=64,
            shared_seeds=2,
            shared_n=32,
            hard_steps=60,
            hard_seeds=8,
            hard_n=16,
            hard_k_opt=(1, 4, 8),
            hard_rescaled=(),
            shared_k_opt=(1, 4),
            compare=("grpo",),
        )
    return dict(
        shared_steps=1000,
        shared_problems=128,
        shared_seeds=4,
        shared_n=32,
        hard_steps=400,
        hard_seeds=8,
        hard_n=16,
        hard_k_opt=(1, 2, 4, 8),
        hard_rescaled=(1, 4, 8),
        shared_k_opt=(1, 2, 4, 8, 16),
        compare=tuple(METHODS),
    )


def _mse(x):
    x = np.asarray(x, np.float64)
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(x.shape[0]))


def run(quick=False, outdir=DEFAULT_OUTDIR, seed=0, plots=True):
    """Runs both bandits, writes ``<outdir>/toys/bandit.{json,md}`` + PNGs, returns the results."""
    cfg = _config(quick)
    outdir = pathlib.Path(outdir)
    figdir = outdir / "toys"
    figdir.mkdir(parents=True, exist_ok=True)
    key = jax.random.PRNGKey(seed)
    ka, kb = jax.random.split(key)
    res = {
        "quick": quick,
        "config": {a: list(b) if isinstance(b, tuple) else b for a, b in cfg.items()},
    }
    timings = {}

    # (a) Shared-policy bandit.
    t0 = time.time()
    q = arm_frequencies()
    qj = jnp.asarray(q, jnp.float32)
    optima = {k: exact_optimum(q, k) for k in K_EVAL}
    res["shared_q"] = q.tolist()
    res["shared_optima"] = {
        str(k): {"pi": optima[k].tolist(), "passk": float(shared_passk(optima[k], q, k))}
        for k in K_EVAL
    }
    cross = {
        str(k): {str(ke): float(shared_passk(optima[k], q, ke)) for ke in K_EVAL} for k in K_EVAL
    }
    res["shared_optimum_cross"] = cross
    seeds = jax.random.split(ka, cfg["shared_seeds"])
    table, curves = {}, {}
    for k in cfg["shared_k_opt"]:
        pi, curve = jax.vmap(
            lambda s, k=k: train_shared(
                s,
                qj,
                0.05,
                method="pkpo_sloo_minus_one",
                k=k,
                n=cfg["shared_n"],
                problems=cfg["shared_problems"],
                steps=cfg["shared_steps"],
            )
        )(seeds)
        pi = np.asarray(pi, np.float64)
        table[str(k)] = {str(ke): _mse(shared_passk(pi, q, ke)) for ke in K_EVAL}
        table[str(k)]["pi_mean"] = pi.mean(0).tolist()
        curves[str(k)] = np.asarray(curve).mean(0)[:: max(1, cfg["shared_steps"] // 200)].tolist()
    res["shared_table"] = table
    res["shared_curves"] = curves
    checks = {}
    for k in cfg["shared_k_opt"]:
        frac = table[str(k)][str(k)][0] / res["shared_optima"][str(k)]["passk"]
        col = {ko: table[str(ko)][str(k)][0] for ko in cfg["shared_k_opt"]}
        checks[str(k)] = {
            "fraction_of_optimum": frac,
            "reaches_97pct": bool(frac >= 0.97),
            "diagonal_best_in_column": bool(max(col, key=col.get) == k),
        }
    res["shared_checks"] = checks
    # (c) on the shared bandit: every method at k_opt = 4.
    comp = {}
    for m in cfg["compare"]:
        pi, _ = jax.vmap(
            lambda s, m=m: train_shared(
                s,
                qj,
                0.05,
                method=m,
                k=4,
                n=cfg["shared_n"],
                problems=cfg["shared_problems"],
                steps=cfg["shared_steps"],
            )
        )(seeds)
        pi = np.asarray(pi, np.float64)
        comp[m] = {str(ke): _mse(shared_passk(pi, q, ke)) for ke in K_EVAL}
    res["shared_compare_k4"] = comp
    timings["shared"] = time.time() - t0

    # (b) Hard-exploration bandit.
    t0 = time.time()
    hseeds = jax.random.split(kb, cfg["hard_seeds"])
    T = cfg["hard_steps"]
    runs = {}

    def hard(method, k, **kw):
        c = jax.vmap(
            lambda s: train_hard(s, 0.05, method=method, k=k, n=cfg["hard_n"], steps=T, **kw)
        )(hseeds)
        return {a: np.asarray(b, np.float64) for a, b in c.items()}

    for k in cfg["hard_k_opt"]:
        runs[f"pkpo_k{k}"] = hard("pkpo_sloo_minus_one", k)
    runs["pkpo_anneal_8to1"] = hard("pkpo_sloo_minus_one", 8, k_after=1, switch=T // 2)
    for k in cfg["hard_rescaled"]:
        runs[f"pkpo_k{k}_rescaled"] = hard("pkpo_sloo_minus_one", k, rescale=True)
    for m in cfg["compare"]:
        if m != "pkpo_sloo_minus_one":
            runs[m] = hard(m, 4)
    summary = {}
    for name, c in runs.items():
        summary[name] = {a: _mse(b[:, -1]) for a, b in c.items()}
    res["hard_summary"] = summary
    stride = max(1, T // 200)
    res["hard_stride"] = stride
    res["hard_curves"] = {
        name: {a: b.mean(0)[::stride].tolist() for a, b in c.items()} for name, c in runs.items()
    }
    hc = {}
    for k in (4, 8):
        for tag, t in (("", T - 1), ("_quarter", T // 4 - 1)):
            # Paired by seed: same problems and same initial policy.
            d = runs[f"pkpo_k{k}"]["solve_rate"][:, t] - runs["pkpo_k1"]["solve_rate"][:, t]
            dm, dse = _mse(d)
            hc[f"solve_rate_k{k}_minus_k1{tag}"] = {
                "diff": dm,
                "se": dse,
                "holds": bool(dm > 2 * dse),
                "step": t + 1,
            }
        if 1 in cfg["hard_rescaled"] and k in cfg["hard_rescaled"]:
            a, b = runs[f"pkpo_k{k}_rescaled"], runs["pkpo_k1_rescaled"]
            for metric in ("solve_rate", "hard_pass@1"):
                dm, dse = _mse(a[metric][:, T // 4 - 1] - b[metric][:, T // 4 - 1])
                hc[f"rescaled_{metric}_k{k}_minus_k1_quarter"] = {"diff": dm, "se": dse}
    d = runs["pkpo_anneal_8to1"]["pass@1"][:, -1] - runs["pkpo_k1"]["pass@1"][:, -1]
    dm, dse = _mse(d)
    hc["anneal_pass1_minus_k1"] = {
        "diff": dm,
        "se": dse,
        "within_2se": bool(abs(dm) <= 2 * dse),
        "not_worse_by_2se": bool(dm >= -2 * dse),
    }
    res["hard_checks"] = hc
    timings["hard"] = time.time() - t0
    res["timings_s"] = timings

    (figdir / "bandit.json").write_text(json.dumps(rounded(res), indent=1))
    if plots:
        _plots(res, figdir)
    (figdir / "bandit.md").write_text(_markdown(res))
    write_toys_md(outdir)
    return res


def _plots(res, figdir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dpi = 90
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    arms = np.arange(len(res["shared_q"]))
    for i, k in enumerate(K_EVAL):
        ax[0].plot(
            arms,
            res["shared_optima"][str(k)]["pi"],
            "o-",
            ms=3,
            color=f"C{i}",
            label=f"exact k={k}",
        )
        if str(k) in res["shared_table"]:
            ax[0].plot(arms, res["shared_table"][str(k)]["pi_mean"], "x--", color=f"C{i}")
    ax[0].plot(arms, res["shared_q"], "k:", label="q (arm frequency)")
    ax[0].set(xlabel="arm", ylabel="probability", title="shared policy: exact (o) vs trained (x)")
    ax[0].legend(fontsize=7)
    for i, k in enumerate(res["shared_curves"]):
        curve = res["shared_curves"][k]
        x = np.arange(len(curve)) * max(1, res["config"]["shared_steps"] // 200)
        ax[1].plot(x, curve, color=f"C{i}", label=f"k_opt={k}")
        ax[1].axhline(res["shared_optima"][k]["passk"], color=f"C{i}", ls=":")
    ax[1].set(xlabel="step", ylabel="pass@k_opt", title="training (mean over seeds)")
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(figdir / "bandit_shared.png", dpi=dpi)
    plt.close(fig)

    hc = res["hard_curves"]
    hx = np.arange(len(next(iter(hc.values()))["pass@1"])) * max(
        1, res["config"]["hard_steps"] // 200
    )
    names = [n for n in hc if n.startswith("pkpo_k") or n == "pkpo_anneal_8to1"]
    metrics = ("solve_rate", "entropy", "pass@1", "pass@4", "pass@16")
    fig, ax = plt.subplots(1, 5, figsize=(17, 3.3))
    for a, m in zip(ax, metrics):
        for i, nme in enumerate(names):
            a.plot(
                hx,
                hc[nme][m],
                color=f"C{i}",
                lw=1,
                label=nme,
                ls="--" if "rescaled" in nme else "-",
            )
        a.set(title=m, xlabel="step")
    ax[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(figdir / "bandit_hard.png", dpi=dpi)
    plt.close(fig)

    others = [n for n in hc if not n.startswith("pkpo_k") and n != "pkpo_anneal_8to1"]
    if others:
        fig, ax = plt.subplots(1, 3, figsize=(12, 3.3))
        for a, m in zip(ax, ("solve_rate", "pass@1", "pass@16")):
            for i, nme in enumerate(["pkpo_k4"] + others):
                a.plot(hx, hc[nme][m], color=f"C{i % 10}", lw=1, label=nme)
            a.set(title=m, xlabel="step")
        ax[0].legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(figdir / "bandit_compare.png", dpi=dpi)
        plt.close(fig)


def _markdown(res):
    c = res["config"]
    L = ["## Toy bandits", ""]
    if res["quick"]:
        L += ["**Quick mode: few steps and seeds, numbers are indicative only.**", ""]
    L += [
        "Design, scale convention and learning rates: see the docstring of "
        "`experiments/toy_bandit.py`. Cells are mean +- s.e. over seeds.",
        "",
    ]
    L += [
        "### (a) Shared-policy bandit (A = 8, q_a ~ 0.6^a, PKPO sloo_minus_one, n = "
        f"{c['shared_n']}, {c['shared_problems']} problems per step, {c['shared_steps']} Adam "
        f"steps, lr 0.05 cosine-decayed, {c['shared_seeds']} seeds)",
        "",
    ]
    head = "| | " + " | ".join(f"pass@{k}" for k in K_EVAL) + " |"
    L += [head, "|---" * (len(K_EVAL) + 1) + "|"]
    L.append(
        "| exact optimum of each column | "
        + " | ".join(f"{res['shared_optima'][str(k)]['passk']:.4f}" for k in K_EVAL)
        + " |"
    )
    for k in c["shared_k_opt"]:
        t = res["shared_table"][str(k)]
        L.append(
            f"| trained k_opt={k} | "
            + " | ".join(f"{t[str(ke)][0]:.4f} +- {t[str(ke)][1]:.4f}" for ke in K_EVAL)
            + " |"
        )
    for k in K_EVAL:
        t = res["shared_optimum_cross"][str(k)]
        L.append(f"| exact pi*(k={k}) | " + " | ".join(f"{t[str(ke)]:.4f}" for ke in K_EVAL) + " |")
    L += [
        "",
        "Acceptance: trained pass@k_opt / exact optimum, and whether the diagonal is the best "
        "trained entry of its column:",
        "",
    ]
    for k, ch in res["shared_checks"].items():
        L.append(
            f"- k_opt={k}: {100 * ch['fraction_of_optimum']:.2f}% of optimum "
            f"({'>= 97% holds' if ch['reaches_97pct'] else 'FAILS 97%'}); diagonal best: "
            f"{'holds' if ch['diagonal_best_in_column'] else 'FAILS'}"
        )
    L += ["", "![shared](toys/bandit_shared.png)", ""]
    L += [
        "Every method trained for k = 4 on the shared bandit (GRPO and RLOO optimise pass@1, "
        "Tang et al. pass@n):",
        "",
    ]
    L += [head, "|---" * (len(K_EVAL) + 1) + "|"]
    for m, t in res["shared_compare_k4"].items():
        L.append(
            f"| {m} | "
            + " | ".join(f"{t[str(ke)][0]:.4f} +- {t[str(ke)][1]:.4f}" for ke in K_EVAL)
            + " |"
        )
    L += [
        "",
        f"### (b) Hard-exploration bandit ({c['hard_seeds']} seeds, {c['hard_steps']} steps, "
        f"n = {c['hard_n']}, 128 problems, 64 arms)",
        "",
    ]
    cols = ("solve_rate", "pass@1", "hard_pass@1", "pass@4", "pass@16", "entropy")
    L += [
        "| run | " + " | ".join(f"final {x}" for x in cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    for name, s in res["hard_summary"].items():
        L.append(
            f"| {name} | " + " | ".join(f"{s[x][0]:.3f} +- {s[x][1]:.3f}" for x in cols) + " |"
        )
    hc = res["hard_checks"]
    L += ["", "Acceptance (differences paired by seed, at equal samples = end of training):", ""]
    for k in (4, 8):
        for tag in ("", "_quarter"):
            h = hc[f"solve_rate_k{k}_minus_k1{tag}"]
            L.append(
                f"- cumulative solve rate at step {h['step']}, k_opt={k} minus k_opt=1: "
                f"{h['diff']:+.4f} +- {h['se']:.4f} -> {'holds' if h['holds'] else 'FAILS'} "
                "(> 2 s.e.)"
            )
    for name, h in hc.items():
        if name.startswith("rescaled_"):
            L.append(f"- ablation `{name}` (rewards x n/k): {h['diff']:+.4f} +- {h['se']:.4f}")
    h = hc["anneal_pass1_minus_k1"]
    L.append(
        f"- final pass@1, annealed 8->1 minus k_opt=1: {h['diff']:+.4f} +- {h['se']:.4f} -> "
        f"within 2 s.e.: {'holds' if h['within_2se'] else 'FAILS'}; not worse by more than "
        f"2 s.e.: {'holds' if h['not_worse_by_2se'] else 'FAILS'}"
    )
    L += ["", "![hard](toys/bandit_hard.png)", ""]
    if any(not n.startswith("pkpo_k") and n != "pkpo_anneal_8to1" for n in res["hard_summary"]):
        L += [
            "(c) Comparison on the hard bandit (pass@k methods at k = 4):",
            "",
            "![compare](toys/bandit_compare.png)",
            "",
        ]
    L += ["Wall-clock (s): " + ", ".join(f"{a} {b:.1f}" for a, b in res["timings_s"].items()), ""]
    return "\n".join(L)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="few steps and seeds (seconds)")
    p.add_argument("--outdir", default=str(DEFAULT_OUTDIR))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-plots", action="store_true")
    a = p.parse_args(argv)
    t0 = time.time()
    res = run(quick=a.quick, outdir=a.outdir, seed=a.seed, plots=not a.no_plots)
    print((pathlib.Path(a.outdir) / "toys" / "bandit.md").read_text())
    print(f"total wall-clock {time.time() - t0:.1f} s")
    return res


if __name__ == "__main__":
    main()
