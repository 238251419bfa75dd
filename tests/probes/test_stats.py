"""Bootstrap intervals: they cover the true value about as often as promised in simulated draws."""

from __future__ import annotations

import numpy as np
import pytest

from mmfuse.probes._stats import Estimate, bootstrap_mean, bootstrap_relative_drop, rule_of_three

DRAWS = 200


def test_mean_interval_covers_a_rate_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(0)
    p, n = 0.3, 150
    covered = [(e := bootstrap_mean(rng.random(n) < p, n_boot=400, seed=k)).low <= p <= e.high for k in range(DRAWS)]
    assert 0.91 <= np.mean(covered) <= 0.99, np.mean(covered)


def test_cluster_bootstrap_covers_where_the_naive_one_does_not() -> None:
    """Four counterfactuals of one example flip together: only resampling whole examples keeps the coverage."""
    rng = np.random.default_rng(1)
    p, examples, per_example = 0.2, 80, 4
    cluster_hits, naive_hits = [], []
    for k in range(DRAWS):
        values = np.repeat(rng.random(examples) < p, per_example)  # (examples * per_example,)
        clusters = np.repeat(np.arange(examples), per_example)
        cluster = bootstrap_mean(values, clusters, n_boot=400, seed=k)
        naive = bootstrap_mean(values, n_boot=400, seed=k)
        cluster_hits.append(cluster.low <= p <= cluster.high)
        naive_hits.append(naive.low <= p <= naive.high)
    assert 0.90 <= np.mean(cluster_hits) <= 0.99, np.mean(cluster_hits)
    assert np.mean(naive_hits) < 0.8, np.mean(naive_hits)


def test_relative_drop_interval_covers_the_true_drop() -> None:
    """Paired: a perturbation that breaks 20 % of the correct answers has a true relative drop of 0.2."""
    rng = np.random.default_rng(2)
    n, covered_drop, covered_acc = 300, [], []
    for k in range(DRAWS):
        clean = rng.random(n) < 0.9
        perturbed = clean & (rng.random(n) < 0.8)
        accuracy, drop = bootstrap_relative_drop(clean, perturbed, paired=True, n_boot=400, seed=k)
        covered_drop.append(drop.low <= 0.2 <= drop.high)
        covered_acc.append(accuracy.low <= 0.72 <= accuracy.high)
    assert 0.91 <= np.mean(covered_drop) <= 0.99 and 0.91 <= np.mean(covered_acc) <= 0.99


def test_unpaired_drop_and_edge_cases() -> None:
    accuracy, drop = bootstrap_relative_drop(np.ones(50), np.r_[np.ones(25), np.zeros(25)], paired=False)
    assert accuracy.value == 0.5 and drop.value == 0.5 and drop.low < 0.5 < drop.high
    _, undefined = bootstrap_relative_drop(np.zeros(10), np.zeros(10), paired=True)
    assert np.isnan(undefined.value)
    with pytest.raises(ValueError, match="equal shape"):
        bootstrap_relative_drop(np.ones(3), np.ones(4), paired=True)
    with pytest.raises(ValueError, match="at least one value"):
        bootstrap_mean([])
    with pytest.raises(ValueError, match="clusters has shape"):
        bootstrap_mean([1, 0], clusters=[0])
    assert bootstrap_mean([0, 0, 0]) == Estimate(0.0, 0.0, 0.0, 3) and rule_of_three(300) == 0.01


def test_same_seed_same_interval_and_format() -> None:
    a, b = bootstrap_mean([0, 1, 1, 0, 1], seed=3), bootstrap_mean([0, 1, 1, 0, 1], seed=3)
    assert a == b and a.format() == f"0.600 [{a.low:.3f}, {a.high:.3f}]"
    assert Estimate(0.25, 0.2, 0.3, 9).format(percent=True) == "25.0% [20.0, 30.0]"
