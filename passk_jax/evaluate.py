"""Evaluate a checkpoint: n samples per prompt of a task split -> unbiased pass@k and maxg@k with CIs.

Command line (``passk-eval``, or ``python -m passk_jax.evaluate``)::

    passk-eval --config passk_jax/configs/maze_tiny.py:quick --checkpoint runs/k4 \\
        --split eval --num_samples 16 --out runs/k4/eval

The config gives the task, tokenizer, model architecture and sampling settings (the flags override
them). ``--checkpoint`` is any of: an RL workdir (its newest checkpoint), one step directory of it
(``runs/k4/checkpoints/250``), a directory written by ``checkpoints.save_params`` (e.g. the demo's
warm start), an official Gemma-2 Flax checkpoint, or a Hugging Face directory (``config.json``).

Writes ``OUT/completions.jsonl`` (one line per sample: prompt, completion, reward) and
``OUT/eval_metrics.json``, and prints a table. For each k in 1, 2, 4, ..., n (plus ``--ks``):

* ``pass@k``: the unbiased estimate ``1 - C(n-c, k)/C(n, k)`` per prompt, a sample passing when its
  reward is >= ``--threshold`` (default 1), averaged over prompts;
* ``maxg@k``: the unbiased estimate of E[max of k rewards] per prompt (PKPO Eq. 12) on the raw
  rewards, averaged over prompts (equal to pass@k for 0/1 rewards);

each with its standard error over prompts and a 95% percentile-bootstrap interval (prompts resampled
with replacement, 2000 resamples, fixed seed). The interval covers the prompt-to-prompt and the
sampling variation of this one evaluation; it says nothing about training seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "Parts",
    "build_parts",
    "evaluate",
    "load_config",
    "load_params",
    "main",
    "run",
    "summarize",
]


# ----------------------------------------------------------------------------------------------------
# Config, task, tokenizer, model.


def load_config(spec: str) -> Any:
    """``"maze_tiny:ARG"`` / ``"path/to/config.py:ARG"`` -> ``get_config(ARG)`` (the ``--config``
    syntax; :func:`passk_jax.config_lib.load_config`)."""
    from passk_jax import config_lib

    return config_lib.load_config(spec)


@dataclasses.dataclass
class Parts:
    """What an evaluation needs from a config: the task, its tokenizer and the model architecture."""

    task: Any
    tokenizer: Any
    model_config: Any


def _to_dict(x: Any) -> dict[str, Any]:
    if x is None:
        return {}
    return x.to_dict() if hasattr(x, "to_dict") else dict(x)


def build_parts(config: Any) -> Parts:
    """Builds the task, tokenizer and ``Gemma2Config`` described by an experiment config."""
    from passk_jax.models import gemma2
    from passk_jax.tasks import build_task
    from passk_jax.tokenizers import CharTokenizer, SentencePieceTokenizer

    task = build_task(config.task)
    kind = config.get("tokenizer", "char")
    if kind == "char":
        if not task.alphabet:
            raise ValueError(f"task {task.name!r} has no alphabet; use a SentencePiece tokenizer.")
        tok = CharTokenizer(task.alphabet)
    elif kind == "sentencepiece":
        tok = SentencePieceTokenizer(os.path.expanduser(config.tokenizer_path))
    else:
        raise ValueError(f"unknown tokenizer {kind!r}; use 'char' or 'sentencepiece'.")
    m = config.model
    overrides = _to_dict(m.get("overrides"))
    if m.kind == "tiny":
        model_config = gemma2.Gemma2Config.tiny(vocab_size=tok.vocab_size, **overrides)
    else:
        ctor = getattr(gemma2.Gemma2Config, m.kind, None)
        if ctor is None:
            raise ValueError(f"unknown model kind {m.kind!r}")
        model_config = ctor(**overrides)
    return Parts(task, tok, model_config)


# ----------------------------------------------------------------------------------------------------
# Checkpoints.


def _is_step_dir(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "state"))


def _latest_step_dir(ckpt_root: str) -> str:
    steps = sorted(
        (
            int(d)
            for d in os.listdir(ckpt_root)
            if d.isdigit() and _is_step_dir(os.path.join(ckpt_root, d))
        ),
        reverse=True,
    )
    if not steps:
        raise FileNotFoundError(f"no finalised checkpoint under {ckpt_root}")
    return os.path.join(ckpt_root, str(steps[0]))


def load_params(path: str, model_config: Any) -> Any:
    """Model parameters from a checkpoint path (see the module docstring for the accepted kinds).

    Args:
      path: RL workdir, step directory, ``save_params`` directory, Flax release or HF directory.
      model_config: the architecture; parameter shapes are checked against it.

    Returns:
      The parameter tree (as saved: dtypes are not changed).
    """
    from passk_jax import checkpoints

    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} not found")
    if os.path.exists(os.path.join(path, "config.json")):
        _, params = checkpoints.load_hf_gemma2(path, param_dtype=model_config.param_dtype)
        checkpoints._check_shapes(params, model_config)
        return params
    if os.path.isdir(os.path.join(path, "checkpoints")):
        path = _latest_step_dir(os.path.join(path, "checkpoints"))
    if _is_step_dir(path):
        tree = checkpoints.restore_params(os.path.join(path, "state"))
        params = tree["params"]
    else:
        tree = checkpoints.restore_params(path)
        if any("/" in k for k in tree):  # official release layout: flat "transformer/..." keys
            return checkpoints.load_flax_gemma2(path, model_config)
        params = tree.get("params", tree) if "embedder" not in tree else tree
    checkpoints._check_shapes(params, model_config)
    return params


# ----------------------------------------------------------------------------------------------------
# Statistics.


def summarize(values_P: np.ndarray, *, resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Mean over prompts, its standard error and a 95% percentile-bootstrap interval.

    Args:
      values_P: one unbiased estimate per prompt, ``[P]``.
      resamples: bootstrap resamples of the prompts.
      seed: the bootstrap's seed (the interval is reproducible).

    Returns:
      ``{"mean", "se", "ci95": [lo, hi]}`` (se and interval are NaN for a single prompt).
    """
    v = np.asarray(values_P, np.float64)
    p = v.shape[0]
    mean = float(v.mean())
    if p < 2:
        return {"mean": mean, "se": float("nan"), "ci95": [float("nan"), float("nan")]}
    se = float(v.std(ddof=1) / np.sqrt(p))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, p, size=(resamples, p))
    boot = v[idx].mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"mean": mean, "se": se, "ci95": [float(lo), float(hi)]}


