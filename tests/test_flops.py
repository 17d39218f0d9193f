"""Model-FLOPs formulas against XLA's own count of the compiled forward and backward passes."""

import functools

import jax
import jax.numpy as jnp
import pytest

from passk_jax import flops as F
from passk_jax.models import gemma2

SMALL = dict(
    vocab_size=1024,
    num_layers=2,
    embed_dim=256,
    hidden_dim=1024,
    num_heads=4,
    num_kv_heads=2,
    head_dim=64,
    query_pre_attn_scalar=64,
    sliding_window=16,
)


def _xla_flops(fn, *args):
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])


@pytest.mark.parametrize("b,t", [(2, 64), (4, 32)])
def test_forward_and_step_flops_match_xla(b, t):
    cfg = gemma2.Gemma2Config(**SMALL)
    params = jax.eval_shape(functools.partial(gemma2.init_params, cfg), jax.random.key(0))
    tokens = jax.ShapeDtypeStruct((b, t), jnp.int32)
    fwd = _xla_flops(lambda p, x: gemma2.forward(p, x, cfg), params, tokens)
    model = F.forward_flops(cfg, b, t)
    assert 1.0 <= fwd / model < 1.03, fwd / model  # XLA also counts the element-wise work
    grad = _xla_flops(jax.grad(lambda p, x: jnp.sum(gemma2.forward(p, x, cfg))), params, tokens)
    step = F.train_step_flops(cfg, b, t // 2, t - t // 2)
    assert 1.0 <= grad / step < 1.03, grad / step


def test_unembedding_share_and_mfu():
    cfg = gemma2.Gemma2Config.gemma2_2b()
    all_pos = F.train_step_flops(cfg, 8, 512, 1024)
    completion_only = F.train_step_flops(cfg, 8, 512, 1024, unembed_all=False)
    unembed = 3 * 8 * 2 * cfg.embed_dim * cfg.vocab_size
    assert all_pos - completion_only == pytest.approx(unembed * 512)
    assert F.mfu(1e15, 2.0, 197e12, 4) == pytest.approx(1e15 / (2.0 * 197e12 * 4))
    assert F.mfu(1e15, 2.0, None, 4) is None
    assert F.peak_flops(jax.devices("cpu")[0]) is None
