"""The weighting atlas: expected per-prompt weights m(p), surrogate objectives, matched variants."""

import math

import jax
import numpy as np
import pytest

from passk_jax import advantages as A

P_GRID = np.linspace(0.0, 1.0, 21)


@pytest.mark.parametrize("n,k", [(4, 1), (8, 2), (16, 4), (16, 16), (32, 8)])
@pytest.mark.parametrize("name", ["pkpo_s", "pkpo_sloo", "pkpo_sloo_minus_one"])
def test_pkpo_closed_form(name, n, k):
    m = A.expected_weight(name, P_GRID, n, k)
    np.testing.assert_allclose(m, k * (1 - P_GRID) ** (k - 1), atol=2e-5 * k)
    f = A.surrogate_objective(name, P_GRID, n, k)
    np.testing.assert_allclose(f, 1 - (1 - P_GRID) ** k, atol=2e-5 * k)


def monte_carlo_m(name, p, n, k, groups, seed):
    """Mean and standard error of sum_i w_i (x_i - p) / (p (1 - p)) over random groups."""
    rng = np.random.default_rng(seed)
    x = (rng.random((groups, n)) < p).astype(np.float32)
    w = np.asarray(A.compute_advantages(name, x, k=k, key=jax.random.key(seed)), np.float64)
    g = (w * (x - p)).sum(-1) / (p * (1 - p))
    return g.mean(), g.std() / np.sqrt(groups)


@pytest.mark.parametrize("name", sorted(A.ADVANTAGES))
def test_expected_weight_matches_monte_carlo(name):
    n, k = 8, 3
    for i, p in enumerate((0.1, 0.35, 0.7)):
        exact = float(A.expected_weight(name, p, n, k, num_draws=8192))
        mc, se = monte_carlo_m(name, p, n, k, 20_000, seed=i)
        assert abs(exact - mc) < 4.5 * se + 1e-3 * max(1, abs(exact)), (name, p, exact, mc, se)


def test_monte_carlo_check_can_fail():
    # The same comparison with the wrong k must be rejected (guards the test's power).
    mc, se = monte_carlo_m("pkpo_sloo_minus_one", 0.35, 8, 3, 20_000, seed=0)
    wrong = float(A.expected_weight("pkpo_sloo_minus_one", 0.35, 8, 4))
    assert abs(wrong - mc) > 4.5 * se


def test_surrogate_is_the_integral_of_m():
    n, k = 12, 3
    for name in ("grpo", "passk", "passk_full", "passk_combination", "tang", "rloo"):
        h = 1e-5
        mid = np.clip(P_GRID, h, 1 - h)
        f, up, down = A.surrogate_objective(name, np.stack([P_GRID, mid + h, mid - h]), n, k)
        deriv = (up - down) / (2 * h)
        np.testing.assert_allclose(deriv, A.expected_weight(name, mid, n, k), rtol=1e-4, atol=1e-4)
        assert f[0] == 0


def test_rloo_and_grpo_known_values():
    n = 10
    # RLOO: every sample is an unbiased estimate of grad p, so m(p) = n for every p.
    np.testing.assert_allclose(A.expected_weight("rloo", P_GRID, n), n, rtol=1e-5)
    # GRPO's weight is symmetric about p = 1/2 (z-scores treat success and failure alike).
    m = A.expected_weight("grpo", P_GRID, n)
    np.testing.assert_allclose(m, m[::-1], rtol=1e-5)


def test_advantage_mass_per_count():
    n, k = 16, 4
    eta = A.advantage_mass("passk", n, k)
    for c in range(n + 1):
        r = (np.arange(n) < c).astype(np.float32)
        np.testing.assert_allclose(eta[c], np.abs(A.passk_advantages(r, k)).sum(), rtol=1e-5)
    assert eta[0] == 0 and eta[n] == 0


