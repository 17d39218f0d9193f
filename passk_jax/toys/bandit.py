"""Bandit toys for pass@k optimisation: a shared policy over arms, and a hard-exploration bandit.

The arms, their exact pass@k optimum and the jitted training loops (``train_shared``, ``train_hard``)
with any weighting of :data:`passk_jax.advantages.ADVANTAGES`; ``experiments/toy_bandit.py`` runs the
study, ``notebooks/toys.ipynb`` plots it. Needs the ``[rl]`` extra (optax).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from passk_jax import advantages as A

__all__ = [
    "K_EVAL",
    "METHODS",
    "arm_frequencies",
    "exact_optimum",
    "hard_init_bias",
    "hard_problem_set",
    "sample_arms",
    "sample_weights",
    "shared_passk",
    "train_hard",
    "train_shared",
]

K_EVAL = (1, 2, 4, 8, 16)
# Methods of the comparison: name -> (registry name, k or None for "use the run's k", convention).
# "sum": unbiased-gradient weights; "mean": per-sample advantages, divided by n.
METHODS = {
    "pkpo_s": ("pkpo_s", None, "sum"),
    "pkpo_sloo": ("pkpo_sloo", None, "sum"),
    "pkpo_sloo_minus_one": ("pkpo_sloo_minus_one", None, "sum"),
    "chen_analytical": ("passk", None, "mean"),
    "chen_bootstrap": ("passk_bootstrap", None, "mean"),
    "chen_full": ("passk_full", None, "mean"),
    "chen_combination": ("passk_combination", None, "mean"),
    "grpo": ("grpo", 1, "mean"),
    "rloo": ("rloo", 1, "mean"),
    "tang": ("tang", -1, "sum"),  # k = n
}


def sample_weights(method, rewards, k, key, scale_by_n_over_k=False):
    """Per-sample gradient weights ``w`` ``[P, G]`` for binary rewards ``[P, G]`` (see module doc).

    ``k`` is a static Python int. The gradient is ``sum_p sum_i w_pi grad log pi_p(a_pi)``.
    """
    name, k_fixed, conv = METHODS[method]
    n = rewards.shape[-1]
    k_use = k if k_fixed is None else (n if k_fixed == -1 else k_fixed)
    w = A.compute_advantages(name, rewards, k=k_use, key=key)
    if name == "passk_bootstrap":
        w = w / k_use
    if conv == "mean":
        w = w / n
    if scale_by_n_over_k:
        w = w * (n / k_use)
    return w


def sample_arms(key, logits_PxA, n):
    """n arms per row by inverse-CDF sampling (cheaper than Gumbel-max over many arms): [P, n]."""
    cdf = jnp.cumsum(jax.nn.softmax(logits_PxA, axis=-1), axis=-1)
    u = jax.random.uniform(key, (logits_PxA.shape[0], n)) * cdf[:, -1:]
    arms = jax.vmap(lambda c, x: jnp.searchsorted(c, x, side="right"))(cdf, u)
    return jnp.minimum(arms, logits_PxA.shape[-1] - 1)


# ----------------------------------------------------------------------------------------------
# (a) Shared-policy bandit.
# ----------------------------------------------------------------------------------------------


def arm_frequencies(num_arms=8, ratio=0.6):
    """q_a proportional to ratio^a (skewed: arm 0 is the most common correct arm)."""
    q = ratio ** np.arange(num_arms, dtype=np.float64)
    return q / q.sum()


def shared_passk(pi, q, k):
    """Exact pass@k of a shared policy: sum_a q_a (1 - (1 - pi_a)^k); broadcasts over pi's rows."""
    return np.sum(q * (1.0 - (1.0 - np.asarray(pi, np.float64)) ** k), axis=-1)


def exact_optimum(q, k, iters=200):
    """argmax_pi sum_a q_a (1 - (1 - pi_a)^k) over the simplex (water-filling on the KKT system).

    k = 1 is linear: all mass on argmax q. For k >= 2 the objective is strictly concave and the KKT
    conditions give pi_a(lambda) = max(0, 1 - (lambda / (k q_a))^(1/(k-1))); sum_a pi_a(lambda) is
    decreasing in lambda, so bisection on lambda finds the unique optimum.
    """
    q = np.asarray(q, np.float64)
    if k == 1:
        pi = np.zeros_like(q)
        pi[np.argmax(q)] = 1.0
        return pi

    def pi_of(lam):
        return np.maximum(0.0, 1.0 - (lam / (k * q)) ** (1.0 / (k - 1)))

    lo, hi = 0.0, k * q.max()
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if pi_of(mid).sum() > 1.0:
            lo = mid
        else:
            hi = mid
    pi = pi_of(0.5 * (lo + hi))
    return pi / pi.sum()


