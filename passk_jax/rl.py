"""The RL loop: prompts -> samples -> rewards -> pass@k transform -> sharded step -> eval / log / checkpoint.

``train_and_evaluate(config, workdir)`` is the whole program behind ``python -m passk_jax.main``. One RL
step, as data (``P`` prompts, ``G`` samples each, ``Tp`` prompt tokens, ``T`` new tokens)::

    prompts [P] --tokenize--> [P, Tp] --sample (prefill once, G copies)--> tokens / logp / mask [P, G, T]
      --task.score--> rewards [P, G] --advantage by name, k = schedule(step)--> weights [P, G]
      --train_step (jitted once, sharded, state donated)--> new state, metrics

Every ``eval.every`` steps the policy samples ``eval.num_samples`` completions for held-out prompts and
logs the unbiased pass@k for k = 1, 2, 4, ..., num_samples and any extra ``eval.ks``. Everything a run
needs to continue is in the orbax checkpoint (params, optimizer state, step, PRNG key, cumulative-solve
set); the data order and all random keys are functions of (seed, step), so a run killed and
restarted with the same command gives the same results as an uninterrupted one. Orbax finalises a
checkpoint by an atomic rename, so a half-written checkpoint is never restored.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from tqdm.auto import tqdm

from passk_jax import advantages as A
from passk_jax import metrics as M
from passk_jax import sampler as SMP
from passk_jax import schedules
from passk_jax import sharding as S
from passk_jax import train as TR
from passk_jax.models import gemma2
from passk_jax.tasks import make_task
from passk_jax.tokenizers import CharTokenizer, SentencePieceTokenizer, pad_batch

__all__ = ["build", "train_and_evaluate", "warm_start"]


# ----------------------------------------------------------------------------------------------------
# Set-up helpers.


def _to_dict(x: Any) -> dict[str, Any]:
    if x is None:
        return {}
    if isinstance(x, ml_collections.ConfigDict):
        return x.to_dict()
    return dict(x)


def _model_config(config, vocab_size: int) -> gemma2.Gemma2Config:
    m = config.model
    overrides = _to_dict(m.get("overrides"))
    if m.kind == "tiny":
        return gemma2.Gemma2Config.tiny(vocab_size=vocab_size, **overrides)
    ctor = getattr(gemma2.Gemma2Config, m.kind, None)
    if ctor is None:
        raise ValueError(
            f"unknown model kind {m.kind!r}; use 'tiny', 'gemma2_2b', 'gemma2_9b', ..."
        )
    return ctor(**overrides)


def _initial_params(config, model_config):
    """Parameters from ``config.model.checkpoint`` (``{"format": "hf"|"flax"|"orbax", "path"}``),
    or None for a random initialisation."""
    ckpt = config.model.get("checkpoint", None)
    if not ckpt or not ckpt.get("path"):
        return None
    from passk_jax import checkpoints

    fmt, path = ckpt.get("format", "hf"), os.path.expanduser(ckpt["path"])
    if not os.path.exists(path):
        raise FileNotFoundError(f"model checkpoint {path!r} (config.model.checkpoint) not found.")
    if fmt == "hf":
        return checkpoints.load_hf_gemma2(path, **_to_dict(config.model.get("overrides")))[1]
    if fmt == "flax":
        return checkpoints.load_flax_gemma2(path, model_config)
    if fmt == "orbax":
        return checkpoints.restore_params(path)
    raise ValueError(f"unknown checkpoint format {fmt!r}; use 'hf', 'flax' or 'orbax'.")


def _tokenizer(config, task):
    kind = config.get("tokenizer", "char")
    if kind == "char":
        if not task.alphabet:
            raise ValueError(f"task {task.name!r} has no alphabet; use a SentencePiece tokenizer.")
        return CharTokenizer(task.alphabet)
    if kind == "sentencepiece":
        return SentencePieceTokenizer(config.tokenizer_path)
    raise ValueError(f"unknown tokenizer {kind!r}; use 'char' or 'sentencepiece'.")


def _encode_prompts(tok, prompts, max_len: int | None = None):
    ids = [tok.encode(p.text, add_bos=True) for p in prompts]
    if max_len is not None:
        if max_len < 2:
            raise ValueError(f"max_prompt_len must be >= 2 (BOS + one token), got {max_len}.")
        # Keep BOS and the prompt's end (where the question and the answer cue sit).
        ids = [x if len(x) <= max_len else x[:1] + x[-(max_len - 1) :] for x in ids]
    return pad_batch(ids, tok.pad_id, side="left")


def _eval_ks(ev) -> list[int]:
    """k = 1, 2, 4, ..., num_samples plus ``ev.ks`` (e.g. PKPO's pass@12 on ARC); k > n is an error."""
    n = int(ev.num_samples)
    extra = [int(k) for k in (ev.get("ks", None) or ())]
    bad = [k for k in extra if not 1 <= k <= n]
    if bad:
        raise ValueError(f"eval.ks {bad} outside [1, eval.num_samples={n}].")
    return sorted(set(M.powers_of_two(n)) | set(extra))


def _to_host(x: Any) -> np.ndarray:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def _decode(tok, tokens: np.ndarray, mask: np.ndarray) -> list[str]:
    flat_t = tokens.reshape(-1, tokens.shape[-1])
    flat_m = mask.reshape(-1, mask.shape[-1])
    return [
        tok.decode([int(t) for t, m in zip(row, mrow) if m]) for row, mrow in zip(flat_t, flat_m)
    ]


class _Run:
    """Everything built once per run (task, tokenizer, model, mesh, jitted functions)."""

    def __init__(self, config, workdir: str):
        S.maybe_initialize_distributed()
        self.config = config
        self.workdir = workdir
        self.is_main = jax.process_index() == 0
        self.task = make_task(config.task.name, **_to_dict(config.task.get("kwargs")))
        self.tok = _tokenizer(config, self.task)
        self.model_config = _model_config(config, self.tok.vocab_size)
        if self.tok.vocab_size > self.model_config.vocab_size:
            raise ValueError(
                f"tokenizer has {self.tok.vocab_size} ids but the model's vocab_size is "
                f"{self.model_config.vocab_size}; ids past the table would be silently clipped."
            )
        self.mesh = S.make_mesh(_to_dict(config.mesh) or None)
        self.train_prompts = self.task.prompts("train")
        self.eval_splits = {
            split: self.task.prompts(split, config.eval.num_prompts) for split in config.eval.splits
        }
        self.max_prompt_len = int(config.get("max_prompt_len", 0)) or None
        rl = config.rl
        self.k_fn = schedules.make_k_schedule(_to_dict(config.k_schedule))
        self.phases = [tuple(p) for p in config.get("phases", None) or []]
        names = sorted({p[1] for p in self.phases} or {config.advantage})
        for n in names:
            if n not in A.ADVANTAGES:
                raise ValueError(f"unknown advantage {n!r}; choose one of {sorted(A.ADVANTAGES)}.")
        self.method_names = names
        self.loss_config = TR.LossConfig(**_to_dict(config.loss))
        opt = config.optimizer
        self.tx = TR.make_optimizer(
            opt.learning_rate,
            warmup_steps=opt.get("warmup_steps", 0),
            total_steps=rl.steps if opt.get("cosine", False) else None,
            weight_decay=opt.get("weight_decay", 0.0),
            max_grad_norm=opt.get("max_grad_norm", 1.0),
        )
        self.sample = functools.partial(
            SMP.sample,
            config=self.model_config,
            max_new_tokens=rl.max_new_tokens,
            temperature=rl.temperature,
            top_k=rl.get("top_k", None),
            top_p=rl.get("top_p", None),
            eos_id=self.tok.eos_id,
            pad_id=self.tok.pad_id,
            # Configs written before the option existed use the sampler's default.
            **({"decode_phases": rl.decode_phases} if "decode_phases" in rl else {}),
        )
        self.advantage_fn = jax.jit(self._advantages)

    def _advantages(self, rewards, step, key):
        """Per-sample weights for ``rewards [P, G]`` at ``step`` (k and method from the schedules)."""
        if not self.phases:
            k = self.k_fn(step)
            return A.compute_advantages(self.method_names[0], rewards, k=k, key=key), k
        idx = schedules.phase_index(self.phases, step)
        method = jnp.asarray([self.method_names.index(p[1]) for p in self.phases])[idx]
        k = jnp.asarray([p[2] for p in self.phases], jnp.int32)[idx]
        fns = [functools.partial(A.compute_advantages, n, k=k, key=key) for n in self.method_names]
        return jax.lax.switch(method, fns, rewards), k

    # --------------------------------------------------------------------------------------------

    def batch_for(self, step: int) -> list[int]:
        """Indices of the training prompts of RL ``step``: epochs of seeded permutations."""
        p = self.config.rl.prompts_per_step
        n = len(self.train_prompts)
        out = []
        pos = step * p
        while len(out) < p:
            epoch, off = divmod(pos, n)
            perm = np.random.default_rng([self.config.seed, 7, epoch]).permutation(n)
            take = min(p - len(out), n - off)
            out.extend(perm[off : off + take].tolist())
            pos += take
        return out

    def rollout(self, params, prompts, num_samples: int, key):
        toks, mask = _encode_prompts(self.tok, prompts, self.max_prompt_len)
        out = self.sample(
            params, prompt_tokens=toks, prompt_mask=mask, num_samples=num_samples, rng=key
        )
        tokens, gmask, logp = (_to_host(x) for x in (out.tokens, out.mask, out.logprobs))
        texts = _decode(self.tok, tokens, gmask)
        g = tokens.shape[1]
        rewards = np.asarray(
            [self.task.score(prompts[i // g], t) for i, t in enumerate(texts)], np.float32
        ).reshape(len(prompts), g)
        return toks, mask, tokens, gmask, logp, rewards

    def evaluate(self, params, step: int) -> dict[str, float]:
        ev = self.config.eval
        out: dict[str, float] = {}
        for split, prompts in self.eval_splits.items():
            key = jax.random.fold_in(jax.random.key(self.config.seed + 1), step)
            rewards = np.concatenate(
                [
                    self.rollout(
                        params,
                        prompts[i : i + ev.batch_prompts],
                        ev.num_samples,
                        jax.random.fold_in(key, i),
                    )[-1]
                    for i in range(0, len(prompts), ev.batch_prompts)
                ]
            )
            prefix = "eval" if split == "eval" else f"eval_{split}"
            for k, v in M.pass_at_k_table(rewards, _eval_ks(ev)).items():
                out[f"{prefix}/pass@{k}"] = v
        return out


# ----------------------------------------------------------------------------------------------------
# Supervised warm start.


def _sft(run: _Run, params) -> Any:
    cfg = run.config.sft
    tx = TR.make_optimizer(cfg.learning_rate, warmup_steps=cfg.get("warmup_steps", 0))
    state, shardings = TR.create_train_state(
        run.model_config, tx, run.mesh, run.config.seed, params=params
    )
    step_fn = TR.jit_sft_step(tx, run.model_config, shardings, run.mesh)
    prompts = [p for p in run.train_prompts if p.target is not None]
    if not prompts:
        raise ValueError("sft.steps > 0 but the task's training prompts have no targets.")
    # One (masked) target length for every batch, so the SFT step compiles once, not per batch.
    t = max(len(run.tok.encode(p.target, add_bos=False, add_eos=True)) for p in prompts)
    rng = np.random.default_rng([run.config.seed, 11])
    bar = tqdm(range(cfg.steps), desc="warm start (SFT)", disable=not run.is_main, leave=False)
    loss = float("nan")
    for i in bar:
        idx = rng.choice(len(prompts), cfg.batch_size, replace=len(prompts) < cfg.batch_size)
        batch_prompts = [prompts[j] for j in idx]
        toks, pmask = _encode_prompts(run.tok, batch_prompts, run.max_prompt_len)
        targets = [run.tok.encode(p.target, add_bos=False, add_eos=True) for p in batch_prompts]
        tgt, tmask = pad_batch(targets, run.tok.pad_id, side="right", length=t)
        b = TR.make_batch(
            toks,
            pmask,
            tgt[:, None],
            tmask[:, None],
            np.zeros((len(idx), 1, t), np.float32),
            np.zeros((len(idx), 1), np.float32),
            mesh=run.mesh,
        )
        state, m = step_fn(state, b)
        if i % 20 == 0 or i == cfg.steps - 1:
            loss = float(m["sft_loss"])
            bar.set_postfix(loss=f"{loss:.3f}")
    return state.params, loss


# ----------------------------------------------------------------------------------------------------
# Checkpoints.


def _manager(workdir: str, keep: int) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, "checkpoints")),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
    )


def _save(mngr, step: int, state, meta: dict) -> None:
    mngr.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
    )


