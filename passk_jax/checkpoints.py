"""Model checkpoints: Hugging Face safetensors and official Gemma-2 Flax loaders, orbax save / restore.

The model's parameter tree is the released Gemma-2 Flax layout (see ``passk_jax.models.gemma2``), so:

* ``load_flax_gemma2`` restores an official orbax checkpoint with orbax alone (its top-level keys are
  flat ``"transformer/layer_0/attn/q_einsum"`` paths holding ``{"w": ...}``) and nests it;
* ``load_hf_gemma2`` reads a local ``transformers`` directory (``config.json`` plus one or many
  ``*.safetensors`` files, sharded index included) without torch and reshapes each HF linear weight
  into the Flax einsum layout;
* ``save_params`` / ``restore_params`` write and read any parameter tree with orbax;
* ``RunCheckpointer`` holds an RL run's checkpoints (asynchronous orbax saves of the TrainState and
  a JSON ``meta``) with an integrity record written at save time, and the resume logic: restore the
  newest checkpoint that verifies, skipping (and moving aside) corrupt ones with a warning;
* ``WorkdirLock`` keeps a second live process out of a run's directory.

Nothing is downloaded: every path is local.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from passk_jax.models.gemma2 import Gemma2Config, Params, init_params

__all__ = [
    "CheckpointCorrupt",
    "RunCheckpointer",
    "WorkdirLock",
    "WorkdirLocked",
    "config_from_hf",
    "flax_params_from_hf_state_dict",
    "load_flax_gemma2",
    "load_hf_gemma2",
    "restore_params",
    "save_params",
    "tree_checksums",
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


class _Lazy:
    """One parameter of the Flax tree, read on demand from (views of) checkpoint tensors.

    ``parts`` are host arrays (NumPy views, e.g. of a memory-mapped safetensors file, already
    transposed / reshaped into the Flax layout); with ``stacked`` the parameter is
    ``np.stack(parts)`` (the kv / gating pairs). ``read(index)`` materialises only ``index``'s slice,
    so each device's shard is read without the whole tensor ever being copied.
    """

    def __init__(self, parts: list[Any], stacked: bool = False):
        self.parts, self.stacked = parts, stacked
        inner = tuple(parts[0].shape)
        self.shape = (len(parts), *inner) if stacked else inner

    def read(self, index: tuple[slice, ...] | None = None) -> np.ndarray:
        index = tuple(index) if index is not None else (slice(None),) * len(self.shape)
        if not self.stacked:
            return np.asarray(self.parts[0][index])
        chosen = range(len(self.parts))[index[0]]
        return np.stack([np.asarray(self.parts[j][index[1:]]) for j in chosen])


def _hf_lazy_tree(by_suffix: Mapping[str, Any], config: Gemma2Config) -> dict[str, Any]:
    """The Flax parameter tree as :class:`_Lazy` leaves over HF tensors (name suffix -> host array)."""

    def get(name: str) -> Any:
        if name not in by_suffix:
            raise KeyError(f"HF checkpoint has no tensor ending in {name!r}")
        return by_suffix[name]

    c = config
    n, k, h, d = c.num_heads, c.num_kv_heads, c.head_dim, c.embed_dim
    tree: dict[str, Any] = {
        "embedder": {"input_embedding": _Lazy([get("embed_tokens.weight")])},
        "final_norm": {"scale": _Lazy([get("norm.weight")])},
    }
    for i in range(c.num_layers):
        pre = f"layers.{i}."
        q = get(pre + "self_attn.q_proj.weight")  # [N*H, D]
        kk = get(pre + "self_attn.k_proj.weight")  # [K*H, D]
        v = get(pre + "self_attn.v_proj.weight")
        o = get(pre + "self_attn.o_proj.weight")  # [D, N*H]
        kv = [kk.reshape(k, h, d).transpose(0, 2, 1), v.reshape(k, h, d).transpose(0, 2, 1)]
        gating = [get(pre + "mlp.gate_proj.weight"), get(pre + "mlp.up_proj.weight")]
        layer: dict[str, Any] = {
            "attn": {
                "q_einsum": {"w": _Lazy([q.reshape(n, h, d).transpose(0, 2, 1)])},
                "kv_einsum": {"w": _Lazy(kv, stacked=True)},
                "attn_vec_einsum": {"w": _Lazy([o.T.reshape(n, h, d)])},
            },
            "mlp": {
                "gating_einsum": _Lazy(gating, stacked=True),
                "linear": _Lazy([get(pre + "mlp.down_proj.weight").T]),
            },
        }
        for hf_name, ours in _HF_NORMS.items():
            layer[ours] = {"scale": _Lazy([get(pre + hf_name + ".weight")])}
        tree[f"layer_{i}"] = layer
    return tree


def _by_suffix(state: Mapping[str, Any]) -> dict[str, Any]:
    """HF names with any prefix before ``layers.`` / ``embed_tokens.`` / ``norm.`` removed."""
    out = {}
    for name, value in state.items():
        for anchor in ("layers.", "embed_tokens.", "norm."):
            idx = name.find(anchor)
            if idx == 0 or (idx > 0 and name[idx - 1] == "."):
                out[name[idx:]] = value
                break
    return out


def _materialise(lazy_tree: Any, config: Gemma2Config, dtype: Any, shardings: Any = None) -> Params:
    """Builds the parameter arrays from :class:`_Lazy` leaves: whole on the default device, or, with
    ``shardings``, each device's shard straight from its slice (``jax.make_array_from_callback``)."""
    dtype = jnp.dtype(dtype)
    is_lazy = lambda x: isinstance(x, _Lazy)
    _check_shapes(
        jax.tree.map(lambda lz: jax.ShapeDtypeStruct(lz.shape, dtype), lazy_tree, is_leaf=is_lazy),
        config,
    )
    if shardings is None:
        return jax.tree.map(
            lambda lz: jnp.asarray(lz.read().astype(dtype)), lazy_tree, is_leaf=is_lazy
        )
    return jax.tree.map(
        lambda lz, sh: jax.make_array_from_callback(
            lz.shape, sh, lambda idx, lz=lz: lz.read(idx).astype(dtype)
        ),
        lazy_tree,
        shardings,
        is_leaf=is_lazy,
    )


