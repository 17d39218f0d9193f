"""The learner step's pieces: one sampling specification (sampler log-probs == the loss's with top-k /
top-p, so PPO's ratio is 1 on-policy), the on-device batch, and the training-health alarms."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from passk_jax import losses as L
from passk_jax import metrics as M
from passk_jax import rollout as R
from passk_jax import sampler, testing
from passk_jax import train as TR

EOS, PAD = 2, 0
G, T = 4, 12
SPEC = {"temperature": 0.9, "top_k": 6, "top_p": 0.8}


@pytest.fixture(scope="module")
def tiny():
    return testing.tiny_model(seed=4)


@pytest.fixture(scope="module")
def rollout(tiny):
    c, params = tiny
    toks, mask = testing.random_prompts(3, min_len=2, max_len=9, vocab_size=64, seed=5)
    out = sampler.sample(
        params,
        c,
        toks,
        mask,
        num_samples=G,
        max_new_tokens=T,
        rng=jax.random.key(3),
        eos_id=EOS,
        pad_id=PAD,
        decode_phases=1,
        **SPEC,
    )
    return R.from_sampler(out)


def _loss_logp(tiny, ro, **spec):
    c, params = tiny
    batch = R.flatten(ro, jnp.ones(ro.tokens.shape[:2]))
    logits = TR.completion_logits(params, c, batch)
    return batch, L.token_logprobs(logits, batch["tokens"], **spec)


def test_sampler_and_loss_logprobs_agree_with_top_k_top_p(tiny, rollout):
    """The loss recomputes the sampler's log-probs (same truncated distribution): PPO ratio is 1."""
    batch, logp = _loss_logp(tiny, rollout, **SPEC)
    mask = np.asarray(batch["mask"])
    assert mask.sum() > 20
    old = np.asarray(batch["old_logp"])
    np.testing.assert_allclose(np.asarray(logp)[mask], old[mask], atol=2e-5)
    _, aux = L.policy_surrogate(logp, batch["old_logp"], batch["weights"], kind="ppo")
    ratio = np.asarray(aux["ratio"])[mask]
    assert np.abs(ratio - 1).max() < 1e-4
    assert float(np.asarray(aux["clipped"])[mask].sum()) == 0.0
    # Without the truncation (the previous loss) the ratio is far from 1: the test can fail.
    _, logp_full = _loss_logp(tiny, rollout, temperature=SPEC["temperature"])
    assert np.abs(np.exp(np.asarray(logp_full)[mask] - old[mask]) - 1).max() > 0.05


def test_train_step_ratio_is_one_on_policy_with_top_k_top_p(tiny, rollout):
    """Through ``train_step`` with PPO and the run's sampling spec: ratio 1, nothing clipped."""
    import optax

    from passk_jax import sharding as S

    c, params = tiny
    mesh = S.make_mesh((1, 1, 1), jax.devices()[:1])
    tx = optax.sgd(0.0)
    state, _ = TR.create_train_state(c, tx, mesh, seed=0, params=params)
    cfg = TR.LossConfig(policy_loss="ppo", **SPEC)
    batch = R.flatten(rollout, jnp.asarray(np.random.default_rng(0).normal(size=(3, G))))
    _, m = TR.train_step(state, batch, tx=tx, model_config=c, loss_config=cfg)
    assert abs(float(m["ratio"]) - 1.0) < 1e-5 and float(m["clip_frac"]) == 0.0


def test_sampled_token_outside_recomputed_support_is_kept():
    """Round-off can move a sampled token just below a recomputed cut-off: it stays finite."""
    logits = jnp.array([[[3.0, 2.0, 1.0, 0.999999, -5.0]]])
    targets = jnp.array([[3]])
    lp = L.token_logprobs(logits, targets, top_k=3)
    assert np.isfinite(float(lp[0, 0]))
    full = L.token_logprobs(logits, jnp.array([[0]]), top_k=3)
    want = sampler.Sampling(top_k=3).log_probs(logits[0])[0, 0]
    np.testing.assert_allclose(full[0, 0], want, atol=1e-6)
    ent = L.logprobs_and_entropy(logits, targets, 1.0, 3, None)[1]
    assert np.isfinite(float(ent[0, 0]))
    g = jax.grad(lambda x: L.logprobs_and_entropy(x, targets, 1.0, 2, 0.9)[1].sum())(logits)
    assert bool(jnp.all(jnp.isfinite(g)))  # no NaN leaks from the -inf outside the support


def test_flatten_matches_make_batch(rollout):
    w = np.random.default_rng(1).normal(size=(3, G)).astype(np.float32)
    got = jax.jit(R.flatten)(rollout, jnp.asarray(w))
    want = TR.make_batch(
        rollout.prompt_tokens, rollout.prompt_mask, rollout.tokens, rollout.mask,
        rollout.logprobs, w,
    )  # fmt: skip
    assert set(got) == set(want) == set(TR.BATCH_KEYS)
    for k in want:
        np.testing.assert_array_equal(np.asarray(got[k]), want[k], err_msg=k)


