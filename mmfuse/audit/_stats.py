"""Graded figures: a value with its confidence interval, and a pass/fail against a threshold the user sets.

* :func:`wilson_interval` for proportions (Wilson score interval, via :func:`scipy.stats.binomtest`): counts of
  flagged examples, class shares, precision and recall.
* :func:`bootstrap_interval` for any statistic of per-example values (percentile bootstrap over examples):
  accuracies, ratios, differences of paired values. Unlike :func:`mmfuse.attribution.metrics.bootstrap_ci` (a mean
  of a torch tensor) it takes any statistic, and infinite resampled values (a ratio over an empty class) are kept.
* :class:`Check` grades an :class:`Interval` against a threshold: ``passed`` reads the estimate, ``conclusive`` says
  whether the whole interval lies on the same side of the threshold.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from mmfuse.errors import ConfigError

__all__ = ["Interval", "Check", "wilson_interval", "bootstrap_interval", "check_level"]

Direction = Literal["at_most", "at_least"]


@dataclass(frozen=True)
class Interval:
    """An estimate with a two-sided confidence interval.

    Attributes:
        estimate: the point estimate; None when undefined (no examples).
        low: lower end of the interval; None when undefined.
        high: upper end of the interval; None when undefined.
        n: examples the estimate rests on.
        level: confidence level of the interval.
        method: ``wilson`` or ``bootstrap``.
    """

    estimate: float | None
    low: float | None
    high: float | None
    n: int
    level: float = 0.95
    method: str = "wilson"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (non-finite values become None)."""
        return {
            "estimate": _finite(self.estimate),
            "ci_low": _finite(self.low),
            "ci_high": _finite(self.high),
            "n": self.n,
            "level": self.level,
            "method": self.method,
        }

    def format(self, digits: int = 3) -> str:
        """``0.512 [0.480, 0.544]``, or ``—`` when undefined."""
        if self.estimate is None:
            return "—"
        return f"{_fmt(self.estimate, digits)} [{_fmt(self.low, digits)}, {_fmt(self.high, digits)}]"


@dataclass(frozen=True)
class Check:
    """A graded figure: an interval and the threshold it must stay within.

    Attributes:
        name: what is measured, e.g. ``label error fraction (train)``.
        interval: the measured value with its confidence interval.
        threshold: the user's limit; None = reported only, not graded.
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
    statistic: Callable[[np.ndarray], float] | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """A statistic of per-example values with its percentile-bootstrap interval (examples resampled).

    Args:
        values: (n,) or (n, ...) per-example values; rows are resampled together.
        statistic: maps a resampled (n, ...) array to a float; None = the mean.
        n_boot: bootstrap resamples.
        level: confidence level.
        seed: seed of the resampling.

    Example:
        >>> bootstrap_interval([1, 1, 0, 1, 0, 1, 1, 1]).estimate
        0.75
    """
    check_level(level)
    if n_boot < 1:
        raise ConfigError(f"n_boot={n_boot}: need at least one bootstrap resample")
    data = np.asarray(values, dtype=np.float64)
    n = int(data.shape[0]) if data.ndim else 0
    if n == 0:
        return Interval(None, None, None, 0, level, "bootstrap")
    rng = np.random.default_rng(seed)
    estimate = float(statistic(data)) if statistic is not None else float(data.mean())
    stats = np.empty(n_boot)
    for start in range(0, n_boot, 100):  # chunks of resamples bound the memory at 100 x n values
        rows = rng.integers(0, n, size=(min(100, n_boot - start), n))  # (b, n) resampled example indices
        if statistic is None:
            stats[start : start + len(rows)] = data[rows].reshape(len(rows), n, -1).mean(axis=(1, 2))
        else:
            stats[start : start + len(rows)] = [statistic(data[r]) for r in rows]
    # Order statistics, not interpolation: a resampled ratio may be infinite, and inf - inf has no meaning.
    low, high = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")
    return Interval(estimate, float(low), float(high), n, level, "bootstrap")


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "?"
    return f"{value:.{digits}f}" if math.isfinite(value) else ("∞" if value > 0 else "-∞")
