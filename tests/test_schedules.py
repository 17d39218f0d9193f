"""k schedules, advantage phases, the entropy-adaptive rule, and the RL loop's phase switching."""

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from passk_jax import advantages as A
from passk_jax import schedules as SCH

ROOT = Path(__file__).resolve().parents[1]


def _values(fn, steps):
    return [int(fn(s)) for s in steps]


def test_constant():
    fn = SCH.constant(4)
    assert _values(fn, [0, 1, 100, 10**6]) == [4] * 4
    assert fn(0).dtype == jnp.int32


def test_step_anneal():
    fn = SCH.step_anneal(8, 1, at=3)
    assert _values(fn, range(6)) == [8, 8, 8, 1, 1, 1]
    assert fn(jnp.int32(2)).dtype == jnp.int32


def test_linear():
    fn = SCH.linear(8, 1, steps=7)
    assert _values(fn, range(10)) == [8, 7, 6, 5, 4, 3, 2, 1, 1, 1]
    up = SCH.linear(1, 4, steps=6)  # rounded interpolation, also upwards
    assert _values(up, [0, 2, 4, 6, 9]) == [1, 2, 3, 4, 4]


@pytest.mark.parametrize(
    "spec,direct",
    [
        ({"kind": "constant", "k": 2}, SCH.constant(2)),
        ({"kind": "step", "k_start": 8, "k_end": 1, "at": 5}, SCH.step_anneal(8, 1, 5)),
        ({"kind": "linear", "k_start": 8, "k_end": 2, "steps": 4}, SCH.linear(8, 2, 4)),
    ],
)
def test_make_k_schedule_and_traced_step_does_not_recompile(spec, direct):
    fn = SCH.make_k_schedule(spec)
    jitted = jax.jit(fn)
    steps = range(12)
    assert _values(fn, steps) == _values(direct, steps)
    assert [int(jitted(jnp.int32(s))) for s in steps] == _values(direct, steps)
    assert jitted._cache_size() == 1  # one compilation for every step (k is traced)


def test_k_change_does_not_recompile_the_advantage():
    """k from a schedule flows into an estimator as a traced value: one compilation."""
    sched = SCH.step_anneal(8, 1, at=2)
    fn = jax.jit(lambda r, step: A.compute_advantages("pkpo_sloo_minus_one", r, k=sched(step)))
    r = jnp.asarray(np.random.default_rng(0).integers(0, 2, (3, 8)), jnp.float32)
    for step in range(4):
        want = A.compute_advantages("pkpo_sloo_minus_one", r, k=8 if step < 2 else 1)
        np.testing.assert_allclose(fn(r, step), want, rtol=1e-6, atol=1e-7)
    assert fn._cache_size() == 1


@pytest.mark.parametrize(
    "bad",
    [
        lambda: SCH.constant(0),
        lambda: SCH.step_anneal(8, 0, 3),
        lambda: SCH.linear(8, 1, steps=0),
        lambda: SCH.constant(2.0),
        lambda: SCH.make_k_schedule({"kind": "cosine", "k": 2}),
    ],
)
def test_invalid_schedules_raise(bad):
    with pytest.raises(ValueError):
        bad()


def test_phase_index():
    phases = [(2, "grpo", 1), (5, "passk", 4), (8, "grpo", 1)]
    want = [0, 0, 1, 1, 1, 2, 2, 2, 2, 2]  # past the last end: stays in the last phase
    assert [int(SCH.phase_index(phases, s)) for s in range(10)] == want
    jitted = jax.jit(lambda s: SCH.phase_index(phases, s))
    assert [int(jitted(s)) for s in range(10)] == want
    assert jitted._cache_size() == 1


