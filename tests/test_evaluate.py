"""passk-eval on a saved quick-run checkpoint writes pass@k / maxg@k with CIs and the completions;
passk-export of the same checkpoint loads in transformers with the JAX model's logits."""

import json
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from passk_jax import estimators as E
from passk_jax import evaluate as EV

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = f"{ROOT}/passk_jax/configs/maze_tiny.py:quick,steps=1"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """A real (tiny) RL run: 5 warm-start steps, 1 RL step, checkpoints in workdir/checkpoints."""
    from passk_jax import rl

    workdir = str(tmp_path_factory.mktemp("quick_run"))
    config = EV.load_config(CONFIG)
    config.sft.steps = 5
    config.eval.num_prompts = 4
    rl.train_and_evaluate(config, workdir)
    return workdir


def test_summarize_mean_se_and_bootstrap_interval():
    v = np.array([0.0, 0.25, 0.5, 1.0, 1.0, 0.75])
    s = EV.summarize(v)
    assert s["mean"] == pytest.approx(v.mean())
    assert s["se"] == pytest.approx(v.std(ddof=1) / np.sqrt(6))
    lo, hi = s["ci95"]
    assert lo < s["mean"] < hi and 0 <= lo and hi <= 1
    assert EV.summarize(v) == s  # seeded: reproducible
    one = EV.summarize(np.array([0.3]))
    assert one["mean"] == pytest.approx(0.3) and np.isnan(one["se"])
    with pytest.raises(ValueError, match="outside"):
        EV._ks(8, [9])


def test_evaluate_writes_passk_and_completions(quick_run, tmp_path):
    out = tmp_path / "eval"
    metrics = EV.run(
        [
            "--config", CONFIG, "--checkpoint", quick_run, "--out", str(out),
            "--num_prompts", "4", "--num_samples", "4", "--ks", "3", "--seed", "5",
        ]
    )  # fmt: skip
    assert (out / "eval_metrics.json").exists()
    saved = json.loads((out / "eval_metrics.json").read_text())
    assert saved["pass@k"] == metrics["pass@k"] and saved["checkpoint"] == os.path.abspath(
        quick_run
    )
    assert sorted(map(int, saved["pass@k"])) == [1, 2, 3, 4]
    lines = [json.loads(x) for x in (out / "completions.jsonl").read_text().splitlines()]
    assert len(lines) == 4 * 4
    assert {x["sample"] for x in lines} == {0, 1, 2, 3} and {x["prompt_index"] for x in lines} == {
        0,
        1,
        2,
        3,
    }
    # the recorded rewards are the task's scores of the recorded completions
    parts = EV.build_parts(EV.load_config(CONFIG))
    prompts = {p.uid: p for p in parts.task.prompts("eval", 4)}
    for x in lines:
        assert prompts[x["uid"]].text == x["prompt"]
        assert parts.task.score(prompts[x["uid"]], x["completion"]) == x["reward"]
    # pass@k / maxg@k are the unbiased estimates recomputed from the completions file
    r = np.zeros((4, 4))
    for x in lines:
        r[x["prompt_index"], x["sample"]] = x["reward"]
    for k in (1, 2, 3, 4):
        want = float(np.mean(E.pass_at_k((r >= 1).sum(-1), 4, k)))
        assert saved["pass@k"][str(k)]["mean"] == pytest.approx(want, abs=1e-6)
        want_g = float(np.mean(E.maxg_at_k(r.astype(np.float32), k)))
        assert saved["maxg@k"][str(k)]["mean"] == pytest.approx(want_g, abs=1e-6)
        lo, hi = saved["pass@k"][str(k)]["ci95"]
        assert lo <= saved["pass@k"][str(k)]["mean"] <= hi


def test_load_params_accepts_workdir_and_step_dir(quick_run):
    from passk_jax import checkpoints
    from passk_jax.models import gemma2

    parts = EV.build_parts(EV.load_config(CONFIG))
    ckpts = os.path.join(quick_run, "checkpoints")
    assert EV._latest_step_dir(ckpts) == os.path.join(ckpts, "1")  # the newest step
    latest = EV.load_params(quick_run, parts.model_config)
    saved = checkpoints.restore_params(os.path.join(ckpts, "1", "state"))["params"]
    step_dir = EV.load_params(os.path.join(ckpts, "1"), parts.model_config)
    init = gemma2.init_params(parts.model_config, jax.random.key(0))
    for a, b, c in zip(*map(jax.tree.leaves, (latest, saved, step_dir)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
    # trained weights, not a fresh initialisation
    assert any(not np.allclose(a, d) for a, d in zip(*map(jax.tree.leaves, (latest, init))))
    with pytest.raises(FileNotFoundError):
        EV.load_params(os.path.join(quick_run, "nope"), parts.model_config)


@pytest.mark.parity
def test_export_cli_from_quick_run_checkpoint(quick_run, tmp_path):
    import torch
    import transformers

    from passk_jax import export
    from passk_jax.models import gemma2

    out = tmp_path / "hf"
    export.main(["--config", CONFIG, "--checkpoint", quick_run, "--out", str(out)])
    parts = EV.build_parts(EV.load_config(CONFIG))
    params = EV.load_params(quick_run, parts.model_config)
    model = transformers.Gemma2ForCausalLM.from_pretrained(str(out)).eval()
    tokens = np.asarray([parts.tokenizer.encode(p.text) for p in parts.task.prompts("eval", 2)])
    with torch.no_grad():
        ref = model(torch.tensor(tokens)).logits.numpy()
    ours = np.asarray(gemma2.forward(params, jnp.asarray(tokens), parts.model_config))
    assert np.abs(ours - ref).max() < 1e-4
    assert (
        json.loads((out / "passk_tokenizer.json").read_text())["alphabet"]
        == parts.tokenizer.alphabet
    )