def flax_params_from_hf_state_dict(
    state: Mapping[str, Any], config: Gemma2Config, dtype: Any = None, *, shardings: Any = None
) -> Params:
    """Converts HF Gemma-2 tensors (name -> array, torch ``[out, in]`` layout) to the Flax layout.

    Args:
      state: mapping from HF names (``model.layers.0.self_attn.q_proj.weight``, ...; any prefix
        before ``layers.`` / ``embed_tokens.`` / ``norm.`` is ignored) to NumPy or jax arrays.
      config: the architecture the tensors belong to.
      dtype: cast every parameter to this dtype; defaults to ``config.param_dtype``.
      shardings: optional tree of ``jax.sharding.Sharding`` (e.g. ``sharding.param_shardings``):
        each parameter is then assembled shard by shard on its devices from host slices.

    Returns:
      The parameter tree. Raises ``KeyError`` for a missing tensor and ``ValueError`` for a shape
      mismatch.
    """
    host = {k: np.asarray(v) for k, v in _by_suffix(state).items()}
    lazy = _hf_lazy_tree(host, config)
    return _materialise(lazy, config, config.param_dtype if dtype is None else dtype, shardings)


_SAFETENSORS_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": jnp.bfloat16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def _safetensors_views(file: str) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file as a read-only view of one memory map (nothing is read
    until a slice of it is used)."""
    with open(file, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_len))
    buf = np.memmap(file, dtype=np.uint8, mode="r")
    start = 8 + header_len
    views = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _SAFETENSORS_DTYPES:
            raise ValueError(f"{file}: tensor {name!r} has unsupported dtype {info['dtype']!r}")
        lo, hi = info["data_offsets"]
        dt = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]])
        views[name] = buf[start + lo : start + hi].view(dt).reshape(info["shape"])
    return views


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


def load_hf_gemma2(
    path: str, *, mesh: Any = None, rules: Mapping[str, Any] | None = None, **config_overrides
) -> tuple[Gemma2Config, Params]:
    """Loads a local Hugging Face Gemma-2 directory (``config.json`` + safetensors), without torch.

    The safetensors files are memory-mapped and each parameter is read through views of them in the
    Flax layout. With ``mesh``, parameters are born sharded: every device's shard is read from its
    own slice of the mapped file and placed directly (``jax.make_array_from_callback`` into
    ``sharding.param_shardings(config, mesh, rules)``), so no device ever holds a whole tensor that
    the rules shard, and a process reads from the mapped files only the slices its devices' shards
    need (replicated parameters are read whole; single-process runs are what the tests cover).

    Args:
      path: directory written by ``Gemma2ForCausalLM.save_pretrained`` (or a hub snapshot); a
        sharded ``model.safetensors.index.json`` is followed.
      mesh: optional ``jax.sharding.Mesh`` to load the parameters onto, sharded.
      rules: logical-axis rules for ``mesh`` (default ``sharding.DEFAULT_RULES``).
      **config_overrides: extra ``Gemma2Config`` fields (e.g. ``dtype="bfloat16"``,
        ``param_dtype="bfloat16"``).

    Returns:
      ``(config, params)``; params are in the Flax layout, cast to ``config.param_dtype``.
    """
    with open(os.path.join(path, "config.json")) as f:
        hf = json.load(f)
    hf = hf.get("text_config", hf)
    config = config_from_hf(hf, **config_overrides)
    state: dict[str, Any] = {}
    for file in _safetensors_files(path):
        state.update(_safetensors_views(file))
    shardings = None
    if mesh is not None:
        from passk_jax import sharding as S

        shardings = S.param_shardings(config, mesh, rules)
    lazy = _hf_lazy_tree(_by_suffix(state), config)
    return config, _materialise(lazy, config, config.param_dtype, shardings)


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


def _flax_restore_sharded(path: str, config: Gemma2Config, mesh: Any, rules: Any) -> Any:
    """Restores the stored tree with every array read straight into a mesh sharding (orbax reads
    only each device's shard): the sharding of the parameter a stored array becomes, computed for
    the stored shape (a padded embedding table, a ``[3, N, D, H]`` qkv stack)."""
    from passk_jax import sharding as S
    from passk_jax.models.gemma2 import param_logical_axes

    ckptr = ocp.PyTreeCheckpointer()
    stored = ckptr.metadata(path)
    stored = getattr(stored, "item_metadata", stored)
    stored = getattr(stored, "tree", stored)
    axes = param_logical_axes(config)
    dtype = jnp.dtype(config.param_dtype)

    def axes_for(parts: list[str]) -> tuple[str | None, ...]:
        if parts and parts[0] == "transformer":
            parts = parts[1:]
        if len(parts) >= 2 and parts[-2] == "qkv_einsum":  # [3, N, D, H] -> q_einsum's, stacked
            parts = [*parts[:-2], "q_einsum", parts[-1]]
            return (None, *_get_path(axes, parts))
        return _get_path(axes, parts)

    def restore_args(path_parts: list[str], meta: Any) -> Any:
        if isinstance(meta, Mapping):
            return {k: restore_args([*path_parts, *k.split("/")], v) for k, v in meta.items()}
        shape = tuple(meta.shape)
        sh = S.logical_to_sharding(axes_for(path_parts), shape, mesh, rules)
        return ocp.ArrayRestoreArgs(sharding=sh, global_shape=shape, dtype=dtype)

    args = restore_args([], dict(stored))
    return ckptr.restore(path, args=ocp.args.PyTreeRestore(restore_args=args))


def _get_path(tree: Any, parts: list[str]) -> Any:
    node = tree
    for p in parts:
        if not isinstance(node, Mapping) or p not in node:
            raise ValueError(f"checkpoint leaf {'/'.join(parts)!r} is not a Gemma-2 parameter")
        node = node[p]
    return node


def load_flax_gemma2(
    path: str, config: Gemma2Config, *, mesh: Any = None, rules: Mapping[str, Any] | None = None
) -> Params:
    """Restores an official Gemma-2 Flax (orbax) checkpoint into this package's parameter tree.

    Accepts the release layout (flat top-level keys ``"transformer/layer_0/attn/q_einsum"`` holding
    ``{"w": ...}``), or the same tree already nested, with or without the ``transformer`` level.
    Multi-head checkpoints storing ``attn/qkv_einsum/w [3, N, D, H]`` are split into ``q_einsum`` and
    ``kv_einsum``. An embedding table with more rows than ``config.vocab_size`` (the release pads
    256,000 to 256,128) is truncated to ``config.vocab_size``.

    With ``mesh``, parameters are born sharded: orbax restores each array directly into its mesh
    sharding (``sharding.param_shardings(config, mesh, rules)``; each process reads only the shards
    its devices hold), and the qkv split and the embedding truncation run as sharded jitted slices,
    so no device holds a whole tensor that the rules shard.

    Args:
      path: the checkpoint directory (local).
      config: the architecture; leaves are cast to ``config.param_dtype``.
      mesh: optional ``jax.sharding.Mesh`` to restore onto, sharded.
      rules: logical-axis rules for ``mesh`` (default ``sharding.DEFAULT_RULES``).

    Returns:
      The parameter tree. Raises ``ValueError`` on a structure or shape mismatch.
    """
    path = os.path.abspath(path)
    if mesh is None:
        raw = ocp.PyTreeCheckpointer().restore(path)
    else:
        raw = _flax_restore_sharded(path, config, mesh, rules)
    tree = _nest(raw)
    tree = tree.get("transformer", tree)
    params: Params = jax.tree.map(lambda x: x, dict(tree))
    target = None
    if mesh is not None:
        from passk_jax import sharding as S

        target = S.param_shardings(config, mesh, rules)

    def cut(x: Any, fn: Any, out_sharding: Any) -> Any:
        return fn(x) if out_sharding is None else jax.jit(fn, out_shardings=out_sharding)(x)

    for i in range(config.num_layers):
        attn = params.get(f"layer_{i}", {}).get("attn", {})
        if "qkv_einsum" in attn:
            w = attn.pop("qkv_einsum")["w"]
            tq = tkv = None
            if target is not None:
                tq = target[f"layer_{i}"]["attn"]["q_einsum"]["w"]
                tkv = target[f"layer_{i}"]["attn"]["kv_einsum"]["w"]
            attn["q_einsum"] = {"w": cut(w, lambda a: a[0], tq)}
            attn["kv_einsum"] = {"w": cut(w, lambda a: a[1:], tkv)}
    emb = params["embedder"]["input_embedding"]
    if emb.shape[0] > config.vocab_size:
        te = None if target is None else target["embedder"]["input_embedding"]
        params["embedder"]["input_embedding"] = cut(emb, lambda a: a[: config.vocab_size], te)
    if mesh is None:
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


# ----------------------------------------------------------------------------------------------------
# RL run checkpoints with integrity records.

INTEGRITY_VERSION = 1


class CheckpointCorrupt(Exception):
    """A checkpoint that cannot be restored or does not match its integrity record."""


def _leaf_words(x: jax.Array) -> jax.Array:
    """The bits of ``x`` as a flat uint32 vector (1- and 2-byte types widened, 8-byte split)."""
    x = jnp.asarray(x)
    if x.dtype == jnp.bool_:
        x = x.astype(jnp.uint8)
    size = jnp.dtype(x.dtype).itemsize
    if size == 4:
        u = jax.lax.bitcast_convert_type(x, jnp.uint32)
    elif size == 2:
        u = jax.lax.bitcast_convert_type(x, jnp.uint16).astype(jnp.uint32)
    elif size == 1:
        u = jax.lax.bitcast_convert_type(x, jnp.uint8).astype(jnp.uint32)
    elif size == 8:
        u = jax.lax.bitcast_convert_type(x, jnp.uint32)  # [..., 2]
    else:
        raise TypeError(f"cannot checksum dtype {x.dtype}")
    return u.reshape(-1)


def _leaf_checksum(x: jax.Array) -> jax.Array:
    """Two position-dependent 32-bit sums of ``x``'s bits, ``uint32 [2]``.

    ``h1 = sum_i u_i * (2 i + 1)`` and ``h2 = sum_i mix(u_i ^ i)`` modulo 2^32. Any change of one
    element changes ``h1`` (its weight is odd, so no power-of-two difference vanishes), and a moved
    or swapped pair changes both. Sums modulo 2^32 do not depend on reduction order, so a sharded
    array gives the same checksum on any mesh, computed where the array lives.
    """
    u = _leaf_words(x)
    i = jax.lax.iota(jnp.uint32, u.shape[0])
    h1 = jnp.sum(u * (i * np.uint32(2) + np.uint32(1)), dtype=jnp.uint32)
    v = (u ^ (i * np.uint32(0x9E3779B9))) * np.uint32(0x85EBCA6B)
    v = v ^ (v >> np.uint32(13))
    h2 = jnp.sum(v * np.uint32(0xC2B2AE35), dtype=jnp.uint32)
    return jnp.stack([h1, h2])


@jax.jit
def _checksums_jit(arrays: list[jax.Array]) -> jax.Array:
    """``uint32 [num_leaves, 2]``; jitted once per tree structure and shapes (not per save)."""
    return jnp.stack([_leaf_checksum(x) for x in arrays])


def tree_checksums(tree: Any) -> dict[str, list[int]]:
    """``{leaf path: [h1, h2]}`` of every array leaf of ``tree``, computed on device (jit).

    Works for sharded and multi-process global arrays (the checksums come back replicated).
    """
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    paths = [jax.tree_util.keystr(p) for p, _ in leaves]
    arrays = [v for _, v in leaves]
    if not arrays:
        return {}
    out = _checksums_jit(arrays)
    if isinstance(out, jax.Array) and not out.is_fully_addressable:
        out = out.addressable_data(0)
    host = np.asarray(out)
    return {p: [int(a), int(b)] for p, (a, b) in zip(paths, host)}


def _meta_digest(meta: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


def _is_main() -> bool:
    return jax.process_index() == 0


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


class RunCheckpointer:
    """An RL run's orbax checkpoints (``directory/<step>/{state,meta,integrity}``) and its resume logic.

    ``save`` is asynchronous (orbax copies the arrays off the device, then writes in the background
    and finalises the step directory by an atomic rename). Before the save starts, the checksums of
    every array (:func:`tree_checksums`) and a SHA-256 of the metadata go into the ``integrity``
    item of the same checkpoint. ``restore_latest`` walks the finalised steps from the newest down and
    returns the first one that restores and matches its integrity record; each one it skips is
    reported with a warning naming the step and the reason, and moved to ``quarantine`` (so that
    the resumed run can save that step again). ``wait`` blocks until pending saves are on disk.
    """

    def __init__(self, directory: str, keep: int = 2, quarantine: str | None = None):
        self.directory = os.path.abspath(directory)
        self.quarantine = os.path.abspath(quarantine or self.directory + "_corrupt")
        self._keep = keep
        self._mngr = self._open()
        self.skipped: list[tuple[int, str]] = []

    def _open(self) -> ocp.CheckpointManager:
        return ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=self._keep, create=True),
        )

    # -- saving ---------------------------------------------------------------------------------

    def save(self, step: int, state: Any, meta: Mapping[str, Any]) -> None:
        """Starts an asynchronous save of ``state`` (any pytree of arrays) and ``meta`` (JSON)."""
        meta = {**meta, "integrity_version": INTEGRITY_VERSION}
        integrity = {
            "version": INTEGRITY_VERSION,
            "arrays": tree_checksums(state),
            "meta_sha256": _meta_digest(meta),
        }
        self._mngr.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                meta=ocp.args.JsonSave(meta),
                integrity=ocp.args.JsonSave(integrity),
            ),
        )

    def wait(self) -> None:
        """Blocks until every started save is finalised on disk."""
        self._mngr.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves, then releases orbax's resources."""
        try:
            self._mngr.wait_until_finished()
        finally:
            self._mngr.close()

    def steps(self) -> list[int]:
        """Finalised checkpoint steps (a ``*-tmp`` directory left by a crash is not one)."""
        return sorted(self._mngr.all_steps())

    def latest_step(self) -> int | None:
        """The newest finalised step (not verified; see ``restore_latest``)."""
        steps = self.steps()
        return steps[-1] if steps else None

    # -- restoring ------------------------------------------------------------------------------

    def restore(self, step: int, target: Any, shardings: Any = None) -> tuple[Any, dict[str, Any]]:
        """Restores ``step`` into ``target``'s structure (and ``shardings``) and verifies it.

        Returns ``(state, meta)``; raises :class:`CheckpointCorrupt` with the reason otherwise.
        """
        if shardings is None:
            shardings = jax.tree.map(lambda x: getattr(x, "sharding", None), target)
        abstract = jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), target, shardings
        )
        step_dir = os.path.join(self.directory, str(step))
        items = set(os.listdir(step_dir)) if os.path.isdir(step_dir) else set()
        has_integrity = "integrity" in items
        args = {"state": ocp.args.StandardRestore(abstract), "meta": ocp.args.JsonRestore()}
        if has_integrity:
            args["integrity"] = ocp.args.JsonRestore()
        try:
            out = self._mngr.restore(step, args=ocp.args.Composite(**args))
        except Exception as e:  # noqa: BLE001 -- any failure to read means "not intact"
            raise CheckpointCorrupt(f"restore failed: {type(e).__name__}: {_short(e)}") from e
        state, meta = out["state"], out["meta"]
        if not isinstance(meta, Mapping):
            raise CheckpointCorrupt(f"metadata is not a JSON object: {type(meta).__name__}")
        integrity = out["integrity"] if has_integrity else None
        if integrity is None:
            if meta.get("integrity_version") is not None:
                raise CheckpointCorrupt("the integrity record is missing")
            warnings.warn(
                f"checkpoint {step} in {self.directory} predates integrity records: "
                "restored without verification",
                stacklevel=2,
            )
            return state, dict(meta)
        if integrity.get("meta_sha256") != _meta_digest(meta):
            raise CheckpointCorrupt("metadata does not match its checksum")
        want = integrity.get("arrays", {})
        got = tree_checksums(state)
        if set(want) != set(got):
            raise CheckpointCorrupt(
                f"array set differs from the integrity record ({len(got)} vs {len(want)} leaves)"
            )
        bad = [p for p in sorted(got) if list(want[p]) != got[p]]
        if bad:
            more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
            raise CheckpointCorrupt(f"checksum mismatch in {', '.join(bad[:3])}{more}")
        return state, dict(meta)

    def restore_latest(
        self, target: Any, shardings: Any = None
    ) -> tuple[int, Any, dict[str, Any]] | None:
        """Restores the newest intact checkpoint: ``(step, state, meta)``, or None if there is none.

        Corrupt checkpoints newer than the restored one are reported (``warnings.warn``: step and
        reason), recorded in ``self.skipped`` and moved to ``self.quarantine``. Raises
        ``RuntimeError`` if checkpoints exist but none is intact (nothing is moved then).
        """
        self.skipped = []
        for step in reversed(self.steps()):
            try:
                state, meta = self.restore(step, target, shardings)
            except CheckpointCorrupt as e:
                self.skipped.append((step, str(e)))
                continue
            self._set_aside(self.skipped)
            for bad, why in self.skipped:
                warnings.warn(
                    f"checkpoint step {bad} in {self.directory} is corrupt ({why}); skipped it "
                    f"(moved to {self.quarantine}) and resumed from step {step}",
                    stacklevel=2,
                )
            return step, state, meta
        if self.skipped:
            reasons = "; ".join(f"step {s}: {why}" for s, why in self.skipped)
            raise RuntimeError(
                f"no intact checkpoint in {self.directory} ({reasons}). Move the directory away "
                "to start the run afresh."
            )
        return None

    def _set_aside(self, skipped: list[tuple[int, str]]) -> None:
        if not skipped:
            return
        _sync("passk_checkpoint_verdict")
        if _is_main():
            os.makedirs(self.quarantine, exist_ok=True)
            stamp = time.strftime("%Y%m%dT%H%M%S")
            for step, why in skipped:
                dst = os.path.join(self.quarantine, f"{step}-{stamp}")
                shutil.move(os.path.join(self.directory, str(step)), dst)
                with open(dst + ".reason.txt", "w") as f:
                    f.write(why + "\n")
        _sync("passk_checkpoint_set_aside")
        self._mngr.close()
        self._mngr = self._open()


