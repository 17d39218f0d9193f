"""Policy-gradient step throughput: the jitted ``train_step`` vs the same model in torch, one run.

Workload (defaults: ``--config tiny small``, one after the other): ``Gemma2Config.tiny(vocab_size=256)``
(128k parameters) and a "small" CPU-sized config (D=256, 4 layers, V=1024) with random weights, a
batch of B = P x G = 8 x 16 = 128 sequences of Tp = 32 prompt + T = 64 completion tokens, REINFORCE
loss with per-sequence weights (``seq_mean_token_sum``: sum of weighted completion log-probs over
tokens, mean over sequences), global-norm clipping at 1 and AdamW (no weight decay), float32.

* **passk_jax, per row**: ``train.jit_train_step`` (state donated, 1-device mesh on CPU, all local
  devices on ``fsdp`` otherwise) on a batch placed by ``train.make_batch``, every sequence running
  its own prompt: the same work as the torch step.
* **passk_jax, per group**: the same with ``group_size=G`` (what the RL learner step runs): each
  prompt runs once per group of G samples and its keys / values are shared by the group's
  completions (same loss and gradients up to float32 rounding, ``tests/test_train.py``); it does
  less work than the torch step, which is why it is a row of its own.
* **torch**: ``transformers.Gemma2ForCausalLM`` built from the equivalent HF config (eager attention,
  float32, the *same* weights: saved with ``save_pretrained`` and loaded into ours with
  ``checkpoints.load_hf_gemma2``), the same loss, ``backward``, ``clip_grad_norm_`` and
  ``torch.optim.AdamW``. The first-step losses of both are printed as a sanity check (same weights,
  same batch: they agree to float32 rounding).

Tokens/s counts every position the step processes: ``B * (Tp + T)`` per step.

The second table is the estimator / advantage cost as a fraction of a whole RL step (goal < 1%): the
jitted ``estimators.pkpo_rewards(rewards, k, "sloo_minus_one")`` and ``advantages.passk_advantages`` on
the step's ``[P, G]`` rewards against sampling (``sampler.sample``, P prompts x G samples x T new
tokens) plus the train step.

``--config 2b`` (for a GPU / TPU host): the Gemma-2 2B architecture with random weights, bf16 compute
(float32 parameters and optimizer state), parameters and batch sharded over a mesh with every local
device on ``fsdp``; no torch column. It reports tokens/s and model-FLOPs utilisation
``MFU = 6 * params * tokens/s / (num_devices * peak FLOP/s)`` (``--peak-tflops`` per device, default
989 = H100 SXM dense bf16; the 6N rule ignores attention FLOPs, so MFU is slightly understated).
Use ``--microbatches`` to bound activation memory (the 256k-vocabulary logits dominate). The two JAX
steps (per row, per group) are timed one after the other there, each with its own train state
freed before the next is built, not interleaved.

The CPU table also gives model-FLOPs utilisation (``flops.train_step_flops`` with only the completion
positions unembedded, the same figure for both rows, over a nominal peak derived from
``/proc/cpuinfo``: cores x 2 FMA units x SIMD lanes x 2 x clock) and the process's minor page faults
per step. ``--allocators system hugetlb tcmalloc`` runs the whole benchmark once per host allocator,
each in its own child process (``hugetlb``: ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``, glibc >= 2.35;
``tcmalloc``: ``LD_PRELOAD=libtcmalloc_minimal.so.4``, e.g. Debian's ``libtcmalloc-minimal4``;
``glibc_reuse``: ``GLIBC_TUNABLES=passk_jax.hostmem.TUNABLES``, what ``passk-train`` applies on CPU
hosts; an allocator that is not available is skipped and named), and prints a summary table of all of them.
XLA:CPU allocates a step's temporaries afresh on every call; with glibc's defaults the large ones are
mmap'd and page-faulted in again each step, which the fault column makes visible.

Timing: one warm-up call each (compilation excluded), then ``--repeats`` rounds that time the JAX step
and the torch step one after the other (``block_until_ready`` for JAX), so both see the same background
load; the medians are reported. Prints markdown tables and writes them to ``benchmarks/results/train_step.md``
(``train_step_2b.md`` for ``--config 2b``).

Run::

    .venv/bin/python benchmarks/train_step.py                 # tiny + small, CPU, ~3-5 minutes
    .venv/bin/python benchmarks/train_step.py --config tiny   # tiny only, ~1 minute
    .venv/bin/python benchmarks/train_step.py --no-sampler --allocators system hugetlb tcmalloc
    python benchmarks/train_step.py --config 2b --prompts 16 --samples 16 --prompt-len 256 \
        --completion-len 512 --microbatches 16 --peak-tflops 989      # one H100
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from passk_jax import advantages as A
from passk_jax import estimators as E
from passk_jax import flops as FL
from passk_jax import hostmem, sampler
from passk_jax import sharding as S
from passk_jax import train as TR
from passk_jax.checkpoints import load_hf_gemma2
from passk_jax.models.gemma2 import Gemma2Config
from passk_jax.testing import cpu_model, hf_gemma2, interleaved_medians

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


# Host allocators the benchmark can compare (``--allocators``): name -> environment of the child run.
# XLA:CPU allocates each step's temporaries afresh; under glibc's defaults the large ones are
# mmap'd and page-faulted in again on every step (see the minor-faults column).
ALLOCATORS = {
    "system": {},
    "hugetlb": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},
    "tcmalloc": {"LD_PRELOAD": "libtcmalloc_minimal.so.4"},
    # glibc kept from returning freed memory (one arena, no mmap'd chunks, no trimming): the
    # tunables passk-train / make demo apply on CPU hosts (passk_jax.hostmem).
    "glibc_reuse": {"GLIBC_TUNABLES": hostmem.TUNABLES},
}


def _minor_faults() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _counting_faults(fn, counts: list[int]):
    """``fn`` wrapped to append the process's minor page faults during each call to ``counts``."""

    def wrapped():
        f0 = _minor_faults()
        fn()
        counts.append(_minor_faults() - f0)

    return wrapped


