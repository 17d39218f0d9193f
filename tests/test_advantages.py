"""Group advantages against enumeration oracles and the spec's reference tables."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from passk_jax import advantages as A
from passk_jax import estimators as E


def enumerate_passk(rewards, k):
    """Chen et al. by enumeration: all size-k subsets, group reward = max, z-score over subsets
    (population std), each response's advantage = mean of its subsets' z-scores."""
    n = len(rewards)
    subs = list(itertools.combinations(range(n), k))
    gr = np.array([max(rewards[j] for j in s) for s in subs], np.float64)
    std = gr.std()
    z = (gr - gr.mean()) / std if std > 0 else np.zeros_like(gr)
    out = np.zeros(n)
    cnt = np.zeros(n)
    for zi, s in zip(z, subs):
        for j in s:
            out[j] += zi
            cnt[j] += 1
    return out / cnt


@pytest.mark.parametrize("n,k", [(8, 1), (8, 2), (8, 3), (8, 4), (10, 4), (12, 5)])
def test_passk_matches_enumeration(n, k):
    f = jax.jit(A.passk_advantages)
    for c in range(n + 1):
        r = np.array([1.0] * c + [0.0] * (n - c))
        np.testing.assert_allclose(f(r, k), enumerate_passk(r, k), atol=2e-6)


REFERENCE = [  # N, k, N_pos, A_pos, A_neg  (spec/passk_training.md section 7)
    (8, 4, 1, 1.0, -0.142857),
    (8, 4, 3, 0.277350, -0.166410),
    (8, 4, 4, 0.120386, -0.120386),
    (8, 4, 5, 0.0, 0.0),
    (32, 8, 1, 1.732051, -0.055873),
    (32, 8, 4, 0.647639, -0.092520),
    (32, 8, 8, 0.274189, -0.091396),
    (32, 8, 16, 0.035001, -0.035001),
    (32, 8, 24, 3.08e-4, -9.25e-4),
    (32, 8, 25, 0.0, 0.0),
    (32, 4, 8, 0.647639, -0.215880),
    (32, 16, 8, 0.035001, -0.011667),
    (32, 1, 8, 1.732051, -0.577350),
]


@pytest.mark.parametrize("n,k,c,pos,neg", REFERENCE)
def test_passk_reference_table(n, k, c, pos, neg):
    r = np.array([1] * c + [0] * (n - c))
    a = np.asarray(A.passk_advantages(r, k))
    np.testing.assert_allclose(a[0], pos, rtol=2e-3, atol=1e-6)
    np.testing.assert_allclose(a[-1], neg, rtol=2e-3, atol=1e-6)
    assert abs(a.sum()) < 1e-5  # zero sum


def test_passk_properties():
    n = 32
    for k in (1, 2, 4, 8, 16):
        prev = None
        for c in range(n + 1):
            r = np.array([1] * c + [0] * (n - c))
            a = np.asarray(A.passk_advantages(r, k))
            assert (a[:c] >= 0).all() and (a[c:] <= 1e-7).all()
            if c == 0 or c == n or n - c < k:
                np.testing.assert_array_equal(a, 0)
        del prev
    # magnitudes fall as k grows (fixed N, N_pos)
    r = np.array([1] * 6 + [0] * 26)
    mags = [float(A.passk_advantages(r, k)[0]) for k in (1, 2, 4, 8, 16)]
    assert all(a > b for a, b in zip(mags, mags[1:]))
    # k = 1 is GRPO with the population std
    rng = np.random.default_rng(0)
    rb = rng.integers(0, 2, (7, 11)).astype(np.float32)
    np.testing.assert_allclose(A.passk_advantages(rb, 1), A.grpo_advantages(rb), atol=1e-5)


def test_eta_argmax():
    """Sum of absolute advantages eta(N_pos) peaks at N_pos = 16, 8, 4 for k = 1, 4, 8 (N = 32)."""
    n = 32
    for k, want in [(1, 16), (4, 8), (8, 4)]:
        rows = np.array([[1] * c + [0] * (n - c) for c in range(n + 1)])
        eta = np.abs(np.asarray(A.passk_advantages(rows, k))).sum(-1)
        assert int(np.argmax(eta)) == want


def test_grpo_rescaling_identity():
    n, k = 20, 4
    for c in range(1, n):
        r = np.array([1] * c + [0] * (n - c))
        p = c / n
        fail = float(E.pass_at_k(c, n, k))
        rbar = fail
        q = n * (1 - rbar) / (n - c)
        w = q * np.sqrt(p * (1 - p)) / np.sqrt(rbar * (1 - rbar)) if 0 < rbar < 1 else 0.0
        np.testing.assert_allclose(
            A.passk_advantages(r, k), w * np.asarray(A.grpo_advantages(r)), atol=1e-5
        )


def test_passk_equals_centred_pkpo_over_sigma():
    """A_analytic = (n/k) (r - mean r) / sigma with r = PKPO's binary s weights."""
    n, k = 16, 4
    for c in range(1, n - k + 1):
        f = np.array([1] * c + [0] * (n - c), np.float32)
        r = np.asarray(E.pkpo_rewards(f, k, "s"))
        rbar = float(E.maxg_at_k(f, k))
        want = n / k * (r - r.mean()) / np.sqrt(rbar * (1 - rbar))
        np.testing.assert_allclose(A.passk_advantages(f, k), want, atol=1e-4)


