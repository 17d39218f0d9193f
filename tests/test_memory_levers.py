"""Memory levers change memory, never the function: remat policies and activation constraints.

On 8 fake CPU devices, for every remat policy with activation constraints on, the train step's loss,
gradient norm and updated parameters equal the single-device step without levers; gradients with
and without remat are equal; the levers are really in the compiled program.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from passk_jax import sharding as S
from passk_jax import train as TR
from passk_jax.models import gemma2
from passk_jax.testing import random_rollout_arrays, tiny_config

BATCH_AXES = ("data", "fsdp")


_batch = random_rollout_arrays


def _step(cfg, mesh_shape):
    mesh = S.make_mesh(mesh_shape, jax.devices()[: int(np.prod(mesh_shape))])
    tx = optax.sgd(0.1)
    loss_config = TR.LossConfig()
    state, shardings = TR.create_train_state(cfg, tx, mesh, seed=0)
    step = TR.jit_train_step(tx, cfg, loss_config, shardings, mesh)
    batch = TR.make_batch(*_batch(), mesh=mesh)
    # No mesh context here: jit_train_step sets it itself when the model asks for constraints.
    lowered = step.lower(state, batch)
    new_state, metrics = step(state, batch)
    return jax.device_get(new_state.params), jax.device_get(metrics), lowered


@pytest.fixture(scope="module")
def reference():
    params, metrics, _ = _step(tiny_config(), (1, 1, 1))
    return params, metrics


# CI runs no remat and full remat; the three partial-saving policies are in the slow suite.
_CI_POLICIES = ("none", "full")


@pytest.mark.parametrize(
    "policy",
    [
        p if p in _CI_POLICIES else pytest.param(p, marks=pytest.mark.slow)
        for p in sorted(gemma2.REMAT_POLICIES)
    ],
)
def test_sharded_levers_equal_single_device(policy, reference):
    assert len(jax.devices()) >= 8
    cfg = dataclasses.replace(tiny_config(), remat=policy, activation_batch_axes=BATCH_AXES)
    params, metrics, lowered = _step(cfg, (2, 2, 2))
    ref_params, ref_metrics = reference
    for key in ("loss", "grad_norm"):
        np.testing.assert_allclose(metrics[key], ref_metrics[key], rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    text = lowered.as_text()
    assert "sharding_constraint" in text or "Sharding" in text  # the constraints reached the HLO


def test_remat_gradients_equal_and_remat_is_in_the_program():
    base = tiny_config()
    tokens = jnp.asarray(np.random.default_rng(1).integers(3, 64, (2, 7)), jnp.int32)
    params = gemma2.init_params(base, jax.random.key(0))
    params = jax.tree.map(lambda x: x + 0.01, params)  # non-zero norm scales

    def loss(p, cfg):
        return jnp.mean(jax.nn.log_softmax(gemma2.forward(p, tokens, cfg))[..., 5])

    g0 = jax.grad(loss)(params, base)
    for policy in gemma2.REMAT_POLICIES:
        g = jax.grad(loss)(params, dataclasses.replace(base, remat=policy))
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g0)):
            # Float32 round-off of the recomputation, relative to each gradient's own scale
            # (measured up to ~1.1e-6 on an AVX-512 host; elementwise rtol fails on near-zeros).
            assert np.max(np.abs(a - b)) <= 1e-5 * np.max(np.abs(b)), policy
    for policy in gemma2.REMAT_POLICIES:
        cfg = dataclasses.replace(base, remat=policy)
        jaxpr = str(jax.make_jaxpr(jax.grad(lambda p, c=cfg: loss(p, c)))(params))
        assert ("checkpoint" in jaxpr or "remat" in jaxpr) == (policy != "none"), policy


def test_constrain_is_a_no_op_without_mesh_or_uneven_batch():
    x = jnp.ones((3, 4, 5))
    assert gemma2.constrain(x, BATCH_AXES) is x  # no mesh in context
    mesh = S.make_mesh((2, 2, 2), jax.devices()[:8])
    with jax.set_mesh(mesh):
        assert gemma2.constrain(x, BATCH_AXES) is x  # 3 rows do not split over 4 devices
        assert gemma2.constrain(x, None) is x


def test_bad_lever_values_are_refused():
    with pytest.raises(ValueError, match="remat"):
        dataclasses.replace(tiny_config(), remat="sometimes")
    with pytest.raises(ValueError, match="activation_batch_axes"):
        dataclasses.replace(tiny_config(), activation_batch_axes="data")


def test_gathered_unembedding_equals_full_logits():
    cfg = tiny_config()
    params = jax.tree.map(lambda x: x + 0.02, gemma2.init_params(cfg, jax.random.key(0)))
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(3, 64, (3, 9)), jnp.int32)
    mask = jnp.ones((3, 9), bool).at[1, :2].set(False)
    idx = jnp.array([[0, 4, 8], [2, 3, 8], [1, 1, 7]], jnp.int32)
    full = np.asarray(gemma2.sequence_logits(params, tokens, mask, cfg))
    part = np.asarray(gemma2.sequence_logits(params, tokens, mask, cfg, idx))
    assert part.shape == (3, 3, cfg.vocab_size)
    np.testing.assert_allclose(part, np.take_along_axis(full, np.asarray(idx)[:, :, None], 1))


def test_learner_step_is_traced_under_the_mesh_only_when_asked():
    mesh = S.make_mesh((2, 2, 2), jax.devices()[:8])
    tx = optax.sgd(0.1)
    learner = TR.LearnerConfig.make("pkpo_sloo_minus_one", {"kind": "constant", "k": 2})
    for axes, wrapped in ((None, False), (BATCH_AXES, True)):
        cfg = dataclasses.replace(tiny_config(), activation_batch_axes=axes)
        shardings = TR.state_shardings(cfg, tx, mesh)
        step = TR.jit_learner_step(tx, cfg, TR.LossConfig(), learner, shardings, mesh)
        assert isinstance(step, TR._MeshCall) == wrapped
        assert callable(step.lower) and step._cache_size() == 0