def _cpu_peak_flops() -> tuple[float, str] | None:
    """Nominal float32 peak of this host's CPU cores and how it was derived, from /proc/cpuinfo.

    cores x 2 FMA units x SIMD lanes (16 with AVX-512, 8 with AVX2, 4 otherwise) x 2 FLOPs x the
    reported clock: a nominal figure (the clock is the one /proc/cpuinfo shows now, two FMA units
    are assumed), stated beside the MFU it is used for.
    """
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return None
    flags = next(
        (ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []
    )
    mhz = [float(ln.split(":", 1)[1]) for ln in info.splitlines() if ln.startswith("cpu MHz")]
    if not mhz:
        return None
    lanes = 16 if "avx512f" in flags else (8 if "avx2" in flags and "fma" in flags else 4)
    cores = os.cpu_count() or 1
    ghz = sum(mhz) / len(mhz) / 1e3
    peak = cores * 2 * lanes * 2 * ghz * 1e9
    how = f"{cores} cores x 2 FMA units x {lanes} float32 lanes x 2 FLOPs x {ghz:.2f} GHz"
    return peak, how


def _median_time(fn, repeats: int, warmup: int = 1) -> float:
    return interleaved_medians([fn], repeats, warmup)[0]


def _pct(frac: float) -> str:
    """A percentage with two significant digits (small fractions stay visible)."""
    return f"{100 * frac:.2g}%"


def _model_config(name: str) -> Gemma2Config:
    if name == "tiny":
        return Gemma2Config.tiny(vocab_size=256)
    if name == "small":
        return Gemma2Config.tiny(
            vocab_size=1024,
            num_layers=4,
            embed_dim=256,
            hidden_dim=1024,
            num_heads=4,
            num_kv_heads=2,
            head_dim=64,
            query_pre_attn_scalar=64.0,
            sliding_window=32,
        )
    if name == "2b":
        return Gemma2Config.gemma2_2b(dtype="bfloat16")
    raise ValueError(f"unknown --config {name!r}")


def _host_batch(args, cfg: Gemma2Config):
    """A [P, G, ...] rollout-shaped batch: left-padded prompts, completions with a ragged mask."""
    p, g, tp, t = args.prompts, args.samples, args.prompt_len, args.completion_len
    rng = np.random.RandomState(args.seed)
    prompt = rng.randint(3, cfg.vocab_size, (p, tp)).astype(np.int32)
    pmask = np.ones((p, tp), bool)
    tokens = rng.randint(3, cfg.vocab_size, (p, g, t)).astype(np.int32)
    mask = np.ones((p, g, t), bool)  # every position counts: the cost does not depend on the mask
    old_logp = np.zeros((p, g, t), np.float32)
    rewards = (rng.rand(p, g) < 0.3).astype(np.float32)
    weights = np.asarray(E.pkpo_rewards(rewards, 4, "sloo_minus_one"))
    return prompt, pmask, tokens, mask, old_logp, rewards, weights


def _torch_step_fn(hf, prompt, tokens, mask, weights, g: int, lr: float):
    """A closure doing one torch step (forward, the same loss, backward, clip, AdamW)."""
    import torch

    opt = torch.optim.AdamW(hf.parameters(), lr=lr, betas=(0.9, 0.999), weight_decay=0.0)
    p, tp = prompt.shape
    t = tokens.shape[-1]
    seq = torch.tensor(
        np.concatenate([np.repeat(prompt, g, axis=0), tokens.reshape(p * g, t)], axis=1),
        dtype=torch.long,
    )
    attn = torch.ones_like(seq)
    tgt = torch.tensor(tokens.reshape(p * g, t), dtype=torch.long)
    m = torch.tensor(mask.reshape(p * g, t), dtype=torch.float32)
    w = torch.tensor(weights.reshape(p * g), dtype=torch.float32)
    losses = []

    def step():
        opt.zero_grad(set_to_none=True)
        logits = hf(input_ids=seq, attention_mask=attn).logits[:, tp - 1 : tp + t - 1].float()
        logp = torch.log_softmax(logits, dim=-1).gather(-1, tgt[..., None])[..., 0]
        loss = -(w * (logp * m).sum(-1)).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))

    return step, losses


