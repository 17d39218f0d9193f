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
# # Estimators by hand
#
# Type a group's rewards, pick n and k, and compare the per-sample weights that each method puts into
# the policy-gradient loss `sum_i w_i grad log p(x_i)`:
#
# * PKPO's transforms `s`, `s_loo`, `s_loo-1` (Walder & Karkhanis): unbiased for grad pass@k / maxg@k;
# * Chen et al.'s analytical Pass@k advantage (binary rewards only);
# * GRPO (z-scored rewards) and RLOO (leave-one-out baseline), which target pass@1.
#
# Everything goes through `passk_jax.numpy_api`, the core install's NumPy adapter
# (`pip install passk_jax`; plots need matplotlib, sliders need ipywidgets, which are optional: without
# them the cells below run with fixed values). Set `PASSK_QUICK=1` for the fast version CI runs.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np

from passk_jax import numpy_api as P

QUICK = os.environ.get("PASSK_QUICK") == "1"
try:
    if os.environ.get("PASSK_NO_WIDGETS") == "1":
        raise ImportError("widgets switched off")
    import ipywidgets as W
    from IPython.display import display
except ImportError:
    W = None
print("quick mode:", QUICK, "| widgets:", W is not None)

# label -> registry name (passk_jax.advantages.ADVANTAGES)
METHODS = {
    "PKPO s": "pkpo_s",
    "PKPO s_loo": "pkpo_sloo",
    "PKPO s_loo-1": "pkpo_sloo_minus_one",
    "Chen analytical": "passk",
    "GRPO": "grpo",
    "RLOO": "rloo",
}


def weights(rewards, k):
    """{label: weights [n]} for every method that applies (Chen's needs 0/1 rewards)."""
    r = np.asarray(rewards, np.float32)
    binary = bool(np.isin(r, (0.0, 1.0)).all())
    return {
        label: P.compute_advantages(name, r, k=k)
        for label, name in METHODS.items()
        if binary or name != "passk"
    }


def show(text="1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0", n=8, k=4):
    """Bar chart and table of the weights of the first n rewards of `text` at this k."""
    r = np.asarray([float(x) for x in text.replace(";", ",").split(",") if x.strip()], np.float32)
    r = r[:n]
    k = min(k, len(r))
    table = weights(r, k)
    fig, ax = plt.subplots(figsize=(10, 3.2))
    width = 0.8 / len(table)
    for j, (label, w) in enumerate(table.items()):
        ax.bar(np.arange(len(r)) + (j - (len(table) - 1) / 2) * width, w, width, label=label)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(range(len(r)), [f"{v:g}" for v in r])
    ax.set(xlabel="sample reward", ylabel="weight", title=f"n = {len(r)}, k = {k}")
    ax.legend(fontsize=7, ncol=3)
    plt.show()
    print(f"unbiased maxg@{k} (pass@{k} for 0/1 rewards): {float(P.maxg_at_k(r, k)):.4f}")
    print(f"{'':16s}" + "".join(f"{v:>7g}" for v in r))
    for label, w in table.items():
        print(f"{label:16s}" + "".join(f"{x:7.3f}" for x in w) + f"   sum {w.sum():+.3f}")
    return table


# %% [markdown]
# ## 1. Your rewards
#
# Edit the comma-separated rewards (binary or continuous); n takes the first n of them and k is at
# most n. Things to look for: with two successes in eight, PKPO's `s_loo-1` at k = 4 gives each
# success a positive weight and every failure exactly 0 (its weight is the sample's marginal
# contribution to the maximum of the subsets it is in, and a 0 reward never raises a maximum), while
# GRPO and RLOO push every failure down. All-equal rewards give all-zero weights everywhere.

