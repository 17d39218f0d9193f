"""PKPO's MATH setup: Gemma-2 2B from a local checkpoint, n = 16 samples, ``sloo_minus_one`` rewards.

Question: on MATH (Hendrycks), does optimising pass@k with k_opt in {1, 2, 4, 8} (PKPO's
``s^(loo-1)`` transform, spec/pkpo.md section 5) raise held-out pass@k for k > 1 over k_opt = 1, and
does annealing k_opt 8 -> 1 at step 1500 (PKPO Figure 3) keep pass@1 while keeping the pass@k gain?

Setup from the paper: Gemma-2 2B, n = 16 completions per prompt, rewards transformed by
``sloo_minus_one`` (k_opt = 1 is the plain leave-one-out centred reward, "without which the training
diverges"), ~16 prompts per step (750 steps per epoch of the 12,000-problem MATH train split),
evaluation of unbiased pass@{1, 2, 4, 8, 16} on held-out problems, cumulative solve rate, entropy.

Our choices (the paper does not state them; spec/pkpo.md "Not stated"): learning rate 1e-6 with 10
warm-up steps, AdamW without weight decay, global-norm clipping at 1; PPO-clip surrogate with clip 0.2
(one update per batch, so it is on-policy: the ratio only absorbs sampler / learner numerical
differences); no KL term; ``seq_mean_token_sum`` aggregation (unbiased for PKPO); sampling at
temperature 1 without top-k / top-p; prompts up to 512 tokens (longer ones keep their last 512),
completions up to 1024 tokens; 3000 steps (4 epochs); evaluation every 250 steps on 500 test problems.
No chat template: the prompt is the problem plus "Put your final answer within \\boxed{}." (the base
checkpoint is the default; an ``-it`` checkpoint works the same way).

Data: MATH as JSONL (``problem``, ``solution``, optional ``answer``; e.g. the PRM800K 12,000 / 500
re-split as ``DIR/train.jsonl`` and ``DIR/test.jsonl``), or a locally built TFDS dataset with the MATH
fields (``tfds=NAME``, ``tfds_dir=DIR``). Nothing is downloaded.

Model: a local Hugging Face ``google/gemma-2-2b`` snapshot (``format=hf``, the default; config.json +
safetensors) or the official Flax checkpoint (``format=flax``); the SentencePiece ``tokenizer.model``
(256,000 pieces, which is the model's vocabulary) from the same release. Parameters and optimizer state
are float32, compute is bfloat16 (``model.overrides.dtype``); softmax and log-probs stay float32.

Hardware and mesh (``mesh=DATAxFSDPxTENSOR``, -1 = the remaining devices; default ``1x-1x1``, i.e.
FSDP / ZeRO-3 over every device, which is what a 2B model wants):

* TPU v5e-128 (PKPO's v5litepod-128, 16 GiB HBM per chip): ``mesh=1x128x1`` (= the default),
  ``micro=2``: 256 sequences per step = 2 per chip, one per micro-batch. Compiled ahead of time for
  v5e:8x16 at 512 + 1024 tokens with this config's levers (full remat, activations on the batch
  axes) and the RL learner step's shared prompt pass (one per group of 16 samples): 10.94 GB per
  chip (0.28 GB arguments, 10.66 GB temporaries), so it fits; 4 sequences per chip do not
  (16.28 GB). The rollout needs 0.55 GB (prefill) / 1.13 GB (decode) per chip
  (``benchmarks/results/plan.md``).
* TPU v5e-16 (4x4): ``mesh=1x16x1`` (= the default); planned at 512 + 512 tokens with ``micro=1``
  (every sequence of a chip in one pass): 10.60 GB per chip at 2 sequences per chip, 14.72 GB at 4;
  5 do not fit (16.21 GB) (``benchmarks/results/plan_2b_v5e4x4.json``).
* one 8-GPU host (8 x H100 80 GB): ``mesh=1x8x1`` (= the default), ``micro=8`` (4 sequences per GPU
  per micro-batch).
* Multi-host: run the same command on every host with ``PASSK_DISTRIBUTED=1`` (TPU pods, SLURM) or
  ``PASSK_COORDINATOR=host:port PASSK_NUM_PROCESSES=N PASSK_PROCESS_ID=i``.

Expected wall-clock and metrics: PKPO reports ~4 h per 1000 steps for the 2B model on a
v5litepod-128, so ~12 h for the default 3000 steps (our implementation has not yet been timed at this
scale; see benchmarks/results/train_step*.md). PKPO's held-out MATH pass@k (Table 7, Gemma-2 2B,
mean of 3 seeds, in %; spec/pkpo.md section 5):

    k_opt \\ pass@   1      2      4      8      16
    1               15.91  18.12  23.37  29.58  35.02
    2               15.15  20.73  25.81  31.96  37.75
    4               14.86  19.86  27.59  34.27  38.91
    8               14.19  19.33  26.45  35.49  40.73

i.e. each pass@k column peaks at k_opt = k (pass@16 at k_opt = 8) and constant k_opt > 1 costs 1-2
points of pass@1; ``anneal`` (Figure 3, no numbers given) should keep pass@1 while keeping the pass@k
gain. With ``model=9b`` compare with Table 1 (k_opt = 1: 22.24 / 42.59 at pass@1 / pass@16; k_opt = 8:
20.69 / 48.37). Report the mean and standard error over 3 seeds (``seed=0,1,2``).

Commands (one run per k_opt, each in its own workdir; a killed run resumes from its last checkpoint)::

    passk-train \\
        --config gemma2_2b_math:k=4,ckpt=$HOME/models/gemma-2-2b,data=$HOME/data/math \\
        --workdir runs/gemma2_2b_math/k4_seed0
    # k_opt in {1, 2, 4, 8}: k=1 / k=2 / k=4 / k=8;  the 8 -> 1 anneal: anneal;  [TZSM25]: k=16

Arguments (comma-separated ``key=value`` or flags):

* ``k=N``: constant k_opt (default 4); ``anneal``: k_opt 8 until ``anneal_at`` (default 1500), then 1.
* ``model=2b|9b|27b`` (default 2b; 9b is PKPO's Table 1 setup, then use the 9B mesh advice of
  ``gemma2_9b_arc.py``; 27b is not a PKPO setup: on v5e-128 with ``micro=2`` it plans at 13.52 GB
  per chip with ``matmul_projections=False`` (separate gate / up einsums) and a prompt pass per row,
  both of which ``model=27b`` sets, and its rollout at 2.59 / 4.87 GB (prefill / decode);
  ``benchmarks/results/plan.md``).
* ``ckpt=PATH`` (default ``~/models/gemma-2-2b``, or ``-9b`` / ``-27b``), ``format=hf|flax`` (default hf),
  ``tokenizer=PATH`` (default ``CKPT/tokenizer.model``).
* ``data=DIR`` (``DIR/train.jsonl`` + ``DIR/test.jsonl``; default ``~/data/math``) or
  ``train=PATH,eval=PATH``; or ``tfds=NAME[,tfds_dir=DIR]``.
* ``mesh=DxFxT`` (default ``1x-1x1``), ``micro=N`` gradient-accumulation steps (default 8).
* ``seed=N``, ``steps=N``, ``lr=X``, ``ent=X`` (entropy bonus: PKPO's EntropyReg baseline, swept over
  {0.001, 0.005, 0.01, 0.05, 0.1}), ``adv=NAME`` (any key of ``passk_jax.advantages.ADVANTAGES``).
* ``quick``: a CPU smoke test of this exact pipeline with tiny stand-ins (``tests/test_llm_configs.py``):
  the ``tiny`` architecture (the checkpoint at ``ckpt`` must have it; random weights if no ``ckpt``),
  the SentencePiece model at ``tokenizer``, JSONL fixtures at ``train`` / ``eval``, 2 RL steps of 2
  prompts x 16 samples x 8 new tokens, 2 micro-batches, float32, all local devices on ``fsdp``
  (the rl loop's mesh always spans every device). Seconds on a laptop.
"""

