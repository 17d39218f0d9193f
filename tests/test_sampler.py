"""Tests of the sampler: log-prob consistency with the loss path, padding, EOS, determinism."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from passk_jax import sampler, testing
from passk_jax.models import gemma2 as g

EOS, PAD = 2, 0
G, T = 4, 12


@pytest.fixture(scope="module")
def tiny():
    return testing.tiny_model(seed=1)


@pytest.fixture(scope="module")
def prompts():
    # Left-padded prompts of different lengths (2..10 real tokens).
    return testing.random_prompts(3, min_len=2, max_len=10, vocab_size=64, seed=3)


def _sample(tiny, prompts, **kw):
    c, params = tiny
    kw = {"num_samples": G, "max_new_tokens": T, "rng": jax.random.key(0), **kw}
    kw.setdefault("eos_id", -1)
    return sampler.sample(params, c, *prompts, pad_id=PAD, **kw)


@pytest.mark.parametrize(
    "kw",
    [{}, {"temperature": 0.7}, {"temperature": 1.3, "top_k": 8, "top_p": 0.8}],
    ids=["t1", "t0.7", "t1.3-topk-topp"],
)
def test_logprobs_match_sequence_logits(tiny, prompts, kw):
    c, params = tiny
    out = _sample(tiny, prompts, **kw)
    assert out.tokens.shape == out.logprobs.shape == out.mask.shape == (3, G, T)
    assert bool(out.mask.all())  # no EOS configured
    # Independent recomputation from sequence_logits, with the same temperature scaling.
    p, _, _ = out.tokens.shape
    tp = prompts[0].shape[1]
    seq = jnp.concatenate([jnp.repeat(out.prompt_tokens, G, 0), out.tokens.reshape(p * G, T)], 1)
    seq_mask = jnp.concatenate([jnp.repeat(out.prompt_mask, G, 0), out.mask.reshape(p * G, T)], 1)
    logits = g.sequence_logits(params, seq, seq_mask, c)[:, tp - 1 : -1]
    logp = sampler.make_strategy(**kw).log_probs(logits)
    ref = jnp.take_along_axis(logp, out.tokens.reshape(p * G, T, 1), -1).reshape(p, G, T)
    np.testing.assert_allclose(out.logprobs, ref, atol=1e-4)
    np.testing.assert_allclose(sampler.recompute_logprobs(params, c, out, **kw), ref, atol=1e-4)
    assert float(out.logprobs.max()) <= 0.0
    if "top_k" in kw:  # every sampled token is inside the top-k support
        assert bool(jnp.all(jnp.isfinite(out.logprobs)))


def test_samples_are_diverse_and_reproducible(tiny, prompts):
    a = _sample(tiny, prompts)
    b = _sample(tiny, prompts)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.logprobs, b.logprobs)
    c = _sample(tiny, prompts, rng=jax.random.key(1))
    assert bool(jnp.any(a.tokens != c.tokens))
    # The G samples of one prompt differ from each other.
    assert len({tuple(np.asarray(r)) for r in a.tokens[0]}) > 1


def test_left_and_right_padding_give_the_same_samples(tiny):
    c, params = tiny
    left = testing.random_prompts(3, min_len=2, max_len=10, vocab_size=64, seed=3, side="left")
    right = testing.random_prompts(3, min_len=2, max_len=10, vocab_size=64, seed=3, side="right")
    a = _sample(tiny, left)
    b = _sample(tiny, right)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4)
    np.testing.assert_allclose(sampler.recompute_logprobs(params, c, b), b.logprobs, atol=1e-4)


def test_greedy_is_deterministic_and_argmax(tiny, prompts):
    c, params = tiny
    a = _sample(tiny, prompts, temperature=0.0)
    b = _sample(tiny, prompts, temperature=0.0, rng=jax.random.key(9))
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.tokens, jnp.broadcast_to(a.tokens[:, :1], a.tokens.shape))
    # Greedy continuation == repeated argmax of the cache-free forward pass.
    toks, mask = prompts
    tp = toks.shape[1]
    seq = jnp.concatenate([jnp.asarray(toks), jnp.zeros((3, T), jnp.int32)], 1)
    m = jnp.concatenate([jnp.asarray(mask), jnp.zeros((3, T), bool)], 1)
    for i in range(T):  # one fixed shape: a single compilation
        nxt = jnp.argmax(g.sequence_logits(params, seq, m, c)[:, tp + i - 1], -1)
        seq, m = seq.at[:, tp + i].set(nxt), m.at[:, tp + i].set(True)
    np.testing.assert_array_equal(a.tokens[:, 0], seq[:, tp:])
    ref = sampler.recompute_logprobs(params, c, a, temperature=0.0)
    np.testing.assert_allclose(a.logprobs, ref, atol=1e-4)


def test_eos_stops_rows_and_masks(tiny, prompts):
    free = _sample(tiny, prompts)
    eos = int(free.tokens[0, 0, 3])  # a token row (0, 0) samples at step 3
    out = _sample(tiny, prompts, eos_id=eos)
    tokens, mask, logp = map(np.asarray, (out.tokens, out.mask, out.logprobs))
    for p in range(3):
        for s in range(G):
            hits = np.flatnonzero(free.tokens[p, s] == eos)
            end = hits[0] + 1 if hits.size else T
            # Identical to the free run up to and including the first EOS, then padding.
            np.testing.assert_array_equal(tokens[p, s, :end], free.tokens[p, s, :end])
            assert mask[p, s, :end].all() and not mask[p, s, end:].any()
            assert (tokens[p, s, end:] == PAD).all() and (logp[p, s, end:] == 0).all()
    assert not mask[0, 0, 4:].any()


@pytest.mark.parametrize("phases", [1, 3, 12])
def test_decode_phases_do_not_change_samples(tiny, prompts, phases):
    """Growing the cache in phases (default 4) gives the same tokens, log-probs and masks as one
    loop over the full cache, also with EOS ending rows in different phases."""
    free = _sample(tiny, prompts)
    eos = int(free.tokens[1, 2, 5])
    a = _sample(tiny, prompts, eos_id=eos)
    b = _sample(tiny, prompts, eos_id=eos, decode_phases=phases)
    assert not bool(a.mask.all()) and bool(a.mask[..., 0].all())  # some rows stop early
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)


def test_early_exit_when_all_rows_finish(tiny, prompts):
    free = _sample(tiny, prompts, temperature=0.0)
    eos = int(free.tokens[0, 0, 0])
    # Repeat prompt 0 (whose greedy first token is that id), so every row stops at step 0.
    sub = tuple(np.asarray(x)[[0, 0, 0]] for x in prompts)
    out = _sample(tiny, sub, temperature=0.0, eos_id=eos)
    assert np.asarray(out.mask)[..., 0].all() and not np.asarray(out.mask)[..., 1:].any()
    assert (np.asarray(out.tokens)[..., 1:] == PAD).all()


def test_reprefill_baseline_matches(tiny, prompts):
    c, params = tiny
    a = _sample(tiny, prompts)
    b = sampler.sample_reprefill(
        params,
        c,
        *prompts,
        num_samples=G,
        max_new_tokens=T,
        rng=jax.random.key(0),
        eos_id=-1,
        pad_id=PAD,
    )
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)


def test_top_k_one_is_greedy(tiny, prompts):
    a = _sample(tiny, prompts, top_k=1)
    b = _sample(tiny, prompts, temperature=0.0)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_allclose(a.logprobs, 0.0, atol=1e-6)


def test_strategy_distribution():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    lp = sampler.Sampling(top_p=0.7).log_probs(logits)
    np.testing.assert_allclose(jnp.exp(lp), [[0.625, 0.375, 0.0, 0.0]], atol=1e-6)
    lp = sampler.Sampling(top_k=3).log_probs(logits)
    np.testing.assert_allclose(jnp.exp(lp), [[0.5, 0.3, 0.15, 0.0]] / np.float32(0.95), atol=1e-6)
    lp = sampler.Sampling(temperature=0.5).log_probs(logits)
    np.testing.assert_allclose(jnp.exp(lp), jax.nn.softmax(2 * logits), atol=1e-6)
    with pytest.raises(ValueError):
        sampler.make_strategy(temperature=-1.0)
    assert sampler.make_strategy(0.0) == sampler.Greedy()


def test_sampled_frequencies_match_distribution():
    """Token draws: frequencies match the sampling distribution (chi-square, 200k draws), and tokens
    of zero probability (here two in the middle and the last) are never drawn."""
    probs = np.array([0.1, 0.0, 0.4, 0.0, 0.25, 0.2, 0.05, 0.0], np.float64)
    logits = jnp.log(jnp.asarray(probs, jnp.float32))[None].repeat(4000, axis=0)
    strategy = sampler.Sampling()
    draw = jax.jit(lambda key: strategy(logits, key)[0])
    toks = np.concatenate([np.asarray(draw(jax.random.key(i))) for i in range(50)])
    counts = np.bincount(toks, minlength=8)
    assert counts[probs == 0].sum() == 0
    expected = probs[probs > 0] * toks.size
    chi2 = float(np.sum((counts[probs > 0] - expected) ** 2 / expected))
    assert chi2 < 20.5, (chi2, counts)  # 4 degrees of freedom: P(chi2 > 20.5) < 0.0004
    _, logp = strategy(logits[:3], jax.random.key(0))
    np.testing.assert_allclose(
        np.exp(logp), probs[np.asarray(strategy(logits[:3], jax.random.key(0))[0])], rtol=1e-5
    )


def test_threefry_matches_jax_primitive():
    """The fused Threefry-2x32 is bit-identical to JAX's primitive on random keys and counters."""
    from jax.extend.random import threefry2x32_p

    bits = jax.random.bits(jax.random.key(7), (4, 1000), jnp.uint32)
    k0, k1 = bits[0, 0], bits[1, 0]  # scalar keys, broadcast as in the sampler
    want = threefry2x32_p.bind(*jnp.broadcast_arrays(k0, k1, bits[2], bits[3]))
    got = jax.jit(sampler._threefry2x32)(k0, k1, bits[2], bits[3])
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_gumbel_noise_moments_and_keys():
    """Standard Gumbel: mean = Euler's gamma, variance = pi^2 / 6; keys change the noise; typed,
    raw and non-threefry keys all work."""
    key = jax.random.key(3)
    noise = np.asarray(sampler.gumbel_noise(key, (500, 800)), np.float64)
    assert np.isfinite(noise).all()
    se = np.sqrt(np.pi**2 / 6 / noise.size)
    assert abs(noise.mean() - np.euler_gamma) < 5 * se
    assert abs(noise.var() - np.pi**2 / 6) < 0.02
    # Every (row, column) gets its own 32-bit draw: ~n^2 / 2^33 = 19 repeats expected at random.
    data = jax.random.key_data(key)
    bits, _ = sampler._threefry2x32(
        data[0],
        data[1],
        jnp.arange(500, dtype=jnp.uint32)[:, None],
        jnp.arange(800, dtype=jnp.uint32)[None, :],
    )
    assert len(np.unique(np.asarray(bits))) > noise.size - 100
    raw = sampler.gumbel_noise(jax.random.key_data(key), (500, 800))
    np.testing.assert_array_equal(raw, noise)
    other = sampler.gumbel_noise(jax.random.key(4), (500, 800))
    assert float(jnp.mean(jnp.abs(other - noise))) > 0.5
    # The extreme bit patterns stay finite (u strictly inside (0, 1)).
    edge = sampler._gumbel_from_bits(jnp.array([0, 1, 2**31, 2**32 - 2, 2**32 - 1], jnp.uint32))
    assert bool(jnp.isfinite(edge).all()) and float(edge[-1]) > 16.0 and float(edge[0]) < -2.7
    rbg = sampler.gumbel_noise(jax.random.key(3, impl="rbg"), (50, 80))
    assert rbg.shape == (50, 80) and bool(jnp.isfinite(rbg).all())