# %%
if W is not None:
    text = W.Text(value="1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0", description="rewards")
    n_slider = W.IntSlider(value=8, min=2, max=16, description="n")
    k_slider = W.IntSlider(value=4, min=1, max=8, description="k")

    def _bound_k(change):
        k_slider.max = change["new"]

    n_slider.observe(_bound_k, names="value")
    out = W.interactive_output(show, {"text": text, "n": n_slider, "k": k_slider})
    display(W.VBox([text, W.HBox([n_slider, k_slider])]), out)
else:
    show()

# %%
# The same call without widgets: continuous rewards (Chen's binary-only advantage is left out).
table = show("0.1, 0.5, 0.2, 0.9, 0.3, 0.0, 0.7, 0.4", n=8, k=2)
assert set(table) == set(METHODS) - {"Chen analytical"}

# %% [markdown]
# ## 2. Weight of a correct and of a wrong sample against the number of correct samples c
#
# Binary rewards, n = 16: every method's weights depend only on c (and k). pass@1 methods (GRPO, RLOO)
# weigh a lone success and a near-saturated group alike in sign; pass@k methods give almost nothing to
# groups that already pass at k (c large) and concentrate on rare successes.

# %%
n = 16
cs = np.arange(1, n)
fig, ax = plt.subplots(1, 3, figsize=(13, 3.4), sharey=False)
for a, k in zip(ax, (1, 4, 8)):
    groups = (np.arange(n)[None, :] < cs[:, None]).astype(np.float32)  # c ones, then zeros
    for label, w in weights(groups, k).items():
        line = a.plot(cs, w[:, 0], "-", label=f"{label}")[0]
        a.plot(cs, w[:, -1], "--", color=line.get_color())
    a.axhline(0, color="k", lw=0.5)
    a.set(title=f"k = {k}: correct (solid), wrong (dashed)", xlabel="c (correct of 16)")
ax[0].set_ylabel("weight")
ax[0].legend(fontsize=6)
plt.show()

# %% [markdown]
# ## 3. Variance of the gradient estimates, with error bands
#
# A one-parameter policy: a sample is correct with probability p = sigmoid(theta), so
# pass@k = 1 - (1 - p)^k and its exact gradient is `k (1-p)^(k-1) p (1-p)`. Each method's estimate is
# `sum_i w_i (x_i - p)` (`x_i - p` is the score function). Left: the mean estimate with +- 2 standard
# errors (over batches of replicates) against the exact gradient: the PKPO transforms are unbiased,
# the others are not estimators of this gradient at all (different targets and scales). Right: the
# variance relative to the squared mean (1 / SNR), which compares methods regardless of scale.

# %%
p, k = 0.2, 4
ns = (4, 8, 16, 32)
replicates = 2000 if QUICK else 40_000
batches = 20
rng = np.random.default_rng(0)
exact = k * (1 - p) ** (k - 1) * p * (1 - p)
stats = {label: ([], [], [], []) for label in METHODS}  # mean, mean se, rel var, rel var se
full_se = {}  # standard error of the mean over all replicates
# Every n in one call per method: groups padded to max(ns) with a mask (padding gets weight 0 and
# does not count in n), so each method compiles once.
n_max = max(ns)
x = (rng.random((len(ns), replicates, n_max)) < p).astype(np.float32)
mask = np.arange(n_max) < np.asarray(ns)[:, None, None]
x = np.where(mask, x, 0)
for label, name in METHODS.items():
    w = P.compute_advantages(name, x, k=k, mask=mask)
    g_all = (w * (x - p) * mask).sum(-1)  # [ns, replicates]
    full_se[label] = g_all.std(-1, ddof=1) / np.sqrt(replicates)
    g = g_all.reshape(len(ns), batches, -1)  # [ns, batches, replicates / batches]
    m, v = g.mean(-1), g.var(-1, ddof=1)
    rel = v / np.maximum(m**2, 1e-12)
    for lst, val in zip(
        stats[label], (m.mean(-1), m.std(-1, ddof=1), rel.mean(-1), rel.std(-1, ddof=1))
    ):
        lst.extend(val)
