"""Class balance of a split: counts, shares with Wilson intervals, the imbalance ratio with a bootstrap interval,
and the classes whose share falls below a user-set fraction of the uniform share ``1 / K``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from mmfuse.errors import ConfigError
from mmfuse.stats import Check, Interval, bootstrap_interval, wilson_interval

__all__ = ["ClassBalance", "class_balance"]


@dataclass(frozen=True)
class ClassBalance:
    """Class balance of one split.

    Attributes:
        class_names: label names, index-aligned with ``counts``.
        counts: examples per class.
        shares: per class, its share of the split with a Wilson interval.
        imbalance_ratio: largest over smallest class count (infinite when a class is empty), bootstrap interval.
        min_share: the share below which a class is flagged (``min_relative_share / K``).
        under_represented: names of the flagged classes.
        checks: the smallest class share against ``min_share``, the imbalance ratio against its maximum.
    """

    class_names: tuple[str, ...]
    counts: list[int]
    shares: list[Interval]
    imbalance_ratio: Interval
    min_share: float
    under_represented: list[str]
    checks: list[Check]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "classes": [
                {
                    "name": name,
                    "count": count,
                    "share": share.as_dict(),
                    "under_represented": name in self.under_represented,
                }
                for name, count, share in zip(self.class_names, self.counts, self.shares)
            ],
            "imbalance_ratio": self.imbalance_ratio.as_dict(),
            "min_share": self.min_share,
            "under_represented": self.under_represented,
        }


def class_balance(
    labels: ArrayLike,
    class_names: Sequence[str],
    min_relative_share: float = 0.5,
    max_imbalance_ratio: float | None = 3.0,
    level: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
    split: str = "",
) -> ClassBalance:
    """Count classes and flag the under-represented ones.

    Args:
        labels: (n,) class indices in ``0 .. K-1``.
        class_names: the K label names (classes without examples count as empty).
        min_relative_share: a class is under-represented when its share is below ``min_relative_share / K``
            (0.5: below half of a uniform share); in (0, 1].
        max_imbalance_ratio: largest / smallest class count allowed (>= 1); None = reported only.
        level: confidence level of the intervals.
        n_boot: bootstrap resamples of the imbalance ratio.
        seed: seed of the resampling.
        split: the split's name, for the names of the checks.

    Example:
        >>> balance = class_balance([0, 0, 0, 0, 0, 0, 1, 1, 2], ["a", "b", "c"], max_imbalance_ratio=3.0)
        >>> balance.counts, balance.under_represented, balance.checks[1].status
        ([6, 2, 1], ['c'], 'fail (inconclusive)')
    """
    if not 0.0 < min_relative_share <= 1.0:
        raise ConfigError(f"min_relative_share={min_relative_share}: must lie in (0, 1] (a fraction of 1 / K)")
    if max_imbalance_ratio is not None and max_imbalance_ratio < 1.0:
        raise ConfigError(f"max_imbalance_ratio={max_imbalance_ratio}: must be >= 1 (largest / smallest class)")
    y = np.asarray(labels, dtype=np.int64)
    k = len(class_names)
    if k == 0:
        raise ConfigError("class_balance needs at least one class name")
    if y.size and (y.min() < 0 or y.max() >= k):
        raise ConfigError(f"labels must lie in 0..{k - 1} (the {k} classes); found {int(y.min())}..{int(y.max())}")
    counts = np.bincount(y, minlength=k)
    n = int(y.size)
    shares = [wilson_interval(int(c), n, level) for c in counts]
    ratio = bootstrap_interval(y, lambda s: _ratio(np.bincount(s.astype(np.int64), minlength=k)), n_boot, level, seed)
    min_share = min_relative_share / k
    smallest = int(np.argmin(counts))
    where = f"{split}, " if split else ""
    checks = [
        Check(f"smallest class share ({where}{class_names[smallest]})", shares[smallest], min_share, "at_least"),
        Check(f"imbalance ratio ({where}largest / smallest class)", ratio, max_imbalance_ratio, "at_most"),
    ]
    flagged = [name for name, c in zip(class_names, counts) if n and c / n < min_share]
    return ClassBalance(tuple(class_names), counts.tolist(), shares, ratio, min_share, flagged, checks)


def _ratio(counts: np.ndarray) -> float:
    return float(counts.max() / counts.min()) if counts.min() > 0 else float("inf")
