"""Model FLOPs of Gemma-2 forward passes and train steps, and model-FLOPs utilisation (MFU).

Counted as the model's matrix multiplications, 2 FLOPs per multiply-add, the way this
implementation computes them:

* per token and layer: the q / kv / output projections (``2 D (N + 2 K) H + 2 N H D``) and the
  GeGLU (``2 * 3 D F``); the unembedding ``2 D V`` per position that is unembedded;
* attention: ``2 * 2 N H S`` per query token and layer for the score and value matmuls over the
  ``S`` keys it is computed against (the full padded length: the implementation masks, it does not
  skip, so causal and sliding-window masking save nothing here).

Element-wise work (norms, RoPE, softmax, soft-caps) is not counted, and neither is rematerialised
recomputation: MFU is *model* FLOPs over time, the PaLM convention. A train step is 3x the forward
(backward = 2x forward).
"""

from __future__ import annotations

from typing import Any

__all__ = ["PEAK_FLOPS", "forward_flops", "mfu", "peak_flops", "train_step_flops"]

# Dense bf16 peak per device (FLOP/s), from the vendors' data sheets.
PEAK_FLOPS = {
    "TPU v5 lite": 197e12,  # v5e
    "TPU v5": 459e12,  # v5p
    "TPU v4": 275e12,
    "TPU v6 lite": 918e12,  # v6e
    "NVIDIA H100 80GB HBM3": 989e12,  # SXM
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA A100-SXM4-80GB": 312e12,
    "NVIDIA A100-SXM4-40GB": 312e12,
}


def forward_flops(
    config: Any, batch: int, seq_len: int, unembed_positions: int | None = None
) -> float:
    """Matmul FLOPs of one forward pass over ``batch`` sequences of ``seq_len`` tokens.

    Args:
      config: a :class:`passk_jax.models.gemma2.Gemma2Config`.
      batch: sequences. seq_len: tokens per sequence (attention over all of them).
      unembed_positions: positions per sequence that are unembedded (default ``seq_len``).
    """
    d, f, v = config.embed_dim, config.hidden_dim, config.vocab_size
    n, k, h = config.num_heads, config.num_kv_heads, config.head_dim
    per_token_layer = 2 * d * (n + 2 * k) * h + 2 * n * h * d + 2 * 3 * d * f
    attention = 2 * 2 * n * h * seq_len  # per query token and layer
    tokens = batch * seq_len
    u = seq_len if unembed_positions is None else unembed_positions
    return float(config.num_layers * tokens * (per_token_layer + attention) + batch * u * 2 * d * v)


def train_step_flops(
    config: Any, batch: int, prompt_len: int, completion_len: int, *, unembed_all: bool = True
) -> float:
    """Model FLOPs of one policy-gradient step: 3x the forward over prompt + completion tokens.

    ``unembed_all``: whether every position is unembedded (False: only the ``completion_len``
    positions whose log-probs the loss reads).
    """
    t = prompt_len + completion_len
    return 3.0 * forward_flops(config, batch, t, None if unembed_all else completion_len)


def peak_flops(device: Any) -> float | None:
    """Dense bf16 peak FLOP/s of ``device`` (by ``device_kind``), or None when unknown (e.g. CPU)."""
    kind = getattr(device, "device_kind", "")
    if kind in PEAK_FLOPS:
        return PEAK_FLOPS[kind]
    for name, value in PEAK_FLOPS.items():
        if kind.startswith(name):
            return value
    return None


def mfu(
    flops_per_step: float, seconds_per_step: float, peak_per_device: float | None, devices: int
) -> float | None:
    """``flops / (time x peak x devices)``; None when the peak is unknown."""
    if peak_per_device is None or seconds_per_step <= 0:
        return None
    return flops_per_step / (seconds_per_step * peak_per_device * devices)
