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
import functools
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import ndtr

from passk_jax import estimators as E

SIGMA = 0.1
KS = (1, 2, 4, 8, 16)
# Quadrature optima quoted in the spec (pkpo.md section 4), 3 decimals.
SPEC_OPTIMA = {1: 0.862, 2: 0.902, 4: 0.939, 8: 0.969, 16: 0.986}
# Spec's own reproduction of Figure 4 (theta = 1, k = 4, 10,000 replicates): n -> (s, sloo, sloo-1).
SPEC_FIG4 = {
    4: (268, 264, 10.2),
    8: (116, 13.1, 2.0),
    16: (56.8, 3.4, 0.82),
    32: (27.5, 1.25, 0.39),
}
PKPO_ESTIMATORS = ("s", "sloo", "sloo_minus_one")
FIG4_METHODS = (
    "s",
    "sloo",
    "sloo_minus_one",
    "partition_baselined",
    "partition_no_baseline",
    "partition_tang",
)
DEFAULT_OUTDIR = pathlib.Path(__file__).resolve().parent / "results"

# Gauss-Legendre nodes on u in [0, 1], where y = u^2 is the reward level.
_GL_U, _GL_W = np.polynomial.legendre.leggauss(400)
_GL_U, _GL_W = (_GL_U + 1.0) / 2.0, _GL_W / 2.0


def reward(x):
    """g(x) = x^2 on [0, 1], 0 elsewhere (PKPO Eq. 35)."""
    return jnp.where((x >= 0.0) & (x <= 1.0), x * x, 0.0)


# ----------------------------------------------------------------------------------------------
# Quadrature (float64 numpy): maxg@k = int_0^1 P(max > y) dy = int_0^1 (1 - F(u^2)^k) 2u du,
# with F(y) = P(g(x) <= y) = 1 - Phi((1 - theta)/sigma) + Phi((sqrt(y) - theta)/sigma).
# ----------------------------------------------------------------------------------------------


def _cdf_u(theta, sigma):
    theta = np.asarray(theta, np.float64)[..., None]
    return 1.0 - ndtr((1.0 - theta) / sigma) + ndtr((_GL_U - theta) / sigma), theta


def maxg_quadrature(theta, k, sigma=SIGMA):
    """Exact maxg@k(theta) by Gauss-Legendre quadrature; ``theta`` broadcasts."""
    F, _ = _cdf_u(theta, sigma)
    return np.sum(_GL_W * (1.0 - F**k) * 2.0 * _GL_U, axis=-1)


def grad_quadrature(theta, k, sigma=SIGMA):
    """Exact d/dtheta maxg@k(theta) (differentiating under the integral)."""
    F, th = _cdf_u(theta, sigma)
    phi = lambda z: np.exp(-0.5 * z * z) / np.sqrt(2.0 * np.pi)
    dF = (phi((1.0 - th) / sigma) - phi((_GL_U - th) / sigma)) / sigma
    return np.sum(_GL_W * (-k * F ** (k - 1) * dF) * 2.0 * _GL_U, axis=-1)


def optimal_theta(k, sigma=SIGMA):
    """argmax_theta maxg@k(theta) by bounded scalar search on the quadrature."""
    res = minimize_scalar(
        lambda t: -maxg_quadrature(t, k, sigma),
        bounds=(0.3, 1.3),
        method="bounded",
        options={"xatol": 1e-9},
    )
    return float(res.x)


# ----------------------------------------------------------------------------------------------
# Partitioned estimators (PKPO Figure 4 baselines). Rewards g_RxG with a prefix mask of n valid
# samples, n a multiple of k; the n samples are split in order into n/k disjoint k-sets.
# All three are scaled by 1/(n/k) = k/n, so they estimate the same gradient as E.pkpo_rewards.
# ----------------------------------------------------------------------------------------------


