"""The verl and TRL recipes against small stand-ins of the interfaces they use (no verl / TRL installed).

The stand-ins reproduce the parts of each library the recipes touch: verl's estimator registry and the
keyword call its PPO trainer makes; TRL's GRPOTrainer flow (gathered rewards from _calculate_rewards,
GRPO advantages, this process's slice in output["advantages"]).
"""

import sys
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from passk_jax import advantages as A  # noqa: E402
from passk_jax import torch_api  # noqa: E402
from passk_jax.recipes import trl as trl_recipe  # noqa: E402
from passk_jax.recipes import verl as verl_recipe  # noqa: E402

# ----------------------------------------------------------------------------------------------------
# verl stand-in.


def _fake_verl(monkeypatch):
    registry = {}

    def register_adv_est(name):
        def decorator(fn):
            if name in registry and registry[name] is not fn:
                raise ValueError(f"adv estimator {name} has already been registered")
            registry[name] = fn
            return fn

        return decorator

    def get_adv_estimator_fn(name):
        if name not in registry:
            raise ValueError(f"Unknown advantage estimator: {name}")
        return registry[name]

    core_algos = types.ModuleType("verl.trainer.ppo.core_algos")
    core_algos.register_adv_est = register_adv_est
    core_algos.get_adv_estimator_fn = get_adv_estimator_fn
    core_algos.ADV_ESTIMATOR_REGISTRY = registry
    mods = {
        "verl": types.ModuleType("verl"),
        "verl.trainer": types.ModuleType("verl.trainer"),
        "verl.trainer.ppo": types.ModuleType("verl.trainer.ppo"),
        "verl.trainer.ppo.core_algos": core_algos,
    }
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return core_algos


def _verl_compute_advantage(core_algos, batch, non_tensor_batch, adv_estimator, config=None):
    """What verl's ray trainer does for a registered (non-GAE, non-GRPO) estimator."""
    fn = core_algos.get_adv_estimator_fn(adv_estimator)
    kwargs = {
        "token_level_rewards": batch["token_level_rewards"],
        "response_mask": batch["response_mask"],
        "config": config,
    }
    if "uid" in non_tensor_batch:
        kwargs["index"] = non_tensor_batch["uid"]
    adv, ret = fn(**kwargs)
    batch["advantages"], batch["returns"] = adv, ret
    return batch


def _verl_batch(seed=0):
    """Three prompts with 4, 3 and 4 responses, interleaved; outcome reward on the last real token."""
    rng = np.random.RandomState(seed)
    uids = np.array(["a", "b", "c", "a", "b", "c", "a", "c", "a", "b", "c"], dtype=object)
    b, t = len(uids), 6
    lengths = rng.randint(2, t + 1, size=b)
    mask = torch.zeros(b, t)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    outcome = torch.tensor(rng.rand(b) < 0.5, dtype=torch.float32)
    tlr = torch.zeros(b, t)
    tlr[torch.arange(b), torch.as_tensor(lengths - 1)] = outcome
    return {"token_level_rewards": tlr, "response_mask": mask}, {"uid": uids}, outcome


def _groups(uids, outcome):
    """Reference grouping: rows in order of first appearance, samples in batch order."""
    names = sorted(set(uids))
    rows = {u: [i for i, x in enumerate(uids) if x == u] for u in names}
    width = max(len(r) for r in rows.values())
    r = np.zeros((len(names), width), np.float32)
    m = np.zeros((len(names), width), bool)
    for gi, u in enumerate(names):
        for j, i in enumerate(rows[u]):
            r[gi, j], m[gi, j] = outcome[i], True
    return names, rows, r, m


@pytest.mark.parametrize("method", ["pkpo_sloo_minus_one", "passk", "rloo"])
def test_verl_registered_estimator_matches_passk_jax(monkeypatch, method):
    core_algos = _fake_verl(monkeypatch)
    fn = verl_recipe.register("passk_test", method=method, k=2)
    assert core_algos.ADV_ESTIMATOR_REGISTRY["passk_test"] is fn
    batch, non_tensor, outcome = _verl_batch()
    out = _verl_compute_advantage(core_algos, dict(batch), non_tensor, "passk_test")
    adv, ret, mask = out["advantages"], out["returns"], batch["response_mask"]
    assert adv.shape == mask.shape and torch.equal(adv, ret)
    assert (adv[mask == 0] == 0).all()
    names, rows, r, m = _groups(list(non_tensor["uid"]), outcome.numpy())
    want = np.asarray(A.compute_advantages(method, r, k=2, mask=m))
    for gi, u in enumerate(names):
        for j, i in enumerate(rows[u]):
            # every real token of response i carries its response's weight
            got = adv[i][mask[i] == 1]
            np.testing.assert_allclose(got.numpy(), want[gi, j], atol=1e-6)
    # the weights are not GRPO's (a wrong method wiring would show here)
    grpo = np.asarray(A.compute_advantages("grpo", r, mask=m))
    if method != "rloo":
        assert not np.allclose(want[m], grpo[m])


def test_verl_register_refuses_a_second_estimator_under_the_same_name(monkeypatch):
    _fake_verl(monkeypatch)
    verl_recipe.register("dup", k=2)
    with pytest.raises(ValueError, match="already been registered"):
        verl_recipe.register("dup", k=4)
    with pytest.raises(ValueError, match="unknown method"):
        verl_recipe.make_estimator("nope")


