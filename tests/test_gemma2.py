"""Tests of the Flax Gemma-2: invariants (causality, cache, padding) and parity with transformers."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from passk_jax import testing
from passk_jax.models import gemma2 as g


@pytest.fixture(scope="module")
def tiny():
    return testing.tiny_model(seed=0)


def _count(config):
    shapes = jax.eval_shape(lambda: g.init_params(config, jax.random.key(0)))
    return sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))


def test_2b_param_count():
    # HF release: tied embeddings, 256,000-token vocabulary (the Flax release pads it to 256,128).
    assert _count(g.Gemma2Config.gemma2_2b()) == 2_614_341_888


@pytest.mark.slow
def test_9b_27b_param_counts():
    assert _count(g.Gemma2Config.gemma2_9b()) == 9_241_705_984
    assert _count(g.Gemma2Config.gemma2_27b()) == 27_227_128_320


def test_param_tree_is_release_layout(tiny):
    c, params = tiny
    n, k, h, d, f = c.num_heads, c.num_kv_heads, c.head_dim, c.embed_dim, c.hidden_dim
    shapes = jax.tree.map(lambda x: tuple(x.shape), params)
    assert set(shapes) == {"embedder", "final_norm"} | {f"layer_{i}" for i in range(c.num_layers)}
    assert shapes["embedder"] == {"input_embedding": (c.vocab_size, d)}
    assert shapes["final_norm"] == {"scale": (d,)}
    assert shapes["layer_1"] == {
        "pre_attention_norm": {"scale": (d,)},
        "attn": {
            "q_einsum": {"w": (n, d, h)},
            "kv_einsum": {"w": (2, k, d, h)},
            "attn_vec_einsum": {"w": (n, h, d)},
        },
        "post_attention_norm": {"scale": (d,)},
        "pre_ffw_norm": {"scale": (d,)},
        "mlp": {"gating_einsum": (2, f, d), "linear": (f, d)},
        "post_ffw_norm": {"scale": (d,)},
    }


def test_logical_axes_match_params(tiny):
    c, params = tiny
    axes = g.param_logical_axes(c)
    names = jax.tree.map(lambda p, a: (p.ndim, a), params, axes)
    for ndim, a in jax.tree.leaves(names, is_leaf=lambda x: isinstance(x, tuple)):
        assert isinstance(a, tuple) and len(a) == ndim
    assert axes["embedder"]["input_embedding"] == ("vocab", "embed")
    assert axes["layer_0"]["attn"]["q_einsum"]["w"] == ("heads", "embed", "head_dim")
    assert axes["layer_0"]["mlp"]["linear"] == ("mlp", "embed")


def test_layer_alternation():
    c = g.Gemma2Config.tiny(num_layers=4)
    assert [c.is_sliding(i) for i in range(4)] == [True, False, True, False]


def test_causality_future_tokens_do_not_matter(tiny):
    c, params = tiny
    t = jax.random.randint(jax.random.key(1), (2, 20), 3, c.vocab_size)
    t2 = t.at[:, 12:].set((t[:, 12:] + 7) % c.vocab_size)
    a, b = g.forward(params, t, c), g.forward(params, t2, c)
    np.testing.assert_allclose(a[:, :12], b[:, :12], atol=1e-6)
    assert float(jnp.abs(a[:, 12:] - b[:, 12:]).max()) > 1e-3  # the test can fail


def test_causality_no_gradient_from_future(tiny):
    c, params = tiny
    t = jax.random.randint(jax.random.key(2), (1, 16), 3, c.vocab_size)
    emb = params["embedder"]["input_embedding"]
    one_hot = jax.nn.one_hot(t, c.vocab_size)

    def logit_at(x_oh, pos):
        # Feed soft tokens by re-projecting through the embedding table (tokens -> rows of emb).
        p2 = jax.tree.map(lambda x: x, params)
        p2["embedder"] = {"input_embedding": jnp.concatenate([emb, x_oh[0] @ emb])}
        fake = (c.vocab_size + jnp.arange(16))[None]
        cfg = dataclasses.replace(c, vocab_size=c.vocab_size + 16)
        return g.forward(p2, fake, cfg)[0, pos, : c.vocab_size].sum()

    grad = jax.grad(logit_at)(one_hot, 9)
    per_token = jnp.abs(grad[0]).sum(-1)
    assert float(per_token[10:].max()) == 0.0
    assert float(per_token[:10].min()) > 0.0


def test_sliding_window_limits_local_layers():
    # One local layer only: a token further back than the window cannot influence the logits.
    c, params = testing.tiny_model(seed=3, num_layers=1, sliding_window=4)
    t = jax.random.randint(jax.random.key(4), (1, 12), 3, c.vocab_size)
    t2 = t.at[:, 2].set((t[:, 2] + 5) % c.vocab_size)
    a, b = g.forward(params, t, c), g.forward(params, t2, c)
    np.testing.assert_allclose(a[:, 6:], b[:, 6:], atol=1e-6)  # 6 - 2 >= window
    assert float(jnp.abs(a[:, 2:6] - b[:, 2:6]).max()) > 1e-3


def test_cached_decode_matches_full_forward(tiny):
    c, params = tiny
    b, t, prefill = 2, 20, 7
    tokens = jax.random.randint(jax.random.key(5), (b, t), 3, c.vocab_size)
    full = g.forward(params, tokens, c)
    step = jax.jit(g.apply_with_cache, static_argnums=1)
    cache = g.init_cache(c, b, t + 3)  # a few spare slots
    slots = jnp.arange(t + 3)
    pos = jnp.broadcast_to(jnp.arange(prefill), (b, prefill))
    mask = jnp.broadcast_to(slots[None, :] <= jnp.arange(prefill)[:, None], (b, prefill, t + 3))
    logits, cache = step(params, c, tokens[:, :prefill], pos, mask, cache)
    outs = [logits]
    sin_tab, cos_tab = g.rope_sincos(slots, c)  # the sampler's precomputed-RoPE path
    for i in range(prefill, t):
        mask = jnp.broadcast_to(slots <= i, (b, 1, t + 3))
        pos = jnp.full((b, 1), i)
        rope = (sin_tab[pos], cos_tab[pos]) if i % 2 else None
        logits, cache = step(params, c, tokens[:, i : i + 1], pos, mask, cache, rope)
        outs.append(logits)
    assert int(cache["index"]) == t
    np.testing.assert_allclose(jnp.concatenate(outs, 1), full, atol=1e-4)


def test_sequence_logits_padding_invariance(tiny):
    c, params = tiny
    tokens = jax.random.randint(jax.random.key(6), (1, 14), 3, c.vocab_size)
    ref = g.forward(params, tokens, c)
    pad = 5
    padded = jnp.concatenate([jnp.zeros((1, pad), jnp.int32), tokens], axis=1)
    mask = jnp.arange(14 + pad)[None] >= pad
    out = g.sequence_logits(params, padded, mask, c)
    np.testing.assert_allclose(out[:, pad:], ref, atol=1e-4)
    assert bool(jnp.all(jnp.isfinite(out)))
    # Right padding too.
    padded_r = jnp.concatenate([tokens, jnp.zeros((1, pad), jnp.int32)], axis=1)
    out_r = g.sequence_logits(params, padded_r, jnp.arange(14 + pad)[None] < 14, c)
    np.testing.assert_allclose(out_r[:, :14], ref, atol=1e-4)


def test_bfloat16_compute_close_to_float32(tiny):
    c, params = tiny
    tokens = jax.random.randint(jax.random.key(7), (2, 16), 3, c.vocab_size)
    ref = g.forward(params, tokens, c)
    out = g.forward(params, tokens, dataclasses.replace(c, dtype="bfloat16"))
    assert out.dtype == jnp.float32
    assert float(jnp.abs(out - ref).max()) < 0.25


def test_forward_backward_is_fast(tiny):
    import time

    c, params = tiny
    tokens = jax.random.randint(jax.random.key(8), (16, 64), 3, c.vocab_size)

    @jax.jit
    def loss_and_grad(p):
        def loss(p):
            lp = jax.nn.log_softmax(g.forward(p, tokens, c)[:, :-1])
            return -jnp.take_along_axis(lp, tokens[:, 1:, None], -1).mean()

        return jax.value_and_grad(loss)(p)

    jax.block_until_ready(loss_and_grad(params))
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        jax.block_until_ready(loss_and_grad(params))
        times.append(time.perf_counter() - t0)
    assert min(times) < 1.0, times


# ----------------------------------------------------------------------------------------------------
# Parity with transformers' Gemma2ForCausalLM (torch CPU, float32, eager attention).


def _hf_model(tmp_path, *, num_kv_heads, seed=0, num_layers=4, window=5):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    hf_config = transformers.Gemma2Config(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=num_kv_heads,
        head_dim=16,
        query_pre_attn_scalar=12,
        sliding_window=window,
        max_position_embeddings=256,
        attn_logit_softcapping=3.0,  # small caps so the tanh is far from linear
        final_logit_softcapping=2.0,
        attn_implementation="eager",
    )
    model = transformers.Gemma2ForCausalLM(hf_config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0.0, 0.3 if "norm" in name else 0.15)
    model.save_pretrained(tmp_path)
    return model


@pytest.mark.parity
@pytest.mark.parametrize("num_kv_heads", [2, 4, 1], ids=["gqa", "mha", "mqa"])
def test_logit_parity_with_transformers(tmp_path, num_kv_heads):
    import torch

    from passk_jax.checkpoints import load_hf_gemma2

    model = _hf_model(tmp_path, num_kv_heads=num_kv_heads)
    config, params = load_hf_gemma2(str(tmp_path))
    assert config.sliding_window == 5 and config.num_layers == 4
    assert config.attn_logit_softcap == 3.0 and config.final_logit_softcap == 2.0
    tokens = np.random.RandomState(0).randint(0, 96, (2, 21))
    with torch.no_grad():
        ref = model(torch.tensor(tokens)).logits.numpy()
    out = np.asarray(g.forward(params, jnp.asarray(tokens), config))
    assert np.abs(out - ref).max() < 1e-3
    # The comparison is sensitive: a wrong window breaks it.
    wrong = np.asarray(
        g.forward(params, jnp.asarray(tokens), dataclasses.replace(config, sliding_window=64))
    )
    assert np.abs(wrong - ref).max() > 1e-2


@pytest.mark.parity
def test_padded_logit_parity_with_transformers(tmp_path):
    import torch

    from passk_jax.checkpoints import load_hf_gemma2

    model = _hf_model(tmp_path, num_kv_heads=2, seed=1, num_layers=3)
    config, params = load_hf_gemma2(str(tmp_path))
    rng = np.random.RandomState(1)
    tokens = rng.randint(3, 96, (3, 18))
    mask = np.ones((3, 18), bool)
    mask[0, :6] = False  # left-padded rows of different lengths
    mask[1, :2] = False
    tokens[~mask] = 0
    positions = np.maximum(np.cumsum(mask, 1) - 1, 0)
    with torch.no_grad():
        ref = model(
            torch.tensor(tokens),
            attention_mask=torch.tensor(mask.astype(np.int64)),
            position_ids=torch.tensor(positions),
        ).logits.numpy()
    out = np.asarray(g.sequence_logits(params, jnp.asarray(tokens), jnp.asarray(mask), config))
    assert np.abs(out[mask] - ref[mask]).max() < 1e-3


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_wide_matmul_custom_gradients_equal_einsum(dtype):
    """The projections with hand-written VJPs (GeGLU, tied unembedding) have einsum's values and
    gradients, in float32 and bfloat16, for [B, T, D] inputs."""
    from passk_jax.models.gemma2 import _matmul_w, _matmul_wt

    rng = np.random.RandomState(0)
    x = jnp.asarray(rng.randn(3, 5, 8), dtype)
    w = jnp.asarray(rng.randn(12, 8), dtype)
    h = jnp.asarray(rng.randn(3, 5, 12), dtype)
    tol = 1e-5 if dtype == jnp.float32 else 3e-2

    def loss_pairs(f_ours, f_ref, *args):
        ours = jax.grad(lambda *a: jnp.sum(jnp.sin(f_ours(*a).astype(jnp.float32))), (0, 1))(*args)
        ref = jax.grad(lambda *a: jnp.sum(jnp.sin(f_ref(*a).astype(jnp.float32))), (0, 1))(*args)
        np.testing.assert_allclose(
            np.asarray(f_ours(*args), np.float32), np.asarray(f_ref(*args), np.float32), rtol=tol
        )
        for o, r in zip(ours, ref, strict=True):
            assert o.dtype == r.dtype
            np.testing.assert_allclose(
                np.asarray(o, np.float32), np.asarray(r, np.float32), rtol=tol, atol=tol
            )

    loss_pairs(
        lambda x, w: _matmul_wt(x, w, jnp.float32),
        lambda x, w: jnp.einsum("BTD,FD->BTF", x, w, preferred_element_type=jnp.float32),
        x,
        w,
    )
    loss_pairs(
        lambda x, w: _matmul_wt(x, w, dtype),
        lambda x, w: jnp.einsum("BTD,FD->BTF", x, w),
        x,
        w,
    )
    loss_pairs(_matmul_w, lambda h, w: jnp.einsum("BTF,FD->BTD", h, w), h, w)


def test_grow_cache_keeps_slots_and_refuses_to_shrink(tiny):
    c, params = tiny
    tokens = jax.random.randint(jax.random.key(2), (2, 5), 3, c.vocab_size)
    pos = jnp.broadcast_to(jnp.arange(5), (2, 5))
    mask = jnp.broadcast_to(jnp.tril(jnp.ones((5, 5), bool)), (2, 5, 5))
    _, cache = g.apply_with_cache(params, c, tokens, pos, mask, g.init_cache(c, 2, 5))
    grown = g.grow_cache(cache, 9)
    assert int(grown["index"]) == 5 and grown["positions"].shape == (2, 9)
    for name in ("layer_0", "layer_2"):
        assert grown[name]["k"].shape[-1] == 9 and grown[name]["v"].shape[2] == 9
        np.testing.assert_array_equal(grown[name]["k"][..., :5], cache[name]["k"])
        np.testing.assert_array_equal(grown[name]["v"][:, :, :5], cache[name]["v"])
        assert not bool(grown[name]["k"][..., 5:].any())
    with pytest.raises(ValueError, match="shrink"):
        g.grow_cache(cache, 4)


def test_rope_and_stacked_matmul_match_their_reference_forms():
    """RoPE over the [2, H/2] view equals the split / concatenate form exactly (values and
    gradients); the stacked-weight ``_matmul_wt`` (one dot for gate and up) equals two einsums."""
    from passk_jax.models.gemma2 import _apply_rope, _matmul_wt

    k = jax.random.split(jax.random.key(0), 4)
    x = jax.random.normal(k[0], (2, 5, 3, 8))
    c = g.Gemma2Config.tiny(head_dim=8)
    sin, cos = g.rope_sincos(jnp.arange(10).reshape(2, 5), c)

    def ref(x):
        x1, x2 = jnp.split(x, 2, axis=-1)
        s, co = sin[:, :, None], cos[:, :, None]
        return jnp.concatenate([x1 * co - x2 * s, x2 * co + x1 * s], axis=-1)

    np.testing.assert_array_equal(_apply_rope(x, sin, cos), ref(x))
    gr = jax.grad(lambda x: jnp.sum(jnp.cos(_apply_rope(x, sin, cos))))(x)
    np.testing.assert_allclose(gr, jax.grad(lambda x: jnp.sum(jnp.cos(ref(x))))(x), atol=1e-6)

    xs = jax.random.normal(k[1], (3, 4, 8))
    w = jax.random.normal(k[2], (2, 6, 8))
    ct = jax.random.normal(k[3], (3, 4, 2, 6))
    f = lambda x, w: jnp.sum(jnp.sin(_matmul_wt(x, w, jnp.float32)) * ct)
    r = lambda x, w: jnp.sum(
        jnp.sin(jnp.stack([jnp.einsum("btd,fd->btf", x, w[i]) for i in range(2)], -2)) * ct
    )
    np.testing.assert_allclose(f(xs, w), r(xs, w), rtol=1e-5)
    for a, b in zip(jax.grad(f, (0, 1))(xs, w), jax.grad(r, (0, 1))(xs, w), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_einsum_projections_equal_the_matmul_path():
    """``matmul_projections=False`` (stored-layout einsums, the 27B pod recipe) computes the same
    logits and parameter gradients as the 2-D matmul path, and the two programs differ (the lever
    really switches the path)."""
    cfg = testing.tiny_config()
    params = testing.random_params(cfg, seed=3)
    rng = np.random.RandomState(0)
    tokens = jnp.asarray(rng.randint(0, cfg.vocab_size, (2, 11)))
    mask = jnp.asarray(rng.rand(2, 11) > 0.1).at[:, 0].set(True)

    def loss(prm, c):
        return jnp.sum(jnp.sin(g.sequence_logits(prm, tokens, mask, c)) * mask[..., None])

    alt = dataclasses.replace(cfg, matmul_projections=False)
    (l1, g1), (l2, g2) = (jax.value_and_grad(loss)(params, c) for c in (cfg, alt))
    np.testing.assert_allclose(float(l2), float(l1), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g2), jax.tree.leaves(g1), strict=True):
        scale = float(jnp.max(jnp.abs(b))) + 1e-12
        np.testing.assert_allclose(np.asarray(a) / scale, np.asarray(b) / scale, atol=1e-5)
    text = [jax.jit(loss, static_argnums=1).lower(params, c).as_text() for c in (cfg, alt)]
    assert text[0] != text[1]
