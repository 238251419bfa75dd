"""Likely label errors by confident learning (Northcutt et al., "Confident learning: estimating uncertainty in
dataset labels", JAIR 2021) through ``cleanlab.filter.find_label_issues``.

Confident learning needs predicted probabilities that did not see the label they judge. A cheap probe supplies
them: a standardised multinomial logistic regression on frozen features, its probabilities for the training split
taken out of fold (``sklearn.model_selection.cross_val_predict`` over K stratified folds), and for other splits from
the probe fit on the whole training split. The probe's own out-of-fold accuracy is reported beside the findings:
when it sits near chance the features do not separate the classes and the findings mean little.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from mmfuse.errors import ConfigError
from mmfuse.stats import Check, Interval, wilson_interval

__all__ = [
    "LabelErrors",
    "DetectionScore",
    "make_probe",
    "out_of_fold_probabilities",
    "fit_predict_probabilities",
    "find_label_errors",
    "detection_score",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectionScore:
    """Flagged examples against known ground truth (planted noise).

    Attributes:
        precision: flagged examples that are truly wrong, with a Wilson interval.
        recall: truly wrong examples that are flagged, with a Wilson interval.
        true_positives: flagged and wrong.
    """

    precision: Interval
    recall: Interval
    true_positives: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision.as_dict(),
            "recall": self.recall.as_dict(),
            "true_positives": self.true_positives,
        }


@dataclass(frozen=True)
class LabelErrors:
    """Likely label errors of one split.

    Attributes:
        split: the split's name.
        n: examples in the split.
        indices: flagged example indices, most likely error first (lowest self-confidence).
        given: the given label of each flagged example.
        suggested: the probe's most likely class for each flagged example.
        self_confidence: (n,) probability the probe gives to each example's given label.
        probe_accuracy: the probe's accuracy against the given labels (out of fold on the training split).
        fraction: flagged fraction with a Wilson interval.
        checks: the flagged fraction against its maximum; the probe's accuracy (reported).
        ground_truth: precision and recall against known noise, when the data marks it.
    """

    split: str
    n: int
    indices: list[int]
    given: list[int]
    suggested: list[int]
    self_confidence: np.ndarray
    probe_accuracy: Interval
    fraction: Interval
    checks: list[Check] = field(default_factory=list)
    ground_truth: DetectionScore | None = None

    def as_dict(self, max_listed: int, class_names: Sequence[str]) -> dict[str, Any]:
        """JSON-ready fields, listing at most ``max_listed`` examples."""
        listed = [
            {
                "index": i,
                "given": class_names[g],
                "suggested": class_names[s],
                "self_confidence": round(float(self.self_confidence[i]), 4),
            }
            for i, g, s in list(zip(self.indices, self.given, self.suggested))[:max_listed]
        ]
        return {
            "split": self.split,
            "n": self.n,
            "flagged": len(self.indices),
            "fraction": self.fraction.as_dict(),
            "probe_accuracy": self.probe_accuracy.as_dict(),
            "ground_truth": None if self.ground_truth is None else self.ground_truth.as_dict(),
            "listed": listed,
        }


def make_probe(c: float = 1.0, max_iter: int = 500, seed: int = 0) -> Any:
    """The cheap model: standardisation then multinomial logistic regression (an sklearn pipeline)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = LogisticRegression(C=c, solver="newton-cholesky", max_iter=max_iter, random_state=seed)
    return make_pipeline(StandardScaler(), probe)


