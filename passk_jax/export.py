"""Export trained parameters as a Hugging Face Gemma-2 directory (``config.json`` + safetensors).

The directory loads with ``transformers.Gemma2ForCausalLM.from_pretrained(out_dir)`` (and so with the
tools that read that format, vLLM included); no torch or transformers is needed to write it. The
mapping is the inverse of :func:`passk_jax.checkpoints.flax_params_from_hf_state_dict`, so
``checkpoints.load_hf_gemma2(out_dir)`` gives the same parameters back.

Command line (``passk-export``, or ``python -m passk_jax.export``)::

    passk-export --config passk_jax/configs/maze_tiny.py:quick --checkpoint runs/k4 --out hf/k4

``--checkpoint`` takes what :func:`passk_jax.evaluate.load_params` takes: an RL workdir (latest
checkpoint), one of its step directories, a ``save_params`` directory, a Flax release checkpoint or
an HF directory. ``--dtype bfloat16`` halves the files. The tokenizer goes along: a SentencePiece
``tokenizer.model`` is copied; the char tokenizer of the synthetic tasks (which has no HF equivalent)
is described in ``passk_tokenizer.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from typing import Any

import numpy as np

__all__ = ["export_hf", "hf_config_dict", "hf_state_dict", "main"]

_NORMS = {
    "pre_attention_norm": "input_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "pre_ffw_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}


def hf_config_dict(
    config: Any,
    *,
    bos_id: int = 2,
    eos_id: int = 1,
    pad_id: int = 0,
    max_positions: int = 8192,
    dtype: str = "float32",
) -> dict[str, Any]:
    """The ``config.json`` of a ``transformers`` Gemma-2 with ``config``'s architecture.

    Args:
      config: a :class:`passk_jax.models.gemma2.Gemma2Config`.
      bos_id / eos_id / pad_id: special token ids of the tokenizer the model was trained with.
      max_positions: ``max_position_embeddings`` (RoPE has no table; this is a limit for HF tools).
      dtype: the dtype the weights are stored in.

    Returns:
      A JSON-serialisable dict.
    """
    c = config
    return {
        "architectures": ["Gemma2ForCausalLM"],
        "model_type": "gemma2",
        "vocab_size": c.vocab_size,
        "hidden_size": c.embed_dim,
        "intermediate_size": c.hidden_dim,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads,
        "head_dim": c.head_dim,
        # transformers' field is an int (every release value is integral)
        "query_pre_attn_scalar": (
            int(c.query_pre_attn_scalar)
            if float(c.query_pre_attn_scalar).is_integer()
            else c.query_pre_attn_scalar
        ),
        "sliding_window": c.sliding_window,
        "layer_types": [
            "sliding_attention" if c.is_sliding(i) else "full_attention"
            for i in range(c.num_layers)
        ],
        "attn_logit_softcapping": c.attn_logit_softcap,
        "final_logit_softcapping": c.final_logit_softcap,
        "rms_norm_eps": c.rms_norm_eps,
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_act": "gelu_pytorch_tanh",
        # transformers < 5 reads rope_theta, >= 5 rope_parameters; both are written.
        "rope_theta": c.rope_base_frequency,
        "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_base_frequency},
        "max_position_embeddings": max_positions,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "tie_word_embeddings": True,
        "use_cache": True,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        "torch_dtype": dtype,
        "dtype": dtype,
    }


def hf_state_dict(params: Any, config: Any, dtype: Any = np.float32) -> dict[str, np.ndarray]:
    """HF Gemma-2 tensors (``model.layers.0.self_attn.q_proj.weight``, ... torch ``[out, in]`` layout)
    from this package's parameter tree.

    Args:
      params: the Flax parameter tree (release layout).
      config: its :class:`~passk_jax.models.gemma2.Gemma2Config`.
      dtype: NumPy dtype of the returned arrays (``ml_dtypes.bfloat16`` for bf16).

    Returns:
      ``{name: contiguous array}``. The LM head is tied to the embedding and is not written.
    """
    c = config
    n, k, h, d = c.num_heads, c.num_kv_heads, c.head_dim, c.embed_dim

    def arr(x: Any) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(x).astype(dtype))

    out = {
        "model.embed_tokens.weight": arr(params["embedder"]["input_embedding"]),
        "model.norm.weight": arr(params["final_norm"]["scale"]),
    }
    for i in range(c.num_layers):
        layer = params[f"layer_{i}"]
        attn, mlp = layer["attn"], layer["mlp"]
        pre = f"model.layers.{i}."
        q = np.asarray(attn["q_einsum"]["w"])  # [N, D, H]
        kv = np.asarray(attn["kv_einsum"]["w"])  # [2, K, D, H]
        o = np.asarray(attn["attn_vec_einsum"]["w"])  # [N, H, D]
        gating = np.asarray(mlp["gating_einsum"])  # [2, F, D]
        out[pre + "self_attn.q_proj.weight"] = arr(q.transpose(0, 2, 1).reshape(n * h, d))
        out[pre + "self_attn.k_proj.weight"] = arr(kv[0].transpose(0, 2, 1).reshape(k * h, d))
        out[pre + "self_attn.v_proj.weight"] = arr(kv[1].transpose(0, 2, 1).reshape(k * h, d))
        out[pre + "self_attn.o_proj.weight"] = arr(o.reshape(n * h, d).T)
        out[pre + "mlp.gate_proj.weight"] = arr(gating[0])
        out[pre + "mlp.up_proj.weight"] = arr(gating[1])
        out[pre + "mlp.down_proj.weight"] = arr(np.asarray(mlp["linear"]).T)
        for ours, theirs in _NORMS.items():
            out[pre + theirs + ".weight"] = arr(layer[ours]["scale"])
    return out


def export_hf(
    params: Any,
    config: Any,
    out_dir: str,
    *,
    tokenizer: Any = None,
    tokenizer_path: str | None = None,
    dtype: str = "float32",
    max_positions: int = 8192,
) -> str:
    """Writes ``out_dir/config.json``, ``model.safetensors`` (and the tokenizer, if given).

    Args:
      params: the Flax parameter tree. config: its ``Gemma2Config``.
      out_dir: target directory (created; existing files of the same names are replaced).
      tokenizer: optional tokenizer of the run: its special ids go into ``config.json``; a
        SentencePiece tokenizer's model file is copied as ``tokenizer.model``, a char tokenizer is
        described in ``passk_tokenizer.json``.
      tokenizer_path: the SentencePiece model file to copy (``config.tokenizer_path``).
      dtype: ``"float32"`` or ``"bfloat16"`` (storage dtype).
      max_positions: ``max_position_embeddings`` in ``config.json``.

    Returns:
      ``out_dir``.
    """
    from safetensors.numpy import save_file

    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    np_dtype: Any = np.float32
    if dtype == "bfloat16":
        import ml_dtypes

        np_dtype = ml_dtypes.bfloat16
    os.makedirs(out_dir, exist_ok=True)
    ids = {"bos_id": 2, "eos_id": 1, "pad_id": 0}
    if tokenizer is not None:
        ids = {
            "bos_id": int(tokenizer.bos_id),
            "eos_id": int(tokenizer.eos_id),
            "pad_id": int(tokenizer.pad_id),
        }
    hf = hf_config_dict(config, max_positions=max_positions, dtype=dtype, **ids)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf, f, indent=2)
    gen = {
        "bos_token_id": ids["bos_id"],
        "eos_token_id": ids["eos_id"],
        "pad_token_id": ids["pad_id"],
    }
    with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
        json.dump(gen, f, indent=2)
    save_file(
        hf_state_dict(params, config, np_dtype),
        os.path.join(out_dir, "model.safetensors"),
        metadata={"format": "pt"},
    )
    if tokenizer is not None:
        _write_tokenizer(tokenizer, out_dir)
    if tokenizer_path:
        shutil.copyfile(
            os.path.expanduser(tokenizer_path), os.path.join(out_dir, "tokenizer.model")
        )
    return out_dir


def _write_tokenizer(tokenizer: Any, out_dir: str) -> None:
    alphabet = getattr(tokenizer, "alphabet", None)
    if alphabet is not None:
        desc = {
            "kind": "char",
            "alphabet": alphabet,
            "pad_id": tokenizer.pad_id,
            "bos_id": tokenizer.bos_id,
            "eos_id": tokenizer.eos_id,
            "unk_id": getattr(tokenizer, "unk_id", 3),
            "note": "passk_jax.tokenizers.CharTokenizer(alphabet): id i >= 4 is alphabet[i - 4].",
        }
        with open(os.path.join(out_dir, "passk_tokenizer.json"), "w") as f:
            json.dump(desc, f, indent=2)


def main(argv: list[str] | None = None) -> None:
    """``passk-export``: checkpoint (+ its experiment config) -> Hugging Face directory."""
    from passk_jax import evaluate as EV

    parser = argparse.ArgumentParser(
        prog="passk-export",
        description="Export a passk_jax checkpoint as a Hugging Face Gemma-2 directory.",
    )
    parser.add_argument("--config", required=True, help="experiment config FILE[:ARG]")
    parser.add_argument("--checkpoint", required=True, help="workdir, step dir or params dir")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    args = parser.parse_args(argv)
    config = EV.load_config(args.config)
    parts = EV.build_parts(config)
    params = EV.load_params(args.checkpoint, parts.model_config)
    export_hf(
        params,
        parts.model_config,
        args.out,
        tokenizer=parts.tokenizer,
        tokenizer_path=config.get("tokenizer_path")
        if config.get("tokenizer") == "sentencepiece"
        else None,
        dtype=args.dtype,
    )
    print(
        f"wrote {args.out} ({parts.model_config.num_layers} layers, vocab {parts.model_config.vocab_size})"
    )


if __name__ == "__main__":
    main()
