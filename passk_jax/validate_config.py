"""Validation of an RL run config before any work: every value that cannot work is refused up front.

``validate(config)`` runs first in ``rl.train_and_evaluate`` (before the task, the model, the warm
start or a checkpoint is touched) and raises :class:`ConfigError` listing every problem, each naming
its key, e.g.::

    invalid config (2 problems):
      rl.steps = -1: must be an integer >= 1
      k_schedule.k = 9: k must be in [1, rl.num_samples = 8]

``validate(config, task)`` adds the checks that need the task: binary-only advantages
(``advantages.BINARY_ONLY``) on a task whose rewards are continuous, and eval splits the task does
not have. Override typos (``--config.rl.stepz=3``) are refused by ``ml_collections`` before this runs.

The sampling specification (temperature, top-k, top-p) is ``rl.temperature / top_k / top_p``: the
sampler draws with it and the loss recomputes log-probs with it (:func:`sampling_spec`). A
``loss.temperature`` (older configs) must agree with it.
"""

from __future__ import annotations

import math
from typing import Any

from passk_jax import advantages as A
from passk_jax import losses as L

__all__ = ["SAMPLING_KEYS", "ConfigError", "sampling_spec", "validate"]

SAMPLING_KEYS = ("temperature", "top_k", "top_p")
_MISSING = object()
_SCHEDULE_KEYS = {
    "constant": ("k",),
    "step": ("k_start", "k_end", "at"),
    "linear": ("k_start", "k_end", "steps"),
}
_HEALTH_KEYS = {
    "stop",
    "zero_update_steps",
    "entropy_floor",
    "entropy_steps",
    "grad_norm_factor",
    "grad_norm_window",
    "grad_norm_min_history",
}