def test_verl_estimator_needs_index_and_records_invalid_k(monkeypatch):
    core_algos = _fake_verl(monkeypatch)
    verl_recipe.register("big_k", k=lambda: 9)  # larger than any group
    batch, non_tensor, _ = _verl_batch()
    with pytest.raises(ValueError, match="index"):
        _verl_compute_advantage(core_algos, dict(batch), {}, "big_k")
    torch_api.reset_k_flags()
    with pytest.warns(torch_api.InvalidKWarning):
        out = _verl_compute_advantage(core_algos, dict(batch), non_tensor, "big_k")
    assert (out["advantages"] == 0).all() and torch_api.k_flags()["invalid_k_calls"] == 1
    torch_api.reset_k_flags()


# ----------------------------------------------------------------------------------------------------
# TRL stand-in.


class _Accelerator:
    def __init__(self, process_index):
        self.process_index = process_index


class FakeGRPOTrainer:
    """The advantage path of TRL's GRPOTrainer, for a run with ``num_processes`` data-parallel ranks.

    Each rank holds ``len(inputs)`` local completions; ``_calculate_rewards`` returns the *gathered*
    rewards of every rank (here: all ranks' rewards are known up front).
    """

    def __init__(self, global_rewards_per_func, num_generations, process_index, reward_weights):
        self.num_generations = num_generations
        self.accelerator = _Accelerator(process_index)
        self.reward_weights = torch.tensor(reward_weights)
        self.state = types.SimpleNamespace(global_step=3)
        self._global = torch.tensor(global_rewards_per_func, dtype=torch.float32)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        return self._global.clone()  # gather(rewards_per_func)

    def _generate_and_score_completions(self, inputs):
        prompts = [x["prompt"] for x in inputs]
        rewards_per_func = self._calculate_rewards(inputs, prompts, None, None)
        rewards = (rewards_per_func * self.reward_weights.unsqueeze(0)).nansum(dim=1)
        grouped = rewards.view(-1, self.num_generations)
        mean = grouped.mean(dim=1).repeat_interleave(self.num_generations)
        std = grouped.std(dim=1).repeat_interleave(self.num_generations)
        advantages = (rewards - mean) / (std + 1e-4)
        process_slice = slice(
            self.accelerator.process_index * len(prompts),
            (self.accelerator.process_index + 1) * len(prompts),
        )
        return {
            "prompt_ids": torch.zeros(len(prompts), 3),
            "advantages": advantages[process_slice],
        }


class PassKTrainer(trl_recipe.PassKGRPOMixin, FakeGRPOTrainer):
    passk_method = "pkpo_sloo_minus_one"
    passk_k = 4


def _trl_data(seed=0):
    rng = np.random.RandomState(seed)
    # 2 ranks x 8 local completions = 16 = 2 prompts x 8 generations; two reward functions
    rpf = np.stack([(rng.rand(16) < 0.4).astype(np.float32), rng.rand(16).astype(np.float32)], 1)
    rpf[5, 1] = np.nan  # a reward function that returned None for one completion (nansum)
    return rpf, [{"prompt": f"p{i}"} for i in range(8)]


@pytest.mark.parametrize("process_index", [0, 1])
def test_trl_mixin_replaces_grpo_advantages_with_pkpo(process_index):
    rpf, inputs = _trl_data()
    weights = [1.0, 0.5]
    base = FakeGRPOTrainer(rpf, 8, process_index, weights)._generate_and_score_completions(inputs)
    trainer = PassKTrainer(rpf, 8, process_index, weights)
    out = trainer._generate_and_score_completions(inputs)
    rewards = np.nansum(rpf * np.asarray(weights), axis=1).reshape(2, 8)
    want = np.asarray(A.compute_advantages("pkpo_sloo_minus_one", rewards, k=4)).reshape(-1)
    want = want[process_index * 8 : (process_index + 1) * 8]
    assert out["advantages"].shape == (8,) and out["advantages"].dtype == torch.float32
    np.testing.assert_allclose(out["advantages"].numpy(), want, atol=1e-6)
    assert not np.allclose(out["advantages"].numpy(), base["advantages"].numpy())
    assert torch.equal(out["prompt_ids"], base["prompt_ids"])  # everything else untouched


def test_trl_mixin_k_schedule_and_other_methods():
    rpf, inputs = _trl_data(1)

    class Annealed(trl_recipe.PassKGRPOMixin, FakeGRPOTrainer):
        passk_method = "passk"
        passk_k = staticmethod(lambda step: 8 if step < 2 else 2)

    t = Annealed(rpf[:, :1], 8, 0, [1.0])  # binary rewards only: Chen et al.'s analytical method
    out = t._generate_and_score_completions(inputs)  # global_step 3 -> k = 2
    want = np.asarray(A.passk_advantages(rpf[:, 0].reshape(2, 8), 2)).reshape(-1)[:8]
    np.testing.assert_allclose(out["advantages"].numpy(), want, atol=1e-6)


def test_trl_mixin_random_methods_get_a_key():
    rpf, inputs = _trl_data(2)

    class Noisy(trl_recipe.PassKGRPOMixin, FakeGRPOTrainer):
        passk_method = "grpo_noise30"
        passk_k = 4

    a = Noisy(rpf[:, :1], 8, 0, [1.0])._generate_and_score_completions(inputs)["advantages"]
    b = Noisy(rpf[:, :1], 8, 0, [1.0])._generate_and_score_completions(inputs)["advantages"]
    assert torch.isfinite(a).all() and torch.equal(a, b)  # seeded from passk_seed + step


def test_trl_mixin_fails_loudly_if_the_hook_is_not_called():
    class Renamed(FakeGRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            return {"advantages": torch.zeros(len(inputs))}  # never calls _calculate_rewards

    class T(trl_recipe.PassKGRPOMixin, Renamed):
        pass

    rpf, inputs = _trl_data()
    with pytest.raises(RuntimeError, match="not supported"):
        T(rpf, 8, 0, [1.0, 1.0])._generate_and_score_completions(inputs)
