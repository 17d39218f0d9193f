"""TrainState and the pure policy-gradient ``train_step``, jitted once with shardings and donation.

Axis legend: ``B`` sequences in the step (= P prompts x G samples, flattened), ``Tp`` prompt tokens,
``T`` completion tokens, ``V`` vocabulary.

A batch is a dict of arrays (``make_batch`` builds it from a sampler output and per-sample weights)::

    prompt_tokens [B, Tp] int32   prompt of each sequence (repeated G times per prompt)
    prompt_mask   [B, Tp] bool    real prompt tokens
    tokens        [B, T]  int32   sampled completion tokens
    mask          [B, T]  bool    completion tokens that count (up to and including EOS)
    old_logp      [B, T]  float32 log-probs under the sampling policy (the sampler's output)
    weights       [B]     float32 per-sequence weights: a PKPO transform or a group advantage

``train_step`` is a module-level pure function: (state, batch) -> (new state, scalar metrics). The
driver jits it once (:func:`jit_train_step`) with ``in_shardings`` / ``out_shardings`` from the mesh
and donates the state. Gradient accumulation over ``num_microbatches`` is exact: every micro-batch
loss is normalised by the *whole* batch's normaliser (``losses.normaliser``).

Rows sharing a prompt: ``train_step(..., group_size=G)`` (the RL learner step passes its samples per
prompt) runs each group's prompt through the model once and lets the group's completions attend to
its keys / values, instead of running the prompt in every row; the loss, gradients and update are the
same up to float32 rounding (``tests/test_train.py``). ``LossConfig.share_prompts=False`` turns it off.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from passk_jax import advantages as A
from passk_jax import losses as L
from passk_jax import rollout as R
from passk_jax import schedules
from passk_jax import sharding as S
from passk_jax.models import gemma2

Array = jax.Array

__all__ = [
    "LearnerConfig",
    "LossConfig",
    "TrainState",
    "completion_logits",
    "create_train_state",
    "jit_learner_step",
    "jit_sft_step",
    "jit_train_step",
    "learner_step",
    "make_batch",
    "make_optimizer",
    "rl_keys",
    "sft_step",
    "train_step",
]


MICRO_SPLITS = L.MICRO_SPLITS


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Loss options (hashable: a static argument of the jitted step).

    Attributes:
      policy_loss: ``"reinforce"`` (on-policy, default) or ``"ppo"`` (clipped ratio vs the sampler).
      clip_low / clip_high: PPO clip range (DAPO clip-higher: 0.2 / 0.28).
      aggregation: see ``losses.AGGREGATIONS``; default ``"seq_mean_token_sum"`` (unbiased for PKPO).
      kl_coef: weight of KL(pi || pi_ref) (0 disables it and no reference model is kept).
      kl_estimator: ``"k1"`` or ``"k3"``.
      entropy_coef: weight of the entropy bonus (subtracted from the loss).
      temperature / top_k / top_p: the sampling specification the rollouts were drawn with; the
        loss's log-probs and entropy are those of the same (truncated) distribution.
      num_microbatches: gradient accumulation steps per batch (B must be divisible by it).
      share_prompts: when the step is told the batch's group size (``learner_step`` always is),
        run each group's prompt through the model once and share its keys / values among the
        group's completions (``completion_logits(..., group_size)``): the same loss and gradients
        up to float32 rounding, fewer FLOPs.
      micro_split: ``"strided"`` (micro-batch i takes rows i, i + m, ..., so with the batch
        sharded along its rows every micro-batch spans the whole mesh), ``"contiguous"`` (row
        blocks; each micro-batch sits on 1 / m of the batch devices) or ``"auto"`` (default:
        strided unless the step shares prompt passes in groups, then contiguous, which keeps
        groups whole). The sum over micro-batches is the same either way; see
        :func:`micro_layout`.
    """

    policy_loss: str = "reinforce"
    clip_low: float = 0.2
    clip_high: float = 0.28
    aggregation: str = "seq_mean_token_sum"
    kl_coef: float = 0.0
    kl_estimator: str = "k3"
    entropy_coef: float = 0.0
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    num_microbatches: int = 1
    share_prompts: bool = True
    micro_split: str = "auto"

    def __post_init__(self):
        L.check_options(self.policy_loss, self.aggregation, self.kl_estimator)
        if self.num_microbatches < 1:
            raise ValueError(f"`num_microbatches` must be >= 1, got {self.num_microbatches}.")
        if self.micro_split not in MICRO_SPLITS:
            raise ValueError(
                f"`micro_split` must be one of {MICRO_SPLITS}, got {self.micro_split!r}."
            )
        if not self.temperature > 0:
            raise ValueError(f"`temperature` must be > 0, got {self.temperature}.")

    @property
    def sampling(self) -> tuple[float, int | None, float | None]:
        """``(temperature, top_k, top_p)``: the sampling specification."""
        return self.temperature, self.top_k, self.top_p


