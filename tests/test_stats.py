"""Intervals, the bootstrap and graded checks: the intervals cover the true value at their nominal rate in
simulation, clusters are resampled whole, and a seed fixes the result."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmfuse.errors import ConfigError
from mmfuse.stats import Check, Interval, bootstrap_interval, rule_of_three, spearman, wilson_interval

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


def test_mean_interval_covers_a_rate_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(0)
    p, n = 0.3, 150
    covered = [
        (e := bootstrap_interval(rng.random(n) < p, n_boot=400, seed=k)).low <= p <= e.high  # type: ignore[operator]
        for k in range(DRAWS)
    ]
    assert 0.91 <= np.mean(covered) <= 0.99, np.mean(covered)


def test_cluster_bootstrap_covers_where_the_naive_one_does_not() -> None:
    """Four counterfactuals of one example flip together: only resampling whole examples keeps the coverage."""
    rng = np.random.default_rng(1)
    p, examples, per_example = 0.2, 80, 4
    cluster_hits, naive_hits = [], []
    for k in range(DRAWS):
        values = np.repeat(rng.random(examples) < p, per_example)  # (examples * per_example,)
        clusters = np.repeat(np.arange(examples), per_example)
        cluster = bootstrap_interval(values, clusters=clusters, n_boot=400, seed=k)
        naive = bootstrap_interval(values, n_boot=400, seed=k)
        cluster_hits.append(cluster.low <= p <= cluster.high)  # type: ignore[operator]
        naive_hits.append(naive.low <= p <= naive.high)  # type: ignore[operator]
    assert 0.90 <= np.mean(cluster_hits) <= 0.99, np.mean(cluster_hits)
    assert np.mean(naive_hits) < 0.8, np.mean(naive_hits)


def test_cluster_bootstrap_of_any_statistic_resamples_whole_clusters() -> None:
    values, clusters = np.array([1.0, 1.0, 5.0, 5.0]), np.array([0, 0, 1, 1])
    spread = bootstrap_interval(values, lambda s: float(s.max() - s.min()), n_boot=200, clusters=clusters)
    assert spread.estimate == 4.0 and spread.low == 0.0 and spread.high == 4.0  # only 0 or 4: never a split cluster


def test_bootstrap_interval_takes_any_statistic_and_keeps_infinite_resamples() -> None:
    labels = np.array([0] * 40 + [1] * 2)
    ratio = bootstrap_interval(labels, lambda s: _ratio(s), n_boot=300)
    assert ratio.estimate == 20.0 and ratio.high == math.inf and ratio.as_dict()["ci_high"] is None
    assert ratio.format(1).endswith("∞]")


def _ratio(sample: np.ndarray) -> float:
    counts = np.bincount(sample.astype(int), minlength=2)
    return float(counts.max() / counts.min()) if counts.min() else math.inf


def test_two_samples_paired_or_independent() -> None:
    before, after = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 3.0, 4.0, 5.0])
    shift = bootstrap_interval(after, lambda a, b: float(a.mean() - b.mean()), other=before, paired=True)
    assert shift.estimate == shift.low == shift.high == 1.0  # the same rows drawn on both sides
    independent = bootstrap_interval(after, lambda a, b: float(a.mean() - b.mean()), other=before)
    assert independent.low < 1.0 < independent.high  # type: ignore[operator]
    with pytest.raises(ValueError, match="equal shape"):
        bootstrap_interval(np.ones(3), lambda a, b: 0.0, other=np.ones(4), paired=True)
    with pytest.raises(ValueError, match="statistic of two samples"):
        bootstrap_interval(np.ones(3), other=np.ones(3))


def test_nan_values_are_left_out_when_asked() -> None:
    values = [0.0, 1.0, 1.0, float("nan"), 1.0]
    summary = bootstrap_interval(values, nan_policy="omit").as_dict("mean", brief=True)
    assert summary["n"] == 4 and summary["mean"] == 0.75 and set(summary) == {"mean", "ci_low", "ci_high", "n"}
    assert 0.0 <= summary["ci_low"] <= 0.75 <= summary["ci_high"] <= 1.0
    assert bootstrap_interval([float("nan")], nan_policy="omit").estimate is None
    assert bootstrap_interval(values).estimate is None  # propagated: the mean is undefined


def test_empty_data_give_undefined_intervals_and_ungraded_checks() -> None:
    assert wilson_interval(0, 0).estimate is None and bootstrap_interval([]).estimate is None
    check = Check("x", wilson_interval(0, 0), 0.1)
    assert check.passed is None and check.status == "reported" and Interval(None, None, None, 0).format() == "—"
    assert Interval(float("nan"), float("nan"), float("nan"), 3) == Interval(None, None, None, 3)


def test_edge_cases() -> None:
    with pytest.raises(ValueError, match="clusters has shape"):
        bootstrap_interval([1, 0], clusters=[0])
    assert bootstrap_interval([0, 0, 0]) == Interval(0.0, 0.0, 0.0, 3) and rule_of_three(300) == 0.01


def test_same_seed_same_interval_and_format() -> None:
    a, b = bootstrap_interval([0, 1, 1, 0, 1], seed=3), bootstrap_interval([0, 1, 1, 0, 1], seed=3)
    assert a == b and a.format() == f"0.600 [{a.low:.3f}, {a.high:.3f}]"


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


def test_spearman_ranks_ties_masks_and_constant_rows() -> None:
    a = [[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 1.0, 1.0], [5.0, 5.0, 5.0, 5.0], [1.0, 2.0, 3.0, 9.0]]
    b = [[10.0, 20.0, 30.0, 40.0], [0.0, 0.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0], [3.0, 2.0, 1.0, -9.0]]
    mask = [[True] * 4, [True] * 4, [True] * 4, [True, True, True, False]]
    np.testing.assert_allclose(spearman(a, b, mask), [1.0, 1.0, 0.0, -1.0])
    np.testing.assert_allclose(spearman(a[2:3], a[2:3]), [1.0])  # both constant: agree
