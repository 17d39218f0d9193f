"""Model checkpoints: Hugging Face safetensors and official Gemma-2 Flax loaders, orbax save / restore.

The model's parameter tree is the released Gemma-2 Flax layout (see ``passk_jax.models.gemma2``), so:

* ``load_flax_gemma2`` restores an official orbax checkpoint with orbax alone (its top-level keys are
  flat ``"transformer/layer_0/attn/q_einsum"`` paths holding ``{"w": ...}``) and nests it;
* ``load_hf_gemma2`` reads a local ``transformers`` directory (``config.json`` plus one or many
  ``*.safetensors`` files, sharded index included) without torch and reshapes each HF linear weight
  into the Flax einsum layout;
* ``save_params`` / ``restore_params`` write and read any parameter tree with orbax.

Nothing is downloaded: every path is local.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from passk_jax.models.gemma2 import Gemma2Config, Params, init_params

__all__ = [
    "config_from_hf",
    "flax_params_from_hf_state_dict",
    "load_flax_gemma2",
    "load_hf_gemma2",
    "restore_params",
    "save_params",
]

_HF_NORMS = {
    "input_layernorm": "pre_attention_norm",
    "post_attention_layernorm": "post_attention_norm",
    "pre_feedforward_layernorm": "pre_ffw_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
}


# ----------------------------------------------------------------------------------------------------
# Hugging Face.


def config_from_hf(hf: Mapping[str, Any], **overrides) -> Gemma2Config:
    """Builds a ``Gemma2Config`` from a Hugging Face Gemma-2 ``config.json`` dict.

    Args:
      hf: the parsed ``config.json``.
      **overrides: extra ``Gemma2Config`` fields (e.g. ``dtype="bfloat16"``).

    Returns:
      The config. Raises ``ValueError`` if the HF ``layer_types`` are not the release's alternation
      (sliding on even layers) or the activation is not the gelu tanh approximation.
    """
    n_layers = hf["num_hidden_layers"]
    expected = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n_layers)]
    layer_types = hf.get("layer_types")
    if layer_types is not None and list(layer_types) != expected:
        raise ValueError(f"unsupported layer_types {layer_types}; expected {expected}")
    act = hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh"
    if act not in ("gelu_pytorch_tanh", "gelu_tanh"):
        raise ValueError(f"unsupported activation {act!r}")
    rope = hf.get("rope_parameters") or {}
    rope_theta = rope.get("rope_theta", hf.get("rope_theta", 10_000.0))
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"unsupported rope type {rope.get('rope_type')!r}")
    head_dim = hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"]
    kw = dict(
        vocab_size=hf["vocab_size"],
        num_layers=n_layers,
        embed_dim=hf["hidden_size"],
        hidden_dim=hf["intermediate_size"],
        num_heads=hf["num_attention_heads"],
        num_kv_heads=hf.get("num_key_value_heads", hf["num_attention_heads"]),
        head_dim=head_dim,
        query_pre_attn_scalar=float(hf.get("query_pre_attn_scalar", head_dim)),
        sliding_window=hf.get("sliding_window") or 4096,
        attn_logit_softcap=hf.get("attn_logit_softcapping", 50.0),
        final_logit_softcap=hf.get("final_logit_softcapping", 30.0),
        rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
        rope_base_frequency=float(rope_theta),
    )
    return Gemma2Config(**{**kw, **overrides})


def flax_params_from_hf_state_dict(
    state: Mapping[str, Any], config: Gemma2Config, dtype: Any = None
) -> Params:
    """Converts HF Gemma-2 tensors (name -> array, torch ``[out, in]`` layout) to the Flax layout.

    Args:
      state: mapping from HF names (``model.layers.0.self_attn.q_proj.weight``, ...; any prefix
        before ``layers.`` / ``embed_tokens.`` / ``norm.`` is ignored) to numpy or jax arrays.
      config: the architecture the tensors belong to.
      dtype: cast every parameter to this dtype; defaults to ``config.param_dtype``.

    Returns:
      The parameter tree. Raises ``KeyError`` for a missing tensor and ``ValueError`` for a shape
      mismatch.
    """
    dtype = jnp.dtype(config.param_dtype if dtype is None else dtype)
    by_suffix = {}
    for name, value in state.items():
        for anchor in ("layers.", "embed_tokens.", "norm."):
            idx = name.find(anchor)
            if idx == 0 or (idx > 0 and name[idx - 1] == "."):
                by_suffix[name[idx:]] = value
                break

    def get(name: str) -> jax.Array:
        if name not in by_suffix:
            raise KeyError(f"HF checkpoint has no tensor ending in {name!r}")
        return jnp.asarray(by_suffix[name]).astype(dtype)

    c = config
    n, k, h, d = c.num_heads, c.num_kv_heads, c.head_dim, c.embed_dim
    params: Params = {
        "embedder": {"input_embedding": get("embed_tokens.weight")},
        "final_norm": {"scale": get("norm.weight")},
    }
    for i in range(c.num_layers):
        pre = f"layers.{i}."
        q = get(pre + "self_attn.q_proj.weight")  # [N*H, D]
        kk = get(pre + "self_attn.k_proj.weight")  # [K*H, D]
        v = get(pre + "self_attn.v_proj.weight")
        o = get(pre + "self_attn.o_proj.weight")  # [D, N*H]
        layer: Params = {
            "attn": {
                "q_einsum": {"w": q.reshape(n, h, d).transpose(0, 2, 1)},
                "kv_einsum": {
                    "w": jnp.stack(
                        [
                            kk.reshape(k, h, d).transpose(0, 2, 1),
                            v.reshape(k, h, d).transpose(0, 2, 1),
                        ]
                    )
                },
                "attn_vec_einsum": {"w": o.T.reshape(n, h, d)},
            },
            "mlp": {
                "gating_einsum": jnp.stack(
                    [get(pre + "mlp.gate_proj.weight"), get(pre + "mlp.up_proj.weight")]
                ),
                "linear": get(pre + "mlp.down_proj.weight").T,
            },
        }
        for hf_name, ours in _HF_NORMS.items():
            layer[ours] = {"scale": get(pre + hf_name + ".weight")}
        params[f"layer_{i}"] = layer
    _check_shapes(params, config)
    return params


def _safetensors_files(path: str) -> list[str]:
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
        return [os.path.join(path, f) for f in files]
    files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors under {path}")
    return [os.path.join(path, f) for f in files]


def load_hf_gemma2(path: str, **config_overrides) -> tuple[Gemma2Config, Params]:
    """Loads a local Hugging Face Gemma-2 directory (``config.json`` + safetensors), without torch.

    Args:
      path: directory written by ``Gemma2ForCausalLM.save_pretrained`` (or a hub snapshot); a
        sharded ``model.safetensors.index.json`` is followed.
      **config_overrides: extra ``Gemma2Config`` fields (e.g. ``dtype="bfloat16"``,
        ``param_dtype="bfloat16"``).

    Returns:
      ``(config, params)``; params are in the Flax layout, cast to ``config.param_dtype``.
    """
    from safetensors import safe_open

    with open(os.path.join(path, "config.json")) as f:
        hf = json.load(f)
    hf = hf.get("text_config", hf)
    config = config_from_hf(hf, **config_overrides)
    state: dict[str, Any] = {}
    for file in _safetensors_files(path):
        with safe_open(file, framework="flax") as f:
            for name in f.keys():
                state[name] = f.get_tensor(name)
    return config, flax_params_from_hf_state_dict(state, config)


# ----------------------------------------------------------------------------------------------------
# Official Flax / orbax layout.


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a/b": {"w": x}}`` -> ``{"a": {"b": {"w": x}}}`` (already nested dicts pass through)."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        parts = key.split("/")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if isinstance(value, Mapping):
            value = _nest(value)
            node.setdefault(parts[-1], {}).update(value)
        else:
            node[parts[-1]] = value
    return out


def _check_shapes(params: Params, config: Gemma2Config) -> None:
    expected = jax.eval_shape(lambda: init_params(config, jax.random.key(0)))
    exp_paths = dict(jax.tree_util.tree_flatten_with_path(expected)[0])
    got_paths = dict(jax.tree_util.tree_flatten_with_path(params)[0])
    if set(exp_paths) != set(got_paths):
        missing = sorted(map(jax.tree_util.keystr, set(exp_paths) - set(got_paths)))
        extra = sorted(map(jax.tree_util.keystr, set(got_paths) - set(exp_paths)))
        raise ValueError(f"parameter tree mismatch: missing {missing[:5]}, unexpected {extra[:5]}")
    for p, leaf in exp_paths.items():
        if tuple(got_paths[p].shape) != tuple(leaf.shape):
            raise ValueError(
                f"{jax.tree_util.keystr(p)}: shape {got_paths[p].shape} != expected {leaf.shape}"
            )


def load_flax_gemma2(path: str, config: Gemma2Config) -> Params:
    """Restores an official Gemma-2 Flax (orbax) checkpoint into this package's parameter tree.

    Accepts the release layout (flat top-level keys ``"transformer/layer_0/attn/q_einsum"`` holding
    ``{"w": ...}``), or the same tree already nested, with or without the ``transformer`` level.
    Multi-head checkpoints storing ``attn/qkv_einsum/w [3, N, D, H]`` are split into ``q_einsum`` and
    ``kv_einsum``. An embedding table with more rows than ``config.vocab_size`` (the release pads
    256,000 to 256,128) is truncated to ``config.vocab_size``.

    Args:
      path: the checkpoint directory (local).
      config: the architecture; leaves are cast to ``config.param_dtype``.

    Returns:
      The parameter tree. Raises ``ValueError`` on a structure or shape mismatch.
    """
    raw = ocp.PyTreeCheckpointer().restore(os.path.abspath(path))
    tree = _nest(raw)
    tree = tree.get("transformer", tree)
    params: Params = jax.tree.map(lambda x: x, dict(tree))
    for i in range(config.num_layers):
        attn = params.get(f"layer_{i}", {}).get("attn", {})
        if "qkv_einsum" in attn:
            w = attn.pop("qkv_einsum")["w"]
            attn["q_einsum"] = {"w": w[0]}
            attn["kv_einsum"] = {"w": w[1:]}
    emb = params["embedder"]["input_embedding"]
    if emb.shape[0] > config.vocab_size:
        params["embedder"]["input_embedding"] = emb[: config.vocab_size]
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.dtype(config.param_dtype)), params)
    _check_shapes(params, config)
    return params


def save_flax_gemma2_layout(path: str, params: Params) -> None:
    """Writes ``params`` as an orbax checkpoint in the release layout (flat ``transformer/...`` keys).

    Args:
      path: target directory (must not exist).
      params: the parameter tree.
    """
    flat: dict[str, Any] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        leaves = {k: v for k, v in node.items() if not isinstance(v, Mapping)}
        if leaves:
            flat[prefix] = {k: np.asarray(v) for k, v in leaves.items()}
        for k, v in node.items():
            if isinstance(v, Mapping):
                walk(v, f"{prefix}/{k}")

    walk(params, "transformer")
    ckptr = ocp.PyTreeCheckpointer()
    ckptr.save(os.path.abspath(path), flat)


# ----------------------------------------------------------------------------------------------------
# Orbax save / restore.


def save_params(path: str, params: Any) -> None:
    """Saves a parameter tree with orbax (blocking until written).

    Args:
      path: target directory (local; must not exist yet).
      params: any pytree of arrays (sharded arrays are saved shard-wise).
    """
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(os.path.abspath(path), params)
    ckptr.wait_until_finished()


def restore_params(path: str, target: Any = None) -> Any:
    """Restores a parameter tree saved by ``save_params``.

    Args:
      path: the checkpoint directory.
      target: optional tree of arrays or ``jax.ShapeDtypeStruct`` (with ``sharding``) giving the
        structure, dtypes and shardings to restore into; without it arrays come back as saved.

    Returns:
      The restored tree.
    """
    path = os.path.abspath(path)
    ckptr = ocp.StandardCheckpointer()
    if target is None:
        return ckptr.restore(path)
    abstract = jax.tree.map(
        lambda x: (
            x
            if isinstance(x, jax.ShapeDtypeStruct)
            else jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))
        ),
        target,
    )
    return ckptr.restore(path, abstract)
