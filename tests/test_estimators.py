"""Estimator kernels against brute-force enumeration, the spec's oracles, invariances and edge cases."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import gammaln

from passk_jax import estimators as E

# ---------------------------------------------------------------------------------------------------
# Slow, obviously correct references: enumerate every size-k subset.


def comb0(a, b):
    return math.comb(a, b) if a >= 0 else 0


def brute_maxg(g, k):
    return np.mean([max(g[j] for j in sub) for sub in itertools.combinations(range(len(g)), k)])


def brute_s_set(g, k, idx, i):
    """S(i, k, idx) = (1/C(|idx|, k)) sum over size-k subsets of idx containing i of their max."""
    subs = [s for s in itertools.combinations(idx, k) if i in s]
    return sum(max(g[j] for j in s) for s in subs) / math.comb(len(idx), k)


def brute_transform(g, k, estimator):
    g = np.asarray(g, np.float64)
    n = len(g)
    idx = list(range(n))
    out = np.zeros(n)
    for i in idx:
        s_i = brute_s_set(g, k, idx, i)
        if estimator == "s":
            out[i] = s_i
        elif estimator == "sloo":
            rest = [j for j in idx if j != i]
            base = 0.0 if k > n - 1 else sum(brute_s_set(g, k, rest, j) for j in rest)
            out[i] = s_i - base / (n - 1)
        elif k == 1:
            out[i] = (g[i] - (g.sum() - g[i]) / (n - 1)) / n
        else:
            subs = [s for s in itertools.combinations(idx, k) if i in s]
            out[i] = sum(
                max(g[j] for j in s) - max(g[j] for j in s if j != i) for s in subs
            ) / math.comb(n, k)
    return out


def random_rewards(rng, n, kind):
    if kind == "binary":
        return rng.integers(0, 2, n).astype(np.float32)
    if kind == "ties":
        return rng.choice([-0.5, 0.0, 0.25, 1.0], n).astype(np.float32)
    return rng.normal(size=n).astype(np.float32)


@pytest.mark.parametrize("n", range(1, 9))
@pytest.mark.parametrize("kind", ["binary", "ties", "continuous"])
def test_against_brute_force_all_n_k(n, kind):
    rng = np.random.default_rng(100 * n + len(kind))
    for _ in range(3):
        g = random_rewards(rng, n, kind)
        for k in range(1, n + 1):
            np.testing.assert_allclose(E.maxg_at_k(g, k), brute_maxg(g, k), rtol=1e-5, atol=1e-6)
            for est in E.ESTIMATORS:
                if est != "s" and n < 2:
                    continue
                got = E.pkpo_rewards(g, k, est)
                np.testing.assert_allclose(
                    got,
                    brute_transform(g, k, est),
                    rtol=1e-5,
                    atol=2e-6,
                    err_msg=f"{est} n={n} k={k} g={g}",
                )


def test_batched_matches_per_group():
    rng = np.random.default_rng(0)
    g = rng.normal(size=(3, 4, 7)).astype(np.float32)
    for est in E.ESTIMATORS:
        batched = E.pkpo_rewards(g, 3, est)
        for a in range(3):
            for b in range(4):
                np.testing.assert_allclose(
                    batched[a, b], brute_transform(g[a, b], 3, est), atol=2e-6
                )
    np.testing.assert_allclose(
        E.maxg_at_k(g, 3),
        np.vectorize(lambda a, b: brute_maxg(g[a, b], 3))(*np.indices((3, 4))),
        rtol=1e-5,
    )


# ---------------------------------------------------------------------------------------------------
# Worked vectors and closed forms from spec/pkpo.md section 9.


def test_worked_vector_continuous():
    g = np.array([0.1, 0.5, 0.2, 0.9, 0.3], np.float32)
    np.testing.assert_allclose(E.maxg_at_k(g, 2), 0.59, atol=1e-6)
    np.testing.assert_allclose(E.pkpo_rewards(g, 2, "s"), [0.19, 0.24, 0.19, 0.36, 0.20], atol=1e-6)
    np.testing.assert_allclose(
        E.pkpo_rewards(g, 2, "sloo"), [-0.143333, -0.051667, -0.143333, 0.168333, -0.125], atol=1e-6
    )
    np.testing.assert_allclose(E.pkpo_rewards(g, 2), [0, 0.09, 0.01, 0.25, 0.03], atol=1e-6)
    np.testing.assert_allclose(E.maxg_at_k(g, 3), 0.72, atol=1e-6)
    np.testing.assert_allclose(E.pkpo_rewards(g, 3), [0, 0.07, 0, 0.31, 0.01], atol=1e-6)


def test_worked_vector_binary():
    f = np.array([1, 0, 0, 1, 0, 0, 0, 0])  # int input must not be truncated (Listing 1 pitfall)
    exp = {"s": (0.5, 0.35714), "sloo": (0.17347, -0.13265), "sloo_minus_one": (0.28571, 0.0)}
    for est, (pos, neg) in exp.items():
        np.testing.assert_allclose(E.pkpo_rewards(f, 4, est), np.where(f == 1, pos, neg), atol=1e-5)


_pass_jit = jax.jit(E.pass_at_k)
_pkpo_jit = jax.jit(E.pkpo_rewards, static_argnames="estimator")
_maxg_jit = jax.jit(E.maxg_at_k)


@pytest.mark.parametrize("n", [2, 5, 8, 13])
def test_binary_closed_forms(n):
    for c in range(n + 1):
        f = np.array([1] * c + [0] * (n - c))
        for k in range(1, n + 1):
            rho = lambda nn, cc, kk: 1 - comb0(nn - cc, kk) / math.comb(nn, kk) if kk else 0.0
            np.testing.assert_allclose(_maxg_jit(f, k), rho(n, c, k), atol=1e-6)
            np.testing.assert_allclose(_pass_jit(c, n, k), rho(n, c, k), atol=1e-6)
            s_exp = np.where(f == 1, k / n, k / n * rho(n - 1, c, k - 1))
            np.testing.assert_allclose(_pkpo_jit(f, k, "s"), s_exp, atol=1e-6)
            if k >= 2:
                pos = comb0(n - c, k - 1) / math.comb(n, k)
                np.testing.assert_allclose(_pkpo_jit(f, k), np.where(f == 1, pos, 0.0), atol=1e-6)
            if k < n:
                loo = [s_exp[i] - k / (n - 1) * rho(n - 1, c - f[i], k) for i in range(n)]
                np.testing.assert_allclose(_pkpo_jit(f, k, "sloo"), loo, atol=1e-6)


def test_k1_and_kn_reductions():
    rng = np.random.default_rng(1)
    g = rng.normal(size=9).astype(np.float32)
    n = len(g)
    others = (g.sum() - g) / (n - 1)
    np.testing.assert_allclose(E.maxg_at_k(g, 1), g.mean(), rtol=1e-6)
    np.testing.assert_allclose(E.pkpo_rewards(g, 1, "s"), g / n, rtol=1e-6)
    np.testing.assert_allclose(E.pkpo_rewards(g, 1, "sloo"), g / n - others / (n - 1), atol=1e-6)
    np.testing.assert_allclose(E.pkpo_rewards(g, 1), (g - others) / n, atol=1e-6)
    # k = n
    np.testing.assert_allclose(E.maxg_at_k(g, n), g.max())
    np.testing.assert_allclose(E.pkpo_rewards(g, n, "s"), np.full(n, g.max()), rtol=1e-6)
    np.testing.assert_allclose(E.pkpo_rewards(g, n, "sloo"), E.pkpo_rewards(g, n, "s"))
    second = np.sort(g)[-2]
    tang = np.where(g == g.max(), g.max() - second, 0.0)
    np.testing.assert_allclose(E.pkpo_rewards(g, n), tang, atol=1e-6)
    tied = np.array([1.0, 3.0, 3.0, 0.0], np.float32)
    np.testing.assert_allclose(E.pkpo_rewards(tied, 4), np.zeros(4), atol=1e-7)


def test_sum_and_loo_identities():
    rng = np.random.default_rng(2)
    g = rng.normal(size=10).astype(np.float32)
    for k in range(1, 11):
        np.testing.assert_allclose(
            E.pkpo_rewards(g, k, "s").sum(), k * E.maxg_at_k(g, k), rtol=1e-5, atol=1e-5
        )
    # b_i^(k) = k rho_{-i}(k): s - sloo = k/(n-1) rho_{-i}(k)
    k, n = 4, 10
    diff = E.pkpo_rewards(g, k, "s") - E.pkpo_rewards(g, k, "sloo")
    loo = np.array([E.maxg_at_k(np.delete(g, i), k) for i in range(n)])
    np.testing.assert_allclose(diff, k / (n - 1) * loo, rtol=1e-5, atol=1e-6)
    diff1 = E.pkpo_rewards(g, k, "s") - E.pkpo_rewards(g, k)
    loo1 = np.array([E.maxg_at_k(np.delete(g, i), k - 1) for i in range(n)])
    np.testing.assert_allclose(diff1, k / n * loo1, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------
# Invariances.


@pytest.mark.parametrize("est", E.ESTIMATORS)
def test_invariances(est):
    rng = np.random.default_rng(3)
    g = rng.choice([0.0, 0.3, 0.7, 1.0, 2.0], size=12).astype(np.float32)
    k = 5
    base = np.asarray(E.pkpo_rewards(g, k, est))
    perm = rng.permutation(12)
    np.testing.assert_allclose(E.pkpo_rewards(g[perm], k, est), base[perm], atol=1e-6)
    for v in np.unique(g):  # tied inputs get equal outputs
        np.testing.assert_allclose(base[g == v], base[g == v][0], atol=1e-6)
    np.testing.assert_allclose(E.pkpo_rewards(3.0 * g, k, est), 3.0 * base, rtol=1e-5, atol=1e-6)
    shifted = np.asarray(E.pkpo_rewards(g + 1.5, k, est))
    if est == "s":
        np.testing.assert_allclose(shifted, base + 1.5 * k / 12, atol=1e-5)
    elif est == "sloo_minus_one":
        np.testing.assert_allclose(shifted, base, atol=1e-5)
        np.testing.assert_allclose(E.pkpo_rewards(np.full(7, 2.5), 3), np.zeros(7), atol=1e-6)
    else:  # sloo is not perfectly centred: constant g maps to (k/n - k/(n-1)) g (spec 2.4)
        np.testing.assert_allclose(
            E.pkpo_rewards(np.full(7, 2.0), 3, "sloo"), np.full(7, (3 / 7 - 3 / 6) * 2.0), atol=1e-6
        )


# ---------------------------------------------------------------------------------------------------
# Exact unbiasedness under a Bernoulli policy (spec oracle 8).


@pytest.mark.parametrize(
    "n,k,p", [(8, 3, 0.2), (6, 1, 0.5), (6, 6, 0.3), (10, 4, 0.7), (5, 2, 0.05)]
)
@pytest.mark.parametrize("est", E.ESTIMATORS)
def test_exact_unbiasedness_bernoulli(n, k, p, est):
    """E[sum_i r_i (x_i - p)] = d/dtheta pass@k = k p (1-p)^k, enumerating c ~ Binomial(n, p)."""
    total = 0.0
    for c in range(n + 1):
        x = np.array([1.0] * c + [0.0] * (n - c))
        r = np.asarray(E.pkpo_rewards(x, k, est), np.float64)
        prob = math.comb(n, c) * p**c * (1 - p) ** (n - c)
        total += prob * np.sum(r * (x - p))
    np.testing.assert_allclose(total, k * p * (1 - p) ** k, rtol=1e-5, atol=1e-7)
    if (n, k, p) == (8, 3, 0.2):
        np.testing.assert_allclose(total, 0.3072, atol=1e-6)


# ---------------------------------------------------------------------------------------------------
# Masks, jit, recompilation, NaN.


@pytest.mark.parametrize("est", E.ESTIMATORS)
def test_mask_equals_filtering(est):
    rng = np.random.default_rng(4)
    g = rng.choice([0.0, 0.5, 1.0, 3.0], size=(5, 9)).astype(np.float32)
    mask = rng.random((5, 9)) < 0.7
    mask[:, :3] = True  # at least 3 valid per row
    g_bad = np.where(mask, g, np.nan)  # masked entries must be ignored, NaN included
    k = 3
    got = np.asarray(E.pkpo_rewards(g_bad, k, est, mask=mask))
    got_rho = np.asarray(E.maxg_at_k(g_bad, k, mask=mask))
    for r in range(5):
        want = np.zeros(9)
        want[mask[r]] = np.asarray(E.pkpo_rewards(g[r][mask[r]], k, est))
        np.testing.assert_allclose(got[r], want, atol=1e-6)
        np.testing.assert_allclose(got_rho[r], E.maxg_at_k(g[r][mask[r]], k), rtol=1e-6)


def test_mask_too_few_valid():
    g = np.array([[1.0, 0.0, 0.5, 0.2], [1.0, 0.0, 0.5, 0.2]], np.float32)
    mask = np.array([[True, True, False, False], [True, False, False, False]])
    assert np.isnan(np.asarray(E.maxg_at_k(g, 3, mask=mask))).all()
    np.testing.assert_array_equal(E.pkpo_rewards(g, 3, mask=mask), np.zeros((2, 4)))
    np.testing.assert_array_equal(E.pkpo_rewards(g, 1, "sloo", mask=mask)[1], np.zeros(4))


def test_jit_equals_nojit_and_no_recompile_on_k():
    rng = np.random.default_rng(5)
    g = rng.normal(size=(6, 16)).astype(np.float32)
    mask = rng.random((6, 16)) < 0.8
    mask[:, :8] = True
    for est in E.ESTIMATORS:
        f = jax.jit(lambda g, k, m, est=est: E.pkpo_rewards(g, k, est, mask=m))
        for k in (1, 2, 5, 8):
            np.testing.assert_allclose(
                f(g, k, mask), E.pkpo_rewards(g, k, est, mask=mask), rtol=1e-5, atol=1e-6
            )
        assert f._cache_size() == 1, "changing k recompiled"
    # A fresh wrapper: jax.jit(E.maxg_at_k) elsewhere in the module shares its cache.
    fr = jax.jit(lambda g, k: E.maxg_at_k(g, k))
    for k in (1, 3, 16):
        np.testing.assert_allclose(fr(g, k), E.maxg_at_k(g, k), rtol=1e-6)
    assert fr._cache_size() == 1
    fp = jax.jit(lambda c, n, k: E.pass_at_k(c, n, k))
    for k in (1, 4, 7):
        np.testing.assert_allclose(
            fp(np.arange(9), 8, k), E.pass_at_k(np.arange(9), 8, k), atol=1e-6
        )
    assert fp._cache_size() == 1


def test_vmap_over_k():
    g = np.random.default_rng(6).normal(size=8).astype(np.float32)
    ks = jnp.arange(1, 9)
    out = jax.vmap(lambda k: E.pkpo_rewards(g, k))(ks)
    for i, k in enumerate(range(1, 9)):
        np.testing.assert_allclose(out[i], E.pkpo_rewards(g, k), atol=1e-6)


def test_nan_propagates_to_its_group_only():
    g = np.array([[0.1, np.nan, 0.3, 0.2], [0.1, 0.4, 0.3, 0.2]], np.float32)
    for est in E.ESTIMATORS:
        out = np.asarray(E.pkpo_rewards(g, 2, est))
        assert np.isnan(out[0]).all()
        np.testing.assert_allclose(out[1], E.pkpo_rewards(g[1], 2, est))
    rho = np.asarray(E.maxg_at_k(g, 2))
    assert np.isnan(rho[0]) and np.isfinite(rho[1])


def test_gradient_wrt_rewards_is_finite():
    g = jnp.array([0.1, 0.5, 0.2, 0.9, 0.3])
    grad = jax.grad(lambda g: E.maxg_at_k(g, 2))(g)  # piecewise linear: grad = sorted weights
    np.testing.assert_allclose(grad, [0.0, 0.3, 0.1, 0.4, 0.2], atol=1e-6)


# ---------------------------------------------------------------------------------------------------
# Large n: stability and accuracy against a float64 reference.


def ref_weights64(n, k):
    """D_i = C(i-1, k-1)/C(n, k) in float64 via log-binomials (accurate to ~1e-12 here)."""
    i = np.arange(1, n + 1)
    logc = lambda a, b: gammaln(a + 1) - gammaln(b + 1) - gammaln(a - b + 1)
    d = np.zeros(n)
    ok = i >= k
    d[ok] = np.exp(logc(i[ok] - 1, k - 1) - logc(n, k))
    return d


@pytest.mark.parametrize("k", [1, 64, 2048, 4096])
def test_large_n_accuracy(k):
    n = 4096
    rng = np.random.default_rng(7)
    g = rng.uniform(size=n)
    order = np.argsort(g)
    h = g[order]
    d = ref_weights64(n, k)
    rho_ref = d @ h
    rho = float(E.maxg_at_k(g.astype(np.float32), k))
    assert np.isfinite(rho) and abs(rho - rho_ref) <= 1e-5 * abs(rho_ref)
    if k == 2048:
        assert rho > 0.999  # uniform rewards: the best of 2048 is close to 1, no underflow to 0
    # s in sorted order: D_i h_i + sum_{j>i} O_j h_j with O_j = D_j (k-1)/(j-1)
    o = np.where(np.arange(1, n + 1) > 1, d * (k - 1) / np.maximum(np.arange(n), 1), 0)
    s_ref_sorted = d * h + (np.cumsum((o * h)[::-1])[::-1] - o * h)
    s_ref = np.empty(n)
    s_ref[order] = s_ref_sorted
    for est in E.ESTIMATORS:
        out = np.asarray(E.pkpo_rewards(g.astype(np.float32), k, est), np.float64)
        assert np.isfinite(out).all(), est
        if est == "s":
            np.testing.assert_allclose(out, s_ref, rtol=2e-5, atol=1e-7 * np.abs(s_ref).max())
    # leave-one-out estimators at a few samples against explicit removal in float64
    picks = rng.choice(n, 12, replace=False)
    for i in picks:
        rest = np.delete(g, i)
        hr = np.sort(rest)
        loo_k = ref_weights64(n - 1, k) @ hr if k <= n - 1 else 0.0
        loo_km1 = ref_weights64(n - 1, k - 1) @ hr if k >= 2 else 0.0
        sloo = s_ref[i] - k / (n - 1) * loo_k
        sl1 = s_ref[i] - k / n * loo_km1 if k >= 2 else (g[i] - rest.mean()) / n
        scale = max(abs(s_ref[i]), k / n)
        got_sloo = float(E.pkpo_rewards(g.astype(np.float32), k, "sloo")[i])
        got_sl1 = float(E.pkpo_rewards(g.astype(np.float32), k)[i])
        assert abs(got_sloo - sloo) <= 5e-5 * scale, (i, got_sloo, sloo)
        assert abs(got_sl1 - sl1) <= 5e-5 * scale, (i, got_sl1, sl1)


# ---------------------------------------------------------------------------------------------------
# Bad input.


def test_bad_input_raises():
    g = np.zeros((2, 4))
    with pytest.raises(ValueError, match="`k`"):
        E.pkpo_rewards(g, 0)
    with pytest.raises(ValueError, match="`k`"):
        E.pkpo_rewards(g, 5)
    with pytest.raises(ValueError, match="`k`"):
        E.maxg_at_k(g, 5)
    with pytest.raises(ValueError, match="`k`"):
        E.pass_at_k(1, 4, 0)
    with pytest.raises(ValueError, match="`estimator`"):
        E.pkpo_rewards(g, 2, "loo")
    with pytest.raises(ValueError, match="`mask`"):
        E.pkpo_rewards(g, 2, mask=np.ones((2, 3), bool))
    with pytest.raises(ValueError, match="n >= 2"):
        E.pkpo_rewards(np.zeros((3, 1)), 1, "sloo")
    with pytest.raises(ValueError, match="n >= 2"):
        E.pkpo_rewards(np.zeros((3, 1)), 1, "sloo_minus_one")
    np.testing.assert_allclose(E.pkpo_rewards(np.ones((3, 1)), 1, "s"), np.ones((3, 1)))
    assert np.isnan(float(E.pass_at_k(1, 3, jnp.int32(4))))  # traced-k path: undefined -> NaN


def test_mask_broadcasts():
    g = np.random.default_rng(8).normal(size=(3, 6)).astype(np.float32)
    m = np.arange(6)[None] < 4  # [1, G]: the first 4 samples of every group are valid
    full = np.broadcast_to(m, g.shape)
    for est in E.ESTIMATORS:
        np.testing.assert_allclose(
            E.pkpo_rewards(g, 2, est, mask=m), E.pkpo_rewards(g, 2, est, mask=full)
        )
