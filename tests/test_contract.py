"""The estimator / advantage contract at its edges (``passk_jax.validation``'s table), for every method.

Random groups with NaN / inf / masked positions, k static and traced in {-3, 0, 1, n, n + 1}, and k of
the wrong type: every outcome is the documented one, and no value of one group reaches another's
outputs.
"""

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from passk_jax import advantages as A
from passk_jax import estimators as E
from passk_jax import validation as V

P, G = 6, 5
KEY = jax.random.key(3)
# Minimum number of valid samples each method needs, as a function of k.
LOO = {"pkpo_sloo", "pkpo_sloo_minus_one", "pkpo_centred", "rloo", "tang"}
K_FREE = A.K_FREE


def weights(name, rewards, k, mask):
    return A.compute_advantages(name, rewards, k=k, mask=mask, key=KEY)


def needed(name, k):
    if name in K_FREE:
        return 2  # z-score / leave-one-out / top-2 need two valid samples
    return max(k, 2) if name in LOO else k


def hostile_batch(rng, binary):
    """Rewards [P, G] with non-finite values at valid and at masked positions, and a ragged mask."""
    r = rng.integers(0, 2, (P, G)).astype(np.float32)
    if not binary:
        r = rng.normal(size=(P, G)).astype(np.float32)
    mask = rng.random((P, G)) < 0.8
    mask[0] = True  # one full group
    for p in range(P):
        if rng.random() < 0.4:  # poison a valid position
            j = rng.choice(np.flatnonzero(mask[p])) if mask[p].any() else 0
            mask[p, j] = True
            r[p, j] = rng.choice([np.nan, np.inf, -np.inf])
        if (~mask[p]).any() and rng.random() < 0.7:  # garbage where the mask says invalid
            r[p, rng.choice(np.flatnonzero(~mask[p]))] = rng.choice([np.nan, np.inf, -np.inf, 1e30])
    return r, mask


def expected_clean(name, r, mask, k):
    """Each group's weights computed on its own, from its valid finite samples only (None if poisoned)."""
    out = np.zeros((P, G), np.float32)
    poisoned = np.zeros(P, bool)
    for p in range(P):
        valid = mask[p]
        if not np.isfinite(r[p][valid]).all():
            poisoned[p] = True
            continue
        if valid.sum() < needed(name, k):
            continue
        # The group alone with its invalid entries compacted away: ragged masks == filtering.
        kk = None if name in K_FREE else k
        alone = np.asarray(weights(name, r[p][valid][None], kk, None))[0]
        out[p, valid] = alone
    return out, poisoned


METHODS = sorted(A.ADVANTAGES)


@pytest.mark.parametrize("name", METHODS)
def test_weights_follow_the_table(name):
    rng = np.random.default_rng(zlib.crc32(name.encode()))  # deterministic across processes
    traced = jax.jit(lambda r, m, k: weights(name, r, k, m))
    tol = 5e-4 if name in A.NEEDS_KEY else 2e-6  # sums of z-scores: jit reorders float sums
    kinds = [True] if name in A.BINARY_ONLY else [True, False]
    for binary in kinds:
        for _ in range(4):
            r, mask = hostile_batch(rng, binary)
            for k in (1, 2, G):
                got = np.asarray(weights(name, r, k, mask))
                assert got.dtype == np.float32
                assert (got[~mask] == 0).all(), "masked positions must get weight 0"
                want, poisoned = expected_clean(name, r, mask, k)
                for p in range(P):
                    if poisoned[p]:
                        assert np.isnan(got[p][mask[p]]).all(), (name, k, p, got[p])
                    elif name not in A.NEEDS_KEY:  # random methods: finiteness and zeros only
                        np.testing.assert_allclose(got[p], want[p], rtol=2e-5, atol=2e-6)
                    else:
                        assert np.isfinite(got[p]).all()
                        if mask[p].sum() < needed(name, k):
                            assert (got[p] == 0).all()
                # The same k traced: identical outputs, no recompilation across k.
                np.testing.assert_allclose(
                    np.asarray(traced(r, mask, jnp.int32(k))), got, rtol=1e-5, atol=tol
                )
            for k in (-3, 0, G + 1, 10**6):  # traced, outside [1, n]: zeros everywhere
                out = np.asarray(traced(r, mask, jnp.int32(k)))
                assert (out == 0).all(), (name, k, out)
            with pytest.raises(ValueError, match="`k`"):
                weights(name, r, G + 1, mask)
    assert traced._cache_size() == 1