@flax.struct.dataclass
class TrainState:
    """Everything a step changes or needs, and everything a checkpoint saves."""

    step: Array  # [] int32
    params: Any
    opt_state: Any
    rng: Array  # [2] uint32 raw key data (checkpointable); fold with the step for per-step keys
    ref_params: Any = None  # frozen reference policy for the KL term (None when kl_coef == 0)


def make_optimizer(
    learning_rate: float,
    *,
    warmup_steps: int = 0,
    total_steps: int | None = None,
    weight_decay: float = 0.0,
    b1: float = 0.9,
    b2: float = 0.999,
    max_grad_norm: float | None = 1.0,
) -> optax.GradientTransformation:
    """AdamW with linear warm-up then cosine decay (constant after warm-up if ``total_steps`` is None),
    after global-norm gradient clipping."""
    if total_steps is None:
        schedule = (
            optax.join_schedules(
                [
                    optax.linear_schedule(0.0, learning_rate, max(warmup_steps, 1)),
                    optax.constant_schedule(learning_rate),
                ],
                [max(warmup_steps, 1)],
            )
            if warmup_steps
            else optax.constant_schedule(learning_rate)
        )
    else:
        schedule = optax.warmup_cosine_decay_schedule(
            0.0 if warmup_steps else learning_rate,
            learning_rate,
            warmup_steps,
            max(total_steps, warmup_steps + 1),
            end_value=0.1 * learning_rate,
        )
    chain = [optax.clip_by_global_norm(max_grad_norm)] if max_grad_norm else []
    chain.append(optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay))
    return optax.chain(*chain)


def state_shardings(
    model_config: gemma2.Gemma2Config,
    tx: optax.GradientTransformation,
    mesh: Mesh,
    *,
    with_ref: bool = False,
    rules: Mapping[str, Any] | None = None,
) -> TrainState:
    """The ``NamedSharding`` of every leaf of the TrainState (a TrainState of shardings)."""
    abstract = jax.eval_shape(
        functools.partial(gemma2.init_params, model_config), jax.random.key(0)
    )
    param_sh = S.param_shardings(model_config, mesh, rules)
    opt_abstract = jax.eval_shape(tx.init, abstract)
    rep = S.replicated(mesh)
    opt_sh = optax.tree_map_params(
        tx, lambda _, sh: sh, opt_abstract, param_sh, transform_non_params=lambda _: rep
    )
    return TrainState(
        step=rep,
        params=param_sh,
        opt_state=opt_sh,
        rng=rep,
        ref_params=param_sh if with_ref else None,
    )


def check_params_match(params: Any, model_config: gemma2.Gemma2Config) -> None:
    """Raises a ValueError naming every leaf whose path or shape differs from ``model_config``'s.

    Catches a checkpoint loaded for one architecture and trained under another (e.g. a 2B checkpoint
    with a 9B config, or a vocabulary that does not match the tokenizer) before anything is placed.
    """
    want = jax.eval_shape(functools.partial(gemma2.init_params, model_config), jax.random.key(0))
    flat_want = {
        jax.tree_util.keystr(p): v.shape for p, v in jax.tree_util.tree_leaves_with_path(want)
    }
    flat_got = {
        jax.tree_util.keystr(p): tuple(np.shape(v))
        for p, v in jax.tree_util.tree_leaves_with_path(params)
    }
    problems = [f"missing {k}" for k in flat_want.keys() - flat_got.keys()]
    problems += [f"unexpected {k}" for k in flat_got.keys() - flat_want.keys()]
    problems += [
        f"{k}: checkpoint {flat_got[k]} vs config {flat_want[k]}"
        for k in flat_want.keys() & flat_got.keys()
        if tuple(flat_want[k]) != flat_got[k]
    ]
    if problems:
        shown = "; ".join(sorted(problems)[:8])
        more = f" (+{len(problems) - 8} more)" if len(problems) > 8 else ""
        raise ValueError(
            f"parameters do not match the model config ({len(problems)} problems): {shown}{more}. "
            "Check config.model.kind / overrides against the checkpoint."
        )


