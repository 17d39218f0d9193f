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


def _save_release_mha(path, p, config, pad_rows, pad_value):
    """Writes ``p`` in the release's multi-head layout: a padded vocabulary (``pad_rows`` extra rows
    of ``pad_value``) and a fused ``qkv_einsum [3, N, D, H]`` per layer."""
    flat = {
        "transformer/embedder": {
            "input_embedding": np.concatenate(
                [
                    np.asarray(p["embedder"]["input_embedding"]),
                    np.full((pad_rows, config.embed_dim), pad_value, np.float32),
                ]
            )
        },
        "transformer/final_norm": {"scale": np.asarray(p["final_norm"]["scale"])},
    }
    for i in range(config.num_layers):
        layer, pre = p[f"layer_{i}"], f"transformer/layer_{i}"
        attn = layer["attn"]
        flat[f"{pre}/attn/qkv_einsum"] = {
            "w": np.concatenate(
                [np.asarray(attn["q_einsum"]["w"])[None], np.asarray(attn["kv_einsum"]["w"])]
            )
        }
        flat[f"{pre}/attn/attn_vec_einsum"] = {"w": np.asarray(attn["attn_vec_einsum"]["w"])}
        flat[f"{pre}/mlp"] = {k: np.asarray(v) for k, v in layer["mlp"].items()}
        for norm in ("pre_attention_norm", "post_attention_norm", "pre_ffw_norm", "post_ffw_norm"):
            flat[f"{pre}/{norm}"] = {"scale": np.asarray(layer[norm]["scale"])}
    ocp.PyTreeCheckpointer().save(path, flat)


def test_flax_loader_padded_vocab_and_qkv_einsum(tmp_path, tiny):
    c, params = tiny
    # Release-style quirks: a padded vocabulary and a fused qkv_einsum for multi-head attention.
    mha = testing.tiny_config(num_kv_heads=c.num_heads)
    p = testing.random_params(mha, seed=5)
    path = str(tmp_path / "mha")
    _save_release_mha(path, p, mha, 8, 0.0)
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


# ----------------------------------------------------------------------------------------------------
# RL run checkpoints: integrity records, fallback to the newest intact one, the workdir lock.


def _train_state(seed: int = 0):
    from passk_jax import sharding as S
    from passk_jax import train as TR

    mesh = S.make_mesh((1, 1, 1), jax.devices()[:1])
    tx = TR.make_optimizer(1e-3)
    return TR.create_train_state(testing.tiny_config(), tx, mesh, seed)


def _data_files(step_dir):
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and "/d/" in str(p)]
    assert files, f"no array data files under {step_dir}"
    return sorted(files, key=lambda p: p.stat().st_size)


def _truncate(step_dir):
    f = _data_files(step_dir)[-1]
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _flip(step_dir):
    f = _data_files(step_dir)[-1]
    raw = bytearray(f.read_bytes())
    for off in (len(raw) // 2, len(raw) // 2 + 7):
        raw[off] ^= 0x5A
    f.write_bytes(bytes(raw))


def _delete_meta(step_dir):
    import shutil

    shutil.rmtree(step_dir / "meta")


@pytest.mark.parametrize(
    "corrupt", [_truncate, _flip, _delete_meta], ids=["truncate", "flip", "meta"]
)
def test_restore_falls_back_to_newest_intact_checkpoint(tmp_path, corrupt):
    state, sh = _train_state(0)
    newer, _ = _train_state(1)
    c = ck.RunCheckpointer(str(tmp_path / "checkpoints"), keep=3)
    c.save(2, state, {"step": 2, "solved": ["a"]})
    c.save(4, newer, {"step": 4, "solved": ["a", "b"]})
    c.close()
    corrupt(tmp_path / "checkpoints" / "4")

    c = ck.RunCheckpointer(str(tmp_path / "checkpoints"), keep=3)
    with pytest.warns(UserWarning, match=r"checkpoint step 4 .* corrupt .* resumed from step 2"):
        step, restored, meta = c.restore_latest(state, sh)
    assert step == 2 and meta["step"] == 2 and meta["solved"] == ["a"]
    _assert_trees_equal(restored, state)
    assert [s for s, _ in c.skipped] == [4]
    assert c.steps() == [2]  # moved aside, with the reason next to it
    moved = list((tmp_path / "checkpoints_corrupt").iterdir())
    assert any(p.name.startswith("4-") and p.is_dir() for p in moved)
    assert any(p.name.endswith(".reason.txt") for p in moved)
    c.save(4, newer, {"step": 4})  # the step can be written again
    c.close()


def test_bit_flip_restores_silently_without_the_checksum(tmp_path):
    """orbax alone returns flipped values without an error; the integrity record catches them."""
    state, sh = _train_state(0)
    c = ck.RunCheckpointer(str(tmp_path / "ck"), keep=2)
    c.save(1, state, {"step": 1})
    c.close()
    _flip(tmp_path / "ck" / "1")
    abstract = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, sh
    )
    raw = ocp.CheckpointManager(str(tmp_path / "ck")).restore(
        1, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
    )["state"]
    diffs = [
        not np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(jax.tree.leaves(raw), jax.tree.leaves(state))
    ]
    assert any(diffs)  # silently different
    with pytest.raises(ck.CheckpointCorrupt, match="checksum mismatch"):
        ck.RunCheckpointer(str(tmp_path / "ck")).restore(1, state, sh)
    with pytest.raises(RuntimeError, match="no intact checkpoint"):
        ck.RunCheckpointer(str(tmp_path / "ck")).restore_latest(state, sh)


