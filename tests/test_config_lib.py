"""Config helpers: argument parsing, mesh specs, and the shared RL sections."""

import ml_collections
import pytest

from passk_jax import config_lib


def test_parse_args_and_mesh():
    assert config_lib.parse_args("k=4, anneal,lr=1e-6,") == {"k": "4", "anneal": True, "lr": "1e-6"}
    assert config_lib.parse_args(None) == {}
    assert config_lib.parse_mesh("2x-1x1") == {"data": 2, "fsdp": -1, "tensor": 1}
    for bad in ("2x2", "2xax1", "1x1x1x1"):
        with pytest.raises(ValueError, match="mesh=DATAxFSDPxTENSOR"):
            config_lib.parse_mesh(bad)


def _sections(opts):
    c = ml_collections.ConfigDict()
    steps = int(opts.get("steps", 100))
    return config_lib.rl_sections(
        c,
        opts,
        steps=steps,
        prompts_per_step=4,
        num_samples=16,
        max_new_tokens=8,
        anneal_at=int(0.6 * steps),
        loss={"policy_loss": "ppo", "num_microbatches": 2},
        learning_rate=1e-5,
        warmup_steps=3,
        eval_every=10,
        eval_prompts=None,
        eval_batch_prompts=4,
        checkpoint_every=20,
    )


def test_rl_sections_defaults_and_overrides():
    c = _sections({})
    assert c.k_schedule.to_dict() == {"kind": "constant", "k": 4}
    assert c.advantage == "pkpo_sloo_minus_one"
    assert c.loss.num_microbatches == 2 and c.loss.policy_loss == "ppo"
    assert c.loss.aggregation == "seq_mean_token_sum"
    assert c.optimizer.learning_rate == 1e-5 and c.eval.num_samples == c.rl.num_samples == 16
    c = _sections({"anneal": True, "steps": "50", "micro": "4", "lr": "2e-6", "ent": "0.01"})
    assert c.k_schedule.to_dict() == {"kind": "step", "k_start": 8, "k_end": 1, "at": 30}
    assert c.rl.steps == 50 and c.loss.num_microbatches == 4
    assert c.optimizer.learning_rate == 2e-6 and c.loss.entropy_coef == 0.01
    assert config_lib.schedule_label({"anneal": True}) == "8->1"
    assert config_lib.schedule_label({"k": "2"}) == "2"
