"""The train step's matmuls on their own: XLA:CPU (jitted ``lax.dot_general``) vs torch vs NumPy.

``benchmarks/train_step.py`` times the whole step; this one times each 2-D matmul the per-row step
of its ``small`` config runs (the same shapes and operand forms as ``models/gemma2.py``:
``_matmul_w`` / ``_matmul_wt`` forward, input gradient and weight gradient; the attention's batched
score products are not included), one shape at a time, the three libraries in alternating blocks,
and sums them with their per-step counts. The total says how much of the gap between the JAX and
the torch step is the libraries' matmul kernels on these shapes and forms.

Forms: ``NN`` = ``a @ b``, ``NT`` = ``a @ b.T``, ``TN`` = ``a.T @ b`` (the weight gradients
contract the token axis). torch and NumPy get transposed *views* (no copies), as their BLAS
calls do in an eager step. XLA flags apply as usual (``XLA_FLAGS=...`` before the run).

Run::

    .venv/bin/python benchmarks/cpu_matmul.py            # ~1 minute; writes results/cpu_matmul.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from passk_jax.testing import cpu_model


def small_config():
    """``benchmarks/train_step.py``'s ``small`` model config."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from train_step import _model_config

    return _model_config("small")


RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
_CONTRACT = {"NN": (1, 0), "NT": (1, 1), "TN": (0, 0)}


def step_matmuls(cfg, b: int, tp: int, t: int) -> list[tuple[str, str, int, int, int, int]]:
    """``(name, form, M, K, N, count)`` of each matmul of one per-row step: an ``[M, N]`` product
    contracting ``K``, ``count`` times per step.

    ``a`` is ``[M, K]`` (``NN`` / ``NT``) or ``[K, M]`` (``TN``); ``b`` is ``[K, N]`` (``NN`` /
    ``TN``) or ``[N, K]`` (``NT``). The token axis is every position (``b * (tp + t)``) for the
    decoder layers and the completion positions (``b * t``) for the tied unembedding; the weight
    gradients contract it.
    """
    m, mc = b * (tp + t), b * t
    d, f, v, layers = cfg.embed_dim, cfg.hidden_dim, cfg.vocab_size, cfg.num_layers
    q, kv = cfg.num_heads * cfg.head_dim, 2 * cfg.num_kv_heads * cfg.head_dim
    rows = []
    # (name, x width, out width, form of the forward): _matmul_w is NN on [in, out] weights,
    # _matmul_wt is NT on [out, in] weights.
    for name, n_in, n_out, fwd in (
        ("q projection", d, q, "NN"),
        ("k / v projection", d, kv, "NN"),
        ("output projection", q, d, "NN"),
        ("gate / up projection", d, 2 * f, "NT"),
        ("down projection", f, d, "NN"),
    ):
        rows.append((f"{name}, forward", fwd, m, n_in, n_out, layers))
        # Input gradient: g [M, out] against the weight (NT on [in, out], NN on [out, in]).
        rows.append((f"{name}, input grad", "NT" if fwd == "NN" else "NN", m, n_out, n_in, layers))
        # Weight gradient: contracts the token axis, the narrower operand transposed.
        rows.append((f"{name}, weight grad", "TN", min(n_in, n_out), m, max(n_in, n_out), layers))
    rows.append(("unembedding, forward", "NT", mc, d, v, 1))
    rows.append(("unembedding, input grad", "NN", mc, v, d, 1))
    rows.append(("unembedding, weight grad", "TN", d, mc, v, 1))
    return rows


