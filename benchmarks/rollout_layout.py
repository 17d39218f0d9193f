"""Rollout under the training mesh: what decoding costs with the train state's FSDP parameters, and
what resharding them once per RL step to a rollout layout costs instead.

On a mesh of (fake) devices, the same random parameters are put in the train state's layout
(``sharding.param_shardings``: embedding axis over ``fsdp``, heads / MLP / vocabulary over
``tensor``) and resharded with ``sampler.reshard_for_rollout`` to each of ``sampler.ROLLOUT_LAYOUTS``.
For each layout it reports:

* the reshard: wall time of the jitted identity into the layout (median over rounds) and the bytes
  each device receives (its parameter shard bytes in the layout minus what it already held);
* the decode loop's collectives: every all-gather / all-reduce / reduce-scatter / all-to-all /
  collective-permute inside the compiled decode ``while`` bodies (one iteration = one generated
  token), with the bytes of their results: the per-token collective traffic;
* ``sampler.sample`` wall time (prompts sharded over the batch axes), and whether the samples equal
  the training-layout samples.

The parameter counts and shapes are those of ``--config`` (``small`` by default: D=256, 4 layers,
V=1024). On fake CPU devices the devices share the same cores, so times show the bookkeeping
overhead, not a pod's interconnect; the collective counts and bytes are the compiler's and carry over.

Run::

    XLA_FLAGS=--xla_force_host_platform_device_count=8 .venv/bin/python benchmarks/rollout_layout.py
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections import Counter

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from train_step import _model_config  # noqa: E402

from passk_jax import (
    sampler,  # noqa: E402
    testing,  # noqa: E402
)
from passk_jax import sharding as S  # noqa: E402
from passk_jax.testing import interleaved_medians  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
_COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
_DTYPE_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "pred": 1, "s8": 1, "u8": 1}


def _shape_bytes(shape_str: str) -> int:
    """Bytes of an HLO result type such as ``f32[4,64]{1,0}`` or a tuple of them."""
    total = 0
    for dt, dims in re.findall(r"(\w+)\[([\d,]*)\]", shape_str):
        n = int(np.prod([int(d) for d in dims.split(",") if d])) if dims else 1
        total += n * _DTYPE_BYTES.get(dt, 4)
    return total


def loop_collectives(hlo: str) -> tuple[Counter, int]:
    """Collectives (by kind) and their result bytes inside the ``while`` bodies of an HLO module."""
    bodies = set(re.findall(r"\bwhile\(.*?body=%?([\w.\-]+)", hlo))
    comps: dict[str, list[str]] = {}
    name = None
    for line in hlo.splitlines():
        m = re.match(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$", line)
        if m:
            name = m.group(1)
            comps[name] = []
        elif name is not None:
            comps[name].append(line)
    # Include computations the bodies call (e.g. async collective wrappers), transitively.
    todo, seen = list(bodies), set()
    while todo:
        c = todo.pop()
        if c in seen or c not in comps:
            continue
        seen.add(c)
        for line in comps[c]:
            todo += re.findall(r"(?:calls|to_apply|body|condition)=%?([\w.\-]+)", line)
    kinds: Counter = Counter()
    nbytes = 0
    op_re = re.compile(r"\s(" + "|".join(_COLLECTIVES) + r")(?:-start)?\(")
    for c in seen:
        for line in comps[c]:
            m = op_re.search(line)
            if m and " = " in line[: m.start() + 1]:
                kinds[m.group(1)] += 1
                nbytes += _shape_bytes(line[line.index(" = ") + 3 : m.start()])
    return kinds, nbytes


def _held_bytes(tree) -> list[int]:
    """Bytes each device holds of ``tree`` (by device order of the first leaf's mesh)."""
    per: Counter = Counter()
    for x in jax.tree.leaves(tree):
        for s in x.addressable_shards:
            per[s.device.id] += s.data.size * s.data.dtype.itemsize
    return [per[d] for d in sorted(per)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="small", choices=("tiny", "small"))
    parser.add_argument("--mesh", default="1,4,2", help="data,fsdp,tensor")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(RESULTS, "rollout_layout.md"))
    args = parser.parse_args()

    sizes = [int(x) for x in args.mesh.split(",")]
    n = int(np.prod(sizes))
    if len(jax.devices()) < n:
        raise SystemExit(
            f"needs {n} devices; run with XLA_FLAGS=--xla_force_host_platform_device_count={n}"
        )
    mesh = S.make_mesh(dict(zip(("data", "fsdp", "tensor"), sizes, strict=True)), jax.devices()[:n])
    cfg = _model_config(args.config)
    params = testing.random_params(cfg, seed=0)
    train_params = jax.device_put(params, S.param_shardings(cfg, mesh))
    toks, mask = testing.random_prompts(
        args.prompts, min_len=4, max_len=args.prompt_len, vocab_size=cfg.vocab_size, seed=1
    )
    st = S.batch_sharding(mesh, 2)
    toks_d, mask_d = S.shard_host_array(toks, st), S.shard_host_array(mask, st)
    kw = dict(
        num_samples=args.samples,
        max_new_tokens=args.new_tokens,
        rng=jax.random.key(0),
        eos_id=-1,
        pad_id=0,
        decode_phases=1,
    )
    n_params = sum(x.size for x in jax.tree.leaves(params))
    held_train = _held_bytes(train_params)

    rows, ref_tokens = [], None
    for layout in sampler.ROLLOUT_LAYOUTS:
        shardings = sampler.rollout_shardings(cfg, mesh, layout)
        reshard = jax.jit(lambda p: p, out_shardings=shardings)
        holder = {}

        def do_reshard(reshard=reshard, holder=holder):
            holder["p"] = jax.block_until_ready(reshard(train_params))

        def do_sample(holder=holder):
            holder["out"] = jax.block_until_ready(
                sampler.sample(holder["p"], cfg, toks_d, mask_d, **kw)
            )

        do_reshard()
        t_reshard, t_sample = interleaved_medians([do_reshard, do_sample], args.repeats)
        rp = holder["p"]
        held = _held_bytes(rp)
        received = max(h - min(h, t) for h, t in zip(held, held_train, strict=True))
        # The decode loop as compiled for these inputs (same state shapes as sample() builds).
        state = sampler._prefill(
            rp,
            toks_d,
            mask_d,
            kw["rng"],
            config=cfg,
            num_samples=args.samples,
            max_new_tokens=args.new_tokens,
            pad_id=jax.numpy.int32(0),
        )
        hlo = (
            sampler._decode_jit.lower(
                rp,
                state,
                config=cfg,
                strategy=sampler.make_strategy(1.0, None, None),
                eos_id=jax.numpy.int32(-1),
                pad_id=jax.numpy.int32(0),
                phases=1,
            )
            .compile()
            .as_text()
        )
        kinds, loop_bytes = loop_collectives(hlo)
        tokens = np.asarray(holder["out"].tokens)
        if ref_tokens is None:
            ref_tokens = tokens
        rows.append(
            dict(
                layout=layout,
                reshard_ms=1e3 * t_reshard,
                received_mb=received / 1e6,
                held_mb=max(held) / 1e6,
                kinds=kinds,
                loop_mb=loop_bytes / 1e6,
                sample_s=t_sample,
                same=bool(np.array_equal(tokens, ref_tokens)),
            )
        )
        print(rows[-1], flush=True)

    dev = jax.devices()[0]
    lines = [
        "## Rollout under the training mesh (`benchmarks/rollout_layout.py`)",
        "",
        f"Mesh data x fsdp x tensor = {' x '.join(map(str, sizes))} ({n} x {dev.platform} devices, "
        f"jax {jax.__version__}); model `{args.config}` ({n_params:,} parameters, float32); "
        f"{args.prompts} prompts x {args.samples} samples x {args.new_tokens} new tokens, "
        f"prompts sharded over the batch axes; median of {args.repeats} interleaved rounds. "
        "Training layout = the train state's parameter shardings; the other layouts are reached "
        "from it with `sampler.reshard_for_rollout`.",
        "",
        "| rollout layout | reshard (ms) | received per device (MB) | parameters held per device (MB) "
        "| collectives per generated token (decode loop body) | their bytes per token (MB) "
        "| `sample` (s) | samples = training layout's |",
        "|---|---:|---:|---:|---|---:|---:|---|",
    ]
    for r in rows:
        coll = ", ".join(f"{v} {k}" for k, v in sorted(r["kinds"].items())) or "none"
        lines.append(
            f"| {r['layout']} | {r['reshard_ms']:.1f} | {r['received_mb']:.2f} | {r['held_mb']:.2f} "
            f"| {coll} | {r['loop_mb']:.2f} | {r['sample_s']:.3f} | {'yes' if r['same'] else 'NO'} |"
        )
    lines += [
        "",
        "Collective bytes are the sizes of the collectives' results in the compiled loop body, per "
        "device and per generated token. The training layout's 'reshard' is the jitted identity "
        "into the layout the parameters already have (a no-op).",
    ]
    table = "\n".join(lines)
    print(table)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(table + "\n")


if __name__ == "__main__":
    main()
