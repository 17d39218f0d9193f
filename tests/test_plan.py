"""The ahead-of-time planner reports exactly what XLA reports for the run's own compiled step."""

import json
import math

import jax
import numpy as np
import optax
import pytest

from passk_jax import plan as PL
from passk_jax import sharding as S
from passk_jax import train as TR
from passk_jax.testing import tiny_config


def test_plan_matches_memory_analysis_of_the_real_step():
    devices = jax.devices()[:8]
    mesh = S.make_mesh((2, 4, 1), devices)
    cfg = tiny_config()
    tx = optax.adamw(1e-3)
    loss_config = TR.LossConfig(num_microbatches=2)
    b, tp, t = 16, 6, 8
    res = PL.plan_train_step(
        cfg, loss_config, tx, mesh, batch=b, prompt_len=tp, completion_len=t, memory_bytes=1e9
    )
    # Independently: the real state and batch, the real jitted step, XLA's own analysis.
    state, shardings = TR.create_train_state(cfg, tx, mesh, seed=0)
    rng = np.random.default_rng(0)
    batch = TR.make_batch(
        rng.integers(3, 64, (4, tp)),
        np.ones((4, tp), bool),
        rng.integers(3, 64, (4, 4, t)),
        np.ones((4, 4, t), bool),
        np.zeros((4, 4, t), np.float32),
        rng.normal(size=(4, 4)),
        mesh=mesh,
    )
    step = TR.jit_train_step(tx, cfg, loss_config, shardings, mesh)
    with jax.set_mesh(mesh):
        mem = step.lower(state, batch).compile().memory_analysis()
    assert res.argument_bytes == mem.argument_size_in_bytes
    assert res.output_bytes == mem.output_size_in_bytes
    assert res.alias_bytes == mem.alias_size_in_bytes
    assert res.temp_bytes == mem.temp_size_in_bytes
    assert (
        res.total_bytes == res.argument_bytes + res.output_bytes - res.alias_bytes + res.temp_bytes
    )
    assert res.total_bytes > 0 and res.flops and res.flops > 0
    assert (
        res.fits is True
        and res.num_devices == 8
        and res.mesh == {"data": 2, "fsdp": 4, "tensor": 1}
    )
    # Per-device arguments: the sharded state is smaller per device than replicated parameters.
    n_params = sum(x.size for x in jax.tree.leaves(state.params))
    assert res.argument_bytes < 3 * 4 * n_params  # params + 2 Adam moments, float32, if unsharded


