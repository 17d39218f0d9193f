"""Tests of the toy experiments: exact pieces against independent references, quick-mode runs."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import quad
from scipy.stats import norm

from experiments import toy_bandit as tb
from experiments import toy_gaussian as tg
from passk_jax import estimators as E

# --------------------------------------------------------------------------------------------
# Gaussian toy: exact pieces.


@pytest.mark.parametrize("theta", [0.3, 0.9, 1.05])
@pytest.mark.parametrize("k", [1, 2, 8])
def test_quadrature_matches_adaptive_integration(theta, k):
    # maxg@k = int_0^1 P(max_i g(x_i) > y) dy, with P(g(x) > y) = P(sqrt(y) < x <= 1).
    def tail(y):
        p = norm.cdf(1.0, theta, tg.SIGMA) - norm.cdf(np.sqrt(y), theta, tg.SIGMA)
        return 1.0 - (1.0 - p) ** k

    ref = quad(tail, 0.0, 1.0, limit=200, epsabs=1e-12)[0]
    assert tg.maxg_quadrature(theta, k) == pytest.approx(ref, abs=1e-9)
    h = 1e-5
    fd = (tg.maxg_quadrature(theta + h, k) - tg.maxg_quadrature(theta - h, k)) / (2 * h)
    assert tg.grad_quadrature(theta, k) == pytest.approx(fd, abs=1e-6)


def test_optimal_theta_matches_spec_table():
    for k, spec in tg.SPEC_OPTIMA.items():
        assert tg.optimal_theta(k) == pytest.approx(spec, abs=6e-4)
        assert abs(tg.grad_quadrature(tg.optimal_theta(k), k)) < 1e-5


def test_partitioned_estimators_reduce_to_all_subsets_at_n_equals_k():
    g = jax.random.uniform(jax.random.PRNGKey(0), (5, 4))
    no_base = tg.partition_rewards(g, 4, "partition_no_baseline")
    np.testing.assert_allclose(no_base, E.pkpo_rewards(g, 4, "s"), atol=1e-6)
    tang = tg.partition_rewards(g, 4, "partition_tang")
    np.testing.assert_allclose(tang, E.pkpo_rewards(g, 4, "sloo_minus_one"), atol=1e-6)


def test_partitioned_estimators_by_hand_and_masked_prefix():
    g = jnp.array([[0.1, 0.5, 0.2, 0.9, 0.3, 0.4, 7.0, 8.0]])
    mask = jnp.array([[True] * 6 + [False] * 2])
    # sets {0.1, 0.5}, {0.2, 0.9}, {0.3, 0.4}; k/n = 1/3.
    r = tg.partition_rewards(g, 2, "partition_no_baseline", mask)
    np.testing.assert_allclose(r[0], np.array([0.5, 0.5, 0.9, 0.9, 0.4, 0.4, 0, 0]) / 3, atol=1e-6)
    r = tg.partition_rewards(g, 2, "partition_baselined", mask)
    want = np.array([0.5 - 0.65, 0.5 - 0.65, 0.9 - 0.45, 0.9 - 0.45, 0.4 - 0.7, 0.4 - 0.7, 0, 0])
    np.testing.assert_allclose(r[0], want / 3, atol=1e-6)
    r = tg.partition_rewards(g, 2, "partition_tang", mask)
    np.testing.assert_allclose(r[0], np.array([0, 0.4, 0, 0.7, 0, 0.1, 0, 0]) / 3, atol=1e-6)


def test_gradient_estimators_unbiased_small():
    # 4000 replicates at theta = 1, k = 4: each mean within 4 s.e. of the quadrature gradient.
    est = tg.gradient_estimates_vs_n(
        jax.random.PRNGKey(1),
        jnp.float32(1.0),
        jnp.asarray([8, 16]),
        k=4,
        methods=tg.FIG4_METHODS,
        replicates=4000,
        n_max=16,
    )
    est = np.asarray(est, np.float64)
    z = (est.mean(-1) - tg.grad_quadrature(1.0, 4)) / (est.std(-1, ddof=1) / np.sqrt(4000))
    assert np.all(np.abs(z) < 4), z
    var = est.var(-1)
    m = {name: i for i, name in enumerate(tg.FIG4_METHODS)}
    assert np.all(var[m["s"]] > 3 * var[m["sloo"]])
    assert np.all(var[m["sloo"]] > var[m["sloo_minus_one"]])


# --------------------------------------------------------------------------------------------
# Bandit: exact optimum.


@pytest.mark.parametrize("k", [1, 2, 4, 8, 16])
def test_exact_optimum_kkt_and_beats_random_points(k):
    q = tb.arm_frequencies()
    pi = tb.exact_optimum(q, k)
    assert pi.min() >= 0 and pi.sum() == pytest.approx(1.0, abs=1e-12)
    best = tb.shared_passk(pi, q, k)
    rng = np.random.default_rng(k)
    rand = rng.dirichlet(np.full(q.shape, 0.5), size=5000)
    assert np.all(tb.shared_passk(rand, q, k) <= best + 1e-12)
    # KKT: the marginal gain q_a k (1 - pi_a)^(k-1) equals lambda on the support, <= off it.
    gain = q * k * (1 - pi) ** (k - 1)
    support = pi > 1e-9
    lam = gain[support].max()
    if k > 1:
        np.testing.assert_allclose(gain[support], lam, rtol=1e-6)
    assert np.all(gain[~support] <= lam * (1 + 1e-6))
    # pass@1 optimum is a vertex; larger k spreads mass.
    if k == 1:
        assert pi.max() == 1.0
    else:
        assert support.sum() > (tb.exact_optimum(q, k // 2) > 1e-9).sum() or support.all()


def test_sample_weights_conventions():
    r = jnp.array([[1.0, 0, 0, 0, 0, 0, 0, 0], [1.0, 1, 0, 0, 0, 0, 0, 0]])
    key = jax.random.PRNGKey(0)
    # PKPO at k = 1 equals RLOO / n.
    np.testing.assert_allclose(
        tb.sample_weights("pkpo_sloo_minus_one", r, 1, key),
        tb.sample_weights("rloo", r, 1, key),
        atol=1e-6,
    )
    # Tang et al. = PKPO sloo_minus_one at k = n.
    np.testing.assert_allclose(
        tb.sample_weights("tang", r, 4, key),
        tb.sample_weights("pkpo_sloo_minus_one", r, 8, key),
        atol=1e-6,
    )


# --------------------------------------------------------------------------------------------
# Quick-mode runs of both scripts.


@pytest.fixture(scope="module")
def quick_outdir(tmp_path_factory):
    return tmp_path_factory.mktemp("toys")


@pytest.fixture(scope="module")
def gaussian_quick(quick_outdir):
    return tg.run(quick=True, outdir=quick_outdir)


@pytest.fixture(scope="module")
def bandit_quick(quick_outdir):
    return tb.run(quick=True, outdir=quick_outdir)


def test_gaussian_quick_run(gaussian_quick, quick_outdir):
    res = gaussian_quick
    for f in ("gaussian_fig1.png", "gaussian_fig4.png", "gaussian_fig5.png", "gaussian.json"):
        assert (quick_outdir / "toys" / f).stat().st_size > 0
    assert "Gaussian toy" in (quick_outdir / "toys.md").read_text()
    json.loads((quick_outdir / "toys" / "gaussian.json").read_text())
    assert np.all(np.isfinite(res["fig4"]["var"]))
    for k in tg.KS:
        assert res["fig1"][str(k)]["max_abs_z_grad"] < 4.5
        assert res["fig1"][str(k)]["max_abs_z_value"] < 4.5
    for n, checks in res["fig4_checks"].items():
        assert all(checks.values()), (n, checks)
    assert all(res["train_checks"].values()), res["train"]["sloo_minus_one"]


def test_bandit_quick_run(bandit_quick, quick_outdir):
    res = bandit_quick
    for f in ("bandit_shared.png", "bandit_hard.png", "bandit.json"):
        assert (quick_outdir / "toys" / f).stat().st_size > 0
    md = (quick_outdir / "toys.md").read_text()
    assert "Toy bandits" in md
    for k, ch in res["shared_checks"].items():
        assert ch["reaches_97pct"] and ch["diagonal_best_in_column"], (k, ch)
    for name, s in res["hard_summary"].items():
        assert all(np.isfinite(v[0]) for v in s.values()), name
    for k in (4, 8):
        assert res["hard_checks"][f"solve_rate_k{k}_minus_k1"]["holds"]
    # pass@k methods keep entropy up; pass@1 collapses it.
    s = res["hard_summary"]
    assert s["pkpo_k8"]["entropy"][0] > s["pkpo_k1"]["entropy"][0]