def create_train_state(
    model_config: gemma2.Gemma2Config,
    tx: optax.GradientTransformation,
    mesh: Mesh,
    seed: int,
    *,
    params: Any = None,
    with_ref: bool = False,
    rules: Mapping[str, Any] | None = None,
) -> tuple[TrainState, TrainState]:
    """Builds the TrainState *born sharded* on ``mesh`` and returns it with its shardings.

    Parameters are initialised by ``jit(init, out_shardings=...)`` (never materialised unsharded), or
    placed from ``params`` (e.g. a loaded checkpoint); the optimizer state by ``jit(tx.init)`` with
    the matching shardings.
    """
    shardings = state_shardings(model_config, tx, mesh, with_ref=with_ref, rules=rules)
    key = jax.random.key(seed)
    init_key, state_key = jax.random.split(key)
    if params is None:
        params = jax.jit(
            functools.partial(gemma2.init_params, model_config), out_shardings=shardings.params
        )(init_key)
    else:
        check_params_match(params, model_config)
        params = jax.device_put(params, shardings.params)
    opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(params)
    rep = S.replicated(mesh)
    state = TrainState(
        step=jax.device_put(jnp.zeros((), jnp.int32), rep),
        params=params,
        opt_state=opt_state,
        rng=jax.device_put(jax.random.key_data(state_key), rep),
        ref_params=jax.tree.map(jnp.copy, params) if with_ref else None,
    )
    return state, shardings


# ----------------------------------------------------------------------------------------------------
# The step.


def _rotate_prompts(prompt: Array, pmask: Array) -> tuple[Array, Array]:
    """Rotates each prompt row so that its last real token sits in slot ``Tp - 1``."""
    tp = prompt.shape[1]
    last_prompt = tp - 1 - jnp.argmax(pmask[:, ::-1], axis=-1)
    rot = (jnp.arange(tp)[None, :] + last_prompt[:, None] + 1) % tp
    return jnp.take_along_axis(prompt, rot, axis=1), jnp.take_along_axis(pmask, rot, axis=1)


def completion_logits(
    params: Any,
    model_config: gemma2.Gemma2Config,
    batch: Mapping[str, Array],
    group_size: int = 1,
) -> Array:
    """Logits predicting each completion token, ``[B, T, V]`` float32.

    The sequence is ``[prompt | completion]``; completion token 0 is predicted by the last real prompt
    token and token ``t > 0`` by completion token ``t - 1`` (prompts may be padded on either side).

    Each prompt row is first rotated so that its last real token sits in slot ``Tp - 1`` (a no-op
    for left-padded prompts). RoPE positions and the sliding window follow the mask, not the slots,
    so the logits are the same; the completion positions are then one contiguous block, whose
    ``[B, T, D]`` hidden states alone are unembedded (no ``[B, T, V]`` gather, whose gradient
    XLA:CPU computes as a slow scatter-add).

    ``group_size = g > 1`` declares that the rows come in consecutive groups of ``g`` sharing one
    prompt (the RL batch: the samples of a prompt are adjacent). Each group's prompt is then run
    through the model once, and its keys / values (repeated over the group; their gradients are
    summed back) are the cache the ``g`` completions attend to: the same logits and gradients up to
    float32 rounding, with the prompt's share of the FLOPs divided by ``g``. Only the first row of
    each group's prompt is read: rows of a group whose prompts differ are computed with the first
    row's prompt (``train_step`` reports them as ``prompt_group_mismatch``).
    """
    prompt, pmask = batch["prompt_tokens"], batch["prompt_mask"].astype(bool)
    tokens, mask = batch["tokens"], batch["mask"].astype(bool)
    b, tp = prompt.shape
    t = tokens.shape[1]
    if group_size > 1:
        if b % group_size:
            raise ValueError(f"group_size={group_size} does not divide the batch of {b} rows")
        return _shared_prompt_logits(params, model_config, prompt, pmask, tokens, mask, group_size)
    prompt, pmask = _rotate_prompts(prompt, pmask)
    seq = jnp.concatenate([prompt, tokens], axis=1)
    seq_mask = jnp.concatenate([pmask, mask], axis=1)
    # Only the T completion-predicting positions are unembedded (a [B, T, D] gather of hidden
    # states): the [B, Tp + T, V] logits are never formed, which at V = 256k is most of the memory.
    idx = jnp.broadcast_to(tp - 1 + jnp.arange(t, dtype=jnp.int32), (b, t))
    return gemma2.sequence_logits(params, seq, seq_mask, model_config, idx)