def test_binary_check():
    with pytest.raises(ValueError, match="binary"):
        A.passk_advantages(np.array([0.0, 0.5, 1.0]), 2)
    with pytest.raises(ValueError, match="binary"):
        A.combination_advantages(np.array([0.0, -1.0, 1.0]), 2)
    out = np.asarray(jax.jit(A.passk_advantages)(np.array([[0.0, 0.5, 1.0], [0.0, 1.0, 1.0]]), 2))
    assert np.isnan(out[0]).all() and np.isfinite(out[1]).all()
    # masked non-binary entries are ignored
    np.testing.assert_allclose(
        A.passk_advantages(np.array([1.0, 0.0, 0.7, 0.0]), 2, mask=np.array([1, 1, 0, 1], bool)),
        np.asarray(A.passk_advantages(np.array([1.0, 0.0, 0.0]), 2))[[0, 1, 1, 2]] * [1, 1, 0, 1],
        atol=1e-6,
    )


def test_bootstrap_converges_to_analytic():
    """E[bootstrap] ~ (num_groups k / n) A_analytic; normalised by membership it converges."""
    n, k, c = 32, 8, 5
    r = np.array([1.0] * c + [0.0] * (n - c))
    groups = 20000
    a = np.asarray(A.bootstrap_passk_advantages(r, k, jax.random.key(0), num_groups=groups))
    norm = a / (groups * k / n)
    want = np.asarray(A.passk_advantages(r, k))
    np.testing.assert_allclose(norm[:c].mean(), want[0], rtol=0.03)
    np.testing.assert_allclose(norm[c:].mean(), want[-1], rtol=0.05)
    # default num_groups = n: scale about k x analytic (spec: +4.007 / -0.742 for this case)
    keys = jax.random.split(jax.random.key(1), 400)
    many = jax.vmap(lambda key: A.bootstrap_passk_advantages(r, k, key))(keys)
    m = np.asarray(many).mean(0)
    np.testing.assert_allclose(m[:c].mean(), 4.007, rtol=0.05)
    np.testing.assert_allclose(m[c:].mean(), -0.742, rtol=0.05)
    # groups hold distinct members: with k = n every sample is in every group -> all zero advantage
    np.testing.assert_array_equal(A.bootstrap_passk_advantages(r, n, jax.random.key(2)), 0)