# ----------------------------------------------------------------------------------------------------
# Health alarms.


def _rec(loss=0.1, g=1.0, wmax=0.5, ent=1.0, clipped=0.0, nonfinite=0.0):
    return {
        "train/loss": loss,
        "train/grad_norm": g,
        "train/weight_abs_max": wmax,
        "train/entropy": ent,
        "train/clipped": clipped,
        "train/weights_nonfinite": nonfinite,
    }


def test_health_zero_updates_after_consecutive_steps(caplog):
    h = M.HealthMonitor({"zero_update_steps": 3})
    with caplog.at_level(logging.WARNING, logger="passk_jax"):
        fired = [M.HealthMonitor.fired(h.update(i, _rec(g=0.0, wmax=0.0))) for i in range(4)]
    assert fired == [[], [], ["zero_updates"], ["zero_updates"]]
    assert "all zero for 3 consecutive steps" in caplog.text
    assert h.fired(h.update(4, _rec())) == []  # one real update resets the count
    assert h.fired(h.update(5, _rec(g=0.0, wmax=0.0))) == []


def test_health_entropy_collapse_grad_outlier_clip_fraction_nonfinite():
    h = M.HealthMonitor({"entropy_floor": 0.01, "entropy_steps": 2, "grad_norm_min_history": 5})
    outs = [h.update(i, _rec(g=1.0 + 0.01 * i, clipped=float(i % 2))) for i in range(6)]
    assert all(h.fired(o) == [] for o in outs)
    assert outs[-1]["train/clipped_frac"] == pytest.approx(3 / 6)
    assert h.fired(h.update(6, _rec(g=500.0))) == ["grad_norm_outlier"]
    assert h.fired(h.update(7, _rec(g=1e-3))) == ["grad_norm_outlier"]
    assert h.fired(h.update(8, _rec(ent=1e-4))) == []
    out = h.update(9, _rec(ent=1e-4))
    assert h.fired(out) == ["entropy_collapse"]
    assert "entropy" in h.messages({**_rec(ent=1e-4), **out})[0]
    assert h.fired(h.update(10, _rec(loss=float("nan")))) == ["nonfinite"]
    # State round trip (checkpointed): a restored monitor continues identically.
    h2 = M.HealthMonitor({"entropy_floor": 0.01, "entropy_steps": 2, "grad_norm_min_history": 5})
    h2.load(h.state_dict())
    assert h2.update(11, _rec(g=1.0)) == h.update(11, _rec(g=1.0))
    with pytest.raises(ValueError, match="unknown health options"):
        M.HealthMonitor({"zero_steps": 3})


def test_entropy_adaptive_in_the_learner_step(tiny, rollout):
    """``advantage = "entropy_adaptive"``: the learner step ranks prompts by their responses' mean
    sampled-token entropy and gives the top half GRPO, the rest analytical Pass@k weights."""
    from passk_jax import advantages as A
    from passk_jax import schedules
    from passk_jax import sharding as S
    from passk_jax import validate_config as V

    lp, m = np.asarray(rollout.logprobs), np.asarray(rollout.mask)
    per_resp = -(lp * m).sum(-1) / np.maximum(m.sum(-1), 1)
    ent = per_resp.mean(-1)
    np.testing.assert_allclose(TR.response_entropy(rollout.logprobs, rollout.mask), ent, rtol=1e-6)

    rewards = jnp.asarray([[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 0, 0]], jnp.float32)
    learner = TR.LearnerConfig.make("entropy_adaptive", {"kind": "constant", "k": 2})
    w, k = TR.weights_at(learner, rewards, jnp.int32(0), jax.random.key(0), jnp.asarray(ent))
    high = np.argsort(-ent)[:2]  # round(0.5 * 3) = 2 prompts on Pass@1
    grpo, passk = A.grpo_advantages(rewards), A.passk_advantages(rewards, 2)
    for i in range(3):
        np.testing.assert_allclose(w[i], (grpo if i in high else passk)[i], rtol=1e-6)
    np.testing.assert_allclose(w, schedules.adaptive_advantages(rewards, 2, ent), rtol=1e-6)
    with pytest.raises(ValueError, match="needs the rollout"):
        TR.weights_at(learner, rewards, jnp.int32(0), jax.random.key(0))

    # Inside the jitted learner step (metrics: the weights it used).
    c, params = tiny
    tx = TR.make_optimizer(1e-3)
    mesh = S.make_mesh((1, 1, 1), jax.devices()[:1])
    state, sh = TR.create_train_state(c, tx, mesh, 0, params=params)
    step = TR.jit_learner_step(tx, c, TR.LossConfig(**SPEC), learner, sh, mesh)
    _, metrics = step(state, rollout, rewards, jnp.int32(0))
    assert float(metrics["weight_abs_max"]) == pytest.approx(float(np.abs(w).max()), rel=1e-5)
    assert int(metrics["k"]) == 2
    # Validation: a known name, binary rewards only.
    assert "entropy_adaptive" in V._METHODS