fig, ax = plt.subplots(1, 2, figsize=(11, 3.6))
for label, (m, m_se, rv, rv_se) in stats.items():
    m, m_se, rv, rv_se = (np.asarray(a) for a in (m, m_se, rv, rv_se))
    m_se, rv_se = m_se / np.sqrt(batches), rv_se / np.sqrt(batches)
    line = ax[0].plot(ns, m, "o-", ms=3, label=label)[0]
    ax[0].fill_between(ns, m - 2 * m_se, m + 2 * m_se, color=line.get_color(), alpha=0.25)
    ax[1].plot(ns, rv, "o-", ms=3, color=line.get_color())
    ax[1].fill_between(ns, rv - 2 * rv_se, rv + 2 * rv_se, color=line.get_color(), alpha=0.25)
ax[0].axhline(exact, color="k", ls="--", lw=1, label="exact grad pass@4")
ax[0].set(xscale="log", xlabel="n", ylabel="mean estimate", title=f"p = {p}, k = {k}")
ax[1].set(xscale="log", yscale="log", xlabel="n", ylabel="variance / mean^2", title="1 / SNR")
for a in ax:
    a.set_xticks(ns, [str(n) for n in ns])
ax[0].legend(fontsize=6)
plt.show()
for label in ("PKPO s", "PKPO s_loo", "PKPO s_loo-1"):
    m = np.asarray(stats[label][0])
    z = np.abs((m - exact) / np.asarray(full_se[label])).max()
    print(f"{label:14s} mean {np.round(m, 4)}  (exact {exact:.4f}, largest |z| {z:.1f})")
    assert z < 5, "an unbiased estimator should be within a few standard errors of the exact value"

# %% [markdown]
# ## 4. The weighting atlas: which objective each method ascends
#
# For binary rewards with success probability p, every method's expected gradient on one prompt is
# `m(p) grad p` (`passk_jax.advantages.expected_weight`, an exact sum over the number of correct
# samples); its integral `F(p)` (`surrogate_objective`) is the objective the method really optimises.
# PKPO's unbiased transforms give `m = k (1 - p)^(k-1)` and `F` = pass@k; GRPO's weight grows at
# both ends, RLOO's is flat (pass@1). The full atlas over every registered method is
# `experiments/weighting_atlas.py` (results in `experiments/results/`).

# %%
from passk_jax import advantages as A

n_atlas, k_atlas = 16, 4
grid = np.linspace(0.0, 1.0, 51 if QUICK else 201)
fig, ax = plt.subplots(1, 2, figsize=(11, 3.6))
for label, name in METHODS.items():
    kk = None if name in ("grpo", "rloo") else k_atlas
    m = A.expected_weight(name, grid, n_atlas, kk)
    f = A.surrogate_objective(name, grid, n_atlas, kk)
    mid = A.expected_weight(name, np.array([0.5]), n_atlas, kk)[0]
    ax[0].plot(grid[1:-1], m[1:-1] / mid, label=label)
    ax[1].plot(grid, f / f[-1], label=label)
ax[0].plot(
    grid,
    k_atlas * (1 - grid) ** (k_atlas - 1) / (k_atlas * 0.5 ** (k_atlas - 1)),
    "k:",
    label="k(1-p)^(k-1)",
)
ax[0].set(
    yscale="log",
    xlabel="p",
    ylabel="m(p) / m(0.5)",
    title=f"step size per prompt (n={n_atlas}, k={k_atlas})",
)
ax[1].set(xlabel="p", ylabel="F(p) / F(1)", title="objective ascended")
ax[0].legend(fontsize=6)
plt.show()
pk = A.expected_weight("pkpo_sloo_minus_one", grid, n_atlas, k_atlas)
assert np.allclose(pk, k_atlas * (1 - grid) ** (k_atlas - 1), atol=1e-4), (
    "PKPO's m(p) is k(1-p)^(k-1)"
)