def _operands(form: str, m: int, k: int, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    a = rng.standard_normal((k, m) if form == "TN" else (m, k), dtype=np.float32)
    b = rng.standard_normal((n, k) if form == "NT" else (k, n), dtype=np.float32)
    return a, b


def _block_medians(fns, repeats: int) -> list[float]:
    """Median seconds of each function, timed in blocks: two passes (the second in reverse order),
    each running one function ``repeats // 2 + 1`` times in a row after a warm-up call.

    Not call-by-call interleaving: XLA's, torch's and OpenBLAS's thread pools each spin or sleep
    between calls, and alternating single ~50 ms calls measured each library partly waking the
    others' threads (XLA:CPU then ran these shapes at 0.5-0.6x its speed in a block).
    """
    times: list[list[float]] = [[] for _ in fns]
    for order in (range(len(fns)), reversed(range(len(fns)))):
        for i in order:
            fns[i]()
            for _ in range(repeats // 2 + 1):
                t0 = time.perf_counter()
                fns[i]()
                times[i].append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]


def _np_view(x, form_side: bool):
    return x.T if form_side else x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--out", default=os.path.join(RESULTS, "cpu_matmul.md"))
    args = parser.parse_args()

    torch = None
    if not args.no_torch:
        import torch

        torch.set_num_threads(max(1, os.cpu_count() or 1))
    # The small config and batch of benchmarks/train_step.py: P x G = 8 x 16 sequences of 32 + 64
    # tokens, D = 256, 4 query heads and 2 key / value heads of 64, F = 1024, V = 1024, 4 layers.
    shapes = step_matmuls(small_config(), 128, 32, 64)
    rng = np.random.default_rng(0)
    lines = [
        "## The small train step's matmuls: XLA:CPU vs torch vs NumPy",
        "",
        f"Machine: {cpu_model()} ({platform.machine()}), {os.cpu_count()} CPU cores, jax {jax.__version__}"
        + (f", torch {torch.__version__} ({torch.get_num_threads()} threads)" if torch else "")
        + f", NumPy {np.__version__}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '') or '(unset)'}. "
        f"float32, per shape the median of {2 * (args.repeats // 2 + 1)} calls per library, timed in blocks "
        "(`_block_medians`).",
        "",
        "| matmul | form | M x K x N | per step | XLA GFLOP/s | torch GFLOP/s | NumPy GFLOP/s "
        "| XLA / torch time |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    totals = np.zeros(3)
    for name, form, m, k, n, count in shapes:
        a, b = _operands(form, m, k, n, rng)
        ca, cb = _CONTRACT[form]
        dot = jax.jit(lambda x, y, ca=ca, cb=cb: lax.dot_general(x, y, (((ca,), (cb,)), ((), ()))))
        ja, jb = jnp.asarray(a), jnp.asarray(b)
        na, nb = _np_view(a, form == "TN"), _np_view(b, form == "NT")
        fns = [
            lambda dot=dot, ja=ja, jb=jb: dot(ja, jb).block_until_ready(),
            lambda na=na, nb=nb: na @ nb,
        ]
        if torch is not None:
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            ta, tb = (ta.t() if form == "TN" else ta), (tb.t() if form == "NT" else tb)
            fns.insert(1, lambda ta=ta, tb=tb: torch.mm(ta, tb))
        times = _block_medians(fns, args.repeats)
        if torch is None:
            times.insert(1, float("nan"))
        flops = 2.0 * m * k * n
        totals += count * np.asarray(times)
        gf = [flops / s / 1e9 for s in times]
        lines.append(
            f"| {name} | {form} | {m} x {k} x {n} | {count} | {gf[0]:.0f} | {gf[1]:.0f} | "
            f"{gf[2]:.0f} | {times[0] / times[1]:.2f}x |"
        )
    lines += [
        f"| **all of the above, one step** | | | | {totals[0]:.3f} s | {totals[1]:.3f} s | "
        f"{totals[2]:.3f} s | **{totals[0] / totals[1]:.2f}x** |",
        "",
        "The last row is seconds per step (count x median time, summed). The attention's batched "
        "score products and every non-matmul op are left out.",
    ]
    table = "\n".join(lines)
    print(table)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        fh.write(table + "\n")


if __name__ == "__main__":
    main()
