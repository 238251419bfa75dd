"""Intervals and graded checks: the intervals cover the true value at their nominal rate in simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmfuse.audit._stats import Check, Interval, bootstrap_interval, wilson_interval
from mmfuse.errors import ConfigError

DRAWS = 200  # simulated data sets per coverage check
TOLERANCE = 0.045  # about three standard errors of a coverage estimate from 200 draws at 0.95


@pytest.mark.parametrize(("p", "n"), [(0.3, 100), (0.05, 400), (0.9, 60)])
def test_wilson_interval_covers_the_true_proportion(p: float, n: int) -> None:
    rng = np.random.default_rng(1)
    covered = 0
    for successes in rng.binomial(n, p, size=DRAWS):
        interval = wilson_interval(int(successes), n)
        assert interval.low is not None and interval.high is not None
        covered += interval.low <= p <= interval.high
    assert abs(covered / DRAWS - 0.95) <= TOLERANCE


def test_bootstrap_interval_of_a_mean_covers_the_true_mean() -> None:
    rng = np.random.default_rng(2)
    covered = 0
    for _ in range(DRAWS):
        sample = rng.exponential(2.0, size=200)  # skewed on purpose; true mean 2.0
        interval = bootstrap_interval(sample, n_boot=500, seed=int(rng.integers(1 << 30)))
        assert interval.low is not None and interval.high is not None
        covered += interval.low <= 2.0 <= interval.high
    assert abs(covered / DRAWS - 0.95) <= TOLERANCE


def test_bootstrap_interval_of_accuracy_covers_and_a_lower_level_is_narrower() -> None:
    rng = np.random.default_rng(3)
    covered = 0
    for _ in range(DRAWS):
        correct = rng.random(300) < 0.7
        interval = bootstrap_interval(correct, n_boot=400, seed=int(rng.integers(1 << 30)))
        covered += interval.low <= 0.7 <= interval.high  # type: ignore[operator]
    assert abs(covered / DRAWS - 0.95) <= TOLERANCE
    wide, narrow = bootstrap_interval(correct, level=0.95), bootstrap_interval(correct, level=0.5)
    assert narrow.high - narrow.low < wide.high - wide.low  # type: ignore[operator]


def test_bootstrap_interval_takes_any_statistic_and_keeps_infinite_resamples() -> None:
    labels = np.array([0] * 40 + [1] * 2)
    ratio = bootstrap_interval(labels, lambda s: _ratio(s), n_boot=300)
    assert ratio.estimate == 20.0 and ratio.high == math.inf and ratio.as_dict()["ci_high"] is None
    assert ratio.format(1).endswith("∞]")


def _ratio(sample: np.ndarray) -> float:
    counts = np.bincount(sample.astype(int), minlength=2)
    return float(counts.max() / counts.min()) if counts.min() else math.inf


def test_empty_data_give_undefined_intervals_and_ungraded_checks() -> None:
    assert wilson_interval(0, 0).estimate is None and bootstrap_interval([]).estimate is None
    check = Check("x", wilson_interval(0, 0), 0.1)
    assert check.passed is None and check.status == "reported" and Interval(None, None, None, 0).format() == "—"


def test_check_status_reads_the_estimate_and_the_interval() -> None:
    interval = Interval(0.10, 0.05, 0.15, 100)
    assert Check("a", interval, 0.2).status == "pass"
    assert Check("a", interval, 0.12).status == "pass (inconclusive)"
    assert Check("a", interval, 0.08).status == "fail (inconclusive)"
    assert Check("a", interval, 0.01).status == "fail"
    assert Check("a", interval, 0.01, "at_least").status == "pass"
    assert Check("a", interval, None).status == "reported"
    as_dict = Check("a", interval, 0.2).as_dict()
    assert as_dict["passed"] is True and as_dict["conclusive"] is True and as_dict["ci_low"] == 0.05


@pytest.mark.parametrize("level", [0.0, 1.0, 95.0, -0.5])
def test_a_level_outside_zero_one_is_refused(level: float) -> None:
    with pytest.raises(ConfigError, match=f"level={level}"):
        wilson_interval(1, 2, level)
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        bootstrap_interval([1.0, 2.0], level=level)


def test_bad_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(5, 3)
    with pytest.raises(ConfigError, match="n_boot=0"):
        bootstrap_interval([1.0], n_boot=0)
