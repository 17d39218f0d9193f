"""Speed of the jitted PKPO transforms against one sort (the floor) and a Listing-1-style NumPy loop.

Run: ``.venv/bin/python benchmarks/estimators.py [--quick]``. Prints markdown tables of median
wall-clock times and ratios, all measured in this one run on this machine, and writes them to
``benchmarks/results/estimators.md``.

* ``sort``: one jitted ``jnp.sort`` of the same float32 array along the samples axis.
* ``s`` / ``sloo`` / ``sloo_minus_one``: :func:`passk_jax.estimators.pkpo_rewards`, jitted, k traced.
* ``listing1``: a per-group NumPy implementation written from the paper's Listing 1 description
  (O(nk + n log n) per group: per-entry products of ratios for the weights, a Python loop over
  groups). It is timed on a subset of groups and scaled linearly to the full batch (stated in the
  table), because the full loop takes minutes.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from passk_jax import estimators as E

# ---------------------------------------------------------------------------------------------------
# Listing-1-style NumPy reference (per group, sorted-apply decorator, per-entry ratio products).


def _m_normed(n: int, k: int, i: int, j: int) -> float:
    """m_ij / C(n, k) for 0-indexed sorted positions i <= j."""
    if i == j and i >= k - 1:
        return k / (n - k + 1) * np.prod(np.arange(i - k + 2, i + 1) / np.arange(n - k + 2, n + 1))
    if j > i and j >= k - 1 and k >= 2:
        return (
            k
            / (n - k + 1)
            * (k - 1)
            / n
            * np.prod(np.arange(j - k + 2, j) / np.arange(n - k + 2, n))
        )
    return 0.0


def _m_diagonal(n: int, k: int) -> np.ndarray:
    return np.array([_m_normed(n, k, i, i) for i in range(n)])


def _deltas(n: int, k: int) -> np.ndarray:
    return np.array(
        [_m_normed(n - 1, k, i, i + 1) - _m_normed(n - 1, k, i + 1, i + 1) for i in range(n - 2)]
    )


def _sorted_apply(fn):
    def wrapped(x, k):
        x = np.asarray(x, np.float64)
        order = np.argsort(x)
        out = np.zeros_like(x)
        out[order] = fn(x[order], k)
        return out

    return wrapped


@_sorted_apply
def listing_s(g: np.ndarray, k: int) -> np.ndarray:
    n = len(g)
    c = g * _m_diagonal(n, k)
    c[: n - 1] += g[1:] * _deltas(n + 1, k)
    return np.cumsum(c[::-1])[::-1]


@_sorted_apply
def listing_b(g: np.ndarray, k: int) -> np.ndarray:
    n = len(g)
    w = _m_diagonal(n - 1, k) * np.arange(1, n)
    w[1:] += _deltas(n, k) * np.arange(1, n - 1)
    return np.cumsum(np.concatenate([[np.sum(w * g[1:])], (g[:-1] - g[1:]) * w]))


def listing_sloo_minus_one(g: np.ndarray, k: int) -> np.ndarray:
    n = len(g)
    return listing_s(g, k) - listing_b(g, k - 1) * k / (k - 1) / n


# ---------------------------------------------------------------------------------------------------


def _time(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile + warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args()
    repeats = 5 if args.quick else 30
    rng = np.random.default_rng(0)

    sort = jax.jit(lambda x: jnp.sort(x, axis=-1))
    transforms = {
        est: jax.jit(lambda x, k, est=est: E.pkpo_rewards(x, k, est)) for est in E.ESTIMATORS
    }

    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, jax {jax.__version__}, "
        f"backend {jax.default_backend()}; median of {repeats} runs; float32.",
        "",
        "### [4096, 64], k = 8: transforms vs one sort and the Listing-1 NumPy loop",
        "",
        "| method | time (ms) | / sort | Listing-1 loop / method |",
        "|---|---|---|---|",
    ]
    b, n, k = (512, 64, 8) if args.quick else (4096, 64, 8)
    x = jnp.asarray(rng.normal(size=(b, n)).astype(np.float32))
    t_sort = _time(sort, x, repeats=repeats)
    sub = 32 if args.quick else 256
    xs = np.asarray(x)[:sub]
    t0 = time.perf_counter()
    ref = np.stack([listing_sloo_minus_one(row, k) for row in xs])
    t_listing = (time.perf_counter() - t0) * b / sub
    np.testing.assert_allclose(ref, E.pkpo_rewards(xs, k), atol=1e-5)  # same numbers
    lines.append(f"| jnp.sort (floor) | {t_sort * 1e3:.3f} | 1.00 | {t_listing / t_sort:.0f} |")
    for est, fn in transforms.items():
        t = _time(fn, x, k, repeats=repeats)
        lines.append(f"| {est} | {t * 1e3:.3f} | {t / t_sort:.2f} | {t_listing / t:.0f} |")
    lines.append(
        f"| Listing-1 NumPy loop (timed on {sub} groups, scaled to {b}) | {t_listing * 1e3:.0f} | "
        f"{t_listing / t_sort:.0f} | 1 |"
    )

    lines += [
        "",
        "### sloo_minus_one vs one sort for n = 8 .. 4096 (B x n = 262,144 elements, k = n/8 or 1)",
        "",
        "| n | B | sort (ms) | sloo_minus_one (ms) | ratio |",
        "|---|---|---|---|---|",
    ]
    sizes = [8, 64, 512, 4096] if args.quick else [8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
    total = 2**14 if args.quick else 2**18
    for n in sizes:
        b = total // n
        x = jnp.asarray(rng.normal(size=(b, n)).astype(np.float32))
        t_sort = _time(sort, x, repeats=repeats)
        t = _time(transforms["sloo_minus_one"], x, max(n // 8, 1), repeats=repeats)
        lines.append(f"| {n} | {b} | {t_sort * 1e3:.3f} | {t * 1e3:.3f} | {t / t_sort:.2f} |")

    text = "\n".join(lines)
    print(text)
    if not args.quick:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "estimators.md"), "w") as f:
            f.write("# Estimator benchmark (`benchmarks/estimators.py`)\n\n" + text + "\n")


if __name__ == "__main__":
    main()
