"""The weighting atlas: what each registered method's expected gradient does, on binary rewards.

Question: PKPO and Chen et al. weight a group's samples differently; what objective does each method
actually ascend on one prompt? For success probability p, n samples and weights w,
``E[sum_i w_i grad log pi(x_i)] = m(p) grad p`` (``passk_jax.advantages.expected_weight``, an exact
sum over the binomial count of correct samples). ``m`` is the per-prompt step size a method gives
a prompt of difficulty p; its integral ``F`` (``surrogate_objective``) is the objective. For PKPO's
unbiased transforms ``m = k (1 - p)^(k - 1)`` and ``F`` is pass@k. Chen et al.'s ``eta`` (the sum of
absolute advantages, ``advantage_mass``) is tabulated per count c.

Outputs under ``<outdir>/atlas/``: ``atlas.png`` (m(p) / m(0.5) on a log scale and F(p) / F(1) for
every method), ``atlas.json`` and ``atlas.md`` (tables of m(p) and eta(c)).

Hardware: CPU. Wall-clock: about a minute (``passk_full``'s 2^16 arrangements and the bootstrap's
draws dominate). Command::

    .venv/bin/python -m experiments.weighting_atlas            # n = 16, k = 4, writes experiments/results/
    .venv/bin/python -m experiments.weighting_atlas --n 8 --k 2 --outdir /tmp/atlas
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np

from passk_jax import advantages as A

DEFAULT_OUTDIR = pathlib.Path(__file__).resolve().parent / "results"
P_TABLE = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99)
K_FREE = A.K_FREE


def compute(n: int, k: int, num_draws: int = 4096) -> dict:
    """m(p), F(p) on a grid and eta(c), for every registered method."""
    grid = np.linspace(0.0, 1.0, 201)
    out = {"n": n, "k": k, "grid": grid.tolist(), "methods": {}}
    for name in sorted(A.ADVANTAGES):
        kk = None if name in K_FREE else k
        m = A.expected_weight(name, grid, n, kk, num_draws=num_draws)
        f = A.surrogate_objective(name, grid, n, kk, num_draws=num_draws)
        out["methods"][name] = {
            "m": m.tolist(),
            "F": f.tolist(),
            "m_table": A.expected_weight(
                name, np.array(P_TABLE), n, kk, num_draws=num_draws
            ).tolist(),
            "eta": A.advantage_mass(name, n, kk, num_draws=num_draws).tolist(),
            "monte_carlo": name in A.NEEDS_KEY,
        }
    return out


def plot(res: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.asarray(res["grid"])
    mid = int(np.argmin(np.abs(grid - 0.5)))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    colors = plt.cm.tab20(np.linspace(0, 1, 20))
    for i, (name, r) in enumerate(res["methods"].items()):
        m = np.asarray(r["m"])
        f = np.asarray(r["F"])
        style = "--" if name.startswith("pkpo") else ("-." if name in K_FREE else "-")
        kw = {"color": colors[(2 * i) % 20 + (2 * i) // 20], "label": name}
        if m[mid] > 0:
            ax1.plot(grid[1:-1], np.maximum(m[1:-1] / m[mid], 1e-6), style, **kw)
        if f[-1] != 0:
            ax2.plot(grid, f / f[-1], style, **kw)
    ax1.set_yscale("log")
    ax1.set_ylim(1e-4, 1e3)
    ax1.set_xlabel("p (success probability of the prompt)")
    ax1.set_ylabel("m(p) / m(0.5)")
    ax1.set_title(f"expected per-prompt weight, n = {res['n']}, k = {res['k']}")
    ax2.set_xlabel("p")
    ax2.set_ylabel("F(p) / F(1)")
    ax2.set_title("implied surrogate objective (F' = m)")
    ax2.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_md(res: dict, path: pathlib.Path) -> None:
    n, k = res["n"], res["k"]
    lines = [
        f"# Weighting atlas (n = {n}, k = {k}; binary rewards)",
        "",
        "Made by `python -m experiments.weighting_atlas`. `m(p)`: expected per-prompt weight of the",
        "policy gradient, `E[sum_i w_i grad log pi(x_i)] = m(p) grad p`, exact except where marked",
        "(Monte Carlo over the method's random subsets). PKPO's transforms give `k (1 - p)^(k-1)`.",
        "`passk_unnormalised` (Chen et al.'s analytical advantage times sigma) gives exactly",
        f"(n - k) / k = {(n - k) / k:g} times PKPO's m: without its 1/sigma, Chen's advantage is, in",
        "expectation, a multiple of the unbiased pass@k gradient (tested in `tests/test_atlas.py`).",
        "",
        "![atlas](atlas.png)",
        "",
        "| method | " + " | ".join(f"m({p})" for p in P_TABLE) + " | m(0.05) / m(0.5) |",
        "|---|" + "---|" * (len(P_TABLE) + 1),
    ]
    i05, i50 = P_TABLE.index(0.05), P_TABLE.index(0.5)
    for name, r in res["methods"].items():
        mt = r["m_table"]
        ratio = f"{mt[i05] / mt[i50]:.2f}" if abs(mt[i50]) > 1e-12 else "-"
        mark = " (MC)" if r["monte_carlo"] else ""
        lines.append(f"| {name}{mark} | " + " | ".join(f"{v:.3g}" for v in mt) + f" | {ratio} |")
    lines += [
        "",
        "Chen et al.'s eta: expected sum of absolute advantages of a group with c correct samples.",
        "",
        "| method | " + " | ".join(f"c={c}" for c in range(n + 1)) + " |",
        "|---|" + "---|" * (n + 1),
    ]
    for name, r in res["methods"].items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.3g}" for v in r["eta"]) + " |")
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--num-draws", type=int, default=4096)
    p.add_argument("--outdir", default=str(DEFAULT_OUTDIR))
    args = p.parse_args(argv)
    out = pathlib.Path(args.outdir) / "atlas"
    out.mkdir(parents=True, exist_ok=True)
    res = compute(args.n, args.k, args.num_draws)
    (out / "atlas.json").write_text(json.dumps(res))
    plot(res, out / "atlas.png")
    write_md(res, out / "atlas.md")
    print((out / "atlas.md").read_text())


if __name__ == "__main__":
    main()