def _machine_line(args, cfg, n_params: int) -> str:
    try:
        import torch

        torch_v = f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    except ImportError:
        torch_v = "no torch"
    dev = jax.devices()[0]
    return (
        f"Machine: {cpu_model()} ({platform.machine()}), {os.cpu_count()} CPU cores "
        f"(1-minute load average {os.getloadavg()[0]:.1f} at the end), "
        f"jax {jax.__version__} ({jax.default_backend()}: {len(jax.devices())} x "
        f"{getattr(dev, 'device_kind', dev.platform)}), {torch_v}. Model `{args.config}`: "
        f"{n_params:,} parameters (D={cfg.embed_dim}, L={cfg.num_layers}, V={cfg.vocab_size}, "
        f"compute {cfg.dtype}). Batch P={args.prompts} x G={args.samples} sequences of "
        f"Tp={args.prompt_len} + T={args.completion_len} tokens. Median of {args.repeats} "
        "interleaved rounds (JAX per row, JAX per group, torch) after warm-up."
    )


def _allocator_available(name: str) -> bool:
    if name == "tcmalloc":
        import ctypes

        try:
            ctypes.CDLL(ALLOCATORS[name]["LD_PRELOAD"])
        except OSError:
            return False
    if name == "hugetlb" or name.startswith("glibc_"):  # glibc >= 2.35 has the tunables
        ver = platform.libc_ver()
        if ver[0] != "glibc" or tuple(int(x) for x in ver[1].split(".")[:2]) < (2, 35):
            return False
    return True


