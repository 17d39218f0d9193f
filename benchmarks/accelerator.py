"""Train step and sampler on one accelerator with random weights: tokens/s, MFU, peak memory.

Question: on a GPU (H100 / H200) or TPU host, what do the 2B train step and sampler achieve at the
largest batch that fits? Random weights (no checkpoint), bfloat16 compute, float32 parameters and
Adam state, full rematerialisation per block, the loss unembedding only completion positions. The
batch is doubled until the step no longer fits (an out-of-memory error), then the largest fitting
one is timed. MFU = model FLOPs (``passk_jax.flops``) / (time x the device's dense bf16 peak).

Run by ``benchmarks/gpu.sh`` on an accelerator machine (it writes ``benchmarks/results/gpu.md``);
``--model tiny`` is a CPU smoke test of the same code (tests/test_benchmarks_accelerator.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time

import jax
import numpy as np
import optax

from passk_jax import flops as FL
from passk_jax import sampler as SMP
from passk_jax import sharding as S
from passk_jax import train as TR
from passk_jax.models import gemma2


def _model(name: str) -> gemma2.Gemma2Config:
    levers = {"dtype": "bfloat16", "remat": "full", "activation_batch_axes": ("data", "fsdp")}
    if name == "tiny":
        return dataclasses.replace(gemma2.Gemma2Config.tiny(), remat="full")
    return getattr(gemma2.Gemma2Config, f"gemma2_{name}")(**levers)


def _peak_bytes(device) -> int | None:
    try:
        stats = device.memory_stats() or {}
    except Exception:
        return None
    return stats.get("peak_bytes_in_use")


def _is_oom(e: Exception) -> bool:
    text = str(e).lower()
    return "resource_exhausted" in text or "out of memory" in text or "oom" in text


def time_train_step(cfg, batch, prompt_len, completion_len, repeats):
    mesh = S.make_mesh((1, len(jax.devices()), 1))
    tx = optax.adamw(1e-6)
    loss_config = TR.LossConfig()
    state, shardings = TR.create_train_state(cfg, tx, mesh, seed=0)
    step = TR.jit_train_step(tx, cfg, loss_config, shardings, mesh)
    rng = np.random.default_rng(0)
    g = 1
    b = TR.make_batch(
        rng.integers(3, cfg.vocab_size, (batch, prompt_len)),
        np.ones((batch, prompt_len), bool),
        rng.integers(3, cfg.vocab_size, (batch, g, completion_len)),
        np.ones((batch, g, completion_len), bool),
        np.full((batch, g, completion_len), -3.0, np.float32),
        rng.normal(size=(batch, g)),
        mesh=mesh,
    )
    with jax.set_mesh(mesh):
        state, m = step(state, b)  # compile + first step
        jax.block_until_ready(m)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            state, m = step(state, b)
            jax.block_until_ready(m)
            times.append(time.perf_counter() - t0)
    return float(np.median(times)), float(m["loss"])


def time_sampler(cfg, params, prompts, prompt_len, samples, new_tokens, repeats):
    rng = np.random.default_rng(1)
    toks = rng.integers(3, cfg.vocab_size, (prompts, prompt_len)).astype(np.int32)
    mask = np.ones_like(toks, bool)
    kw = dict(num_samples=samples, max_new_tokens=new_tokens, eos_id=1, pad_id=0)
    out = SMP.sample(params, cfg, toks, mask, rng=jax.random.key(0), **kw)
    jax.block_until_ready(out.tokens)
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        out = SMP.sample(params, cfg, toks, mask, rng=jax.random.key(i + 1), **kw)
        jax.block_until_ready(out.tokens)
        times.append(time.perf_counter() - t0)
    generated = int(np.asarray(out.mask).sum())
    return float(np.median(times)), generated


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="2b", choices=["tiny", "2b", "9b"])
    p.add_argument("--prompt-len", type=int, default=512)
    p.add_argument("--completion-len", type=int, default=512)
    p.add_argument("--max-batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sampler-prompts", type=int, default=16)
    p.add_argument("--sampler-samples", type=int, default=16)
    p.add_argument("--out", default="benchmarks/results/gpu.md")
    args = p.parse_args(argv)
    cfg = _model(args.model)
    dev = jax.devices()[0]
    rows = []
    best = None
    batch = len(jax.devices())
    while batch <= args.max_batch:
        try:
            t, loss = time_train_step(
                cfg, batch, args.prompt_len, args.completion_len, args.repeats
            )
        except Exception as e:  # only out-of-memory ends the search; anything else is a bug
            if not _is_oom(e):
                raise
            rows.append((batch, None, None))
            break
        flops = FL.train_step_flops(
            cfg, batch, args.prompt_len, args.completion_len, unembed_all=False
        )
        util = FL.mfu(flops, t, FL.peak_flops(dev), len(jax.devices()))
        tok_s = batch * (args.prompt_len + args.completion_len) / t
        rows.append((batch, t, (tok_s, util, loss)))
        best = rows[-1]
        batch *= 2
    lines = [
        f"# Accelerator benchmark ({args.model}, random weights)",
        "",
        f"Device: {dev.device_kind} x {len(jax.devices())} ({dev.platform}); jax {jax.__version__}; "
        f"Python {platform.python_version()}. Command: `python benchmarks/accelerator.py "
        + " ".join(argv if argv is not None else sys.argv[1:])
        + "`.",
        "",
        f"Train step: {args.prompt_len} + {args.completion_len} tokens per sequence, bf16 compute, "
        "full remat, AdamW, median of "
        f"{args.repeats} steps after the compiling one.",
        "",
        "| sequences | s / step | tokens / s | MFU | first loss |",
        "|---|---|---|---|---|",
    ]
    for b, t, extra in rows:
        if t is None:
            lines.append(f"| {b} | out of memory | - | - | - |")
        else:
            tok_s, util, loss = extra
            mfu = "-" if util is None else f"{100 * util:.1f}%"
            lines.append(f"| {b} | {t:.3f} | {tok_s:,.0f} | {mfu} | {loss:.4f} |")
    peak = _peak_bytes(dev)
    lines += ["", f"Peak memory after the train-step runs: {peak / 1e9:.2f} GB" if peak else ""]
    if best is not None:
        params = gemma2.init_params(cfg, jax.random.key(0))
        st, generated = time_sampler(
            cfg,
            params,
            args.sampler_prompts,
            args.prompt_len,
            args.sampler_samples,
            args.completion_len,
            args.repeats,
        )
        lines += [
            "",
            f"Sampler: {args.sampler_prompts} prompts x {args.sampler_samples} samples x "
            f"{args.completion_len} new tokens ({args.prompt_len}-token prompts): {st:.3f} s, "
            f"{generated / st:,.0f} generated tokens / s (median of {args.repeats}).",
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    with open(args.out, "w") as f:
        f.write(text)
    with open(args.out.replace(".md", ".json"), "w") as f:
        json.dump({"rows": rows}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
