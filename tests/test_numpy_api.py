"""The NumPy adapter: same results as the JAX kernels, cached compilation, dtypes, writable outputs,
recorded invalid k."""

import warnings

import jax
import ml_dtypes
import numpy as np
import pytest

from passk_jax import advantages as A
from passk_jax import estimators as E
from passk_jax import numpy_api as P

RNG = np.random.RandomState(0)
BINARY = (RNG.rand(6, 8) < 0.4).astype(np.float32)
CONT = RNG.rand(6, 8).astype(np.float32)
MASK = RNG.rand(6, 8) < 0.8


@pytest.fixture(autouse=True)
def _fresh_flags():
    P.reset_k_flags()
    yield
    P.reset_k_flags()


@pytest.mark.parametrize("name", sorted(A.ADVANTAGES))
def test_compute_advantages_matches_jax(name):
    r = BINARY if name in A.BINARY_ONLY else CONT
    m = MASK  # unmasked calls are covered by test_named_functions_match_jax
    key = jax.random.key(3) if name in A.NEEDS_KEY else None
    got = P.compute_advantages(name, r, k=3, mask=m, key=key)
    want = np.asarray(A.compute_advantages(name, r, k=3, mask=m, key=key))
    assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.shape == r.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_named_functions_match_jax():
    for est in P.ESTIMATORS:
        np.testing.assert_allclose(
            P.pkpo_rewards(CONT, 4, est, MASK), E.pkpo_rewards(CONT, 4, est, MASK), atol=1e-6
        )
    np.testing.assert_allclose(P.maxg_at_k(CONT, 4, MASK), E.maxg_at_k(CONT, 4, MASK), atol=1e-6)
    np.testing.assert_allclose(P.passk_advantages(BINARY, 2), A.passk_advantages(BINARY, 2), 1e-6)
    np.testing.assert_allclose(P.grpo_advantages(CONT), A.grpo_advantages(CONT), atol=1e-6)
    np.testing.assert_allclose(P.rloo_advantages(CONT), A.rloo_advantages(CONT), atol=1e-6)
    np.testing.assert_allclose(P.tang_advantages(CONT), A.tang_advantages(CONT), atol=1e-6)
    np.testing.assert_allclose(
        P.full_sampling_passk_advantages(CONT, 2), A.full_sampling_passk_advantages(CONT, 2), 1e-6
    )
    np.testing.assert_allclose(
        P.combination_advantages(BINARY, 2), A.combination_advantages(BINARY, 2), atol=1e-6
    )
    np.testing.assert_allclose(
        P.bootstrap_passk_advantages(CONT, 2, 7, num_groups=5),
        A.bootstrap_passk_advantages(CONT, 2, jax.random.key(7), num_groups=5),
        atol=1e-5,  # jit vs eager float32 round-off in the z-scores
    )
    c, n = np.array([0, 3, 8]), np.array([8, 8, 8])
    np.testing.assert_allclose(P.pass_at_k(c, n, 4), E.pass_at_k(c, n, 4), atol=1e-7)
    # the same names as the JAX modules
    for name in P.__all__:
        if name not in ("InvalidKWarning", "k_flags", "reset_k_flags", "ADVANTAGES"):
            assert hasattr(E, name) or hasattr(A, name), name


def test_outputs_writable_and_not_aliased():
    r = CONT.copy()
    out = P.pkpo_rewards(r, 2)
    assert out.flags.writeable
    out[:] = 7.0  # no "read-only" error, and the input is untouched
    np.testing.assert_array_equal(r, CONT)
    again = P.pkpo_rewards(r, 2)
    assert not np.shares_memory(out, again) and not (again == 7.0).all()


def test_dtypes_follow_the_input():
    assert P.grpo_advantages(CONT.astype(np.float16)).dtype == np.float16
    assert P.grpo_advantages(CONT.astype(ml_dtypes.bfloat16)).dtype == ml_dtypes.bfloat16
    assert P.grpo_advantages(BINARY.astype(np.int32)).dtype == np.float32
    assert P.grpo_advantages(BINARY.astype(bool)).dtype == np.float32
    # float64 is computed in float64 although jax_enable_x64 is off
    assert not jax.config.jax_enable_x64
    r64 = np.array([[1 / 3, 2 / 3, 0.1, 0.7, 1 / 7]], np.float64)
    # maxg@2 by enumerating the 10 pairs, in float64
    pairs = [max(a, b) for i, a in enumerate(r64[0]) for b in r64[0][i + 1 :]]
    exact = np.mean(pairs)
    got = P.maxg_at_k(r64, 2)
    assert got.dtype == np.float64 and abs(got[0] - exact) < 1e-15
    assert abs(float(P.maxg_at_k(r64.astype(np.float32), 2)[0]) - exact) > 1e-12  # float32 cannot
    assert P.pkpo_rewards(r64, 2, "s").dtype == np.float64
    assert P.pass_at_k(np.float64(3), 16, 8).dtype == np.float64