class ConfigError(ValueError):
    """A config that cannot work; ``problems`` lists ``(key, message)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        lines = "\n".join(f"  {msg}" for _, msg in problems)
        super().__init__(f"invalid config ({len(problems)} problem(s)):\n{lines}")


def _get(config: Any, dotted: str, default: Any = _MISSING) -> Any:
    node = config
    for part in dotted.split("."):
        if node is None:
            return default
        try:
            node = node[part]
        except (KeyError, TypeError, AttributeError, IndexError):
            return default
    return node


def _is_int(x: Any) -> bool:
    import numpy as np

    return isinstance(x, int | np.integer) and not isinstance(x, bool | np.bool_)


class _Checker:
    def __init__(self, config: Any):
        self.config = config
        self.problems: list[tuple[str, str]] = []

    def bad(self, key: str, value: Any, why: str) -> None:
        self.problems.append((key, f"{key} = {value!r}: {why}"))

    def get(self, key: str, default: Any = _MISSING) -> Any:
        return _get(self.config, key, default)

    def require(self, key: str) -> Any:
        v = self.get(key)
        if v is _MISSING:
            self.problems.append((key, f"{key}: missing"))
        return v

    def int_at_least(self, key: str, lo: int, *, optional: bool = False, none_ok: bool = False):
        v = self.get(key) if optional else self.require(key)
        if v is _MISSING or (none_ok and v is None):
            return None
        if not _is_int(v) or v < lo:
            self.bad(key, v, f"must be an integer >= {lo}")
            return None
        return int(v)

    def positive_float(self, key: str, *, optional: bool = False, none_ok: bool = False):
        v = self.get(key) if optional else self.require(key)
        if v is _MISSING or (none_ok and v is None):
            return None
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
            self.bad(key, v, "must be a finite number > 0")
            return None
        return float(v)

    def non_negative_float(self, key: str, *, optional: bool = True):
        v = self.get(key) if optional else self.require(key)
        if v is _MISSING or v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            self.bad(key, v, "must be a finite number >= 0")
            return None
        return float(v)

    def one_of(self, key: str, choices, *, optional: bool = False, default=None):
        v = self.get(key, default) if optional else self.require(key)
        if v is _MISSING:
            return None
        if v not in choices:
            self.bad(key, v, f"unknown name; choose one of {sorted(choices, key=str)}")
            return None
        return v

    def k_value(self, key: str, v: Any, n: int | None) -> None:
        if not _is_int(v) or v < 1:
            self.bad(key, v, "k must be an integer >= 1")
        elif n is not None and v > n:
            self.bad(key, v, f"k must be in [1, rl.num_samples = {n}] (k > n trains nothing)")


def sampling_spec(config: Any) -> tuple[float, int | None, float | None]:
    """``(temperature, top_k, top_p)`` of ``config.rl``: the one sampling specification."""
    rl = config.rl
    return (
        float(rl.get("temperature", 1.0)),
        rl.get("top_k", None),
        None if rl.get("top_p", None) is None else float(rl.get("top_p")),
    )


# Every weighting a run can name: the registry, plus those that need the rollout (train.py).
_METHODS = frozenset(A.ADVANTAGES) | {"entropy_adaptive"}


def validate(config: Any, task: Any = None) -> None:
    """Raises :class:`ConfigError` naming every key of ``config`` whose value cannot work.

    Args:
      config: the run's ``ml_collections.ConfigDict`` (or nested dicts).
      task: the built task, for the checks that need it (optional).
    """
    c = _Checker(config)
    from passk_jax.tasks import TASKS
    from passk_jax.tasks.plugins import is_plugin_spec

    if not is_plugin_spec(c.get("task.name", None)):
        c.one_of("task.name", set(TASKS))
    reward = c.get("task.reward", None)
    if reward is not None and not is_plugin_spec(reward):
        c.bad("task.reward", reward, "a plug-in reward is named 'module:attr'")
    c.one_of("chat_template", {None, "gemma"}, optional=True, default=None)
    c.one_of("tokenizer", {"char", "sentencepiece"}, optional=True, default="char")
    if c.get("tokenizer", "char") == "sentencepiece" and not c.get("tokenizer_path", None):
        c.problems.append(
            ("tokenizer_path", "tokenizer_path: missing (tokenizer = 'sentencepiece')")
        )
    kind = c.get("model.kind", "tiny")
    from passk_jax.models import gemma2

    if kind != "tiny" and not callable(getattr(gemma2.Gemma2Config, str(kind), None)):
        c.bad("model.kind", kind, "unknown model kind; use 'tiny', 'gemma2_2b', 'gemma2_9b', ...")
    seed = c.get("seed", 0)
    if not _is_int(seed):
        c.bad("seed", seed, "must be an integer")
    mpl = c.get("max_prompt_len", 0)
    if mpl not in (0, None) and (not _is_int(mpl) or mpl < 2):
        c.bad("max_prompt_len", mpl, "must be 0 (no limit) or an integer >= 2 (BOS + one token)")

    # ---- the RL step ----
    steps = c.int_at_least("rl.steps", 1)
    prompts = c.int_at_least("rl.prompts_per_step", 1)
    n = c.int_at_least("rl.num_samples", 1)
    c.int_at_least("rl.max_new_tokens", 1)
    c.int_at_least("rl.decode_phases", 1, optional=True)
    c.one_of(
        "rl.rollout_layout", {"training", "replicated", "tensor"}, optional=True, default="training"
    )
    temperature = c.positive_float("rl.temperature", optional=True)
    top_k = c.get("rl.top_k", None)
    if top_k is not None and (not _is_int(top_k) or top_k < 1):
        c.bad("rl.top_k", top_k, "must be None or an integer >= 1")
    top_p = c.get("rl.top_p", None)
    if top_p is not None and (
        isinstance(top_p, bool) or not isinstance(top_p, int | float) or not 0 < top_p <= 1
    ):
        c.bad("rl.top_p", top_p, "must be None or a number in (0, 1]")
    for key in SAMPLING_KEYS:  # one sampling specification: the loss may only repeat it
        lv = c.get(f"loss.{key}", _MISSING)
        rv = c.get(f"rl.{key}", 1.0 if key == "temperature" else None)
        if lv is not _MISSING and lv != rv and not (lv is None and key != "temperature"):
            c.bad(
                f"loss.{key}",
                lv,
                f"differs from rl.{key} = {rv!r}; the loss's log-probs must use the sampler's "
                "specification (set rl.* only)",
            )
    del temperature

    # ---- weights: advantage, k schedule, phases ----
    if c.get("adaptive_fraction", None) is not None:
        v = c.get("adaptive_fraction")
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1:
            c.bad("adaptive_fraction", v, "must be a number in [0, 1] (share of prompts on Pass@1)")
    phases = c.get("phases", None)
    methods: list[tuple[str, str]] = []
    if phases:
        last_end = -1
        for i, ph in enumerate(phases):
            key = f"phases[{i}]"
            if not isinstance(ph, list | tuple) or len(ph) != 3:
                c.bad(key, ph, "each phase is (until_step, advantage_name, k)")
                continue
            until, name, k = ph
            if not _is_int(until) or until <= last_end:
                c.bad(key, ph, "until_step must be an integer, increasing from phase to phase")
            else:
                last_end = until
            methods.append((key, name))
            if name not in _METHODS:
                c.bad(key, name, f"unknown advantage; choose one of {sorted(_METHODS)}")
            c.k_value(key, k, n)
    else:
        name = c.require("advantage")
        if name is not _MISSING:
            methods.append(("advantage", name))
            if name not in _METHODS:
                c.bad("advantage", name, f"unknown advantage; choose one of {sorted(_METHODS)}")
        spec = c.require("k_schedule")
        if spec is not _MISSING:
            spec = dict(spec) if spec is not None else {}
            skind = spec.get("kind", "constant")
            if skind not in _SCHEDULE_KEYS:
                c.bad("k_schedule.kind", skind, f"unknown schedule; use {sorted(_SCHEDULE_KEYS)}")
            else:
                for field in _SCHEDULE_KEYS[skind]:
                    if field not in spec:
                        c.problems.append(
                            (f"k_schedule.{field}", f"k_schedule.{field}: missing ({skind!r})")
                        )
                    elif field.startswith("k"):
                        c.k_value(f"k_schedule.{field}", spec[field], n)
                if "at" in spec and (not _is_int(spec["at"]) or spec["at"] < 0):
                    c.bad("k_schedule.at", spec["at"], "must be an integer >= 0")
                if skind == "linear" and "steps" in spec:
                    if not _is_int(spec["steps"]) or spec["steps"] < 1:
                        c.bad("k_schedule.steps", spec["steps"], "must be an integer >= 1")

    # ---- loss and optimizer ----
    loss = c.get("loss", None) or {}
    for key, choices in (
        ("policy_loss", L.POLICY_LOSSES),
        ("aggregation", L.AGGREGATIONS),
        ("kl_estimator", L.KL_ESTIMATORS),
        ("micro_split", L.MICRO_SPLITS),
    ):
        if key in loss:
            c.one_of(f"loss.{key}", set(choices))
    known_loss = {
        "policy_loss",
        "clip_low",
        "clip_high",
        "aggregation",
        "kl_coef",
        "kl_estimator",
        "entropy_coef",
        "num_microbatches",
        "share_prompts",
        "micro_split",
        *SAMPLING_KEYS,
    }
    for key in sorted(set(loss) - known_loss):
        c.bad(f"loss.{key}", loss[key], f"unknown loss option; use {sorted(known_loss)}")
    for key in ("clip_low", "clip_high", "kl_coef"):
        c.non_negative_float(f"loss.{key}")
    if "share_prompts" in loss and not isinstance(loss["share_prompts"], bool):
        c.bad("loss.share_prompts", loss["share_prompts"], "must be True or False")
    ent = c.get("loss.entropy_coef", 0.0)
    if isinstance(ent, bool) or not isinstance(ent, int | float) or not math.isfinite(ent):
        c.bad("loss.entropy_coef", ent, "must be a finite number")
    micro = c.int_at_least("loss.num_microbatches", 1, optional=True)
    if micro and prompts and n and (prompts * n) % micro:
        c.bad(
            "loss.num_microbatches",
            micro,
            f"must divide the batch rl.prompts_per_step x rl.num_samples = {prompts * n}",
        )
    c.positive_float("optimizer.learning_rate")
    c.int_at_least("optimizer.warmup_steps", 0, optional=True)
    c.non_negative_float("optimizer.weight_decay")
    c.positive_float("optimizer.max_grad_norm", optional=True, none_ok=True)

    # ---- eval, checkpoints, warm start, health ----
    c.int_at_least("eval.every", 1)
    ev_n = c.int_at_least("eval.num_samples", 1)
    c.int_at_least("eval.batch_prompts", 1)
    c.int_at_least("eval.num_prompts", 1, optional=True, none_ok=True)
    for k in c.get("eval.ks", None) or ():
        if not _is_int(k) or ev_n is not None and not 1 <= k <= ev_n:
            c.bad("eval.ks", k, f"must be integers in [1, eval.num_samples = {ev_n}]")
    splits = c.get("eval.splits", ("eval",))
    if not splits or isinstance(splits, str):
        c.bad("eval.splits", splits, "must be a non-empty tuple of split names")
    c.int_at_least("checkpoint_every", 1)
    c.int_at_least("keep_checkpoints", 1, optional=True)
    sft_steps = c.int_at_least("sft.steps", 0, optional=True)
    if sft_steps:
        c.int_at_least("sft.batch_size", 1)
        c.positive_float("sft.learning_rate")
    health = c.get("health", None) or {}
    for key in sorted(set(health) - _HEALTH_KEYS):
        c.bad(f"health.{key}", health[key], f"unknown health option; use {sorted(_HEALTH_KEYS)}")
    for key in ("zero_update_steps", "entropy_steps", "grad_norm_window", "grad_norm_min_history"):
        if key in health:
            c.int_at_least(f"health.{key}", 1)
    if "grad_norm_factor" in health:
        v = health["grad_norm_factor"]
        if isinstance(v, bool) or not isinstance(v, int | float) or not v > 1:
            c.bad("health.grad_norm_factor", v, "must be a number > 1")
    if "entropy_floor" in health:
        c.non_negative_float("health.entropy_floor")
    del steps

    # ---- checks that need the task ----
    if task is not None:
        if not getattr(task, "binary", True):
            for key, name in methods:
                if name in A.BINARY_ONLY or name == "entropy_adaptive":
                    c.bad(
                        key,
                        name,
                        f"needs binary rewards, but task {getattr(task, 'name', '?')!r} has "
                        "continuous rewards; use e.g. pkpo_sloo_minus_one (maxg@k)",
                    )
        known = getattr(task, "splits", None)
        if known and splits and not isinstance(splits, str):
            for s in splits:
                if s not in known:
                    c.bad("eval.splits", s, f"task has no such split; it has {tuple(known)}")
    if c.problems:
        raise ConfigError(c.problems)
