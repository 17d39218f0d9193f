"""Statistics for verdicts on paired runs: paired t intervals, equivalence tests, a prompt bootstrap.

Seed s gives every method of a study the same data order and keys, so two methods' results are
*paired* by seed: the verdict on "A beats B" comes from the per-seed differences ``a_s - b_s``, not
from two independent standard errors. Every verdict string in the results files is produced here:

* :func:`paired_difference`: mean difference with a t-based confidence interval (two-sided, default
  95%), the paired t statistic and its p-value.
* :func:`superiority`: "holds" when the interval excludes 0 in the claimed direction, "does not
  hold" when it excludes 0 the other way, else "inconclusive".
* :func:`equivalence`: two one-sided tests (TOST) with a stated margin: "holds" when the
  ``1 - 2 alpha`` interval lies inside ``(-margin, margin)``, "does not hold" when the two-sided
  ``1 - alpha`` interval lies wholly outside it, else "inconclusive". Used for "keeps pass@1".
* :func:`align_pairs`: the values of two methods on the pair ids (seeds) both finished.
* :func:`bootstrap_paired`: a percentile bootstrap over eval prompts of a paired mean difference,
  for a single pair of runs (variation over prompts, not over seeds).

NumPy and SciPy only; nothing here touches JAX.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = [
    "PairedResult",
    "align_pairs",
    "bootstrap_paired",
    "equivalence",
    "paired_difference",
    "superiority",
]


@dataclasses.dataclass(frozen=True)
class PairedResult:
    """A paired comparison ``a - b`` over ``n`` pairs.

    Attributes:
      mean: mean of the differences. lo, hi: the confidence interval. level: its confidence level.
      n: number of pairs. sd: standard deviation of the differences (ddof = 1). t: the paired t
      statistic (NaN when sd = 0 and mean = 0). p_value: two-sided p-value of ``mean = 0``.
      verdict: set by :func:`superiority` / :func:`equivalence` (empty otherwise).
    """

    mean: float
    lo: float
    hi: float
    level: float
    n: int
    sd: float
    t: float
    p_value: float
    verdict: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def interval(self, digits: int = 1, scale: float = 1.0) -> str:
        """``"+1.2 [-0.3, +2.7]"``: the mean and interval, scaled (e.g. 100 for percentage points)."""
        f = f"{{:+.{digits}f}}"
        return (
            f"{f.format(self.mean * scale)} [{f.format(self.lo * scale)}, "
            f"{f.format(self.hi * scale)}]"
        )


def _pairs(a: Any, b: Any) -> np.ndarray:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(
            f"paired samples must be 1-D and of equal length (one value per seed); got shapes "
            f"{a.shape} and {b.shape}."
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired samples must be finite; a NaN usually means a run did not finish.")
    if a.size < 2:
        raise ValueError(f"a paired interval needs at least 2 pairs, got {a.size}.")
    return a - b


def align_pairs(a: dict[Any, float | None], b: dict[Any, float | None]) -> tuple[list, list, list]:
    """The pairs two methods both have: ``a`` and ``b`` map a pair id (a seed, a (warm start, seed)
    tuple) to a value, ``None`` for a missing one; returns ``(values_a, values_b, ids)`` over the
    sorted ids present (and not ``None``) in both."""
    ids = sorted(k for k in set(a) & set(b) if a[k] is not None and b[k] is not None)
    return [a[k] for k in ids], [b[k] for k in ids], ids


def paired_difference(a: Any, b: Any, level: float = 0.95) -> PairedResult:
    """Mean of ``a - b`` over pairs with a two-sided t confidence interval at ``level``.

    Args:
      a, b: ``[n]`` values, pair i = seed i of each method.
      level: confidence level in (0, 1).

    Returns:
      A :class:`PairedResult` (verdict empty).

    Example:
      >>> r = paired_difference([0.61, 0.58, 0.66], [0.55, 0.57, 0.60])
      >>> round(r.mean, 3), r.n
      (0.043, 3)
    """
    from scipy import stats as st

    if not 0 < level < 1:
        raise ValueError(f"`level` must lie in (0, 1), got {level}.")
    d = _pairs(a, b)
    n = d.size
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    se = sd / np.sqrt(n)
    crit = float(st.t.ppf(0.5 + level / 2, df=n - 1))
    if se > 0:
        t = mean / se
        p = float(2 * st.t.sf(abs(t), df=n - 1))
    else:  # identical differences: the interval collapses to the point
        t = float("nan") if mean == 0 else float(np.sign(mean) * np.inf)
        p = 1.0 if mean == 0 else 0.0
    return PairedResult(mean, mean - crit * se, mean + crit * se, level, n, sd, float(t), p)


def superiority(a: Any, b: Any, level: float = 0.95, higher_is_better: bool = True) -> PairedResult:
    """Verdict on the claim "a is better than b" from the paired interval at ``level``.

    "holds" when the interval excludes 0 on the claimed side, "does not hold" when it excludes 0 on
    the other side, "inconclusive" when it contains 0.
    """
    r = paired_difference(a, b, level)
    lo, hi = (r.lo, r.hi) if higher_is_better else (-r.hi, -r.lo)
    verdict = "holds" if lo > 0 else ("does not hold" if hi < 0 else "inconclusive")
    return dataclasses.replace(r, verdict=verdict)


def equivalence(a: Any, b: Any, margin: float, alpha: float = 0.05) -> PairedResult:
    """TOST verdict on "a and b differ by less than ``margin``" (e.g. "the anneal keeps pass@1").

    Equivalence at level ``alpha`` holds when the ``1 - 2 alpha`` paired interval lies inside
    ``(-margin, margin)``; it does not hold when the two-sided ``1 - alpha`` interval lies wholly
    outside; otherwise the data cannot tell ("inconclusive"). The returned interval is the
    ``1 - 2 alpha`` one.
    """
    if margin <= 0:
        raise ValueError(f"`margin` must be > 0, got {margin}.")
    r = paired_difference(a, b, 1 - 2 * alpha)
    wide = paired_difference(a, b, 1 - alpha)
    if -margin < r.lo and r.hi < margin:
        verdict = "holds"
    elif wide.lo >= margin or wide.hi <= -margin:
        verdict = "does not hold"
    else:
        verdict = "inconclusive"
    return dataclasses.replace(r, verdict=verdict)


def bootstrap_paired(
    a: Any, b: Any, level: float = 0.95, num_resamples: int = 10_000, seed: int = 0
) -> PairedResult:
    """Percentile bootstrap of ``mean(a - b)`` over paired items (e.g. eval prompts of two runs).

    Args:
      a, b: ``[m]`` per-item values (item i scored under both runs).
      level: interval level. num_resamples: bootstrap resamples. seed: NumPy seed.

    Returns:
      A :class:`PairedResult` whose ``lo`` / ``hi`` are bootstrap percentiles; ``t`` and ``p_value``
      are those of the paired t test on the items (for reference).
    """
    d = _pairs(a, b)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, (num_resamples, d.size))
    means = d[idx].mean(axis=1)
    lo, hi = np.quantile(means, [0.5 - level / 2, 0.5 + level / 2])
    t_ref = paired_difference(a, b, level)
    return dataclasses.replace(t_ref, lo=float(lo), hi=float(hi))