def test_compiled_once_per_shape_and_k_is_traced():
    r = RNG.rand(5, 12).astype(np.float32)
    P.pkpo_rewards(r, 1, "sloo")
    before = P._TRACES["count"]
    for k in range(1, 13):
        P.pkpo_rewards(r, k, "sloo")
    assert P._TRACES["count"] == before  # no retrace for new k values
    P.pkpo_rewards(r[:, :6], 3, "sloo")  # a new shape compiles once
    assert P._TRACES["count"] == before + 1
    P.pkpo_rewards(r[:, :6], 4, "sloo")
    assert P._TRACES["count"] == before + 1


def test_invalid_k_gives_nan_estimates_zero_weights_and_is_recorded():
    with pytest.warns(P.InvalidKWarning, match="outside"):
        est = P.maxg_at_k(CONT, 9)
    assert np.isnan(est).all()
    assert P.k_flags()["invalid_k_calls"] == 1
    assert P.k_flags()["last"] == {"function": "maxg_at_k", "k": 9, "n": 8}
    with pytest.warns(P.InvalidKWarning):
        w = P.pkpo_rewards(CONT, 0)
    assert (w == 0).all()
    with pytest.warns(P.InvalidKWarning):
        a = P.compute_advantages("passk_full", CONT, k=-2)
    assert (a == 0).all()
    with pytest.warns(P.InvalidKWarning):
        assert np.isnan(P.pass_at_k(2, 4, 5))
    assert P.k_flags()["invalid_k_calls"] == 4
    # the warning can be made an error
    with warnings.catch_warnings():
        warnings.simplefilter("error", P.InvalidKWarning)
        with pytest.raises(P.InvalidKWarning):
            P.pkpo_rewards(CONT, 100)
    # valid k: nothing recorded; a masked group with fewer than k valid samples is not an invalid k
    P.reset_k_flags()
    m = np.ones_like(MASK)
    m[0, 2:] = False
    with warnings.catch_warnings():
        warnings.simplefilter("error", P.InvalidKWarning)
        out = P.maxg_at_k(CONT, 4, m)
    assert np.isnan(out[0]) and np.isfinite(out[1:]).all()
    assert P.k_flags() == {"invalid_k_calls": 0, "last": None}


def test_argument_errors():
    with pytest.raises(ValueError, match="integer"):
        P.pkpo_rewards(CONT, True)
    with pytest.raises(ValueError, match="integer"):
        P.pkpo_rewards(CONT, 2.0)
    with pytest.raises(ValueError, match="estimator"):
        P.pkpo_rewards(CONT, 2, "nope")
    with pytest.raises(ValueError, match="binary"):
        P.passk_advantages(CONT, 2)
    with pytest.raises(ValueError, match="unknown advantage"):
        P.compute_advantages("ppo", CONT, k=2)
    with pytest.raises(ValueError, match="key"):
        P.compute_advantages("passk_bootstrap", CONT, k=2)
    with pytest.raises(ValueError, match="mask"):
        P.pkpo_rewards(CONT, 2, mask=np.ones((3, 3), bool))
    # a masked-out non-binary value does not trip the binary check
    r = BINARY.copy()
    r[0, 0] = 0.5
    m = np.ones_like(MASK)
    m[0, 0] = False
    np.testing.assert_allclose(P.passk_advantages(r, 2, m), A.passk_advantages(r, 2, m), atol=1e-6)


@pytest.mark.parametrize("name", sorted(A.K_FREE))
def test_k_free_methods_need_no_k(name):
    # Every k-free registry entry (the noise-reward baselines too) is callable without k.
    key = 5 if name in A.NEEDS_KEY else None
    got = P.compute_advantages(name, BINARY, key=key)
    want = np.asarray(
        A.compute_advantages(name, BINARY, key=jax.random.key(5) if key is not None else None)
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