@pytest.mark.parametrize(
    "fraction,high", [(0.5, [1, 2]), (0.25, [1]), (0.0, []), (1.0, [0, 1, 2, 3])]
)
def test_adaptive_advantages(fraction, high):
    """Top-entropy prompts (by rank) get GRPO advantages, the rest the analytical Pass@k ones."""
    rewards = jnp.asarray(
        [
            [1, 0, 0, 0, 1, 0, 0, 0],
            [1, 1, 0, 0, 0, 0, 0, 1],
            [0, 0, 0, 1, 0, 0, 0, 0],
            [1, 1, 1, 0, 1, 1, 1, 1],
        ],
        jnp.float32,
    )
    entropy = jnp.asarray([0.1, 0.9, 0.5, 0.3])  # ranks: 1 > 2 > 3 > 0
    k = 4
    got = jax.jit(SCH.adaptive_advantages, static_argnames="fraction")(
        rewards, k, entropy, fraction=fraction
    )
    grpo, passk = A.grpo_advantages(rewards), A.passk_advantages(rewards, k)
    for p in range(4):
        want = grpo[p] if p in high else passk[p]
        np.testing.assert_allclose(got[p], want, rtol=1e-6, atol=1e-7, err_msg=f"prompt {p}")
    assert not np.allclose(grpo, passk)  # the test distinguishes the two


def test_adaptive_advantages_traced_k_and_mask():
    rng = np.random.default_rng(1)
    rewards = jnp.asarray(rng.integers(0, 2, (6, 8)), jnp.float32)
    mask = jnp.asarray(rng.random((6, 8)) < 0.8).at[:, :2].set(True)
    entropy = jnp.asarray(rng.random(6))
    fn = jax.jit(lambda r, k, e, m: SCH.adaptive_advantages(r, k, e, m))  # own compile cache
    for k in (1, 2, 4):
        got = fn(rewards, k, entropy, mask)
        high = np.argsort(-np.asarray(entropy))[:3]
        want = np.where(
            np.isin(np.arange(6), high)[:, None],
            A.grpo_advantages(rewards, mask),
            A.passk_advantages(rewards, k, mask),
        )
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
        assert np.all(np.asarray(got)[~np.asarray(mask)] == 0)
    assert fn._cache_size() == 1


# ----------------------------------------------------------------------------------------------------
# Phase switching in the RL loop (_Run._advantages).


def _quick_config():
    spec = importlib.util.spec_from_file_location(
        "maze_tiny_cfg", ROOT / "passk_jax" / "configs" / "maze_tiny.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config("quick")


def test_rl_phases_switch_advantage_and_k(tmp_path):
    """Chen et al.'s Pass@1 -> Pass@k -> Pass@1 sequence: method and k follow the step, one compile."""
    from passk_jax import rl

    config = _quick_config()
    config.phases = [(2, "grpo", 1), (4, "passk", 4), (6, "grpo", 1)]
    run = rl.build(config, str(tmp_path))
    assert run.method_names == ["grpo", "passk"]
    rewards = jnp.asarray(np.random.default_rng(0).integers(0, 2, (8, 8)), jnp.float32)
    key = jax.random.key(0)
    expected = ["grpo", "grpo", "passk", "passk", "grpo", "grpo", "grpo"]
    for step, name in enumerate(expected):
        weights, k = run.advantage_fn(rewards, step, key)
        want_k = 4 if name == "passk" else 1
        assert int(k) == want_k, step
        want = A.compute_advantages(name, rewards, k=want_k)
        np.testing.assert_allclose(weights, want, rtol=1e-6, atol=1e-7, err_msg=f"step {step}")
    assert run.advantage_fn._cache_size() == 1


def test_rl_k_schedule_without_phases(tmp_path):
    """Without phases the config's advantage runs with k from ``k_schedule`` (here 8 -> 1 at step 2)."""
    from passk_jax import rl

    config = _quick_config()
    config.k_schedule = {"kind": "step", "k_start": 8, "k_end": 1, "at": 2}
    run = rl.build(config, str(tmp_path))
    rewards = jnp.asarray(np.random.default_rng(1).integers(0, 2, (8, 8)), jnp.float32)
    for step in range(4):
        weights, k = run.advantage_fn(rewards, step, jax.random.key(0))
        assert int(k) == (8 if step < 2 else 1)
        want = A.compute_advantages(config.advantage, rewards, k=int(k))
        np.testing.assert_allclose(weights, want, rtol=1e-6, atol=1e-7)
    assert run.advantage_fn._cache_size() == 1


def test_rl_unknown_phase_advantage_raises(tmp_path):
    from passk_jax import rl

    config = _quick_config()
    config.phases = [(2, "grpo", 1), (4, "no_such_advantage", 4)]
    with pytest.raises(ValueError, match="no_such_advantage"):
        rl.build(config, str(tmp_path))
