"""PKPO's one-dimensional Gaussian toy (Walder & Karkhanis 2025, section 5.1; spec pkpo.md section 4).

Question: how do the PKPO reward transformations behave on a problem where every quantity is known
exactly? The policy is x ~ N(theta, sigma = 0.1), the reward is g(x) = x^2 on [0, 1] and 0 outside
(a cliff at 1), and the objective is maxg@k(theta) = E[max(g(x_1), ..., g(x_k))].

Outputs (PNG + JSON under ``<outdir>/toys/``, a markdown section ``<outdir>/toys/gaussian.md`` that is
merged into ``<outdir>/toys.md``):

* Figure 1: maxg@k(theta) and d/dtheta maxg@k by quadrature for k in {1, 2, 4, 8, 16}, Monte-Carlo
  estimates (``E.maxg_at_k`` and the ``sloo_minus_one`` gradient) overlaid, optimal theta per k.
* Figure 4: variance of six unbiased gradient estimators of maxg@4 at theta = 1 against n, 10,000
  replicates per point (s, sloo, sloo_minus_one from ``E.pkpo_rewards``; the two naive partitioned
  estimators and Tang et al. per disjoint k-set, implemented here).
* Figure 5: effective reward against raw reward for n = 32 rewards uniform on [-1/2, 1/2] (binned).
* Training: gradient ascent on theta with each estimator and k; the mean of the second half of the
  iterates (Polyak averaging, decaying step size) against the quadrature optimum.

Every gradient estimate is REINFORCE with transformed rewards,
``sum_i r_i * d/dtheta log N(x_i; theta, sigma) = sum_i r_i (x_i - theta) / sigma^2``.
All Monte-Carlo work is one jitted, vmapped call per figure (replicates x n x methods).

Hardware: CPU (2 cores). Wall-clock: full run about 1-2 minutes, ``--quick`` a few seconds.
Command::

    .venv/bin/python -m experiments.toy_gaussian            # full run, writes experiments/results/
    .venv/bin/python -m experiments.toy_gaussian --quick --outdir /tmp/toys   # smoke test
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import ndtr

# The toy itself lives in the package (notebooks import it from there); re-exported here.
from passk_jax.toys.gaussian import (
    FIG4_METHODS,
    KS,
    PKPO_ESTIMATORS,
    SIGMA,
    SPEC_FIG4,
    SPEC_OPTIMA,
    effective_reward_samples,
    effective_rewards,
    grad_quadrature,
    gradient_estimates_vs_n,
    maxg_quadrature,
    optimal_theta,
    partition_rewards,
    reward,
    train_theta,
    value_and_gradient_mc,
)

__all__ = [
    "DEFAULT_OUTDIR",
    "FIG4_METHODS",
    "KS",
    "PKPO_ESTIMATORS",
    "SIGMA",
    "SPEC_FIG4",
    "SPEC_OPTIMA",
    "effective_reward_samples",
    "effective_rewards",
    "fig4_checks",
    "grad_quadrature",
    "gradient_estimates_vs_n",
    "main",
    "maxg_quadrature",
    "optimal_theta",
    "partition_rewards",
    "reward",
    "rounded",
    "run",
    "train_theta",
    "value_and_gradient_mc",
    "write_toys_md",
]

DEFAULT_OUTDIR = pathlib.Path(__file__).resolve().parent / "results"


def _config(quick):
    if quick:
        return dict(
            fig1_replicates=256,
            fig1_n=32,
            fig1_thetas=np.linspace(-0.2, 1.4, 9),
            fig4_ns=(4, 8, 16, 32),
            fig4_replicates=2000,
            fig5_replicates=200,
            train_steps=1500,
            train_seeds=2,
            train_n=32,
        )
    return dict(
        fig1_replicates=2000,
        fig1_n=32,
        fig1_thetas=np.linspace(-0.2, 1.4, 17),
        fig4_ns=tuple(range(4, 68, 4)),
        fig4_replicates=10_000,
        fig5_replicates=4000,
        train_steps=20_000,
        train_seeds=8,
        train_n=64,
    )


def run(quick=False, outdir=DEFAULT_OUTDIR, seed=0, plots=True):
    """Runs every part of the Gaussian toy, writes files under ``outdir``, returns the results."""
    cfg = _config(quick)
    outdir = pathlib.Path(outdir)
    figdir = outdir / "toys"
    figdir.mkdir(parents=True, exist_ok=True)
    key = jax.random.PRNGKey(seed)
    k1, k4, k5, kt = jax.random.split(key, 4)
    res = {"quick": quick, "sigma": SIGMA, "config": {}}
    res["config"] = {
        a: (list(map(float, b)) if isinstance(b, np.ndarray) else b) for a, b in cfg.items()
    }
    timings = {}

    # Figure 1: landscape.
    t0 = time.time()
    opt = {k: optimal_theta(k) for k in KS}
    res["optima"] = {
        str(k): {
            "theta": opt[k],
            "maxg": float(maxg_quadrature(opt[k], k)),
            "p_overshoot": float(1.0 - ndtr((1.0 - opt[k]) / SIGMA)),
            "spec_theta": SPEC_OPTIMA[k],
        }
        for k in KS
    }
    thetas = cfg["fig1_thetas"]
    ks_arr = jnp.asarray(KS, jnp.int32)
    val, grad = value_and_gradient_mc(
        k1,
        jnp.asarray(thetas, jnp.float32),
        ks_arr,
        n=cfg["fig1_n"],
        replicates=cfg["fig1_replicates"],
    )
    val, grad = np.asarray(val, np.float64), np.asarray(grad, np.float64)
    R = cfg["fig1_replicates"]
    fig1 = {}
    for i, k in enumerate(KS):
        q_val, q_grad = maxg_quadrature(thetas, k), grad_quadrature(thetas, k)
        v_se, g_se = val[i].std(-1, ddof=1) / np.sqrt(R), grad[i].std(-1, ddof=1) / np.sqrt(R)
        fig1[str(k)] = {
            "theta": list(map(float, thetas)),
            "quad_value": q_val.tolist(),
            "mc_value": val[i].mean(-1).tolist(),
            "mc_value_se": v_se.tolist(),
            "quad_grad": q_grad.tolist(),
            "mc_grad": grad[i].mean(-1).tolist(),
            "mc_grad_se": g_se.tolist(),
            "max_abs_z_value": float(np.max(np.abs(val[i].mean(-1) - q_val) / (v_se + 1e-12))),
            "max_abs_z_grad": float(np.max(np.abs(grad[i].mean(-1) - q_grad) / (g_se + 1e-12))),
        }
    res["fig1"] = fig1
    timings["fig1"] = time.time() - t0

    # Figure 4: variance against n at theta = 1, k = 4.
    t0 = time.time()
    ns = cfg["fig4_ns"]
    R4 = cfg["fig4_replicates"]
    est = gradient_estimates_vs_n(
        k4,
        jnp.float32(1.0),
        jnp.asarray(ns, jnp.int32),
        k=4,
        methods=FIG4_METHODS,
        replicates=R4,
        n_max=max(ns),
    )
    est = np.asarray(est, np.float64)
    true_grad = float(grad_quadrature(1.0, 4))
    means, ses, variances = est.mean(-1), est.std(-1, ddof=1) / np.sqrt(R4), est.var(-1, ddof=1)
    # Standard error of a sample variance: sqrt((m4 - var^2 (R-3)/(R-1)) / R).
    m4 = ((est - means[..., None]) ** 4).mean(-1)
    var_se = np.sqrt(np.maximum(m4 - variances**2 * (R4 - 3) / (R4 - 1), 0.0) / R4)
    res["fig4"] = {
        "true_grad": true_grad,
        "ns": list(ns),
        "methods": list(FIG4_METHODS),
        "mean": means.tolist(),
        "mean_se": ses.tolist(),
        "var": variances.tolist(),
        "var_se": var_se.tolist(),
        "z": ((means - true_grad) / ses).tolist(),
    }
    res["fig4_checks"] = fig4_checks(res["fig4"])
    timings["fig4"] = time.time() - t0

    # Figure 5: effective vs raw reward.
    t0 = time.time()
    g5, r5 = effective_reward_samples(
        k5, ks_arr, n=32, replicates=cfg["fig5_replicates"], estimators=PKPO_ESTIMATORS
    )
    g5, r5 = np.asarray(g5).ravel(), np.asarray(r5)
    edges = np.linspace(-0.5, 0.5, 21)
    idx = np.clip(np.digitize(g5, edges) - 1, 0, 19)
    counts = np.bincount(idx, minlength=20)
    fig5 = {"bin_centres": ((edges[:-1] + edges[1:]) / 2).tolist()}
    for e_i, e in enumerate(PKPO_ESTIMATORS):
        fig5[e] = {
            str(k): (np.bincount(idx, r5[e_i, k_i].ravel(), 20) / np.maximum(counts, 1)).tolist()
            for k_i, k in enumerate(KS)
        }
    res["fig5"] = fig5
    timings["fig5"] = time.time() - t0

    # Training.
    t0 = time.time()
    seeds = jax.random.split(kt, cfg["train_seeds"])
    train = {}
    for e in PKPO_ESTIMATORS:
        avg, traj = train_theta(
            seeds, ks_arr, 0.5, 0.01, n=cfg["train_n"], steps=cfg["train_steps"], estimator=e
        )
        avg, traj = np.asarray(avg, np.float64), np.asarray(traj)
        train[e] = {
            str(k): {
                "theta_mean": float(avg[i].mean()),
                "theta_se": float(avg[i].std(ddof=1) / np.sqrt(avg.shape[1])),
                "max_abs_err": float(np.max(np.abs(avg[i] - opt[k]))),
                "optimum": opt[k],
            }
            for i, k in enumerate(KS)
        }
        train[e]["_traj_mean"] = traj[:: max(1, cfg["train_steps"] // 400)].mean(-1).tolist()
    res["train"] = train
    res["train_checks"] = {
        str(k): train["sloo_minus_one"][str(k)]["max_abs_err"] < 0.01 for k in (1, 2, 4, 8)
    }
    timings["train"] = time.time() - t0
    res["timings_s"] = timings

    (figdir / "gaussian.json").write_text(json.dumps(rounded(res), indent=1))
    if plots:
        _plots(res, figdir)
    md = _markdown(res)
    (figdir / "gaussian.md").write_text(md)
    write_toys_md(outdir)
    return res


def fig4_checks(f4):
    """The acceptance checks of Figure 4, evaluated at every n >= 8."""
    m = {name: i for i, name in enumerate(f4["methods"])}
    var = np.asarray(f4["var"])
    z = np.asarray(f4["z"])
    out = {}
    for j, n in enumerate(f4["ns"]):
        if n < 8:
            continue
        v = {name: var[i, j] for name, i in m.items()}
        out[str(n)] = {
            "s>>sloo": bool(v["s"] > 2 * v["sloo"]),
            "sloo>sloo_minus_one": bool(v["sloo"] > v["sloo_minus_one"]),
            "partition_baselined>sloo": bool(v["partition_baselined"] > v["sloo"]),
            "partition_no_baseline>s": bool(v["partition_no_baseline"] > v["s"]),
            "partition_tang>sloo_minus_one": bool(v["partition_tang"] > v["sloo_minus_one"]),
            "all_means_within_3se": bool(np.all(np.abs(z[:, j]) < 3.0)),
        }
    return out


def _plots(res, figdir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dpi = 90
    # Figure 1.
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    fine = np.linspace(-0.2, 1.4, 400)
    for i, k in enumerate(KS):
        c = f"C{i}"
        f1 = res["fig1"][str(k)]
        ax[0].plot(fine, maxg_quadrature(fine, k), c, label=f"k={k}")
        ax[0].errorbar(
            f1["theta"], f1["mc_value"], 2 * np.asarray(f1["mc_value_se"]), fmt="o", color=c, ms=3
        )
        ax[0].axvline(res["optima"][str(k)]["theta"], color=c, ls=":", lw=0.8)
        ax[1].plot(fine, grad_quadrature(fine, k), c, label=f"k={k}")
        ax[1].errorbar(
            f1["theta"], f1["mc_grad"], 2 * np.asarray(f1["mc_grad_se"]), fmt="o", color=c, ms=3
        )
    ax[0].set(xlabel="theta", ylabel="maxg@k", title="maxg@k: quadrature (lines), MC (dots)")
    ax[1].axhline(0, color="k", lw=0.5)
    ax[1].set(
        xlabel="theta",
        ylabel="d maxg@k / d theta",
        title="gradient (MC: sloo_minus_one)",
        ylim=(-8, 4),
    )
    ax[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(figdir / "gaussian_fig1.png", dpi=dpi)
    plt.close(fig)

    # Figure 4.
    f4 = res["fig4"]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for i, m in enumerate(f4["methods"]):
        ax.plot(f4["ns"], f4["var"][i], "o-", ms=3, label=m)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="n",
        ylabel="variance of gradient estimate",
        title=f"maxg@4 at theta=1 (true grad {f4['true_grad']:.3f})",
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(figdir / "gaussian_fig4.png", dpi=dpi)
    plt.close(fig)

    # Figure 5.
    f5 = res["fig5"]
    fig, ax = plt.subplots(1, 3, figsize=(11, 3.4), sharey=True)
    for a, e in zip(ax, PKPO_ESTIMATORS):
        for i, k in enumerate(KS):
            a.plot(f5["bin_centres"], f5[e][str(k)], "o-", ms=2, color=f"C{i}", label=f"k={k}")
        a.axhline(0, color="k", lw=0.5)
        a.set(title=e, xlabel="raw reward")
    ax[0].set_ylabel("mean effective reward")
    ax[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(figdir / "gaussian_fig5.png", dpi=dpi)
    plt.close(fig)

    # Training trajectories.
    fig, ax = plt.subplots(1, 3, figsize=(11, 3.4), sharey=True)
    for a, e in zip(ax, PKPO_ESTIMATORS):
        traj = np.asarray(res["train"][e]["_traj_mean"])
        steps = np.linspace(0, res["config"]["train_steps"], traj.shape[0], endpoint=False)
        for i, k in enumerate(KS):
            a.plot(steps, traj[:, i], color=f"C{i}", lw=0.8, label=f"k={k}")
            a.axhline(res["optima"][str(k)]["theta"], color=f"C{i}", ls=":", lw=0.8)
        a.set(title=f"training: {e}", xlabel="step", ylim=(0.45, 1.1))
    ax[0].set_ylabel("theta (mean over seeds)")
    ax[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(figdir / "gaussian_train.png", dpi=dpi)
    plt.close(fig)


def _markdown(res):
    L = ["## Gaussian toy (PKPO section 5.1)", ""]
    if res["quick"]:
        L += ["**Quick mode: small replicate counts, numbers are indicative only.**", ""]
    L += ["Policy N(theta, 0.1), reward x^2 on [0, 1] else 0.", ""]
    L += ["### Optimal theta by quadrature", ""]
    L += ["| k | optimal theta | spec | maxg@k at optimum | P(x > 1) |", "|---|---|---|---|---|"]
    for k in KS:
        o = res["optima"][str(k)]
        L.append(
            f"| {k} | {o['theta']:.4f} | {o['spec_theta']:.3f} | {o['maxg']:.4f} | "
            f"{o['p_overshoot']:.3f} |"
        )
    L += ["", "![Figure 1](toys/gaussian_fig1.png)", ""]
    L += [
        "Monte-Carlo (n = {}, {} replicates per theta) against quadrature: largest |z| over the "
        "theta grid per k (value via `E.maxg_at_k`, gradient via `sloo_minus_one`):".format(
            res["config"]["fig1_n"], res["config"]["fig1_replicates"]
        ),
        "",
    ]
    L += ["| k | max abs z (value) | max abs z (gradient) |", "|---|---|---|"]
    for k in KS:
        f = res["fig1"][str(k)]
        L.append(f"| {k} | {f['max_abs_z_value']:.2f} | {f['max_abs_z_grad']:.2f} |")
    f4 = res["fig4"]
    R = res["config"]["fig4_replicates"]
    L += ["", f"### Figure 4: gradient variance, maxg@4 at theta = 1 ({R} replicates)", ""]
    L += [
        f"Quadrature gradient: {f4['true_grad']:.4f}. Variance (mean, z = (mean - true)/s.e.):",
        "",
    ]
    L += ["| n | " + " | ".join(f4["methods"]) + " |", "|---" * (len(f4["methods"]) + 1) + "|"]
    for j, n in enumerate(f4["ns"]):
        cells = [
            f"{f4['var'][i][j]:.3g} ({f4['mean'][i][j]:.2f}, z={f4['z'][i][j]:+.1f})"
            for i in range(len(f4["methods"]))
        ]
        L.append(f"| {n} | " + " | ".join(cells) + " |")
    L += [
        "",
        "Spec reproduction for comparison (s / sloo / sloo_minus_one): "
        + "; ".join(f"n={n}: {a} / {b} / {c}" for n, (a, b, c) in SPEC_FIG4.items())
        + ".",
        "",
    ]
    checks = res["fig4_checks"]
    names = list(next(iter(checks.values())).keys()) if checks else []
    L += ["Figure 4 acceptance checks at every n >= 8:", ""]
    for name in names:
        bad = [n for n, c in checks.items() if not c[name]]
        L.append(f"- `{name}`: " + ("holds at every n" if not bad else f"FAILS at n = {bad}"))
    L += ["", "![Figure 4](toys/gaussian_fig4.png)", ""]
    L += ["### Figure 5: effective against raw reward (n = 32, uniform on [-1/2, 1/2])", ""]
    L += ["![Figure 5](toys/gaussian_fig5.png)", ""]
    L += ["Mean effective reward in the lowest / middle / highest raw-reward bin:", ""]
    L += ["| estimator | " + " | ".join(f"k={k}" for k in KS) + " |", "|---" * (len(KS) + 1) + "|"]
    f5 = res["fig5"]
    for e in PKPO_ESTIMATORS:
        cells = [
            f"{f5[e][str(k)][0]:+.3f} / {f5[e][str(k)][10]:+.3f} / {f5[e][str(k)][-1]:+.3f}"
            for k in KS
        ]
        L.append(f"| {e} | " + " | ".join(cells) + " |")
    c = res["config"]
    L += ["", "### Training theta by stochastic gradient ascent", ""]
    L += [
        f"n = {c['train_n']} samples per step, {c['train_steps']} steps, theta_0 = 0.5, step "
        f"size 0.01 / (1 + t / {c['train_steps'] // 10}), estimate = mean of the second half of "
        f"the iterates, {c['train_seeds']} seeds. Cell: mean over seeds (max abs error over "
        "seeds).",
        "",
    ]
    L += ["| estimator | " + " | ".join(f"k={k}" for k in KS) + " |", "|---" * (len(KS) + 1) + "|"]
    L.append(
        "| quadrature optimum | "
        + " | ".join(f"{res['optima'][str(k)]['theta']:.4f}" for k in KS)
        + " |"
    )
    for e in PKPO_ESTIMATORS:
        t = res["train"][e]
        L.append(
            f"| {e} | "
            + " | ".join(
                f"{t[str(k)]['theta_mean']:.4f} ({t[str(k)]['max_abs_err']:.4f})" for k in KS
            )
            + " |"
        )
    ok = res["train_checks"]
    L += [
        "",
        "Acceptance (sloo_minus_one within 0.01 of the optimum for every seed, k in {1, 2, 4, "
        "8}): " + ", ".join(f"k={k}: {'holds' if v else 'FAILS'}" for k, v in ok.items()),
        "",
    ]
    L += ["![training](toys/gaussian_train.png)", ""]
    L += ["Wall-clock (s): " + ", ".join(f"{a} {b:.1f}" for a, b in res["timings_s"].items()), ""]
    return "\n".join(L)


def rounded(obj, digits=6):
    """Rounds floats in a JSON-like tree to ``digits`` significant digits (keeps files small)."""
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}")
    if isinstance(obj, dict):
        return {a: rounded(b, digits) for a, b in obj.items()}
    if isinstance(obj, list | tuple):
        return [rounded(b, digits) for b in obj]
    return obj


def write_toys_md(outdir):
    """Concatenates the per-script sections (``toys/gaussian.md``, ``toys/bandit.md``)."""
    outdir = pathlib.Path(outdir)
    parts = [
        "# Toy settings",
        "",
        "Written by `experiments/toy_gaussian.py` and `experiments/toy_bandit.py`; do not edit.",
        "",
    ]
    for name in ("gaussian.md", "bandit.md"):
        p = outdir / "toys" / name
        if p.exists():
            parts.append(p.read_text())
    (outdir / "toys.md").write_text("\n".join(parts))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small replicate counts (seconds)")
    p.add_argument("--outdir", default=str(DEFAULT_OUTDIR))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-plots", action="store_true")
    a = p.parse_args(argv)
    t0 = time.time()
    res = run(quick=a.quick, outdir=a.outdir, seed=a.seed, plots=not a.no_plots)
    print((pathlib.Path(a.outdir) / "toys" / "gaussian.md").read_text())
    print(f"total wall-clock {time.time() - t0:.1f} s")
    return res


if __name__ == "__main__":
    main()
