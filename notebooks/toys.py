# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Toy settings for pass@k optimisation
#
# Two toys where everything is known exactly (`passk_jax.toys.gaussian` and `passk_jax.toys.bandit`,
# installed with `pip install "passk_jax[rl]"`; the studies are `experiments/toy_gaussian.py` and
# `experiments/toy_bandit.py`, full results in `experiments/results/toys.md`):
#
# 1. PKPO's Gaussian toy: x ~ N(theta, 0.1), reward x^2 on [0, 1] else 0. The optimal theta moves
#    towards the cliff at 1 as k grows, and the variance of the gradient estimators differs a lot.
# 2. Bandits: a shared policy that cannot be right on every problem (pass@k has an exact optimum),
#    and a hard-exploration bandit where pass@1 training collapses onto a common arm.
#
# Set `PASSK_QUICK=1` for the fast version that CI executes.

# %%
import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from passk_jax.toys import bandit as tb
from passk_jax.toys import gaussian as tg

QUICK = os.environ.get("PASSK_QUICK") == "1"
print("quick mode:", QUICK)

# %% [markdown]
# ## 1. Gaussian toy: landscape and optimal theta per k (quadrature)

# %%
thetas = np.linspace(-0.2, 1.4, 300)
fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
for k in tg.KS:
    ax[0].plot(thetas, tg.maxg_quadrature(thetas, k), label=f"k={k}")
    ax[1].plot(thetas, tg.grad_quadrature(thetas, k))
ax[0].set(xlabel="theta", ylabel="maxg@k")
ax[1].set(xlabel="theta", ylabel="d maxg@k / d theta", ylim=(-8, 4))
ax[1].axhline(0, color="k", lw=0.5)
ax[0].legend()
plt.show()
{k: round(tg.optimal_theta(k), 4) for k in tg.KS}

# %% [markdown]
# ## Gradient-estimator variance at theta = 1, k = 4 (one jitted call: methods x n x replicates)

# %%
ns = (4, 8, 16, 32)
replicates = 1000 if QUICK else 10_000
est = tg.gradient_estimates_vs_n(
    jax.random.PRNGKey(0),
    jnp.float32(1.0),
    jnp.asarray(ns),
    k=4,
    methods=tg.FIG4_METHODS,
    replicates=replicates,
    n_max=max(ns),
)
est = np.asarray(est)  # [methods, len(ns), replicates]
exact = float(tg.grad_quadrature(1.0, 4))
# Error bands: split the replicates into 20 batches; +- 2 standard errors of the batch statistics.
batches = est.reshape(est.shape[0], est.shape[1], 20, -1)
b_mean, b_var = batches.mean(-1), batches.var(-1, ddof=1)
fig, ax = plt.subplots(1, 2, figsize=(11, 3.6))
for j, name in enumerate(tg.FIG4_METHODS):
    for a, stat in ((ax[0], b_mean[j]), (ax[1], b_var[j])):
        mid, se = stat.mean(-1), stat.std(-1, ddof=1) / np.sqrt(stat.shape[-1])
        a.plot(ns, mid, "o-", ms=3, label=name)
        a.fill_between(ns, mid - 2 * se, mid + 2 * se, alpha=0.25)
ax[0].axhline(exact, color="k", lw=1, ls="--", label="quadrature")
ax[0].set(
    xscale="log", xlabel="n", ylabel="mean gradient estimate", title="unbiased: all on the line"
)
ax[1].set(xscale="log", yscale="log", xlabel="n", ylabel="variance", title="variance (log)")
ax[0].legend(fontsize=7)
for a in ax:
    a.set_xticks(ns, [str(n) for n in ns])
plt.show()
print(f"quadrature gradient: {exact:.4f}")
for name, row in zip(tg.FIG4_METHODS, est):
    print(f"{name:24s} mean {row.mean(-1).round(2)}  var {row.var(-1).round(2)}")

# %% [markdown]
# ## 2. Shared-policy bandit: exact optimum per k
#
# pass@k = sum_a q_a (1 - (1 - pi_a)^k). pass@1 puts everything on the most frequent arm; larger
# k spreads probability over more arms.

# %%
q = tb.arm_frequencies()
fig, ax = plt.subplots(figsize=(5, 3.2))
for k in tb.K_EVAL:
    ax.plot(tb.exact_optimum(q, k), "o-", ms=3, label=f"k={k}")
ax.plot(q, "k:", label="q")
ax.set(xlabel="arm", ylabel="optimal probability")
ax.legend(fontsize=7)
plt.show()

# %%
steps = 200 if QUICK else 2000
trained = {}
for k in (1, 4):
    pi, curve = tb.train_shared(
        jax.random.PRNGKey(k),
        jnp.asarray(q, jnp.float32),
        0.05,
        method="pkpo_sloo_minus_one",
        k=k,
        n=32,
        problems=64,
        steps=steps,
    )
    trained[k] = np.asarray(pi)
    opt = tb.shared_passk(tb.exact_optimum(q, k), q, k)
    print(f"k_opt={k}: pass@{k} {tb.shared_passk(trained[k], q, k):.4f} (exact optimum {opt:.4f})")

# %% [markdown]
# ## 3. Hard-exploration bandit: pass@1 collapses, pass@8 keeps exploring

# %%
hard_steps = 40 if QUICK else 400
seeds = jax.random.split(jax.random.PRNGKey(0), 4 if QUICK else 8)
curves = {}
for k in (1, 8):
    c = jax.vmap(
        lambda s, k=k: tb.train_hard(
            s, 0.05, method="pkpo_sloo_minus_one", k=k, n=16, steps=hard_steps
        )
    )(seeds)
    curves[k] = {m: np.asarray(v).mean(0) for m, v in c.items()}
fig, ax = plt.subplots(1, 3, figsize=(12, 3.2))
for a, m in zip(ax, ("solve_rate", "entropy", "pass@16")):
    for k, c in curves.items():
        a.plot(c[m], label=f"k_opt={k}")
    a.set(title=m, xlabel="step")
ax[0].legend()
plt.show()
