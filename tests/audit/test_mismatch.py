"""Image-text mismatches: pairs whose matching-probe score is a low outlier. Planted mismatches (features that look
like shuffled pairs) are flagged; clean data raises few alarms."""

from __future__ import annotations

import numpy as np
import pytest

from mmfuse.audit.mismatch import derangement, find_mismatches, matching_probabilities, robust_z
from mmfuse.errors import ConfigError


def _pairs(n: int, planted: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Joint features of real pairs (``planted`` of them mismatched) and of shuffled pairs."""
    rng = np.random.default_rng(seed)
    matched, shuffled = rng.normal(0, 1, 16), rng.normal(0, 1, 16)
    gap = np.linalg.norm(matched - shuffled)
    matched, shuffled = matched * 6 / gap, shuffled * 6 / gap  # the two kinds of pair sit 6 standard deviations apart
    real = matched + rng.normal(0, 1, size=(n, 16))
    is_planted = np.zeros(n, dtype=bool)
    is_planted[rng.choice(n, planted, replace=False)] = True
    real[is_planted] = shuffled + rng.normal(0, 1, size=(planted, 16))
    return real, shuffled + rng.normal(0, 1, size=(n, 16)), is_planted


def test_planted_mismatches_are_flagged() -> None:
    real, negatives, is_planted = _pairs(600, 12)
    score = matching_probabilities(real, negatives, folds=5)
    found = find_mismatches("train", score, z=3.0, max_fraction=0.01)
    flagged = np.zeros(600, dtype=bool)
    flagged[found.indices] = True
    assert (flagged & is_planted).sum() >= 10 and (flagged & ~is_planted).sum() <= 3
    assert found.checks[0].passed is False and found.z[found.indices[0]] == found.z.min()


def test_clean_pairs_raise_few_alarms_and_held_out_pairs_are_scored() -> None:
    real, negatives, _ = _pairs(600, 0, seed=1)
    found = find_mismatches("train", matching_probabilities(real, negatives), z=3.0)
    assert len(found.indices) <= 6 and found.checks[0].passed  # a Gaussian tail below -3 z holds ~0.1 %
    others, _, is_planted = _pairs(200, 10, seed=1)  # the same two kinds of pair
    held_out = matching_probabilities(real, negatives, score=others)
    assert held_out.shape == (200,) and held_out[is_planted].mean() < held_out[~is_planted].mean() - 0.5


def test_derangement_and_robust_z() -> None:
    for seed in range(5):
        perm = derangement(7, seed)
        assert sorted(perm.tolist()) == list(range(7)) and (perm != np.arange(7)).all()
    z = robust_z([0.0, 0.0, 0.0, 0.0, 10.0])  # MAD 0: floored, the outlier is far out, nothing divides by zero
    assert np.isfinite(z).all() and z[-1] > 1e6


def test_bad_input_is_refused() -> None:
    with pytest.raises(ConfigError, match="mismatch_z=0"):
        find_mismatches("x", [0.5, 0.5], z=0)
    with pytest.raises(ConfigError, match="folds=9"):
        matching_probabilities(np.zeros((4, 2)), np.ones((4, 2)), folds=9)
    with pytest.raises(ValueError, match="at least 2"):
        derangement(1)
