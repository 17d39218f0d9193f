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

import dataclasses
import functools
import json
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from tqdm.auto import tqdm

from passk_jax import checkpoints as ckpt_lib
from passk_jax import metrics as M
from passk_jax import rollout as R
from passk_jax import sampler as SMP
from passk_jax import sharding as S
from passk_jax import train as TR
from passk_jax import validate_config as V
from passk_jax.models import gemma2
from passk_jax.tasks import build_task, extract_answer
from passk_jax.tokenizers import CharTokenizer, SentencePieceTokenizer, encode_prompt, pad_batch

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


def _initial_params(config, model_config, mesh=None):
    """Parameters from ``config.model.checkpoint`` (``{"format": "hf"|"flax"|"orbax", "path"}``),
    or None for a random initialisation; with ``mesh``, loaded born sharded onto it (each device
    reads its own shards, see ``checkpoints.load_hf_gemma2`` / ``load_flax_gemma2``)."""
    ckpt = config.model.get("checkpoint", None)
    if not ckpt or not ckpt.get("path"):
        return None
    from passk_jax import checkpoints

    fmt, path = ckpt.get("format", "hf"), os.path.expanduser(ckpt["path"])
    if not os.path.exists(path):
        raise FileNotFoundError(f"model checkpoint {path!r} (config.model.checkpoint) not found.")
    if fmt == "hf":
        overrides = _to_dict(config.model.get("overrides"))
        return checkpoints.load_hf_gemma2(path, mesh=mesh, **overrides)[1]
    if fmt == "flax":
        return checkpoints.load_flax_gemma2(path, model_config, mesh=mesh)
    if fmt == "orbax":
        if mesh is None:
            return checkpoints.restore_params(path)
        target = jax.tree.map(
            lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
            jax.eval_shape(functools.partial(gemma2.init_params, model_config), jax.random.key(0)),
            S.param_shardings(model_config, mesh),
        )
        return checkpoints.restore_params(path, target)
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