def _restore(mngr, step: int, state, shardings):
    abstract = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings
    )
    out = mngr.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
        ),
    )
    return out["state"], out["meta"]


# ----------------------------------------------------------------------------------------------------
# The loop.


def warm_start(config: ml_collections.ConfigDict, path: str) -> float:
    """Runs only the supervised warm start of ``config`` and saves the parameters (orbax) at ``path``.

    Several RL runs can then start from the same weights with
    ``config.model.checkpoint = {"format": "orbax", "path": path}`` and ``config.sft.steps = 0``.
    Returns the final SFT loss. Does nothing (returns NaN) if ``path`` already holds parameters.
    """
    from passk_jax import checkpoints

    path = os.path.abspath(path)
    if os.path.exists(path):
        return float("nan")
    run = _Run(config, os.path.dirname(path))
    state, _ = TR.create_train_state(
        run.model_config,
        run.tx,
        run.mesh,
        config.seed,
        params=_initial_params(config, run.model_config),
    )
    params, loss = _sft(run, state.params)
    checkpoints.save_params(path, jax.device_get(params))
    return loss


def build(config, workdir: str) -> _Run:
    """Builds the run's static parts (for notebooks / tests that drive the loop themselves)."""
    return _Run(config, workdir)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Runs (or resumes) the RL experiment ``config`` in ``workdir``; returns the final metrics.

    Writes ``workdir/metrics.jsonl``, TensorBoard events in ``workdir/tensorboard``, orbax checkpoints
    in ``workdir/checkpoints`` and ``workdir/curves.png`` at the end.
    """
    os.makedirs(workdir, exist_ok=True)
    run = _Run(config, workdir)
    rl = config.rl
    with_ref = run.loss_config.kl_coef > 0
    state, shardings = TR.create_train_state(
        run.model_config,
        run.tx,
        run.mesh,
        config.seed,
        params=_initial_params(config, run.model_config),
        with_ref=with_ref,
    )
    step_fn = TR.jit_train_step(run.tx, run.model_config, run.loss_config, shardings, run.mesh)
    mngr = _manager(workdir, config.get("keep_checkpoints", 2))
    writer = (
        M.MetricWriter(workdir, tensorboard=config.get("tensorboard", True))
        if run.is_main
        else None
    )
    cum = M.CumulativeSolve(len(run.train_prompts))

    latest = mngr.latest_step()
    if latest is not None:
        state, meta = _restore(mngr, latest, state, shardings)
        cum = M.CumulativeSolve(len(run.train_prompts), meta.get("solved", []))
        start = int(meta["step"])
        if writer:
            writer.truncate_after(start)
    else:
        start = 0
        if config.sft.steps > 0:
            params, sft_loss = _sft(run, state.params)
            state = state.replace(
                params=params, ref_params=jax.tree.map(jnp.copy, params) if with_ref else None
            )
            if writer:
                writer.write(0, {"sft/loss": sft_loss})
        ev0 = run.evaluate(state.params, 0)  # every process: sampling is a collective
        if writer:
            writer.write(0, ev0)
        _save(mngr, 0, state, {"step": 0, "solved": []})

    base_key = jax.random.wrap_key_data(jnp.asarray(_to_host(state.rng)))
    last: dict[str, float] = {}
    bar = tqdm(
        range(start, rl.steps), desc="RL", initial=start, total=rl.steps, disable=not run.is_main
    )
    for step in bar:
        t0 = time.perf_counter()
        key = jax.random.fold_in(base_key, step)
        k_sample, k_adv = jax.random.split(key)
        idx = run.batch_for(step)
        prompts = [run.train_prompts[i] for i in idx]
        toks, pmask, tokens, gmask, logp, rewards = run.rollout(
            state.params, prompts, rl.num_samples, k_sample
        )
        t_sample = time.perf_counter() - t0
        weights, k = run.advantage_fn(jnp.asarray(rewards), step, k_adv)
        batch = TR.make_batch(toks, pmask, tokens, gmask, logp, _to_host(weights), mesh=run.mesh)
        state, m = step_fn(state, batch)
        m = jax.device_get(m)
        if not np.isfinite(m["loss"]):
            raise FloatingPointError(
                f"non-finite loss at RL step {step} (weights finite: {np.isfinite(_to_host(weights)).all()}); "
                f"the last good checkpoint is step {mngr.latest_step()} in {workdir}."
            )
        rate = cum.update([p.uid for p in prompts], rewards)
        ntok = np.maximum(gmask.sum(), 1)
        record = {
            "train/reward_mean": float(rewards.mean()),
            "train/solve_any": float((rewards >= 1).any(-1).mean()),
            "train/cum_solve_rate": rate,
            "train/k": int(_to_host(k)),
            "train/entropy": float(-(logp * gmask).sum() / ntok),  # sampled-token estimate
            "train/length": float(gmask.sum(-1).mean()),
            "train/weight_abs_mean": float(np.abs(_to_host(weights)).mean()),
            **{f"train/{key_}": float(v) for key_, v in m.items()},
            "time/sample_s": t_sample,
            "time/step_s": time.perf_counter() - t0,
        }
        done = step + 1
        if done % config.eval.every == 0 or done == rl.steps:
            record.update(run.evaluate(state.params, done))
        if writer:
            writer.write(done, record)
        last = record
        bar.set_postfix(
            reward=f"{record['train/reward_mean']:.2f}",
            **{
                kk.split("/")[-1]: f"{v:.2f}"
                for kk, v in record.items()
                if kk in ("eval/pass@1", f"eval/pass@{config.eval.num_samples}")
            },
        )
        if done % config.checkpoint_every == 0 or done == rl.steps:
            _save(mngr, done, state, {"step": done, "solved": sorted(cum.solved)})
    mngr.wait_until_finished()
    mngr.close()
    if writer:
        records = M.read_jsonl(writer.path)
        if start >= rl.steps:  # restarted after the end: report what the finished run recorded
            last = next(
                (
                    {k: v for k, v in r.items() if k != "step"}
                    for r in reversed(records)
                    if r.get("step") == rl.steps and "train/reward_mean" in r
                ),
                {},
            )
        M.plot_curves(records, os.path.join(workdir, "curves.png"), title=config.get("name", ""))
        writer.close()
        with open(os.path.join(workdir, "final_metrics.json"), "w") as f:
            json.dump(last, f, indent=1)
    return last