def out_of_fold_probabilities(
    features: ArrayLike, labels: ArrayLike, num_classes: int, folds: int = 5, seed: int = 0
) -> np.ndarray:
    """Class probabilities of every example from a probe that was not fit on it.

    Args:
        features: (n, D) frozen features.
        labels: (n,) class indices in ``0 .. num_classes-1``.
        num_classes: K; classes without examples get probability 0.
        folds: K-fold count (>= 2; at most the number of examples).
        seed: seed of the fold split and the probe.

    Returns:
        (n, num_classes) probabilities.
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    x, y = _check_xy(features, labels, num_classes)
    if not 2 <= folds <= len(y):
        raise ConfigError(f"folds={folds}: need 2 <= folds <= {len(y)} (the examples of the split)")
    present = np.unique(y)
    if len(present) < 2:
        raise ConfigError(f"label errors need at least two classes with examples; the labels hold only {present}")
    fold_split = StratifiedKFold(n_splits=min(folds, int(np.bincount(y).max())), shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # A class with fewer examples than folds is legal, only warned about; the count is in the report.
        warnings.filterwarnings("ignore", message="The least populated class")
        probs = cross_val_predict(make_probe(seed=seed), x, y, cv=fold_split, method="predict_proba")  # (n, K')
    return _full_columns(probs, present, num_classes)


def fit_predict_probabilities(
    train_features: ArrayLike, train_labels: ArrayLike, features: ArrayLike, num_classes: int, seed: int = 0
) -> np.ndarray:
    """Probabilities of ``features`` from a probe fit on the whole training split.

    Returns:
        (m, num_classes) probabilities.
    """
    x, y = _check_xy(train_features, train_labels, num_classes)
    probe = make_probe(seed=seed).fit(x, y)
    probs = probe.predict_proba(np.asarray(features, dtype=np.float32))  # (m, K')
    return _full_columns(probs, np.asarray(probe.classes_), num_classes)


def find_label_errors(
    split: str,
    labels: ArrayLike,
    probs: np.ndarray,
    max_fraction: float | None = 0.05,
    is_wrong: ArrayLike | None = None,
    level: float = 0.95,
) -> LabelErrors:
    """Flag likely label errors with ``cleanlab.filter.find_label_issues`` (``prune_by_noise_rate``).

    Args:
        split: the split's name (for the report).
        labels: (n,) given labels.
        probs: (n, K) probabilities that did not see the given labels (out of fold or held out).
        max_fraction: largest allowed flagged fraction; None = reported only.
        is_wrong: (n,) bool ground truth (planted noise), scored when given.
        level: confidence level of the intervals.
    """
    from cleanlab.filter import find_label_issues

    y = np.asarray(labels, dtype=np.int64)
    if probs.shape[0] != len(y):
        raise ValueError(f"{split}: {probs.shape[0]} probability rows for {len(y)} labels")
    present = np.unique(y)
    # cleanlab wants every column to be a class with examples: drop empty classes, renumber the rest.
    local = np.searchsorted(present, y)
    local_probs = probs[:, present] / np.clip(probs[:, present].sum(1, keepdims=True), 1e-12, None)
    flagged = find_label_issues(
        local, local_probs, return_indices_ranked_by="self_confidence", filter_by="prune_by_noise_rate", n_jobs=1
    )
    flagged = [int(i) for i in flagged]
    confidence = probs[np.arange(len(y)), y]
    predicted = probs.argmax(1)
    accuracy = wilson_interval(int((predicted == y).sum()), len(y), level)
    fraction = wilson_interval(len(flagged), len(y), level)
    checks = [
        Check(f"label error fraction ({split})", fraction, max_fraction),
        Check(f"probe accuracy on given labels ({split})", accuracy, None, "at_least"),
    ]
    truth = None if is_wrong is None else detection_score(flagged, is_wrong, level)
    suggested = [int(predicted[i]) for i in flagged]
    return LabelErrors(
        split, len(y), flagged, [int(y[i]) for i in flagged], suggested, confidence, accuracy, fraction, checks, truth
    )


def detection_score(flagged: Sequence[int], is_wrong: ArrayLike, level: float = 0.95) -> DetectionScore:
    """Precision and recall of ``flagged`` indices against a (n,) bool ground truth.

    Example:
        >>> score = detection_score([0, 1, 2], [True, True, False, True])
        >>> round(score.precision.estimate, 3), round(score.recall.estimate, 3)
        (0.667, 0.667)
    """
    truth = np.asarray(is_wrong, dtype=bool)
    hits = int(truth[np.asarray(flagged, dtype=np.int64)].sum()) if len(flagged) else 0
    return DetectionScore(
        wilson_interval(hits, len(flagged), level), wilson_interval(hits, int(truth.sum()), level), hits
    )


def _check_xy(features: ArrayLike, labels: ArrayLike, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(features, dtype=np.float32)
    y = np.asarray(labels, dtype=np.int64)
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"features {x.shape} and labels {y.shape} do not line up as (n, D) and (n,)")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ConfigError(f"labels must lie in 0..{num_classes - 1}; found {int(y.min())}..{int(y.max())}")
    return x, y


def _full_columns(probs: np.ndarray, classes: np.ndarray, num_classes: int) -> np.ndarray:
    """(n, K') probabilities over ``classes`` spread into (n, num_classes) columns."""
    full = np.zeros((probs.shape[0], num_classes), dtype=np.float64)
    full[:, classes] = probs
    return full
