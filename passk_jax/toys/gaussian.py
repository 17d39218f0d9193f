"""PKPO's one-dimensional Gaussian toy (Walder & Karkhanis 2025, section 5.1): the model and estimators.

The policy is x ~ N(theta, sigma = 0.1), the reward is g(x) = x^2 on [0, 1] and 0 outside (a cliff at
1), and the objective is maxg@k(theta) = E[max(g(x_1), ..., g(x_k))]. This module holds the exact
quantities (quadrature), the partitioned estimators compared in PKPO's Figure 4 and the jitted
Monte-Carlo / training kernels; ``experiments/toy_gaussian.py`` runs the study and writes its results,
``notebooks/toys.ipynb`` plots them. Needs the ``[rl]`` extra (scipy).

Every gradient estimate is REINFORCE with transformed rewards,
``sum_i r_i * d/dtheta log N(x_i; theta, sigma) = sum_i r_i (x_i - theta) / sigma^2``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import ndtr

from passk_jax import estimators as E

__all__ = [
    "FIG4_METHODS",
    "KS",
    "PKPO_ESTIMATORS",
    "SIGMA",
    "SPEC_FIG4",
    "SPEC_OPTIMA",
    "effective_reward_samples",
    "effective_rewards",
    "grad_quadrature",
    "gradient_estimates_vs_n",
    "maxg_quadrature",
    "optimal_theta",
    "partition_rewards",
    "reward",
    "train_theta",
    "value_and_gradient_mc",
]

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