def _encode_prompts(tok, prompts, max_len: int | None = None, chat_template: str | None = None):
    ids = [encode_prompt(tok, p.text, chat_template) for p in prompts]
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
        V.validate(config)  # static checks first: nothing is built for a config that cannot work
        S.maybe_initialize_distributed()
        self.config = config
        self.workdir = workdir
        self.is_main = jax.process_index() == 0
        self.task = build_task(config.task)
        V.validate(config, self.task)  # checks that need the task (binary rewards, splits)
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
        self.chat_template = config.get("chat_template", None)
        if self.chat_template is not None:  # fails now if the tokenizer lacks the turn pieces
            encode_prompt(self.tok, "", self.chat_template)
        rl = config.rl
        # One sampling specification for the sampler and the loss's log-probs.
        self.sampling = V.sampling_spec(config)
        temperature, top_k, top_p = self.sampling
        loss = {k: v for k, v in _to_dict(config.loss).items() if k not in V.SAMPLING_KEYS}
        self.loss_config = TR.LossConfig(**loss, temperature=temperature, top_k=top_k, top_p=top_p)
        opt = config.optimizer
        self.learner_config = TR.LearnerConfig.make(
            config.advantage,
            _to_dict(config.k_schedule),
            config.get("phases", None),
            max_grad_norm=opt.get("max_grad_norm", 1.0),
            adaptive_fraction=float(config.get("adaptive_fraction", 0.5)),
        )
        self.method_names = list(self.learner_config.method_names)
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
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            eos_id=self.tok.eos_id,
            pad_id=self.tok.pad_id,
            mesh=self.mesh,  # decode rows and KV cache sharded over the batch axes
            # Configs written before the option existed use the sampler's default.
            **({"decode_phases": rl.decode_phases} if "decode_phases" in rl else {}),
        )
        self.advantage_fn = jax.jit(
            lambda rewards, step, key: TR.weights_at(self.learner_config, rewards, step, key)
        )
        self.sync_timing = bool(rl.get("sync_timing", False))
        self._learn = None

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

    def init_state(self):
        """``(state, shardings)``: the TrainState born sharded (from the configured checkpoint)."""
        return TR.create_train_state(
            self.model_config,
            self.tx,
            self.mesh,
            self.config.seed,
            params=_initial_params(self.config, self.model_config, self.mesh),
            with_ref=self.loss_config.kl_coef > 0,
        )

    def learner(self, shardings):
        """The jitted learner step (built once per run)."""
        if self._learn is None:
            self._learn = TR.jit_learner_step(
                self.tx,
                self.model_config,
                self.loss_config,
                self.learner_config,
                shardings,
                self.mesh,
            )
        return self._learn

    def sample_rollout(self, params, prompts, num_samples: int, key) -> R.Rollout:
        """Samples ``num_samples`` completions per prompt; the rollout stays on device."""
        toks, mask = _encode_prompts(self.tok, prompts, self.max_prompt_len, self.chat_template)
        layout = self.config.rl.get("rollout_layout", "training")
        if layout != "training":  # reshard once per RL step instead of gathering per token
            params = SMP.reshard_for_rollout(params, self.model_config, self.mesh, layout)
        out = self.sample(
            params, prompt_tokens=toks, prompt_mask=mask, num_samples=num_samples, rng=key
        )
        return R.from_sampler(out)

    def score(self, prompts, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Host side: detokenise ``[P, G, T]`` completions and score them with ``task.score_batch``."""
        return self.score_texts(prompts, tokens, mask)[0]

    def score_texts(self, prompts, tokens: np.ndarray, mask: np.ndarray):
        """``(rewards [P, G], texts)``: :meth:`score` and the decoded completions (flat list)."""
        texts = _decode(self.tok, tokens, mask)
        g = tokens.shape[1]
        paired = [prompts[i // g] for i in range(len(texts))]
        rewards = np.asarray(self.task.score_batch(paired, texts), np.float32)
        return rewards.reshape(len(prompts), g), texts

    def rollout(self, params, prompts, num_samples: int, key):
        """``(rollout, rewards [P, G])``: sample on device, score on the host."""
        ro = self.sample_rollout(params, prompts, num_samples, key)
        tokens, mask = R.completions_to_host(ro)
        return ro, self.score(prompts, tokens, mask)

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
                    )[1]
                    for i in range(0, len(prompts), ev.batch_prompts)
                ]
            )
            prefix = "eval" if split == "eval" else f"eval_{split}"
            for k, v in M.pass_at_k_table(rewards, _eval_ks(ev)).items():
                out[f"{prefix}/pass@{k}"] = v
            if not getattr(self.task, "binary", True):  # continuous rewards: E[max of k] too
                for k, v in M.maxg_at_k_table(rewards, _eval_ks(ev)).items():
                    out[f"{prefix}/maxg@{k}"] = v
                out[f"{prefix}/reward_mean"] = float(np.mean(rewards))
        return out

    # --------------------------------------------------------------------------------------------
    # One RL step, split where the host and the device hand over.

    def step(self, state, shardings, step: int, rng_host: np.ndarray) -> tuple[Any, _Pending]:
        """Samples, scores and dispatches the learner step of RL ``step``.

        Returns ``(new_state, pending)``; ``pending.metrics`` are still on device (fetch them with
        :meth:`finish`, ideally after the next step is dispatched).
        """
        t0 = time.perf_counter()
        k_sample, _ = TR.rl_keys(rng_host, step)
        prompts = [self.train_prompts[i] for i in self.batch_for(step)]
        ro = self.sample_rollout(state.params, prompts, self.config.rl.num_samples, k_sample)
        tokens, mask = R.completions_to_host(ro)  # blocks until sampled
        t1 = time.perf_counter()
        rewards, texts = self.score_texts(prompts, tokens, mask)
        t2 = time.perf_counter()
        rewards_dev = S.shard_host_array(rewards, S.replicated(self.mesh))
        state, metrics = self.learner(shardings)(state, ro, rewards_dev, np.int32(step))
        # Host work while the learner step runs: the wrong answers' diversity (Chen et al.).
        g = rewards.shape[1]
        answers = [
            [extract_answer(t) for t in texts[i * g : (i + 1) * g]] for i in range(len(prompts))
        ]
        diversity = M.negative_diversity(rewards, answers, self.learner_config.pass_threshold)
        host = {
            "time/sample_s": t1 - t0,
            "time/score_s": t2 - t1,
            **{f"train/{k}": v for k, v in diversity.items()},
        }
        if self.sync_timing:
            jax.block_until_ready(state)
            host["time/learn_s"] = time.perf_counter() - t2
        return state, _Pending(step + 1, metrics, prompts, rewards, host, t0)

    def finish(self, pending: _Pending, cum: M.CumulativeSolve, health: M.HealthMonitor):
        """Fetches a step's device metrics and completes its record (health checks included)."""
        m = jax.device_get(pending.metrics)
        rate = cum.update([p.uid for p in pending.prompts], pending.rewards)
        record = {f"train/{key}": float(v) for key, v in m.items()}
        record["train/k"] = int(m["k"])
        record["train/cum_solve_rate"] = rate
        record.update(health.update(pending.done, record))
        record.update(pending.host)
        return record


@dataclasses.dataclass
class _Pending:
    """A dispatched learner step whose metrics have not been fetched yet."""

    done: int  # the step count after this step (the record's step)
    metrics: Any  # device scalars
    prompts: list
    rewards: np.ndarray
    host: dict  # host-side values of the record (times, negative-answer diversity)
    t0: float


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
        toks, pmask = _encode_prompts(run.tok, batch_prompts, run.max_prompt_len, run.chat_template)
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
        params=_initial_params(config, run.model_config, run.mesh),
    )
    params, loss = _sft(run, state.params)
    checkpoints.save_params(path, jax.device_get(params))
    return loss