def _compare_allocators(args, argv: list[str], out_path: str) -> None:
    """Runs the whole benchmark once per allocator, each in a child process; one summary table."""
    records, sections, skipped = [], [], []
    for name in args.allocators:
        if name not in ALLOCATORS:
            raise SystemExit(f"--allocators: unknown {name!r}; choose from {sorted(ALLOCATORS)}")
        if not _allocator_available(name):
            skipped.append(name)
            continue
        env = {**os.environ, **ALLOCATORS[name]}
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, os.path.abspath(__file__), *argv]
            cmd += ["--out", os.path.join(tmp, "t.md"), "--json-out", os.path.join(tmp, "t.json")]
            cmd += ["--allocator-name", name]
            print(
                f"=== allocator {name}: {' '.join(f'{k}={v}' for k, v in ALLOCATORS[name].items())}"
            )
            subprocess.run(cmd, env=env, check=True)
            with open(os.path.join(tmp, "t.json")) as f:
                records += json.load(f)
            with open(os.path.join(tmp, "t.md")) as f:
                sections.append(f"# Host allocator: {name}\n\n" + f.read().strip())
    lines = [
        "## Summary: JAX train step vs eager torch per host allocator",
        "",
        f"Host: {cpu_model()}, {os.cpu_count()} CPU cores. "
        "Each row is its own child process; within it the JAX and torch steps are timed in "
        "interleaved rounds (same process, same allocator, same load). Allocators: "
        + "; ".join(
            f"`{n}` = " + (" ".join(f"`{k}={v}`" for k, v in e.items()) or "glibc defaults")
            for n, e in ALLOCATORS.items()
        )
        + ".",
        "",
        "JAX per row: a prompt pass per sequence (the same work as torch); JAX per group: "
        "one prompt pass per group of G samples (`group_size=G`, the RL learner step's path).",
        "",
        "| config | allocator | JAX per row s / step | JAX per group s / step | torch s / step "
        "| per row vs torch | per group vs torch | JAX per-row MFU "
        "| JAX minor faults / step | torch minor faults / step |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in (r for r in records if "jax_s" in r):
        ts, tg = r.get("torch_s"), r.get("jax_shared_s")
        mfu = "n/a" if r.get("mfu_jax") is None else f"{100 * r['mfu_jax']:.1f}%"
        lines.append(
            f"| {r['config']} | {r['allocator']} | {r['jax_s']:.3f} | {tg:.3f} | "
            + (f"{ts:.3f} | {ts / r['jax_s']:.2f}x | {ts / tg:.2f}x" if ts else "n/a | n/a | n/a")
            + f" | {mfu} | {r['jax_faults'] or 0:,.0f} | "
            + (f"{r['torch_faults']:,.0f} |" if r.get("torch_faults") is not None else "n/a |")
        )
    if skipped:
        lines += ["", f"Skipped (not available on this host): {', '.join(skipped)}."]
    table = "\n".join(lines) + "\n\n" + "\n\n".join(sections)
    print(table)
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "w") as f:
        f.write(table + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        nargs="+",
        default=["tiny", "small"],
        choices=("tiny", "small", "2b"),
        help="one or more model configs, benchmarked one after the other",
    )
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--completion-len", type=int, default=64)
    parser.add_argument("--microbatches", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--k", type=int, default=4, help="k of the estimator / advantage timing")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="per device, bf16 dense")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--no-sampler", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    parser.add_argument(
        "--allocators",
        nargs="+",
        default=None,
        help=f"run the benchmark once per host allocator (child processes) from {sorted(ALLOCATORS)} "
        "and print a summary table",
    )
    parser.add_argument("--json-out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--allocator-name", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    big = "2b" in args.config
    out_path = args.out or os.path.join(RESULTS, "train_step_2b.md" if big else "train_step.md")
    if args.allocators:
        argv, skip = [], False
        for a in sys.argv[1:]:  # the child gets every option but --allocators / --out
            if skip and not a.startswith("--"):
                continue
            skip = a in ("--allocators", "--out") or a.startswith(("--allocators=", "--out="))
            if not skip:
                argv.append(a)
        _compare_allocators(args, argv, out_path)
        return
    if args.allocator_name is None:
        args.allocator_name = (
            " ".join(
                f"{k}={os.environ[k]}" for k in ("LD_PRELOAD", "GLIBC_TUNABLES") if k in os.environ
            )
            or "glibc defaults"
        )
    sections, records = [], []
    for name in args.config:
        records.append({})
        sections.append(_bench(argparse.Namespace(**{**vars(args), "config": name}), records[-1]))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(records, f)
    table = "\n\n".join(sections)
    if jax.default_backend() == "cpu":
        table += (
            "\n\nNo GPU / TPU was available when this file was written: the `--config 2b` numbers "
            "(tokens/s and MFU on an accelerator) are still to be measured."
        )
    print(table)
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "w") as f:
        f.write(table + "\n")


def _bench(args, record: dict) -> str:
    """Benchmarks one model config; returns its markdown section (and fills ``record``)."""
    big = args.config == "2b"
    cfg = _model_config(args.config)
    hf = None
    params = None
    if not big and not args.no_torch:
        import torch

        torch.set_num_threads(max(1, os.cpu_count() or 1))
        with tempfile.TemporaryDirectory() as tmp:
            hf = hf_gemma2(cfg, args.seed).train()
            hf.save_pretrained(tmp)
            loaded_cfg, params = load_hf_gemma2(tmp)
        if loaded_cfg != cfg:
            print(f"note: the HF round trip changed the config to {loaded_cfg}")
        cfg = loaded_cfg

    # ---- passk_jax step ------------------------------------------------------------------------
    mesh = S.make_mesh({"data": 1, "fsdp": -1, "tensor": 1})
    lr = 1e-4
    tx = TR.make_optimizer(lr, max_grad_norm=1.0)
    loss_cfg = TR.LossConfig(
        policy_loss="reinforce",
        aggregation="seq_mean_token_sum",
        num_microbatches=args.microbatches,
    )
    host_params = None if params is None else jax.device_get(params)
    prompt, pmask, tokens, mask, old_logp, rewards, weights = _host_batch(args, cfg)
    batch = TR.make_batch(prompt, pmask, tokens, mask, old_logp, weights, mesh=mesh)
    b = args.prompts * args.samples
    step_tokens = b * (args.prompt_len + args.completion_len)

    # Two JAX steps on the same weights and batch: every row runs its own prompt (group_size=1),
    # and each prompt runs once per group of G samples (group_size=G, what the RL learner step
    # does), its keys / values shared by the group's completions.
    jax_losses = []

    def make_run(group):
        state, shardings = TR.create_train_state(cfg, tx, mesh, args.seed, params=host_params)
        step_fn = TR.jit_train_step(tx, cfg, loss_cfg, shardings, mesh, group_size=group)
        holder, losses_g = {"state": state}, []

        def run_jax():
            holder["state"], m = step_fn(holder["state"], batch)
            jax.block_until_ready(holder["state"])
            losses_g.append(float(m["loss"]))

        jax_losses.append(losses_g)
        return holder, run_jax

    faults_jax: list[int] = []
    faults_shared: list[int] = []
    faults_torch: list[int] = []
    if big:
        # One train state at a time (two 2B states with Adam do not fit every accelerator):
        # the two steps are timed one after the other, not interleaved.
        times = []
        for group, faults in ((1, faults_jax), (args.samples, faults_shared)):
            holder, run = make_run(group)
            times.append(_median_time(_counting_faults(run, faults), args.repeats))
            if group == 1:
                holder.clear()
        t_jax, t_shared = times
    else:
        holder, run_rows = make_run(1)
        _, run_shared = make_run(args.samples)
        fns = [_counting_faults(run_rows, faults_jax), _counting_faults(run_shared, faults_shared)]
        if hf is None:
            t_jax, t_shared = interleaved_medians(fns, args.repeats)
        else:
            import torch
            import transformers

            torch_step, torch_losses = _torch_step_fn(
                hf, prompt, tokens, mask, weights, args.samples, lr
            )
            # Interleaved rounds: all steps see the same background load.
            t_jax, t_shared, t_torch = interleaved_medians(
                [*fns, _counting_faults(torch_step, faults_torch)], args.repeats
            )
    n_params = sum(int(x.size) for x in jax.tree.leaves(holder["state"].params))
    rows = [
        (
            f"passk_jax `jit_train_step`, a prompt pass per row ({cfg.dtype} compute)",
            t_jax,
            faults_jax,
        ),
        (
            f"passk_jax `jit_train_step(group_size={args.samples})`, one prompt pass per group "
            "(the RL learner step)",
            t_shared,
            faults_shared,
        ),
    ]

    if hf is not None:
        rows.append(
            (
                f"transformers {transformers.__version__} `Gemma2ForCausalLM` + "
                f"`torch.optim.AdamW` (torch {torch.__version__}, eager, float32)",
                t_torch,
                faults_torch,
            )
        )
        print(
            f"first-step loss: passk_jax {jax_losses[0][0]:.6f} / {jax_losses[1][0]:.6f} "
            f"(per row / per group), torch {torch_losses[0]:.6f} (same weights and batch)"
        )

    lines = [
        f"## Train step, `--config {args.config}`",
        "",
        _machine_line(args, cfg, n_params),
        "",
    ]
    if big:
        ndev = len(jax.devices())
        lines += [
            "| implementation | median s / step | tokens/s | MFU |",
            "|---|---:|---:|---:|",
        ]
        for name, sec, _ in rows:
            tps = step_tokens / sec
            mfu = 6 * n_params * tps / (ndev * args.peak_tflops * 1e12)
            lines.append(f"| {name} | {sec:.3f} | {tps:,.0f} | {100 * mfu:.1f}% |")
        lines += [
            "",
            f"MFU = 6 x {n_params:,} params x tokens/s / ({ndev} devices x "
            f"{args.peak_tflops:g} TFLOP/s peak); attention FLOPs not counted.",
        ]
    else:
        ref = step_tokens / rows[-1][1]
        # Model FLOPs of the work both implementations must do (only the completion positions are
        # unembedded: the logits the loss reads); the same figure for both rows.
        step_flops = FL.train_step_flops(
            cfg, b, args.prompt_len, args.completion_len, unembed_all=False
        )
        peak = _cpu_peak_flops() if jax.default_backend() == "cpu" else None
        lines += [
            "| implementation | median s / step | tokens/s | MFU | minor page faults / step "
            "| vs torch |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, sec, faults in rows:
            tps = step_tokens / sec
            mfu = "n/a" if peak is None else f"{100 * step_flops / (sec * peak[0]):.1f}%"
            flt = f"{statistics.median(faults):,.0f}" if faults else "n/a"
            lines.append(f"| {name} | {sec:.3f} | {tps:,.0f} | {mfu} | {flt} | {tps / ref:.2f}x |")
        lines += [
            "",
            f"MFU = {step_flops / 1e9:.1f} GFLOP of model matmuls per step (`flops.train_step_flops`, "
            "completion positions unembedded) / (time x nominal peak"
            + (f" {peak[0] / 1e9:.0f} GFLOP/s = {peak[1]})." if peak else ", unknown here).")
            + f" Host allocator: {args.allocator_name}.",
        ]
        record.update(
            config=args.config,
            allocator=args.allocator_name,
            jax_s=t_jax,
            jax_shared_s=t_shared,
            torch_s=rows[-1][1] if hf is not None else None,
            jax_faults=statistics.median(faults_jax) if faults_jax else None,
            torch_faults=statistics.median(faults_torch) if faults_torch else None,
            mfu_jax=None if peak is None else step_flops / (t_jax * peak[0]),
        )
        if hf is not None:
            lines += [
                "",
                "First-step loss (same weights and batch): passk_jax "
                f"{jax_losses[0][0]:.6f} (per row) / {jax_losses[1][0]:.6f} (per group), "
                f"torch {torch_losses[0]:.6f}.",
            ]

    # ---- estimator / advantage cost vs the whole RL step ------------------------------------------
    rewards_j = jnp.asarray(rewards)
    k = args.k
    pkpo = jax.jit(functools.partial(E.pkpo_rewards, estimator="sloo_minus_one"))
    passk = jax.jit(A.passk_advantages)
    reps = max(50, 20 * args.repeats)

    def run_pkpo():
        jax.block_until_ready(pkpo(rewards_j, k))

    def run_passk():
        jax.block_until_ready(passk(rewards_j, k))

    t_pkpo = _median_time(run_pkpo, reps, warmup=3)
    t_passk = _median_time(run_passk, reps, warmup=3)
    t_sample = None
    if not args.no_sampler:
        key = jax.random.key(args.seed)
        params_now = holder["state"].params

        def run_sample():
            out = sampler.sample(
                params_now,
                cfg,
                prompt,
                pmask,
                num_samples=args.samples,
                max_new_tokens=args.completion_len,
                rng=key,
                eos_id=-1,
                pad_id=0,
            )
            jax.block_until_ready(out)

        t_sample = _median_time(run_sample, max(3, args.repeats))
    whole = t_shared + (t_sample or 0.0)
    what = "sample + train step" if t_sample is not None else "train step"
    lines += [
        "",
        f"## Estimator / advantage cost vs one RL step (`--config {args.config}`)",
        "",
        f"Rewards [P={args.prompts}, G={args.samples}], k={k}; each kernel jitted, median of {reps} "
        f"calls (dispatch included). Whole step = {what}"
        + (
            f" (`sampler.sample`: {args.prompts} x {args.samples} x {args.completion_len} new "
            "tokens, prefill once)."
            if t_sample is not None
            else "."
        ),
        "",
        "| part | median ms | fraction of the RL step |",
        "|---|---:|---:|",
    ]
    if t_sample is not None:
        lines.append(f"| `sampler.sample` | {1e3 * t_sample:.2f} | {t_sample / whole:.1%} |")
    lines += [
        f"| `jit_train_step(group_size={args.samples})` | {1e3 * t_shared:.2f} "
        f"| {t_shared / whole:.1%} |",
        f"| `pkpo_rewards(..., 'sloo_minus_one')` | {1e3 * t_pkpo:.3f} | {_pct(t_pkpo / whole)} |",
        f"| `passk_advantages` | {1e3 * t_passk:.3f} | {_pct(t_passk / whole)} |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
