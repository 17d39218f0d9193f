"""Tests of the checkpoint loaders and orbax save / restore."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from passk_jax import checkpoints as ck
from passk_jax import testing
from passk_jax.models import gemma2 as g


@pytest.fixture(scope="module")
def tiny():
    return testing.tiny_model(seed=2)


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_save_restore_roundtrip(tmp_path, tiny):
    _, params = tiny
    ck.save_params(str(tmp_path / "ckpt"), params)
    _assert_trees_equal(ck.restore_params(str(tmp_path / "ckpt")), params)
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    restored = ck.restore_params(str(tmp_path / "ckpt"), target)
    _assert_trees_equal(restored, params)
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(restored))


def test_flax_release_layout_loads_with_orbax(tmp_path, tiny):
    c, params = tiny
    path = str(tmp_path / "release")
    ck.save_flax_gemma2_layout(path, params)
    # The written checkpoint really has the release's flat top-level keys.
    raw = ocp.PyTreeCheckpointer().restore(path)
    assert "transformer/layer_0/attn/q_einsum" in raw
    assert set(raw["transformer/layer_0/mlp"]) == {"gating_einsum", "linear"}
    assert set(raw["transformer/embedder"]) == {"input_embedding"}
    loaded = ck.load_flax_gemma2(path, c)
    _assert_trees_equal(loaded, params)
    tokens = jax.random.randint(jax.random.key(0), (1, 9), 0, c.vocab_size)
    np.testing.assert_allclose(g.forward(loaded, tokens, c), g.forward(params, tokens, c))


def test_flax_loader_padded_vocab_and_qkv_einsum(tmp_path, tiny):
    c, params = tiny
    # Release-style quirks: a padded vocabulary and a fused qkv_einsum for multi-head attention.
    mha = testing.tiny_config(num_kv_heads=c.num_heads)
    p = testing.random_params(mha, seed=5)
    flat = {
        "transformer/embedder": {
            "input_embedding": np.concatenate(
                [
                    np.asarray(p["embedder"]["input_embedding"]),
                    np.zeros((8, c.embed_dim), np.float32),
                ]
            )
        },
        "transformer/final_norm": {"scale": np.asarray(p["final_norm"]["scale"])},
    }
    for i in range(mha.num_layers):
        layer = p[f"layer_{i}"]
        pre = f"transformer/layer_{i}"
        attn = layer["attn"]
        qkv = np.concatenate(
            [np.asarray(attn["q_einsum"]["w"])[None], np.asarray(attn["kv_einsum"]["w"])]
        )
        flat[f"{pre}/attn/qkv_einsum"] = {"w": qkv}
        flat[f"{pre}/attn/attn_vec_einsum"] = {"w": np.asarray(attn["attn_vec_einsum"]["w"])}
        flat[f"{pre}/mlp"] = {k: np.asarray(v) for k, v in layer["mlp"].items()}
        for norm in ("pre_attention_norm", "post_attention_norm", "pre_ffw_norm", "post_ffw_norm"):
            flat[f"{pre}/{norm}"] = {"scale": np.asarray(layer[norm]["scale"])}
    path = str(tmp_path / "mha")
    ocp.PyTreeCheckpointer().save(path, flat)
    _assert_trees_equal(ck.load_flax_gemma2(path, mha), p)
    with pytest.raises(ValueError):
        ck.load_flax_gemma2(path, testing.tiny_config(num_kv_heads=c.num_heads, hidden_dim=96))


def test_hf_state_dict_conversion_without_torch(tiny):
    # Build HF-named tensors from our params (inverse mapping written out by hand) and convert back.
    c, params = tiny
    n, k, h, d = c.num_heads, c.num_kv_heads, c.head_dim, c.embed_dim
    sd = {
        "model.embed_tokens.weight": params["embedder"]["input_embedding"],
        "model.norm.weight": params["final_norm"]["scale"],
    }
    for i in range(c.num_layers):
        lp, pre = params[f"layer_{i}"], f"model.layers.{i}."
        kv = lp["attn"]["kv_einsum"]["w"]
        sd[pre + "self_attn.q_proj.weight"] = (
            lp["attn"]["q_einsum"]["w"].transpose(0, 2, 1).reshape(n * h, d)
        )
        sd[pre + "self_attn.k_proj.weight"] = kv[0].transpose(0, 2, 1).reshape(k * h, d)
        sd[pre + "self_attn.v_proj.weight"] = kv[1].transpose(0, 2, 1).reshape(k * h, d)
        sd[pre + "self_attn.o_proj.weight"] = lp["attn"]["attn_vec_einsum"]["w"].reshape(n * h, d).T
        sd[pre + "mlp.gate_proj.weight"] = lp["mlp"]["gating_einsum"][0]
        sd[pre + "mlp.up_proj.weight"] = lp["mlp"]["gating_einsum"][1]
        sd[pre + "mlp.down_proj.weight"] = lp["mlp"]["linear"].T
        sd[pre + "input_layernorm.weight"] = lp["pre_attention_norm"]["scale"]
        sd[pre + "post_attention_layernorm.weight"] = lp["post_attention_norm"]["scale"]
        sd[pre + "pre_feedforward_layernorm.weight"] = lp["pre_ffw_norm"]["scale"]
        sd[pre + "post_feedforward_layernorm.weight"] = lp["post_ffw_norm"]["scale"]
    _assert_trees_equal(ck.flax_params_from_hf_state_dict(sd, c), params)
    del sd["model.layers.1.mlp.up_proj.weight"]
    with pytest.raises(KeyError):
        ck.flax_params_from_hf_state_dict(sd, c)


def test_config_from_hf_rejects_other_layer_types():
    hf = dict(
        vocab_size=64,
        num_hidden_layers=2,
        hidden_size=64,
        intermediate_size=128,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        query_pre_attn_scalar=16,
        sliding_window=8,
        rope_parameters={"rope_theta": 500.0, "rope_type": "default"},
    )
    c = ck.config_from_hf(hf, dtype="bfloat16")
    assert c.rope_base_frequency == 500.0 and c.dtype == "bfloat16" and c.num_layers == 2
    with pytest.raises(ValueError):
        ck.config_from_hf({**hf, "layer_types": ["full_attention", "sliding_attention"]})


@pytest.mark.parity
def test_hf_sharded_checkpoint_loads(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf_config = transformers.Gemma2Config(
        vocab_size=64,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        query_pre_attn_scalar=16,
        sliding_window=4,
        attn_implementation="eager",
    )
    model = transformers.Gemma2ForCausalLM(hf_config).eval()
    model.save_pretrained(tmp_path, max_shard_size="60KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    config, params = ck.load_hf_gemma2(str(tmp_path))
    tokens = np.random.RandomState(0).randint(0, 64, (1, 12))
    with torch.no_grad():
        ref = model(torch.tensor(tokens)).logits.numpy()
    out = np.asarray(g.forward(params, jnp.asarray(tokens), config))
    assert np.abs(out - ref).max() < 1e-3
