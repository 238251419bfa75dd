"""Percentile-bootstrap confidence intervals for the probes: a (cluster) mean, and the relative drop of accuracy.

Reference: Efron & Tibshirani, "An Introduction to the Bootstrap" (1993), ch. 13 (percentile intervals); resampling
whole clusters (e.g. every counterfactual of one example) follows Field & Welsh, "Bootstrapping clustered data",
JRSS-B 2007.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["Estimate", "bootstrap_mean", "bootstrap_relative_drop", "rule_of_three"]


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap confidence interval.

    Attributes:
        value: the estimate on the full sample.
        low: lower end of the interval.
        high: upper end of the interval.
        n: number of values (or examples) it rests on.
    """

    value: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return {"value": self.value, "low": self.low, "high": self.high, "n": self.n}

    def format(self, digits: int = 3, percent: bool = False) -> str:
        """``0.312 [0.270, 0.355]`` (or in percent)."""
        scale, unit = (100.0, "%") if percent else (1.0, "")
        d = max(digits - 2, 0) if percent else digits
        return f"{self.value * scale:.{d}f}{unit} [{self.low * scale:.{d}f}, {self.high * scale:.{d}f}]"


def _check(level: float, n_boot: int) -> None:
    if not 0.0 < level < 1.0 or n_boot < 1:
        raise ValueError(f"level must be in (0, 1) and n_boot >= 1; got level={level}, n_boot={n_boot}")


def bootstrap_mean(
    values: ArrayLike,
    clusters: ArrayLike | None = None,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """Mean of ``values`` with a percentile-bootstrap interval; clusters are resampled whole.

    Args:
        values: (n,) numbers (bool is read as 0 / 1).
        clusters: (n,) cluster id of each value (values of one cluster are not independent, e.g. several
            counterfactuals of one example); None = every value is its own cluster.
        n_boot: bootstrap resamples.
        level: confidence level.
        seed: seed of the resampling.

    Returns:
        The mean over all values (a ratio of sums over resampled clusters in each replicate) and its interval.

    Example:
        >>> e = bootstrap_mean([0, 1, 1, 1], n_boot=200)
        >>> e.value, e.n, 0.0 <= e.low <= e.value <= e.high <= 1.0
        (0.75, 4, True)
    """
    _check(level, n_boot)
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise ValueError("bootstrap_mean needs at least one value")
    sums: np.ndarray = v
    counts: np.ndarray = np.ones_like(v)
    if clusters is not None:
        ids = np.asarray(clusters).reshape(-1)
        if ids.shape != v.shape:
            raise ValueError(f"clusters has shape {ids.shape} but values has {v.shape}")
        _, inverse = np.unique(ids, return_inverse=True)
        sums, counts = np.bincount(inverse, weights=v), np.bincount(inverse).astype(np.float64)  # per cluster
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, sums.size, size=(n_boot, sums.size))  # (n_boot, n_clusters)
    replicates = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    low, high = np.quantile(replicates, [(1 - level) / 2, (1 + level) / 2])
    return Estimate(float(v.mean()), float(low), float(high), int(v.size))


def bootstrap_relative_drop(
    reference: ArrayLike,
    perturbed: ArrayLike,
    *,
    paired: bool,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[Estimate, Estimate]:
    """Accuracy under a perturbation and its relative drop ``1 - acc_perturbed / acc_reference``, with intervals.

    Args:
        reference: (n,) 0/1 correctness on the reference (clean) data.
        perturbed: (m,) 0/1 correctness on the perturbed data.
        paired: the two arrays hold the same examples (then m == n and examples are resampled together), else the
            two samples are resampled independently (e.g. a shifted split against the test split).
        n_boot: bootstrap resamples.
        level: confidence level.
        seed: seed of the resampling.

    Returns:
        (accuracy on ``perturbed``, relative drop); the drop is NaN (with NaN bounds) when the reference accuracy is 0.
    """
    _check(level, n_boot)
    ref, per = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (reference, perturbed))
    if ref.size == 0 or per.size == 0 or (paired and ref.shape != per.shape):
        raise ValueError(f"need non-empty arrays (of equal shape when paired); got {ref.shape} and {per.shape}")
    rng = np.random.default_rng(seed)
    draws_ref = rng.integers(0, ref.size, size=(n_boot, ref.size))
    draws_per = draws_ref if paired else rng.integers(0, per.size, size=(n_boot, per.size))
    acc_ref, acc_per = ref[draws_ref].mean(axis=1), per[draws_per].mean(axis=1)
    accuracy = _percentile(float(per.mean()), acc_per, level, per.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        drops = 1.0 - acc_per / acc_ref
    value = 1.0 - per.mean() / ref.mean() if ref.mean() > 0 else float("nan")
    drops = drops[np.isfinite(drops)]
    if not np.isfinite(value) or drops.size == 0:
        return accuracy, Estimate(float("nan"), float("nan"), float("nan"), int(per.size))
    return accuracy, _percentile(float(value), drops, level, per.size)


def _percentile(value: float, replicates: np.ndarray, level: float, n: int) -> Estimate:
    low, high = np.quantile(replicates, [(1 - level) / 2, (1 + level) / 2])
    return Estimate(value, float(low), float(high), n)


def rule_of_three(n: int) -> float:
    """Upper 95 % bound on a rate when none of ``n`` trials had the event (the bootstrap interval is [0, 0] then)."""
    return min(1.0, 3.0 / n) if n > 0 else 1.0
