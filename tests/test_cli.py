"""The training command as a user meets it: shipped configs by name, ``--help`` per config, unknown
arguments refused, the resolved config saved in the workdir and a mismatched resume refused, the
final table printed, and ``module:attr`` plug-in rewards / tasks that train.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from passk_jax import config_lib

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSK_")}
    env.update(JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", "passk_jax.main", *args],
        cwd=cwd,  # not the checkout: shipped configs are found by name from anywhere
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ----------------------------------------------------------------------------------------------------
# Config arguments.


def test_unknown_and_repeated_arguments_are_errors():
    known = {"k": "", "anneal": "", "steps": ""}
    assert config_lib.parse_args("k=4, anneal", known) == {"k": "4", "anneal": True}
    with pytest.raises(config_lib.ConfigArgError, match=r"unknown config argument 'kk' \(did you"):
        config_lib.parse_args("kk=8", known)
    with pytest.raises(config_lib.ConfigArgError, match="given twice"):
        config_lib.parse_args("k=4,k=8", known)
    assert config_lib.parse_args("anything=1") == {"anything": "1"}  # no ARGS: not checked


@pytest.mark.parametrize("name", config_lib.config_names())
def test_every_shipped_config_declares_and_checks_its_arguments(name):
    assert name in ("maze_tiny", "gemma2_2b_math", "gemma2_9b_arc")
    path, _ = config_lib.config_path(name)
    module = config_lib.load_module(path)
    assert set(config_lib.RL_ARGS) <= set(module.ARGS)
    with pytest.raises(config_lib.ConfigArgError, match="'kk'"):
        module.get_config("quick,kk=8")
    text = config_lib.describe(name)
    assert module.__doc__.strip().splitlines()[0] in text
    for arg, help_text in module.ARGS.items():
        assert f"  {arg}" in text and help_text in text
    # Every shipped config takes the plug-in keys.
    c = config_lib.load_config(f"{name}:quick,reward=mod:fn,chat=gemma")
    assert (c.task.reward, c.task.reward_binary, c.chat_template) == ("mod:fn", False, "gemma")


def test_config_names_and_paths_resolve_the_same_file():
    by_name = config_lib.load_config("maze_tiny:quick,k=2")
    by_path = config_lib.load_config(
        str(ROOT / "passk_jax" / "configs" / "maze_tiny.py") + ":quick,k=2"
    )
    assert by_name.to_dict() == by_path.to_dict()
    with pytest.raises(FileNotFoundError, match="maze_tiny"):
        config_lib.load_config("maze_tinyy:quick")


def test_cli_help_per_config_and_unknown_argument(tmp_path):
    out = _cli("--config", "maze_tiny", "--help", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Arguments (after ':'" in out.stdout and "hard" in out.stdout
    assert "5x5 text mazes" in out.stdout  # the config's docstring
    bad = _cli("--config=maze_tiny:quick,kk=8", f"--workdir={tmp_path / 'w'}", cwd=tmp_path)
    assert bad.returncode == 2
    assert "unknown config argument 'kk' (did you mean 'k'?)" in bad.stderr
    assert not (tmp_path / "w").exists()  # refused before anything was made


# ----------------------------------------------------------------------------------------------------
# Saved config, mismatched resume.


def test_saved_config_and_mismatch(tmp_path):
    from passk_jax import rl

    c = config_lib.load_config("maze_tiny:quick")
    assert rl.check_saved_config(c, str(tmp_path)) == []
    saved = json.loads((tmp_path / "run_config.json").read_text())
    assert saved["optimizer"]["learning_rate"] == c.optimizer.learning_rate
    assert rl.check_saved_config(c, str(tmp_path)) == []  # same config: resumes
    other = config_lib.load_config("maze_tiny:quick,lr=0.01,k=2")
    with pytest.raises(rl.ConfigMismatch) as e:
        rl.check_saved_config(other, str(tmp_path))
    assert {k for k, _ in e.value.problems} == {"optimizer.learning_rate", "k_schedule.k", "name"}
    assert "--force_resume" in str(e.value)
    assert json.loads((tmp_path / "run_config.json").read_text()) == saved  # untouched
    diffs = rl.check_saved_config(other, str(tmp_path), force=True)
    assert {k for k, _, _ in diffs} == {"optimizer.learning_rate", "k_schedule.k", "name"}
    assert json.loads((tmp_path / "run_config.replaced-1.json").read_text()) == saved
    assert json.loads((tmp_path / "run_config.json").read_text())["k_schedule"]["k"] == 2


def test_cli_refuses_a_mismatched_resume(tmp_path):
    """A workdir with a saved config and a metrics file: the CLI with another ``lr`` exits 2,
    naming the key, and writes nothing."""
    from passk_jax import rl

    work = tmp_path / "run"
    work.mkdir()
    rl.check_saved_config(config_lib.load_config("maze_tiny:quick"), str(work))
    (work / "metrics.jsonl").write_text('{"step": 0}\n')
    before = sorted(p.name for p in work.iterdir())
    out = _cli("--config=maze_tiny:quick,lr=0.01", f"--workdir={work}", cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "optimizer.learning_rate: saved 0.0003, now 0.01" in out.stderr
    assert sorted(p.name for p in work.iterdir()) == before
    assert (work / "metrics.jsonl").read_text() == '{"step": 0}\n'


# ----------------------------------------------------------------------------------------------------
# Plug-ins.

_PLUGIN = '''
import math
import time

from passk_jax.tasks import make_task


def length_reward(prompt, completion):
    """Continuous and above 1: 2, 3 or 4 by the completion's length."""
    return 2.0 + len(completion) % 3