def _short(e: BaseException, n: int = 300) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= n else text[: n - 3] + "..."


# ----------------------------------------------------------------------------------------------------
# One live process per workdir.


class WorkdirLocked(RuntimeError):
    """Another live process holds the workdir."""


def _proc_start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux ``/proc``), None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def _proc_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()[0]


def _alive(info: Mapping[str, Any]) -> bool | None:
    """True / False for a lock holder on this host; None when it cannot be told (other host)."""
    if info.get("host") != socket.gethostname():
        return None
    pid = int(info.get("pid", -1))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    if _proc_state(pid) == "Z":  # exited, not yet reaped
        return False
    started = info.get("proc_start")
    now = _proc_start_time(pid)
    if started is not None and now is not None and str(started) != now:
        return False  # the PID was reused by another process
    return True


class WorkdirLock:
    """``workdir/run.lock``: refuses a second live process on the same run directory.

    The lock file holds the owner's host, PID and process start time. A lock whose owner is dead
    (same host, no such PID, a zombie, or a PID now used by a process that started later) is stale:
    it is replaced, with a warning. A live owner, or an owner on another host (whose liveness
    cannot be checked from here), makes ``acquire`` raise :class:`WorkdirLocked` naming it.
    Use as a context manager; only one process of a multi-process run should take it.
    """

    def __init__(self, workdir: str):
        self.path = os.path.join(os.path.abspath(workdir), "run.lock")
        self._held = False

    def _read(self) -> dict[str, Any]:
        for _ in range(20):  # the owner may be between creating and writing the file
            try:
                with open(self.path) as f:
                    text = f.read()
            except FileNotFoundError:
                return {}
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                time.sleep(0.05)
        return {"pid": -1, "host": socket.gethostname()}  # unreadable: treat as stale

    def acquire(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "proc_start": _proc_start_time(os.getpid()),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                other = self._read()
                if not other:
                    continue  # released meanwhile
                alive = _alive(other)
                who = f"process {other.get('pid')} on {other.get('host')} (since {other.get('since')})"
                if alive is None:
                    raise WorkdirLocked(
                        f"workdir {os.path.dirname(self.path)} is locked by {who}, which cannot be "
                        f"checked from this host. If that run is gone, delete {self.path}."
                    ) from None
                if alive:
                    raise WorkdirLocked(
                        f"workdir {os.path.dirname(self.path)} is in use by live {who}; a second "
                        "process would interleave steps with it. Stop it or use another --workdir."
                    ) from None
                warnings.warn(f"removing stale lock {self.path} of dead {who}", stacklevel=2)
                # Rename first so that two processes replacing the same stale lock cannot both win.
                stale = f"{self.path}.stale.{os.getpid()}"
                try:
                    os.rename(self.path, stale)
                    os.remove(stale)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self._held = True
            return
        raise WorkdirLocked(f"could not take the lock {self.path} (contended)")

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        try:
            if int(self._read().get("pid", -1)) == os.getpid():
                os.remove(self.path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> WorkdirLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