def test_chen_is_a_count_dependent_multiple_of_centred_pkpo():
    n, k = 16, 4
    lam = []
    for c in range(1, n - k + 1):
        r = (np.arange(n) < c).astype(np.float32)
        chen = np.asarray(A.passk_advantages(r, k))
        centred = np.asarray(A.centred_pkpo_advantages(r, k))
        ratio = chen / centred
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-3)  # one factor per group
        lam.append(ratio[0])
    lam = np.array(lam)
    assert 6.2 < lam.min() < 6.4 and 42.5 < lam.max() < 42.8  # lambda(c) in 6.3-42.7 at n=16, k=4


def test_unnormalised_passk_is_passk_times_sigma():
    n, k = 12, 3
    rng = np.random.default_rng(0)
    r = (rng.random((50, n)) < 0.4).astype(np.float32)
    c = r.sum(-1, keepdims=True).astype(int)
    big_r = 1 - np.vectorize(lambda c: math.comb(n - c, k) / math.comb(n, k))(c)
    sigma = np.sqrt(big_r * (1 - big_r))
    np.testing.assert_allclose(
        A.unnormalised_passk_advantages(r, k), A.passk_advantages(r, k) * sigma, atol=1e-6
    )
    np.testing.assert_allclose(np.asarray(A.centred_pkpo_advantages(r, k)).sum(-1), 0, atol=1e-6)


def test_expected_weight_rejects_bad_p():
    with pytest.raises(ValueError, match="`p`"):
        A.expected_weight("grpo", [0.5, 1.5], 8)


@pytest.mark.parametrize("n,k", [(8, 2), (8, 3), (12, 1), (16, 4), (16, 8)])
def test_unnormalised_passk_is_a_multiple_of_the_pass_at_k_gradient(n, k):
    m = A.expected_weight("passk_unnormalised", P_GRID, n, k)
    np.testing.assert_allclose(m, (n - k) / k * k * (1 - P_GRID) ** (k - 1), atol=1e-5 * n)


def test_atlas_experiment_quick(tmp_path):
    from experiments import weighting_atlas

    weighting_atlas.main(["--n", "6", "--k", "2", "--num-draws", "64", "--outdir", str(tmp_path)])
    md = (tmp_path / "atlas" / "atlas.md").read_text()
    for name in A.ADVANTAGES:
        assert f"| {name}" in md
    assert (tmp_path / "atlas" / "atlas.png").stat().st_size > 10_000


def test_exceeding_passk_moves_the_mass_peak_to_one_correct():
    n, k = 32, 8
    eta = A.advantage_mass("passk_exceeding", n, k)
    assert int(np.argmax(eta)) == 1  # the stated aim of Eq. 17 (the plain Pass@k peak is at 4)
    assert int(np.argmax(A.advantage_mass("passk", n, k))) == 4
    r = (np.arange(n) < 3).astype(np.float32)
    np.testing.assert_allclose(
        A.exceeding_passk_advantages(r, k),
        0.4 / np.log(3.5) * np.asarray(A.passk_advantages(r, k)),
        rtol=1e-5,
    )


def test_noise_reward_baseline():
    rng = np.random.default_rng(0)
    r = (rng.random((400, 16)) < 0.3).astype(np.float32)
    key = jax.random.key(0)
    np.testing.assert_allclose(
        A.noisy_reward_advantages(r, key, 0.0), A.grpo_advantages(r), rtol=1e-6, atol=1e-6
    )
    assert (np.asarray(A.noisy_reward_advantages(r, key, 1.0)) == 0).all()  # all rewards 1
    # The flip rate is what it says: positive advantages appear on ~30% of the negatives.
    adv = np.asarray(A.noisy_reward_advantages(r, key, 0.3))
    flipped = ((adv > 0) & (r == 0)).sum() / (r == 0).sum()
    assert abs(flipped - 0.3) < 0.02, flipped
    with pytest.raises(ValueError, match="flip_rate"):
        A.noisy_reward_advantages(r, key, 1.5)