def test_invalid_inputs(tiny):
    c, params = tiny
    with pytest.raises(ValueError, match="decode_phases"):
        _sample(tiny, (np.ones((1, 3), np.int32), np.ones((1, 3), bool)), decode_phases=0)
    with pytest.raises(ValueError):
        sampler.sample(
            params,
            c,
            np.zeros((2, 3), np.int32),
            np.zeros((2, 3), bool),
            num_samples=2,
            max_new_tokens=4,
            rng=jax.random.key(0),
            eos_id=EOS,
            pad_id=PAD,
        )


@pytest.mark.parametrize("layout", ["training", "replicated", "tensor"])
def test_samples_identical_under_the_training_mesh(prompts, layout):
    """Parameters in the train state's FSDP x tensor layout on 8 devices (and resharded to each
    rollout layout), prompts sharded over the batch axes: the same samples as on one device."""
    from passk_jax import sharding as S

    if len(jax.devices()) < 8:
        pytest.skip("needs 8 devices")
    c = testing.tiny_config(num_heads=4, num_kv_heads=2, hidden_dim=128)
    params = testing.random_params(c, seed=7)
    toks, mask = testing.random_prompts(4, min_len=2, max_len=10, vocab_size=64, seed=5)
    kw = dict(num_samples=G, max_new_tokens=T, rng=jax.random.key(3), eos_id=-1, pad_id=PAD)
    one = jax.devices()[:1]
    ref = sampler.sample(jax.device_put(params, one[0]), c, toks, mask, **kw)
    mesh = S.make_mesh({"data": 1, "fsdp": 4, "tensor": 2}, jax.devices()[:8])
    train_params = jax.device_put(params, S.param_shardings(c, mesh))
    assert any(
        len(x.sharding.device_set) == 8 and x.addressable_shards[0].data.size < x.size
        for x in jax.tree.leaves(train_params)
    )
    rollout = sampler.reshard_for_rollout(train_params, c, mesh, layout)
    for x, sh in zip(
        jax.tree.leaves(rollout), jax.tree.leaves(sampler.rollout_shardings(c, mesh, layout))
    ):
        assert x.sharding.is_equivalent_to(sh, x.ndim)
    st = S.batch_sharding(mesh, 2)
    out = sampler.sample(
        rollout, c, S.shard_host_array(toks, st), S.shard_host_array(mask, st), **kw
    )
    np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(ref.tokens))
    np.testing.assert_array_equal(np.asarray(out.mask), np.asarray(ref.mask))
    np.testing.assert_allclose(np.asarray(out.logprobs), np.asarray(ref.logprobs), atol=1e-5)
    # With the mesh, the P * G decode rows (and the KV cache) are sharded over the batch axes:
    # each of the 4 fsdp shards holds a quarter of the rows; same samples.
    sharded = sampler.sample(rollout, c, toks, mask, mesh=mesh, **kw)
    np.testing.assert_array_equal(np.asarray(sharded.tokens), np.asarray(ref.tokens))
    np.testing.assert_allclose(np.asarray(sharded.logprobs), np.asarray(ref.logprobs), atol=1e-5)
    rows = sharded.tokens.reshape(-1, T)
    assert sharded.tokens.sharding.shard_shape(sharded.tokens.shape)[0] * 4 == toks.shape[0]
    assert {s.data.shape[0] for s in rows.addressable_shards} == {rows.shape[0] // 4}
    if layout == "training":  # 3 x G rows do not divide over 4 devices: replicated, same samples
        odd = sampler.sample(rollout, c, toks[:3], mask[:3], mesh=mesh, **kw)
        want = sampler.sample(jax.device_put(params, one[0]), c, toks[:3], mask[:3], **kw)
        np.testing.assert_array_equal(np.asarray(odd.tokens), np.asarray(want.tokens))
        assert odd.tokens.sharding.shard_shape(odd.tokens.shape) == odd.tokens.shape
    with pytest.raises(ValueError, match="rollout layout"):
        sampler.rollout_shardings(c, mesh, "fsdp-please")