def test_tree_checksums_detect_single_changes_and_ignore_layout():
    x = jnp.arange(4096, dtype=jnp.float32).reshape(64, 64)
    base = ck.tree_checksums({"x": x})
    compiled = ck._checksums_jit._cache_size()
    assert ck.tree_checksums({"x": x + 1}) != base  # same structure: no new compilation
    assert ck._checksums_jit._cache_size() == compiled
    for i in (0, 123, 4095):
        flipped = x.reshape(-1).at[i].set(x.reshape(-1)[i] + 1).reshape(64, 64)
        assert ck.tree_checksums({"x": flipped}) != base
    swapped = x.reshape(-1)[jnp.array([1, 0, *range(2, 4096)])].reshape(64, 64)
    assert ck.tree_checksums({"x": swapped}) != base
    from jax.sharding import NamedSharding, PartitionSpec

    from passk_jax import sharding as S

    mesh = S.make_mesh((1, 8, 1), jax.devices()[:8])
    sharded = jax.device_put(x, NamedSharding(mesh, PartitionSpec("fsdp")))
    assert ck.tree_checksums({"x": sharded}) == base  # same sums on any mesh
    bits = ck.tree_checksums({"b": jnp.ones(3, bool), "h": jnp.ones(3, jnp.bfloat16)})
    assert set(bits) == {"['b']", "['h']"}