def build(config, workdir: str) -> _Run:
    """Builds the run's static parts (for notebooks / tests that drive the loop themselves)."""
    return _Run(config, workdir)


class TrainingHealthError(RuntimeError):
    """A health alarm stopped the run (``config.health.stop``) or a loss was not finite."""


CONFIG_FILE = "run_config.json"


class ConfigMismatch(V.ConfigError):
    """The workdir holds a run of a different config (``problems``: the differing keys)."""

    def __init__(self, path: str, diffs: list[tuple[str, Any, Any]]):
        self.problems = [(k, f"{k}: saved {old!r}, now {new!r}") for k, old, new in diffs]
        lines = "\n".join(f"  {msg}" for _, msg in self.problems[:20])
        more = f"\n  ... and {len(diffs) - 20} more" if len(diffs) > 20 else ""
        ValueError.__init__(
            self,
            f"the workdir's run was started with a different config ({path}; {len(diffs)} "
            f"key(s) differ):\n{lines}{more}\nUse another --workdir, or --force_resume to resume "
            "with the new config (the old one is kept next to it).",
        )


def _config_json(config: Any) -> dict[str, Any]:
    """The config as plain JSON values (tuples as lists), as it is saved in the workdir."""
    if hasattr(config, "to_json_best_effort"):
        return json.loads(config.to_json_best_effort(sort_keys=True))
    return json.loads(json.dumps(_to_dict(config), sort_keys=True, default=repr))


