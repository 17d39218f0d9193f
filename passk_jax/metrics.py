"""Evaluation metrics (unbiased pass@k, cumulative solve rate) and writers (JSONL, TensorBoard, PNG).

``pass_at_k_table(rewards, ks)`` averages the unbiased pass@k estimate over prompts;
``CumulativeSolve`` tracks the fraction of training prompts solved at least once (PKPO's exploration
metric); ``MetricWriter`` appends one JSON object per logged step to ``metrics.jsonl`` and mirrors the
scalars to TensorBoard (tensorboardX); ``plot_curves`` draws the pass@k / reward / entropy curves.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from passk_jax import estimators as E

__all__ = [
    "CumulativeSolve",
    "MetricWriter",
    "pass_at_k_table",
    "plot_curves",
    "powers_of_two",
    "read_jsonl",
]


def powers_of_two(n: int) -> list[int]:
    """``[1, 2, 4, ..., <= n]`` plus ``n`` itself."""
    ks = [2**i for i in range(int(math.log2(n)) + 1)] if n >= 1 else []
    return ks if n in ks else ks + [n]


def pass_at_k_table(rewards: Any, ks: Iterable[int], threshold: float = 1.0) -> dict[int, float]:
    """Mean over prompts of the unbiased pass@k estimate (a sample passes if reward >= threshold).

    Args:
      rewards: ``[P, G]`` rewards of G samples for each of P prompts.
      ks: the k values (each <= G).
      threshold: reward counted as a pass.

    Returns:
      ``{k: mean pass@k}``.
    """
    r = np.asarray(rewards, np.float32)
    c = (r >= threshold).sum(-1)
    n = r.shape[-1]
    return {int(k): float(np.mean(np.asarray(E.pass_at_k(c, n, int(k))))) for k in ks}


class CumulativeSolve:
    """Fraction of prompts (of a fixed pool) with at least one passing sample drawn so far."""

    def __init__(self, pool_size: int, solved: Iterable[str] = ()):
        self.pool_size = pool_size
        self.solved = set(solved)

    def update(self, uids: Sequence[str], rewards: Any, threshold: float = 1.0) -> float:
        r = np.asarray(rewards)
        for uid, row in zip(uids, r):
            if (row >= threshold).any():
                self.solved.add(uid)
        return self.rate

    @property
    def rate(self) -> float:
        return len(self.solved) / max(self.pool_size, 1)


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl file (missing file -> [])."""
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut by a crash mid-write
                    continue
    return out


class MetricWriter:
    """Appends ``{"step": s, **scalars}`` lines to ``workdir/metrics.jsonl`` and TensorBoard events.

    On resume, ``truncate_after(step)`` drops records newer than the restored checkpoint so the file
    holds exactly one history. Only the writing process (process 0) should create one.
    """

    def __init__(self, workdir: str, tensorboard: bool = True):
        os.makedirs(workdir, exist_ok=True)
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def truncate_after(self, step: int) -> None:
        records = [r for r in read_jsonl(self.path) if r.get("step", -1) <= step]
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
        os.replace(tmp, self.path)

    def write(self, step: int, scalars: Mapping[str, Any]) -> None:
        clean = {k: _to_float(v) for k, v in scalars.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": int(step), **clean}) + "\n")
        if self._tb is not None:
            for k, v in clean.items():
                if v is not None and math.isfinite(v):
                    self._tb.add_scalar(k, v, int(step))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()


def _to_float(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def plot_curves(records: Sequence[Mapping[str, Any]], path: str, title: str = "") -> str | None:
    """Draws eval pass@k, train reward / cumulative solve rate and entropy against step into a PNG.

    Returns the path, or None when there is nothing to plot.
    """
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key):
        pts = [(r["step"], r[key]) for r in records if r.get(key) is not None]
        return ([p[0] for p in pts], [p[1] for p in pts]) if pts else None

    keys = sorted({k for r in records for k in r})
    passk = sorted(
        (k for k in keys if k.startswith("eval/pass@")), key=lambda k: int(k.split("@")[1])
    )
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for k in passk:
        s = series(k)
        if s:
            axes[0].plot(*s, marker="o", ms=3, label=k.split("/")[-1])
    axes[0].set(title="held-out pass@k", xlabel="RL step", ylim=(0, 1))
    if passk:
        axes[0].legend(fontsize=7)
    for k, lab in [("train/reward_mean", "reward"), ("train/cum_solve_rate", "cumulative solve")]:
        s = series(k)
        if s:
            axes[1].plot(*s, label=lab)
    axes[1].set(title="training", xlabel="RL step", ylim=(0, 1))
    axes[1].legend(fontsize=7)
    s = series("train/entropy")
    if s:
        axes[2].plot(*s)
    axes[2].set(title="policy entropy (nats / token)", xlabel="RL step")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
