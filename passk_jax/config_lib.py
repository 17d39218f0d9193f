"""Building blocks for experiment configs (``experiments/configs/*.py``).

A config file's ``get_config(arg)`` receives the text after ``:`` in ``--config FILE:ARG``. These
helpers parse it (``parse_args``), turn ``mesh=DxFxT`` into mesh sizes (``parse_mesh``) and build the
RL sections every config shares (``rl_sections``: sampling, k schedule, loss, optimizer, eval,
checkpointing), so a config states only what differs: the task, the model and a few numbers.
"""

from __future__ import annotations

from typing import Any

import ml_collections


def parse_args(arg: str | None) -> dict[str, Any]:
    """``"k=4,anneal,lr=1e-6"`` -> ``{"k": "4", "anneal": True, "lr": "1e-6"}``."""
    out: dict[str, Any] = {}
    for item in filter(None, (a.strip() for a in (arg or "").split(","))):
        key, _, value = item.partition("=")
        out[key] = value if value else True
    return out


def parse_mesh(spec: str) -> dict[str, int]:
    """``"2x-1x1"`` -> ``{"data": 2, "fsdp": -1, "tensor": 1}`` (-1: the remaining devices)."""
    try:
        sizes = [int(s) for s in str(spec).split("x")]
    except ValueError:
        sizes = []
    if len(sizes) != 3:
        raise ValueError(f"mesh=DATAxFSDPxTENSOR needs three integer sizes, got {spec!r}")
    return dict(zip(("data", "fsdp", "tensor"), sizes, strict=True))


def rl_sections(
    c: ml_collections.ConfigDict,
    opts: dict[str, Any],
    *,
    steps: int,
    prompts_per_step: int,
    num_samples: int,
    max_new_tokens: int,
    anneal_at: int,
    loss: dict[str, Any],
    learning_rate: float,
    warmup_steps: int,
    eval_every: int,
    eval_prompts: int | None,
    eval_batch_prompts: int,
    eval_splits: tuple[str, ...] = ("eval",),
    checkpoint_every: int,
    default_k: int = 4,
) -> ml_collections.ConfigDict:
    """Fills ``c.rl``, ``c.advantage``, ``c.k_schedule``, ``c.phases``, ``c.loss``, ``c.optimizer``,
    ``c.eval`` and checkpointing from the defaults given and the user's ``opts``.

    Options read from ``opts``: ``adv=NAME``, ``k=N`` (constant k_opt), ``anneal`` (k 8 -> 1 at
    ``anneal_at``, or ``anneal_at=S``), ``steps=N``, ``lr=X``, ``ent=X`` (entropy bonus),
    ``micro=N`` (gradient-accumulation micro-batches), ``decode_phases=N`` (sampler decode loops,
    default 4, 1 with ``quick``). Returns ``c``.
    """
    c.rl = ml_collections.ConfigDict(
        {
            "steps": int(opts.get("steps", steps)),
            "prompts_per_step": prompts_per_step,
            "num_samples": num_samples,
            "max_new_tokens": max_new_tokens,
            # The one sampling specification: the sampler draws with it and the loss recomputes
            # log-probs (and the entropy) of the same truncated distribution.
            "temperature": 1.0,
            "top_k": None,
            "top_p": None,
            # Sampler decode loops, each with a cache just long enough (see sampler.sample);
            # 1 compiles a single loop body: quick mode, or wherever compile time dominates.
            "decode_phases": int(opts.get("decode_phases", 1 if opts.get("quick") else 4)),
            # Block after each learner step so that time/learn_s is measured (benchmarks only:
            # it stops the host from preparing step t + 1 while step t runs).
            "sync_timing": False,
        }
    )
    c.advantage = opts.get("adv", "pkpo_sloo_minus_one")
    k = int(opts.get("k", default_k))
    if opts.get("anneal"):
        at = int(opts.get("anneal_at", anneal_at))
        c.k_schedule = {"kind": "step", "k_start": 8, "k_end": 1, "at": at}
    else:
        c.k_schedule = {"kind": "constant", "k": k}
    c.phases = None
    base_loss = {
        "aggregation": "seq_mean_token_sum",
        "kl_coef": 0.0,
        "entropy_coef": float(opts.get("ent", 0.0)),
        "num_microbatches": 1,
    }
    base_loss.update(loss)
    if "micro" in opts:
        base_loss["num_microbatches"] = int(opts["micro"])
    c.loss = ml_collections.ConfigDict(base_loss)
    c.optimizer = ml_collections.ConfigDict(
        {
            "learning_rate": float(opts.get("lr", learning_rate)),
            "warmup_steps": warmup_steps,
            "cosine": False,
            "weight_decay": 0.0,
            "max_grad_norm": 1.0,
        }
    )
    c.eval = ml_collections.ConfigDict(
        {
            "every": eval_every,
            "num_prompts": eval_prompts,  # None: every held-out prompt
            "num_samples": num_samples,  # pass@{1, 2, 4, ..., n}
            "batch_prompts": eval_batch_prompts,
            "splits": tuple(eval_splits),
        }
    )
    c.checkpoint_every = checkpoint_every
    c.keep_checkpoints = 2
    c.tensorboard = True
    return c


def schedule_label(opts: dict[str, Any], default_k: int = 4) -> str:
    """``"8->1"`` for an annealed run, else the constant k, for run names."""
    return "8->1" if opts.get("anneal") else str(int(opts.get("k", default_k)))