def _diff(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            where = f"{prefix}.{key}" if prefix else str(key)
            out += _diff(old.get(key, "<missing>"), new.get(key, "<missing>"), where)
        return out
    return [] if old == new else [(prefix or "<config>", old, new)]


def check_saved_config(
    config: Any, workdir: str, force: bool = False
) -> list[tuple[str, Any, Any]]:
    """Compares ``config`` with ``workdir/run_config.json`` (the config the run there started with).

    A first start saves it. A different saved config raises :class:`ConfigMismatch`, unless
    ``force``: then the old file is kept as ``run_config.replaced-N.json`` and the new one saved.
    Returns the differences (empty when they match). Only process 0 writes.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    new = _config_json(config)
    diffs: list[tuple[str, Any, Any]] = []
    if os.path.exists(path):
        with open(path) as f:
            diffs = _diff(json.load(f), new)
        if diffs and not force:
            raise ConfigMismatch(path, diffs)
    if jax.process_index() == 0 and (diffs or not os.path.exists(path)):
        if diffs:
            n = 1
            while os.path.exists(os.path.join(workdir, f"run_config.replaced-{n}.json")):
                n += 1
            os.replace(path, os.path.join(workdir, f"run_config.replaced-{n}.json"))
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(new, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    return diffs


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, force_resume: bool = False
) -> dict[str, float]:
    """Runs (or resumes) the RL experiment ``config`` in ``workdir``; returns the final metrics.

    The config is validated before anything else (``validate_config.validate``: a
    ``ConfigError`` names every bad key), then the workdir is locked against a second live
    process (``checkpoints.WorkdirLock``) and the config compared with the one saved there
    (``check_saved_config``: a resume with a different config raises :class:`ConfigMismatch`
    unless ``force_resume``). Writes ``workdir/run_config.json``, ``workdir/metrics.jsonl``,
    TensorBoard events in ``workdir/tensorboard``, orbax checkpoints in ``workdir/checkpoints``,
    and at the end ``workdir/curves.png``, ``final_metrics.json`` and ``train_solved.json`` (the uids
    of the training prompts solved at least once), and prints the final table.
    Restarting resumes from the newest intact checkpoint (``RunCheckpointer``); pending
    checkpoint writes are awaited before returning or raising.
    """
    V.validate(config)
    S.maybe_initialize_distributed()
    os.makedirs(workdir, exist_ok=True)
    lock = ckpt_lib.WorkdirLock(workdir) if jax.process_index() == 0 else None
    if lock is not None:
        lock.acquire()
    try:
        check_saved_config(config, workdir, force_resume)
        out = _train(config, workdir)
        if jax.process_index() == 0:
            print(M.format_final_table(out, title=f"{config.get('name', '')} ({workdir})"))
        return out
    finally:
        if lock is not None:
            lock.release()


def _train(config, workdir: str) -> dict[str, float]:
    run = _Run(config, workdir)
    rl = config.rl
    state, shardings = run.init_state()
    ckpt = ckpt_lib.RunCheckpointer(
        os.path.join(workdir, "checkpoints"), keep=config.get("keep_checkpoints", 2)
    )
    writer = None
    try:
        writer = (
            M.MetricWriter(workdir, tensorboard=config.get("tensorboard", True))
            if run.is_main
            else None
        )
        last, start = _loop(run, config, workdir, state, shardings, ckpt, writer)
    except BaseException:
        if writer is not None:
            writer.close()
        raise
    finally:
        ckpt.close()  # waits for the last asynchronous save, on error paths too
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


def _loop(run: _Run, config, workdir, state, shardings, ckpt, writer):
    rl = config.rl
    with_ref = run.loss_config.kl_coef > 0
    cum = M.CumulativeSolve(len(run.train_prompts))
    health = M.HealthMonitor(_to_dict(config.get("health", None)))

    restored = ckpt.restore_latest(state, shardings)
    for bad, why in ckpt.skipped:
        logging.warning("skipped corrupt checkpoint %d (%s)", bad, why)
    if restored is not None:
        start, state, meta = restored
        start = int(meta["step"])
        cum = M.CumulativeSolve(len(run.train_prompts), meta.get("solved", []))
        health.load(meta.get("health"))
        if writer:
            writer.truncate_after(start)
        if ckpt.skipped and run.is_main:
            print(
                f"resumed from checkpoint step {start} (skipped corrupt: "
                f"{', '.join(str(s) for s, _ in ckpt.skipped)})",
                file=sys.stderr,
                flush=True,
            )
    else:
        start = 0
        if config.sft.steps > 0:
            params, sft_loss = _sft(run, state.params)
            state = state.replace(
                params=params, ref_params=jax.tree.map(jnp.copy, params) if with_ref else None
            )
            if writer:
                writer.write(0, {"sft/loss": sft_loss})
        t0 = time.perf_counter()
        ev0 = run.evaluate(state.params, 0)  # every process: sampling is a collective
        if writer:
            writer.write(0, {**ev0, "time/eval_s": time.perf_counter() - t0})
        ckpt.save(0, state, {"step": 0, "solved": [], "health": health.state_dict()})

    rng_host = np.asarray(R._to_host(state.rng))
    last: dict[str, float] = {}
    bar = tqdm(
        range(start, rl.steps), desc="RL", initial=start, total=rl.steps, disable=not run.is_main
    )
    pending: _Pending | None = None

    def complete(p: _Pending, period_end: float, evaluate_params=None) -> None:
        """Fetches ``p``'s metrics, checks health, evaluates (if asked) and writes the record."""
        nonlocal last
        record = run.finish(p, cum, health)
        # Wall time of the whole step (sample, score, learn), eval excluded.
        record["time/step_s"] = period_end - p.t0
        fatal = _fatal_alarms(record, health)
        if not fatal and evaluate_params is not None:
            t0 = time.perf_counter()
            record.update(run.evaluate(evaluate_params, p.done))
            record["time/eval_s"] = time.perf_counter() - t0
        if writer:
            writer.write(p.done, record)
        last = record
        bar.set_postfix(
            reward=f"{record['train/reward_mean']:.2f}",
            **{
                kk.split("/")[-1]: f"{v:.2f}"
                for kk, v in record.items()
                if kk in ("eval/pass@1", f"eval/pass@{config.eval.num_samples}")
            },
        )
        if fatal:
            _raise_on_alarms(record, p.done, fatal, health, ckpt, workdir)

    for step in bar:
        state, new = run.step(state, shardings, step, rng_host)
        if pending is not None:  # step - 1's metrics, fetched while this learner step runs
            complete(pending, new.t0)
        pending = new
        done = step + 1
        eval_now = done % config.eval.every == 0 or done == rl.steps
        save_now = done % config.checkpoint_every == 0 or done == rl.steps
        if eval_now or save_now:
            # The step's metrics are checked before anything is evaluated or saved from its state.
            jax.block_until_ready(pending.metrics)
            complete(pending, time.perf_counter(), state.params if eval_now else None)
            pending = None
            if save_now:
                meta = {"step": done, "solved": sorted(cum.solved), "health": health.state_dict()}
                ckpt.save(done, state, meta)
    if pending is not None:
        jax.block_until_ready(pending.metrics)
        complete(pending, time.perf_counter())
    if run.is_main:  # which training prompts were ever solved (per-subset cumulative solve rates)
        with open(os.path.join(workdir, "train_solved.json"), "w") as f:
            json.dump({"pool_size": cum.pool_size, "solved": sorted(cum.solved)}, f)
    return last, start


def _fatal_alarms(record, health) -> list[str]:
    return [k for k in health.fired(record) if k == "nonfinite" or health.stop]


def _raise_on_alarms(record, step: int, fatal, health, ckpt, workdir: str) -> None:
    ckpt.wait()  # so that the message names a checkpoint that is really on disk
    good = ckpt.latest_step()
    where = (
        f"the newest finalised checkpoint is step {good} in {workdir}/checkpoints"
        if good is not None
        else "no checkpoint was finalised"
    )
    msgs = "; ".join(health.messages(record))
    if "nonfinite" in fatal:
        raise FloatingPointError(f"non-finite loss at RL step {step}: {msgs}; {where}.")
    raise TrainingHealthError(
        f"training-health alarm at RL step {step} (config.health.stop): {msgs}; {where}."
    )
