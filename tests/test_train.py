"""The sharded policy-gradient step: sharded == single device, shardings kept, no recompilation,
exact micro-batch accumulation, and loss-function properties."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from passk_jax import losses as L
from passk_jax import sharding as S
from passk_jax import train as TR
from passk_jax.models import gemma2
from passk_jax.testing import random_rollout_arrays, tiny_config

_batch = random_rollout_arrays


def _run(mesh_shape, loss_config, steps=2, seed=0, tx=None):
    devices = jax.devices()[: int(np.prod(mesh_shape))]
    mesh = S.make_mesh(mesh_shape, devices)
    cfg = tiny_config()
    tx = TR.make_optimizer(1e-3, warmup_steps=0) if tx is None else tx
    state, shardings = TR.create_train_state(
        cfg, tx, mesh, seed=0, with_ref=loss_config.kl_coef > 0
    )
    step = TR.jit_train_step(tx, cfg, loss_config, shardings, mesh)
    metrics = []
    for i in range(steps):
        batch = TR.make_batch(*_batch(seed + i), mesh=mesh)
        state, m = step(state, batch)
        metrics.append(jax.device_get(m))
    return state, shardings, step, metrics


@pytest.mark.parametrize(
    "loss_config,optimizer",
    [
        # The SGD case (tighter parameter match) is in the slow suite; CI keeps the AdamW one,
        # which also covers PPO, the KL term and the entropy bonus on the same mesh.
        pytest.param(TR.LossConfig(), "sgd", marks=pytest.mark.slow),
        (
            TR.LossConfig(
                policy_loss="ppo", aggregation="token_mean", kl_coef=0.1, entropy_coef=0.01
            ),
            "adamw",
        ),
    ],
)
def test_sharded_equals_single_device(loss_config, optimizer):
    """Same loss, grad norm and parameters on a (data=2, fsdp=2, tensor=2) mesh as on one device.

    With SGD the updated parameters match to 1e-5. Adam divides by sqrt(v): for a coordinate whose
    gradient is ~0, float reduction-order noise becomes an O(lr) relative change, so with AdamW the
    parameters are compared at 1e-4 absolute (lr = 1e-3) while metrics still match to 1e-5."""
    assert len(jax.devices()) >= 8, "conftest should give 8 CPU devices"
    import optax

    tx = optax.sgd(0.1) if optimizer == "sgd" else None
    s1, _, _, m1 = _run((1, 1, 1), loss_config, tx=tx)
    s8, sh8, step8, m8 = _run((2, 2, 2), loss_config, tx=tx)
    for a, b in zip(m1, m8):
        for key in a:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-5, err_msg=key)
    flat1 = jax.tree.leaves(jax.device_get(s1.params))
    flat8 = jax.tree.leaves(jax.device_get(s8.params))
    atol = 1e-5 if optimizer == "sgd" else 1e-4
    moved = 0.0
    for a, b, a0 in zip(flat1, flat8, jax.tree.leaves(jax.device_get(_init_params()))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=atol)
        moved = max(moved, float(np.abs(a - a0).max()))
    assert moved > 10 * atol  # the parameters really changed
    # state keeps its shardings across steps; something is actually sharded
    for leaf, sh in zip(jax.tree.leaves(s8), jax.tree.leaves(sh8)):
        assert leaf.sharding.is_equivalent_to(sh, leaf.ndim)
    specs = [sh.spec for sh in jax.tree.leaves(sh8.params)]
    assert any("tensor" in str(s) for s in specs) and any("fsdp" in str(s) for s in specs)
    assert step8._cache_size() == 1  # second call did not recompile
    assert m8[0]["grad_norm"] > 0 and np.isfinite(m8[1]["loss"])


def _init_params():
    mesh = S.make_mesh((1, 1, 1), jax.devices()[:1])
    tx = TR.make_optimizer(1e-3)
    state, _ = TR.create_train_state(tiny_config(), tx, mesh, seed=0)
    return state.params


def test_microbatch_accumulation_is_exact():
    for agg in ("token_mean", "seq_mean_token_mean"):
        _, _, _, m1 = _run((1, 1, 1), TR.LossConfig(aggregation=agg), steps=1)
        s4, _, _, m4 = _run((1, 1, 1), TR.LossConfig(aggregation=agg, num_microbatches=4), steps=1)
        for key in ("loss", "grad_norm", "entropy", "num_tokens"):
            np.testing.assert_allclose(m1[0][key], m4[0][key], rtol=1e-5, err_msg=f"{agg} {key}")


def test_micro_layout():
    """auto: strided micro-batches without prompt groups, contiguous with them; strided on request
    when the groups split evenly (a micro-batch then holds g / m consecutive rows of each group);
    contiguous blocks otherwise or when asked."""
    lc = lambda m, **kw: TR.LossConfig(num_microbatches=m, **kw)  # noqa: E731
    assert TR.micro_layout(256, 16, lc(1)) == (False, 16)
    assert TR.micro_layout(256, 16, lc(2)) == (False, 16)  # auto: groups kept whole
    assert TR.micro_layout(256, 16, lc(2, micro_split="strided")) == (True, 8)
    assert TR.micro_layout(256, 1, lc(8)) == (True, 1)  # auto: no groups, strided
    assert TR.micro_layout(256, 16, lc(32, micro_split="strided")) == (False, 8)  # 16 % 32
    assert TR.micro_layout(12, 4, lc(6)) == (False, 2)
    assert TR.micro_layout(256, 16, lc(2, micro_split="contiguous")) == (False, 16)
    assert TR.micro_layout(256, 16, lc(2, share_prompts=False)) == (True, 1)
    with pytest.raises(ValueError, match="micro_split"):
        lc(2, micro_split="interleaved")


def test_strided_micro_batches_span_the_mesh():
    """On 8 devices (batch sharded over fsdp, activations constrained to the batch axes as the pod
    recipes set them), strided micro-batches give the contiguous split's loss, gradient norm and
    parameters, and their compiled step moves no batch rows between devices (no all-to-all or
    collective-permute), which the contiguous split needs to bring each micro-batch (on 1 / m of
    the devices) onto the whole mesh."""
    import collections
    import re

    import optax

    cfg = tiny_config(activation_batch_axes=("data", "fsdp"))
    mesh = S.make_mesh({"data": 1, "fsdp": 8, "tensor": 1}, jax.devices()[:8])
    tx = optax.sgd(0.1)
    rows = _batch(0, p=8, g=4)
    host = None
    out, ops = {}, {}
    for split in ("strided", "contiguous"):
        lc = TR.LossConfig(num_microbatches=2, micro_split=split)
        state, sh = TR.create_train_state(cfg, tx, mesh, seed=0, params=host)
        host = host or jax.device_get(state.params)
        step = TR.jit_train_step(tx, cfg, lc, sh, mesh, group_size=4)
        batch = TR.make_batch(*rows, mesh=mesh)
        with jax.set_mesh(mesh):
            text = step.lower(state, batch).compile().as_text()
            state, m = step(state, batch)
        ops[split] = collections.Counter(
            re.findall(r"= \S+ (all-to-all|collective-permute)\(", text)
        )
        out[split] = (jax.device_get(state.params), jax.device_get(m))
    (p_s, m_s), (p_c, m_c) = out["strided"], out["contiguous"]
    for key in ("loss", "grad_norm", "entropy", "num_tokens", "prompt_group_mismatch"):
        np.testing.assert_allclose(m_s[key], m_c[key], rtol=1e-5, atol=1e-6, err_msg=key)
    for a, b in zip(jax.tree.leaves(p_s), jax.tree.leaves(p_c)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert sum(ops["strided"].values()) == 0, ops
    assert ops["contiguous"]["collective-permute"] > 0, ops


def test_reinforce_equals_ppo_on_policy():
    """At ratio 1 (old_logp = current logp) PPO's gradient equals REINFORCE's."""
    cfg = tiny_config()
    mesh = S.make_mesh((1, 1, 1), jax.devices()[:1])
    tx = TR.make_optimizer(1e-2)
    state, _ = TR.create_train_state(cfg, tx, mesh, seed=0)
    batch = TR.make_batch(*_batch(3))
    logits = TR.completion_logits(state.params, cfg, batch)
    batch["old_logp"] = np.asarray(L.token_logprobs(logits, batch["tokens"]))

    def grads(kind):
        def f(params):
            logits = TR.completion_logits(params, cfg, batch)
            logp = L.token_logprobs(logits, batch["tokens"])
            loss, _ = L.policy_surrogate(logp, batch["old_logp"], batch["weights"], kind=kind)
            m = batch["mask"]
            return L.aggregate(loss, m, "seq_mean_token_sum", L.normaliser(m, "seq_mean_token_sum"))

        return jax.grad(f)(state.params)

    for a, b in zip(jax.tree.leaves(grads("reinforce")), jax.tree.leaves(grads("ppo"))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_loss_pieces():
    logits = jnp.array([[[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]]])
    targets = jnp.array([[0, 2]])
    lp = L.token_logprobs(logits, targets)
    np.testing.assert_allclose(lp, jax.nn.log_softmax(logits)[0, [0, 1], [0, 2]][None], atol=1e-6)
    np.testing.assert_allclose(L.token_entropy(logits)[0, 1], np.log(3), atol=1e-6)
    # PPO clip-higher: positive weight clips at 1.28, negative weight at 0.8
    old = jnp.zeros((1, 2))
    logp = jnp.log(jnp.array([[1.5, 0.5]]))
    loss, aux = L.policy_surrogate(logp, old, jnp.array([1.0]), kind="ppo")
    np.testing.assert_allclose(loss, [[-1.28, -0.5]], atol=1e-6)
    loss, _ = L.policy_surrogate(logp, old, jnp.array([-1.0]), kind="ppo")
    np.testing.assert_allclose(loss, [[1.5, 0.8]], atol=1e-6)
    # KL estimators: k3 >= 0, both zero when equal
    a, b = jnp.array([[-1.0, -2.0]]), jnp.array([[-1.5, -2.0]])
    assert (L.kl_penalty(a, b, "k3") >= 0).all()
    np.testing.assert_allclose(L.kl_penalty(a, a, "k1"), 0)
    # aggregation modes
    v = jnp.array([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    m = jnp.array([[True, True, True], [True, False, False]])
    for agg, want in [
        ("token_mean", 10 / 4),
        ("seq_mean_token_sum", 10 / 2),
        ("seq_mean_token_mean", 3 / 1),
    ]:
        np.testing.assert_allclose(L.aggregate(v, m, agg, L.normaliser(m, agg)), want, rtol=1e-6)
    with pytest.raises(ValueError, match="aggregation"):
        TR.LossConfig(aggregation="mean")
    with pytest.raises(ValueError, match="policy_loss"):
        TR.LossConfig(policy_loss="a2c")


def test_mesh_errors_and_uneven_dims():
    with pytest.raises(ValueError, match="devices"):
        S.make_mesh((3, 1, 1), jax.devices()[:8])
    with pytest.raises(ValueError, match="unknown axes"):
        S.make_mesh({"model": 2})
    mesh = S.make_mesh({"tensor": 8}, jax.devices()[:8])
    sh = S.logical_to_sharding(("kv_heads", "embed", "head_dim"), (2, 64, 16), mesh)
    assert sh.spec[0] is None  # 2 kv heads do not divide over 8 -> replicated


def test_loaded_params_must_match_config():
    """A checkpoint for another architecture is refused with every mismatch named, not mis-placed."""
    cfg = tiny_config()
    mesh = S.make_mesh((1, 1, 1), jax.devices()[:1])
    tx = TR.make_optimizer(1e-3)
    params = gemma2.init_params(cfg, jax.random.key(0))
    state, _ = TR.create_train_state(cfg, tx, mesh, seed=0, params=params)  # matching: accepted
    np.testing.assert_array_equal(
        jax.tree.leaves(state.params)[0], np.asarray(jax.tree.leaves(params)[0])
    )
    other = dataclasses.replace(cfg, vocab_size=cfg.vocab_size + 8)
    with pytest.raises(ValueError, match="checkpoint") as e:
        TR.create_train_state(other, tx, mesh, seed=0, params=params)
    assert "embed" in str(e.value)
    deeper = dataclasses.replace(cfg, num_layers=cfg.num_layers + 1)
    with pytest.raises(ValueError, match="missing"):
        TR.create_train_state(deeper, tx, mesh, seed=0, params=params)


@pytest.mark.parametrize("remat", ["none", "full"])
def test_shared_prompt_pass_equals_per_row(remat):
    """``completion_logits(..., group_size=G)`` (one prompt pass per group, its keys / values shared
    by the group's completions) gives the per-row path's logits and parameter gradients: prompts
    left-padded, right-padded and of different lengths, ragged completions crossing the sliding
    window (8) of the local layers, soft-caps on; and a whole train step gives the same loss,
    gradient norm and parameters, with micro-batches that split a group (gcd sub-groups)."""
    from passk_jax.testing import random_params

    cfg = tiny_config(remat=remat)
    p, g, tp, t = 3, 4, 7, 9  # Tp + T = 16 > window 8
    prompt, pmask, tokens, mask, old_logp, w = _batch(0, p=p, g=g, tp=tp, t=t)
    pmask[2, 4:] = False  # right padding (rotated before the pass)
    pmask[0, :3] = False
    mask[0, 0] = False  # a completion with no counted token
    batch = {
        k: jnp.asarray(v)
        for k, v in TR.make_batch(prompt, pmask, tokens, mask, old_logp, w).items()
    }
    params = random_params(cfg, seed=1)

    def loss(prm, group):
        lg = TR.completion_logits(prm, cfg, batch, group)
        lp = jax.nn.log_softmax(lg)
        sel = jnp.take_along_axis(lp, batch["tokens"][..., None], -1)[..., 0]
        return jnp.sum(jnp.where(batch["mask"], sel, 0.0) * batch["weights"][:, None]), lg

    (l1, lg1), g1 = jax.value_and_grad(loss, has_aux=True)(params, 1)
    (lg_g, lgg), gg = jax.value_and_grad(loss, has_aux=True)(params, g)
    np.testing.assert_allclose(np.asarray(lgg), np.asarray(lg1), atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(float(lg_g), float(l1), rtol=1e-5)
    for a, b_ in zip(jax.tree.leaves(gg), jax.tree.leaves(g1)):
        scale = float(jnp.max(jnp.abs(b_))) + 1e-12
        np.testing.assert_allclose(np.asarray(a) / scale, np.asarray(b_) / scale, atol=1e-5)

    import optax

    mesh = S.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
    tx = optax.sgd(0.1)  # parameters compared tightly (Adam would amplify round-off)
    out = {}
    cases = [("rows", 1, 1), ("shared", g, 1), ("split", g, 6), ("strided", g, 2), ("rows/3", 1, 3)]
    for name, group, micro in cases:
        split = "strided" if name == "strided" else "auto"
        lc = TR.LossConfig(num_microbatches=micro, micro_split=split)
        host = jax.device_get(params)  # the step donates its state
        state, sh = TR.create_train_state(cfg, tx, mesh, seed=0, params=host)
        step = TR.jit_train_step(tx, cfg, lc, sh, mesh, group_size=group)
        state, m = step(state, batch)
        out[name] = (jax.device_get(state.params), jax.device_get(m))
    ref_params, ref_m = out["rows"]
    assert "prompt_group_mismatch" not in ref_m
    for name, group, _ in cases[1:]:
        prm, m = out[name]
        if group > 1:
            assert float(m["prompt_group_mismatch"]) == 0.0
        np.testing.assert_allclose(m["loss"], ref_m["loss"], rtol=1e-5)
        np.testing.assert_allclose(m["grad_norm"], ref_m["grad_norm"], rtol=1e-4)
        for a, b_ in zip(jax.tree.leaves(prm), jax.tree.leaves(ref_params)):
            np.testing.assert_allclose(a, b_, atol=1e-5)


def test_shared_prompt_mismatch_is_reported():
    """A batch whose groups do not share their prompt is flagged (count of differing rows)."""
    cfg = tiny_config()
    prompt, pmask, tokens, mask, old_logp, w = _batch(0)
    batch = TR.make_batch(prompt, pmask, tokens, mask, old_logp, w)
    batch["prompt_tokens"] = batch["prompt_tokens"].copy()
    batch["prompt_tokens"][1, 0] += 1  # row 1 of group 0
    batch["prompt_tokens"][6, 3] += 1  # row 2 of group 1
    mesh = S.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
    tx = TR.make_optimizer(1e-3, warmup_steps=0)
    state, sh = TR.create_train_state(cfg, tx, mesh, seed=0)
    _, m = TR.jit_train_step(tx, cfg, TR.LossConfig(), sh, mesh, group_size=4)(state, batch)
    assert float(m["prompt_group_mismatch"]) == 2.0
    # Strided micro-batches (m = 2): the prompt groups are rows {1, 3} and {4, 6} of the
    # micro-batches; each corrupted row differs from its group's first row exactly once.
    for split in ("strided", "contiguous"):
        lc = TR.LossConfig(num_microbatches=2, micro_split=split)
        state, sh = TR.create_train_state(cfg, tx, mesh, seed=0)
        _, m = TR.jit_train_step(tx, cfg, lc, sh, mesh, group_size=4)(state, batch)
        assert float(m["prompt_group_mismatch"]) == 2.0, split
    clean = {
        **batch,
        "prompt_tokens": TR.make_batch(prompt, pmask, tokens, mask, old_logp, w)["prompt_tokens"],
    }
    lc = TR.LossConfig(num_microbatches=2, micro_split="strided")
    state, sh = TR.create_train_state(cfg, tx, mesh, seed=0)
    _, m = TR.jit_train_step(tx, cfg, lc, sh, mesh, group_size=4)(state, clean)
    assert float(m["prompt_group_mismatch"]) == 0.0
    state, sh = TR.create_train_state(cfg, tx, mesh, seed=0)
    with pytest.raises(ValueError, match="group_size=3 does not divide"):
        TR.completion_logits(state.params, cfg, batch, 3)
    state, sh = TR.create_train_state(cfg, tx, mesh, seed=0)
    with pytest.raises(ValueError, match="group_size must be >= 1, got 0"):
        TR.jit_train_step(tx, cfg, TR.LossConfig(), sh, mesh, group_size=0)(state, batch)