def _ks(n: int, extra: Sequence[int] = ()) -> list[int]:
    ks = {2**i for i in range(int(np.log2(n)) + 1)} | {n} | {int(k) for k in extra}
    bad = sorted(k for k in ks if not 1 <= k <= n)
    if bad:
        raise ValueError(f"ks {bad} outside [1, num_samples={n}]")
    return sorted(ks)


# ----------------------------------------------------------------------------------------------------
# Evaluation.


def _encode(tok: Any, prompts: Sequence[Any], max_len: int | None, chat_template=None):
    from passk_jax import rl

    return rl._encode_prompts(tok, prompts, max_len, chat_template)


def _score(task: Any, prompts: Sequence[Any], completions: Sequence[str]) -> np.ndarray:
    if hasattr(task, "score_batch"):
        return np.asarray(task.score_batch(prompts, completions), np.float64)
    return np.asarray([task.score(p, c) for p, c in zip(prompts, completions)], np.float64)


def evaluate(
    params: Any,
    parts: Parts,
    *,
    split: str = "eval",
    num_samples: int = 16,
    num_prompts: int | None = None,
    batch_prompts: int = 16,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    max_prompt_len: int | None = None,
    chat_template: str | None = None,
    ks: Sequence[int] = (),
    threshold: float = 1.0,
    seed: int = 0,
    out_dir: str | None = None,
) -> dict[str, Any]:
    """Samples ``num_samples`` completions per prompt of ``split``, scores them, estimates pass@k.

    Args:
      params: model parameters. parts: task / tokenizer / model config (:func:`build_parts`).
      split: the task split. num_samples: n per prompt. num_prompts: first prompts of the split
        (None = all). batch_prompts: prompts per sampler call.
      max_new_tokens / temperature / top_k / top_p: sampling settings.
      max_prompt_len: keep BOS and the last ``max_prompt_len - 1`` prompt tokens (None = all).
      chat_template: ``"gemma"`` wraps each prompt in Gemma's turn format (as in training).
      ks: extra k values (the table always has 1, 2, 4, ..., n).
      threshold: reward at or above which a sample counts as a pass for pass@k.
      seed: PRNG seed of the sampler (the same seed gives the same completions).
      out_dir: where ``completions.jsonl`` and ``eval_metrics.json`` go (None: nothing written).

    Returns:
      The metrics dict written to ``eval_metrics.json``.
    """
    import jax

    from passk_jax import estimators as E
    from passk_jax import sampler as SMP

    task, tok, model_config = parts.task, parts.tokenizer, parts.model_config
    prompts = task.prompts(split, num_prompts)
    if not prompts:
        raise ValueError(f"split {split!r} has no prompts")
    ks_all = _ks(num_samples, ks)
    key = jax.random.key(seed)
    rewards_rows: list[np.ndarray] = []
    records: list[dict[str, Any]] = []
    t0 = time.time()
    for start in range(0, len(prompts), batch_prompts):
        batch = prompts[start : start + batch_prompts]
        toks, mask = _encode(tok, batch, max_prompt_len, chat_template)
        out = SMP.sample(
            params,
            model_config,
            toks,
            mask,
            num_samples=num_samples,
            max_new_tokens=max_new_tokens,
            rng=jax.random.fold_in(key, start),
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            eos_id=tok.eos_id,
            pad_id=tok.pad_id,
        )
        tokens = np.asarray(out.tokens)
        gmask = np.asarray(out.mask)
        texts = [
            tok.decode([int(t) for t, m in zip(row, mrow) if m])
            for row, mrow in zip(
                tokens.reshape(-1, tokens.shape[-1]), gmask.reshape(-1, gmask.shape[-1])
            )
        ]
        reps = [p for p in batch for _ in range(num_samples)]
        rewards = _score(task, reps, texts).reshape(len(batch), num_samples)
        rewards_rows.append(rewards)
        for i, p in enumerate(batch):
            for g in range(num_samples):
                r = float(rewards[i, g])
                records.append(
                    {
                        "split": split,
                        "prompt_index": start + i,
                        "uid": p.uid,
                        "sample": g,
                        "prompt": p.text,
                        "completion": texts[i * num_samples + g],
                        "reward": r,
                        "passed": bool(r >= threshold),
                    }
                )
    rewards_PG = np.concatenate(rewards_rows)
    correct_P = (rewards_PG >= threshold).sum(-1)
    pass_k, maxg_k = {}, {}
    for k in ks_all:
        pass_k[str(k)] = summarize(np.asarray(E.pass_at_k(correct_P, num_samples, k)))
        maxg_k[str(k)] = summarize(np.asarray(E.maxg_at_k(rewards_PG.astype(np.float32), k)))
    metrics = {
        "split": split,
        "num_prompts": len(prompts),
        "num_samples": num_samples,
        "threshold": threshold,
        "seed": seed,
        "temperature": temperature,
        "max_new_tokens": max_new_tokens,
        "reward_mean": float(rewards_PG.mean()),
        "pass@k": pass_k,
        "maxg@k": maxg_k,
        "seconds": round(time.time() - t0, 2),
    }
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "completions.jsonl"), "w") as f:
            for rec in records:
                f.write(json.dumps(rec) + "\n")
        with open(os.path.join(out_dir, "eval_metrics.json"), "w") as f:
            json.dump(metrics, f, indent=1)
    return metrics