def partition_rewards(g, k, method, mask=None):
    """Effective rewards of the naive partitioned estimators and of Tang et al. per k-set.

    Args:
      g: ``[..., G]`` float rewards, ``G`` a multiple of ``k``.
      k: static int set size.
      method: ``"partition_baselined"`` (member gets set max minus the mean max of the other sets),
        ``"partition_no_baseline"`` (member gets set max) or ``"partition_tang"`` (member gets set
        max minus the max of its set without it: top minus second-best for the arg-max, else 0).
      mask: optional ``[..., G]`` bool; valid samples must fill whole leading k-sets.

    Returns:
      ``[..., G]`` effective rewards; the estimate of d maxg@k is ``sum_i r_i * score_i``.
    """
    G = g.shape[-1]
    mask = jnp.ones(g.shape, bool) if mask is None else jnp.broadcast_to(mask, g.shape)
    sets = g.reshape(g.shape[:-1] + (G // k, k))
    set_ok = mask.reshape(sets.shape).all(-1)
    num_sets = jnp.maximum(set_ok.sum(-1, keepdims=True), 1).astype(g.dtype)
    top = sets.max(-1)
    if method == "partition_no_baseline":
        per_set = top[..., None] * jnp.ones_like(sets)
    elif method == "partition_baselined":
        tot = jnp.where(set_ok, top, 0.0).sum(-1, keepdims=True)
        others = jnp.where(num_sets > 1, (tot - top) / jnp.maximum(num_sets - 1, 1), 0.0)
        per_set = (top - others)[..., None] * jnp.ones_like(sets)
    elif method == "partition_tang":
        second = jnp.sort(sets, axis=-1)[..., -2] if k > 1 else jnp.zeros_like(top)
        is_top = jax.nn.one_hot(jnp.argmax(sets, axis=-1), k, dtype=bool)
        per_set = jnp.where(is_top, (top - second)[..., None], 0.0)
    else:
        raise ValueError(f"unknown partitioned method {method!r}")
    r = per_set.reshape(g.shape) / num_sets
    return jnp.where(mask, r, 0.0)


def effective_rewards(g, k, method, mask=None):
    """Dispatch: PKPO estimators come from the library, partitioned ones from this module."""
    if method in PKPO_ESTIMATORS:
        return E.pkpo_rewards(g, k, estimator=method, mask=mask)
    return partition_rewards(g, k, method, mask)


def _sample(key, theta, shape, sigma=SIGMA):
    x = theta + sigma * jax.random.normal(key, shape)
    return x, reward(x)


@functools.partial(jax.jit, static_argnames=("k", "methods", "replicates", "n_max"))
def gradient_estimates_vs_n(key, theta, ns, *, k, methods, replicates, n_max):
    """Gradient estimates of maxg@k for every (method, n, replicate) in one call.

    The same ``[replicates, n_max]`` draws are used for every n via a prefix mask, so points at
    different n are correlated with each other but each is an average of independent replicates.

    Returns:
      ``[len(methods), len(ns), replicates]`` float32 estimates.
    """
    x, g = _sample(key, theta, (replicates, n_max))
    score = (x - theta) / SIGMA**2

    def one_n(n):
        mask = jnp.broadcast_to(jnp.arange(n_max)[None, :] < n, g.shape)
        rows = [(effective_rewards(g, k, m, mask) * score).sum(-1) for m in methods]
        return jnp.stack(rows)

    return jnp.moveaxis(jax.vmap(one_n)(ns), 0, 1)


@functools.partial(jax.jit, static_argnames=("n", "replicates"))
def value_and_gradient_mc(key, thetas, ks, *, n, replicates):
    """MC maxg@k (``E.maxg_at_k``) and sloo_minus_one gradient over a theta grid and ks.

    Returns:
      Two ``[len(ks), len(thetas), replicates]`` arrays: value estimates, gradient estimates.
    """
    keys = jax.random.split(key, thetas.shape[0])

    def at_theta(kk, theta):
        x, g = _sample(kk, theta, (replicates, n))
        score = (x - theta) / SIGMA**2

        def at_k(k):
            val = E.maxg_at_k(g, k)
            grad = (E.pkpo_rewards(g, k, estimator="sloo_minus_one") * score).sum(-1)
            return val, grad

        return jax.vmap(at_k)(ks)

    val, grad = jax.vmap(at_theta, out_axes=1)(keys, thetas)
    return val, grad


@functools.partial(jax.jit, static_argnames=("n", "replicates", "estimators"))
def effective_reward_samples(key, ks, *, n, replicates, estimators):
    """Raw rewards ``[R, n]`` uniform on [-1/2, 1/2] and effective rewards ``[E, K, R, n]``."""
    g = jax.random.uniform(key, (replicates, n), minval=-0.5, maxval=0.5)
    out = [jax.vmap(lambda k, e=e: E.pkpo_rewards(g, k, estimator=e))(ks) for e in estimators]
    return g, jnp.stack(out)


@functools.partial(jax.jit, static_argnames=("n", "steps", "estimator"))
def train_theta(key, ks, theta0, lr0, *, n, steps, estimator):
    """Stochastic gradient ascent on theta for every k in ``ks`` and every seed key.

    Step size lr_t = lr0 / (1 + t / (steps / 10)); the returned estimate is the mean of the
    second half of the iterates (Polyak-Ruppert averaging), which removes most SGD noise.

    Args:
      key: ``[S, 2]`` keys, one per seed.
      ks: ``[K]`` int32.
      theta0, lr0: floats.

    Returns:
      ``(theta_avg [K, S], trajectory [steps, K, S])``.
    """
    tau = steps / 10.0

    def run(k, seed_key):
        def step(theta, t):
            x, g = _sample(jax.random.fold_in(seed_key, t), theta, (n,))
            r = E.pkpo_rewards(g, k, estimator=estimator)
            grad = jnp.sum(r * (x - theta)) / SIGMA**2
            theta = theta + lr0 / (1.0 + t / tau) * grad
            return theta, theta

        _, traj = jax.lax.scan(step, jnp.float32(theta0), jnp.arange(steps))
        return traj[steps // 2 :].mean(), traj

    avg, traj = jax.vmap(lambda k: jax.vmap(lambda s: run(k, s))(key))(ks)
    return avg, jnp.moveaxis(traj, -1, 0)


# ----------------------------------------------------------------------------------------------
# Driver.
# ----------------------------------------------------------------------------------------------


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