@pytest.mark.parametrize("k", [-3, 0, G + 1, True, False, "2", 2.5, 2.0, [2], np.array([2])])
@pytest.mark.parametrize("name", METHODS)
def test_bad_static_k_is_refused(name, k):
    r = np.random.default_rng(0).integers(0, 2, (2, G)).astype(np.float32)
    with pytest.raises(ValueError, match="`k`"):
        weights(name, r, k, None)


@pytest.mark.parametrize("k", [-3, 0, G + 1, True, "2", 2.5, None])
def test_bad_static_k_is_refused_by_estimators(k):
    r = np.random.default_rng(0).integers(0, 2, (2, G)).astype(np.float32)
    fns = [lambda: E.maxg_at_k(r, k), lambda: E.pass_at_k(3, G, k)]
    fns += [lambda e=e: E.pkpo_rewards(r, k, e) for e in E.ESTIMATORS]
    for fn in fns:
        with pytest.raises(ValueError, match="`k`"):
            fn()


def test_numpy_integer_k_is_accepted():
    r = np.random.default_rng(1).normal(size=(3, G)).astype(np.float32)
    for k in (np.int64(2), np.int32(2), np.array(2)):
        np.testing.assert_allclose(E.pkpo_rewards(r, k), E.pkpo_rewards(r, 2))
        np.testing.assert_allclose(E.maxg_at_k(r, k), E.maxg_at_k(r, 2))


@pytest.mark.parametrize("name", METHODS)
def test_traced_k_of_wrong_type_is_refused(name):
    r = np.zeros((2, G), np.float32)
    with pytest.raises(ValueError, match="integer dtype"):
        jax.jit(lambda k: weights(name, r, k, None))(jnp.float32(2))
    with pytest.raises(ValueError, match="scalar"):
        jax.jit(lambda k: weights(name, r, k, None))(jnp.array([2, 3]))


def test_estimates_follow_the_table():
    rng = np.random.default_rng(7)
    traced = jax.jit(lambda r, m, k: E.maxg_at_k(r, k, mask=m))
    for binary in (True, False):
        for _ in range(6):
            r, mask = hostile_batch(rng, binary)
            for k in (1, 2, G):
                got = np.asarray(E.maxg_at_k(r, k, mask=mask))
                for p in range(P):
                    vals = r[p][mask[p]]
                    if not np.isfinite(vals).all() or len(vals) < k:
                        assert np.isnan(got[p]), (k, p, got[p])
                    else:
                        np.testing.assert_allclose(got[p], E.maxg_at_k(vals, k), rtol=1e-6)
                np.testing.assert_allclose(
                    np.asarray(traced(r, mask, jnp.int32(k))),
                    got,
                    rtol=1e-5,
                    atol=1e-7,
                    equal_nan=True,
                )
            for k in (-3, 0, G + 1):
                assert np.isnan(np.asarray(traced(r, mask, jnp.int32(k)))).all()