@functools.partial(jax.jit, static_argnames=("method", "k", "n", "problems", "steps"))
def train_shared(key, q, lr, *, method, k, n, problems, steps):
    """Trains one shared softmax policy; returns final probabilities ``[A]`` and pass@k curve."""
    num_arms = q.shape[0]
    opt = optax.adam(optax.cosine_decay_schedule(lr, steps))
    logits = jnp.zeros(num_arms)
    state = opt.init(logits)

    def step(carry, t):
        logits, state = carry
        kk = jax.random.fold_in(key, t)
        k_prob, k_arm, k_w = jax.random.split(kk, 3)
        correct = jax.random.choice(k_prob, num_arms, (problems,), p=q)
        arms = sample_arms(k_arm, jnp.broadcast_to(logits, (problems, num_arms)), n)
        r = (arms == correct[:, None]).astype(jnp.float32)
        w = jax.lax.stop_gradient(sample_weights(method, r, k, k_w))

        def surrogate(lg):
            logp = jax.nn.log_softmax(lg)[arms]
            return jnp.sum(w * logp) / problems

        g = jax.grad(surrogate)(logits)
        upd, state = opt.update(-g, state, logits)
        logits = optax.apply_updates(logits, upd)
        pi = jax.nn.softmax(logits)
        return (logits, state), jnp.sum(q * (1 - (1 - pi) ** k))

    (logits, _), curve = jax.lax.scan(step, (logits, state), jnp.arange(steps))
    return jax.nn.softmax(logits), curve


# ----------------------------------------------------------------------------------------------
# (b) Hard-exploration bandit.
# ----------------------------------------------------------------------------------------------


def hard_problem_set(key, num_problems=128, num_arms=64):
    """Correct arm per problem: first half arm 0 ("easy"), second half uniform on 1..A-1 ("hard")."""
    half = num_problems // 2
    hard = jax.random.randint(key, (num_problems - half,), 1, num_arms)
    return jnp.concatenate([jnp.zeros(half, jnp.int32), hard.astype(jnp.int32)])


def hard_init_bias(num_arms=64, p0=0.9):
    """Shared bias with pi(arm 0) = p0 and (1 - p0)/(A - 1) on each other arm."""
    rest = (1.0 - p0) / (num_arms - 1)
    return jnp.log(jnp.concatenate([jnp.array([p0]), jnp.full(num_arms - 1, rest)]))


@functools.partial(
    jax.jit,
    static_argnames=("method", "k", "k_after", "switch", "n", "steps", "num_arms", "rescale"),
)
def train_hard(
    key, lr, *, method, k, n, steps, num_arms=64, k_after=None, switch=None, rescale=False
):
    """One hard-bandit run (vmap over ``key`` for seeds). Per-step metrics, exact from pi.

    ``k_after``/``switch``: use ``k`` for steps < switch and ``k_after`` afterwards (annealing).

    Returns:
      dict of ``[steps]`` curves: pass@1, pass@4, pass@16 (mean over problems), entropy (mean),
      cumulative solve rate (fraction of problems with at least one sampled success so far), and
      pass@1 on the hard half.
    """
    k_prob, k_run = jax.random.split(key)
    correct = hard_problem_set(k_prob, 128, num_arms)
    P = correct.shape[0]
    params = {"b": hard_init_bias(num_arms), "u": jnp.zeros((P, num_arms))}
    hard = jnp.arange(P) >= P // 2

    def logits_of(p):
        return p["b"][None, :] + p["u"]

    def step(carry, t):
        params, solved = carry
        kk = jax.random.fold_in(k_run, t)
        k_arm, k_w = jax.random.split(kk)
        arms = sample_arms(k_arm, logits_of(params), n)
        r = (arms == correct[:, None]).astype(jnp.float32)
        if switch is None:
            w = sample_weights(method, r, k, k_w, rescale)
        else:
            w = jax.lax.cond(
                t < switch,
                lambda: sample_weights(method, r, k, k_w, rescale),
                lambda: sample_weights(method, r, k_after, k_w, rescale),
            )

        def surrogate(p):
            logp = jnp.take_along_axis(jax.nn.log_softmax(logits_of(p)), arms, axis=-1)
            return jnp.sum(w * logp)

        g = jax.grad(surrogate)(params)
        params = jax.tree.map(lambda a, b: a + lr * b, params, g)
        solved = solved | (r.max(-1) > 0)
        pi = jax.nn.softmax(logits_of(params))
        pc = jnp.take_along_axis(pi, correct[:, None], axis=-1)[:, 0]
        ent = -jnp.sum(pi * jnp.log(pi + 1e-30), axis=-1)
        m = {
            "pass@1": pc.mean(),
            "pass@4": (1 - (1 - pc) ** 4).mean(),
            "pass@16": (1 - (1 - pc) ** 16).mean(),
            "entropy": ent.mean(),
            "solve_rate": solved.mean(),
            "hard_pass@1": jnp.where(hard, pc, 0).sum() / hard.sum(),
        }
        return (params, solved), m

    _, curves = jax.lax.scan(step, (params, jnp.zeros(P, bool)), jnp.arange(steps))
    return curves


# ----------------------------------------------------------------------------------------------
# Driver.
# ----------------------------------------------------------------------------------------------
