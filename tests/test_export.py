"""Export to a Hugging Face directory: transformers' Gemma2ForCausalLM loads it and its logits equal the
JAX model's to 1e-4; the package's own HF loader gives the parameters back."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from passk_jax import export, testing
from passk_jax.models import gemma2 as g

pytestmark = pytest.mark.parity


def _model(num_kv_heads=2, **kw):
    config = testing.tiny_config(
        vocab_size=96, num_layers=4, sliding_window=5, num_kv_heads=num_kv_heads, **kw
    )
    return config, testing.random_params(config, seed=3, scale=2.0)


def _hf_logits(path, tokens, **kw):
    import torch
    import transformers

    model = transformers.Gemma2ForCausalLM.from_pretrained(path, **kw).eval()
    with torch.no_grad():
        return model(torch.tensor(tokens)).logits.float().numpy(), model


@pytest.mark.parametrize("num_kv_heads", [2, 4], ids=["gqa", "mha"])
def test_transformers_logits_match_jax_after_export(tmp_path, num_kv_heads):
    config, params = _model(num_kv_heads)
    export.export_hf(params, config, str(tmp_path), tokenizer=testing.tiny_tokenizer())
    tokens = np.random.RandomState(0).randint(0, 96, (2, 23))
    ref, model = _hf_logits(str(tmp_path), tokens)
    assert type(model).__name__ == "Gemma2ForCausalLM"
    ours = np.asarray(g.forward(params, jnp.asarray(tokens), config))
    assert ours.shape == ref.shape and np.abs(ours).max() > 1.0  # logits are not degenerate
    assert np.abs(ours - ref).max() < 1e-4
    # sensitive: the sliding window written into config.json matters at this sequence length
    wide = np.asarray(
        g.forward(params, jnp.asarray(tokens), dataclasses.replace(config, sliding_window=64))
    )
    assert np.abs(wide - ref).max() > 1e-2
    hf = json.loads((tmp_path / "config.json").read_text())
    assert hf["bos_token_id"] == 1 and hf["eos_token_id"] == 2 and hf["pad_token_id"] == 0
    assert json.loads((tmp_path / "passk_tokenizer.json").read_text())["kind"] == "char"


def test_export_then_package_loader_gives_the_same_params(tmp_path):
    from passk_jax import checkpoints

    config, params = _model(attn_logit_softcap=None)
    export.export_hf(params, config, str(tmp_path))
    config2, params2 = checkpoints.load_hf_gemma2(str(tmp_path))
    assert config2 == config
    same = jax.tree.map(
        lambda a, b: bool(np.array_equal(np.asarray(a), np.asarray(b))), params, params2
    )
    assert all(jax.tree.leaves(same))


def test_bfloat16_export(tmp_path):
    import torch

    config, params = _model()
    export.export_hf(params, config, str(tmp_path), dtype="bfloat16")
    tokens = np.random.RandomState(1).randint(0, 96, (1, 12))
    ref, model = _hf_logits(str(tmp_path), tokens, dtype=torch.float32)
    ours = np.asarray(g.forward(params, jnp.asarray(tokens), config))
    assert 0 < np.abs(ours - ref).max() < 0.25  # bf16 storage: close, not equal
    with pytest.raises(ValueError, match="dtype"):
        export.export_hf(params, config, str(tmp_path / "x"), dtype="float16")
