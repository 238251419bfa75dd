"""Figures with confidence intervals, graded against a tolerance: the statistics every report of mmfuse shares.

* :class:`Interval`: an estimate with a two-sided confidence interval (undefined parts are None).
* :func:`wilson_interval`: a proportion with its Wilson score interval (:func:`scipy.stats.binomtest`).
* :func:`bootstrap_interval`: any statistic of per-example values with its percentile-bootstrap interval. Examples
  are resampled; optionally whole clusters (every counterfactual of one example together), and optionally a
  second sample, paired (the same examples under two conditions) or independent (two splits).
* :class:`Check`: an interval graded against a threshold: pass, fail, each ``(inconclusive)`` when the interval
  straddles the threshold.
* :func:`spearman`: rank correlation per row of two batches of maps (:func:`scipy.stats.spearmanr`).

The bootstrap interval is the percentile interval of :func:`scipy.stats.bootstrap` (``method="percentile"``): the
``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled statistic, linearly interpolated between
order statistics (:func:`scipy.stats.quantile`, Hyndman & Fan type 7). It is computed here from index draws of a
:func:`numpy.random.default_rng` seeded with ``seed`` (the same draws the same seed gives), because scipy's
resampler cannot resample clusters whole, and because a replicate that is undefined (NaN, e.g. a ratio over an
empty resample) must be left out rather than make the whole interval undefined. Infinite replicates are kept.

References: Efron & Tibshirani, "An Introduction to the Bootstrap" (1993), ch. 13 (percentile intervals); Field &
Welsh, "Bootstrapping clustered data", JRSS-B 2007 (resampling whole clusters).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from mmfuse.errors import ConfigError

__all__ = [
    "Direction",
    "Interval",
    "Check",
    "check_level",
    "wilson_interval",
    "bootstrap_interval",
    "rule_of_three",
    "spearman",
]

Direction = Literal["at_most", "at_least"]

_CHUNK = 100  # resamples drawn at once: bounds the memory at _CHUNK x n values


@dataclass(frozen=True)
class Interval:
    """An estimate with a two-sided confidence interval.

    A NaN given for the estimate or a bound is stored as None: one spelling of "undefined".

    Attributes:
        estimate: the point estimate; None when undefined (no examples, a ratio over zero).
        low: lower end of the interval; None when undefined.
        high: upper end of the interval; None when undefined.
        n: values the estimate rests on.
        level: confidence level of the interval.
        method: ``bootstrap`` or ``wilson``.
    """

    estimate: float | None
    low: float | None
    high: float | None
    n: int
    level: float = 0.95
    method: str = "bootstrap"

    def __post_init__(self) -> None:
        for name in ("estimate", "low", "high"):
            value = getattr(self, name)
            object.__setattr__(self, name, None if value is None or math.isnan(value) else float(value))

    def as_dict(
        self, estimate: str = "estimate", low: str = "ci_low", high: str = "ci_high", *, brief: bool = False
    ) -> dict[str, Any]:
        """JSON-ready fields, under the names a report writes (non-finite values become None).

        Args:
            estimate: key of the estimate.
            low: key of the lower bound.
            high: key of the upper bound.
            brief: leave out ``level`` and ``method`` (for reports that state them once).

        Example:
            >>> Interval(0.5, 0.25, 0.75, 8).as_dict("value", "low", "high", brief=True)
            {'value': 0.5, 'low': 0.25, 'high': 0.75, 'n': 8}
        """
        fields = {estimate: _finite(self.estimate), low: _finite(self.low), high: _finite(self.high), "n": self.n}
        return fields if brief else {**fields, "level": self.level, "method": self.method}

    def format(self, digits: int = 3) -> str:
        """``0.512 [0.480, 0.544]``, or ``—`` when undefined.

        Example:
            >>> Interval(1.5, 1.0, math.inf, 10).format(1)
            '1.5 [1.0, ∞]'
        """
        if self.estimate is None:
            return "—"
        return f"{_fmt(self.estimate, digits)} [{_fmt(self.low, digits)}, {_fmt(self.high, digits)}]"


@dataclass(frozen=True)
class Check:
    """A graded figure: an interval and the threshold (tolerance) it must stay within.

    Attributes:
        name: what is measured, e.g. ``label error fraction (train)``.
        interval: the measured value with its confidence interval.
        threshold: the limit; None = reported only, not graded.
        direction: ``at_most`` (the value must not exceed the threshold) or ``at_least``.
    """

    name: str
    interval: Interval
    threshold: float | None
    direction: Direction = "at_most"

    @property
    def passed(self) -> bool | None:
        """Whether the estimate is within the threshold; None when not graded or undefined."""
        if self.threshold is None or self.interval.estimate is None:
            return None
        return self._within(self.interval.estimate)

    @property
    def conclusive(self) -> bool | None:
        """Whether the whole interval lies on the same side of the threshold as the estimate."""
        if self.passed is None or self.interval.low is None or self.interval.high is None:
            return None
        return self._within(self.interval.low) == self._within(self.interval.high) == self.passed

    @property
    def status(self) -> str:
        """``pass``, ``fail`` (each ``(inconclusive)`` when the interval straddles the threshold) or ``reported``."""
        if self.passed is None:
            return "reported"
        word = "pass" if self.passed else "fail"
        return word if self.conclusive else f"{word} (inconclusive)"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "name": self.name,
            **self.interval.as_dict(),
            "threshold": self.threshold,
            "direction": self.direction,
            "passed": self.passed,
            "conclusive": self.conclusive,
            "status": self.status,
        }

    def _within(self, value: float) -> bool:
        assert self.threshold is not None
        return value <= self.threshold if self.direction == "at_most" else value >= self.threshold


def check_level(level: float, where: str = "level") -> float:
    """``level`` if it is a confidence level strictly between 0 and 1, else :class:`ConfigError`."""
    if not 0.0 < level < 1.0:
        raise ConfigError(f"{where}={level}: a confidence level must lie strictly between 0 and 1 (e.g. 0.95)")
    return level


def wilson_interval(successes: int, n: int, level: float = 0.95) -> Interval:
    """Proportion ``successes / n`` with its Wilson score interval.

    Args:
        successes: count of events.
        n: trials; 0 gives an undefined interval.
        level: confidence level.

    Example:
        >>> wilson_interval(8, 10).format(2)
        '0.80 [0.49, 0.94]'
    """
    from scipy.stats import binomtest

    check_level(level)
    if not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes ({successes}) <= n ({n})")
    if n == 0:
        return Interval(None, None, None, 0, level, "wilson")
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return Interval(successes / n, float(ci.low), float(ci.high), int(n), level, "wilson")


def bootstrap_interval(
    values: ArrayLike,
    statistic: Callable[..., float] | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    *,
    clusters: ArrayLike | None = None,
    other: ArrayLike | None = None,
    paired: bool = False,
    nan_policy: Literal["propagate", "omit"] = "propagate",
) -> Interval:
    """A statistic of per-example values with its percentile-bootstrap interval (see the module docstring).

    Args:
        values: (n,) or (n, ...) per-example values (bool is read as 0 / 1); rows are resampled together.
        statistic: maps a resampled (n, ...) array (and, with ``other``, the resampled second sample) to a float;
            None = the mean of ``values``. It may return inf (kept) or NaN (that replicate is left out).
        n_boot: bootstrap resamples.
        level: confidence level.
        seed: seed of the resampling.
        clusters: (n,) cluster id of each value; values of one cluster are not independent (e.g. several
            counterfactuals of one example), so whole clusters are resampled. None = each value on its own.
        other: (m, ...) a second sample passed to ``statistic`` after ``values``.
        paired: ``other`` holds the same examples as ``values`` (m == n; both resampled with the same draws); else
            the two samples are resampled independently.
        nan_policy: ``omit`` leaves out the rows of ``values`` holding NaN (a figure undefined for that example)
            first; ``propagate`` keeps them (the mean is then undefined).

    Returns:
        The statistic on the full sample and its interval; undefined (None) when ``values`` is empty or the
        statistic is NaN on the full sample.

    Example:
        >>> bootstrap_interval([1, 1, 0, 1, 0, 1, 1, 1]).estimate
        0.75
    """
    check_level(level)
    if n_boot < 1:
        raise ConfigError(f"n_boot={n_boot}: need at least one bootstrap resample")
    data = np.asarray(values, dtype=np.float64)
    second = None if other is None else np.asarray(other, dtype=np.float64)
    ids = None if clusters is None else np.asarray(clusters).reshape(-1)
    _check_samples(data, statistic, ids, second, paired)
    if nan_policy == "omit" and data.ndim:
        keep = ~np.isnan(data.reshape(len(data), -1)).any(axis=1)  # (n,) rows without NaN
        data, ids = data[keep], None if ids is None else ids[keep]
        second = second[keep] if paired and second is not None else second
    n = int(data.shape[0]) if data.ndim else 0
    if n == 0 or (second is not None and second.shape[0] == 0):
        return Interval(None, None, None, n, level, "bootstrap")
    samples = (data,) if second is None else (data, second)
    estimate = float(statistic(*samples)) if statistic is not None else float(data.mean())
    if math.isnan(estimate):
        return Interval(None, None, None, n, level, "bootstrap")
    rng = np.random.default_rng(seed)
    if ids is not None:
        replicates = _cluster_replicates(data, ids, statistic, n_boot, rng)
    else:
        replicates = _replicates(samples, statistic, paired, n_boot, rng)
    low, high = _percentile_interval(replicates, level)
    return Interval(estimate, low, high, n, level, "bootstrap")


def _check_samples(
    data: np.ndarray,
    statistic: Callable[..., float] | None,
    clusters: np.ndarray | None,
    other: np.ndarray | None,
    paired: bool,
) -> None:
    if other is not None and statistic is None:
        raise ValueError("a second sample needs a statistic of two samples")
    if other is not None and clusters is not None:
        raise ValueError("clusters resample one sample; give either clusters or a second sample")
    if paired and (other is None or other.shape[:1] != data.shape[:1]):
        shapes = (data.shape, None if other is None else other.shape)
        raise ValueError(f"paired samples need equal shape (one row per example); got {shapes[0]} and {shapes[1]}")
    if clusters is not None and clusters.shape != data.shape[:1]:
        raise ValueError(f"clusters has shape {clusters.shape} but values has {data.shape}")


def _replicates(
    samples: tuple[np.ndarray, ...],
    statistic: Callable[..., float] | None,
    paired: bool,
    n_boot: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """(n_boot,) statistic of resampled examples; one draw for paired samples, one per sample otherwise."""
    out = np.empty(n_boot)
    for start in range(0, n_boot, _CHUNK):
        size = min(_CHUNK, n_boot - start)
        first = rng.integers(0, len(samples[0]), size=(size, len(samples[0])))  # (size, n) resampled rows
        draws = [first] + [first if paired else rng.integers(0, len(s), size=(size, len(s))) for s in samples[1:]]
        if statistic is None:
            data = samples[0]
            out[start : start + size] = data[first].reshape(size, len(data), -1).mean(axis=(1, 2))
        else:
            out[start : start + size] = [statistic(*(s[d[i]] for s, d in zip(samples, draws))) for i in range(size)]
    return out


def _cluster_replicates(
    data: np.ndarray,
    clusters: np.ndarray,
    statistic: Callable[..., float] | None,
    n_boot: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """(n_boot,) statistic of resampled whole clusters (for the mean: a ratio of resampled cluster sums and sizes)."""
    _, inverse = np.unique(clusters, return_inverse=True)
    k = int(inverse.max()) + 1
    draws = rng.integers(0, k, size=(n_boot, k))  # (n_boot, k) resampled cluster ids
    if statistic is None:
        flat = data.reshape(len(data), -1).mean(axis=1)  # a row's mean counts once, as in the full-sample mean
        sums, counts = np.bincount(inverse, weights=flat, minlength=k), np.bincount(inverse, minlength=k)
        return sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    members = [np.flatnonzero(inverse == c) for c in range(k)]
    return np.array([statistic(data[np.concatenate([members[c] for c in draw])]) for draw in draws])


def _percentile_interval(replicates: np.ndarray, level: float) -> tuple[float | None, float | None]:
    """The percentile interval of the replicates that are defined (NaN left out; inf kept)."""
    from scipy.stats import quantile

    kept = replicates[~np.isnan(replicates)]
    if kept.size == 0:
        return None, None
    low, high = quantile(kept, np.array([(1 - level) / 2, (1 + level) / 2]))
    return float(low), float(high)


def rule_of_three(n: int) -> float:
    """Upper 95 % bound on a rate when none of ``n`` trials had the event (the bootstrap interval is [0, 0] then)."""
    return min(1.0, 3.0 / n) if n > 0 else 1.0


def spearman(a: ArrayLike, b: ArrayLike, mask: ArrayLike | None = None) -> np.ndarray:
    """Spearman rank correlation per row, over the entries where ``mask`` is True (:func:`scipy.stats.spearmanr`).

    Ties get average ranks. A constant row has no ranking: two constant rows count as agreeing (1) and a constant
    row against a varying one as uncorrelated (0), so the result is always finite.

    Args:
        a: (B, ...) values.
        b: (B, ...) values of the same shape.
        mask: (B, ...) bool, True = compare; None = everything.

    Returns:
        (B,) float64 correlations in [-1, 1].

    Example:
        >>> spearman([[1, 2, 3], [5, 5, 5]], [[1, 4, 9], [1, 2, 3]]).tolist()
        [1.0, 0.0]
    """
    from scipy.stats import spearmanr

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"spearman needs arrays of one shape; got {x.shape} and {y.shape}")
    x, y = x.reshape(len(x), -1), y.reshape(len(y), -1)  # (B, ...) -> (B, P)
    valid = np.ones(x.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool).reshape(x.shape)
    rho = np.empty(len(x))
    for i, (row_a, row_b) in enumerate(zip(x, y)):
        row_a, row_b = row_a[valid[i]], row_b[valid[i]]
        constant_a, constant_b = _is_constant(row_a), _is_constant(row_b)
        if constant_a or constant_b:
            rho[i] = float(constant_a and constant_b)
        else:
            rho[i] = spearmanr(row_a, row_b).statistic
    return rho


def _is_constant(row: np.ndarray) -> bool:
    return row.size < 2 or bool(row.min() == row.max())


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "?"
    return f"{value:.{digits}f}" if math.isfinite(value) else ("∞" if value > 0 else "-∞")