def _shared_prompt_logits(params, config, prompt, pmask, tokens, mask, g: int) -> Array:
    """``completion_logits`` with one prompt pass per group of ``g`` rows (see there)."""
    b, tp = prompt.shape
    t = tokens.shape[1]
    prompt_P, pmask_P = _rotate_prompts(prompt[::g], pmask[::g])
    p = prompt_P.shape[0]
    # Prompt pass: causal over the real prompt tokens; only the last slot (which predicts
    # completion token 0) is unembedded.
    pos_P = gemma2.padded_positions(pmask_P)
    attn_P = jnp.tril(jnp.ones((tp, tp), bool))[None] & pmask_P[:, None, :]
    last = jnp.full((p, 1), tp - 1, jnp.int32)
    logits0_P1V, cache = gemma2.apply_with_cache(
        params,
        config,
        prompt_P,
        pos_P,
        attn_P,
        gemma2.init_cache(config, p, tp),
        gather=last,
        train=True,
    )
    logits0_B1V = jnp.repeat(logits0_P1V, g, axis=0)
    if t == 1:
        return logits0_B1V
    # Completion pass over tokens 0..T-2 (token T-1 predicts nothing the loss reads), attending
    # to the group's prompt keys (the cache repeated g times) and causally to its own.
    cache = jax.tree.map(lambda x: jnp.repeat(x, g, axis=0) if x.ndim else x, cache)
    cache = gemma2.grow_cache(cache, tp + t - 1)
    pmask_B = jnp.repeat(pmask_P, g, axis=0)
    tok, m = tokens[:, : t - 1], mask[:, : t - 1]
    n_prompt = jnp.sum(pmask_B, axis=-1, dtype=jnp.int32)
    pos = jnp.maximum(n_prompt[:, None] + jnp.cumsum(m.astype(jnp.int32), axis=-1) - 1, 0)
    own = jnp.tril(jnp.ones((t - 1, t - 1), bool))[None] & m[:, None, :]
    attn = jnp.concatenate([jnp.broadcast_to(pmask_B[:, None, :], (b, t - 1, tp)), own], axis=-1)
    logits_BTV, _ = gemma2.apply_with_cache(params, config, tok, pos, attn, cache, train=True)
    return jnp.concatenate([logits0_B1V, logits_BTV], axis=1)


def _loss_and_metrics(params, ref_params, batch, norm, model_config, cfg: LossConfig, group=1):
    mask = batch["mask"].astype(bool)
    logits = completion_logits(params, model_config, batch, group)
    logp, entropy_tok = L.logprobs_and_entropy(logits, batch["tokens"], *cfg.sampling)
    pg, aux = L.policy_surrogate(
        logp,
        batch["old_logp"],
        batch["weights"],
        kind=cfg.policy_loss,
        clip_low=cfg.clip_low,
        clip_high=cfg.clip_high,
    )
    pg_loss = L.aggregate(pg, mask, cfg.aggregation, norm)
    loss = pg_loss
    sums = {
        "pg_loss": pg_loss,
        "clip_frac": jnp.sum(aux["clipped"] * mask),
        "ratio": jnp.sum(aux["ratio"] * mask),
        "num_tokens": jnp.sum(mask.astype(jnp.float32)),
    }
    sums["entropy"] = jnp.sum(jax.lax.stop_gradient(entropy_tok) * mask)
    if cfg.entropy_coef:
        loss = loss - cfg.entropy_coef * L.aggregate(entropy_tok, mask, cfg.aggregation, norm)
    if cfg.kl_coef:
        ref_logits = completion_logits(
            jax.lax.stop_gradient(ref_params), model_config, batch, group
        )
        ref_logp = L.token_logprobs(ref_logits, batch["tokens"], *cfg.sampling)
        kl = L.kl_penalty(logp, ref_logp, cfg.kl_estimator)
        loss = loss + cfg.kl_coef * L.aggregate(kl, mask, cfg.aggregation, norm)
        sums["kl"] = jnp.sum(jax.lax.stop_gradient(kl) * mask)
    return loss, sums