import os

import ml_collections

from passk_jax import config_lib

_N = 16  # samples per prompt (PKPO: n = 16 at every step)


ARGS = {
    **config_lib.RL_ARGS,
    "model": "2b|9b|27b (default 2b; 27b is not a PKPO setup)",
    "ckpt": "local checkpoint directory (default ~/models/gemma-2-SIZE)",
    "format": "hf|flax checkpoint format (default hf)",
    "tokenizer": "SentencePiece model (default CKPT/tokenizer.model)",
    "data": "directory with train.jsonl and test.jsonl (default ~/data/math)",
    "train": "training JSONL (overrides data)",
    "eval": "held-out JSONL (overrides data)",
    "tfds": "a locally built TFDS dataset with the MATH fields",
    "tfds_dir": "TFDS data directory (with tfds)",
}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    opts = config_lib.parse_args(arg, ARGS)
    quick = bool(opts.get("quick"))
    size = opts.get("model", "2b")
    if size not in ("2b", "9b", "27b"):
        raise ValueError(f"model=2b|9b|27b, got {size!r}")
    ckpt = opts.get("ckpt", "" if quick else f"~/models/gemma-2-{size}")
    c = ml_collections.ConfigDict()
    c.seed = int(opts.get("seed", 0))

    # ---- task --------------------------------------------------------------------------------------
    if "tfds" in opts:
        kwargs = {"source": "tfds", "tfds_name": opts["tfds"], "tfds_splits": ("train", "test")}
        if "tfds_dir" in opts:
            kwargs["tfds_data_dir"] = opts["tfds_dir"]
    else:
        data = opts.get("data", "~/data/math")
        kwargs = {
            "source": "jsonl",
            "train_path": os.path.expanduser(opts.get("train", os.path.join(data, "train.jsonl"))),
            "eval_path": os.path.expanduser(opts.get("eval", os.path.join(data, "test.jsonl"))),
        }
    kwargs["shuffle_seed"] = 0  # a fixed problem order: `seed` changes the data order, not this
    c.task = ml_collections.ConfigDict({"name": "math", "kwargs": kwargs})

    # ---- model / tokenizer -------------------------------------------------------------------------
    c.tokenizer = "sentencepiece"
    c.tokenizer_path = os.path.expanduser(
        opts.get("tokenizer", os.path.join(ckpt, "tokenizer.model") if ckpt else "")
    )
    c.max_prompt_len = 64 if quick else 512  # our choice; longer prompts keep their last tokens
    config_lib.pretrained_model_sections(c, opts, kind=f"gemma2_{size}", ckpt=ckpt, quick=quick)
    big = size == "27b" and not quick
    if big:  # planned on v5e:8x16, per row: 13.52 GB per chip, 20.05 GB with the fused matmuls
        c.model.overrides["matmul_projections"] = False

    # ---- RL ----------------------------------------------------------------------------------------
    config_lib.rl_sections(
        c,
        opts,
        steps=2 if quick else 3000,
        prompts_per_step=2 if quick else 16,
        num_samples=_N,
        max_new_tokens=8 if quick else 1024,
        anneal_at=1 if quick else 1500,
        loss={
            "policy_loss": "ppo",
            "clip_low": 0.2,
            "clip_high": 0.2,
            "num_microbatches": 2 if quick else 8,
            # 27B: the shared prompt pass does not fit a v5e chip (50.23 GB, plan.md)
            "share_prompts": not big,
        },
        learning_rate=1e-6,
        warmup_steps=0 if quick else 10,
        eval_every=2 if quick else 250,
        eval_prompts=2 if quick else 500,
        eval_batch_prompts=2 if quick else 16,
        checkpoint_every=2 if quick else 100,
    )
    c.name = f"gemma2_{size} math {c.advantage} k={config_lib.schedule_label(opts)} seed={c.seed}"
    config_lib.plugin_sections(c, opts)
    return c