def format_table(metrics: dict[str, Any]) -> str:
    """A markdown table of pass@k and maxg@k (mean [95% CI])."""
    lines = [
        f"{metrics['split']}: {metrics['num_prompts']} prompts x {metrics['num_samples']} samples",
        "| k | pass@k | 95% CI | maxg@k | 95% CI |",
        "|---|---|---|---|---|",
    ]
    for k, p in metrics["pass@k"].items():
        m = metrics["maxg@k"][k]
        lines.append(
            f"| {k} | {p['mean']:.4f} | [{p['ci95'][0]:.4f}, {p['ci95'][1]:.4f}] | {m['mean']:.4f} | "
            f"[{m['ci95'][0]:.4f}, {m['ci95'][1]:.4f}] |"
        )
    return "\n".join(lines)


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Parses ``passk-eval`` arguments, evaluates, writes the files; returns the metrics."""
    parser = argparse.ArgumentParser(
        prog="passk-eval",
        description="Unbiased pass@k / maxg@k of a checkpoint on a task split, with 95% CIs.",
    )
    parser.add_argument("--config", required=True, help="experiment config FILE[:ARG]")
    parser.add_argument("--checkpoint", required=True, help="workdir, step dir, params or HF dir")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--split", default="eval")
    parser.add_argument(
        "--num_samples", type=int, default=None, help="default: config.eval.num_samples"
    )
    parser.add_argument("--num_prompts", type=int, default=None, help="default: the whole split")
    parser.add_argument("--batch_prompts", type=int, default=None)
    parser.add_argument("--max_new_tokens", type=int, default=None)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--ks", default="", help="extra k values, comma-separated")
    parser.add_argument("--threshold", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    config = load_config(args.config)
    parts = build_parts(config)
    params = load_params(args.checkpoint, parts.model_config)
    rl = config.get("rl", {}) or {}
    ev = config.get("eval", {}) or {}
    metrics = evaluate(
        params,
        parts,
        split=args.split,
        num_samples=args.num_samples or int(ev.get("num_samples", 16)),
        num_prompts=args.num_prompts,
        batch_prompts=args.batch_prompts or int(ev.get("batch_prompts", 16)),
        max_new_tokens=args.max_new_tokens or int(rl.get("max_new_tokens", 64)),
        temperature=float(rl.get("temperature", 1.0))
        if args.temperature is None
        else args.temperature,
        top_k=rl.get("top_k", None),
        top_p=rl.get("top_p", None),
        max_prompt_len=int(config.get("max_prompt_len", 0) or 0) or None,
        chat_template=config.get("chat_template", None),
        ks=[int(k) for k in args.ks.split(",") if k.strip()],
        threshold=args.threshold,
        seed=args.seed,
        out_dir=args.out,
    )
    metrics["checkpoint"] = os.path.abspath(args.checkpoint)
    with open(os.path.join(args.out, "eval_metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    print(format_table(metrics))
    print(f"completions: {os.path.join(args.out, 'completions.jsonl')}", file=sys.stderr)
    return metrics


def main(argv: list[str] | None = None) -> None:
    """``passk-eval``: see the module docstring."""
    run(argv)


if __name__ == "__main__":
    main()