def _split_micro(batch: Mapping[str, Array], m: int) -> dict[str, Array]:
    """``[B, ...] -> [m, B / m, ...]``: contiguous micro-batches of rows."""
    return {k: v.reshape(m, v.shape[0] // m, *v.shape[1:]) for k, v in batch.items()}


def micro_layout(b: int, group_size: int, cfg: LossConfig) -> tuple[bool, int]:
    """``(strided, group)``: how ``train_step`` splits ``b`` rows into ``cfg.num_microbatches``
    micro-batches, and how many consecutive rows of a micro-batch share one prompt pass.

    ``micro_split="auto"`` is strided when no prompt pass is shared (``group_size`` 1 or
    ``share_prompts`` off) and contiguous otherwise: contiguous blocks keep each group whole (one
    prompt pass per group, not one per micro-batch), and the shared-prompt step with strided
    micro-batches trips a compiler check of libtpu 0.0.42.1 (TPU ahead-of-time compilation of the
    2B recipe aborts in memory-space assignment; ``benchmarks/results/plan.md``).
    ``"strided"`` is honoured when the groups split evenly over the micro-batches (a micro-batch
    then holds ``group_size / m`` consecutive rows of each group) and falls back to contiguous
    otherwise. Contiguous: groups stay whole when ``group_size`` divides B / m; otherwise aligned
    sub-groups of the gcd share the prompt."""
    m = cfg.num_microbatches
    g = group_size if cfg.share_prompts else 1
    if m == 1:
        return False, math.gcd(g, b)
    split = cfg.micro_split
    if split == "auto":
        split = "contiguous" if g > 1 else "strided"
    if split == "contiguous" or (g > 1 and g % m):
        return False, math.gcd(g, b // m)
    return True, math.gcd(g // m if g > 1 else 1, b // m)


def _accumulate(loss_fn, params, batch, m: int, strided: bool = False):
    """Sum of (loss, grads, aux sums) over ``m`` micro-batches (exact: losses are pre-normalised).

    Strided micro-batches are read in place: the batch is viewed as ``[B / m, m, ...]`` (a
    reshape that keeps its row sharding) and step i takes index i of the second axis, so no
    transposed copy of the batch is made."""
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if m == 1:
        (loss, sums), grads = grad_fn(params, batch)
        return loss, grads, sums

    if strided:
        view = {k: v.reshape(v.shape[0] // m, m, *v.shape[1:]) for k, v in batch.items()}

        def take(i):
            return {
                k: jax.lax.dynamic_index_in_dim(v, i, axis=1, keepdims=False)
                for k, v in view.items()
            }

        xs = jnp.arange(m)
    else:
        xs = _split_micro(batch, m)

        def take(mb):
            return mb

    def body(carry, x):
        (loss, sums), grads = grad_fn(params, take(x))
        acc = jax.tree.map(jnp.add, carry, (loss, grads, sums))
        return acc, None

    first = jax.tree.map(lambda x: x[0], xs)
    shapes = jax.eval_shape(lambda: grad_fn(params, take(first)))
    init = jax.tree.map(
        lambda s: jnp.zeros(s.shape, s.dtype), (shapes[0][0], shapes[1], shapes[0][1])
    )
    (loss, grads, sums), _ = jax.lax.scan(body, init, xs)
    return loss, grads, sums


def train_step(
    state: TrainState,
    batch: Mapping[str, Array],
    *,
    tx: optax.GradientTransformation,
    model_config: gemma2.Gemma2Config,
    loss_config: LossConfig,
    group_size: int = 1,
) -> tuple[TrainState, dict[str, Array]]:
    """One policy-gradient update. Pure; jit it with :func:`jit_train_step`.

    Args:
      state: the TrainState.
      batch: the dict described in the module docstring (leading axis B).
      tx: the optax optimizer (closed over, not traced).
      model_config / loss_config: static configs.
      group_size: the rows come in consecutive groups of this many sharing one prompt (G of an
        RL batch; 1: no such structure). With ``loss_config.share_prompts`` each (micro-batch's)
        group prompt is then computed once; the metrics gain ``prompt_group_mismatch``, the number
        of rows whose prompt differs from their group's first row (0 unless the batch is not what
        ``group_size`` says).

    Returns:
      ``(new_state, metrics)``; metrics are float32 scalars: ``loss``, ``pg_loss``, ``entropy`` (mean
      per token), ``clip_frac``, ``ratio``, ``kl`` (if used), ``grad_norm``, ``num_tokens``,
      ``weight_mean``, ``weight_abs_mean``.
    """
    cfg = loss_config
    norm = L.normaliser(batch["mask"].astype(bool), cfg.aggregation)
    b = batch["tokens"].shape[0]
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    strided, group = micro_layout(b, group_size, cfg)

    def loss_fn(params, mb):
        return _loss_and_metrics(params, state.ref_params, mb, norm, model_config, cfg, group)

    loss, grads, sums = _accumulate(loss_fn, state.params, batch, cfg.num_microbatches, strided)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ntok = jnp.maximum(sums["num_tokens"], 1.0)
    metrics = {
        "loss": loss,
        "pg_loss": sums["pg_loss"],
        "entropy": sums["entropy"] / ntok,
        "clip_frac": sums["clip_frac"] / ntok,
        "ratio": sums["ratio"] / ntok,
        "grad_norm": optax.global_norm(grads),
        "num_tokens": sums["num_tokens"],
        "weight_mean": jnp.mean(batch["weights"]),
        "weight_abs_mean": jnp.mean(jnp.abs(batch["weights"])),
    }
    if "kl" in sums:
        metrics["kl"] = sums["kl"] / ntok
    if group > 1:
        metrics["prompt_group_mismatch"] = _group_mismatch(
            batch, group, cfg.num_microbatches if strided else 1
        )
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, jax.tree.map(lambda x: x.astype(jnp.float32), metrics)


def _group_mismatch(batch: Mapping[str, Array], g: int, stride: int = 1) -> Array:
    """Rows whose (prompt, prompt mask) differ from the first row of their prompt group of ``g``.

    ``stride`` m > 1: the groups of strided micro-batches, rows ``r, r + m, ..., r + (g - 1) m``
    (``g`` consecutive rows of one micro-batch), read as a view of the batch."""
    diff = None
    for key in ("prompt_tokens", "prompt_mask"):
        x = batch[key]
        x = x.reshape(-1, g, stride, x.shape[-1])
        d = jnp.any(x != x[:, :1], axis=-1)
        diff = d if diff is None else diff | d
    return jnp.sum(diff)


def sft_step(
    state: TrainState,
    batch: Mapping[str, Array],
    *,
    tx: optax.GradientTransformation,
    model_config: gemma2.Gemma2Config,
) -> tuple[TrainState, dict[str, Array]]:
    """One supervised (teacher-forced cross-entropy, token mean) step on the same batch layout;
    ``weights`` and ``old_logp`` are ignored. Used for the warm start before RL."""

    def loss_fn(params):
        logits = completion_logits(params, model_config, batch)
        logp = L.token_logprobs(logits, batch["tokens"])
        mask = batch["mask"].astype(bool)
        return -L.aggregate(logp, mask, "token_mean", L.normaliser(mask, "token_mean"))

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step, params=params, opt_state=opt_state)
    return new_state, {"sft_loss": loss, "grad_norm": optax.global_norm(grads)}


BATCH_KEYS = ("prompt_tokens", "prompt_mask", "tokens", "mask", "old_logp", "weights")


def batch_shardings(mesh: Mesh) -> dict[str, Any]:
    """Shardings of the batch dict: leading axis over ``("data", "fsdp")``."""
    ndims = {"weights": 1}
    return {k: S.batch_sharding(mesh, ndims.get(k, 2)) for k in BATCH_KEYS}


def jit_train_step(
    tx: optax.GradientTransformation,
    model_config: gemma2.Gemma2Config,
    loss_config: LossConfig,
    shardings: TrainState,
    mesh: Mesh,
    group_size: int = 1,
):
    """``train_step`` jitted once, with explicit shardings and the state donated (``group_size``:
    see :func:`train_step`)."""
    fn = functools.partial(
        train_step,
        tx=tx,
        model_config=model_config,
        loss_config=loss_config,
        group_size=group_size,
    )
    jitted = jax.jit(
        fn,
        in_shardings=(shardings, batch_shardings(mesh)),
        out_shardings=(shardings, S.replicated(mesh)),
        donate_argnums=0,
    )
    return _under_mesh(jitted, mesh, model_config)


def jit_sft_step(tx, model_config, shardings: TrainState, mesh: Mesh):
    """``sft_step`` jitted once, with explicit shardings and the state donated."""
    fn = functools.partial(sft_step, tx=tx, model_config=model_config)
    return jax.jit(
        fn,
        in_shardings=(shardings, batch_shardings(mesh)),
        out_shardings=(shardings, S.replicated(mesh)),
        donate_argnums=0,
    )


# ----------------------------------------------------------------------------------------------------
# The learner step: rewards -> weights -> batch -> update, all on device.


@dataclasses.dataclass(frozen=True)
class LearnerConfig:
    """What the learner step needs besides the loss (hashable: a static argument of its jit).

    Attributes:
      advantage: name in ``advantages.ADVANTAGES`` (used when ``phases`` is empty).
      k_schedule: the k schedule spec as sorted ``(key, value)`` pairs (see ``schedules``).
      phases: ``((until_step, advantage_name, k), ...)``; when given it picks method and k.
      max_grad_norm: the optimizer's clipping threshold (None: no clipping); a step counts as
        clipped when its gradient norm exceeds it.
      pass_threshold: a reward counted as a solve (``train/solve_any``).
      adaptive_fraction: share of each batch's prompts (highest response entropy first) that
        ``entropy_adaptive`` puts on Pass@1 advantages (Chen et al.: 50%).
    """

    advantage: str = "pkpo_sloo_minus_one"
    k_schedule: tuple[tuple[str, Any], ...] = (("kind", "constant"), ("k", 4))
    phases: tuple[tuple[int, str, int], ...] = ()
    max_grad_norm: float | None = 1.0
    pass_threshold: float = 1.0
    adaptive_fraction: float = 0.5

    @classmethod
    def make(cls, advantage, k_schedule: Mapping[str, Any], phases=None, **kw) -> LearnerConfig:
        """From a config's ``advantage``, ``k_schedule`` dict and ``phases`` list."""
        spec = tuple(sorted((str(k), v) for k, v in dict(k_schedule).items()))
        ph = tuple((int(u), str(n), int(k)) for u, n, k in (phases or ()))
        return cls(advantage=str(advantage), k_schedule=spec, phases=ph, **kw)

    @property
    def method_names(self) -> tuple[str, ...]:
        return tuple(sorted({p[1] for p in self.phases})) if self.phases else (self.advantage,)


def rl_keys(rng: Array, step: Any) -> tuple[Array, Array]:
    """``(sample_key, advantage_key)`` of RL ``step`` from the state's raw key data ``rng``."""
    key = jax.random.fold_in(jax.random.wrap_key_data(rng), step)
    k_sample, k_adv = jax.random.split(key)
    return k_sample, k_adv


# Weightings that need the rollout, not only the rewards (the learner step has both).
ROLLOUT_METHODS = ("entropy_adaptive",)


def response_entropy(logprobs_PGT: Array, mask_PGT: Array) -> Array:
    """``[P]``: each prompt's mean response entropy, estimated from its sampled tokens.

    Per response, minus the mean log-prob of its tokens under the sampling distribution (a
    one-sample estimate of the mean per-token entropy), then the mean over the prompt's responses
    (Chen et al.'s Ē; the paper does not say how token entropies are averaged).
    """
    m = mask_PGT.astype(jnp.float32)
    per_resp = -jnp.sum(logprobs_PGT * m, -1) / jnp.maximum(jnp.sum(m, -1), 1.0)
    return jnp.mean(per_resp, -1)


def _weights_by_name(name: str, rewards_PG, k, key, entropy_P, fraction: float):
    if name == "entropy_adaptive":
        if entropy_P is None:
            raise ValueError("entropy_adaptive needs the rollout's per-prompt entropy (entropy_P)")
        return schedules.adaptive_advantages(rewards_PG, k, entropy_P, fraction=fraction)
    return A.compute_advantages(name, rewards_PG, k=k, key=key)


def weights_at(
    learner: LearnerConfig,
    rewards_PG: Array,
    step: Array,
    key: Array,
    entropy_P: Array | None = None,
):
    """``(weights [P, G], k)``: the advantage method and k of ``step`` applied to the rewards.

    ``entropy_P`` (``[P]``, :func:`response_entropy`) is needed by ``entropy_adaptive`` only: per
    batch, the ``learner.adaptive_fraction`` of prompts with the highest response entropy get GRPO
    (Pass@1) advantages, the others Chen et al.'s analytical Pass@k advantages.
    """
    frac = learner.adaptive_fraction
    if not learner.phases:
        k = schedules.make_k_schedule(dict(learner.k_schedule))(step)
        return _weights_by_name(learner.advantage, rewards_PG, k, key, entropy_P, frac), k
    names = learner.method_names
    idx = schedules.phase_index(learner.phases, step)
    method = jnp.asarray([names.index(p[1]) for p in learner.phases])[idx]
    k = jnp.asarray([p[2] for p in learner.phases], jnp.int32)[idx]
    fns = [
        functools.partial(_weights_by_name, n, k=k, key=key, entropy_P=entropy_P, fraction=frac)
        for n in names
    ]
    return jax.lax.switch(method, fns, rewards_PG), k


def learner_step(
    state: TrainState,
    rollout: Any,
    rewards_PG: Array,
    step: Array,
    *,
    tx: optax.GradientTransformation,
    model_config: gemma2.Gemma2Config,
    loss_config: LossConfig,
    learner_config: LearnerConfig,
    mesh: Mesh | None = None,
) -> tuple[TrainState, dict[str, Array]]:
    """One RL learner step: k from the schedule, weights by advantage name, flattened batch, update.

    Pure; jit it with :func:`jit_learner_step`. Nothing here touches the host.

    Args:
      state: the TrainState (``state.rng`` seeds the advantage key of ``step``, as ``rl_keys``).
      rollout: a ``rollout.Rollout`` (``[P, G, T]`` tokens / log-probs / mask, ``[P, Tp]`` prompts).
      rewards_PG: ``[P, G]`` float32 rewards from the task's verifier.
      step: ``[]`` int32 RL step (k schedules and phases are functions of it).
      tx / model_config / loss_config / learner_config: static.
      mesh: when given, the flattened batch is constrained to the batch sharding.

    Returns:
      ``(new_state, metrics)``: the scalars of :func:`train_step` (``entropy`` is the exact
      per-token entropy of the sampling distribution under the pre-update parameters) plus ``k``,
      ``reward_mean``, ``solve_any`` (fraction of prompts with a solve), ``weight_abs_max``,
      ``weights_nonfinite`` (count), ``sampled_neg_logp`` (minus the mean sampler log-prob of
      the sampled tokens: a one-sample entropy estimate), ``length`` (mean completion tokens) and
      ``clipped`` (1 if the gradient norm exceeded ``max_grad_norm``).
    """
    rewards_PG = rewards_PG.astype(jnp.float32)
    _, k_adv = rl_keys(state.rng, step)
    entropy_P = (
        response_entropy(rollout.logprobs, rollout.mask)
        if any(n in ROLLOUT_METHODS for n in learner_config.method_names)
        else None
    )
    weights_PG, k = weights_at(learner_config, rewards_PG, step, k_adv, entropy_P)
    batch = R.flatten(rollout, weights_PG)
    if mesh is not None:
        sh = batch_shardings(mesh)
        batch = {key: jax.lax.with_sharding_constraint(v, sh[key]) for key, v in batch.items()}
    new_state, m = train_step(
        state,
        batch,
        tx=tx,
        model_config=model_config,
        loss_config=loss_config,
        group_size=rollout.tokens.shape[1],
    )
    mask = batch["mask"].astype(jnp.float32)
    ntok = jnp.maximum(jnp.sum(mask), 1.0)
    w = batch["weights"]
    clip = learner_config.max_grad_norm
    extra = {
        "k": k,
        "reward_mean": jnp.mean(rewards_PG),
        "solve_any": jnp.mean(jnp.any(rewards_PG >= learner_config.pass_threshold, axis=-1)),
        "weight_abs_max": jnp.max(jnp.where(jnp.isfinite(w), jnp.abs(w), 0.0)),
        "weights_nonfinite": jnp.sum(~jnp.isfinite(w)),
        "sampled_neg_logp": -jnp.sum(batch["old_logp"] * mask) / ntok,
        "length": jnp.mean(jnp.sum(mask, axis=-1)),
        "clipped": (m["grad_norm"] > clip) if clip else jnp.zeros((), bool),
    }
    m.update(jax.tree.map(lambda x: jnp.asarray(x).astype(jnp.float32), extra))
    return new_state, m


def jit_learner_step(
    tx: optax.GradientTransformation,
    model_config: gemma2.Gemma2Config,
    loss_config: LossConfig,
    learner_config: LearnerConfig,
    shardings: TrainState,
    mesh: Mesh,
):
    """``learner_step`` jitted once: state donated and kept in ``shardings``, metrics replicated.

    The rollout keeps the shardings the sampler gave it and the batch is constrained to the batch
    sharding inside; ``rewards`` should be a replicated global array (``sharding.shard_host_array``).
    """
    fn = functools.partial(
        learner_step,
        tx=tx,
        model_config=model_config,
        loss_config=loss_config,
        learner_config=learner_config,
        mesh=mesh,
    )
    jitted = jax.jit(fn, out_shardings=(shardings, S.replicated(mesh)), donate_argnums=0)
    return _under_mesh(jitted, mesh, model_config)


class _MeshCall:
    """A jitted function traced and called with ``mesh`` set (``jax.set_mesh``), so that the model's
    activation constraints (``Gemma2Config.activation_batch_axes``) see the mesh. Every other
    attribute (``lower``, ``_cache_size``, ...) is the jitted function's."""

    def __init__(self, fn, mesh: Mesh):
        self._fn, self._mesh = fn, mesh

    def __call__(self, *args, **kwargs):
        with jax.set_mesh(self._mesh):
            return self._fn(*args, **kwargs)

    def lower(self, *args, **kwargs):
        with jax.set_mesh(self._mesh):
            return self._fn.lower(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._fn, name)


def _under_mesh(jitted, mesh: Mesh, model_config: gemma2.Gemma2Config):
    """``jitted`` itself unless the model asks for activation constraints (then a ``_MeshCall``)."""
    return _MeshCall(jitted, mesh) if model_config.activation_batch_axes else jitted


def make_batch(
    prompt_tokens: Any,
    prompt_mask: Any,
    tokens: Any,
    mask: Any,
    old_logp: Any,
    weights: Any,
    mesh: Mesh | None = None,
) -> dict[str, Any]:
    """Flattens ``[P, G, ...]`` sampler outputs and ``[P, G]`` weights into the step's batch.

    Prompts ``[P, Tp]`` are repeated G times. With ``mesh`` the arrays are placed as global arrays
    sharded over the batch axes (each process feeds its own slice); otherwise host numpy arrays.
    """
    tokens = np.asarray(tokens)
    p, g, t = tokens.shape
    batch = {
        "prompt_tokens": np.repeat(np.asarray(prompt_tokens, np.int32), g, axis=0),
        "prompt_mask": np.repeat(np.asarray(prompt_mask, bool), g, axis=0),
        "tokens": tokens.reshape(p * g, t).astype(np.int32),
        "mask": np.asarray(mask, bool).reshape(p * g, t),
        "old_logp": np.asarray(old_logp, np.float32).reshape(p * g, t),
        "weights": np.asarray(weights, np.float32).reshape(p * g),
    }
    if mesh is None:
        return batch
    sh = batch_shardings(mesh)
    return {k: S.shard_host_array(v, sh[k]) for k, v in batch.items()}