def hostile(prompt, completion):
    if completion == "raise":
        raise RuntimeError("boom")
    if completion == "inf":
        return math.inf
    if completion == "nan":
        return float("nan")
    if completion == "sleep":
        time.sleep(30)
    if completion == "half":
        return 0.5
    return -7.5 if completion == "neg" else 1.0


def small_maze():
    return make_task("maze", sizes=(5,), num_train=4, num_eval=2, num_hard=2)
'''


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    name = f"passk_plugin_{os.getpid()}_{time.monotonic_ns()}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(_PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_plugin_reward_scores_in_workers_with_failures_contained(plugin_module):
    from passk_jax.tasks import build_task
    from passk_jax.tasks.base import ScorerConfigError

    cfg = {"name": f"{plugin_module}:small_maze", "reward": f"{plugin_module}:hostile"}
    task = build_task(cfg)
    assert task.binary is False and task.splits == ("train", "eval", "hard")
    assert len(task.prompts("train")) == 4  # the plug-in task's own prompts
    task.score_deadline_s = 2.0
    p = task.prompts("train")[0]
    texts = ["ok", "neg", "raise", "inf", "nan", "sleep", "half"]
    t0 = time.perf_counter()
    r = task.score_batch([p] * len(texts), texts)
    # Unclamped continuous values; every failure (exception, inf, nan, overrun) gives on_error.
    assert r.tolist() == [1.0, -7.5, 0.0, 0.0, 0.0, 0.0, 0.5]
    assert time.perf_counter() - t0 < 20  # the sleeping completion was killed at its deadline
    task.close_scorers()

    binary = build_task({**cfg, "reward_binary": True, "reward_on_error": 0.0})
    assert binary.binary is True
    assert binary.score_batch([p, p], ["ok", "raise"]).tolist() == [1.0, 0.0]
    with pytest.raises(ScorerConfigError, match="declared binary but returned 0.5"):
        binary.score_batch([p], ["half"])
    binary.close_scorers()
    with pytest.raises(ValueError, match="has no 'nope'"):
        build_task({**cfg, "reward": f"{plugin_module}:nope"})
    with pytest.raises(ValueError, match="cannot import module"):
        build_task({**cfg, "reward": "no_such_module_xyz:fn"})


def test_plugin_reward_trains_unclamped_and_prints_the_final_table(plugin_module, tmp_path, capsys):
    """``reward=module:attr`` on the quick maze config: the run trains on the plug-in's continuous
    rewards (2..4, not clamped to [0, 1]), evaluates maxg@k, saves its config, prints the table."""
    from passk_jax import rl

    config = config_lib.load_config(f"maze_tiny:quick,steps=2,reward={plugin_module}:length_reward")
    config.sft.steps = 0
    config.eval.every = 2
    final = rl.train_and_evaluate(config, str(tmp_path / "run"))
    assert 2.0 <= final["train/reward_mean"] <= 4.0 and final["train/reward_mean"] > 1.0
    assert math.isfinite(final["train/loss"])
    assert 2.0 <= final["eval/maxg@1"] <= final["eval/maxg@8"] <= 4.0
    assert final["eval/pass@1"] == 1.0  # every reward >= the pass threshold 1
    saved = json.loads((tmp_path / "run" / "run_config.json").read_text())
    assert saved["task"]["reward"] == f"{plugin_module}:length_reward"
    printed = capsys.readouterr().out
    assert "final metrics" in printed and "| eval | maxg@k |" in printed
    row = next(line for line in printed.splitlines() if line.startswith("| eval | maxg@k |"))
    assert f"{final['eval/maxg@8']:.3f}" in row


@pytest.mark.parametrize("adv", ["passk", "entropy_adaptive"])
def test_binary_only_methods_refused_for_a_continuous_plugin(plugin_module, adv):
    from passk_jax import rl, validate_config

    config = config_lib.load_config(
        f"maze_tiny:quick,adv={adv},reward={plugin_module}:length_reward"
    )
    with pytest.raises(validate_config.ConfigError, match="needs binary rewards"):
        rl.build(config, "/nonexistent")


def test_chat_template_needs_the_turn_pieces():
    """``chat=gemma`` with the maze's char tokenizer fails when the run is built, not mid-run."""
    from passk_jax import rl

    config = config_lib.load_config("maze_tiny:quick,chat=gemma")
    with pytest.raises(ValueError, match="char tokenizer has no '<start_of_turn>'"):
        rl.build(config, "/nonexistent")
