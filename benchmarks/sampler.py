"""Sampler throughput: ``passk_jax.sampler.sample`` vs transformers ``generate`` vs re-prefill, one run.

Workload (defaults): the tiny Gemma-2 config with random weights, P=8 prompts of 16 tokens, n=16
samples per prompt, exactly 64 new tokens each (no EOS for the JAX samplers; ``min_new_tokens`` for
transformers), temperature 1, no top-k / top-p. The same weights serve both frameworks: a random
``Gemma2ForCausalLM`` is saved with ``save_pretrained`` and loaded with ``load_hf_gemma2``.

Timing: one warm-up call each (JIT compilation excluded), then ``--runs`` independent measurements,
each the median of ``--repeats`` rounds that call the three contenders in turn (same background
load; ``block_until_ready`` for JAX). Prints a markdown table per run and writes them to
``benchmarks/results/sampler.md``.

Run::

    .venv/bin/python benchmarks/sampler.py            # tiny config, CPU, ~3 minutes
    .venv/bin/python benchmarks/sampler.py --repeats 7 --prompt-len 32
    .venv/bin/python benchmarks/sampler.py --vocab 32000 --runs 1 \
        --out benchmarks/results/sampler_vocab32000.md
"""

from __future__ import annotations

import argparse
import os
import tempfile

import jax
import numpy as np

from passk_jax import sampler
from passk_jax.checkpoints import load_hf_gemma2
from passk_jax.models.gemma2 import Gemma2Config
from passk_jax.testing import cpu_model, hf_gemma2, interleaved_medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=64, help="vocabulary of the tiny config")
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument(
        "--runs", type=int, default=3, help="independent interleaved measurements, each a table"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", default=os.path.join(os.path.dirname(__file__), "results", "sampler.md")
    )
    args = parser.parse_args()

    import torch

    cfg = Gemma2Config.tiny(vocab_size=args.vocab)
    with tempfile.TemporaryDirectory() as tmp:
        hf = hf_gemma2(cfg, args.seed, max_positions=1024).eval()
        hf.save_pretrained(tmp)
        cfg, params = load_hf_gemma2(tmp)
    p, n, t = args.prompts, args.samples, args.new_tokens
    rng = np.random.RandomState(args.seed)
    prompts = rng.randint(3, cfg.vocab_size, (p, args.prompt_len)).astype(np.int32)
    mask = np.ones_like(prompts, bool)
    key = jax.random.key(args.seed)
    common = dict(num_samples=n, max_new_tokens=t, rng=key, eos_id=-1, pad_id=0)

    def run_jax():
        out = sampler.sample(params, cfg, prompts, mask, **common)
        jax.block_until_ready(out)
        assert out.mask.all()

    def run_reprefill():
        out = sampler.sample_reprefill(params, cfg, prompts, mask, **common)
        jax.block_until_ready(out)

    input_ids = torch.tensor(prompts, dtype=torch.long)

    def run_hf():
        with torch.no_grad():
            out = hf.generate(
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                do_sample=True,
                num_return_sequences=n,
                max_new_tokens=t,
                min_new_tokens=t,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                pad_token_id=0,
            )
        assert out.shape == (p * n, args.prompt_len + t), out.shape

    total = p * n * t
    names = [
        "passk_jax `sample` (prefill once, broadcast cache)",
        "passk_jax `sample_reprefill` (prefill every copy)",
        f"transformers {__import__('transformers').__version__} `generate` (torch "
        f"{torch.__version__}, eager)",
    ]
    header = (
        f"Sampler throughput, tiny Gemma-2 (random weights, vocabulary {cfg.vocab_size}), P={p} "
        f"prompts x n={n} samples x {t} "
        f"new tokens, prompt length {args.prompt_len}; {cpu_model()}, "
        f"{os.cpu_count()} CPU cores, jax {jax.__version__} ({jax.default_backend()}); median of "
        f"{args.repeats} interleaved rounds after warm-up (each round runs all three)."
    )
    tables, ratios = [], []
    for _ in range(args.runs):
        secs = interleaved_medians([run_jax, run_reprefill, run_hf], args.repeats)
        hf_tps = total / secs[2]
        lines = [
            "| sampler | median s | tokens/s | vs transformers |",
            "|---|---:|---:|---:|",
        ]
        for name, sec in zip(names, secs):
            tps = total / sec
            lines.append(f"| {name} | {sec:.3f} | {tps:,.0f} | {tps / hf_tps:.2f}x |")
        ratios.append(secs[2] / secs[0])
        tables.append("\n".join(lines))
        print(tables[-1], flush=True)
    summary = " ".join(f"{r:.2f}x" for r in ratios)
    doc = [f"# Sampler benchmark (`benchmarks/sampler.py`), {args.runs} run(s) in one process", ""]
    doc += [header, "", f"`sample` / transformers, per run: {summary}", ""]
    for i, table in enumerate(tables, 1):
        doc += [f"## Run {i}", "", table, ""]
    print(f"sample / transformers per run: {summary}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(doc))


if __name__ == "__main__":
    main()