def test_cli_on_a_config(tmp_path, capsys):
    out = tmp_path / "plan.json"
    rc = PL.main(
        [
            "--config",
            "passk_jax/configs/maze_tiny.py:quick",
            "--devices",
            "cpu:8",
            "--memory-gb",
            "0.001",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| cpu:8 |" in printed and "total / device" in printed
    res = json.loads(out.read_text())["results"][0]
    assert res["num_devices"] == 8 and res["total_bytes"] > 0
    assert res["fits"] == (res["total_bytes"] <= 1e6)
    # --sampler --no-train-step: the config's rollout shape (8 prompts x 8 samples in quick).
    rc = PL.main(
        ["--config", "passk_jax/configs/maze_tiny.py:quick", "--devices", "cpu:8"]
        + ["--sampler", "--no-train-step", "--json", str(out)]
    )
    assert rc == 0 and "| sampler decode | cpu:8 |" in capsys.readouterr().out
    rows = json.loads(out.read_text())["results"]
    assert [r["program"] for r in rows] == ["sampler prefill", "sampler decode"]
    assert rows[1]["batch"] == 64 and rows[1]["total_bytes"] > 0


@pytest.mark.slow
def test_largest_fitting_batch_search_compiles():
    config = PL._load("passk_jax/configs/maze_tiny.py:quick")
    two = PL.plan_config(config, jax.devices()[:2], batch_per_device=2).total_bytes
    four = PL.plan_config(config, jax.devices()[:2], batch_per_device=4).total_bytes
    assert two < four
    best, probes = PL.largest_fitting_batch(
        config, jax.devices()[:2], memory_bytes=(two + four) / 2, limit=16
    )
    assert best in (2, 3), [(p.batch, p.total_bytes) for p in probes]
    assert all(p.fits == (p.total_bytes <= (two + four) / 2) for p in probes)


@pytest.mark.parametrize(
    "micro,budget,want", [(1, 37, 37), (2, 37, 36), (4, 3, None), (1, 5000, 1024)]
)
def test_largest_fitting_batch_search_logic(monkeypatch, micro, budget, want):
    """The doubling + bisection over per-device batches, with a linear memory model in place of
    the compiler (the compiled figures themselves are checked above)."""
    config = PL._load("passk_jax/configs/maze_tiny.py:quick")
    config.loss.num_microbatches = micro
    calls = []

    def fake(config, devices, *, batch_per_device, memory_bytes=None, **kw):
        calls.append(batch_per_device)
        assert batch_per_device % micro == 0  # every probe splits into whole micro-batches
        total = batch_per_device
        return PL.PlanResult(
            "fake", 1, {}, batch_per_device, 1, 1, micro, 0, 0, 0, total, total, budget, None
        )

    monkeypatch.setattr(PL, "plan_config", fake)
    best, probes = PL.largest_fitting_batch(config, [None], prompt_len=1, limit=1024)
    assert best == want, calls
    assert len(calls) <= 2 * 11 + 2  # logarithmic in the limit


def test_clear_errors():
    with pytest.raises(SystemExit, match="libtpu|topology"):
        PL._devices("v9z:1x1", None)
    with pytest.raises(SystemExit, match="xla_force_host_platform_device_count"):
        PL._devices(None, "cpu:4096")


def test_busy_libtpu_is_named(monkeypatch):
    """A second libtpu process fails on libtpu's lockfile: the message says another process holds
    it instead of suggesting a reinstall."""
    from jax.experimental import topologies

    def busy(*a, **k):
        raise RuntimeError("ABORTED: Internal error when accessing libtpu multi-process lockfile.")

    monkeypatch.setattr(topologies, "get_topology_desc", busy)
    with pytest.raises(SystemExit, match="in use by another process"):
        PL._devices("v5e:4x4", None)


def test_compiler_out_of_memory_is_a_result_not_a_crash():
    """XLA's TPU compiler refuses a program that cannot fit (RESOURCE_EXHAUSTED); the planner reads
    the temporaries it reports (binary units) and marks the plan as not fitting."""
    msg = (
        "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
        "temporaries (310.59G) exceeds available HBM (15.75G)."
    )
    assert PL.parse_oom(msg) == int(310.59 * 2**30)
    assert PL.parse_oom(msg.replace("310.59G", "512.0M")) == 512 * 2**20
    assert PL.parse_oom("INTERNAL: something else") is None
    r = PL.PlanResult(
        target="v5e:8x16", num_devices=128, mesh={"data": 1, "fsdp": 128, "tensor": 1},
        batch=256, prompt_len=512, completion_len=1024, num_microbatches=2, argument_bytes=-1,
        output_bytes=-1, alias_bytes=-1, temp_bytes=PL.parse_oom(msg),
        total_bytes=PL.parse_oom(msg), device_memory_bytes=15.75e9, flops=None,
        compile_error=msg,
    )  # fmt: skip
    assert r.fits is False and r.as_dict()["fits"] is False
    row = PL.format_table([r]).splitlines()[-1]
    assert "333.49 GB" in row and "the compiler refused" in row and "| - |" in row


def test_sampler_plan_matches_the_real_programs_and_shards_the_rows():
    """plan_sampler's prefill / decode figures are XLA's analysis of the sampler's own programs on
    real arrays; with the mesh, each device holds 1/8 of the decode rows and KV cache."""
    import jax.numpy as jnp

    from passk_jax import sampler as SMP
    from passk_jax import testing

    devices = jax.devices()[:8]
    mesh = S.make_mesh((1, 8, 1), devices)
    cfg = tiny_config()
    p, g, tp, t = 4, 4, 6, 8
    pre, dec = PL.plan_sampler(
        cfg, mesh, prompts=p, samples=g, prompt_len=tp, max_new_tokens=t, memory_bytes=1e9
    )
    assert (pre.program, dec.program) == ("sampler prefill", "sampler decode")
    assert pre.batch == dec.batch == p * g and pre.fits and dec.fits
    params = jax.device_put(testing.random_params(cfg, seed=0), S.param_shardings(cfg, mesh))
    rep = S.replicated(mesh)
    toks = jax.device_put(np.random.default_rng(0).integers(3, 64, (p, tp)).astype(np.int32), rep)
    mask = jax.device_put(np.ones((p, tp), bool), rep)
    rng = jax.device_put(jax.random.key(0), rep)
    pad = jax.device_put(jnp.int32(0), rep)
    kw = dict(config=cfg, num_samples=g, max_new_tokens=t)
    lowered = SMP._prefill.lower(params, toks, mask, rng, pad_id=pad, mesh=mesh, **kw)
    mem = lowered.compile().memory_analysis()
    assert pre.temp_bytes == mem.temp_size_in_bytes
    assert pre.argument_bytes == mem.argument_size_in_bytes
    state = SMP._prefill(params, toks, mask, rng, pad_id=pad, mesh=mesh, **kw)
    strategy = SMP.make_strategy(1.0, None, None)

    def decode_memory(st, m):
        return (
            SMP._decode_jit.lower(
                params, st, config=cfg, strategy=strategy, eos_id=pad, pad_id=pad, phases=4, mesh=m
            )
            .compile()
            .memory_analysis()
        )

    mem = decode_memory(state, mesh)
    assert dec.temp_bytes == mem.temp_size_in_bytes
    assert dec.argument_bytes == mem.argument_size_in_bytes
    # Rows over the 8 fsdp devices: the cache and every per-row field hold 1/8 of the rows.
    k = state.cache["layer_0"]["k"]
    assert k.sharding.shard_shape(k.shape)[0] * 8 == p * g
    unsharded = SMP._prefill(params, toks, mask, rng, pad_id=pad, **kw)
    assert unsharded.cache["layer_0"]["k"].sharding.shard_shape(k.shape)[0] == p * g
    assert decode_memory(unsharded, None).argument_size_in_bytes > mem.argument_size_in_bytes


def test_loss_overrides_are_typed_and_checked():
    """--loss-override values take the LossConfig field's type; unknown keys, the sampling fields
    (which come from the rl section) and badly typed values are refused naming the key."""
    assert PL.parse_loss_overrides(["share_prompts=false", "num_microbatches=4"]) == {
        "share_prompts": False,
        "num_microbatches": 4,
    }
    assert PL.parse_loss_overrides(["kl_coef=0.5"]) == {"kl_coef": 0.5}
    for bad, key in [
        (["share_prompt=true"], "share_prompt"),
        (["temperature=0.5"], "temperature"),
        (["share_prompts=maybe"], "share_prompts"),
        (["num_microbatches=two"], "num_microbatches"),
        (["num_microbatches"], "num_microbatches"),
    ]:
        with pytest.raises(SystemExit, match=key):
            PL.parse_loss_overrides(bad)


def test_plan_config_compiles_the_group_path_only_when_prompts_are_shared():
    """plan_config compiles the prompt-sharing step (group = samples per prompt) unless the loss
    turns sharing off, and records which one it compiled."""
    config = PL._load("passk_jax/configs/maze_tiny.py:quick")
    devices = jax.devices()[:2]
    shared = PL.plan_config(config, devices, batch_per_device=4)
    per_row = PL.plan_config(
        config, devices, batch_per_device=4, loss_overrides={"share_prompts": False}
    )
    assert shared.group_size == math.gcd(int(config.rl.num_samples), 8) > 1
    assert per_row.group_size == 1
    assert shared.flops != per_row.flops  # two different programs were compiled


def test_search_reuses_known_results(monkeypatch):
    """A per-device batch already compiled (the CLI's main plan) is not compiled again."""
    config = PL._load("passk_jax/configs/maze_tiny.py:quick")
    config.loss.num_microbatches = 2
    calls = []

    def fake(config, devices, *, batch_per_device, memory_bytes=None, **kw):
        calls.append(batch_per_device)
        return PL.PlanResult(
            "fake", 1, {}, batch_per_device, 1, 1, 2, 0, 0, 0, batch_per_device,
            batch_per_device, 9, None,
        )  # fmt: skip

    monkeypatch.setattr(PL, "plan_config", fake)
    known = {2: fake(config, None, batch_per_device=2)}
    calls.clear()
    best, probes = PL.largest_fitting_batch(config, [None], prompt_len=1, known=known)
    assert best == 8 and 2 not in calls and [p.batch for p in probes] == calls


def test_model_overrides_type_booleans():
    """A boolean Gemma2Config field given on the command line becomes a bool ("false" would
    otherwise be a truthy string); a non-boolean value for it is refused."""
    assert PL._parse_override(["matmul_projections=false", "remat=full"]) == {
        "matmul_projections": False,
        "remat": "full",
    }
    with pytest.raises(SystemExit, match="matmul_projections"):
        PL._parse_override(["matmul_projections=no"])
