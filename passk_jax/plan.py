"""Ahead-of-time memory and FLOPs planner for the train step: compile for the target, read the numbers.

``python -m passk_jax.plan --config <config>[:args] [--topology v5e:4x4 | --devices cpu:8]`` builds the
configured model, loss, optimizer, mesh and batch shapes, compiles the policy-gradient update
(:func:`passk_jax.train.train_step`, jitted with the run's shardings and donation) for the target
*without any parameter or batch in memory* (abstract inputs), and prints per device: argument,
output, temporary and total bytes against the device's memory, the compiled FLOPs of one step, and
(``--search``) the largest per-device batch that fits.

Targets:

* ``--devices cpu:N``: the first N local devices (with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``
  for fake CPU devices). Always available; XLA:CPU's memory figures do not respond to
  rematerialisation the way TPU's do, so plan pod memory with a TPU topology.
* ``--topology v5e:4x4`` (any name ``jax.experimental.topologies.get_topology_desc`` knows): TPU
  ahead-of-time compilation through libtpu on a machine with no TPU (``pip install
  passk_jax[tpu-aot]``; libtpu must match the installed jax: 0.0.42.* for jax 0.10.2).

The numbers are XLA's own (``Compiled.memory_analysis()`` and ``cost_analysis()``); nothing is
estimated. Total per device = arguments + outputs - aliased (donated) bytes + temporaries.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import re
import sys
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

__all__ = [
    "PlanResult",
    "device_memory_bytes",
    "main",
    "parse_oom",
    "plan_config",
    "plan_sampler",
    "plan_train_step",
]

# Usable HBM per chip (bytes) for known device kinds; --memory-gb overrides.
_DEVICE_MEMORY = {
    "TPU v5 lite": 15.75e9,  # v5e: 16 GiB HBM, of which XLA can use ~15.75 GB
    "TPU v5": 95.0e9,  # v5p: 95 GiB
    "TPU v4": 31.0e9,
    "TPU v6 lite": 31.25e9,  # v6e
}


@dataclasses.dataclass(frozen=True)
class PlanResult:
    """What one ahead-of-time compilation of the train step needs, per device (bytes)."""

    target: str
    num_devices: int
    mesh: dict[str, int]
    batch: int  # sequences per step (all devices)
    prompt_len: int
    completion_len: int
    num_microbatches: int
    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    temp_bytes: int
    total_bytes: int
    device_memory_bytes: float | None
    flops: float | None  # compiled FLOPs of one step, as XLA reports them
    model_flops: float = 0.0  # passk_jax.flops.train_step_flops: matmul FLOPs of the step
    # The compiler's own refusal (RESOURCE_EXHAUSTED) when the program cannot fit the target: then
    # temp_bytes / total_bytes are the temporaries it reported, and the other sizes are unknown (-1).
    compile_error: str | None = None
    program: str = "train step"  # or "sampler prefill" / "sampler decode" (:func:`plan_sampler`)
    # Rows of a micro-batch that share one prompt pass in the compiled step (train.micro_layout).
    group_size: int = 1

    @property
    def fits(self) -> bool | None:
        if self.compile_error is not None:
            return False
        if self.device_memory_bytes is None:
            return None
        return self.total_bytes <= self.device_memory_bytes

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "fits": self.fits}


def device_memory_bytes(device: Any) -> float | None:
    """Usable memory of one device: ``memory_stats()`` where the runtime has it, else the table."""
    try:
        stats = device.memory_stats()
    except Exception:  # AOT topology devices and CPU have no live memory stats
        stats = None
    if stats and stats.get("bytes_limit"):
        return float(stats["bytes_limit"])
    return _DEVICE_MEMORY.get(getattr(device, "device_kind", ""))


def _abstract(tree: Any, shardings: Any) -> Any:
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )


def plan_train_step(
    model_config: Any,
    loss_config: Any,
    tx: Any,
    mesh: jax.sharding.Mesh,
    *,
    batch: int,
    prompt_len: int,
    completion_len: int,
    target: str = "",
    memory_bytes: float | None = None,
    group_size: int = 1,
) -> PlanResult:
    """Compiles ``train_step`` for ``mesh`` from abstract inputs and reports XLA's figures.

    Args:
      model_config: a :class:`passk_jax.models.gemma2.Gemma2Config`.
      loss_config: a :class:`passk_jax.train.LossConfig` (micro-batches included).
      tx: the optax optimizer. mesh: the target mesh (CPU devices or a TPU topology's devices).
      batch: sequences per step (prompts x samples). prompt_len / completion_len: token lengths.
      target: a label for the report.
      memory_bytes: device memory to plan against (default: :func:`device_memory_bytes`).
      group_size: consecutive rows sharing a prompt (``train_step``'s; the RL learner step passes
        its samples per prompt, so a run's plan uses ``rl.num_samples``).

    Returns:
      A :class:`PlanResult`.
    """
    from passk_jax import train as TR

    shardings = TR.state_shardings(model_config, tx, mesh, with_ref=loss_config.kl_coef > 0)
    from passk_jax.models import gemma2

    params = jax.eval_shape(functools.partial(gemma2.init_params, model_config), jax.random.key(0))
    opt_state = jax.eval_shape(tx.init, params)
    state = TR.TrainState(
        step=jax.ShapeDtypeStruct((), jnp.int32),
        params=params,
        opt_state=opt_state,
        rng=jax.ShapeDtypeStruct((2,), jnp.uint32),
        ref_params=params if loss_config.kl_coef > 0 else None,
    )
    state = _abstract(state, shardings)
    bsh = TR.batch_shardings(mesh)
    shapes = {
        "prompt_tokens": ((batch, prompt_len), jnp.int32),
        "prompt_mask": ((batch, prompt_len), jnp.bool_),
        "tokens": ((batch, completion_len), jnp.int32),
        "mask": ((batch, completion_len), jnp.bool_),
        "old_logp": ((batch, completion_len), jnp.float32),
        "weights": ((batch,), jnp.float32),
    }
    batch_abs = {
        k: jax.ShapeDtypeStruct(shape, dt, sharding=bsh[k]) for k, (shape, dt) in shapes.items()
    }
    step = TR.jit_train_step(tx, model_config, loss_config, shardings, mesh, group_size=group_size)
    from passk_jax import flops as FL

    model_flops = FL.train_step_flops(model_config, batch, prompt_len, completion_len)
    common = _common(
        mesh,
        target,
        memory_bytes,
        batch=batch,
        prompt_len=prompt_len,
        completion_len=completion_len,
        num_microbatches=loss_config.num_microbatches,
        model_flops=model_flops,
        group_size=TR.micro_layout(batch, group_size, loss_config)[1],
    )
    with jax.set_mesh(mesh):  # activation constraints (Gemma2Config.activation_batch_axes)
        return _compiled_result(lambda: step.lower(state, batch_abs).compile(), common)[0]


def _common(mesh, target: str, memory_bytes: float | None, **fields) -> dict[str, Any]:
    """The :class:`PlanResult` fields every program of a plan on ``mesh`` shares."""
    first = mesh.devices.flat[0]
    return dict(
        target=target or str(first.platform),
        num_devices=int(mesh.devices.size),
        mesh=dict(mesh.shape),
        device_memory_bytes=memory_bytes
        if memory_bytes is not None
        else device_memory_bytes(first),
        **fields,
    )


def _compiled_result(compile_fn, common: dict) -> tuple[PlanResult, Any]:
    """``(result, compiled)`` of one compilation; a compiler out-of-memory refusal becomes a
    not-fitting result (``compiled`` None) with the temporaries XLA reported."""
    try:
        compiled = compile_fn()
    except jax.errors.JaxRuntimeError as e:
        temp = parse_oom(str(e))
        if temp is None:
            raise
        failed = PlanResult(
            **common,
            argument_bytes=-1,
            output_bytes=-1,
            alias_bytes=-1,
            temp_bytes=temp,
            total_bytes=temp,
            flops=None,
            compile_error=str(e).strip().splitlines()[0][:300],
        )
        return failed, None
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    flops = float(cost["flops"]) if cost and "flops" in cost else None
    arg, out = int(mem.argument_size_in_bytes), int(mem.output_size_in_bytes)
    alias, temp = int(mem.alias_size_in_bytes), int(mem.temp_size_in_bytes)
    result = PlanResult(
        **common,
        argument_bytes=arg,
        output_bytes=out,
        alias_bytes=alias,
        temp_bytes=temp,
        total_bytes=arg + out - alias + temp,
        flops=flops,
    )
    return result, compiled


def plan_sampler(
    model_config: Any,
    mesh: jax.sharding.Mesh,
    *,
    prompts: int,
    samples: int,
    prompt_len: int,
    max_new_tokens: int,
    layout: str = "training",
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    decode_phases: int = 4,
    target: str = "",
    memory_bytes: float | None = None,
    shard_rows: bool = True,
) -> list[PlanResult]:
    """Compiles the sampler's prefill and decode programs for ``mesh`` from abstract inputs, as an
    RL step runs them (:func:`passk_jax.sampler.sample` with ``mesh``: parameters in the rollout
    ``layout``, the ``prompts x samples`` decode rows and KV cache over the batch axes;
    ``shard_rows=False`` compiles the sampler without the mesh, rows replicated, for comparison).

    Returns:
      ``[prefill, decode]`` :class:`PlanResult` s (``batch`` = decode rows; the decode's
      arguments include the prefill's output state, which it donates on accelerators).
    """
    from passk_jax import sampler as SMP
    from passk_jax import sharding as S
    from passk_jax.models import gemma2

    params = jax.eval_shape(functools.partial(gemma2.init_params, model_config), jax.random.key(0))
    params = _abstract(params, SMP.rollout_shardings(model_config, mesh, layout))
    rep = S.replicated(mesh)
    toks = jax.ShapeDtypeStruct((prompts, prompt_len), jnp.int32, sharding=rep)
    mask = jax.ShapeDtypeStruct((prompts, prompt_len), jnp.bool_, sharding=rep)
    key = jax.eval_shape(lambda: jax.random.key(0))
    rng = jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=rep)
    scalar = jax.ShapeDtypeStruct((), jnp.int32, sharding=rep)
    common = _common(
        mesh,
        target,
        memory_bytes,
        batch=prompts * samples,
        prompt_len=prompt_len,
        completion_len=max_new_tokens,
        num_microbatches=1,
    )
    static = dict(config=model_config, mesh=mesh if shard_rows else None)
    prefill_kw = dict(num_samples=samples, max_new_tokens=max_new_tokens, **static)

    pre, compiled = _compiled_result(
        lambda: SMP._prefill.lower(params, toks, mask, rng, pad_id=scalar, **prefill_kw).compile(),
        {**common, "program": "sampler prefill" + ("" if shard_rows else " (rows replicated)")},
    )
    if compiled is None:
        return [pre]
    state = jax.tree.map(  # the decode's input: the prefill's output, as compiled
        lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
        compiled.out_info,
        compiled.output_shardings,
    )
    decode = SMP._decode_jit if mesh.devices.flat[0].platform == "cpu" else SMP._decode_jit_donated
    strategy = SMP.make_strategy(temperature, top_k, top_p)
    dec, _ = _compiled_result(
        lambda: decode.lower(
            params,
            state,
            strategy=strategy,
            eos_id=scalar,
            pad_id=scalar,
            phases=int(decode_phases),
            **static,
        ).compile(),
        {**common, "program": "sampler decode" + ("" if shard_rows else " (rows replicated)")},
    )
    return [pre, dec]


_OOM = re.compile(r"RESOURCE_EXHAUSTED.*?HLO temporaries \(([\d.]+)\s*([KMGT]?)i?B?\)", re.S)


def parse_oom(message: str) -> int | None:
    """Bytes of HLO temporaries in XLA's out-of-memory refusal (``RESOURCE_EXHAUSTED: ... HLO
    temporaries (310.59G) exceeds available HBM (15.75G)``; binary units), else ``None``."""
    m = _OOM.search(message)
    if m is None:
        return None
    scale = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[m.group(2)]
    return int(float(m.group(1)) * scale)


# ----------------------------------------------------------------------------------------------------
# From a run config.


def _devices(topology: str | None, devices: str | None) -> tuple[list[Any], str]:
    if topology:
        try:
            from jax.experimental import topologies
        except ImportError as e:  # pragma: no cover - part of jax
            raise SystemExit(f"jax.experimental.topologies is unavailable: {e}") from None
        try:
            topo = topologies.get_topology_desc(topology, "tpu")
        except Exception as e:
            if "lockfile" in str(e):
                raise SystemExit(
                    f"cannot describe TPU topology {topology!r}: libtpu is in use by another "
                    "process on this machine (one libtpu process at a time); wait for it to end "
                    f"({e})"
                ) from None
            raise SystemExit(
                f"cannot describe TPU topology {topology!r}: {e}\nTPU ahead-of-time compilation "
                "needs libtpu matching the installed jax (for jax 0.10.2: pip install "
                "'libtpu==0.0.42.*', or passk_jax[tpu-aot])."
            ) from None
        return list(topo.devices), topology
    spec = devices or f"cpu:{len(jax.devices('cpu'))}"
    kind, _, count = spec.partition(":")
    pool = jax.devices(kind)
    n = int(count) if count else len(pool)
    if n > len(pool):
        raise SystemExit(
            f"--devices {spec}: only {len(pool)} {kind} devices; for fake CPU devices set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={n} before starting."
        )
    return pool[:n], spec


def _mesh(config, devices) -> jax.sharding.Mesh:
    from passk_jax import sharding as S

    shape = dict(config.mesh) if config.get("mesh") else None
    return S.make_mesh(shape, devices)


def _vocab_size(config) -> int | None:
    """The tokenizer's vocabulary where it is cheap to know (char tokenizers), else None."""
    if config.get("tokenizer", "char") != "char":
        return None
    from passk_jax.tasks import build_task
    from passk_jax.tokenizers import CharTokenizer

    task = build_task(config.task)
    return CharTokenizer(task.alphabet).vocab_size


def plan_config(
    config,
    devices: Sequence[Any],
    *,
    target: str = "",
    batch_per_device: int | None = None,
    overrides: dict[str, Any] | None = None,
    memory_bytes: float | None = None,
    prompt_len: int | None = None,
    completion_len: int | None = None,
    loss_overrides: dict[str, Any] | None = None,
) -> PlanResult:
    """:func:`plan_train_step` for a run config (``ml_collections.ConfigDict`` of a config file).

    The step's batch is ``rl.prompts_per_step x rl.num_samples`` sequences of ``max_prompt_len`` +
    ``rl.max_new_tokens`` tokens, or ``batch_per_device`` x devices sequences when given.
    ``overrides`` replace model-architecture fields (e.g. ``{"remat": "full"}``);
    ``loss_overrides`` replace ``config.loss`` entries (e.g. ``{"share_prompts": True}``, typed as
    :func:`parse_loss_overrides` gives them); ``prompt_len`` / ``completion_len`` replace the
    config's token lengths.
    """
    from passk_jax import train as TR

    model_config = _config_model(config, overrides)
    loss = {
        k: v for k, v in dict(config.loss).items() if k not in ("temperature", "top_k", "top_p")
    }
    loss.update(loss_overrides or {})
    rl_c = config.rl
    loss_config = TR.LossConfig(
        **loss,
        temperature=float(rl_c.get("temperature", 1.0) or 1.0),
        top_k=rl_c.get("top_k", None),
        top_p=rl_c.get("top_p", None),
    )
    opt = config.optimizer
    tx = TR.make_optimizer(
        opt.learning_rate,
        warmup_steps=opt.get("warmup_steps", 0),
        weight_decay=opt.get("weight_decay", 0.0),
        max_grad_norm=opt.get("max_grad_norm", 1.0),
    )
    mesh = _mesh(config, list(devices))
    batch = int(rl_c.prompts_per_step) * int(rl_c.num_samples)
    if batch_per_device is not None:
        batch = batch_per_device * int(mesh.devices.size)
    return plan_train_step(
        model_config,
        loss_config,
        tx,
        mesh,
        batch=batch,
        prompt_len=_config_prompt_len(config, prompt_len),
        completion_len=int(completion_len or rl_c.max_new_tokens),
        target=target,
        memory_bytes=memory_bytes,
        group_size=math.gcd(int(rl_c.num_samples), batch),
    )


def plan_config_sampler(
    config,
    devices: Sequence[Any],
    *,
    target: str = "",
    overrides: dict[str, Any] | None = None,
    memory_bytes: float | None = None,
    prompt_len: int | None = None,
    completion_len: int | None = None,
    shard_rows: bool = True,
) -> list[PlanResult]:
    """:func:`plan_sampler` at a run config's rollout shape: ``rl.prompts_per_step`` prompts x
    ``rl.num_samples`` samples of ``max_prompt_len`` + ``rl.max_new_tokens`` tokens, in the
    config's ``rl.rollout_layout`` and sampling settings (lengths replaceable as for
    :func:`plan_config`)."""
    rl_c = config.rl
    return plan_sampler(
        _config_model(config, overrides),
        _mesh(config, list(devices)),
        prompts=int(rl_c.prompts_per_step),
        samples=int(rl_c.num_samples),
        prompt_len=_config_prompt_len(config, prompt_len),
        max_new_tokens=int(completion_len or rl_c.max_new_tokens),
        layout=str(rl_c.get("rollout_layout", "training")),
        temperature=float(rl_c.get("temperature", 1.0) or 0.0),
        top_k=rl_c.get("top_k", None),
        top_p=rl_c.get("top_p", None),
        decode_phases=int(rl_c.get("decode_phases", 4)),
        target=target,
        memory_bytes=memory_bytes,
        shard_rows=shard_rows,
    )


def _config_model(config, overrides: dict[str, Any] | None):
    """The run config's Gemma2Config (vocabulary from the tokenizer), with ``overrides``."""
    from passk_jax import rl

    vocab = _vocab_size(config) or config.get("vocab_size", None)
    if vocab is None and config.model.kind == "tiny":
        raise SystemExit(
            "the tiny model takes its vocabulary from the tokenizer; set config.vocab_size to plan "
            "a config whose tokenizer is a SentencePiece file."
        )
    model_config = rl._model_config(config, int(vocab or 0))
    return dataclasses.replace(model_config, **overrides) if overrides else model_config


def _config_prompt_len(config, prompt_len: int | None) -> int:
    """``prompt_len``, else the config's ``max_prompt_len``, else its longest training prompt."""
    if prompt_len is not None:
        return int(prompt_len)
    return int(config.get("max_prompt_len", 0) or 0) or _default_prompt_len(config)


def _default_prompt_len(config) -> int:
    """Prompt length for configs without ``max_prompt_len``: the longest training prompt."""
    from passk_jax import rl
    from passk_jax.tokenizers import encode_prompt

    task = rl.build_task(config.task)
    tok = rl._tokenizer(config, task)
    chat = config.get("chat_template", None)
    return max(len(encode_prompt(tok, p.text, chat)) for p in task.prompts("train")[:256])


def largest_fitting_batch(
    config,
    devices,
    *,
    limit: int = 1024,
    known: dict[int, PlanResult] | None = None,
    **kw,
) -> tuple[int | None, list[PlanResult]]:
    """The largest per-device batch (a multiple of the micro-batch count) that fits, by doubling
    then bisection; each probe is one compilation. ``kw`` as for :func:`plan_config`; ``known``
    maps per-device batches already compiled with the same settings to their results (not compiled
    again, not repeated in the probes). Returns ``(batch_per_device or None, probes)``."""
    micro = int(
        (kw.get("loss_overrides") or {}).get(
            "num_microbatches", config.loss.get("num_microbatches", 1)
        )
    )
    probes: list[PlanResult] = []
    known = dict(known or {})
    kw = {**kw, "prompt_len": _config_prompt_len(config, kw.get("prompt_len"))}  # find it once

    def fits(b):
        if b in known:
            return bool(known[b].fits)
        r = plan_config(config, devices, batch_per_device=b, **kw)
        probes.append(r)
        return bool(r.fits)

    lo, hi = 0, micro  # invariant: lo fits (or is 0), hi is the next candidate
    while True:
        if hi > limit:
            return (lo or None), probes
        if not fits(hi):
            break
        lo, hi = hi, hi * 2
    while hi - lo > micro:  # bisection between a fitting lo and a failing hi
        mid = (lo + hi) // 2 // micro * micro
        if mid <= lo:
            break
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return (lo or None), probes


def _gb(x: float | None) -> str:
    if x is None or x < 0:
        return "-"
    if abs(x) >= 1e9:
        return f"{x / 1e9:.2f} GB"
    return f"{x / 1e6:.1f} MB"


def format_table(results: Sequence[PlanResult]) -> str:
    head = (
        "| program | target | mesh | batch (seq) | tokens | micro | prompt group | arguments | "
        "outputs | aliased | temporaries | total / device | device memory | fits | XLA TFLOPs | "
        "model TFLOPs |"
    )
    lines = [head, "|" + "---|" * 16]
    for r in results:
        mesh = "x".join(f"{k}={v}" for k, v in r.mesh.items())
        flops = "-" if r.flops is None else f"{r.flops / 1e12:.2f}"
        fits = {True: "yes", False: "no", None: "-"}[r.fits]
        if r.compile_error is not None:
            fits = "no (the compiler refused: out of memory)"
        lines.append(
            f"| {r.program} | {r.target} | {mesh} | {r.batch} | {r.prompt_len}+{r.completion_len} | "
            f"{r.num_microbatches} | {r.group_size if r.program == 'train step' else '-'} | "
            f"{_gb(r.argument_bytes)} | {_gb(r.output_bytes)} | "
            f"{_gb(r.alias_bytes)} | {_gb(r.temp_bytes)} | **{_gb(r.total_bytes)}** | "
            f"{_gb(r.device_memory_bytes)} | {fits} | {flops} | "
            + (f"{r.model_flops / 1e12:.2f} |" if r.model_flops else "- |")
        )
    return "\n".join(lines)


def _typed(flag: str, key: str, value: str, default: Any) -> Any:
    """``value`` as the type of the dataclass field ``key``'s ``default`` (bool / int / float, else
    the string); a value that is not of that type is refused naming the flag and key."""
    try:
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(value)
            return value.lower() in ("true", "1")
        if isinstance(default, (int, float)):
            return type(default)(value)
        return value
    except ValueError:
        raise SystemExit(f"{flag} {key}={value!r}: expected a {type(default).__name__}.") from None


def _split_item(flag: str, item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep:
        raise SystemExit(f"{flag} {item!r}: expected KEY=VALUE.")
    return key, value


def parse_loss_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["share_prompts=true", "num_microbatches=4"]`` -> typed ``LossConfig`` values; an unknown
    key or a value of the wrong type is refused with a message naming it."""
    from passk_jax import train as TR

    sampling = ("temperature", "top_k", "top_p")
    defaults = {f.name: f.default for f in dataclasses.fields(TR.LossConfig)}
    out: dict[str, Any] = {}
    for item in items:
        key, value = _split_item("--loss-override", item)
        if key not in defaults or key in sampling:
            known = sorted(set(defaults) - set(sampling))
            raise SystemExit(
                f"--loss-override {key!r}: not a loss option (known: {', '.join(known)}; the "
                "sampling settings come from the config's rl section)."
            )
        out[key] = _typed("--loss-override", key, value, defaults[key])
    return out


def _parse_override(items: Sequence[str]) -> dict[str, Any]:
    """``--model-override`` items -> Gemma2Config values (booleans typed; ``activation_batch_axes``
    a comma-separated tuple; the rest as given, checked by ``Gemma2Config`` itself)."""
    from passk_jax.models import gemma2

    defaults = {f.name: f.default for f in dataclasses.fields(gemma2.Gemma2Config)}
    out: dict[str, Any] = {}
    for item in items:
        key, value = _split_item("--model-override", item)
        if key == "activation_batch_axes":
            out[key] = tuple(a for a in value.split(",") if a) or None
        elif isinstance(defaults.get(key), bool):
            out[key] = _typed("--model-override", key, value, defaults[key])
        else:
            out[key] = value
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="passk-plan",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawTextHelpFormatter,
    )
    p.add_argument("--config", required=True, help="config file, optionally with :ARGS")
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--topology", help="TPU topology for AOT compilation, e.g. v5e:4x4 (needs libtpu)"
    )
    g.add_argument("--devices", help="local devices, e.g. cpu:8 (default: every CPU device)")
    p.add_argument(
        "--batch-per-device", type=int, help="sequences per device (default: the config's)"
    )
    p.add_argument(
        "--search", action="store_true", help="also find the largest per-device batch that fits"
    )
    p.add_argument(
        "--sampler",
        action="store_true",
        help="also plan the sampler's prefill and decode at the config's rollout shape",
    )
    p.add_argument(
        "--no-train-step", action="store_true", help="skip the train step (with --sampler)"
    )
    p.add_argument(
        "--sampler-rows-replicated",
        action="store_true",
        help="with --sampler: compile it without the mesh (rows replicated), for comparison",
    )
    p.add_argument(
        "--memory-gb", type=float, help="device memory to plan against (default: known per kind)"
    )
    p.add_argument(
        "--model-override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Gemma2Config field, e.g. remat=full or activation_batch_axes=data,fsdp",
    )
    p.add_argument(
        "--loss-override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config.loss entry, e.g. share_prompts=true or num_microbatches=4",
    )
    p.add_argument("--prompt-len", type=int, help="prompt tokens (default: config max_prompt_len)")
    p.add_argument(
        "--completion-len", type=int, help="completion tokens (default: rl.max_new_tokens)"
    )
    p.add_argument("--json", help="also write the results as JSON to this path")
    args = p.parse_args(argv)

    config = _load(args.config)
    devices, target = _devices(args.topology, args.devices)
    overrides = _parse_override(args.model_override)
    loss_overrides = parse_loss_overrides(args.loss_override)
    memory = args.memory_gb * 1e9 if args.memory_gb else None
    kw = {
        "target": target,
        "overrides": overrides,
        "memory_bytes": memory,
        "prompt_len": args.prompt_len,
        "completion_len": args.completion_len,
    }
    results = []
    known: dict[int, PlanResult] = {}
    if not args.no_train_step:
        results.append(
            plan_config(
                config,
                devices,
                batch_per_device=args.batch_per_device,
                loss_overrides=loss_overrides,
                **kw,
            )
        )
        known[results[-1].batch // results[-1].num_devices] = results[-1]
    if args.sampler:
        results += plan_config_sampler(
            config, devices, shard_rows=not args.sampler_rows_replicated, **kw
        )
    best = None
    if args.search:
        best, probes = largest_fitting_batch(
            config, devices, known=known, loss_overrides=loss_overrides, **kw
        )
        results += probes
    print(format_table(results))
    if args.search:
        print(
            f"\nlargest per-device batch that fits: {best if best else 'none (even the smallest does not fit)'}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"results": [r.as_dict() for r in results], "largest_batch_per_device": best},
                f,
                indent=1,
            )
    return 0


def _load(spec: str):
    """Loads ``NAME_OR_PATH[:args]`` as every command does (:func:`config_lib.load_config`)."""
    from passk_jax import config_lib

    return config_lib.load_config(spec)


if __name__ == "__main__":
    sys.exit(main())
