"""Evaluation metrics (unbiased pass@k, cumulative solve rate) and writers (JSONL, TensorBoard, PNG).

``pass_at_k_table(rewards, ks)`` averages the unbiased pass@k estimate over prompts (``maxg_at_k_table``
the maxg@k estimate, for continuous rewards);
``CumulativeSolve`` tracks the fraction of training prompts solved at least once (PKPO's exploration
metric); ``MetricWriter`` appends one JSON object per logged step to ``metrics.jsonl`` and mirrors the
scalars to TensorBoard (tensorboardX); ``plot_curves`` draws the pass@k / reward / entropy curves;
``HealthMonitor`` raises training-health alarms from the per-step records.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from passk_jax import estimators as E

__all__ = [
    "CumulativeSolve",
    "HealthMonitor",
    "MetricWriter",
    "format_final_table",
    "maxg_at_k_table",
    "negative_diversity",
    "pass_at_k_table",
    "plot_curves",
    "powers_of_two",
    "read_jsonl",
    "read_tensorboard_scalars",
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


def maxg_at_k_table(rewards: Any, ks: Iterable[int]) -> dict[int, float]:
    """Mean over prompts of the unbiased maxg@k estimate (E[max of k rewards], PKPO Eq. 12).

    Args:
      rewards: ``[P, G]`` rewards (any real values) of G samples for each of P prompts.
      ks: the k values (each <= G).

    Returns:
      ``{k: mean maxg@k}``; for 0/1 rewards it equals :func:`pass_at_k_table`.
    """
    r = np.asarray(rewards, np.float32)
    return {int(k): float(np.mean(np.asarray(E.maxg_at_k(r, int(k))))) for k in ks}


def negative_diversity(
    rewards: Any, answers: Sequence[Sequence[str]], threshold: float = 1.0
) -> dict[str, float]:
    """Diversity of the wrong answers within each group (Chen et al.: it stays high under Pass@k).

    Args:
      rewards: ``[P, G]`` rewards. answers: ``P`` lists of ``G`` extracted answers (strings).
      threshold: a reward at or above it is a pass; the others are the negatives.

    Returns:
      ``neg_distinct``: mean over groups with at least one negative of the number of distinct wrong
      answers; ``neg_distinct_frac``: the same groups' mean of distinct / number of negatives (1 =
      every wrong answer different). NaN when no group has a negative.
    """
    r = np.asarray(rewards)
    counts, fracs = [], []
    for row, ans in zip(r, answers, strict=True):
        wrong = [a.strip() for a, v in zip(ans, row, strict=True) if not v >= threshold]
        if wrong:
            counts.append(len(set(wrong)))
            fracs.append(len(set(wrong)) / len(wrong))
    if not counts:
        return {"neg_distinct": math.nan, "neg_distinct_frac": math.nan}
    return {"neg_distinct": float(np.mean(counts)), "neg_distinct_frac": float(np.mean(fracs))}


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


class HealthMonitor:
    """Training-health alarms from the learner's per-step metrics (``train/*`` record keys).

    Alarms (each sets ``health/<name> = 1`` in the step's record and logs a warning):

    * ``nonfinite``: the loss, the gradient norm or a weight is NaN / inf. Always stops the run.
    * ``zero_updates``: every weight and the gradient were exactly zero for ``zero_update_steps``
      consecutive steps (e.g. every group's rewards tied, or a diverged policy scoring 0 throughout).
    * ``entropy_collapse``: the policy's per-token entropy stayed below ``entropy_floor`` nats for
      ``entropy_steps`` consecutive steps.
    * ``grad_norm_outlier``: a non-zero gradient norm more than ``grad_norm_factor`` times above, or
      below, the median of the last ``grad_norm_window`` non-zero norms (once it holds at least
      ``grad_norm_min_history``).

    With ``stop=True`` any alarm stops the run (``rl.TrainingHealthError``); otherwise only
    ``nonfinite`` does. Every record also gets ``train/clipped_frac``: the fraction of steps so far
    whose gradient norm exceeded the clipping threshold. The state (counters, grad-norm history) is
    checkpointed (``state_dict`` / ``load``) so that a resumed run raises the same alarms.
    """

    DEFAULTS = {
        "stop": False,
        "zero_update_steps": 20,
        "entropy_floor": 1e-3,
        "entropy_steps": 10,
        "grad_norm_factor": 100.0,
        "grad_norm_window": 50,
        "grad_norm_min_history": 10,
    }

    def __init__(self, options: Mapping[str, Any] | None = None):
        unknown = set(options or {}) - set(self.DEFAULTS)
        if unknown:
            raise ValueError(
                f"unknown health options {sorted(unknown)}; use {sorted(self.DEFAULTS)}"
            )
        self.options = {**self.DEFAULTS, **(options or {})}
        self.stop = bool(self.options["stop"])
        self.zero_run = 0
        self.low_entropy_run = 0
        self.steps = 0
        self.clipped = 0
        self.grad_norms: collections.deque = collections.deque(
            maxlen=int(self.options["grad_norm_window"])
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "zero_run": self.zero_run,
            "low_entropy_run": self.low_entropy_run,
            "steps": self.steps,
            "clipped": self.clipped,
            "grad_norms": list(self.grad_norms),
        }

    def load(self, state: Mapping[str, Any] | None) -> None:
        if not state:
            return
        self.zero_run = int(state["zero_run"])
        self.low_entropy_run = int(state["low_entropy_run"])
        self.steps = int(state["steps"])
        self.clipped = int(state["clipped"])
        self.grad_norms.clear()
        self.grad_norms.extend(float(g) for g in state["grad_norms"])

    def update(self, step: int, record: Mapping[str, Any]) -> dict[str, float]:
        """Feeds one step's record; returns the keys to add to it (alarms, clipped fraction)."""
        o = self.options
        out: dict[str, float] = {}
        loss, g = float(record["train/loss"]), float(record["train/grad_norm"])
        self.steps += 1
        self.clipped += int(record.get("train/clipped", 0.0) > 0)
        out["train/clipped_frac"] = self.clipped / self.steps
        if not (math.isfinite(loss) and math.isfinite(g)) or record.get("train/weights_nonfinite"):
            out["health/nonfinite"] = 1.0
        zero = record.get("train/weight_abs_max", 1.0) == 0.0 and g == 0.0
        self.zero_run = self.zero_run + 1 if zero else 0
        if self.zero_run >= int(o["zero_update_steps"]):
            out["health/zero_updates"] = 1.0
        ent = float(record.get("train/entropy", math.inf))
        self.low_entropy_run = self.low_entropy_run + 1 if ent < o["entropy_floor"] else 0
        if self.low_entropy_run >= int(o["entropy_steps"]):
            out["health/entropy_collapse"] = 1.0
        if math.isfinite(g) and g > 0:
            if len(self.grad_norms) >= int(o["grad_norm_min_history"]):
                med = float(np.median(self.grad_norms))
                f = float(o["grad_norm_factor"])
                if g > f * med or g < med / f:
                    out["health/grad_norm_outlier"] = 1.0
                    out["health_info/grad_norm_median"] = med
            self.grad_norms.append(g)
        for msg in self.messages({**record, **out}):
            _log.warning("RL step %d: %s", step, msg)
        return out

    @staticmethod
    def fired(record: Mapping[str, Any]) -> list[str]:
        """Names of the alarms set in ``record``."""
        return [k.split("/", 1)[1] for k in record if k.startswith("health/") and record[k] == 1.0]

    def messages(self, record: Mapping[str, Any]) -> list[str]:
        """One sentence per alarm set in ``record``."""
        o, out = self.options, []
        for name in self.fired(record):
            if name == "nonfinite":
                out.append(
                    f"non-finite loss / gradient (loss {record.get('train/loss')}, grad norm "
                    f"{record.get('train/grad_norm')}, non-finite weights "
                    f"{record.get('train/weights_nonfinite')})"
                )
            elif name == "zero_updates":
                out.append(
                    f"weights and gradients all zero for {self.zero_run} consecutive steps "
                    f"(health.zero_update_steps = {o['zero_update_steps']})"
                )
            elif name == "entropy_collapse":
                out.append(
                    f"policy entropy {record.get('train/entropy'):.3g} nats/token below "
                    f"health.entropy_floor = {o['entropy_floor']} for {self.low_entropy_run} steps"
                )
            elif name == "grad_norm_outlier":
                out.append(
                    f"gradient norm {record.get('train/grad_norm'):.3g} outside "
                    f"{o['grad_norm_factor']:g}x of its running median "
                    f"{record.get('health_info/grad_norm_median', float('nan')):.3g}"
                )
        return out


_log = logging.getLogger("passk_jax")


def read_tensorboard_scalars(logdir: str) -> list[tuple[int, str, float]]:
    """``(step, tag, value)`` of every scalar in the event files under ``logdir``, in file order
    (a TFRecord reader for checks and notebooks; needs tensorboardX, not TensorBoard)."""
    import glob
    import struct

    from tensorboardX.proto.event_pb2 import Event

    out = []
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        with open(path, "rb") as f:
            data = f.read()
        pos = 0
        while pos + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4  # length, its crc, the record, its crc
            for v in event.summary.value:
                out.append((int(event.step), v.tag, float(v.simple_value)))
    return out


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
            from tensorboardX.proto.summary_pb2 import Summary

            # One Summary proto with the JSONL keys as tags: add_scalar would rewrite "eval/pass@1"
            # as "eval/pass_1", so TensorBoard and metrics.jsonl would name the same value apart.
            values = [
                Summary.Value(tag=k, simple_value=v)
                for k, v in clean.items()
                if v is not None and math.isfinite(v)
            ]
            if values:
                self._tb._get_file_writer().add_summary(Summary(value=values), int(step))

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


def format_final_table(record: Mapping[str, Any], title: str = "") -> str:
    """The end-of-run table: held-out pass@k / maxg@k (one row per split and metric, one column per
    k), then the last training scalars (mean reward, cumulative solve rate, entropy, k)."""
    groups: dict[tuple[str, str], dict[int, float]] = {}
    for key, v in record.items():
        head, _, tail = str(key).partition("/")
        m = re.fullmatch(r"(pass|maxg)@(\d+)", tail)
        if head.startswith("eval") and m:
            groups.setdefault((head, m.group(1)), {})[int(m.group(2))] = float(v)
    ks = sorted({k for d in groups.values() for k in d})
    lines = [f"final metrics{': ' + title if title else ''}"]
    if groups:
        lines.append("| split | metric | " + " | ".join(f"k={k}" for k in ks) + " |")
        lines.append("|---|---|" + "---|" * len(ks))
        for (split, metric), d in sorted(groups.items()):
            cells = " | ".join(f"{d[k]:.3f}" if k in d else "" for k in ks)
            lines.append(f"| {split} | {metric}@k | {cells} |")
    else:
        lines.append("(no held-out evaluation in the final record)")
    train = [
        f"{k.split('/')[-1]} {float(record[k]):.4g}"
        for k in ("train/reward_mean", "train/cum_solve_rate", "train/entropy", "train/k")
        if k in record
    ]
    if train:
        lines.append("train: " + ", ".join(train))
    return "\n".join(lines)


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