def test_workdir_lock_refuses_live_owner_and_replaces_stale(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    lock = ck.WorkdirLock(str(tmp_path))
    with lock:
        with pytest.raises(ck.WorkdirLocked, match=f"in use by live process {os.getpid()}"):
            ck.WorkdirLock(str(tmp_path)).acquire()
    assert not (tmp_path / "run.lock").exists()  # released

    # A dead owner (a finished, reaped child) leaves a stale lock: replaced with a warning.
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    info = {"pid": child.pid, "host": socket.gethostname(), "proc_start": None, "since": "x"}
    (tmp_path / "run.lock").write_text(json.dumps(info))
    with pytest.warns(UserWarning, match="stale lock"):
        with ck.WorkdirLock(str(tmp_path)):
            assert json.loads((tmp_path / "run.lock").read_text())["pid"] == os.getpid()

    # A live owner that is not us; then the same PID with another start time (PID reuse).
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = ck._proc_start_time(sleeper.pid)
        info = {"pid": sleeper.pid, "host": socket.gethostname(), "proc_start": start}
        (tmp_path / "run.lock").write_text(json.dumps(info))
        with pytest.raises(ck.WorkdirLocked, match=str(sleeper.pid)):
            ck.WorkdirLock(str(tmp_path)).acquire()
        (tmp_path / "run.lock").write_text(json.dumps({**info, "proc_start": "1"}))
        with pytest.warns(UserWarning, match="stale lock"):
            ck.WorkdirLock(str(tmp_path)).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    # Another host's lock cannot be checked from here: refused, naming the file to delete.
    (tmp_path / "run.lock").write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    with pytest.raises(ck.WorkdirLocked, match="cannot be checked"):
        ck.WorkdirLock(str(tmp_path)).acquire()


# ----------------------------------------------------------------------------------------------------
# Loading born sharded on 8 (fake CPU) devices.


def _mesh8():
    from passk_jax import sharding as S

    if len(jax.devices()) < 8:
        pytest.skip("needs 8 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)")
    return S.make_mesh({"data": 1, "fsdp": 4, "tensor": 2}, jax.devices()[:8])


def _sharded_config():
    # Every sharded dimension divisible by its mesh axes (fsdp = 4 on embed, tensor = 2 on heads /
    # kv heads / mlp / vocab), so the rules shard every matrix.
    return testing.tiny_config(num_heads=4, num_kv_heads=2, hidden_dim=128, vocab_size=64)


def _assert_born_sharded(params, config, mesh, reads):
    """Every parameter has its mesh sharding; no device shard of a sharded parameter is whole, and
    no host read feeding a sharded parameter was of the whole tensor."""
    from passk_jax import sharding as S

    want = S.param_shardings(config, mesh)
    n_sharded = 0
    for (path, x), sh in zip(
        jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(want), strict=True
    ):
        assert x.sharding.is_equivalent_to(sh, x.ndim), jax.tree_util.keystr(path)
        full = tuple(x.shape)
        shard_shape = sh.shard_shape(full)
        if shard_shape != full:
            n_sharded += 1
            assert all(s.data.shape == shard_shape for s in x.addressable_shards)
            if reads is not None:
                seen = reads[id_of(path)]
                assert seen and all(r != full for r in seen), (jax.tree_util.keystr(path), seen)
    assert n_sharded >= 3 * config.num_layers  # the matrices really are sharded


def id_of(path):
    return jax.tree_util.keystr(path)


def test_hf_checkpoint_loads_born_sharded(tmp_path, monkeypatch):
    from passk_jax import export

    mesh = _mesh8()
    c = _sharded_config()
    params = testing.random_params(c, seed=3)
    # Record the shape of every host read, per parameter, while loading onto the mesh.
    reads: dict[str, list[tuple[int, ...]]] = {}
    lazy_paths: dict[int, str] = {}
    orig_tree, orig_read = ck._hf_lazy_tree, ck._Lazy.read

    def tree_spy(by_suffix, config):
        tree = orig_tree(by_suffix, config)
        for path, lz in jax.tree_util.tree_flatten_with_path(
            tree, is_leaf=lambda x: isinstance(x, ck._Lazy)
        )[0]:
            lazy_paths[id(lz)] = id_of(path)
        return tree

    def read_spy(self, index=None):
        arr = orig_read(self, index)
        reads.setdefault(lazy_paths[id(self)], []).append(tuple(arr.shape))
        return arr

    for dtype in ("float32", "bfloat16"):
        out = export.export_hf(params, c, str(tmp_path / dtype), dtype=dtype)
        reads.clear()
        lazy_paths.clear()
        monkeypatch.setattr(ck, "_hf_lazy_tree", tree_spy)
        monkeypatch.setattr(ck._Lazy, "read", read_spy)
        config, loaded = ck.load_hf_gemma2(out, mesh=mesh, param_dtype="float32")
        monkeypatch.undo()
        _assert_born_sharded(loaded, config, mesh, reads)
        # Same values as the unsharded load (and, in float32, as the exported parameters).
        _, plain = ck.load_hf_gemma2(out, param_dtype="float32")
        _assert_trees_equal(loaded, plain)
        if dtype == "float32":
            _assert_trees_equal(loaded, params)


def test_flax_checkpoint_loads_born_sharded(tmp_path, monkeypatch):
    mesh = _mesh8()
    c = _sharded_config()
    params = testing.random_params(c, seed=4)
    path = str(tmp_path / "release")
    ck.save_flax_gemma2_layout(path, params)
    restored = []
    orig = ocp.PyTreeCheckpointer.restore

    def spy(self, *a, **kw):
        out = orig(self, *a, **kw)
        restored.append(out)
        return out

    monkeypatch.setattr(ocp.PyTreeCheckpointer, "restore", spy)
    loaded = ck.load_flax_gemma2(path, c, mesh=mesh)
    # What orbax handed back was already sharded: no whole copy of a sharded matrix on a device.
    for x in jax.tree.leaves(restored[0]):
        if x.ndim >= 2:
            assert len(x.sharding.device_set) == 8
            assert all(s.data.size < x.size for s in x.addressable_shards)
    _assert_born_sharded(loaded, c, mesh, None)
    _assert_trees_equal(loaded, params)


def test_flax_padded_vocab_and_qkv_load_born_sharded(tmp_path):
    mesh = _mesh8()
    mha = testing.tiny_config(num_heads=4, num_kv_heads=4, hidden_dim=128, vocab_size=64)
    p = testing.random_params(mha, seed=6)
    path = str(tmp_path / "mha")
    _save_release_mha(path, p, mha, 8, 1.0)
    loaded = ck.load_flax_gemma2(path, mha, mesh=mesh)
    _assert_born_sharded(loaded, mha, mesh, None)
    _assert_trees_equal(loaded, p)
