"""Config validation runs before any work: each bad value is refused with a message naming its key."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from passk_jax import rl
from passk_jax import validate_config as V

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "passk_jax" / "configs" / "maze_tiny.py")


def _quick(arg: str = ""):
    spec = importlib.util.spec_from_file_location("maze_tiny_v", CONFIG)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config(",".join(filter(None, ["quick", arg])))


def _set(c, dotted, value):
    *path, last = dotted.split(".")
    node = c
    for p in path:
        node = node[p]
    node[last] = value
    return c


# (description, config edit, key the message must name)
BAD = [
    ("k > n", lambda c: _set(c, "k_schedule.k", 9), "k_schedule.k"),
    ("anneal start > n", lambda c: _set(c, "k_schedule", {"kind": "step", "k_start": 16,
                                                           "k_end": 1, "at": 2}), "k_schedule.k_start"),
    ("k = 0", lambda c: _set(c, "k_schedule.k", 0), "k_schedule.k"),
    ("steps = -1", lambda c: _set(c, "rl.steps", -1), "rl.steps"),
    ("steps = 0", lambda c: _set(c, "rl.steps", 0), "rl.steps"),
    ("eval.every = 0", lambda c: _set(c, "eval.every", 0), "eval.every"),
    ("checkpoint_every = 0", lambda c: _set(c, "checkpoint_every", 0), "checkpoint_every"),
    ("prompts_per_step = 0", lambda c: _set(c, "rl.prompts_per_step", 0), "rl.prompts_per_step"),
    ("num_samples = 0", lambda c: _set(c, "rl.num_samples", 0), "rl.num_samples"),
    ("eval.batch_prompts = 0", lambda c: _set(c, "eval.batch_prompts", 0), "eval.batch_prompts"),
    ("eval.num_samples = 0", lambda c: _set(c, "eval.num_samples", 0), "eval.num_samples"),
    ("sft.batch_size = 0", lambda c: _set(c, "sft.batch_size", 0), "sft.batch_size"),
    ("max_new_tokens = 0", lambda c: _set(c, "rl.max_new_tokens", 0), "rl.max_new_tokens"),
    ("learning rate 0", lambda c: _set(c, "optimizer.learning_rate", 0.0), "optimizer.learning_rate"),
    ("unknown advantage", lambda c: _set(c, "advantage", "pkpo_slo"), "advantage"),
    ("unknown schedule", lambda c: _set(c, "k_schedule", {"kind": "cosine", "k": 2}), "k_schedule.kind"),
    ("unknown task", lambda c: _set(c, "task.name", "mazes"), "task.name"),
    ("unknown aggregation", lambda c: _set(c, "loss.aggregation", "mean"), "loss.aggregation"),
    ("phase k > n", lambda c: _set(c, "phases", [(2, "grpo", 1), (4, "passk", 12)]), "phases[1]"),
    ("temperature 0", lambda c: _set(c, "rl.temperature", 0.0), "rl.temperature"),
    ("split sampling spec", lambda c: _set(c, "loss.temperature", 0.7), "loss.temperature"),
    ("micro-batches", lambda c: _set(c, "loss.num_microbatches", 5), "loss.num_microbatches"),
    ("share_prompts not a bool", lambda c: _set(c, "loss.share_prompts", "yes"), "loss.share_prompts"),
    ("unknown micro_split", lambda c: _set(c, "loss.micro_split", "interleaved"), "loss.micro_split"),
    ("eval.ks > n", lambda c: _set(c, "eval.ks", [16]), "eval.ks"),
    ("bool steps", lambda c: _set(c, "rl.steps", True), "rl.steps"),
    ("rollout layout", lambda c: _set(c, "rl.rollout_layout", "fsdp"), "rl.rollout_layout"),
]  # fmt: skip


@pytest.mark.parametrize("edit,key", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_value_refused_before_any_work(tmp_path, edit, key):
    c = edit(_quick())
    with pytest.raises(V.ConfigError) as e:
        V.validate(c)
    assert key in [k for k, _ in e.value.problems], str(e.value)
    assert key in str(e.value)
    workdir = tmp_path / "run"
    t0 = time.perf_counter()
    with pytest.raises(V.ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        rl.train_and_evaluate(c, str(workdir))
    assert not workdir.exists()  # nothing created: no warm start, no checkpoint, no metrics
    assert time.perf_counter() - t0 < 5


def test_good_configs_pass_and_problems_are_all_listed():
    V.validate(_quick())
    V.validate(_quick("anneal"))
    V.validate(_set(_quick(), "loss.share_prompts", False))
    V.validate(_set(_quick(), "phases", [(2, "grpo", 1), (4, "passk", 4)]))
    c = _set(_set(_quick(), "rl.steps", 0), "eval.every", 0)
    with pytest.raises(V.ConfigError, match=r"2 problem") as e:
        V.validate(c)
    assert [k for k, _ in e.value.problems] == ["rl.steps", "eval.every"]


def test_binary_only_advantage_on_continuous_task():
    """``passk`` (Chen et al. analytical) needs 0/1 rewards; a continuous task is refused."""
    from passk_jax.tasks import make_task

    task = make_task("reasoning_gym", dataset="chain_sum", num_train=4, num_eval=2)
    assert not task.binary
    c = _set(_quick(), "advantage", "passk")
    V.validate(c)  # fine without the task
    with pytest.raises(V.ConfigError, match="advantage = 'passk': needs binary rewards"):
        V.validate(c, task)
    V.validate(_quick(), task)  # the default (PKPO, maxg@k) works with continuous rewards
    c = _set(_quick(), "phases", [(2, "grpo", 1), (4, "passk_combination", 4)])
    with pytest.raises(V.ConfigError, match=r"phases\[1\]"):
        V.validate(c, task)
    maze = make_task("maze", sizes=(5,), num_train=4, num_eval=2, num_hard=2)
    with pytest.raises(V.ConfigError, match="eval.splits"):
        V.validate(_set(_quick(), "eval.splits", ("eval", "hardest")), maze)


def _cli(args: list[str], workdir: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSK_")}
    env["JAX_PLATFORMS"] = "cpu"
    return subprocess.run(
        [sys.executable, "-m", "passk_jax.main", *args, f"--workdir={workdir}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "args,key",
    [
        ([f"--config={CONFIG}:quick,k=9"], "k_schedule.k"),
        ([f"--config={CONFIG}:quick,steps=-1"], "rl.steps"),
        ([f"--config={CONFIG}:quick", "--config.eval.every=0"], "eval.every"),
        ([f"--config={CONFIG}:quick", "--config.checkpoint_every=0"], "checkpoint_every"),
        ([f"--config={CONFIG}:quick", "--config.rl.prompts_per_step=0"], "rl.prompts_per_step"),
    ],
    ids=["k>n", "steps=-1", "eval.every=0", "checkpoint_every=0", "prompts_per_step=0"],
)
def test_cli_exits_nonzero_naming_the_key(tmp_path, args, key):
    workdir = tmp_path / "run"
    proc = _cli(args, workdir)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert key in proc.stderr and "invalid config" in proc.stderr
    assert "warm start" not in proc.stderr + proc.stdout  # refused before the warm start
    assert not workdir.exists()


def test_cli_override_typo_still_reported(tmp_path):
    proc = _cli([f"--config={CONFIG}:quick", "--config.rl.stepz=3"], tmp_path / "run")
    assert proc.returncode != 0 and "stepz" in proc.stderr
    assert not (tmp_path / "run").exists()
