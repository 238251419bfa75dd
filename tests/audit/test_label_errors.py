"""Confident learning on out-of-fold probe probabilities: planted label flips on separable features are found,
clean labels raise few alarms."""

from __future__ import annotations

import numpy as np
import pytest

from mmfuse.audit.label_errors import (
    detection_score,
    find_label_errors,
    fit_predict_probabilities,
    out_of_fold_probabilities,
)
from mmfuse.errors import ConfigError

K = 4


def _blobs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Separable Gaussian blobs: (n, 8) features and (n,) labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, size=(K, 8))
    labels = rng.integers(0, K, size=n)
    return centres[labels] + rng.normal(0, 1, size=(n, 8)), labels


def _flip(labels: np.ndarray, fraction: float, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    is_flipped = rng.random(len(labels)) < fraction
    noisy = labels.copy()
    noisy[is_flipped] = (labels[is_flipped] + rng.integers(1, K, size=int(is_flipped.sum()))) % K
    return noisy, is_flipped


def test_planted_flips_are_found_with_high_precision_and_recall() -> None:
    features, labels = _blobs(800)
    noisy, is_flipped = _flip(labels, 0.1)
    probs = out_of_fold_probabilities(features, noisy, K, folds=5)
    found = find_label_errors("train", noisy, probs, max_fraction=0.05, is_wrong=is_flipped)
    assert found.ground_truth is not None
    assert found.ground_truth.precision.estimate >= 0.9 and found.ground_truth.recall.estimate >= 0.9  # type: ignore[operator]
    assert [int(labels[i]) for i in found.indices[:20]] == found.suggested[:20]  # the suggestion is the true class
    assert found.checks[0].passed is False  # ~10 % flagged > 5 %
    confidence = found.self_confidence[found.indices]
    assert (np.diff(confidence) >= 0).all()  # most likely error first


def test_clean_labels_raise_few_alarms() -> None:
    features, labels = _blobs(800, seed=2)
    found = find_label_errors("train", labels, out_of_fold_probabilities(features, labels, K), max_fraction=0.02)
    assert len(found.indices) <= 8 and found.checks[0].passed
    assert found.probe_accuracy.estimate is not None and found.probe_accuracy.estimate > 0.97


def test_probabilities_are_out_of_fold_and_cover_every_class() -> None:
    features, labels = _blobs(200)
    labels[labels == 3] = 2  # class 3 has no examples
    probs = out_of_fold_probabilities(features, labels, K, folds=4)
    assert probs.shape == (200, K) and np.allclose(probs.sum(1), 1.0) and (probs[:, 3] == 0).all()
    held_out = fit_predict_probabilities(features[:150], labels[:150], features[150:], K)
    assert held_out.shape == (50, K) and (held_out.argmax(1) == labels[150:]).mean() > 0.9
    # A probe that saw every label memorises a random label more than one that did not: out of fold matters.
    random_labels = np.random.default_rng(0).integers(0, K, size=200)
    noise = np.random.default_rng(1).normal(size=(200, 60))
    in_sample = fit_predict_probabilities(noise, random_labels, noise, K)
    out_of_fold = out_of_fold_probabilities(noise, random_labels, K)
    rows = np.arange(200)
    assert in_sample[rows, random_labels].mean() > out_of_fold[rows, random_labels].mean() + 0.2


def test_detection_score_against_known_truth() -> None:
    score = detection_score([1, 2, 5], np.array([False, True, True, True, False, False]))
    assert score.true_positives == 2 and score.precision.estimate == pytest.approx(2 / 3)
    assert score.recall.estimate == pytest.approx(2 / 3) and detection_score([], [True]).precision.estimate is None


def test_bad_input_is_refused() -> None:
    features, labels = _blobs(20)
    with pytest.raises(ConfigError, match="folds=1"):
        out_of_fold_probabilities(features, labels, K, folds=1)
    with pytest.raises(ConfigError, match="at least two classes"):
        out_of_fold_probabilities(features, np.zeros(20, dtype=int), K)
    with pytest.raises(ConfigError, match="labels must lie in 0..3"):
        out_of_fold_probabilities(features, labels + 4, K)
    with pytest.raises(ValueError, match="do not line up"):
        out_of_fold_probabilities(features[:5], labels, K)