def test_full_sampling_matches_manual():
    r = np.array([1, 0, 0, 0, 0, 1, 0, 0, 0, 1], np.float32)
    k = 3  # groups [0:3]=1, [3:6]=1, [6:9]=0, leftover index 9 -> 0
    gr = np.array([1.0, 1.0, 0.0])
    z = (gr - gr.mean()) / gr.std()
    want = np.concatenate([np.repeat(z, 3), [0.0]])
    np.testing.assert_allclose(A.full_sampling_passk_advantages(r, k), want, atol=1e-6)
    # mask: invalid samples are skipped when forming the in-order groups
    mask = np.array([1, 1, 0, 1, 1, 1, 1, 1, 1, 1], bool)
    got = np.asarray(A.full_sampling_passk_advantages(r, k, mask=mask))
    want_m = np.zeros(10)
    want_m[mask] = np.asarray(A.full_sampling_passk_advantages(r[mask], k))
    np.testing.assert_allclose(got, want_m, atol=1e-6)
    f = jax.jit(A.full_sampling_passk_advantages)
    for kk in (1, 2, 5):
        np.testing.assert_allclose(f(r, kk), A.full_sampling_passk_advantages(r, kk), atol=1e-6)
    assert f._cache_size() == 1


def test_combination_zero_sum_and_weights():
    n, k = 32, 8
    for c in range(n + 1):
        r = np.array([1] * c + [0] * (n - c))
        a = np.asarray(A.combination_advantages(r, k))
        assert abs(a.sum()) < 1e-4
        p = c / n
        want = p * np.asarray(A.passk_advantages(r, k)) + (1 - p) * np.asarray(A.grpo_advantages(r))
        np.testing.assert_allclose(a, want, atol=1e-6)


def test_tang_and_rloo():
    rng = np.random.default_rng(3)
    g = rng.normal(size=(4, 9)).astype(np.float32)
    np.testing.assert_allclose(A.tang_advantages(g), E.pkpo_rewards(g, 9), atol=1e-6)
    np.testing.assert_array_equal(A.tang_advantages(np.array([1.0, 1.0, 0.0])), 0)
    r = np.asarray(A.rloo_advantages(g))
    np.testing.assert_allclose(r, g - (g.sum(-1, keepdims=True) - g) / 8, atol=1e-6)
    np.testing.assert_allclose(9 * np.asarray(E.pkpo_rewards(g, 1)), r * 1.0, atol=1e-5)


@pytest.mark.parametrize("name", sorted(A.ADVANTAGES))
def test_registry_masks_and_jit(name):
    rng = np.random.default_rng(4)
    r = rng.integers(0, 2, (3, 8)).astype(np.float32)
    mask = np.ones((3, 8), bool)
    mask[1, 5:] = False
    key = jax.random.key(0)
    f = jax.jit(lambda r, k, m, key: A.compute_advantages(name, r, k=k, mask=m, key=key))
    out = np.asarray(f(r, 2, mask, key))
    assert out.shape == r.shape and np.isfinite(out).all()
    assert (out[~mask] == 0).all()
    np.testing.assert_allclose(
        out, A.compute_advantages(name, r, k=2, mask=mask, key=key), atol=1e-5
    )
    if name not in A.NEEDS_KEY:  # row 1 with its mask equals the filtered row (random: differs)
        filt = np.asarray(A.compute_advantages(name, r[1, :5], k=2, key=key))
        np.testing.assert_allclose(out[1, :5], filt, atol=1e-5)
    f(r, 3, mask, key)
    assert f._cache_size() == 1


def test_registry_errors():
    with pytest.raises(ValueError, match="unknown advantage"):
        A.compute_advantages("ppo", np.zeros(4), k=2)
    with pytest.raises(ValueError, match="key"):
        A.compute_advantages("passk_bootstrap", np.zeros(4), k=2)
    with pytest.raises(ValueError, match="`k`"):
        A.compute_advantages("passk", np.zeros(4))
    with pytest.raises(ValueError, match="`k`"):
        A.passk_advantages(np.zeros(4), 5)
    with pytest.raises(ValueError, match="n >= 2"):
        A.rloo_advantages(np.zeros((2, 1)))
    with pytest.raises(ValueError, match="`mask`"):
        A.grpo_advantages(np.zeros((2, 3)), mask=np.ones((3, 2), bool))


def test_nan_isolated_to_group():
    g = jnp.array([[0.0, jnp.nan, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0]])
    for fn in (A.grpo_advantages, A.rloo_advantages):
        out = np.asarray(fn(g))
        assert np.isnan(out[0]).any() and np.isfinite(out[1]).all()
