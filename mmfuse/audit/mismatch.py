"""Likely image-text mismatches: pairs whose image-text matching score is a low outlier.

A classification model's own confidence is no matching score: a question about a shape the image lacks still gets
a confident colour. The matching score here is instead that of an image-text matching probe, in the manner of the
matching heads of ALBEF / BLIP (Li et al., NeurIPS 2021; ICML 2022) but on frozen features: a standardised
logistic regression that tells a split's real pairs from shuffled pairs (each image with the text of another
example), fit on the model's joint (fused) features of both. Every real pair is scored by a probe that did not see
it (out of fold on the training split, fit on the training split for the others); a pair is flagged when the robust
z-score (median and MAD, Iglewicz and Hoaglin 1993) of the logit of its matching probability is below ``-z``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from mmfuse.errors import ConfigError
from mmfuse.stats import Check, Interval, wilson_interval

__all__ = [
    "Mismatches",
    "derangement",
    "robust_z",
    "matching_probabilities",
    "find_mismatches",
]


@dataclass(frozen=True)
class Mismatches:
    """Likely image-text mismatches of one split.

    Attributes:
        split: the split's name.
        n: examples in the split.
        indices: flagged example indices, lowest matching score first.
        score: (n,) matching probability of each real pair.
        z: (n,) robust z-score of the logit of ``score``.
        fraction: flagged fraction with a Wilson interval.
        checks: the flagged fraction against its maximum.
    """

    split: str
    n: int
    indices: list[int]
    score: np.ndarray
    z: np.ndarray
    fraction: Interval
    checks: list[Check] = field(default_factory=list)

    def as_dict(self, max_listed: int) -> dict[str, Any]:
        """JSON-ready fields, listing at most ``max_listed`` examples."""
        listed = [
            {"index": i, "matching_score": round(float(self.score[i]), 4), "z": round(float(self.z[i]), 2)}
            for i in self.indices[:max_listed]
        ]
        return {"split": self.split, "n": self.n, "flagged": len(self.indices), "fraction": self.fraction.as_dict(),
                "listed": listed}  # fmt: skip


def derangement(n: int, seed: int = 0) -> np.ndarray:
    """A permutation of ``0..n-1`` without fixed points (each example gets another's text); needs ``n >= 2``.

    Example:
        >>> perm = derangement(5)
        >>> sorted(perm.tolist()), bool((perm != range(5)).all())
        ([0, 1, 2, 3, 4], True)
    """
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 elements, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    perm = np.empty(n, dtype=np.int64)
    perm[order] = np.roll(order, 1)  # a single cycle through a random order: never maps i to itself
    return perm


def robust_z(values: ArrayLike) -> np.ndarray:
    """``(v - median) / (1.4826 * MAD)``: a z-score that a few outliers cannot inflate (MAD floored above 0).

    Example:
        >>> robust_z([1.0, 2.0, 3.0, 4.0, 100.0]).round(2).tolist()
        [-1.35, -0.67, 0.0, 0.67, 65.43]
    """
    v = np.asarray(values, dtype=np.float64)
    median = np.median(v)
    mad = 1.4826 * np.median(np.abs(v - median))
    return (v - median) / max(mad, 1e-12)


def matching_probabilities(
    positives: ArrayLike,
    negatives: ArrayLike,
    score: ArrayLike | None = None,
    folds: int = 5,
    seed: int = 0,
) -> np.ndarray:
    """Probability that each real pair matches, from a logistic-regression matching probe.

    The probe learns from as many real pairs as there are shuffled ones (a random subset when there are more real
    pairs), so the two classes weigh the same and the cost follows the number of shuffled pairs.

    Args:
        positives: (n, D) features of real pairs (the probe's real pairs are drawn from them).
        negatives: (m, D) features of shuffled pairs.
        score: (p, D) features of other real pairs, scored by the probe fit on all of its training pairs; None =
            score ``positives`` themselves, each by a probe that did not learn from it (out of fold).
        folds: folds of the out-of-fold scoring (>= 2).
        seed: seed of the subset, the folds and the probe.

    Returns:
        (n,) probabilities (``score`` None) or (p,).
    """
    from sklearn.model_selection import KFold

    pos = np.asarray(positives, dtype=np.float32)
    neg = np.asarray(negatives, dtype=np.float32)
    if len(pos) < 2 or len(neg) < 1:
        raise ConfigError(
            f"the matching probe needs 2 real and 1 shuffled pairs at least, got {len(pos)} and {len(neg)}"
        )
    rng = np.random.default_rng(seed)
    learn = np.sort(rng.choice(len(pos), size=min(len(pos), max(len(neg), folds)), replace=False))
    if score is not None:
        return _fit(pos[learn], neg, seed).predict_proba(np.asarray(score, dtype=np.float32))[:, 1]
    if not 2 <= folds <= len(learn):
        raise ConfigError(f"folds={folds}: need 2 <= folds <= {len(learn)} (the examples of the split)")
    out = np.empty(len(pos))
    rest = np.setdiff1d(np.arange(len(pos)), learn)
    if len(rest):  # real pairs the probe never learns from
        out[rest] = _fit(pos[learn], neg, seed).predict_proba(pos[rest])[:, 1]
    for fit_rows, held_out in KFold(folds, shuffle=True, random_state=seed).split(learn):
        out[learn[held_out]] = _fit(pos[learn[fit_rows]], neg, seed).predict_proba(pos[learn[held_out]])[:, 1]
    return out


def find_mismatches(
    split: str, score: ArrayLike, z: float = 3.0, max_fraction: float | None = 0.02, level: float = 0.95
) -> Mismatches:
    """Flag the pairs whose matching score is a low outlier.

    Args:
        split: the split's name (for the report).
        score: (n,) matching probability of each real pair.
        z: flag pairs whose robust z-score (of the logit of ``score``) is below ``-z``; > 0.
        max_fraction: largest allowed flagged fraction; None = reported only.
        level: confidence level of the interval.
    """
    if z <= 0:
        raise ConfigError(f"mismatch_z={z}: must be > 0 (pairs below -z robust standard deviations are flagged)")
    p = np.clip(np.asarray(score, dtype=np.float64), 1e-6, 1 - 1e-6)
    zs = robust_z(np.log(p / (1 - p)))
    flagged = [int(i) for i in np.argsort(zs, kind="stable") if zs[i] < -z]
    fraction = wilson_interval(len(flagged), len(p), level)
    check = Check(f"mismatch fraction ({split})", fraction, max_fraction)
    return Mismatches(split, len(p), flagged, np.asarray(score, dtype=np.float64), zs, fraction, [check])


def _fit(pos: np.ndarray, neg: np.ndarray, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([pos, neg])
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    probe = LogisticRegression(max_iter=500, class_weight="balanced", random_state=seed)
    return make_pipeline(StandardScaler(), probe).fit(x, y)
