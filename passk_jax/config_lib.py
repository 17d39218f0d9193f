"""Building blocks for experiment configs (``passk_jax/configs/*.py``), and loading them.

A config file's ``get_config(arg)`` receives the text after ``:`` in ``--config FILE:ARG``; its
module-level ``ARGS`` maps every argument it accepts to a one-line help. These helpers parse the
argument against ``ARGS`` (``parse_args``: an unknown name is a :class:`ConfigArgError`), turn
``mesh=DxFxT`` into mesh sizes (``parse_mesh``), build the RL sections every config shares
(``rl_sections``: sampling, k schedule, loss, optimizer, eval, checkpointing) and the plug-in keys
(``plugin_sections``: ``reward=module:attr``, ``task=module:attr``, ``chat=gemma``), so a config
states only what differs: the task, the model and a few numbers.

``load_config("maze_tiny:k=4")`` / ``load_config("path/to/file.py:k=4")`` is the one loader behind
every command's ``--config`` (a bare name is a config shipped in :mod:`passk_jax.configs`), and
``describe(spec)`` is what ``passk-train --config SPEC --help`` prints.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
from typing import Any

import ml_collections

# Arguments read by ``rl_sections`` and ``plugin_sections``, shared by every config.
RL_ARGS: dict[str, str] = {
    "quick": "seconds-long smoke version of the same pipeline (the tests use it)",
    "seed": "model init / data order seed (default 0)",
    "steps": "RL steps",
    "k": "constant k_opt (default 4)",
    "anneal": "k_opt 8, then 1 from step anneal_at on",
    "anneal_at": "the step where an annealed k_opt drops to 1",
    "adv": "weighting: a key of passk_jax.advantages.ADVANTAGES or entropy_adaptive "
    "(default pkpo_sloo_minus_one)",
    "lr": "RL learning rate",
    "ent": "entropy bonus coefficient (default 0)",
    "micro": "gradient-accumulation micro-batches",
    "decode_phases": "sampler decode loops (default 4; 1 with quick)",
    "rollout": "sampler parameter layout: training (default), replicated or tensor",
    "mesh": "DATAxFSDPxTENSOR device mesh, -1 = the remaining devices (default 1x-1x1)",
    "reward": "module:attr, a callable (prompt, completion) -> float that replaces the task's reward",
    "reward_binary": "the plug-in reward is 0/1 (pass@k methods allowed; default: continuous)",
    "task": "module:attr, a Task (or a factory of one, called with no arguments) for the prompts",
    "chat": "gemma: wrap prompts in Gemma's user / model turn format (instruction-tuned models)",
}


class ConfigArgError(ValueError):
    """An argument after ``:`` in ``--config FILE:ARG`` that the config does not accept."""


def parse_args(arg: str | None, known: dict[str, str] | None = None) -> dict[str, Any]:
    """``"k=4,anneal,lr=1e-6"`` -> ``{"k": "4", "anneal": True, "lr": "1e-6"}``.

    With ``known`` (a config's ``ARGS``), a name not in it raises :class:`ConfigArgError` that
    names the closest known argument and lists them all; so does a name given twice.
    """
    out: dict[str, Any] = {}
    for item in filter(None, (a.strip() for a in (arg or "").split(","))):
        key, _, value = item.partition("=")
        key = key.strip()
        if known is not None and key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigArgError(
                f"unknown config argument {key!r}{hint}; this config accepts: "
                f"{', '.join(sorted(known))} (see --help)"
            )
        if key in out:
            raise ConfigArgError(f"config argument {key!r} given twice in {arg!r}")
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
            # Parameter layout the sampler decodes with (sampler.ROLLOUT_LAYOUTS): "training" uses
            # the train state's FSDP shardings (weights gathered on every generated token);
            # "replicated" / "tensor" reshard once per RL step (benchmarks/rollout_layout.py).
            "rollout_layout": opts.get("rollout", "training"),
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


def pretrained_model_sections(
    c: ml_collections.ConfigDict, opts: dict[str, Any], *, kind: str, ckpt: str, quick: bool
) -> ml_collections.ConfigDict:
    """``c.model`` / ``c.mesh`` / ``c.sft`` of the LLM configs: a pretrained checkpoint (``format=``,
    default hf), bfloat16 compute with the memory levers measured to fit v5e-128
    (``benchmarks/results/plan.md``: full remat per decoder block, the residual stream pinned to the
    batch axes), the ``mesh=`` sizes, and no warm start. ``quick``: the tiny architecture as is."""
    import os

    overrides = (
        {}
        if quick
        else {"dtype": "bfloat16", "remat": "full", "activation_batch_axes": ("data", "fsdp")}
    )
    c.model = ml_collections.ConfigDict(
        {
            "kind": "tiny" if quick else kind,
            "overrides": overrides,
            "checkpoint": {
                "format": opts.get("format", "hf"),
                "path": os.path.expanduser(ckpt) if ckpt else "",
            },
        }
    )
    c.mesh = ml_collections.ConfigDict(parse_mesh(opts.get("mesh", "1x-1x1")))
    c.sft = ml_collections.ConfigDict({"steps": 0})  # RL directly from the pretrained checkpoint
    return c


def plugin_sections(
    c: ml_collections.ConfigDict, opts: dict[str, Any]
) -> ml_collections.ConfigDict:
    """Plug-in keys from ``opts``: ``task=module:attr`` replaces ``c.task.name`` (no kwargs),
    ``reward=module:attr`` sets ``c.task.reward`` (with ``reward_binary``: 0/1 rewards), and
    ``chat=gemma`` sets ``c.chat_template``. Returns ``c``."""
    if "task" in opts:
        c.task = ml_collections.ConfigDict({"name": str(opts["task"]), "kwargs": {}})
    if "reward" in opts:
        c.task.reward = str(opts["reward"])
        c.task.reward_binary = bool(opts.get("reward_binary", False))
    elif "reward_binary" in opts:
        raise ConfigArgError("reward_binary is only meaningful with reward=module:attr")
    if "chat" in opts:
        c.chat_template = str(opts["chat"])
    return c


# ----------------------------------------------------------------------------------------------------
# Finding and loading config files.

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def config_names() -> list[str]:
    """Names of the configs shipped in :mod:`passk_jax.configs` (``maze_tiny``, ...)."""
    return sorted(
        f[:-3] for f in os.listdir(CONFIG_DIR) if f.endswith(".py") and not f.startswith("_")
    )


def config_path(spec: str) -> tuple[str, str | None]:
    """``"NAME_OR_PATH[:ARG]"`` -> ``(file path, ARG or None)``; a bare name (no ``/``, no ``.py``)
    is a shipped config. Raises ``FileNotFoundError`` naming the shipped configs."""
    path, sep, arg = spec.partition(":")
    if os.sep not in path and "/" not in path and not path.endswith(".py"):
        path = os.path.join(CONFIG_DIR, path + ".py")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"config {spec.partition(':')[0]!r} not found (a file path, or one of the shipped "
            f"configs: {', '.join(config_names())})"
        )
    return path, (arg if sep else None)


def load_module(path: str):
    """Executes the config file at ``path`` as a fresh module."""
    name = "_passk_config_" + os.path.splitext(os.path.basename(path))[0]
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def load_config(spec: str) -> ml_collections.ConfigDict:
    """``"maze_tiny:k=4"`` or ``"path/to/config.py:k=4"`` -> that file's ``get_config("k=4")``."""
    path, arg = config_path(spec)
    module = load_module(path)
    return module.get_config(arg) if arg is not None else module.get_config()


def describe(spec: str) -> str:
    """The help text of a config: its module docstring, then every argument in its ``ARGS``."""
    path, _ = config_path(spec)
    module = load_module(path)
    lines = [f"{path}", "", (module.__doc__ or "(no docstring)").strip(), ""]
    args = getattr(module, "ARGS", None)
    if args:
        width = max(map(len, args))
        lines.append("Arguments (after ':', comma-separated key=value or flags):")
        lines += [f"  {k.ljust(width)}  {v}" for k, v in sorted(args.items())]
    else:
        lines.append("(this config declares no ARGS: its arguments are not checked)")
    return "\n".join(lines) + "\n"