def test_pass_at_k_edges():
    # static k: refused outside [1, n] when n is static too
    with pytest.raises(ValueError, match="`k`"):
        E.pass_at_k(3, 8, 9)
    # traced k: NaN outside [1, n], exact values inside
    f = jax.jit(E.pass_at_k)
    np.testing.assert_allclose(float(f(2, 8, jnp.int32(4))), 1 - 15 / 70, rtol=1e-6)
    for k in (-3, 0, 9, 2**30):
        assert np.isnan(float(f(2, 8, jnp.int32(k))))
    # counts that are not integers in [0, n]: NaN
    c = jnp.array([-1.0, 9.0, 2.5, jnp.nan, jnp.inf, 3.0])
    out = np.asarray(E.pass_at_k(c, 8, 2))
    assert np.isnan(out[:5]).all() and np.isfinite(out[5])


def test_integer_rewards_never_wrap():
    big = np.array([[2**40, 0, 1, 0, 0]], np.int64)
    for name in METHODS:
        with pytest.raises(ValueError, match="cannot represent exactly"):
            weights(name, big, 2, None)
    with pytest.raises(ValueError, match="cannot represent exactly"):
        E.maxg_at_k(big, 2)
    with pytest.raises(ValueError, match="cannot represent exactly"):
        E.pass_at_k(np.int64(2**40), np.int64(2**41), 2)
    # Exactly representable host integers convert exactly.
    ok = np.array([[2**24, 0, 3, -(2**24), 5]], np.int64)
    np.testing.assert_allclose(E.maxg_at_k(ok, 2), E.maxg_at_k(ok.astype(np.float64), 2))
    # Traced int32 beyond 2**24: that group is NaN, the other is exact.
    r = jnp.array([[2**30, 0, 1, 0, 0], [1, 0, 1, 0, 0]], jnp.int32)
    w = np.asarray(jax.jit(lambda r: E.pkpo_rewards(r, 2))(r))
    assert np.isnan(w[0]).all()
    np.testing.assert_allclose(w[1], E.pkpo_rewards(np.asarray(r[1:], np.float32), 2)[0])
    # Concrete JAX int32 beyond 2**24 is refused eagerly.
    with pytest.raises(ValueError, match="cannot represent exactly"):
        E.pkpo_rewards(r, 2)


def test_dtypes():
    r = np.random.default_rng(2).normal(size=(3, G))
    for name in METHODS:
        assert weights(name, (r > 0).astype(np.float64), 2, None).dtype == jnp.float32
    with jax.enable_x64(True):
        for name in METHODS:
            out = weights(name, (r > 0).astype(np.float64), 2, None)
            assert out.dtype == jnp.float64, name
        assert E.maxg_at_k(r, 2).dtype == jnp.float64
        assert E.pass_at_k(np.int64(3), np.int64(8), 2).dtype == jnp.float64
        big = np.array([[2**40, 0, 1, 0, 0]], np.int64)  # exact in float64
        np.testing.assert_allclose(float(E.maxg_at_k(big, 5)[0]), 2.0**40)
    for dt in (np.bool_, np.int8, np.int32, np.uint8):
        out = E.pkpo_rewards((r > 0).astype(dt), 2)
        np.testing.assert_allclose(out, E.pkpo_rewards((r > 0).astype(np.float32), 2))


def test_validation_helpers_directly():
    V.check_k(3, 5)
    V.check_k(jnp.int32(9), 5)  # traced-style values are checked on device
    assert V.k_in_range(3, 5) is True
    assert not bool(V.k_in_range(jnp.int32(6), 5))
    with pytest.raises(ValueError, match="`kk`"):
        V.check_k(True, 5, name="kk")
    values, mask, bad = V.prepare_rewards(
        np.array([[1.0, np.nan], [2.0, np.nan]]), np.array([[True, True], [True, False]])
    )
    np.testing.assert_array_equal(np.asarray(bad)[:, 0], [True, False])
    np.testing.assert_array_equal(np.asarray(values), [[1.0, 0.0], [2.0, 0.0]])
    with pytest.raises(ValueError, match="numeric"):
        V.prepare_rewards(np.array(["a", "b"]))
    with pytest.raises(ValueError, match="object"):
        V.prepare_rewards([2**70, 1])
